"""Published ports on every path, with real sockets, with and without br_netfilter.

This kernel has br_netfilter built in, and new namespaces start with bridge-nf-call-iptables=1:
bridged traffic then passes the inet hooks (and a hairpin is DNAT'ed while still bridged). Other
hosts run without it. Each path test runs in both modes, switched in the isolated host only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from nsnet import Conflict, Engine

from .conftest import WAN_HOST, WAN_PEER, cli
from .net import blocked, connect, datagram_arrives, run, serve, serve_ports, udp_exchange

BRNF = "/proc/sys/net/bridge/bridge-nf-call-iptables"


@pytest.fixture(params=["br_netfilter", "routed"])
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    with open(BRNF) as handle:
        before = handle.read().strip()
    with open(BRNF, "w") as handle:
        handle.write("1" if request.param == "br_netfilter" else "0")
    yield request.param
    with open(BRNF, "w") as handle:
        handle.write(before)


@pytest.fixture
def web(engine: Engine, wan: str, mode: str) -> Engine:
    """Network app 10.31.0.0/24 with `web` (10.31.0.2) publishing 8080->80 on every address and
    127.0.0.1:8090->90; `client` (10.31.0.3) on app; `far` (10.32.0.2) on network other."""
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("other", subnet="10.32.0.0/24")
    engine.create_sandbox("web", networks=["app"], publish=["8080:80", "127.0.0.1:8090:90"])
    engine.create_sandbox("client", networks=["app"])
    engine.create_sandbox("far", networks=["other"])
    return engine


def through(client_ns: str | None, ip: str, port: int, server_port: int = 80) -> tuple[str | None, list[str]]:
    """Connect to ip:port from client_ns; web serves on its own server_port."""
    server = serve("web", "10.31.0.2", server_port)
    try:
        greeting = connect(client_ns, ip, port)
        return greeting, server.peers() if greeting else []
    finally:
        server.stop()


def test_from_another_machine_keeping_its_source_address(web: Engine, wan: str) -> None:
    assert through(wan, WAN_HOST, 8080) == ("hello from 10.31.0.2", [WAN_PEER])


def test_from_the_host_to_each_of_its_addresses(web: Engine) -> None:
    assert through(None, WAN_HOST, 8080) == ("hello from 10.31.0.2", [WAN_HOST])
    assert through(None, "10.32.0.1", 8080) == ("hello from 10.31.0.2", ["10.32.0.1"])


def test_from_the_host_to_localhost(web: Engine) -> None:
    assert through(None, "127.0.0.1", 8080) == ("hello from 10.31.0.2", ["10.31.0.1"])
    assert through(None, "127.0.0.1", 8090, server_port=90) == ("hello from 10.31.0.2", ["10.31.0.1"])


def test_hairpin_from_a_neighbour_through_the_host_address(web: Engine) -> None:
    assert through("client", WAN_HOST, 8080) == ("hello from 10.31.0.2", ["10.31.0.1"])


def test_self_hairpin_to_its_own_published_port(web: Engine) -> None:
    assert through("web", WAN_HOST, 8080) == ("hello from 10.31.0.2", ["10.31.0.1"])


def test_from_a_sandbox_on_another_network(web: Engine) -> None:
    assert through("far", WAN_HOST, 8080) == ("hello from 10.31.0.2", ["10.32.0.2"])


def test_udp(engine: Engine, wan: str, mode: str) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("dns", networks=["app"], publish=["5353:53/udp"])

    assert udp_exchange(wan, "dns", "10.31.0.2", WAN_HOST, 5353, 53) == ("echo ping", [WAN_PEER])
    assert udp_exchange(None, "dns", "10.31.0.2", "127.0.0.1", 5353, 53) == ("echo ping", ["10.31.0.1"])


def test_every_port_of_a_range(engine: Engine, wan: str, mode: str) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"], publish=["9000-9010:7000-7010"])
    server = serve_ports("web", "10.31.0.2", list(range(7000, 7011)))
    try:
        greetings = [connect(wan, WAN_HOST, port) for port in range(9000, 9011)]
        seen = server.peers()
    finally:
        server.stop()

    assert greetings == [f"hello from 10.31.0.2:{port}" for port in range(7000, 7011)]
    assert sorted(seen) == [[port, WAN_PEER] for port in range(7000, 7011)]


def test_a_two_thousand_port_range(engine: Engine, wan: str) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"], publish=["20000-21999:20000-21999"])
    sample = [20000, 20001, 20999, 21998, 21999]
    server = serve_ports("web", "10.31.0.2", sample)
    try:
        greetings = [connect(wan, WAN_HOST, port) for port in sample]
    finally:
        server.stop()

    assert greetings == [f"hello from 10.31.0.2:{port}" for port in sample]
    assert len(engine.ports("web")) == 2000
    listing = json.loads(run("nft", "-j", "list", "map", "inet", engine.owner.table, "published_any_port").stdout)
    elements = [o["map"]["elem"] for o in listing["nftables"] if "map" in o][0]
    assert len(elements) == 2000


def test_ephemeral_host_port_is_shown_and_works(engine: Engine, wan: str) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"], publish=["80"])
    (mapping,) = engine.ports("web")
    low, high = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())

    assert low <= mapping.host_port <= high
    assert cli("port", "web").stdout == f"80/tcp -> 0.0.0.0:{mapping.host_port}\n"
    assert through(wan, WAN_HOST, mapping.host_port) == ("hello from 10.31.0.2", [WAN_PEER])


def test_localhost_binding_is_never_reachable_from_outside(web: Engine, wan: str) -> None:
    run("ip", "-n", wan, "route", "add", "10.31.0.0/24", "via", WAN_HOST)

    assert through(wan, WAN_HOST, 8090, server_port=90) == (None, [])
    assert through("client", "10.31.0.1", 8090, server_port=90) == (None, [])
    assert through("client", WAN_HOST, 8090, server_port=90) == (None, [])
    # The port works, for the host.
    assert through(None, "127.0.0.1", 8090, server_port=90) == ("hello from 10.31.0.2", ["10.31.0.1"])


def test_a_sandbox_cannot_reach_the_hosts_loopback_through_route_localnet(web: Engine) -> None:
    # An attacker inside `client` routes 127.0.0.2 to the gateway (CVE-2020-8558); the host has
    # route_localnet on the bridge for its own 127.0.0.1 connections, so only nsnet's guard
    # stands in the way.
    web.create_sandbox("probe", networks=["app"], publish=["127.0.0.2:8091:91"])
    for argv in (["sysctl", "-qw", "net.ipv4.conf.eth0.route_localnet=1"],
                 ["ip", "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local"],
                 ["ip", "route", "add", "127.0.0.2/32", "via", "10.31.0.1"]):
        run("ip", "netns", "exec", "client", *argv)
    server = serve("probe", "10.31.0.4", 91, timeout=2.0)
    try:
        assert connect("client", "127.0.0.2", 8091, timeout=1.0) is None
    finally:
        server.stop()
    server = serve("probe", "10.31.0.4", 91)
    try:
        assert connect(None, "127.0.0.2", 8091) == "hello from 10.31.0.4"
    finally:
        server.stop()


def test_a_port_bound_to_one_address_answers_only_there(engine: Engine, wan: str, mode: str) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"], publish=[f"{WAN_HOST}:8095:80"])

    assert through(wan, WAN_HOST, 8095) == ("hello from 10.31.0.2", [WAN_PEER])
    assert through(None, "10.31.0.1", 8095) == (None, [])
    assert through(None, "127.0.0.1", 8095) == (None, [])


def test_direct_routing_reaches_only_published_sandbox_ports(web: Engine, wan: str) -> None:
    run("ip", "-n", wan, "route", "add", "10.31.0.0/24", "via", WAN_HOST)

    assert through(wan, "10.31.0.2", 80) == ("hello from 10.31.0.2", [WAN_PEER])
    assert blocked(wan, "web", "10.31.0.2", 81)
    assert blocked(wan, "client", "10.31.0.3", 80)


def test_another_network_reaches_a_published_port_only_through_the_host(web: Engine, wan: str) -> None:
    # `far` routes to web's address through its gateway, the host: direct routing is for the
    # outside, not a way around the isolation between networks.
    assert blocked("far", "web", "10.31.0.2", 80)
    assert through("far", WAN_HOST, 8080) == ("hello from 10.31.0.2", ["10.32.0.2"])


def test_published_ports_work_on_a_no_icc_network(engine: Engine, wan: str, mode: str) -> None:
    engine.create_network("quiet", subnet="10.34.0.0/24", icc=False)
    engine.create_sandbox("q1", networks=["quiet"], publish=["8080:80"])
    engine.create_sandbox("q2", networks=["quiet"])

    server = serve("q1", "10.34.0.2", 80)
    try:
        assert connect(wan, WAN_HOST, 8080) == "hello from 10.34.0.2"
        assert server.peers() == [WAN_PEER]
    finally:
        server.stop()
    assert blocked("q2", "q1", "10.34.0.2", 80)
    server = serve("q1", "10.34.0.2", 80, timeout=2.0)
    try:  # a hairpin through the published port is no bypass of icc
        assert connect("q2", WAN_HOST, 8080, timeout=1.0) is None
    finally:
        server.stop()


def test_a_published_port_is_refused_twice(engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"], publish=["8080:80", "127.0.0.1:8082:80"])

    with pytest.raises(Conflict, match="host port 0.0.0.0:8080/tcp is already published"):
        engine.create_sandbox("twin", networks=["app"], publish=["8080:80"])
    with pytest.raises(Conflict, match="host port 0.0.0.0:8082/tcp is already published"):
        engine.create_sandbox("twin", networks=["app"], publish=["8082:80"])
    assert [s.name for s in engine.sandboxes()] == ["web"]
    engine.create_sandbox("udp", networks=["app"], publish=["8080:80/udp"])


def test_a_port_held_by_a_host_process_is_refused_and_keeps_working(engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    host_server = serve(None, "0.0.0.0", 8081, count=1, timeout=10.0)
    try:
        result = cli("create", "web", "--network", "app", "-p", "8081:80")
        assert result.returncode == 1
        assert "host port 0.0.0.0:8081/tcp is in use by a host process" in result.stderr
        assert connect(None, "10.31.0.1", 8081) == "hello from 0.0.0.0"
    finally:
        host_server.stop()
    assert engine.sandboxes() == []


def test_removal_deletes_every_element(engine: Engine, wan: str) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"], publish=["8080:80", "127.0.0.1::90", "5353:53/udp"])
    engine.create_sandbox("other", networks=["app"])
    server = serve("web", "10.31.0.2", 80)
    try:  # the port worked before the removal
        assert connect(wan, WAN_HOST, 8080) == "hello from 10.31.0.2"
    finally:
        server.stop()
    engine.remove_sandbox("web")
    engine.remove_sandbox("other")

    ruleset = json.loads(run("nft", "-j", "list", "ruleset").stdout)["nftables"]
    leftovers = [(kind, o[kind]["name"]) for o in ruleset for kind in ("set", "map") if kind in o
                 and o[kind].get("elem") and o[kind]["name"] not in
                 ("bridges", "within_network", "to_bridge", "from_bridge", "bridge_subnets", "masq_subnets")]
    assert leftovers == []
    assert connect(wan, WAN_HOST, 8080, timeout=1.0) is None


def test_anti_spoofing_drops_forged_source_addresses_and_macs(engine: Engine, mode: str) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("victim", networks=["app"])
    engine.create_sandbox("spoofer", networks=["app"])
    assert datagram_arrives("spoofer", "victim", "10.31.0.2", 7001)
    assert datagram_arrives("spoofer", None, "10.31.0.1", 7002)

    run("ip", "-n", "spoofer", "addr", "add", "10.31.0.99/32", "dev", "eth0")
    run("ip", "-n", "spoofer", "route", "replace", "10.31.0.0/24", "dev", "eth0", "src", "10.31.0.99")
    assert not datagram_arrives("spoofer", "victim", "10.31.0.2", 7003)
    assert not datagram_arrives("spoofer", None, "10.31.0.1", 7004)

    run("ip", "-n", "spoofer", "route", "replace", "10.31.0.0/24", "dev", "eth0", "src", "10.31.0.3")
    assert datagram_arrives("spoofer", "victim", "10.31.0.2", 7005)
    run("ip", "-n", "spoofer", "link", "set", "eth0", "address", "02:4e:00:00:00:99")
    run("ip", "-n", "victim", "neigh", "flush", "all")
    assert not datagram_arrives("spoofer", "victim", "10.31.0.2", 7006)


def test_publishing_on_an_address_the_host_does_not_have_is_refused(engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")

    result = cli("create", "web", "--network", "app", "-p", "192.0.2.77:8080:80")

    assert result.returncode == 1
    assert result.stderr == ("nsnet: error: invalid publish host address '192.0.2.77': "
                             "is not an address of this host\n")
    assert engine.sandboxes() == []


def test_a_port_no_sandbox_owns_any_more_cannot_send(engine: Engine, mode: str) -> None:
    # What a removed sandbox leaves for some milliseconds: its veth (of the ledger's interface
    # group), still on the bridge, while the kernel destroys its namespace. Here one is made by
    # hand and kept.
    app = engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    run("ip", "netns", "add", "ghost")
    try:
        run("ip", "link", "add", "nsv0123456789ab", "group", str(engine.owner.group), "type", "veth",
            "peer", "name", "eth0", "netns", "ghost")
        run("ip", "link", "set", "nsv0123456789ab", "master", app.bridge, "up")
        run("ip", "-n", "ghost", "addr", "add", "10.31.0.99/24", "dev", "eth0")
        run("ip", "-n", "ghost", "link", "set", "eth0", "up")
        assert not datagram_arrives("ghost", "web", "10.31.0.2", 7010)
        assert datagram_arrives("web", None, "10.31.0.1", 7011)
    finally:
        run("ip", "netns", "del", "ghost")
        run("ip", "link", "del", "nsv0123456789ab", check=False)
