"""IPv6 and dual stack, with real sockets: every IPv4 promise of the README, in IPv6 too.

The wan fixture is a machine of the host's link at 2001:db8:100::2 (the host is ::1 there). NAT66
is the default (as Docker does for unique local addresses); --ipv6-routed networks are reached
by their own addresses, and only on published ports.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from nsnet import Engine
from nsnet.naming import link_local

from .conftest import WAN6_HOST, WAN6_PEER, WAN_HOST, WAN_PEER, cli
from .net import blocked, connect, datagram_arrives, exchange, ip_json, reboot, run, serve, udp_exchange

DUAL = ["10.31.0.0/24", "fd00:31::/64"]


def addresses(ns: str, ifname: str, family: str) -> list[str]:
    link = ip_json("-family", family, "address", "show", ifname, ns=ns)
    return [f"{a['local']}/{a['prefixlen']}" for a in (link[0]["addr_info"] if link else [])]


def default_route(ns: str, family: str) -> list[tuple[str, str]]:
    return [(r["gateway"], r["dev"]) for r in ip_json("-family", family, "route", "show", "default", ns=ns)]


def sysctl(key: str, ns: str | None = None) -> str:
    argv = (["ip", "netns", "exec", ns] if ns else []) + ["sysctl", "-n", key]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def test_a_dual_stack_sandbox_has_both_families_and_its_first_packet_passes(engine: Engine) -> None:
    app = engine.create_network("app", subnet=DUAL)
    web = engine.create_sandbox("web", networks=["app"]).endpoint("app")
    server = serve("web", "fd00:31::2", 5000)
    try:
        client = engine.create_sandbox("client", networks=["app"]).endpoint("app")
        # The very first packet, right after create returned: no duplicate address detection wait.
        assert connect("client", "fd00:31::2", 5000) == "hello from fd00:31::2"
        assert server.peers() == ["fd00:31::3"]
    finally:
        server.stop()
    assert [str(a) for a in web.addresses] == ["10.31.0.2/24", "fd00:31::2/64"]
    assert addresses("client", "eth0", "inet6") == ["fd00:31::3/64", f"{link_local(client.mac)}/64"]
    assert default_route("client", "inet") == [("10.31.0.1", "eth0")]
    assert default_route("client", "inet6") == [("fd00:31::1", "eth0")]
    assert sorted(addresses(None, app.bridge, "inet6"))[0] == "fd00:31::1/64"
    assert sysctl("net.ipv6.conf.eth0.accept_ra", "client") == "0"
    assert sysctl("net.ipv6.conf.all.forwarding") == "1"
    assert exchange("client", "web", "10.31.0.2", 5001) == ("hello from 10.31.0.2", ["10.31.0.3"])
    assert cli("inspect", "web", "--format", "{{.Networks.app.GlobalIPv6Address}}").stdout == "fd00:31::2\n"
    hosts = open("/etc/netns/web/hosts").read()
    assert "10.31.0.2\tweb\n" in hosts and "fd00:31::2\tweb\n" in hosts


def test_ipv6_only_and_ipv4_only_networks(engine: Engine) -> None:
    only6 = engine.create_network("only6", ipv4=False, ipv6=True, subnet="fd00:41::/64")
    only4 = engine.create_network("only4", subnet="10.41.0.0/24")
    a = engine.create_sandbox("a", networks=["only6"], ip6="fd00:41::a").endpoint("only6")
    engine.create_sandbox("b", networks=["only6", "only4"])
    assert [str(x) for x in a.addresses] == ["fd00:41::a/64"]
    assert a.mac.startswith("0a:4e:")
    assert ip_json("link", "show", only6.bridge)[0]["address"].startswith("0a:4f:")
    assert addresses("a", "eth0", "inet") == []
    assert exchange("b", "a", "fd00:41::a", 5002) == ("hello from fd00:41::a", ["fd00:41::b"])  # round robin: after ::a
    # A network without IPv6 keeps it off on its interfaces, as before.
    assert addresses("b", "eth1", "inet6") == []
    assert sysctl(f"net.ipv6.conf.{only4.bridge}.disable_ipv6") == "1"
    assert default_route("b", "inet6") == [("fd00:41::1", "eth0")]


def test_nat66_egress_is_seen_with_the_hosts_address(engine: Engine, wan: str) -> None:
    engine.create_network("app", subnet=DUAL)
    engine.create_sandbox("web", networks=["app"])
    assert exchange("web", wan, WAN6_PEER, 9000) == (f"hello from {WAN6_PEER}", [WAN6_HOST])
    assert exchange("web", wan, WAN_PEER, 9001) == (f"hello from {WAN_PEER}", [WAN_HOST])


def test_a_routed_network_keeps_its_addresses_and_is_reached_only_on_published_ports(engine: Engine,
                                                                                      wan: str) -> None:
    engine.create_network("pub", subnet=["10.37.0.0/24", "2001:db8:7::/64"], ipv6_routed=True)
    engine.create_sandbox("web", networks=["pub"], publish=["8080:80"])
    run("ip", "-n", wan, "route", "add", "2001:db8:7::/64", "via", WAN6_HOST)
    # Out with its own address (no NAT66); IPv4 still masqueraded.
    assert exchange("web", wan, WAN6_PEER, 9002) == (f"hello from {WAN6_PEER}", ["2001:db8:7::2"])
    assert exchange("web", wan, WAN_PEER, 9003) == (f"hello from {WAN_PEER}", [WAN_HOST])
    # In: the published port, by the host's address and by the sandbox's own; nothing else.
    server = serve("web", "::", 80, count=2)
    try:
        assert connect(wan, WAN6_HOST, 8080) == "hello from ::"
        assert connect(wan, "2001:db8:7::2", 80) == "hello from ::"
        assert server.peers() == [WAN6_PEER, WAN6_PEER]
    finally:
        server.stop()
    assert blocked(wan, "web", "::", 81)


def test_every_published_port_path_works_in_ipv6(engine: Engine, wan: str) -> None:
    engine.create_network("app", subnet=DUAL)
    engine.create_network("other", subnet=["10.32.0.0/24", "fd00:32::/64"])
    engine.create_sandbox("web", networks=["app"], publish=["8080:80", "8090:90/udp"])
    engine.create_sandbox("neighbour", networks=["app"])
    engine.create_sandbox("far", networks=["other"])
    paths = [(wan, WAN6_PEER), (None, WAN6_HOST), ("neighbour", "fd00:31::1"), ("web", "fd00:31::1"),
             ("far", "fd00:32::2")]
    for client, seen_as in paths:  # wan side, the host to its own address, hairpin, self-hairpin, another network
        server = serve("web", "::", 80)
        try:
            assert (client, connect(client, WAN6_HOST, 8080)) == (client, "hello from ::")
            assert server.peers() == [seen_as]
        finally:
            server.stop()
    assert udp_exchange(wan, "web", "::", WAN6_HOST, 8090, 90) == ("echo ping", [WAN6_PEER])
    assert udp_exchange("neighbour", "web", "::", WAN6_HOST, 8090, 90) == ("echo ping", ["fd00:31::1"])
    # And IPv4 beside it, from the same mapping.
    server = serve("web", "0.0.0.0", 80)
    try:
        assert connect(wan, WAN_HOST, 8080) == "hello from 0.0.0.0"
    finally:
        server.stop()
    assert cli("port", "web").stdout.splitlines() == [
        "80/tcp -> 0.0.0.0:8080", "80/tcp -> [::]:8080", "90/udp -> 0.0.0.0:8090", "90/udp -> [::]:8090"]


def test_one_family_or_one_address_is_published_as_asked(engine: Engine, wan: str) -> None:
    engine.create_network("app", subnet=DUAL)
    run("ip", "address", "add", "2001:db8:100::5/64", "dev", "wan0", "nodad")
    engine.create_sandbox("web", networks=["app"],
                          publish=["[::]:8083:83", "0.0.0.0:8084:84", "[2001:db8:100::5]:8085:85"])
    reached = {}
    for host, port, target in [(WAN6_HOST, 8083, 83), (WAN_HOST, 8083, 83), (WAN_HOST, 8084, 84),
                               (WAN6_HOST, 8084, 84), ("2001:db8:100::5", 8085, 85), (WAN6_HOST, 8085, 85)]:
        server = serve("web", "::", target, timeout=1.5)
        try:
            reached[(host, port)] = connect(wan, host, port, timeout=1.0) is not None
        finally:
            server.stop()
    assert reached == {(WAN6_HOST, 8083): True, (WAN_HOST, 8083): False, (WAN_HOST, 8084): True,
                       (WAN6_HOST, 8084): False, ("2001:db8:100::5", 8085): True, (WAN6_HOST, 8085): False}


def test_a_v4_only_network_publishes_on_no_ipv6_address_and_says_so(engine: Engine, wan: str) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"], publish=["8080:80"])
    server = serve("web", "0.0.0.0", 80, timeout=2.0)
    try:
        assert connect(wan, WAN6_HOST, 8080, timeout=1.0) is None
        assert connect(wan, WAN_HOST, 8080) == "hello from 0.0.0.0"
    finally:
        server.stop()
    shown = cli("port", "web")
    assert shown.stdout == "80/tcp -> 0.0.0.0:8080\n"
    assert "has no IPv6: its ports are not published on the host's IPv6 addresses" in shown.stderr
    inspected = json.loads(cli("inspect", "web").stdout)[0]["Networks"]["app"]
    assert "has no IPv6" in inspected["PortsNote"]


@pytest.mark.parametrize("spec, reason", [
    ("[::1]:8080:80", "the kernel cannot forward IPv6 loopback ([::1]) traffic to a sandbox"),
    ("[2001:db8:100::9]:8080:80", "is not an address of this host"),
    ("[10.0.0.1]:8080:80", "is an IPv4 address, not an IPv6 one"),
])
def test_an_ipv6_mapping_that_cannot_work_is_refused_and_changes_nothing(engine: Engine, wan: str, spec: str,
                                                                         reason: str) -> None:
    engine.create_network("app", subnet=DUAL)
    before = (cli("ps", "--format", "json").stdout, subprocess.run(["nft", "list", "ruleset"], capture_output=True,
                                                                   text=True).stdout)
    refused = cli("create", "web", "--network", "app", "-p", spec)
    assert refused.returncode != 0 and reason in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert (cli("ps", "--format", "json").stdout, subprocess.run(["nft", "list", "ruleset"], capture_output=True,
                                                                 text=True).stdout) == before


def test_host_listeners_in_ipv6_are_not_taken(engine: Engine, wan: str) -> None:
    engine.create_network("app", subnet=DUAL)
    any6 = serve(None, "::", 9100, timeout=5.0)
    one6 = serve(None, WAN6_HOST, 9101, timeout=5.0)
    try:
        taken = cli("create", "a", "--network", "app", "-p", "9100:80")
        assert taken.returncode == 1 and "in use by a host process (bound to [::]:9100)" in taken.stderr
        taken = cli("create", "a", "--network", "app", "-p", f"[{WAN6_HOST}]:9101:80")
        assert taken.returncode == 1 and f"bound to [{WAN6_HOST}]:9101" in taken.stderr
        # An IPv4 address is not the IPv6 listener's.
        assert cli("create", "a", "--network", "app", "-p", "0.0.0.0:9101:80").returncode == 0
    finally:
        any6.stop()
        one6.stop()


def test_isolation_internal_and_no_icc_hold_in_ipv6(engine: Engine, wan: str) -> None:
    engine.create_network("app", subnet=DUAL)
    engine.create_network("other", subnet=["10.32.0.0/24", "fd00:32::/64"])
    engine.create_network("private", subnet=["10.33.0.0/24", "fd00:33::/64"], internal=True)
    engine.create_network("quiet", subnet=["10.34.0.0/24", "fd00:34::/64"], icc=False)
    engine.create_sandbox("web", networks=["app"])
    engine.create_sandbox("peer", networks=["app"])
    engine.create_sandbox("far", networks=["other"])
    engine.create_sandbox("inside", networks=["private"])
    engine.create_sandbox("inside2", networks=["private"])
    engine.create_sandbox("q1", networks=["quiet"])
    engine.create_sandbox("q2", networks=["quiet"])
    assert exchange("peer", "web", "fd00:31::2", 5003)[0] is not None  # control
    assert blocked("far", "web", "fd00:31::2", 5004)
    assert exchange("inside2", "inside", "fd00:33::2", 5005)[0] is not None  # control
    assert default_route("inside", "inet6") == []
    assert blocked("inside", wan, WAN6_PEER, 9004)
    assert blocked("inside", None, "fd00:33::1", 9005)  # the host, by its gateway address
    assert blocked("inside", None, WAN6_HOST, 9006)  # and by another of its addresses
    assert exchange(None, "inside", "fd00:33::2", 5006)[0] is not None  # the host reaches in (control)
    assert exchange("q1", None, "fd00:34::1", 9007)[0] is not None  # the gateway (control)
    assert blocked("q1", "q2", "fd00:34::3", 5007)
    # Routed directly from the wan side to a sandbox: nothing unpublished gets in.
    run("ip", "-n", wan, "route", "add", "fd00:31::/64", "via", WAN6_HOST)
    assert blocked(wan, "web", "fd00:31::2", 5008)


def test_taking_ipv6_forwarding_keeps_the_hosts_router_advertisements(engine: Engine) -> None:
    run("ip", "link", "add", "uplink", "type", "veth", "peer", "name", "uplink-peer")  # no dummy module here
    try:
        # A host whose uplink takes router advertisements, before its first IPv6 network.
        run("sysctl", "-qw", "net.ipv6.conf.all.forwarding=0")
        run("sysctl", "-qw", "net.ipv6.conf.uplink.accept_ra=1")
        engine.create_network("app", subnet=DUAL)
        assert sysctl("net.ipv6.conf.all.forwarding") == "1"
        assert sysctl("net.ipv6.conf.uplink.forwarding") == "1"
        assert sysctl("net.ipv6.conf.uplink.accept_ra") == "2"  # it still takes them
        assert sysctl("net.ipv6.conf.default.accept_ra") == "2"  # and so will interfaces made later
        run("sysctl", "-qw", "net.ipv6.conf.uplink.accept_ra=1")
        report = json.loads(cli("doctor", "--format", "json").stdout)
        found = [f for f in report if f["check"] == "ipv6-router-advertisements"]
        assert len(found) == 1 and "uplink" in found[0]["details"]
        run("sysctl", "-qw", "net.ipv6.conf.uplink.accept_ra=2")
        report = json.loads(cli("doctor", "--format", "json").stdout)
        assert [f for f in report if f["check"] == "ipv6-router-advertisements"
                and "uplink" in f["details"]] == []
    finally:
        run("ip", "link", "del", "uplink")


def test_ipv6_damage_is_reported_and_repaired(state_dir: str, engine: Engine, wan: str) -> None:
    app = engine.create_network("app", subnet=DUAL)
    engine.create_sandbox("web", networks=["app"])
    assert cli("check").stdout == ""
    run("ip", "-6", "address", "del", "fd00:31::1/64", "dev", app.bridge)
    run("ip", "-n", "web", "-6", "address", "del", "fd00:31::2/64", "dev", "eth0")
    run("ip", "-n", "web", "-6", "route", "del", "default")
    run("sysctl", "-qw", "net.ipv6.conf.all.forwarding=0")
    drift = cli("check").stdout.splitlines()
    assert sorted(drift) == sorted([
        "wrong: sysctl net.ipv6.conf.all.forwarding: is 0, networks need 1",
        f"missing: network app: bridge {app.bridge} lacks its gateway fd00:31::1/64",
        "missing: sandbox web: eth0 lacks its address fd00:31::2/64",
        "missing: sandbox web: no default route via fd00:31::1 on eth0",
    ])
    assert cli("gc").returncode == 0
    assert cli("check").stdout == ""
    assert exchange("web", wan, WAN6_PEER, 9008) == (f"hello from {WAN6_PEER}", [WAN6_HOST])


def test_datagrams_in_ipv6_between_sandboxes(engine: Engine) -> None:
    engine.create_network("app", subnet=DUAL)
    engine.create_sandbox("a", networks=["app"])
    engine.create_sandbox("b", networks=["app"])
    assert datagram_arrives("a", "b", "fd00:31::3", 7000)


def test_path_mtu_discovery_works_in_ipv6(engine: Engine, wan: str) -> None:
    """IPv6 routers never fragment: a sandbox learns a smaller path MTU only from the ICMPv6
    packet-too-big the host sends it, which nothing of nsnet's may drop."""
    engine.create_network("app", subnet=DUAL)
    engine.create_sandbox("web", networks=["app"])
    run("ip", "link", "set", "wan0", "mtu", "1280")
    run("ip", "-n", wan, "link", "set", "eth0", "mtu", "1280")
    big = ("import socket\ns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
           f"s.connect(('{WAN6_PEER}', 9100))\n"
           "s.setsockopt(socket.IPPROTO_IPV6, 62, 1)  # IPV6_DONTFRAG: EMSGSIZE past the known path MTU\n"
           "import time\n"
           "for _ in range(3):\n"
           "    try:\n"
           "        s.send(b'x' * 1400)\n"
           "    except OSError as exc:\n"
           "        print(exc.errno); break\n"
           "    time.sleep(0.2)\n")
    sent = subprocess.run(["ip", "netns", "exec", "web", "python3", "-c", big], capture_output=True, text=True,
                          timeout=10)
    assert sent.stdout.split() == ["90"]  # EMSGSIZE: the packet-too-big came back and was taken
    route = subprocess.run(["ip", "-n", "web", "-6", "route", "get", WAN6_PEER], capture_output=True, text=True,
                           check=True).stdout
    assert "mtu 1280" in route


def test_after_a_reboot_gc_restores_a_dual_stack_network(state_dir: str, engine: Engine, wan: str) -> None:
    app = engine.create_network("app", subnet=DUAL)
    engine.create_sandbox("web", networks=["app"], publish=["8080:80"])
    reboot(engine.owner.table, ["web"], [app.bridge], "net.ipv6.conf.all.forwarding")

    assert cli("gc").returncode == 0
    assert cli("check").stdout == ""
    assert sysctl("net.ipv6.conf.all.forwarding") == "1"
    assert sysctl(f"net.ipv6.conf.{app.bridge}.accept_dad") == "0"
    engine.create_sandbox("fresh", networks=["app"], publish=["8080:80"])
    assert exchange("fresh", wan, WAN6_PEER, 9010) == (f"hello from {WAN6_PEER}", [WAN6_HOST])
    server = serve("fresh", "::", 80)
    try:
        assert connect(wan, WAN6_HOST, 8080) == "hello from ::"
        assert server.peers() == [WAN6_PEER]
    finally:
        server.stop()
