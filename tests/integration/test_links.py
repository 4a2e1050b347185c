"""Links with real sockets: two sandboxes joined by a cable of their own (a veth pair, no bridge)
talk over it in both families, whatever networks they are also on; the ledger, check and gc
cover it; a removed end takes the cable with it; bad input changes nothing."""

from __future__ import annotations

import json
import subprocess

from nsnet import Engine

from .conftest import cli
from .net import exchange, ip_json


def test_two_sandboxes_talk_over_their_link_in_both_families(engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("a", networks=["app"])
    engine.create_sandbox("b", networks=["app"])
    done = cli("link", "a", "b", "--ip", "a=10.9.0.1/30", "--ip", "b=10.9.0.2/30", "--ip", "a=fd09::1/64",
               "--ip", "b=fd09::2/64", "--mtu", "9000")
    assert done.returncode == 0 and done.stdout == "a:b b:a\n", done.stderr
    ((inside_a,), (inside_b,)) = (ip_json("addr", "show", "b", ns="a"), ip_json("addr", "show", "a", ns="b"))
    assert inside_a["mtu"] == inside_b["mtu"] == 9000 and "UP" in inside_a["flags"] and "UP" in inside_b["flags"]
    assert {(x["local"], x["prefixlen"]) for x in inside_b["addr_info"] if x["scope"] == "global"} == {
        ("10.9.0.2", 30), ("fd09::2", 64)}
    assert exchange("a", "b", "10.9.0.2", 7000) == ("hello from 10.9.0.2", ["10.9.0.1"])
    assert exchange("b", "a", "fd09::1", 7000) == ("hello from fd09::1", ["fd09::2"])
    assert exchange("a", "a", "10.31.0.2", 7001)[0] == "hello from 10.31.0.2"  # its network still works
    listed = json.loads(cli("links", "--format", "json").stdout)
    assert [[(e["Sandbox"], e["Interface"], e["IPAddresses"]) for e in item["Ends"]] for item in listed] == [
        [("a", "b", ["10.9.0.1/30", "fd09::1/64"]), ("b", "a", ["10.9.0.2/30", "fd09::2/64"])]]
    assert cli("check").stdout == ""

    # Damage: an address deleted, then the cable itself; check says so, gc makes it again.
    subprocess.run(["ip", "-n", "b", "addr", "del", "10.9.0.2/30", "dev", "a"], check=True)
    assert cli("check").stdout == "wrong: link a-b: b's a lacks 10.9.0.2/30 (gc makes it again)\n"
    subprocess.run(["ip", "-n", "a", "link", "del", "dev", "b"], check=True)
    assert cli("check").stdout == "missing: link a-b: a has no interface b (gc makes it again)\n"
    assert cli("gc").returncode == 0 and cli("check").stdout == ""
    assert exchange("a", "b", "10.9.0.2", 7002) == ("hello from 10.9.0.2", ["10.9.0.1"])

    assert cli("unlink", "b", "a").returncode == 0
    assert [x["ifname"] for x in ip_json("link", ns="a")] == ["lo", "eth0"] and cli("links", "-q").stdout == ""
    assert cli("check").stdout == ""


def test_a_removed_sandbox_takes_its_links_and_bad_links_change_nothing(engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    for name in ("r1", "r2", "r3"):
        engine.create_sandbox(name, networks=["app"])
    assert cli("link", "r1", "r2").returncode == 0 and cli("link", "r2", "r3").returncode == 0
    def state() -> tuple:
        return cli("links", "--format", "json").stdout, [(x["ifname"], x["mtu"]) for x in ip_json("link", ns="r2")]

    before = state()
    for args, message in ((["r1", "r1"], "invalid sandbox name 'r1': is the other end too"),
                          (["r1", "ghost"], "no such sandbox: 'ghost'"),
                          (["r2", "r1"], "sandboxes 'r2' and 'r1' are linked already"),
                          (["r1", "r3", "--ip", "r2=10.9.0.1/30"], "invalid --ip 'r2=10.9.0.1/30': must be r1=CIDR"),
                          (["r1", "r3", "--ip", "r1=10.9.0.1/30", "--ip", "r3=10.9.1.2/30"],
                           "is not in r1's subnet 10.9.0.0/30"),
                          (["r1", "r3", "--mtu", "20"], "invalid --mtu '20': must be from 68 to 65535")):
        done = cli("link", *args)
        assert done.returncode != 0 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert state() == before
    assert [x["ifname"] for x in ip_json("link", ns="r2")] == ["lo", "eth0", "r1", "r3"]
    assert cli("rm", "r2").returncode == 0
    assert cli("links", "-q").stdout == "" and [x["ifname"] for x in ip_json("link", ns="r1")] == ["lo", "eth0"]
    assert cli("check").stdout == ""


def test_a_sandbox_on_no_network_has_its_loopback_only_until_it_joins_one(engine: Engine) -> None:
    assert cli("create", "alone", "--network", "none").returncode == 0
    assert [(x["ifname"], "UP" in x["flags"]) for x in ip_json("link", ns="alone")] == [("lo", True)]
    assert ip_json("route", ns="alone") == [] and ip_json("-6", "route", ns="alone") == []
    assert exchange("alone", "alone", "127.0.0.1", 7200)[0] == "hello from 127.0.0.1"  # its loopback works
    assert cli("network", "ls", "-q").stdout == ""  # no default network made for it
    assert cli("create", "x", "--network", "none", "--network", "app").stderr == (
        "nsnet: error: invalid network 'none': cannot be joined with other networks\n")
    assert cli("network", "create", "none").stderr == (
        "nsnet: error: invalid network name 'none': is reserved (--network none: a sandbox on no network)\n")
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("peer", networks=["app"])
    assert cli("connect", "app", "alone").returncode == 0
    assert exchange("peer", "alone", "10.31.0.3", 7201) == ("hello from 10.31.0.3", ["10.31.0.2"])
    assert cli("check").stdout == ""
