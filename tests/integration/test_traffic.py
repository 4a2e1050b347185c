"""What the bridge model promises, proven with TCP connections between real namespaces."""

from __future__ import annotations

from nsnet import Engine

from .conftest import WAN_HOST, WAN_PEER
from .net import blocked, connect, datagram_arrives, exchange, ip_json, run, serve


def ip_of(engine: Engine, sandbox: str, network: str) -> str:
    return str(engine.sandbox(sandbox).endpoint(network).address.ip)


def test_sandbox_to_sandbox_over_the_bridge(engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    engine.create_sandbox("client", networks=["app"])

    greeting, peers = exchange("client", "web", "10.31.0.2", 8000)

    assert greeting == "hello from 10.31.0.2"
    assert peers == ["10.31.0.3"]


def test_sandbox_to_its_gateway_on_the_host(engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])

    greeting, peers = exchange("web", None, "10.31.0.1", 8001)

    assert greeting == "hello from 10.31.0.1"
    assert peers == ["10.31.0.2"]


def test_host_reaches_a_sandbox(engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])

    greeting, peers = exchange(None, "web", "10.31.0.2", 8002)

    assert greeting == "hello from 10.31.0.2"
    assert peers == ["10.31.0.1"]


def test_egress_is_masqueraded_to_the_hosts_wan_address(engine: Engine, wan: str) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])

    greeting, peers = exchange("web", wan, WAN_PEER, 9000)

    assert greeting == f"hello from {WAN_PEER}"
    assert peers == [WAN_HOST]


def test_the_outside_cannot_open_connections_to_a_sandbox(engine: Engine, wan: str) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    # Give the wan machine a route to the sandbox subnet through the host: only the firewall
    # stands between it and the sandbox now.
    run("ip", "-n", wan, "route", "add", "10.31.0.0/24", "via", WAN_HOST)

    assert blocked(wan, "web", "10.31.0.2", 9001)
    # The path itself works: web reaches wan through the same host and link.
    assert exchange("web", wan, WAN_PEER, 9008) == (f"hello from {WAN_PEER}", [WAN_HOST])


def test_networks_are_isolated_from_each_other(engine: Engine, wan: str) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("other", subnet="10.32.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    engine.create_sandbox("x", networks=["other"])

    assert blocked("x", "web", "10.31.0.2", 8003)
    assert blocked("web", "x", "10.32.0.2", 8004)
    # x itself works: it reaches the outside.
    assert exchange("x", wan, WAN_PEER, 9002) == (f"hello from {WAN_PEER}", [WAN_HOST])


def test_internal_network_has_no_egress_but_works_inside(engine: Engine, wan: str) -> None:
    engine.create_network("sealed", subnet="10.33.0.0/24", internal=True)
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("s1", networks=["sealed"])
    engine.create_sandbox("s2", networks=["sealed"])
    engine.create_sandbox("web", networks=["app"])
    # An internal network gives no default route; root in s1 adds one, and with a route back a
    # reply could return without NAT: only the firewall keeps s1 in.
    assert [r for r in ip_json("route", ns="s1") if r["dst"] == "default"] == []
    run("ip", "-n", "s1", "route", "add", "default", "via", "10.33.0.1")
    run("ip", "-n", wan, "route", "add", "10.33.0.0/24", "via", WAN_HOST)

    assert blocked("s1", wan, WAN_PEER, 9003)
    assert not datagram_arrives("s1", wan, WAN_PEER, 9005)
    assert datagram_arrives("web", wan, WAN_PEER, 9006)
    assert blocked("s1", "web", "10.31.0.2", 8005)
    assert blocked("web", "s1", "10.33.0.2", 8006)
    assert exchange("s2", "s1", "10.33.0.2", 8007) == ("hello from 10.33.0.2", ["10.33.0.3"])


def established_udp_entry(client: str, client_port: int, server: str, server_port: int) -> None:
    """A conntrack entry, as a connection of a network since removed would have left one."""
    run("conntrack", "-I", "-p", "udp", "-s", client, "-d", server, "--sport", str(client_port),
        "--dport", str(server_port), "-r", server, "-q", client, "--reply-port-src", str(server_port),
        "--reply-port-dst", str(client_port), "-u", "SEEN_REPLY,ASSURED", "-t", "60")


def test_an_internal_network_stays_closed_to_established_conntrack_entries(engine: Engine, wan: str) -> None:
    # nsnet accepts established flows at the first forward rule; a removed network's subnet may
    # come back as an internal one while the table still holds its connections.
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("sealed", subnet="10.33.0.0/24", internal=True)
    engine.create_sandbox("web", networks=["app"])
    engine.create_sandbox("vault", networks=["sealed"])
    for subnet in ("10.31.0.0/24", "10.33.0.0/24"):
        run("ip", "-n", wan, "route", "add", subnet, "via", WAN_HOST)

    assert not datagram_arrives(wan, "web", "10.31.0.2", 9010, source_port=40010)
    established_udp_entry(WAN_PEER, 40010, "10.31.0.2", 9010)
    assert datagram_arrives(wan, "web", "10.31.0.2", 9010, source_port=40010)  # what an entry opens
    established_udp_entry(WAN_PEER, 40011, "10.33.0.2", 9011)
    assert not datagram_arrives(wan, "vault", "10.33.0.2", 9011, source_port=40011)


def test_connect_and_disconnect_are_live(engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("other", subnet="10.32.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    engine.create_sandbox("x", networks=["other"])
    server = serve("web", "10.31.0.2", 8008, count=1, timeout=10.0)
    try:
        assert connect("x", "10.31.0.2", 8008, timeout=1.0) is None

        endpoint = engine.connect("app", "x")

        assert endpoint.ifname == "eth1"
        assert connect("x", "10.31.0.2", 8008) == "hello from 10.31.0.2"
        assert server.peers() == [str(endpoint.address.ip)]
    finally:
        server.stop()

    engine.disconnect("app", "x")

    assert [l["ifname"] for l in ip_json("link", ns="x")] == ["lo", "eth0"]
    assert blocked("x", "web", "10.31.0.2", 8009)
    default = [r for r in ip_json("route", ns="x") if r["dst"] == "default"]
    assert [(r["gateway"], r["dev"]) for r in default] == [("10.32.0.1", "eth0")]
    assert exchange("x", None, "10.32.0.1", 8013) == ("hello from 10.32.0.1", ["10.32.0.2"])  # x itself works


def test_disconnecting_the_default_network_moves_the_default_route(engine: Engine, wan: str) -> None:
    engine.create_network("a", subnet="10.31.0.0/24")
    engine.create_network("b", subnet="10.32.0.0/24")
    engine.create_sandbox("s", networks=["a", "b"])

    engine.disconnect("a", "s")

    default = [r for r in ip_json("route", ns="s") if r["dst"] == "default"]
    assert [(r["gateway"], r["dev"]) for r in default] == [("10.32.0.1", "eth1")]
    assert exchange("s", wan, WAN_PEER, 9004) == (f"hello from {WAN_PEER}", [WAN_HOST])


def test_no_icc_network_keeps_sandboxes_apart_but_not_from_the_world(engine: Engine, wan: str) -> None:
    engine.create_network("quiet", subnet="10.34.0.0/24", icc=False)
    engine.create_sandbox("q1", networks=["quiet"])
    engine.create_sandbox("q2", networks=["quiet"])

    assert blocked("q2", "q1", "10.34.0.2", 8010)
    assert not datagram_arrives("q2", "q1", "10.34.0.2", 8011)
    assert exchange("q1", None, "10.34.0.1", 8012) == ("hello from 10.34.0.1", ["10.34.0.2"])
    assert exchange("q2", wan, WAN_PEER, 9007) == (f"hello from {WAN_PEER}", [WAN_HOST])


def test_icc_is_per_network(engine: Engine) -> None:
    engine.create_network("quiet", subnet="10.34.0.0/24", icc=False)
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    engine.create_sandbox("client", networks=["app"])

    assert exchange("client", "web", "10.31.0.2", 8013) == ("hello from 10.31.0.2", ["10.31.0.3"])


def test_traffic_within_a_network_is_not_tracked_but_egress_is(engine: Engine, wan: str) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    engine.create_sandbox("client", networks=["app"])

    assert exchange("client", "web", "10.31.0.2", 8020) == ("hello from 10.31.0.2", ["10.31.0.3"])
    assert exchange("client", wan, WAN_PEER, 9020) == (f"hello from {WAN_PEER}", [WAN_HOST])

    flows = run("conntrack", "-L", check=False).stdout
    assert "dport=8020" not in flows  # sandbox to sandbox: untracked, even with br_netfilter
    assert "dport=9020" in flows  # egress: tracked, as masquerade needs
