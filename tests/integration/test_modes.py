"""Docker's network modes (nsnet.modes): --network host and container:NAME, with real namespaces
and real connections."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from nsnet import Engine

from .conftest import NSNET, cli
from .net import connect, exchange, ip_json, serve

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
    assert cli("ls", "-q").stdout == "" and cli("network", "ls", "-q").stdout == ""  # no default network made
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
