from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsnet import naming


def test_new_id_is_64_hex_and_random():
    first, second = naming.new_id(), naming.new_id()
    assert len(first) == 64
    assert int(first, 16) >= 0
    assert first != second


def test_bridge_name_fits_ifnamsiz_and_says_nsnet():
    assert naming.bridge_name("0123456789abcdef" * 4) == "nsbr-0123456789"


def test_host_veth_name_fits_ifnamsiz_and_says_nsnet():
    assert naming.host_veth_name("0123456789abcdef" * 4) == "nsv0123456789ab"


@given(st.text(alphabet="0123456789abcdef", min_size=64, max_size=64))
def test_kernel_names_never_exceed_15_characters(object_id):
    bridge, veth = naming.bridge_name(object_id), naming.host_veth_name(object_id)
    assert len(bridge) == len(veth) == naming.IFNAMSIZ == 15
    assert bridge.startswith("nsbr-")
    assert veth.startswith("nsv")


def test_mac_for_spells_the_address():
    assert naming.mac_for(IPv4Address("10.31.0.2")) == "02:4e:0a:1f:00:02"
    assert naming.mac_for(IPv4Address("255.255.255.255")) == "02:4e:ff:ff:ff:ff"


@given(st.ip_addresses(v=4))
def test_mac_for_is_locally_administered_unicast_and_stable(address):
    mac = naming.mac_for(address)
    first_octet = int(mac.split(":")[0], 16)
    assert first_octet & 0x02
    assert not first_octet & 0x01
    assert len(mac.split(":")) == 6
    assert mac == naming.mac_for(IPv4Address(str(address)))


@pytest.mark.parametrize(
    "used, expected",
    [
        (set(), "eth0"),
        ({"eth0"}, "eth1"),
        ({"eth0", "eth2"}, "eth1"),
        ({"eth1", "eth2"}, "eth0"),
        (frozenset({"eth0", "eth1", "eth2"}), "eth3"),
        ({"lo", "eth1"}, "eth0"),
    ],
)
def test_sandbox_ifname_picks_lowest_free_eth(used, expected):
    assert naming.sandbox_ifname(used) == expected


def test_paths_of_a_sandbox():
    assert naming.netns_path("web") == "/run/netns/web"
    assert naming.etc_netns_dir("web") == "/etc/netns/web"
