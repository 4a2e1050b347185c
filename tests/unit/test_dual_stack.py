"""IPv6 and dual stack without root: IPAM in IPv6, the engine's plans and rollback on a fake kernel,
check and gc of IPv6 damage, and doctor's IPv6 findings."""

from __future__ import annotations

import json

from ipaddress import IPv4Address, IPv6Address, IPv6Interface, IPv6Network

import pytest

from nsnet import ipam
from nsnet.doctor import HostFacts, diagnose
from nsnet.errors import Exhausted, InvalidInput
from nsnet.model import PortMapping

DUAL = ["10.31.0.0/24", "fd00:31::/64"]


def test_ipv6_allocation_is_round_robin_and_bounded():
    subnet = IPv6Network("fd00::/120")
    gateway = IPv6Address("fd00::1")
    assert ipam.capacity(subnet, gateway) == 253
    assert ipam.allocate(subnet, gateway, set()) == IPv6Address("fd00::2")
    assert ipam.allocate(subnet, gateway, set(), last=IPv6Address("fd00::fe")) == IPv6Address("fd00::2")
    assert ipam.allocate(subnet, gateway, {IPv6Address("fd00::2")}, last=IPv6Address("fd00::9")) == \
        IPv6Address("fd00::a")
    full = {IPv6Address(int(IPv6Address("fd00::2")) + i) for i in range(253)}
    with pytest.raises(Exhausted):
        ipam.allocate(subnet, gateway, full)
    big = IPv6Network("fd00:1::/64")
    assert ipam.capacity(big, ipam.default_gateway(big)) == 2**64 - 3
    assert ipam.allocate(big, ipam.default_gateway(big), set()) == IPv6Address("fd00:1::2")


def test_a_ula_prefix_is_fd_and_forty_bits():
    prefix = ipam.ula_prefix(bytes.fromhex("0123456789"))
    assert prefix == IPv6Network("fd01:2345:6789::/48")
    assert ipam.pick_subnet(prefix, 64, [IPv6Network("fd01:2345:6789::/64")]) == IPv6Network("fd01:2345:6789:1::/64")
    with pytest.raises(ValueError):
        ipam.ula_prefix(b"\0")


def test_a_dual_stack_sandbox_gets_an_address_and_a_default_route_in_each_family(engine, kernel,
                                                                                  assert_matches_ledger):
    app = engine.create_network("app", subnet=DUAL)
    web = engine.create_sandbox("web", networks=["app"], ip6="fd00:31::10").endpoint("app")
    assert [str(a) for a in web.addresses] == ["10.31.0.2/24", "fd00:31::10/64"]
    assert web.mac == "02:4e:0a:1f:00:02"
    assert kernel.routes == {("web", 4): (IPv4Address("10.31.0.1"), "eth0"),
                             ("web", 6): (IPv6Address("fd00:31::1"), "eth0")}
    assert kernel.links[("web", "eth0")]["ipv6"] is True
    assert kernel.sysctls["net.ipv6.conf.all.forwarding"] == "1"
    assert kernel.sysctls[f"net.ipv6.conf.{app.bridge}.disable_ipv6"] == "0"
    assert kernel.sysctls[f"net.ipv6.conf.{app.bridge}.accept_dad"] == "0"
    # The next address follows the one asked for, in IPv6 as in IPv4.
    client = engine.create_sandbox("client", networks=["app"]).endpoint("app")
    assert [str(a.ip) for a in client.addresses] == ["10.31.0.3", "fd00:31::11"]
    assert_matches_ledger(engine, kernel)


def test_a_network_with_ipv6_and_no_subnet_takes_a_64_of_the_ledgers_ula(engine):
    first = engine.create_network("a", ipv6=True).ipv6.subnet
    second = engine.create_network("b", ipv6=True).ipv6.subnet
    assert first.prefixlen == second.prefixlen == 64 and first != second
    assert first.supernet(new_prefix=48) == second.supernet(new_prefix=48)
    assert str(first).startswith("fd")


def test_an_ipv6_only_network_gives_random_macs_apart_from_its_bridges(engine, kernel):
    only6 = engine.create_network("only6", ipv4=False, ipv6=True, subnet="fd00:41::/64")
    macs = [engine.create_sandbox(f"s{i}", networks=["only6"]).endpoint("only6").mac for i in range(5)]
    assert all(m.startswith("0a:4e:") for m in macs) and len(set(macs)) == 5
    assert kernel.links[(None, only6.bridge)]["mac"] == "0a:4f:" + ":".join(only6.id[i:i + 2] for i in range(0, 8, 2))
    assert (("s0", 4) not in kernel.routes) and kernel.routes[("s0", 6)][0] == IPv6Address("fd00:41::1")


def test_the_host_keeps_its_router_advertisements_before_forwarding_is_switched_on(engine, kernel):
    kernel.ra_takers = ["default", "eth0"]
    engine.create_network("app", subnet=DUAL)
    writes = [c[1:] for c in kernel.calls if c[0] == "ensure_sysctl" and "ipv6" in c[1] and "nsbr" not in c[1]]
    assert writes == [("net.ipv6.conf.default.accept_ra", "2"), ("net.ipv6.conf.eth0.accept_ra", "2"),
                      ("net.ipv6.conf.all.forwarding", "1")]


def test_an_ipv4_only_network_asks_nothing_of_ipv6(engine, kernel):
    kernel.ra_takers = ["eth0"]
    app = engine.create_network("app", subnet="10.31.0.0/24")
    assert not [c for c in kernel.calls if c[0] == "ensure_sysctl" and "ipv6" in c[1] and app.bridge not in c[1]]
    assert kernel.sysctls[f"net.ipv6.conf.{app.bridge}.disable_ipv6"] == "1"


@pytest.mark.parametrize("kwargs, field, reason", [
    ({"ip6": "fd00::5"}, "ip6", "network 'app' has no IPv6"),
    ({"ip": "fd00::5"}, "ip", "is an IPv6 address, not an IPv4 one"),
    ({"publish": ["[2001:db8::5]:80:80"]}, "publish", "is an IPv6 host address, but network 'app' has no IPv6"),
])
def test_an_ipv6_request_on_a_network_without_ipv6_changes_nothing(engine, kernel, kernel_state, kwargs, field,
                                                                    reason):
    engine.create_network("app", subnet="10.31.0.0/24")
    before = kernel_state(kernel), engine.sandboxes()
    with pytest.raises(InvalidInput) as caught:
        engine.create_sandbox("web", networks=["app"], **kwargs)
    assert (caught.value.field, caught.value.reason) == (field, reason)
    assert (kernel_state(kernel), engine.sandboxes()) == before


@pytest.mark.parametrize("step", range(1, 12))
def test_a_dual_stack_create_failing_at_any_step_leaves_no_trace(engine, kernel, kernel_state, step):
    engine.create_network("app", subnet=DUAL)
    before = kernel_state(kernel), engine.sandboxes()
    kernel.fail_at = len(kernel.calls) + step
    with pytest.raises(Exception):
        engine.create_sandbox("web", networks=["app"], publish=["8080:80"])
    kernel.fail_at = None
    assert (kernel_state(kernel), engine.sandboxes()) == before
    # The round robin did not move either: the next create gets the first addresses.
    assert [str(a.ip) for a in engine.create_sandbox("web", networks=["app"]).endpoint("app").addresses] == [
        "10.31.0.2", "fd00:31::2"]


def test_ipv6_damage_is_reported_and_repaired(engine, kernel):
    app = engine.create_network("app", subnet=DUAL)
    engine.create_sandbox("web", networks=["app"])
    assert engine.check() == []
    kernel.addresses.discard((None, app.bridge, app.ipv6.gateway_interface))
    kernel.addresses.discard(("web", "eth0", IPv6Interface("fd00:31::2/64")))
    del kernel.routes[("web", 6)]
    kernel.sysctls["net.ipv6.conf.all.forwarding"] = "0"
    assert sorted(str(d) for d in engine.check()) == [
        f"missing: network app: bridge {app.bridge} lacks its gateway fd00:31::1/64",
        "missing: sandbox web: eth0 lacks its address fd00:31::2/64",
        "missing: sandbox web: no default route via fd00:31::1 on eth0",
        "wrong: sysctl net.ipv6.conf.all.forwarding: is 0, networks need 1",
    ]
    engine.gc()
    assert engine.check() == []
    assert kernel.routes[("web", 6)] == (IPv6Address("fd00:31::1"), "eth0")


def test_a_removed_neighbour_advertisement_claim_is_reported_and_restored(engine, kernel):
    engine.create_network("app", subnet=DUAL)
    web = engine.create_sandbox("web", networks=["app"]).endpoint("app")
    claim = ("bridge", "nd_claims", json.dumps({"concat": [web.host_ifname, "0xfd000031000000000000000000000002"]}))
    del kernel.nft_elements[claim]
    assert [d.kind for d in engine.check()] == ["missing"]
    engine.gc()
    assert engine.check() == [] and claim in kernel.nft_elements


def test_doctor_reports_ipv6_forwarding_off_and_ignored_router_advertisements(engine):
    engine.create_network("app", subnet=DUAL)
    networks = engine.networks()
    facts = HostFacts(ip_forward="1", bridge_nf_call_iptables=None, ipv6_forwarding="0", ra_ignored=("eth0",))
    found = {f.check: (f.severity, f.details) for f in diagnose(facts, networks, [])}
    assert found == {"ipv6-forward": ("problem", ()), "ipv6-router-advertisements": ("warning", ("eth0",))}
    healthy = HostFacts(ip_forward="1", bridge_nf_call_iptables=None, ipv6_forwarding="1")
    assert diagnose(healthy, networks, []) == []
    v4_only = [n for n in networks if n.ipv6 is None]
    assert [f.check for f in diagnose(HostFacts(ip_forward="1", bridge_nf_call_iptables=None), v4_only, [])] == []


def test_port_bindings_say_which_families_a_mapping_takes(engine):
    engine.create_network("app", subnet=DUAL)
    engine.create_network("v4", subnet="10.32.0.0/24")
    dual = engine.create_sandbox("dual", networks=["app"], publish=["8080:80"]).endpoint("app")
    v4 = engine.create_sandbox("v4only", networks=["v4"], publish=["8081:80"]).endpoint("v4")
    assert [str(b) for b in dual.bindings()] == ["80/tcp -> 0.0.0.0:8080", "80/tcp -> [::]:8080"]
    assert [str(b) for b in v4.bindings()] == ["80/tcp -> 0.0.0.0:8081"]
    assert dual.ports_note is None and "network v4 has no IPv6" in v4.ports_note
    assert str(PortMapping(IPv6Address("2001:db8::5"), 8082, 82)) == "82/tcp -> [2001:db8::5]:8082"
