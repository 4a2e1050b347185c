"""Host port resolution: which published ports and host sockets a new mapping collides with, and
how ephemeral and ranged host ports are picked."""

from ipaddress import IPv4Address

import pytest

from nsnet.errors import Conflict, Exhausted
from nsnet.model import PortMapping
from nsnet.portspec import parse
from nsnet.publish import Listener, Listeners, listener_clash, published_clash, resolve

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
        "host port 127.0.0.1:9001/sctp is in use by a host process (bound to [::]:9001)"
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


class CountingHolders:
    """A HolderLookup over listeners that counts the questions asked, as a BindProbe costs one
    bind() per question."""

    def __init__(self, listeners=()) -> None:
        self._listeners = Listeners(listeners)
        self.calls = 0

    def holder(self, candidate):
        self.calls += 1
        return self._listeners.holder(candidate)


@pytest.mark.parametrize("count", [1000, 2000])
def test_ephemeral_ports_of_a_range_cost_one_lookup_each(count):
    holders = CountingHolders()
    mappings = resolve(requests(f"1-{count}"), [], holders, range(32768, 61000))
    assert mappings == [PortMapping(None, 32768 + i, 1 + i) for i in range(count)]
    assert holders.calls == count


def test_ephemeral_search_continues_after_the_last_port_chosen_past_held_ports():
    held = [Listener("tcp", None, port) for port in range(32768, 32868, 2)]  # every other one of the first 100
    holders = CountingHolders(held)
    published = [PortMapping(None, 32869, 80)]
    mappings = resolve(requests("1-100"), published, holders, range(32768, 61000))
    expected = [p for p in range(32768, 33000) if (p >= 32868 or p % 2 == 1) and p != 32869][:100]
    assert [m.host_port for m in mappings] == expected
    assert holders.calls == 100 + 50  # each chosen port once, each held port once; the published one costs none


def test_requests_for_other_addresses_and_protocols_search_from_the_start():
    holders = CountingHolders()
    assert resolve(requests("1-2", "127.0.0.1::3", "4/udp", "5"), [], holders, EPHEMERAL) == [
        PortMapping(None, 32768, 1), PortMapping(None, 32769, 2), PortMapping(LOOPBACK, 32770, 3),
        PortMapping(None, 32768, 4, "udp"), PortMapping(None, 32771, 5),
    ]


def test_host_ranges_to_one_port_continue_after_the_last_port_chosen():
    holders = CountingHolders()
    specs = [f"8000-8999:{port}" for port in range(1, 501)]
    assert [m.host_port for m in resolve(requests(*specs), [], holders, EPHEMERAL)] == list(range(8000, 8500))
    assert holders.calls == 500


@pytest.mark.parametrize("specs, count, where", [(["1-65535"], 65535, "0.0.0.0/tcp"),
                                                 (["80/udp", "127.0.0.1::1-5/udp"], 5, "127.0.0.1/udp"),
                                                 (["1-2", "3-5"], 5, "0.0.0.0/tcp")])
def test_more_ports_than_the_ephemeral_range_holds_are_refused_before_any_lookup(specs, count, where):
    holders = CountingHolders()
    with pytest.raises(Exhausted) as caught:
        resolve(requests(*specs), [], holders, EPHEMERAL)
    assert str(caught.value) == (f"{count} ports to publish on ephemeral host ports of {where}, but the ephemeral"
                                 " range 32768-32771 holds only 4")
    assert holders.calls == 0


def test_ports_that_cannot_all_be_free_are_refused_after_one_pass():
    holders = CountingHolders([Listener("tcp", None, port) for port in range(32768, 61000, 2)])
    with pytest.raises(Exhausted) as caught:
        resolve(requests("1-20000"), [], holders, range(32768, 61000))
    assert str(caught.value) == "no free ephemeral host port left in 32768-60999"
    assert holders.calls == len(range(32768, 61000))
