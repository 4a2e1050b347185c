"""Crash safety, repair and concurrency: the ledger and the kernel always come back to agreement."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from nsnet import Engine

from .conftest import NSNET, WAN_HOST, WAN_PEER, cli
from .net import blocked, exchange, ip_json, reboot, run


def nsnet_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}


def check() -> list[dict]:
    result = cli("check", "--format", "json")
    return json.loads(result.stdout)


def test_out_of_band_damage_is_reported_repaired_and_rm_still_works(state_dir: str, engine: Engine,
                                                                     wan: str) -> None:
    app = engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"], publish=["8080:80"])
    engine.create_sandbox("lost", networks=["app"])
    engine.create_sandbox("cut", networks=["app"])
    assert check() == []

    run("ip", "link", "del", app.bridge)
    run("ip", "netns", "del", "lost")
    run("ip", "link", "del", engine.sandbox("cut").endpoint("app").host_ifname)
    run("nft", "delete", "table", "inet", engine.owner.table)
    # A bridge of this ledger's interface group that no row describes (a leak), and one shaped
    # like nsnet's names but of another ledger or program: only the first is this ledger's.
    run("ip", "link", "add", "nsbr-0123456789", "group", str(engine.owner.group), "type", "bridge")
    run("ip", "link", "add", "nsbr-abcdef0123", "type", "bridge")

    drift = {(d["kind"], d["subject"]) for d in check()}
    assert drift == {("missing", "network app"), ("wrong", "sandbox web"), ("missing", "sandbox lost"),
                     ("missing", "sandbox cut"), ("missing", "nftables"), ("orphan", "link nsbr-0123456789")}

    assert cli("gc").returncode == 0
    assert check() == []
    assert [link["ifname"] for link in ip_json("link") if link["ifname"].startswith("nsbr-ab")] == ["nsbr-abcdef0123"]
    run("ip", "link", "del", "nsbr-abcdef0123")
    assert [s.name for s in engine.sandboxes()] == ["web", "cut"]
    assert exchange("web", wan, WAN_PEER, 9000) == (f"hello from {WAN_PEER}", [WAN_HOST])
    assert exchange("cut", wan, WAN_PEER, 9001) == (f"hello from {WAN_PEER}", [WAN_HOST])
    assert cli("rm", "-f", "web", "cut", "lost").returncode == 0


def test_after_a_reboot_gc_restores_networks_and_forgets_sandboxes(state_dir: str, engine: Engine,
                                                                    wan: str) -> None:
    app = engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"], publish=["8080:80"])
    reboot(engine.owner.table, ["web"], [app.bridge], "net.ipv4.ip_forward")

    assert cli("gc").returncode == 0

    assert check() == []
    assert engine.sandboxes() == []
    engine.create_sandbox("fresh", networks=["app"], publish=["8080:80"])
    assert exchange("fresh", wan, WAN_PEER, 9002) == (f"hello from {WAN_PEER}", [WAN_HOST])


# Dual stack, so that every step of both families is a kill point (`#2`: the IPv6 one).
SETUP = [("network", "create", "app", "--subnet", "10.31.0.0/24", "--subnet", "fd00:31::/64"),
         ("network", "create", "side", "--subnet", "10.32.0.0/24", "--subnet", "fd00:32::/64"),
         ("create", "web", "--network", "app", "-p", "8080:80"), ("create", "spare", "--network", "side"),
         ("connect", "side", "web"),
         ("service", "create", "s0", "--network", "app", "-p", "80", "--backend", "web", "--affinity", "client-ip"),
         ("create", "third", "--network", "side"), ("link", "web", "third"),
         ("route", "add", "spare", "10.71.0.0/24", "via", "10.32.0.9"), ("create", "peek", "--network", "container:spare"),
         ("shape", "web", "--link", "third", "--rate", "10mbit", "--loss", "5%"),
         ("create", "vm", "--kind", "tap", "--network", "app", "--owner", "4242")]
CRASHES = {
    ("network", "create", "new", "--subnet", "10.33.0.0/24", "--subnet", "fd00:33::/64"):
        ["reserved", "EnsureSysctl", "EnsureSysctl#2", "CreateBridge", "EnsureSysctl#4", "AddAddress", "AddAddress#2",
         "ApplyFirewall", "applied"],
    ("create", "box", "--network", "app", "-p", "8081:81"):
        ["reserved", "CreateNetns", "WriteEtcFiles", "ApplyFirewall", "CreateVeth", "EnableIPv6", "AddAddress",
         "AddAddress#2", "SetDefaultRoute", "SetDefaultRoute#2", "applied"],
    ("connect", "app", "spare", "-p", "8082:82"): ["reserved", "ApplyFirewall", "CreateVeth", "EnableIPv6",
                                                   "AddAddress", "AddAddress#2", "applied"],
    ("disconnect", "side", "web"): ["reserved", "DeleteLink", "RemoveFirewallElements", "applied"],
    ("rm", "-f", "web"): ["reserved", "ApplyFirewall", "KillProcesses", "DeleteNetns", "RemoveEtcFiles",
                          "RemoveFirewallElements", "applied"],
    ("service", "create", "s1", "--network", "app", "-p", "81", "--backend", "web", "--affinity", "client-ip=60",
     "--publish", "30081"): ["reserved", "ApplyFirewall", "applied"],
    ("service", "rm", "s0"): ["reserved", "RemoveFirewallElements", "applied"],
    ("link", "spare", "third", "--ip", "spare=10.60.0.1/30", "--ip", "third=10.60.0.2/30", "--ip", "spare=fd60::1/64",
     "--ip", "third=fd60::2/64"): ["reserved", "CreatePair", "EnableIPv6", "SetLinkUp", "AddAddress", "AddAddress#2",
                                   "EnableIPv6#2", "SetLinkUp#2", "AddAddress#3", "AddAddress#4", "applied"],
    ("unlink", "third", "web"): ["reserved", "ClearQdisc", "ApplySandboxFirewall", "DeleteLink", "applied"],
    ("shape", "spare", "--network", "side", "--rate", "10mbit", "--loss", "5%", "--direction", "both"):
        ["reserved", "SetQdisc", "SetQdisc#2", "ApplySandboxFirewall", "applied"],
    ("shape", "web", "--link", "third", "--rate", "20mbit"): ["reserved", "SetQdisc", "ApplySandboxFirewall", "applied"],
    ("shape", "web", "--link", "third", "--clear"): ["reserved", "ClearQdisc", "ApplySandboxFirewall", "applied"],
    ("route", "add", "web", "10.70.0.0/24", "via", "10.31.0.9"): ["reserved", "EnsureSysctl", "AddRoute", "applied"],
    ("route", "rm", "spare", "10.71.0.0/24"): ["reserved", "DeleteRoute", "EnsureSysctl", "applied"],
    ("network", "rm", "-f", "side"): ["reserved", "DeleteLink", "RemoveFirewallElements", "applied"],
    # Network modes (nsnet.modes): ledger rows only; rm -f of a donor removes its joiner first.
    ("create", "h", "--network", "host"): ["reserved", "applied"],
    ("create", "j", "--network", "container:web"): ["reserved", "applied"],
    ("rm", "peek"): ["reserved", "applied"],
    ("rm", "-f", "spare"): ["reserved", "applied", "reserved#2", "DeleteNetns", "applied#2"],
    ("create", "vm2", "--kind", "tap", "--network", "app", "--owner", "4242", "-p", "8083:83"):
        ["reserved", "ApplyFirewall", "CreateTap", "SetGroup", "SetMtu", "SetMac", "DisableIPv6", "AttachToBridge",
         "SetPortFlags", "AddFdbEntry", "SetLinkUp", "applied"],
    ("rm", "vm"): ["reserved", "RemoveFirewallElements", "DeleteLink", "applied"],
}
CASES = [(argv, step) for argv, steps in CRASHES.items() for step in steps]


@pytest.mark.parametrize("argv, step", CASES, ids=[f"{a[0]}-{a[1]}@{s}" for a, s in CASES])
def test_a_kill_at_any_step_is_repaired_by_gc(state_dir: str, engine: Engine, argv: tuple, step: str) -> None:
    for setup in SETUP:
        assert cli(*setup).returncode == 0
    crashed = subprocess.run([NSNET, *argv], env=nsnet_env(NSNET_FAULT=step), capture_output=True, timeout=60)
    assert crashed.returncode == -9, crashed.stderr

    assert cli("gc").returncode == 0

    assert check() == []
    addresses = [a.ip for s in engine.sandboxes() for e in s.endpoints for a in e.addresses]
    assert len(addresses) == len(set(addresses))
    assert cli("create", "after", "--network", "app").returncode == 0
    after = engine.sandbox("after").endpoint("app")
    assert [a.version for a in after.addresses] == [4, 6]
    addresses += [a.ip for a in after.addresses]
    assert len(addresses) == len(set(addresses))
    assert check() == []


# A sandbox on a, then b: a's endpoint carries the default route, and disconnecting it hands the
# route to b's (issue 9, item 10). Each step of that disconnect is a kill point.
DEFAULT_ROUTE_SETUP = [("network", "create", "a", "--subnet", "10.35.0.0/24"), ("network", "create", "b", "--subnet",
                       "10.36.0.0/24"), ("create", "box", "--network", "a"), ("connect", "b", "box")]
DEFAULT_ROUTE_STEPS = ["reserved", "DeleteLink", "RemoveFirewallElements", "SetDefaultRoute", "applied"]


@pytest.mark.parametrize("step", DEFAULT_ROUTE_STEPS)
def test_a_kill_while_disconnecting_the_default_route_is_reported_and_repaired(state_dir: str, engine: Engine,
                                                                               step: str) -> None:
    for setup in DEFAULT_ROUTE_SETUP:
        assert cli(*setup).returncode == 0
    assert [(r["gateway"], r["dev"]) for r in ip_json("route", "show", "default", ns="box")] == [("10.35.0.1", "eth0")]
    crashed = subprocess.run([NSNET, "disconnect", "a", "box"], env=nsnet_env(NSNET_FAULT=step), capture_output=True,
                             timeout=60)
    assert crashed.returncode == -9, crashed.stderr

    half_done = cli("check")
    assert (half_done.returncode, half_done.stdout != "") == (1, True)
    assert cli("gc").returncode == 0

    assert [(r["gateway"], r["dev"]) for r in ip_json("route", "show", "default", ns="box")] == [("10.36.0.1", "eth1")]
    box = engine.sandbox("box")
    assert [(e.network, e.ifname, e.default_route) for e in box.endpoints] == [("b", "eth1", True)]
    assert check() == []


def test_fifty_parallel_creates_get_fifty_addresses(state_dir: str, engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    processes = [subprocess.Popen([NSNET, "create", f"s{i:02}", "--network", "app"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for i in range(50)]
    errors = [p.communicate(timeout=120)[1] for p in processes]

    assert [p.returncode for p in processes] == [0] * 50, errors
    sandboxes = engine.sandboxes()
    assert sorted(s.name for s in sandboxes) == [f"s{i:02}" for i in range(50)]
    assert len({s.endpoints[0].address.ip for s in sandboxes}) == 50
    assert check() == []


def test_parallel_network_creates_never_overlap(state_dir: str, engine: Engine) -> None:
    processes = [subprocess.Popen([NSNET, "network", "create", f"n{i}"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for i in range(10)]
    errors = [p.communicate(timeout=120)[1] for p in processes]

    assert [p.returncode for p in processes] == [0] * 10, errors
    subnets = [n.subnet for n in engine.networks()]
    assert len(subnets) == 10
    assert not any(a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1:])
    assert check() == []


def test_removing_what_is_already_gone(state_dir: str, engine: Engine) -> None:
    assert cli("rm", "-f", "never").returncode == 0
    assert cli("network", "rm", "-f", "never").returncode == 0
    assert cli("rm", "never").stderr == "nsnet: error: no such sandbox: 'never'\n"
    assert cli("network", "rm", "never").stderr == "nsnet: error: no such network: 'never'\n"


def test_state_is_private_and_names_cannot_escape(state_dir: str, engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    assert os.stat(state_dir).st_mode & 0o777 == 0o700
    assert os.stat(os.path.join(state_dir, "state.db")).st_mode & 0o777 == 0o600
    for name in ("../etc", "a/b", ".", "..", "x" * 64, "-rf"):
        assert cli("create", name, "--network", "app").returncode in (1, 2)
    assert sorted(os.listdir("/run/netns")) == []


def test_addresses_and_routes_inside_a_sandbox_are_checked_and_repaired(state_dir: str, engine: Engine,
                                                                        wan: str) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    run("ip", "-n", "web", "addr", "flush", "dev", "eth0")

    assert {(d["kind"], d["detail"]) for d in check()} == {
        ("missing", "eth0 lacks its address 10.31.0.2/24"), ("missing", "no default route via 10.31.0.1 on eth0")}
    assert cli("gc").returncode == 0
    assert check() == []
    assert exchange("web", wan, WAN_PEER, 9003) == (f"hello from {WAN_PEER}", [WAN_HOST])


def namespaces_of_every_thread() -> set[tuple[str, str]]:
    return {(os.readlink(f"/proc/self/task/{task}/ns/net"), os.readlink(f"/proc/self/task/{task}/ns/mnt"))
            for task in os.listdir("/proc/self/task")}


def test_nothing_leaves_the_calling_process_in_another_namespace(state_dir: str, engine: Engine) -> None:
    before = namespaces_of_every_thread()
    assert len(before) == 1

    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"], publish=["8080:80"])
    assert engine.exec("web", ["true"]) == 0
    engine.popen("web", ["sleep", "0"]).wait()
    engine.check()
    engine.remove_sandbox("web", force=True)

    assert namespaces_of_every_thread() == before


def test_the_bridges_own_sysctls_are_checked_and_repaired(state_dir: str, engine: Engine) -> None:
    app = engine.create_network("app", subnet="10.31.0.0/24")
    run("sysctl", "-qw", f"net.ipv4.conf.{app.bridge}.route_localnet=0")

    assert [(d["kind"], d["detail"]) for d in check()] == [
        ("wrong", f"sysctl net.ipv4.conf.{app.bridge}.route_localnet is 0, nsnet sets 1")]
    assert cli("gc").returncode == 0
    assert check() == []


def test_a_no_icc_ports_isolation_is_checked_and_repaired(state_dir: str, engine: Engine) -> None:
    engine.create_network("quiet", subnet="10.34.0.0/24", icc=False)
    engine.create_sandbox("q1", networks=["quiet"])
    engine.create_sandbox("q2", networks=["quiet"])
    port = engine.sandbox("q1").endpoint("quiet").host_ifname
    run("bridge", "link", "set", "dev", port, "isolated", "off")

    assert [(d["kind"], d["detail"]) for d in check()] == [
        ("wrong", f"bridge port {port} is not isolated, its network's icc says otherwise")]
    assert cli("gc").returncode == 0
    assert check() == []
    assert blocked("q2", "q1", "10.34.0.2", 80)


# macvlan networks (nsnet.drivers): a child is born inside its sandbox in one message, so a kill
# leaves it there (gc deletes it, or the namespace with it) and never one in the host; the parent
# is never touched. Dual stack with a gateway, so that every step is a kill point.
MACVLAN_SETUP = [("network", "create", "lan", "--driver", "macvlan", "--parent", "lanp", "--subnet", "192.168.77.0/24",
                  "--gateway", "192.168.77.100", "--subnet", "fd77::/64", "--gateway", "fd77::100"),
                 ("create", "on", "--network", "lan"), ("create", "off", "--network", "none")]
MACVLAN_CRASHES = {
    ("create", "m", "--network", "lan"): ["reserved", "CreateNetns", "WriteEtcFiles", "CreateMacvlan", "EnableIPv6",
                                          "SetLinkUp", "AddAddress", "AddAddress#2", "SetDefaultRoute",
                                          "SetDefaultRoute#2", "applied"],
    ("connect", "lan", "off"): ["reserved", "CreateMacvlan", "EnableIPv6", "SetLinkUp", "AddAddress", "AddAddress#2",
                                "SetDefaultRoute", "applied"],
    ("disconnect", "lan", "on"): ["reserved", "DeleteLink", "applied"],
    ("rm", "-f", "on"): ["reserved", "KillProcesses", "DeleteNetns", "applied"],
    ("network", "create", "lan2", "--driver", "macvlan", "--parent", "lanq", "--subnet", "192.168.78.0/24"):
        ["reserved", "applied"],
}
MACVLAN_CASES = [(argv, step) for argv, steps in MACVLAN_CRASHES.items() for step in steps]


@pytest.mark.parametrize("argv, step", MACVLAN_CASES, ids=[f"{a[0]}-{a[1]}@{s}" for a, s in MACVLAN_CASES])
def test_a_kill_at_any_step_of_a_macvlan_change_is_repaired_by_gc(state_dir: str, engine: Engine, lan: str,
                                                                  argv: tuple, step: str) -> None:
    run("ip", "link", "add", "lanq", "type", "veth", "peer", "name", "lanq-peer")  # (no dummy module here)
    try:
        parent = ip_json("link", "show", lan)
        for setup in MACVLAN_SETUP:
            assert cli(*setup).returncode == 0
        crashed = subprocess.run([NSNET, *argv], env=nsnet_env(NSNET_FAULT=step), capture_output=True, timeout=60)
        assert crashed.returncode == -9, crashed.stderr

        assert cli("gc").returncode == 0

        assert check() == []
        assert [x["ifname"] for x in ip_json("-d", "link")
                if x.get("linkinfo", {}).get("info_kind") == "macvlan"] == []  # none ever in the host
        for sandbox in engine.sandboxes():  # each sandbox has a child exactly when the ledger says so
            kinds = [x.get("linkinfo", {}).get("info_kind") for x in ip_json("-d", "link", ns=sandbox.name)]
            assert kinds.count("macvlan") == len(sandbox.endpoints), sandbox.name
        assert cli("create", "after", "--network", "lan").returncode == 0
        assert exchange("after", "lanpeer", "203.0.113.9", 9100)[0] == "hello from 203.0.113.9"
        addresses = [a.ip for s in engine.sandboxes() for e in s.endpoints for a in e.addresses]
        assert len(addresses) == len(set(addresses))
        assert ip_json("link", "show", lan) == parent and check() == []
    finally:
        for sandbox in engine.sandboxes():
            engine.remove_sandbox(sandbox.name, force=True)
        run("ip", "link", "del", "lanq", check=False)
