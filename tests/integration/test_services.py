"""Services with real sockets: a VIP spreads new connections over its backends evenly (chi-square),
follows sandboxes as they come and go, answers a backend calling its own VIP, refuses at once
without backends, is its own network's and the host's only, and survives check/gc; a container
its runtime attaches through the CNI plugin serves as a sandbox does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from nsnet import Engine

from .conftest import NSNET, WAN6_PEER, WAN_HOST, WAN_PEER, cli
from .net import Server, run, start
from .test_cni import Runtime

# Greets every connection with its name (and the client's address, with "peer") until idle for
# `timeout` seconds; on both families with "dual".
_NAMED = r"""
import socket, sys
name, port, timeout, mode = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
if "dual" in mode:
    server = socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=256)
else:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(256)
server.settimeout(timeout)
print("ready", flush=True)
while True:
    try:
        conn, peer = server.accept()
    except socket.timeout:
        break
    conn.sendall((f"{name} {peer[0].removeprefix('::ffff:')}" if "peer" in mode else name).encode())
    conn.close()
"""
# N connections one after the other; prints the count of each greeting (or error) as JSON.
_CLIENT = r"""
import collections, json, socket, sys
ip, port, count, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
seen = collections.Counter()
for _ in range(count):
    try:
        with socket.create_connection((ip, port), timeout=timeout) as conn:
            seen[conn.recv(100).decode() or "empty"] += 1
    except OSError as exc:
        seen[type(exc).__name__] += 1
print(json.dumps(seen))
"""


def named(sandbox: str, port: int = 8080, timeout: float = 5.0, mode: str = "") -> Server:
    return start(sandbox, _NAMED, sandbox, port, timeout, mode or "-")


def ask(sandbox: str | None, ip: str, port: int = 80, count: int = 1, timeout: float = 2.0) -> Counter:
    argv = [sys.executable, "-c", _CLIENT, ip, str(port), str(count), str(timeout)]
    done = subprocess.run((["ip", "netns", "exec", sandbox] if sandbox else []) + argv, capture_output=True,
                          text=True, timeout=count * timeout + 10, check=True)
    return Counter(json.loads(done.stdout))


@pytest.fixture
def app(engine: Engine) -> Engine:
    engine.create_network("app", subnet="10.31.0.0/24")
    for name in ("web1", "web2", "web3"):
        engine.create_sandbox(name, networks=["app"], labels=["app=web"])
    engine.create_sandbox("client", networks=["app"])
    return engine


def test_connections_spread_evenly_over_the_backends(app: Engine) -> None:
    service = app.create_service("web", network="app", ports=["80:8080"], selector=["app=web"])
    assert [str(v) for v in service.vips] == ["10.211.0.1"]
    servers = [named(f"web{i}", timeout=20) for i in (1, 2, 3)]
    try:
        seen = ask("client", "10.211.0.1", count=1200)
    finally:
        for server in servers:
            server.stop()
    assert set(seen) == {"web1", "web2", "web3"} and sum(seen.values()) == 1200, seen
    # Chi-square against an even spread, 2 degrees of freedom: above 13.8 happens by chance once
    # in a thousand runs.
    chi2 = sum((seen[n] - 400) ** 2 / 400 for n in ("web1", "web2", "web3"))
    assert chi2 < 13.8, seen


def test_a_backend_reaches_its_own_vip_and_the_host_reaches_it_too(app: Engine, wan: str) -> None:
    app.create_service("one", network="app", ports=["80:8080"], backends=["web1"])
    server = named("web1")
    # The host reaches a VIP as any address it has no network for: by its default route, which
    # the translation then overrides (a host without one gets "network unreachable").
    subprocess.run(["ip", "route", "add", "default", "via", WAN_PEER], check=True)
    try:
        assert ask("web1", "10.211.0.1") == {"web1": 1}  # hairpin: to itself through its VIP
        assert ask(None, "10.211.0.1") == {"web1": 1}  # the host
        assert ask("client", "10.211.0.1") == {"web1": 1}
    finally:
        subprocess.run(["ip", "route", "del", "default"], check=True)
        server.stop()


def test_backends_follow_sandboxes_and_an_empty_service_refuses_at_once(app: Engine) -> None:
    app.create_service("api", network="app", ports=["80:8080", "53/udp"], selector=["tier=api"])
    assert ask("client", "10.211.0.1") == {"ConnectionRefusedError": 1}  # refused, not a silent timeout
    refused = subprocess.run(["ip", "netns", "exec", "client", sys.executable, "-c",
                              "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2);"
                              " s.connect(('10.211.0.1', 53)); s.send(b'x');\n"
                              "try:\n s.recv(10)\nexcept OSError as e: print(type(e).__name__)"],
                             capture_output=True, text=True, check=True)
    assert refused.stdout.strip() == "ConnectionRefusedError"  # ICMP port unreachable
    app.create_sandbox("api1", networks=["app"], labels=["tier=api", "x=y"])
    server = named("api1", timeout=10)
    try:
        assert ask("client", "10.211.0.1") == {"api1": 1}
        app.disconnect("app", "api1")
        assert ask("client", "10.211.0.1") == {"ConnectionRefusedError": 1}
        app.connect("app", "api1")
    finally:
        server.stop()
    server = named("api1", timeout=10)
    try:
        assert ask("client", "10.211.0.1") == {"api1": 1}
    finally:
        server.stop()
    app.remove_sandbox("api1", force=True)
    assert ask("client", "10.211.0.1") == {"ConnectionRefusedError": 1}
    listed = json.loads(cli("service", "inspect", "api").stdout)
    assert [(s["Name"], s["VIP"], s["VIPs"], s["Backends"]) for s in listed] == [
        ("api", "10.211.0.1", ["10.211.0.1"], [])]


def test_an_established_connection_survives_backend_changes(app: Engine) -> None:
    app.create_service("one", network="app", ports=["80:8080"], backends=["web1"], selector=["app=none"])
    echo = start("web1", r"""
import socket
s = socket.socket(); s.bind(("0.0.0.0", 8080)); s.listen(1); print("ready", flush=True)
s.settimeout(20); c, _ = s.accept(); c.settimeout(20)
while True:
    data = c.recv(100)
    if not data: break
    c.sendall(data)
""")
    client = subprocess.Popen(["ip", "netns", "exec", "client", sys.executable, "-u", "-c", r"""
import socket, sys
c = socket.create_connection(("10.211.0.1", 80), timeout=20)
for line in sys.stdin:
    c.sendall(line.encode()); print(c.recv(100).decode().strip(), flush=True)
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        client.stdin.write("one\n"); client.stdin.flush()
        assert client.stdout.readline().strip() == "one"
        for i in range(5):  # the service's backends change under the open connection
            app.create_sandbox(f"extra{i}", networks=["app"], labels=["app=none"])
            client.stdin.write(f"after {i}\n"); client.stdin.flush()
            assert client.stdout.readline().strip() == f"after {i}"
        for i in range(5):
            app.remove_sandbox(f"extra{i}")
        client.stdin.write("end\n"); client.stdin.flush()
        assert client.stdout.readline().strip() == "end"
    finally:
        client.kill()
        client.wait()
        echo.stop()


def test_a_vip_is_its_networks_and_the_rest_of_the_range_is_closed(app: Engine) -> None:
    app.create_network("other", subnet="10.32.0.0/24")
    app.create_sandbox("stranger", networks=["other"])
    app.create_service("web", network="app", ports=["80:8080"], selector=["app=web"])
    server = named("web1", timeout=10)
    try:
        assert ask("stranger", "10.211.0.1", timeout=1.0) == {"TimeoutError": 1}  # isolation holds for VIPs
        assert ask("client", "10.211.0.1", port=81) == {"ConnectionRefusedError": 1}  # a port it does not serve
        assert ask("client", "10.211.0.9", timeout=1.0) == {"TimeoutError": 1}  # no service holds it: dropped
    finally:
        server.stop()


def test_check_and_gc_cover_services_and_bad_input_changes_nothing(app: Engine) -> None:
    table = app.owner.table
    app.create_service("web", network="app", ports=["80:8080"], selector=["app=web"])
    assert cli("check").stdout == ""
    subprocess.run(["nft", "flush", "map", "inet", table, "service_ips"], check=True)
    subprocess.run(["nft", "flush", "chain", "inet", table, "service_dispatch_3"], check=True)
    drift = json.loads(cli("check", "--format", "json").stdout)
    assert {d["kind"] for d in drift} == {"missing", "wrong"} and len(drift) == 2, drift
    assert cli("gc").returncode == 0 and cli("check").stdout == ""
    server = named("web2", timeout=10)
    try:
        assert ask("client", "10.211.0.1", count=30)["web2"] > 0
    finally:
        server.stop()
    # A service with affinity, published on the host: its chains and elements are repaired too.
    app.create_service("kept", network="app", ports=["80:8080"], backends=["web2"], affinity="client-ip=90",
                       publish=["30090"])
    subprocess.run(["nft", "flush", "chain", "inet", table, "service_remember_90"], check=True)
    subprocess.run(["nft", "flush", "map", "inet", table, "service_node_ports"], check=True)
    subprocess.run(["nft", "delete", "chain", "inet", table, "service_picks"], check=True)
    drift = json.loads(cli("check", "--format", "json").stdout)
    assert sorted((d["kind"], d["subject"]) for d in drift) == [
        ("missing", "nftables"), ("missing", "nftables element"), ("wrong", "nftables")], drift
    assert cli("gc").returncode == 0 and cli("check").stdout == ""
    server = named("web2", timeout=10)
    try:
        assert ask("client", "10.211.0.2", count=3) == {"web2": 3}
        assert ask("client", "10.31.0.1", port=30090) == {"web2": 1}
        assert _pins(table) == [("10.31.0.5", "10.211.0.2", "10.31.0.3", 90)]  # remembered again
    finally:
        server.stop()
    assert cli("service", "rm", "kept").returncode == 0

    before = subprocess.run(["nft", "-j", "list", "table", "inet", table], capture_output=True, text=True).stdout
    for args, message in (
            (["x", "--network", "app", "-p", "80", "--backend", "ghost"], "no such sandbox: 'ghost'"),
            (["x", "--network", "app", "-p", "80", "--backend", "web1", "--vip", "10.211.0.1"],
             "VIP 10.211.0.1 is another service's"),
            (["x", "--network", "app", "-p", "70000", "--backend", "web1"], "must have ports from 1 to 65535"),
            (["x", "--network", "app", "-p", "80", "--selector", "app"], "invalid --selector 'app'"),
            (["x", "--network", "app", "-p", "80"], "--selector is needed"),
            (["x", "--network", "app", "-p", "80", "--backend", "web1", "--vip", "10.9.9.9"],
             "must be an address of the service range 10.211.0.0/16 or fd00:6e73:7663::/112"),
            (["web", "--network", "app", "-p", "80", "--backend", "web1"], "service 'web' already exists"),
            (["x", "--network", "app", "-p", "80", "--backend", "web1", "--affinity", "cookie"],
             "invalid --affinity 'cookie': must be client-ip[=SECONDS] or none"),
            (["x", "--network", "app", "-p", "80", "--backend", "web1", "--affinity", "client-ip=0"],
             "must keep a client from 1 to 86400 seconds"),
            (["x", "--network", "app", "-p", "80", "--backend", "web1", "--publish", "30080:81"],
             "invalid --publish '30080:81': names port 81, which is not a port of the service (-p)"),
            (["x", "--network", "app", "-p", "80", "--backend", "web1", "--publish", "70000"],
             "invalid --publish '70000': must have ports from 1 to 65535")):
        done = cli("service", "create", *args)
        assert done.returncode == 1 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert subprocess.run(["nft", "-j", "list", "table", "inet", table], capture_output=True,
                          text=True).stdout == before
    assert cli("service", "ls", "-q").stdout.split() == ["web"]
    assert cli("network", "rm", "app").returncode == 1  # its sandboxes and service first
    assert cli("service", "rm", "web").returncode == 0 and cli("check").stdout == ""


_UDP_NAMED = r"""
import socket, sys
name = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
s.settimeout(15)
print("ready", flush=True)
while True:
    try:
        data, peer = s.recvfrom(100)
    except socket.timeout:
        break
    s.sendto(name.encode(), peer)
"""


def test_a_removed_backends_udp_flows_are_forgotten(app: Engine) -> None:
    """One UDP socket keeps one conntrack entry, so one backend; when that backend goes, its entry
    goes with it and the same socket's next datagram reaches another (kube-proxy's #19029)."""
    app.create_sandbox("dns1", networks=["app"], labels=["app=dns"])
    app.create_sandbox("dns2", networks=["app"], labels=["app=dns"])
    app.create_service("dns", network="app", ports=["53:5353/udp"], selector=["app=dns"])
    responders = {name: start(name, _UDP_NAMED, name) for name in ("dns1", "dns2")}
    client = subprocess.Popen(["ip", "netns", "exec", "client", sys.executable, "-u", "-c", r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("10.211.0.1", 53))
s.settimeout(1)
for line in sys.stdin:
    s.send(b"?")
    try:
        print(s.recv(100).decode(), flush=True)
    except OSError as exc:
        print(type(exc).__name__, flush=True)
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def asked() -> str:
        client.stdin.write("?\n")
        client.stdin.flush()
        return client.stdout.readline().strip()

    try:
        first = asked()
        assert first in responders and [asked() for _ in range(5)] == [first] * 5  # one flow, one backend
        app.remove_sandbox(first, force=True)
        other = "dns2" if first == "dns1" else "dns1"
        assert asked() == other
    finally:
        client.kill()
        client.wait()
        for responder in responders.values():
            responder.stop()


def test_a_service_answers_by_name_on_its_network(app: Engine) -> None:
    app.create_service("web", network="app", ports=["80:8080"], selector=["app=web"])
    assert cli("exec", "client", "--", "getent", "hosts", "web").stdout.split() == ["10.211.0.1", "web.nsnet"]
    assert cli("exec", "client", "--", "getent", "hosts", "web.app.nsnet").stdout.split()[:1] == ["10.211.0.1"]
    server = named("web3")  # one backend of three listening: (2/3)^30 that 30 connections all miss it
    try:
        assert ask("client", "web", count=30)["web3"] > 0  # by name, through the VIP
    finally:
        server.stop()
    app.remove_service("web")
    assert cli("exec", "client", "--", "getent", "hosts", "web").returncode == 2


def test_parallel_creates_and_removes_of_backends_lose_no_update(app: Engine) -> None:
    """Two admins at once: sandboxes joining and leaving one service's backends from parallel
    processes; every change lands, in the ledger and in the kernel (check finds nothing)."""
    import concurrent.futures

    app.create_service("web", network="app", ports=["80:8080"], selector=["app=web"])
    creates = [("create", f"par{i}", "--network", "app", "--label", "app=web") for i in range(8)]
    removes = [("rm", f"web{i}") for i in (1, 2)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        done = list(pool.map(lambda args: cli(*args), creates + removes))
    assert [d.returncode for d in done] == [0] * len(done), [d.stderr for d in done if d.returncode]
    (served,) = [b for _, b in app.services()]
    assert sorted(name for name, _ in served) == sorted(["web3", *(f"par{i}" for i in range(8))])
    assert cli("check").stdout == ""


CID = "7f3a9c2e51d04b8aa1c2d3e4f5061728"  # its sandbox: cni-7f3a9c2e51d0
# The app fixture's network as a CNI configuration describes it (no bridge named: nsnet's own).
APP_CONF = {"cniVersion": "1.0.0", "name": "app", "type": "nsnet", "isGateway": True, "ipMasq": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.31.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}


@pytest.fixture
def cni(app: Engine, tmp_path: Path, state_dir: str) -> Iterator[Runtime]:
    """A container runtime using the app fixture's ledger through its CNI plugin; its namespaces
    go (and gc forgets the containers they held) before the engine fixture cleans up."""
    done = subprocess.run([NSNET, "cni", "install", "--bin-dir", str(tmp_path / "bin")], capture_output=True,
                          text=True, check=True)
    try:
        yield Runtime(done.stdout.strip(), state_dir)
    finally:
        for name in os.listdir("/run/netns"):
            if name.startswith("ctr"):
                run("ip", "netns", "del", name, check=False)
        app.gc()


def test_a_cni_container_serves_by_its_labels_and_by_name_until_its_del(app: Engine, cni: Runtime) -> None:
    app.create_service("pods", network="app", ports=["80:8080"], selector=["tier=pod"])
    netns = cni.netns("ctrpod")
    conf = {**APP_CONF, "args": {"cni": {"labels": [{"key": "tier", "value": "pod"}]}}}
    added = cni.add(conf, CID, netns, args="IgnoreUnknown=1;K8S_POD_NAME=pod")  # what Podman passes
    assert added["ips"][0]["address"] == "10.31.0.6/24"  # after web1-3 and client
    done = cli("service", "create", "named", "--network", "app", "-p", "81:8080", "--backend", "cni-7f3a9c2e51d0")
    assert done.returncode == 0, done.stderr
    server = named("ctrpod", timeout=10)
    try:
        assert ask("client", "10.211.0.1", count=5) == {"ctrpod": 5}  # selected by its label
        assert ask("client", "10.211.0.2", port=81) == {"ctrpod": 1}  # named
        assert cli("check").stdout == ""
    finally:
        server.stop()
    assert cni.call("DEL", conf, CID, netns).code == 0
    # Refused at once, not timed out: the VIPs have no backend left (a stale one would not answer).
    assert ask("client", "10.211.0.1") == {"ConnectionRefusedError": 1}
    assert ask("client", "10.211.0.2", port=81) == {"ConnectionRefusedError": 1}
    assert app.container(CID) is None and cli("check").stdout == ""


def _pins(table: str, version: int = 4) -> list[tuple[str, str, str, int]]:
    """(client, VIP, backend, timeout) of each affinity entry the kernel holds (IPv6: the low 64
    bits of client and VIP, as numbers)."""
    name = "service_affinity" + ("6" if version == 6 else "")
    listing = json.loads(subprocess.run(["nft", "-j", "list", "map", "inet", table, name], capture_output=True,
                                        text=True, check=True).stdout)
    (found,) = [item["map"] for item in listing["nftables"] if "map" in item]
    return [(*(int(k, 16) if isinstance(k, str) and k.startswith("0x") else k for k in e[0]["elem"]["val"]["concat"]),
             e[1], e[0]["elem"]["timeout"]) for e in found.get("elem", [])]


def test_affinity_keeps_a_client_on_its_backend_until_it_expires_or_leaves(app: Engine, wan: str) -> None:
    table = app.owner.table
    app.create_service("web", network="app", ports=["80:8080", "81:8080"], selector=["app=web"],
                       affinity="client-ip=3")
    servers = [named(n, timeout=30) for n in ("web1", "web2", "web3")]
    client = app.sandbox("client").endpoints[0].addresses[0].ip
    try:
        first = ask("client", "10.211.0.1", count=30)
        (pinned,) = first
        assert first == {pinned: 30}  # 30 new connections, one backend
        assert ask("client", "10.211.0.1", port=81, count=5) == {pinned: 5}  # every port of the service
        address = str(app.sandbox(pinned).endpoints[0].addresses[0].ip)
        assert _pins(table) == [(str(client), "10.211.0.1", address, 3)]
        app.disconnect("app", pinned)  # its clients are forgotten with it: none is sent to it again
        assert [p for p in _pins(table) if p[2] == address] == []
        after = ask("client", "10.211.0.1", count=20)
        (repinned,) = after
        assert repinned != pinned and after == {repinned: 20}
        time.sleep(3.5)  # the timeout, counted from the last new connection
        assert _pins(table) == []
        assert len(ask("client", "10.211.0.1", count=1)) == 1 and len(_pins(table)) == 1
        app.remove_service("web")
        assert _pins(table) == []
    finally:
        for server in servers:
            server.stop()


def test_a_dual_stack_service_has_an_ipv6_vip_with_its_own_spread_and_affinity(engine: Engine, wan: str) -> None:
    engine.create_network("dual", subnet=["10.33.0.0/24", "fd33::/64"], ipv6=True)
    for name in ("v1", "v2"):
        engine.create_sandbox(name, networks=["dual"], labels=["app=v"])
    engine.create_sandbox("asker", networks=["dual"])
    service = engine.create_service("vee", network="dual", ports=["80:8080"], selector=["app=v"])
    sticky = engine.create_service("stick", network="dual", ports=["80:8080"], selector=["app=v"],
                                   affinity="client-ip=60")
    assert [str(v) for v in service.vips] == ["10.211.0.1", "fd00:6e73:7663::1"]
    v6, sticky6 = str(service.vips[1]), str(sticky.vips[1])
    servers = [named(n, timeout=30, mode="dual") for n in ("v1", "v2")]
    try:
        seen = ask("asker", v6, count=60)
        assert set(seen) == {"v1", "v2"} and sum(seen.values()) == 60, seen
        assert set(ask("asker", "10.211.0.1", count=30)) == {"v1", "v2"}
        # The host reaches the IPv6 VIP by its default route, which the translation overrides.
        subprocess.run(["ip", "-6", "route", "add", "default", "via", WAN6_PEER], check=True)
        try:
            from_host = ask(None, v6, count=10)
            assert set(from_host) <= {"v1", "v2"} and sum(from_host.values()) == 10, from_host
        finally:
            subprocess.run(["ip", "-6", "route", "del", "default"], check=True)
        pinned = ask("asker", sticky6, count=20)
        assert len(pinned) == 1 and sum(pinned.values()) == 20, pinned  # its IPv6 clients are kept too
        (kept,) = pinned
        backend = engine.sandbox(kept).endpoints[0].addresses[1].ip
        asker = engine.sandbox("asker").endpoints[0].addresses[1].ip
        low = 2**64 - 1
        assert _pins(engine.owner.table, 6) == [(int(asker) & low, int(sticky.vips[1]) & low, str(backend), 60)]
        assert len(ask("asker", str(sticky.vips[0]), count=10)) == 1  # and IPv4 ones, on their own
        names = subprocess.run(["ip", "netns", "exec", "asker", "getent", "ahosts", "vee"], capture_output=True,
                               text=True, check=True).stdout.split()
        assert {"10.211.0.1", v6} <= set(names)  # its name answers with both VIPs
        gone = {str(a.ip) for a in engine.sandbox(kept).endpoints[0].addresses}
        engine.remove_sandbox(kept, force=True)
        assert _pins(engine.owner.table, 6) == []  # forgotten with it, in both families
        assert [p for p in _pins(engine.owner.table) if p[2] in gone] == []
        (other,) = {"v1", "v2"} - {kept}
        assert ask("asker", v6, count=10) == {other: 10} and ask("asker", sticky6, count=5) == {other: 5}
    finally:
        for server in servers:
            server.stop()
    assert cli("check").stdout == ""


def test_a_service_published_on_the_host_reaches_its_backends_from_outside(app: Engine, wan: str) -> None:
    app.create_service("web", network="app", ports=["80:8080"], selector=["app=web"], publish=["30080"])
    servers = [named(n, timeout=30, mode="peer") for n in ("web1", "web2", "web3")]
    try:
        seen = ask("wan", WAN_HOST, port=30080, count=60)
        # Every backend, each seeing the outside client's own address (no masquerade).
        assert set(seen) == {f"web{i} {WAN_PEER}" for i in (1, 2, 3)} and sum(seen.values()) == 60, seen
        assert set(ask("client", WAN_HOST, port=30080, count=30)) <= {f"web{i} 10.31.0.1" for i in (1, 2, 3)}
        # The host's own connections too, 127.0.0.1 included (as for published ports, masqueraded).
        assert set(ask(None, "127.0.0.1", port=30080, count=10)) <= {f"web{i} 10.31.0.1" for i in (1, 2, 3)}
        assert cli("create", "taken", "--network", "app", "-p", "30080:80").stderr == (
            "nsnet: error: host port 0.0.0.0:30080/tcp is already published\n")
        held = app.create_service("held", network="app", ports=["80"], selector=["tier=none"], publish=["30081"])
        assert ask("wan", WAN_HOST, port=30081) == {"ConnectionRefusedError": 1}  # no backend: refused at once
        app.remove_service(held.name)
        app.remove_service("web")
        assert ask("wan", WAN_HOST, port=30080, timeout=1) == {"ConnectionRefusedError": 1}
    finally:
        for server in servers:
            server.stop()
    assert cli("check").stdout == ""
