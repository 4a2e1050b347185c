"""Host port resolution: which published ports and host sockets a new mapping collides with, and
how ephemeral and ranged host ports are picked."""

from ipaddress import IPv4Address

import pytest

from nsnet.errors import Conflict, Exhausted
from nsnet.model import PortMapping
from nsnet.portspec import parse
from nsnet.publish import Listener, listener_clash, published_clash, resolve

LOOPBACK = IPv4Address("127.0.0.1")
LAN = IPv4Address("192.168.1.10")
EPHEMERAL = range(32768, 32772)


def requests(*specs: str):
    return [parse(spec) for spec in specs]


@pytest.mark.parametrize(
    "published, candidate",
    [
        (PortMapping(None, 8080, 80), PortMapping(LOOPBACK, 8080, 81)),
        (PortMapping(LOOPBACK, 8080, 80), PortMapping(None, 8080, 81)),
        (PortMapping(None, 8080, 80), PortMapping(None, 8080, 80)),
        (PortMapping(LOOPBACK, 53, 53, "udp"), PortMapping(LOOPBACK, 53, 5353, "udp")),
    ],
)
def test_overlapping_addresses_clash(published, candidate):
    assert published_clash(candidate, [PortMapping(None, 9090, 90), published]) == published


@pytest.mark.parametrize(
    "published, candidate",
    [
        (PortMapping(None, 8080, 80, "tcp"), PortMapping(None, 8080, 80, "udp")),
        (PortMapping(LOOPBACK, 8080, 80, "sctp"), PortMapping(LOOPBACK, 8080, 80, "tcp")),
        (PortMapping(LOOPBACK, 8080, 80), PortMapping(LAN, 8080, 80)),
        (PortMapping(None, 8080, 80), PortMapping(None, 8081, 80)),
    ],
)
def test_other_protocols_addresses_or_ports_do_not_clash(published, candidate):
    assert published_clash(candidate, [published]) is None


def test_a_listener_on_every_address_blocks_every_address():
    listener = Listener("tcp", None, 8080)
    assert [listener_clash(PortMapping(ip, 8080, 80), [listener]) for ip in (None, LOOPBACK, LAN)] == [listener] * 3


def test_a_listener_on_127_0_0_1_blocks_only_127_0_0_1_and_every_address():
    listener = Listener("tcp", LOOPBACK, 8080)
    assert [listener_clash(PortMapping(ip, 8080, 80), [listener]) for ip in (None, LOOPBACK, LAN)] == [
        listener, listener, None,
    ]


def test_a_listener_blocks_only_its_protocol_and_port():
    listeners = [Listener("udp", None, 8080), Listener("tcp", None, 8081)]
    assert listener_clash(PortMapping(None, 8080, 80, "tcp"), listeners) is None
    assert listener_clash(PortMapping(None, 8080, 80, "udp"), listeners) == listeners[0]


def test_fixed_ports_map_as_given():
    assert resolve(requests("8080:80", "127.0.0.1:8443:443", "5353:53/udp"), [], [], EPHEMERAL) == [
        PortMapping(None, 8080, 80), PortMapping(LOOPBACK, 8443, 443), PortMapping(None, 5353, 53, "udp"),
    ]


def test_ranges_map_one_to_one():
    assert resolve(requests("9000-9002:7000-7002/udp"), [], [], EPHEMERAL) == [
        PortMapping(None, 9000, 7000, "udp"), PortMapping(None, 9001, 7001, "udp"),
        PortMapping(None, 9002, 7002, "udp"),
    ]


def test_ephemeral_ports_skip_published_and_bound_ports():
    published = [PortMapping(None, 32768, 80)]
    listeners = [Listener("tcp", LOOPBACK, 32769), Listener("udp", None, 32770)]
    assert resolve(requests("80", "81"), published, listeners, EPHEMERAL) == [
        PortMapping(None, 32770, 80), PortMapping(None, 32771, 81),
    ]


def test_ephemeral_ports_are_per_address_and_protocol():
    published = [PortMapping(LAN, 32768, 80), PortMapping(None, 32769, 80, "udp")]
    assert resolve(requests("127.0.0.1::80", "80/udp", "90-91"), published, [], EPHEMERAL) == [
        PortMapping(LOOPBACK, 32768, 80), PortMapping(None, 32768, 80, "udp"),
        PortMapping(None, 32769, 90), PortMapping(None, 32770, 91),
    ]


def test_full_ephemeral_range_is_exhausted():
    published = [PortMapping(None, port, 80) for port in EPHEMERAL[:-1]]
    with pytest.raises(Exhausted) as caught:
        resolve(requests("80", "81"), published, [Listener("tcp", None, 32771)], EPHEMERAL)
    assert str(caught.value) == "no free ephemeral host port left in 32768-32771"


def test_a_host_range_to_one_port_picks_the_first_free_one():
    published = [PortMapping(None, 8000, 80), PortMapping(LOOPBACK, 8002, 80)]
    listeners = [Listener("tcp", None, 8001), Listener("tcp", LOOPBACK, 8004)]
    assert resolve(requests("8000-8010:80"), published, listeners, EPHEMERAL) == [PortMapping(None, 8003, 80)]
    assert resolve(requests("127.0.0.1:8000-8010:80", "127.0.0.1:8000-8010:81"), published, listeners, EPHEMERAL) == [
        PortMapping(LOOPBACK, 8003, 80), PortMapping(LOOPBACK, 8005, 81),
    ]


def test_a_host_range_with_no_free_port_conflicts():
    published = [PortMapping(None, 8000, 80)]
    with pytest.raises(Conflict) as caught:
        resolve(requests("8000-8001:80"), published, [Listener("tcp", None, 8001)], EPHEMERAL)
    assert type(caught.value) is Conflict
    assert str(caught.value).startswith("no free host port in ")
    assert str(caught.value).endswith("8000-8001/tcp")


def test_a_host_range_with_no_free_port_on_one_address_names_the_address():
    published = [PortMapping(LOOPBACK, 8000, 80), PortMapping(LOOPBACK, 8001, 80)]
    with pytest.raises(Conflict) as caught:
        resolve(requests("127.0.0.1:8000-8001:80"), published, [], EPHEMERAL)
    assert str(caught.value).startswith("no free host port in ")
    assert "127.0.0.1" in str(caught.value)


def test_already_published_conflict_names_address_port_and_protocol():
    with pytest.raises(Conflict) as caught:
        resolve(requests("127.0.0.1:8080:80/udp"), [PortMapping(None, 8080, 80, "udp")], [], EPHEMERAL)
    assert type(caught.value) is Conflict
    assert str(caught.value) == "host port 127.0.0.1:8080/udp is already published"


def test_host_process_conflict_names_address_port_protocol_and_the_socket():
    with pytest.raises(Conflict) as caught:
        resolve(requests("8080:80"), [], [Listener("tcp", LOOPBACK, 8080)], EPHEMERAL)
    assert str(caught.value) == (
        "host port 0.0.0.0:8080/tcp is in use by a host process (bound to 127.0.0.1:8080)"
    )
    with pytest.raises(Conflict) as caught:
        resolve(requests("127.0.0.1:9000-9001:9000-9001/sctp"), [], [Listener("sctp", None, 9001)], EPHEMERAL)
    assert str(caught.value) == (
        "host port 127.0.0.1:9001/sctp is in use by a host process (bound to 0.0.0.0:9001)"
    )


@pytest.mark.parametrize(
    "specs, message",
    [
        (("8080:80", "8080:81"), "host port 0.0.0.0:8080/tcp is already published"),
        (("127.0.0.1:8080:80", "8080:81"), "host port 0.0.0.0:8080/tcp is already published"),
        (("9000-9002:9000-9002", "9002:80"), "host port 0.0.0.0:9002/tcp is already published"),
    ],
)
def test_two_mappings_of_one_request_list_conflict(specs, message):
    with pytest.raises(Conflict) as caught:
        resolve(requests(*specs), [], [], EPHEMERAL)
    assert str(caught.value) == message


def test_host_ranges_of_one_request_list_run_out():
    with pytest.raises(Conflict) as caught:
        resolve(requests("8000-8001:80", "8000-8001:81", "8000-8001:82"), [], [], EPHEMERAL)
    assert str(caught.value).startswith("no free host port in ")
    assert str(caught.value).endswith("8000-8001/tcp")


def test_one_request_list_may_use_one_port_on_two_addresses_and_protocols():
    assert resolve(requests("127.0.0.1:8080:80", "192.168.1.10:8080:80", "8080:80/udp"), [], [], EPHEMERAL) == [
        PortMapping(LOOPBACK, 8080, 80), PortMapping(LAN, 8080, 80), PortMapping(None, 8080, 80, "udp"),
    ]


def test_resolve_changes_neither_input():
    published, listeners = [PortMapping(None, 8080, 80)], [Listener("tcp", None, 8081)]
    resolve(requests("9090:90", "91"), published, listeners, EPHEMERAL)
    assert (published, listeners) == ([PortMapping(None, 8080, 80)], [Listener("tcp", None, 8081)])
