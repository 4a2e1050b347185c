"""Routes with real sockets: a three-hop chain a - r1 - r2 - b, every hop a link of its own, passes
a TCP connection once each sandbox has its static routes (forwarding switched on inside the
routers by their routes); the ledger, check and gc cover routes; bad input changes nothing."""

from __future__ import annotations

import concurrent.futures
import subprocess

from nsnet import Engine

from .conftest import cli
from .net import exchange


def chain(engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    for name in ("a", "r1", "r2", "b"):
        engine.create_sandbox(name, networks=["app"])
    engine.link("a", "r1", ips=["a=10.1.0.1/30", "r1=10.1.0.2/30", "a=fd01::1/64", "r1=fd01::2/64"])
    engine.link("r1", "r2", ips=["r1=10.2.0.1/30", "r2=10.2.0.2/30", "r1=fd02::1/64", "r2=fd02::2/64"])
    engine.link("r2", "b", ips=["r2=10.3.0.1/30", "b=10.3.0.2/30", "r2=fd03::1/64", "b=fd03::2/64"])


def sysctl(sandbox: str, key: str) -> str:
    return subprocess.run(["ip", "netns", "exec", sandbox, "sysctl", "-n", key], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_a_three_hop_chain_passes_traffic_through_two_routers(engine: Engine) -> None:
    chain(engine)
    assert exchange("a", "b", "10.3.0.2", 7100)[0] is None  # no routes yet: nowhere to go
    for argv in (("a", "10.3.0.0/30", "via", "10.1.0.2"), ("r1", "10.3.0.0/30", "via", "10.2.0.2"),
                 ("r2", "10.1.0.0/30", "via", "10.2.0.1"), ("b", "10.1.0.0/30", "via", "10.3.0.1"),
                 ("a", "fd03::/64", "via", "fd01::2"), ("r1", "fd03::/64", "via", "fd02::2"),
                 ("r2", "fd01::/64", "via", "fd02::1"), ("b", "fd01::/64", "via", "fd03::1")):
        done = cli("route", "add", *argv)
        assert done.returncode == 0, done.stderr
    assert (sysctl("r1", "net.ipv4.ip_forward"), sysctl("r1", "net.ipv6.conf.all.forwarding")) == ("1", "1")
    # Through r1 and r2, the source kept end to end (routed, not translated).
    assert exchange("a", "b", "10.3.0.2", 7100) == ("hello from 10.3.0.2", ["10.1.0.1"])
    assert exchange("b", "a", "fd01::1", 7101) == ("hello from fd01::1", ["fd03::2"])
    assert cli("route", "ls", "-q").stdout.split("\n")[:2] == ["a 10.3.0.0/30 via 10.1.0.2",
                                                                "a fd03::/64 via fd01::2"]
    assert cli("check").stdout == ""

    # A route lost: check says so, gc puts it back.
    subprocess.run(["ip", "-n", "r1", "route", "del", "10.3.0.0/30"], check=True)
    assert cli("check").stdout == "missing: route of r1: 10.3.0.0/30 via 10.2.0.2 (gc adds it again)\n"
    assert cli("gc").returncode == 0 and cli("check").stdout == ""
    assert exchange("a", "b", "10.3.0.2", 7102)[0] == "hello from 10.3.0.2"

    assert cli("route", "rm", "r1", "10.3.0.0/30").returncode == 0
    assert exchange("a", "b", "10.3.0.2", 7103)[0] is None
    # r1's last IPv4 route gone: it no longer forwards IPv4, and still forwards IPv6 (its route left).
    assert (sysctl("r1", "net.ipv4.ip_forward"), sysctl("r1", "net.ipv6.conf.all.forwarding")) == ("0", "1")
    assert cli("check").stdout == ""


def test_bad_routes_change_nothing_and_a_sandboxs_routes_go_with_it(engine: Engine) -> None:
    chain(engine)
    before = subprocess.run(["ip", "-n", "a", "route"], capture_output=True, text=True).stdout
    for argv, message in ((("a", "10.3.0.0/30", "via", "10.9.9.9"), "is on none of a's networks or links"),
                          (("a", "10.3.0.1/30", "via", "10.1.0.2"), "invalid DST '10.3.0.1/30': has host bits set"),
                          (("a", "0.0.0.0/0", "via", "10.1.0.2"), "is the default route"),
                          (("a", "10.3.0.0/30", "via", "fd01::2"), "invalid GW 'fd01::2': is IPv6"),
                          (("ghost", "10.3.0.0/30", "via", "10.1.0.2"), "no such sandbox: 'ghost'")):
        done = cli("route", "add", *argv)
        assert done.returncode != 0 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert cli("route", "add", "a", "10.3.0.0/30", "via", "10.1.0.2").returncode == 0
    done = cli("route", "add", "a", "10.3.0.0/30", "via", "10.1.0.2")
    assert done.stderr == "nsnet: error: sandbox 'a' has a route to 10.3.0.0/30 already\n"
    assert cli("route", "rm", "a", "10.3.0.0/30").returncode == 0
    assert subprocess.run(["ip", "-n", "a", "route"], capture_output=True, text=True).stdout == before
    assert sysctl("a", "net.ipv4.ip_forward") == "0"  # its last route gone: no longer a router
    assert cli("route", "add", "r1", "10.3.0.0/30", "via", "10.2.0.2").returncode == 0
    assert cli("route", "add", "a", "10.3.0.0/30", "via", "10.1.0.2").returncode == 0
    assert cli("unlink", "a", "r1").stderr == ("nsnet: error: sandbox 'a' routes 10.3.0.0/30 via 10.1.0.2 over this"
                                               " link; remove the route first (nsnet route rm)\n")
    # r1 removed: its routes go with it, and a's over the link to it is stranded (the kernel dropped
    # it with the link): check says so, gc forgets it.
    assert cli("rm", "r1").returncode == 0 and cli("route", "ls", "-q").stdout == "a 10.3.0.0/30 via 10.1.0.2\n"
    assert cli("check").stdout == ("wrong: route of a: 10.3.0.0/30 via 10.1.0.2: its gateway is on none of a's"
                                   " networks or links any more (gc forgets it)\n")
    assert cli("gc").returncode == 0 and cli("route", "ls", "-q").stdout == ""
    assert cli("check").stdout == ""


def test_a_router_cannot_put_a_links_traffic_onto_its_network_with_a_foreign_source(engine: Engine) -> None:
    """r1 forwards (it has a route), but what it sends onto its network's bridge must still come
    from its own address: a's packets, routed by r1 out of eth0, are dropped by the bridge."""
    chain(engine)
    assert exchange("a", "b", "10.31.0.5", 7300)[0] == "hello from 10.31.0.5"  # directly, over app: fine
    assert cli("route", "add", "r1", "10.3.0.0/30", "via", "10.2.0.2").returncode == 0  # r1 forwards now
    assert cli("route", "add", "a", "10.31.0.5/32", "via", "10.1.0.2").returncode == 0  # a sends b's way via r1
    # and b would answer a by r1 too: only the bridge's check of r1's source stands in the way.
    assert cli("route", "add", "b", "10.1.0.0/30", "via", "10.31.0.3").returncode == 0
    assert exchange("a", "b", "10.31.0.5", 7301)[0] is None
    assert exchange("b", "a", "10.1.0.1", 7302)[0] is None  # b's own packets pass; a's answers do not


def test_parallel_route_commands_and_gc_lose_nothing(engine: Engine) -> None:
    chain(engine)
    adds = [("route", "add", "r1", f"10.{40 + i}.0.0/24", "via", "10.2.0.2") for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=5) as pool:
        done = list(pool.map(lambda argv: cli(*argv), [*adds[:4], ("gc",), *adds[4:], ("gc",)]))
    assert [d.returncode for d in done] == [0] * len(done), [d.stderr for d in done if d.returncode]
    assert sorted(cli("route", "ls", "-q").stdout.split("\n")[:-1]) == sorted(
        f"r1 10.{40 + i}.0.0/24 via 10.2.0.2" for i in range(8))
    kernel = subprocess.run(["ip", "-n", "r1", "route", "show", "proto", "static"], capture_output=True, text=True,
                            check=True).stdout
    assert sorted(line.split()[0] for line in kernel.splitlines() if "via 10.2.0.2" in line) == sorted(
        f"10.{40 + i}.0.0/24" for i in range(8))
    assert cli("check").stdout == ""
