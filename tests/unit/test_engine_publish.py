"""Published ports through the Engine on a fake kernel: what the ledger records, which nft map and
set elements go in and come out, and refusals that change nothing."""

import json
import sqlite3
from contextlib import closing
from ipaddress import IPv4Address, IPv6Address

import pytest

from nsnet.engine import Engine
from nsnet.errors import Conflict, Exhausted, InvalidInput, KernelError, NotFound
from nsnet.model import PortMapping
from nsnet.publish import Listener

LOOPBACK = IPv4Address("127.0.0.1")
PUBLISHED = tuple(name + suffix for suffix in ("", "6") for name in (
    "published_any_ip", "published_any_port", "published_addr_ip", "published_addr_port", "published_targets"))


def ports_table(engine: Engine) -> list[tuple]:
    """The ledger's ports table itself, rows without an endpoint included."""
    with closing(sqlite3.connect(f"{engine._store.directory}/state.db")) as db:
        return db.execute("SELECT * FROM ports ORDER BY rowid").fetchall()


@pytest.fixture
def snapshot(engine, kernel, kernel_state):
    def take():
        return kernel_state(kernel), list(kernel.calls), engine.networks(), engine.sandboxes(), ports_table(engine)

    return take


@pytest.fixture
def published(engine, nft_tables):
    """The published_* maps and set as Python values: a concatenation becomes a tuple."""

    def plain(text: str):
        value = json.loads(text)
        return tuple(value["concat"]) if isinstance(value, dict) and "concat" in value else value

    def read() -> dict[str, object]:
        inet = nft_tables()[("inet", engine.owner.table)]
        return {name: {plain(k): plain(v) for k, v in inet[name].items()} if isinstance(inet[name], dict)
                else {plain(e) for e in inet[name]} for name in PUBLISHED
                if inet[name] or not name.endswith("6")}  # the IPv6 ones when they hold something

    return read


NOTHING = {"published_any_ip": {}, "published_any_port": {}, "published_addr_ip": {}, "published_addr_port": {},
           "published_targets": set()}


def test_create_sandbox_publishes_on_its_first_network(engine, kernel, published, assert_matches_ledger):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("back", subnet="10.32.0.0/24")
    web = engine.create_sandbox("web", networks=["app", "back"], publish=["8080:80", "127.0.0.1::90/udp"])
    expected = [PortMapping(None, 8080, 80), PortMapping(LOOPBACK, 32768, 90, "udp")]
    assert engine.ports("web") == expected
    assert [list(e.ports) for e in web.endpoints] == [expected, []]
    assert [list(e.ports) for e in engine.sandbox("web").endpoints] == [expected, []]
    assert published() == {
        "published_any_ip": {("tcp", 8080): "10.31.0.2"},
        "published_any_port": {("tcp", 8080): 80},
        "published_addr_ip": {("127.0.0.1", "udp", 32768): "10.31.0.2"},
        "published_addr_port": {("127.0.0.1", "udp", 32768): 90},
        "published_targets": {("10.31.0.2", "tcp", 80), ("10.31.0.2", "udp", 90)},
    }
    assert_matches_ledger(engine, kernel)


def test_published_elements_are_in_the_sandbox_transaction_before_its_veths(engine, kernel):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"], publish=["8080:80"])
    assert [call[0] for call in kernel.calls[6:]] == [
        "create_netns", "write_etc_files", "nft", "create_veth", "set_port_flags", "add_fdb_entry", "disable_ipv6",
        "set_link_up", "add_address", "replace_default_route",
    ]
    inet = [(c["add"]["element"]["name"], c["add"]["element"]["elem"]) for c in kernel.nft_log[-1]
            if c["add"]["element"]["family"] == "inet"]
    bridge = engine.network("app").bridge
    assert inet == [
        ("sandbox_addresses", [{"concat": [bridge, "10.31.0.2"]}]),
        ("published_any_ip", [[{"concat": ["tcp", 8080]}, "10.31.0.2"]]),
        ("published_any_port", [[{"concat": ["tcp", 8080]}, 80]]),
        ("published_targets", [{"concat": ["10.31.0.2", "tcp", 80]}]),
    ]
    assert {c["add"]["element"]["table"] for c in kernel.nft_log[-1]} == {engine.owner.table}


def test_ports_are_in_the_sandbox_dict_and_survive_a_new_engine(tmp_path, kernel):
    with Engine(state_dir=str(tmp_path / "state"), kernel=kernel) as first:
        first.create_network("app", subnet="10.31.0.0/24")
        first.create_sandbox("web", networks=["app"], publish=["127.0.0.1:8080:80/sctp"])
    with Engine(state_dir=str(tmp_path / "state"), kernel=kernel) as second:
        assert second.ports("web") == [PortMapping(LOOPBACK, 8080, 80, "sctp")]
        assert second.sandbox("web").to_dict()["Networks"]["app"]["Ports"] == [
            {"HostIp": "127.0.0.1", "HostPort": 8080, "SandboxPort": 80, "Protocol": "sctp"},
        ]


def test_ports_of_an_unknown_sandbox(engine):
    with pytest.raises(NotFound) as caught:
        engine.ports("nope")
    assert str(caught.value) == "no such sandbox: 'nope'"


def test_ranges_and_picked_ports(engine):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"], publish=["9000-9001:7000-7001", "8000-8010:80"])
    engine.create_sandbox("db", networks=["app"], publish=["8000-8010:5432"])
    assert [str(p) for p in engine.ports("web") + engine.ports("db")] == [
        "7000/tcp -> 0.0.0.0:9000", "7001/tcp -> 0.0.0.0:9001", "80/tcp -> 0.0.0.0:8000", "5432/tcp -> 0.0.0.0:8001",
    ]


@pytest.mark.parametrize(
    "first, second, message",
    [
        ("8080:80", "8080:81", "host port 0.0.0.0:8080/tcp is already published"),
        ("8080:80", "127.0.0.1:8080:81", "host port 127.0.0.1:8080/tcp is already published"),
        ("127.0.0.1:8080:80", "8080:81", "host port 0.0.0.0:8080/tcp is already published"),
        ("53:53/udp", "53:53/udp", "host port 0.0.0.0:53/udp is already published"),
    ],
)
def test_a_port_already_published_conflicts_and_changes_nothing(engine, snapshot, first, second, message):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("back", subnet="10.32.0.0/24")
    engine.create_sandbox("web", networks=["app"], publish=[first])
    before = snapshot()
    with pytest.raises(Conflict) as caught:
        engine.create_sandbox("db", networks=["app"], publish=["9999:99", second])
    assert str(caught.value) == message
    with pytest.raises(Conflict) as caught:
        engine.connect("back", "web", publish=[second])
    assert str(caught.value) == message
    assert snapshot() == before


def test_other_protocol_or_address_is_no_conflict(engine):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"], publish=["127.0.0.1:8080:80"])
    engine.create_sandbox("db", networks=["app"], publish=["8080:80/udp", "10.31.0.1:8080:80"])
    assert [str(p) for p in engine.ports("db")] == ["80/udp -> 0.0.0.0:8080", "80/tcp -> 10.31.0.1:8080"]


def test_a_port_held_by_a_host_process_conflicts_and_changes_nothing(engine, kernel, snapshot):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("back", subnet="10.32.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    kernel.host_listeners = [Listener("udp", IPv4Address(0), 8080), Listener("tcp", IPv4Address(0), 8080)]
    before = snapshot()
    with pytest.raises(Conflict) as caught:
        engine.create_sandbox("db", networks=["app"], publish=["127.0.0.1:8080:80"])
    assert str(caught.value) == (
        "host port 127.0.0.1:8080/tcp is in use by a host process (bound to 0.0.0.0:8080)"
    )
    with pytest.raises(Conflict) as caught:
        engine.connect("back", "web", publish=["8080:80"])
    assert str(caught.value) == "host port 0.0.0.0:8080/tcp is in use by a host process (bound to 0.0.0.0:8080)"
    assert snapshot() == before


def test_a_host_process_on_one_address_leaves_the_others_free(engine, kernel):
    engine.create_network("app", subnet="10.31.0.0/24")
    kernel.host_listeners = [Listener("tcp", LOOPBACK, 8080)]
    engine.create_sandbox("web", networks=["app"], publish=["10.31.0.1:8080:80"])
    with pytest.raises(Conflict):
        engine.create_sandbox("db", networks=["app"], publish=["8080:80"])
    assert engine.ports("web") == [PortMapping(IPv4Address("10.31.0.1"), 8080, 80)]


def test_a_refused_publish_on_the_default_network_makes_no_network(engine, kernel):
    """As for a taken name: a refusal on the first `create` leaves no default network behind."""
    kernel.host_listeners = [Listener("tcp", None, 8080)]
    with pytest.raises(Conflict):
        engine.create_sandbox("web", publish=["8080:80"])
    assert engine.networks() == []
    assert kernel.calls == []


def test_ephemeral_ports_come_from_the_kernels_range(engine, kernel, snapshot):
    engine.create_network("app", subnet="10.31.0.0/24")
    kernel.ephemeral = range(40000, 40003)
    kernel.host_listeners = [Listener("tcp", None, 40001)]
    engine.create_sandbox("web", networks=["app"], publish=["80", "81/udp"])
    engine.create_sandbox("db", networks=["app"], publish=["5432"])
    assert [str(p) for p in engine.ports("web") + engine.ports("db")] == [
        "80/tcp -> 0.0.0.0:40000", "81/udp -> 0.0.0.0:40000", "5432/tcp -> 0.0.0.0:40002",
    ]
    before = snapshot()
    with pytest.raises(Exhausted) as caught:
        engine.create_sandbox("api", networks=["app"], publish=["8080"])
    assert str(caught.value) == "no free ephemeral host port left in 40000-40002"
    assert snapshot() == before


def test_publishing_on_an_internal_network_conflicts_and_changes_nothing(engine, snapshot):
    engine.create_network("private", subnet="10.31.0.0/24", internal=True)
    engine.create_network("app", subnet="10.32.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    before = snapshot()
    message = "network 'private' is internal: nothing outside it can reach a published port"
    with pytest.raises(Conflict) as caught:
        engine.create_sandbox("db", networks=["private", "app"], publish=["8080:80"])
    assert str(caught.value) == message
    with pytest.raises(Conflict) as caught:
        engine.connect("private", "web", publish=["8080:80"])
    assert str(caught.value) == message
    assert snapshot() == before


def test_an_internal_second_network_takes_no_published_port(engine):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("private", subnet="10.32.0.0/24", internal=True)
    web = engine.create_sandbox("web", networks=["app", "private"], publish=["8080:80"])
    assert [len(e.ports) for e in web.endpoints] == [1, 0]


def test_bad_publish_spec_is_refused_before_anything(engine, kernel, snapshot):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    before = snapshot()
    for call in (lambda: engine.create_sandbox("db", networks=["app"], publish=["8080:80", "0"]),
                 lambda: engine.create_sandbox("db", publish=["[::1]:80:80"]),
                 lambda: engine.connect("app", "web", publish=["x"])):
        with pytest.raises(InvalidInput) as caught:
            call()
        assert caught.value.field == "publish"
    assert snapshot() == before


def test_connect_publishes_on_that_networks_endpoint(engine, kernel, published, assert_matches_ledger):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("db", subnet="10.32.0.0/24")
    engine.create_sandbox("web", networks=["app"], publish=["8080:80"])
    joined = engine.connect("db", "web", publish=["127.0.0.1:5432:5432"])
    assert joined.ports == (PortMapping(LOOPBACK, 5432, 5432),)
    assert [list(e.ports) for e in engine.sandbox("web").endpoints] == [
        [PortMapping(None, 8080, 80)], [PortMapping(LOOPBACK, 5432, 5432)],
    ]
    assert published()["published_addr_ip"] == {("127.0.0.1", "tcp", 5432): "10.32.0.2"}
    assert published()["published_targets"] == {("10.31.0.2", "tcp", 80), ("10.32.0.2", "tcp", 5432)}
    assert_matches_ledger(engine, kernel)


def test_rm_deletes_exactly_the_elements_it_added(engine, kernel, nft_tables, assert_matches_ledger):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("quiet", subnet="10.32.0.0/24", icc=False)
    engine.create_sandbox("db", networks=["app"], publish=["5432:5432"])
    before = nft_tables()
    engine.create_sandbox("web", networks=["app", "quiet"], publish=["8080:80", "8081:80", "127.0.0.1::53/udp"])
    engine.connect("quiet", "db", publish=["9090:90"])
    added = len(kernel.nft_log)
    engine.remove_sandbox("web")
    assert [[(next(iter(c)), c["delete"]["element"]["name"]) for c in t] for t in kernel.nft_log[added:]] == [[
        ("delete", "sandbox_addresses"), ("delete", "port_identity"), ("delete", "port_arp_identity"),
        ("delete", "published_any_ip"), ("delete", "published_any_port"), ("delete", "published_targets"),
        ("delete", "published_addr_ip"), ("delete", "published_addr_port"),
        ("delete", "sandbox_addresses"), ("delete", "port_identity"), ("delete", "port_arp_identity"),
    ]]
    engine.disconnect("quiet", "db")
    assert nft_tables() == before
    assert engine.ports("db") == [PortMapping(None, 5432, 5432)]
    assert_matches_ledger(engine, kernel)


def test_disconnect_deletes_only_that_endpoints_elements(engine, kernel, published, assert_matches_ledger):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("db", subnet="10.32.0.0/24")
    engine.create_sandbox("web", networks=["app"], publish=["8080:80"])
    engine.connect("db", "web", publish=["5432:5432"])
    engine.disconnect("app", "web")
    assert published() == {
        **NOTHING, "published_any_ip": {("tcp", 5432): "10.32.0.2"}, "published_any_port": {("tcp", 5432): 5432},
        "published_targets": {("10.32.0.2", "tcp", 5432)},
    }
    assert engine.ports("web") == [PortMapping(None, 5432, 5432)]
    assert_matches_ledger(engine, kernel)


def test_removed_ports_can_be_published_again(engine, kernel, published):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"], publish=["8080:80"])
    engine.remove_sandbox("web")
    assert published() == NOTHING
    engine.create_sandbox("db", networks=["app"], publish=["8080:81"])
    assert engine.ports("db") == [PortMapping(None, 8080, 81)]


def test_force_remove_network_removes_the_published_elements(engine, kernel, published, assert_matches_ledger):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("db", subnet="10.32.0.0/24")
    engine.create_sandbox("web", networks=["db", "app"])
    engine.create_sandbox("api", networks=["app"], publish=["8080:80"])
    engine.remove_network("app", force=True)
    assert published() == NOTHING
    assert engine.ports("api") == []
    assert_matches_ledger(engine, kernel)


def test_rolled_back_create_releases_its_ports(engine, kernel, snapshot):
    engine.create_network("app", subnet="10.31.0.0/24")
    before = snapshot()
    kernel.fail_at = len(kernel.calls) + 4  # create_veth, after the firewall transaction
    with pytest.raises(KernelError):
        engine.create_sandbox("web", networks=["app"], publish=["8080:80"])
    kernel.fail_at = None
    after = snapshot()
    assert after[0] == before[0] and after[2:] == before[2:]
    engine.create_sandbox("web", networks=["app"], publish=["8080:80"])
    assert engine.ports("web") == [PortMapping(None, 8080, 80)]


def test_0_0_0_0_is_every_ipv4_address_and_brackets_every_ipv6_one(engine, published):
    """As in Docker: on a dual-stack network, 0.0.0.0 publishes in IPv4 only, [::] in IPv6 only,
    and no address in both; a v4 and a v6 wildcard on one port are two mappings, not a clash."""
    engine.create_network("app", subnet=["10.31.0.0/24", "fd00:31::/64"])
    engine.create_sandbox("web", networks=["app"], publish=["0.0.0.0:8080:80", "9000:90"])
    engine.create_sandbox("six", networks=["app"], publish=["[::]:8080:81"])
    assert engine.ports("web") == [PortMapping(IPv4Address(0), 8080, 80), PortMapping(None, 9000, 90)]
    assert engine.ports("six") == [PortMapping(IPv6Address(0), 8080, 81)]
    assert published()["published_any_ip"] == {("tcp", 8080): "10.31.0.2", ("tcp", 9000): "10.31.0.2"}
    assert published()["published_any_ip6"] == {("tcp", 8080): "fd00:31::3", ("tcp", 9000): "fd00:31::2"}
    assert published()["published_any_port6"] == {("tcp", 8080): 81, ("tcp", 9000): 90}
    with pytest.raises(Conflict):
        engine.create_sandbox("db", networks=["app"], publish=["[::]:9000:90"])
    with pytest.raises(Conflict):
        engine.create_sandbox("db", networks=["app"], publish=["127.0.0.1:8080:80"])
