"""check sees, and gc repairs, what breaks traffic: link state, port flags, FDB entries, the
ruleset itself; and each ledger looks only at what is its own."""

from __future__ import annotations

import json
import os
import subprocess

from nsnet import Engine

from .conftest import NSNET, WAN_HOST, WAN_PEER, cli
from .net import blocked, datagram_arrives, exchange, run


def check() -> list[tuple[str, str, str]]:
    result = cli("check", "--format", "json")
    assert result.returncode in (0, 1), result.stderr
    return sorted((d["kind"], d["subject"], d["detail"]) for d in json.loads(result.stdout))


def test_link_state_damage_is_reported_and_repaired(state_dir: str, engine: Engine, wan: str) -> None:
    app = engine.create_network("app", subnet="10.31.0.0/24")
    web = engine.create_sandbox("web", networks=["app"]).endpoints[0]
    client = engine.create_sandbox("client", networks=["app"]).endpoints[0]
    assert exchange("client", "web", "10.31.0.2", 8000) == ("hello from 10.31.0.2", ["10.31.0.3"])
    assert check() == []

    run("ip", "link", "set", app.bridge, "down")
    run("ip", "link", "set", app.bridge, "address", "02:00:00:00:00:42")
    run("ip", "link", "set", web.host_ifname, "down")
    run("ip", "link", "set", web.host_ifname, "mtu", "1400")
    run("ip", "-n", "client", "link", "set", "eth0", "down")
    run("ip", "-n", "client", "link", "set", "eth0", "address", "02:00:00:00:00:43")
    run("bridge", "link", "set", "dev", client.host_ifname, "hairpin", "off", "learning", "on", "locked", "off")
    run("bridge", "fdb", "del", web.mac, "dev", web.host_ifname, "master")

    assert check() == sorted([
        ("wrong", "network app", f"bridge {app.bridge} is down"),
        # The kernel lowers a bridge's MTU to its smallest port's.
        ("wrong", "network app", f"bridge {app.bridge} has MTU 1400, the network's is 1500"),
        ("wrong", "network app", f"bridge {app.bridge} has MAC 02:00:00:00:00:42, nsnet gave it 02:4e:0a:1f:00:01"),
        ("wrong", "sandbox web", f"veth {web.host_ifname} is down"),
        ("wrong", "sandbox web", f"veth {web.host_ifname} has MTU 1400, the network's is 1500"),
        ("missing", "sandbox web", f"bridge port {web.host_ifname} lacks its static FDB entry {web.mac}"),
        ("wrong", "sandbox client", "eth0 is down"),
        ("wrong", "sandbox client", f"eth0 has MAC 02:00:00:00:00:43, nsnet gave it {client.mac}"),
        ("wrong", "sandbox client", f"bridge port {client.host_ifname} has hairpin mode off"),
        ("wrong", "sandbox client", f"bridge port {client.host_ifname} learns MAC addresses"),
        ("wrong", "sandbox client", f"bridge port {client.host_ifname} is not locked to its static FDB entry"),
        # Setting eth0 down took its default route with it.
        ("missing", "sandbox client", "no default route via 10.31.0.1 on eth0"),
    ])
    assert blocked("client", "web", "10.31.0.2", 8001)

    assert cli("gc").returncode == 0
    assert check() == []
    assert exchange("client", "web", "10.31.0.2", 8002) == ("hello from 10.31.0.2", ["10.31.0.3"])
    assert exchange("client", wan, WAN_PEER, 9000) == (f"hello from {WAN_PEER}", [WAN_HOST])


def test_an_edited_ruleset_is_reported_and_rebuilt(state_dir: str, engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("other", subnet="10.32.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    engine.create_sandbox("x", networks=["other"])
    table = engine.owner.table
    assert blocked("x", "web", "10.31.0.2", 8000)  # isolation between networks
    assert check() == []

    run("nft", "flush", "chain", "inet", table, "to_network")
    run("nft", "flush", "chain", "bridge", table, "prerouting")
    run("nft", "add", "chain", "inet", table, "intruder")
    # In the bridge table, which gc rebuilds in place (its typeof set cannot be re-declared in
    # JSON): a foreign chain, and a claim letting a port advertise an address it does not have.
    run("nft", "add", "chain", "bridge", table, "intruder")
    run("nft", "add", "element", "bridge", table, "nd_claims", '{ "eve" . 0xfd000000000000000000000000000001 }')

    assert check() == sorted([
        ("wrong", "nftables", "bridge chain prerouting differs from nsnet's (its rules)"),
        ("wrong", "nftables", "inet chain to_network differs from nsnet's (its rules)"),
        ("orphan", "nftables", "inet chain intruder is not nsnet's"),
        ("orphan", "nftables", "bridge chain intruder is not nsnet's"),
        ("orphan", "nftables element", 'bridge nd_claims {"concat": ["eve", "0xfd000000000000000000000000000001"]}'),
    ])
    # With to_network flushed, isolation is gone: the damage check reports is real.
    assert exchange("x", "web", "10.31.0.2", 8001) == ("hello from 10.31.0.2", ["10.32.0.2"])

    assert cli("gc").returncode == 0
    assert check() == []
    assert blocked("x", "web", "10.31.0.2", 8002)
    assert exchange("web", None, "10.31.0.1", 8003) == ("hello from 10.31.0.1", ["10.31.0.2"])


def in_ledger(directory: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([NSNET, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "NSNET_STATE_DIR": directory})


def test_two_ledgers_never_take_each_others_objects(tmp_path, engine: Engine) -> None:
    other = str(tmp_path / "other-ledger")
    assert in_ledger(other, "network", "create", "b", "--subnet", "10.32.0.0/24").returncode == 0
    assert in_ledger(other, "create", "b1", "--network", "b").returncode == 0
    assert in_ledger(other, "create", "b2", "--network", "b").returncode == 0
    engine.create_network("a", subnet="10.31.0.0/24")
    engine.create_sandbox("a1", networks=["a"])
    assert exchange("b1", "b2", "10.32.0.3", 8000) == ("hello from 10.32.0.3", ["10.32.0.2"])

    # Each ledger's check and gc look only at their own links and tables.
    assert cli("check").returncode == 0
    assert cli("gc").returncode == 0
    assert in_ledger(other, "check").stdout == ""
    # Removing this ledger's last network removes its tables, not the other's.
    engine.remove_sandbox("a1", force=True)
    engine.remove_network("a")
    assert in_ledger(other, "check").returncode == 0
    assert exchange("b1", "b2", "10.32.0.3", 8001) == ("hello from 10.32.0.3", ["10.32.0.2"])
    # The other ledger's subnet is a host route here: an auto subnet never takes it.
    assert in_ledger(other, "rm", "-f", "b1", "b2").returncode == 0
    assert in_ledger(other, "network", "rm", "b").returncode == 0


def test_a_network_below_the_ipv6_minimum_mtu_works(engine: Engine) -> None:
    for mtu, subnet in ((1000, "10.31.0.0/24"), (1279, "10.32.0.0/24")):
        name = f"small{mtu}"
        engine.create_network(name, subnet=subnet, mtu=mtu)
        engine.create_sandbox(f"a{mtu}", networks=[name])
        engine.create_sandbox(f"b{mtu}", networks=[name])
    assert datagram_arrives("a1000", "b1000", "10.31.0.3", 8000)
    assert datagram_arrives("a1279", "b1279", "10.32.0.3", 8001)
    assert cli("check").returncode == 0
