"""Docker's network modes (nsnet.modes): --network host and container:NAME, with real namespaces
and real connections."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from nsnet import Engine

from .conftest import BEYOND, HOST_ON_LAN, LAN6_PEER, LAN_PEER, NSNET, cli
from .net import blocked, connect, exchange, ip_json, run, serve

_BIND = r"""
import socket, sys
s = socket.socket()
try:
    s.bind(("0.0.0.0", int(sys.argv[1])))
    print("bound")
except OSError as exc:
    print(exc.errno)
"""


def nsnet_exec(name: str, *argv: str) -> str:
    done = subprocess.run([NSNET, "exec", name, "--", *argv], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def netns_of(name: str) -> str:
    return nsnet_exec(name, "readlink", "/proc/self/ns/net")


def test_host_mode_runs_in_the_namespace_nsnet_runs_in(engine: Engine) -> None:
    ours = os.readlink("/proc/self/ns/net")
    links = [x["ifname"] for x in ip_json("link")]
    assert cli("create", "h", "--network", "host").returncode == 0
    assert netns_of("h") == ours
    assert [x["ifname"] for x in json.loads(nsnet_exec("h", "ip", "-j", "link"))] == links
    assert not os.path.exists("/run/netns/h") and not os.path.exists("/etc/netns/h")
    # A server it runs listens in the lab's namespace: the lab's own loopback reaches it.
    server = engine.popen("h", [sys.executable, "-c", "import socket; s = socket.socket(); s.setsockopt(1, 2, 1);"
                                " s.bind(('127.0.0.1', 7310)); s.listen(); print('ready', flush=True);"
                                " c, p = s.accept(); c.sendall(b'hi ' + p[0].encode()); c.close()"],
                          stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        assert connect(None, "127.0.0.1", 7310) == "hi 127.0.0.1"
    finally:
        server.kill()
        server.wait()
    inspected = json.loads(cli("inspect", "h").stdout)
    assert (inspected[0]["NetworkMode"], inspected[0]["NetNS"], inspected[0]["Networks"]) == ("host", "", {})
    for argv, message in ((["-p", "8080:80"], "invalid network 'host': uses the host's network: -p cannot be given"
                                              " (no address, port or alias of its own)"),
                          (["--ip", "10.31.0.9"], "invalid network 'host': uses the host's network: --ip cannot be"
                                                  " given (no address, port or alias of its own)"),
                          (["--network", "app"], "invalid network 'host': cannot be joined with other networks")):
        assert cli("create", "x", "--network", "host", *argv).stderr == f"nsnet: error: {message}\n"
    assert cli("network", "create", "host").stderr == (
        "nsnet: error: invalid network name 'host': is reserved (--network host: a sandbox in the host's namespace)\n")
    assert cli("connect", "nsnet", "h").stderr.startswith("nsnet: error: sandbox 'h' is on the host's network")
    assert cli("check").stdout == "" and cli("gc").returncode == 0 and engine.sandbox("h").network_mode == "host"
    assert cli("rm", "-f", "h").returncode == 0
    assert os.readlink("/proc/self/ns/net") == ours and [x["ifname"] for x in ip_json("link")] == links
    assert cli("ps", "-q").stdout == "" and cli("network", "ls", "-q").stdout == ""  # no default network made
    # run takes it too: the command runs where nsnet does.
    done = subprocess.run([NSNET, "run", "--rm", "--network", "host", "--", "readlink", "/proc/self/ns/net"],
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout.strip()) == (0, ours)
    assert engine.sandboxes() == []


def test_a_joiner_shares_its_donors_namespace_addresses_and_ports(engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    engine.create_sandbox("client", networks=["app"])
    assert cli("create", "side", "--network", "container:web").returncode == 0
    inode = os.stat("/run/netns/web").st_ino
    assert netns_of("side") == netns_of("web") == f"net:[{inode}]"
    assert not os.path.exists("/run/netns/side")
    addresses = [a["local"] for x in json.loads(nsnet_exec("side", "ip", "-j", "-4", "addr")) for a in x["addr_info"]]
    assert addresses == ["127.0.0.1", "10.31.0.2"]
    # A port bound in the donor is busy in the joiner.
    server = serve("web", "0.0.0.0", 7320)
    try:
        assert nsnet_exec("side", sys.executable, "-c", _BIND, "7320") == "98"  # EADDRINUSE
    finally:
        server.stop()
    assert nsnet_exec("side", sys.executable, "-c", _BIND, "7320") == "bound"
    # A server the joiner runs is reached at the donor's address, from the donor's network.
    joined = subprocess.Popen([NSNET, "exec", "side", "--", sys.executable, "-c",
                               "import socket; s = socket.socket(); s.bind(('10.31.0.2', 7321)); s.listen();"
                               " print('ready', flush=True); c, p = s.accept(); c.sendall(b'hi ' + p[0].encode())"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert joined.stdout.readline().strip() == "ready"
        assert connect("client", "10.31.0.2", 7321) == "hi 10.31.0.3"
    finally:
        joined.kill()
        joined.wait()
    # Joining a joiner joins its donor; the ledger and inspect say so.
    assert cli("create", "third", "--network", "container:side").returncode == 0
    assert json.loads(cli("inspect", "third").stdout)[0]["NetworkMode"] == "container:web"
    assert netns_of("third") == f"net:[{inode}]"
    assert cli("connect", "app", "side").stderr == (
        "nsnet: error: sandbox 'side' shares sandbox 'web''s namespace (--network container:web): its networks, links,"
        " routes and interception are 'web''s; change them there\n")
    assert cli("create", "x", "--network", "container:nobody").stderr == "nsnet: error: no such sandbox: 'nobody'\n"
    assert cli("create", "x", "--network", "container:web", "-p", "80").returncode != 0
    assert [line.split()[1:3] for line in cli("ps").stdout.splitlines()[1:]] == [
        ["web", "app"], ["client", "app"], ["side", "container:web"], ["third", "container:web"]]
    done = subprocess.run([NSNET, "run", "--rm", "--network", "container:side", "--", "readlink", "/proc/self/ns/net"],
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout.strip()) == (0, f"net:[{inode}]")
    assert cli("check").stdout == ""
    # The donor cannot go while joined; rm -f takes the joiners with it.
    assert cli("rm", "web").stderr == ("nsnet: error: sandbox 'web' has sandboxes in its namespace (side, third,"
                                       " --network container:); remove them or use -f, which removes them too\n")
    assert cli("rm", "third").returncode == 0 and os.path.exists("/run/netns/web")
    assert exchange("client", "web", "10.31.0.2", 7322) == ("hello from 10.31.0.2", ["10.31.0.3"])
    assert cli("rm", "-f", "web").returncode == 0
    assert [s.name for s in engine.sandboxes()] == ["client"] and not os.path.exists("/run/netns/web")
    assert cli("check").stdout == ""


def test_gc_forgets_the_joiners_of_a_namespace_removed_behind_nsnets_back(engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    engine.create_sandbox("side", networks=["container:web"])
    subprocess.run(["ip", "netns", "del", "web"], check=True)
    assert {(d["kind"], d["subject"]) for d in json.loads(cli("check", "--format", "json").stdout)} == {
        ("missing", "sandbox web")}
    done = cli("gc")
    assert done.returncode == 0 and "forgot sandbox side: the namespace it joined (web's) is gone" in done.stdout
    assert engine.sandboxes() == [] and cli("check").stdout == ""


def macvlan_links() -> list[str]:
    """macvlan links in the host's namespace (none: the children are born in the sandboxes)."""
    return [x["ifname"] for x in ip_json("-d", "link") if x.get("linkinfo", {}).get("info_kind") == "macvlan"]


def parent_state(name: str) -> tuple:
    """What nsnet must never change on a parent: its state, MTU, MAC, master and addresses."""
    (link,) = ip_json("addr", "show", "dev", name)
    return (link["flags"], link["mtu"], link["address"], link.get("master"),
            sorted((a["family"], a["local"], a["prefixlen"]) for a in link["addr_info"]))


def test_macvlan_sandboxes_are_machines_of_the_parents_lan(engine: Engine, lan: str) -> None:
    parent_before = parent_state(lan)
    assert cli("network", "create", "lan", "--driver", "macvlan", "--parent", lan, "--subnet", "192.168.77.0/24",
               "--gateway", LAN_PEER, "--subnet", "fd77::/64").returncode == 0
    assert cli("create", "a", "--network", "lan").returncode == 0
    assert cli("create", "b", "--network", "lan").returncode == 0
    (child,) = ip_json("-d", "link", "show", "eth0", ns="a")
    assert (child["linkinfo"]["info_kind"], child["linkinfo"]["info_data"]["mode"]) == ("macvlan", "bridge")
    assert macvlan_links() == []
    # Each other, the LAN's machine (IPv4 and IPv6) and beyond it through the gateway, by TCP, each
    # with its own source address.
    assert exchange("a", "b", "192.168.77.2", 7330) == ("hello from 192.168.77.2", ["192.168.77.1"])
    assert exchange("b", "lanpeer", LAN_PEER, 7331) == (f"hello from {LAN_PEER}", ["192.168.77.2"])
    assert exchange("a", "lanpeer", LAN6_PEER, 7332) == (f"hello from {LAN6_PEER}", ["fd77::1"])
    assert exchange("a", "lanpeer", BEYOND, 7333) == (f"hello from {BEYOND}", ["192.168.77.1"])
    assert exchange("lanpeer", "a", "192.168.77.1", 7334) == ("hello from 192.168.77.1", [LAN_PEER])
    # The kernel's documented macvlan property: the parent's own host cannot reach its children
    # through it, nor they the host (Docker's docs say the same).
    assert blocked(None, "a", "192.168.77.1", 7335)
    assert blocked("a", None, HOST_ON_LAN, 7336)
    network = json.loads(cli("network", "inspect", "lan").stdout)[0]
    assert (network["Driver"], network["Parent"], network["MacvlanMode"], network["Bridge"], network["DNS"]) == (
        "macvlan", lan, "bridge", "", False)
    assert sorted(network["Sandboxes"]) == ["a", "b"]
    assert cli("network", "ls").stdout.splitlines()[1].split()[1:] == [
        "lan", "192.168.77.0/24,fd77::/64", f"{LAN_PEER},-", f"macvlan:{lan}", "false", "ready"]
    assert cli("check").stdout == ""
    # A child deleted behind nsnet's back is reported and made again.
    run("ip", "-n", "a", "link", "del", "eth0")
    assert [(d["kind"], d["detail"]) for d in json.loads(cli("check", "--format", "json").stdout)] == [
        ("missing", f"macvlan eth0 on {lan} to lan is gone")]
    assert cli("gc").returncode == 0 and cli("check").stdout == ""
    assert exchange("a", "lanpeer", BEYOND, 7337) == (f"hello from {BEYOND}", ["192.168.77.1"])
    # Teardown: the parent stays as it was, no child is left anywhere.
    assert cli("rm", "-f", "a", "b").returncode == 0 and cli("network", "rm", "lan").returncode == 0
    assert parent_state(lan) == parent_before and macvlan_links() == []
    assert cli("check").stdout == ""


def test_macvlan_private_mode_keeps_children_apart_and_no_gateway_means_no_default_route(engine: Engine,
                                                                                         lan: str) -> None:
    assert cli("network", "create", "lan", "--driver", "macvlan", "--parent", lan, "--mode", "private",
               "--subnet", "192.168.77.0/24").returncode == 0
    engine.create_sandbox("a", networks=["lan"])
    engine.create_sandbox("b", networks=["lan"])
    assert ip_json("route", ns="a") == [{"dst": "192.168.77.0/24", "dev": "eth0", "protocol": "kernel",
                                         "scope": "link", "prefsrc": "192.168.77.1", "flags": []}]
    assert blocked("a", "b", "192.168.77.2", 7340)  # private: not even through the parent
    assert exchange("a", "lanpeer", LAN_PEER, 7341) == (f"hello from {LAN_PEER}", ["192.168.77.1"])
    assert cli("check").stdout == ""


def test_bad_macvlan_and_ipvlan_networks_are_refused_in_one_line(engine: Engine, lan: str) -> None:
    for argv, message in (
            (["--driver", "ipvlan", "--parent", lan], "invalid --driver 'ipvlan': this kernel has no ipvlan ("),
            (["--driver", "macvlan", "--parent", "nope0"], "invalid --parent 'nope0': no such interface in this"
                                                           " namespace"),
            (["--driver", "macvlan"], "invalid --parent: is needed by --driver macvlan"),
            (["--parent", lan], f"invalid --parent '{lan}': is for --driver macvlan")):
        done = cli("network", "create", "x", "--subnet", "192.168.77.0/24", *argv)
        assert done.returncode != 0 and done.stderr.startswith(f"nsnet: error: {message}"), done.stderr
        assert done.stderr.count("\n") == 1
    assert cli("network", "ls", "-q").stdout == "" and macvlan_links() == []
    engine.create_network("lan", driver="macvlan", parent=lan, subnet="192.168.77.0/24", gateway=LAN_PEER)
    assert cli("create", "p", "--network", "lan", "-p", "8080:80").stderr == (
        "nsnet: error: network 'lan' is a macvlan network: nothing of nsnet's publishes its ports; its sandboxes are"
        " reached at their own addresses\n")
    assert engine.sandboxes() == []
