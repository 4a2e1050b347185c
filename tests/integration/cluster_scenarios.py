"""Overlay scenarios across hosts, each run inside its own `nsnet lab --hosts N` by test_cluster.py:
`python -m tests.integration.cluster_scenarios NAME`. A scenario asserts as it goes; a failed
assertion exits non-zero with its traceback, which the test shows.

Every process here lives in the multi-host lab: the hosts, etcd, the sandboxes and their traffic.
Waits are bounded polls (a deadline, never a timing assertion).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from nsnet.labhosts import Hosts

NSNET = [sys.executable, "-m", "nsnet"]
SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(64); print("listening", flush=True)
while True:
    c, peer = s.accept()
    c.sendall(f"{sys.argv[2]} {peer[0]}\n".encode()); c.close()
"""
CLIENT = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
print(c.recv(200).decode().strip())
"""


# On a host: the first VXLAN datagram on eth0 (the underlay) whose inner IPv4 packet goes from
# argv[1] to argv[2]; prints its VNI, outer source and destination.
VXLAN_CAPTURE = r"""
import socket, struct, sys, time
inner_src, inner_dst = socket.inet_aton(sys.argv[1]), socket.inet_aton(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind(("eth0", 0)); s.settimeout(0.5); print("capturing", flush=True)
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        frame = s.recv(65535)
    except socket.timeout:
        continue
    ip = frame[14:]
    if ip[9] != 17:
        continue
    udp = ip[(ip[0] & 15) * 4:]
    if struct.unpack("!H", udp[2:4])[0] != 4789:
        continue
    vxlan, inner = udp[8:16], udp[16 + 14:]
    if inner[12:16] == inner_src and inner[16:20] == inner_dst:
        print(int.from_bytes(vxlan[4:7], "big"), socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20]), flush=True)
        sys.exit(0)
print("none", flush=True)
"""
# In a sandbox: a TCP connect's outcome, by errno name, and how long it took in ms.
CONNECT_ERRNO = r"""
import errno, socket, sys, time
start = time.monotonic()
c = socket.socket(); c.settimeout(3)
try:
    c.connect((sys.argv[1], int(sys.argv[2]))); print("connected", 0)
except OSError as exc:
    print(errno.errorcode.get(exc.errno, "timeout"), round((time.monotonic() - start) * 1000))
"""


class Scenario:
    def __init__(self, hosts: Hosts) -> None:
        self.hosts = hosts
        self.servers: list[subprocess.Popen] = []
        # Short liveness for tests: a host's lease lasts 2 s, a suspect is evicted 3 s later.
        self.env = {"NSNET_CLUSTER_TTL": "2", "NSNET_CLUSTER_EVICT_AFTER": "3"}

    def command(self, *args: str, env: dict[str, str] | None = None) -> list[str]:
        return ["env", *(f"{k}={v}" for k, v in {**self.env, **(env or {})}.items()), *NSNET, *args]

    def nsnet(self, host: str, *args: str, check: bool = True, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess:
        done = self.hosts.run(host, self.command(*args, env=env), check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"{host}: nsnet {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def address(self, host: str, sandbox: str, network: str = "mesh") -> str:
        details = json.loads(self.nsnet(host, "inspect", sandbox).stdout)[0]
        return details["Networks"][network]["IPAddress"]

    def serve(self, host: str, sandbox: str, port: int = 8080) -> None:
        server = self.hosts.popen(host, self.command("exec", sandbox, "--", sys.executable, "-c", SERVER, str(port), sandbox),
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "listening"
        self.servers.append(server)

    def connect(self, host: str, sandbox: str, address: str, port: int = 8080) -> str | None:
        """The server's answer (`SANDBOX PEER-ADDRESS`), None when the connection failed."""
        done = self.nsnet(host, "exec", sandbox, "--", sys.executable, "-c", CLIENT, address, str(port), check=False)
        return done.stdout.strip() if done.returncode == 0 else None

    def until(self, what: str, probe, seconds: float = 30.0):
        deadline = time.monotonic() + seconds
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {seconds:.0f} s: {what}")
            time.sleep(0.1)

    def cluster_hosts(self, host: str) -> dict[str, dict]:
        return {h["Host"]: h for h in json.loads(self.nsnet(host, "cluster", "hosts", "--format", "json").stdout)}

    def agent_pid(self, host: str) -> int | None:
        probe = ("from nsnet.dns import supervise; from nsnet.cluster.control import AGENT; from nsnet.store import"
                 " state_dir; print(supervise.ask(state_dir(), 'status', AGENT))")
        words = self.hosts.run(host, [sys.executable, "-c", probe], check=False).stdout.split()
        return int(words[1]) if words[:1] == ["ok"] else None

    def routes(self, host: str) -> str:
        return self.hosts.run(host, ["ip", "route", "show"], check=False).stdout

    def mesh(self, *hosts: str, serve: bool = True) -> dict[str, str]:
        """Network mesh with sandbox sN on each host hN (serving on 8080): their addresses."""
        s = self
        s.nsnet(hosts[0], "network", "create", "mesh", "--driver", "overlay", "--subnet", "10.80.0.0/16")
        found = {}
        for host in hosts:
            box = "s" + host[1:]
            s.nsnet(host, "create", box, "--network", "mesh")
            found[box] = s.address(host, box)
            if serve:
                s.serve(host, box)
        return found

    def close(self) -> None:
        for server in self.servers:
            server.kill()
            server.wait()


def basic(s: Scenario) -> None:
    """Sandboxes on three hosts talk by address (sources kept) and by name, through glibc."""
    s.nsnet("h1", "network", "create", "mesh", "--driver", "overlay", "--subnet", "10.80.0.0/16")
    for i, host in enumerate(("h1", "h2", "h3"), 1):
        s.nsnet(host, "create", f"s{i}", "--network", "mesh", "--alias", f"web{i}")
    a1, a2, a3 = (s.address(h, f"s{i}") for i, h in enumerate(("h1", "h2", "h3"), 1))
    assert len({a.rsplit(".", 1)[0] for a in (a1, a2, a3)}) == 3, (a1, a2, a3)  # one block per host
    s.serve("h2", "s2")
    s.serve("h3", "s3")
    assert s.until("s1 reaches s2", lambda: s.connect("h1", "s1", a2)) == f"s2 {a1}"
    assert s.until("s1 reaches s3", lambda: s.connect("h1", "s1", a3)) == f"s3 {a1}"
    assert s.until("s3 reaches s2", lambda: s.connect("h3", "s3", a2)) == f"s2 {a3}"
    for name, wanted in (("s2", a2), ("web3", a3), ("s3.mesh", a3)):
        answer = s.until(f"{name} resolves in s1", lambda: s.nsnet("h1", "exec", "s1", "--", "getent", "hosts", name,
                                                                   check=False).stdout.split()[:1])
        assert answer == [wanted], (name, answer)
    assert s.until("s1's name resolves on h3 after it went", lambda: s.nsnet(
        "h3", "exec", "s3", "--", "getent", "hosts", "s1", check=False).stdout.split()[:1]) == [a1]
    s.nsnet("h1", "rm", "-f", "s1")
    s.until("s1's name is gone on h3", lambda: s.nsnet("h3", "exec", "s3", "--", "getent", "hosts", "s1",
                                                        check=False).returncode == 2)
    hosts = s.cluster_hosts("h2")
    assert sorted(hosts) == ["h1", "h2", "h3"] and {h["State"] for h in hosts.values()} == {"alive"}, hosts
    assert hosts["h2"]["Here"] and hosts["h1"]["Vtep"] == s.hosts.address("h1")
    # A second overlay network is isolated from the first, on one host and across hosts.
    s.nsnet("h2", "network", "create", "other", "--driver", "overlay", "--subnet", "10.81.0.0/16")
    s.nsnet("h2", "create", "o2", "--network", "other")
    s.nsnet("h3", "create", "o3", "--network", "other")
    o2, o3 = s.address("h2", "o2", "other"), s.address("h3", "o3", "other")
    s.serve("h3", "o3", 8081)
    assert s.until("o2 reaches o3", lambda: s.connect("h2", "o2", o3, 8081)) == f"o3 {o2}"
    assert s.connect("h2", "o2", a3) is None  # mesh's s3 from other's o2: across hosts
    assert s.connect("h2", "o2", a2) is None  # and on one host
    assert s.connect("h3", "s3", o3, 8081) is None
    # On the underlay: VXLAN from h3's VTEP to h2's, with mesh's VNI, carrying s3's own address.
    overlay = json.loads(s.nsnet("h2", "network", "inspect", "mesh").stdout)[0]["Overlay"]
    assert overlay["Subnet"] == "10.80.0.0/16" and overlay["Vtep"] == s.hosts.address("h2")
    assert sorted(p["Host"] for p in overlay["Peers"]) == ["h1", "h3"], overlay
    vni = overlay["VNI"]
    capture = s.hosts.popen("h2", [sys.executable, "-c", VXLAN_CAPTURE, a3, a2], stdout=subprocess.PIPE, text=True)
    assert capture.stdout.readline().strip() == "capturing"
    assert s.connect("h3", "s3", a2) == f"s2 {a3}"
    assert capture.stdout.readline().split() == [str(vni), s.hosts.address("h3"), s.hosts.address("h2")]
    capture.wait()
    # An address of the subnet no host holds fails at once (the subnet's unreachable route).
    failed = s.nsnet("h2", "exec", "o2", "--", sys.executable, "-c", CONNECT_ERRNO, "10.81.250.9", "80").stdout.split()
    assert failed[0] == "EHOSTUNREACH" and int(failed[1]) < 3000, failed
    # Teardown leaves nothing: no VXLAN device, namespace or VTEP element on any host, no key in etcd.
    for host, boxes in (("h2", ["s2", "o2"]), ("h3", ["s3", "o3"])):
        s.nsnet(host, "rm", "-f", *boxes)
    for host in ("h1", "h2", "h3"):
        for network in ("mesh", "other"):
            s.nsnet(host, "network", "rm", "-f", network)
    for host in ("h1", "h2", "h3"):
        assert s.hosts.run(host, ["ip", "-o", "link", "show", "type", "vxlan"]).stdout == "", host
        assert s.hosts.run(host, ["ip", "netns", "list"]).stdout == "", host
        ruleset = s.hosts.run(host, ["nft", "list", "ruleset"]).stdout
        assert "10.99.1." not in ruleset and "4789" not in ruleset, (host, ruleset)
    keys = ("from nsnet.cluster.etcd import open_store; store = open_store();"
            " print(sorted(kv.key for kv in store.range('/nsnet/v1/')[0]))")
    left = s.hosts.run("h1", [sys.executable, "-c", keys]).stdout.strip()
    assert left == "['/nsnet/v1/cluster']" or left == "[]", left


def joins_at_once(s: Scenario) -> None:
    """Two admins at once: two creates racing the same host's first join both succeed, on one
    block the cluster keeps; two hosts creating one network: one wins, the other is told; gc
    running while a create joins changes nothing of it."""
    s.nsnet("h1", "network", "create", "mesh", "--driver", "overlay", "--subnet", "10.80.0.0/16")
    racing = [s.hosts.popen("h2", s.command("create", f"r{i}", "--network", "mesh"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
    outcomes = [(p.wait(), p.stderr.read()) for p in racing]
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    blocks = s.cluster_hosts("h1")["h2"]["Blocks"]
    block = s.address("h2", "r0").rsplit(".", 1)[0]
    assert blocks == [f"mesh:{block}.0/24"] and s.address("h2", "r1").startswith(block + ".")
    creates = [s.hosts.popen(h, s.command("network", "create", "twice", "--driver", "overlay", "--subnet",
                                          "10.81.0.0/16"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for h in ("h1", "h2")]
    results = sorted((p.wait(), p.stderr.read().strip()) for p in creates)
    assert results[0][0] == 0 and results[1][0] == 1 and "already exists" in results[1][1], results
    # gc twice while a create joins this host: all succeed, and ledger, kernel and cluster agree.
    s.nsnet("h2", "network", "create", "third", "--driver", "overlay", "--subnet", "10.82.0.0/16")
    s.nsnet("h2", "create", "t2", "--network", "third")
    s.serve("h2", "t2")
    racing = [s.hosts.popen("h1", s.command(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for argv in (("gc",), ("create", "g1", "--network", "third"), ("gc",))]
    outcomes = [(p.wait(), p.stderr.read()) for p in racing]
    assert [code for code, _ in outcomes] == [0, 0, 0], outcomes
    assert s.nsnet("h1", "check", "--format", "json").stdout.strip() == "[]"
    g1, t2 = s.address("h1", "g1", "third"), s.address("h2", "t2", "third")
    block = json.loads(s.nsnet("h1", "network", "inspect", "third").stdout)[0]["Overlay"]["Block"]
    assert [b for b in s.cluster_hosts("h2")["h1"]["Blocks"] if b.startswith("third:")] == [f"third:{block}"]
    assert s.until("g1 reaches t2", lambda: s.connect("h1", "g1", t2)) == f"t2 {g1}"


def agent_crash(s: Scenario) -> None:
    """kill -9 of an agent: traffic goes on; the agent started again catches up with what it missed."""
    found = s.mesh("h1", "h2")
    assert s.until("s1 reaches s2", lambda: s.connect("h1", "s1", found["s2"])) == f"s2 {found['s1']}"
    pid = s.agent_pid("h2")
    assert pid is not None
    s.hosts.run("h2", ["kill", "-9", str(pid)], check=True)
    s.until("h2's agent is gone", lambda: s.agent_pid("h2") is None)
    for _ in range(3):
        assert s.connect("h1", "s1", found["s2"]) == f"s2 {found['s1']}"
        assert s.connect("h2", "s2", found["s1"]) == f"s1 {found['s2']}"
    s.nsnet("h3", "create", "s3", "--network", "mesh")  # joins while h2 is blind to it
    s.serve("h3", "s3")
    a3 = s.address("h3", "s3")
    block3 = a3.rsplit(".", 1)[0] + ".0/24"
    assert block3 not in s.routes("h2")
    s.nsnet("h2", "gc")  # any command on an overlay host starts its agent again
    assert s.agent_pid("h2") not in (None, pid)
    assert s.until("s2 reaches s3", lambda: s.connect("h2", "s2", a3)) == f"s3 {found['s2']}"
    assert block3 in s.routes("h2")


def host_death(s: Scenario) -> None:
    """A dead host turns suspect after its lease, is evicted after --evict-after, and its peers
    forget it (no route left, connects fail fast); a live host cannot be evicted by mistake."""
    found = s.mesh("h1", "h2", "h3")
    block3 = found["s3"].rsplit(".", 1)[0] + ".0/24"
    assert s.until("h1 routes to h3", lambda: block3 in s.routes("h1"))
    refused = s.nsnet("h1", "cluster", "evict", "h2", check=False)
    assert refused.returncode == 1 and "is alive" in refused.stderr and len(refused.stderr.splitlines()) == 1
    s.hosts.kill("h3")
    s.until("h3 turns suspect", lambda: s.cluster_hosts("h1").get("h3", {}).get("State") == "suspect", 20)
    assert block3 in s.routes("h1")  # a suspect keeps its routes
    s.until("h3 is evicted", lambda: "h3" not in s.cluster_hosts("h1"), 20)
    s.until("h1 and h2 forget h3", lambda: block3 not in s.routes("h1") and block3 not in s.routes("h2"))
    assert s.connect("h1", "s1", found["s3"]) is None
    assert s.connect("h1", "s1", found["s2"]) == f"s2 {found['s1']}"


def evict_now(s: Scenario) -> None:
    """`nsnet cluster evict` does at once what the timer would do in five minutes."""
    s.env["NSNET_CLUSTER_EVICT_AFTER"] = "300"
    found = s.mesh("h1", "h2")
    block2 = found["s2"].rsplit(".", 1)[0] + ".0/24"
    s.until("h1 routes to h2", lambda: block2 in s.routes("h1"))
    s.hosts.kill("h2")
    s.until("h2 turns suspect", lambda: s.cluster_hosts("h1").get("h2", {}).get("State") == "suspect", 20)
    assert s.nsnet("h1", "cluster", "evict", "h2").stdout.split() == [f"mesh:{block2}"]
    s.until("h1 forgets h2", lambda: block2 not in s.routes("h1"))
    assert "h2" not in s.cluster_hosts("h1")


def etcd_down(s: Scenario) -> None:
    """etcd stopped for more than twice the lease: traffic goes on, no peer goes, cluster writes
    fail with one line and change nothing; a sandbox made meanwhile is named once etcd is back."""
    found = s.mesh("h1", "h2")
    assert s.until("s1 reaches s2", lambda: s.connect("h1", "s1", found["s2"]))
    before = s.routes("h1")
    pings = s.hosts.popen("h1", s.command("exec", "s1", "--", "ping", "-n", "-q", "-c", "80", "-i", "0.1", "-W", "1",
                                          found["s2"]), stdout=subprocess.PIPE, text=True)
    s.hosts.etcd_stop("e1")
    deadline = time.monotonic() + 6  # three lease TTLs
    rounds = 0
    while time.monotonic() < deadline:
        assert s.connect("h1", "s1", found["s2"]) == f"s2 {found['s1']}"
        rounds += 1
    assert rounds >= 3 and s.routes("h1") == before
    summary = pings.communicate()[0]
    assert pings.returncode == 0 and "80 packets transmitted, 80 received, 0% packet loss" in summary, summary
    refused = s.nsnet("h1", "network", "create", "other", "--driver", "overlay", "--subnet", "10.81.0.0/16", check=False)
    assert refused.returncode == 1 and refused.stderr.startswith("nsnet: error: cluster store unavailable"), refused.stderr
    assert len(refused.stderr.splitlines()) == 1
    assert "other" not in s.nsnet("h1", "network", "ls").stdout
    assert s.nsnet("h2", "cluster", "hosts", check=False).returncode == 1
    doctor = s.nsnet("h2", "doctor", "--format", "json", check=False)
    found = {f["check"]: f for f in json.loads(doctor.stdout)}
    assert doctor.returncode == 1 and found["cluster-store"]["reason"].startswith("cluster store unavailable"), found
    s.nsnet("h1", "create", "late", "--network", "mesh")  # a joined network's addresses are this host's own
    late = s.address("h1", "late")
    s.hosts.etcd_start("e1")
    assert s.until("late resolves on h2", lambda: s.nsnet("h2", "exec", "s2", "--", "getent", "hosts", "late",
                                                          check=False).stdout.split()[:1]) == [late]
    assert set(s.cluster_hosts("h2")) == {"h1", "h2"}


def mtu_refusal(s: Scenario) -> None:
    """A host whose underlay cannot carry the network's MTU refuses to join, changing nothing."""
    s.nsnet("h1", "network", "create", "mesh", "--driver", "overlay", "--subnet", "10.80.0.0/16")
    s.hosts.run("h2", ["ip", "link", "set", "eth0", "mtu", "1400"], check=True)
    refused = s.nsnet("h2", "create", "s2", "--network", "mesh", check=False)
    assert refused.returncode == 1 and "1350" in refused.stderr and "1450" in refused.stderr, refused.stderr
    assert len(refused.stderr.splitlines()) == 1
    assert "mesh" not in s.nsnet("h2", "network", "ls").stdout
    assert s.nsnet("h2", "ps", "-q").stdout.strip() == ""
    assert s.cluster_hosts("h1").get("h2", {}).get("Blocks", []) == []
    doctor = s.nsnet("h2", "doctor", "--format", "json", check=False)
    found = {f["check"]: f for f in json.loads(doctor.stdout)}
    assert doctor.returncode == 1 and found["overlay-mtu"]["details"] == ["mesh (MTU 1450)"], found
    healthy = {f["check"] for f in json.loads(s.nsnet("h1", "doctor", "--format", "json", check=False).stdout)}
    assert not healthy & {"overlay-mtu", "cluster-store", "cluster-underlay", "kernel-vxlan"}, healthy


def fencing(s: Scenario) -> None:
    """A host cut off long enough to be evicted comes back fenced: it takes no block back, refuses
    new sandboxes on the network, and joins anew only after the network is removed there."""
    found = s.mesh("h1", "h2", serve=False)
    block2 = found["s2"].rsplit(".", 1)[0] + ".0/24"
    s.hosts.cut("h2")
    s.until("h1 evicts h2", lambda: "h2" not in s.cluster_hosts("h1"), 30)
    s.hosts.heal("h2")
    s.until("h2 is alive again, with no block", lambda: s.cluster_hosts("h1").get("h2", {}).get("State") == "alive", 30)
    refused = s.nsnet("h2", "create", "z", "--network", "mesh", check=False)  # at once: no sandbox on a lost block
    assert refused.returncode == 1 and "fenced" in refused.stderr and len(refused.stderr.splitlines()) == 1
    checked = s.nsnet("h2", "check", check=False)
    assert checked.returncode == 1 and "fenced: network mesh" in checked.stdout, checked.stdout
    assert s.cluster_hosts("h1")["h2"]["Blocks"] == []
    s.nsnet("h2", "network", "rm", "-f", "mesh")
    s.nsnet("h2", "create", "z", "--network", "mesh")
    again = s.address("h2", "z")
    assert not again.startswith(block2.rsplit(".", 1)[0] + ".")  # the evicted block rests a day


def partition(s: Scenario) -> None:
    """Three etcd members: one lost, the cluster works on; a host that reaches only the lost one
    gets 'cluster store unavailable' for a write, which changes nothing."""
    s.hosts.cut("e3")
    found = s.mesh("h1", "h2")
    assert s.until("s1 reaches s2", lambda: s.connect("h1", "s1", found["s2"])) == f"s2 {found['s1']}"
    alone = {"NSNET_CLUSTER": "etcd://" + s.hosts.address("e3") + ":2379"}
    refused = s.nsnet("h2", "network", "create", "other", "--driver", "overlay", "--subnet", "10.81.0.0/16",
                      check=False, env=alone)
    assert refused.returncode == 1 and "cluster store unavailable" in refused.stderr, refused.stderr
    s.hosts.heal("e3")
    listed = s.until("other is not in the cluster", lambda: s.nsnet("h1", "cluster", "hosts", check=False))
    assert listed.returncode == 0
    made = s.nsnet("h1", "network", "create", "other", "--driver", "overlay", "--subnet", "10.81.0.0/16", check=False)
    assert made.returncode == 0, made.stderr  # nothing of the refused write was left to collide with


ECHO_SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8); print("listening", flush=True)
while True:
    c, peer = s.accept(); c.sendall(f"outside {peer[0]}\n".encode()); c.close()
"""
DF_PROBE = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO: never fragmented
for size in map(int, sys.argv[3:]):
    try:
        s.sendto(b"x" * size, (sys.argv[1], int(sys.argv[2]))); print(size, "sent")
    except OSError as exc:
        print(size, exc.errno)
"""
UDP_SINK = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1]))); s.settimeout(3)
print("listening", flush=True)
try:
    while True:
        data, peer = s.recvfrom(65535); print(len(data), peer[0], flush=True)
except socket.timeout:
    print("done", flush=True)
"""


def edges(s: Scenario) -> None:
    """What an overlay is not: a bridge network's sandbox cannot reach it; masquerade happens only
    leaving it (a server outside the overlay sees the host's address); a published port of an
    overlay sandbox works on its host; the MTU is exact (a DF datagram of the MTU crosses hosts,
    one byte more is refused); stray entries on the VXLAN device are found by check, removed by gc;
    the device deleted behind nsnet's back is found by check, made again by gc."""
    s.env.update(NSNET_CLUSTER_TTL="15", NSNET_CLUSTER_EVICT_AFTER="300")  # h1's agent is frozen a moment below
    found = s.mesh("h1", "h2")
    a1, a2 = found["s1"], found["s2"]
    s.nsnet("h1", "network", "create", "plain", "--subnet", "10.31.0.0/24")
    s.nsnet("h1", "create", "p1", "--network", "plain")
    assert s.until("s1 reaches s2", lambda: s.connect("h1", "s1", a2)) == f"s2 {a1}"
    assert s.connect("h1", "p1", a2) is None and s.connect("h1", "p1", a1, 8080) is None
    outside = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, "10.99.0.1", "9090"], stdout=subprocess.PIPE, text=True)
    try:
        assert outside.stdout.readline().strip() == "listening"
        assert s.connect("h1", "s1", "10.99.0.1", 9090) == f"outside {s.hosts.address('h1')}"
    finally:
        outside.kill()
        outside.wait()
    s.nsnet("h2", "create", "web", "--network", "mesh", "-p", "8088:80")
    s.serve("h2", "web", 80)
    assert s.until("h2's published port from h1's host", lambda: s.hosts.run("h1", [
        sys.executable, "-c", CLIENT, s.hosts.address("h2"), "8088"], check=False).stdout.strip()) ==         f"web {s.hosts.address('h1')}"
    sink = s.hosts.popen("h2", s.command("exec", "s2", "--", sys.executable, "-c", UDP_SINK, "9999"),
                         stdout=subprocess.PIPE, text=True)
    assert sink.stdout.readline().strip() == "listening"
    probe = s.nsnet("h1", "exec", "s1", "--", sys.executable, "-c", DF_PROBE, a2, "9999", "1422", "1423").stdout
    assert probe.split("\n")[:2] == ["1422 sent", "1423 90"], probe  # 90: EMSGSIZE
    assert sink.stdout.readline().split() == ["1422", a1]
    sink.wait()
    # Strays on the VXLAN device: a route, an FDB entry and a neighbour nsnet did not make.
    device = [line.split(":")[1].strip() for line in s.hosts.run("h1", ["ip", "-o", "link", "show", "type", "vxlan"])
              .stdout.splitlines()][0].split("@")[0]
    for argv in (["ip", "neigh", "replace", "10.80.250.0", "lladdr", "02:00:00:00:00:99", "dev", device, "nud",
                  "permanent"],
                 ["bridge", "fdb", "append", "02:00:00:00:00:99", "dev", device, "dst", "10.99.9.9", "self",
                  "permanent"],
                 ["ip", "route", "add", "10.80.250.0/24", "via", "10.80.250.0", "dev", device, "onlink"]):
        s.hosts.run("h1", argv, check=True)
    checked = s.nsnet("h1", "check", check=False)
    assert checked.returncode == 1 and "DeleteOnlinkRoute" in checked.stdout and "DeleteFdb" in checked.stdout, \
        checked.stdout
    index = s.hosts.run("h1", ["cat", f"/sys/class/net/{device}/ifindex"]).stdout
    s.nsnet("h1", "gc")
    assert s.hosts.run("h1", ["cat", f"/sys/class/net/{device}/ifindex"]).stdout == index  # repaired, not remade
    assert s.nsnet("h1", "check", check=False).returncode == 0
    assert "10.80.250.0" not in s.routes("h1")
    assert s.connect("h1", "s1", a2) == f"s2 {a1}"
    # The device deleted behind nsnet's back (h1's agent frozen, so that its resync does not
    # repair it before check looks).
    agent = s.agent_pid("h1")
    os.kill(agent, signal.SIGSTOP)
    try:
        s.hosts.run("h1", ["ip", "link", "del", device], check=True)
        assert s.connect("h1", "s1", a2) is None
        checked = s.nsnet("h1", "check", check=False)
        assert checked.returncode == 1 and f"network mesh: its VXLAN device differs from its peers: {device} is" \
            " missing" in checked.stdout, checked.stdout
    finally:
        os.kill(agent, signal.SIGCONT)
    s.nsnet("h1", "gc")
    assert s.nsnet("h1", "check", check=False).returncode == 0
    assert s.connect("h1", "s1", a2) == f"s2 {a1}"
    # The device set down behind nsnet's back: the same.
    device = [line.split(":")[1].strip() for line in s.hosts.run("h1", ["ip", "-o", "link", "show", "type", "vxlan"])
              .stdout.splitlines()][0].split("@")[0]
    agent = s.agent_pid("h1")
    os.kill(agent, signal.SIGSTOP)
    try:
        s.hosts.run("h1", ["ip", "link", "set", device, "down"], check=True)
        assert s.connect("h1", "s1", a2) is None
        checked = s.nsnet("h1", "check", check=False)
        assert checked.returncode == 1 and "network mesh" in checked.stdout, checked.stdout
    finally:
        os.kill(agent, signal.SIGCONT)
    s.nsnet("h1", "gc")
    assert s.nsnet("h1", "check", check=False).returncode == 0
    assert s.connect("h1", "s1", a2) == f"s2 {a1}"


FORGE = r"""
import socket, struct, sys
vni, dst_mac, src_mac, src, dst, vtep = int(sys.argv[1]), *sys.argv[2:7]
payload = b"forged"
udp = struct.pack("!HHHH", 5555, 9999, 8 + len(payload), 0) + payload
header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
words = struct.unpack("!10H", header)
total = sum(words); total = (total & 0xFFFF) + (total >> 16); total = (total & 0xFFFF) + (total >> 16)
header = header[:10] + struct.pack("!H", ~total & 0xFFFF) + header[12:]
frame = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00" + header + udp
vxlan = struct.pack("!II", 0x08000000, vni << 8)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3):
    s.sendto(vxlan + frame, (vtep, 4789))
print("sent", flush=True)
"""


def rogue_vxlan(s: Scenario) -> None:
    """VXLAN is taken only from the overlay's peer hosts: a frame forged by a machine on the
    underlay that is no peer, or by a sandbox of a peer (whose host would masquerade it to its
    VTEP's address), never reaches the sandbox it names; the same frame from a peer host does (so
    the filter is what stops the others)."""
    from nsnet.cluster.host import vtep_mac

    found = s.mesh("h1", "h2", serve=False)
    a1, a2 = found["s1"], found["s2"]
    s.serve("h1", "s1")
    assert s.until("s2 reaches s1", lambda: s.connect("h2", "s2", a1)) == f"s1 {a2}"
    vni = int(s.hosts.run("h1", ["ip", "-d", "link", "show", "type", "vxlan"]).stdout.split(" vxlan id ")[1].split()[0])
    forged_source = a2.rsplit(".", 1)[0] + ".77"
    argv = [str(vni), vtep_mac("h1", vni), vtep_mac("h2", vni), forged_source, a1, s.hosts.address("h1")]
    for sender, arrives in ((None, False), ("s2", False), ("h2", True)):
        sink = s.hosts.popen("h1", s.command("exec", "s1", "--", sys.executable, "-c", UDP_SINK, "9999"),
                             stdout=subprocess.PIPE, text=True)
        assert sink.stdout.readline().strip() == "listening"
        if sender is None:  # the lab's switch, 10.99.0.1: on the underlay, no overlay peer
            subprocess.run([sys.executable, "-c", FORGE, *argv], check=True, capture_output=True)
        elif sender == "s2":  # a sandbox of a peer: masqueraded, it would come from that peer's VTEP
            s.nsnet("h2", "exec", "s2", "--", sys.executable, "-c", FORGE, *argv)
        else:
            s.hosts.run(sender, [sys.executable, "-c", FORGE, *argv], check=True)
        got = [line.split() for line in sink.stdout.read().splitlines() if line != "done"]
        sink.wait()
        assert got == ([["6", forged_source]] * 3 if arrives else []), (sender, got)


def compaction(s: Scenario) -> None:
    """An agent that missed changes etcd no longer has (frozen while its stream broke and the
    history was compacted) re-lists and catches up: it programs the host that joined meanwhile."""
    from nsnet.cluster.etcd import open_store

    s.env.update({"NSNET_CLUSTER_TTL": "15", "NSNET_CLUSTER_EVICT_AFTER": "300"})  # frozen is not dead here
    s.mesh("h1", "h2", serve=False)
    pid = s.agent_pid("h2")
    os.kill(pid, signal.SIGSTOP)
    try:
        s.hosts.etcd_stop("e1")  # its watch stream breaks while it cannot notice
        s.hosts.etcd_start("e1")
        s.nsnet("h3", "create", "s3", "--network", "mesh")
        block3 = s.address("h3", "s3").rsplit(".", 1)[0] + ".0/24"
        store = open_store()
        store.compact(store.range("/")[1])
    finally:
        os.kill(pid, signal.SIGCONT)
    s.until("h2 routes to h3 after its re-list", lambda: block3 in s.routes("h2"), 30)
    log = s.hosts.run("h2", ["cat", "/var/lib/nsnet/cluster.log"]).stdout
    assert "watch_compacted" in log, log[-2000:]


# kill -9 of an overlay command at each step (nsnet.faults: the cluster's own steps and the plan's
# operations), then gc: the ledger, the kernel and the cluster store agree again, and the host
# works. h1 is the one that crashes; h2 keeps the network alive in the cluster.
JOIN_STEPS = ["leased", "reserved", "CreateBridge", "ApplyFirewall", "ApplyFirewall#2", "CreateVxlan", "SetLinkUp",
              "AddUnreachableRoute", "applied"]
CRASHES = {
    # Its join's steps are those of the create below: a few of them suffice here.
    ("network", "create", "NET", "--driver", "overlay", "--subnet", "SUBNET"): ["configured", "leased", "CreateVxlan",
                                                                                "applied"],
    ("create", "x", "--network", "mesh"): [*JOIN_STEPS, "reserved#2", "CreateVeth", "applied#2"],
    # The first steps are those of the disconnect of h1's sandbox that -f does first.
    ("network", "rm", "-f", "mesh"): ["DeleteLink", "left", "reserved#2", "DeleteUnreachableRoute", "DeleteLink#2",
                                      "applied#2"],
}


def _agreed(s: Scenario, network: str) -> None:
    """h1's check is clean, and the cluster gives h1 the block its ledger holds. With no network
    here, the cluster may keep one block of h1's: the one a join killed after its lease (before
    any row here) left, which h1's next join takes back."""
    assert s.nsnet("h1", "check", "--format", "json").stdout.strip() == "[]", s.nsnet("h1", "check").stdout
    blocks = [b.split(":", 1)[1] for b in s.cluster_hosts("h2").get("h1", {}).get("Blocks", [])
              if b.startswith(network + ":")]
    local = [n for n in json.loads(s.nsnet("h1", "network", "ls", "--format", "json").stdout) if n["Name"] == network]
    if local:
        assert blocks == [local[0]["IPAM"]["Config"][0]["Subnet"]], (network, blocks, local)
    else:
        assert len(blocks) <= 1, (network, blocks)


def _works(s: Scenario, network: str, peer: str) -> None:
    """A new sandbox on h1 in `network` answers `peer` (a sandbox on h2) with its source kept."""
    s.nsnet("h1", "create", "after", "--network", network)
    s.serve("h1", "after")
    here, there = s.address("h1", "after", network), s.address("h2", peer, network)
    assert s.until(f"{peer} reaches after", lambda: s.connect("h2", peer, here)) == f"after {there}"
    _agreed(s, network)
    s.nsnet("h1", "rm", "-f", "after", "x")


def _killed(done: subprocess.CompletedProcess, what) -> None:
    assert done.returncode == -9, (what, done.returncode, done.stderr[-2000:])


def crash_create(s: Scenario) -> None:
    """kill -9 at each step of `network create --driver overlay` and of a create that joins."""
    s.nsnet("h2", "network", "create", "mesh", "--driver", "overlay", "--subnet", "10.80.0.0/16")
    s.nsnet("h2", "create", "s2", "--network", "mesh")
    s.serve("h2", "s2")
    cases = [(argv, step) for argv, steps in CRASHES.items() if argv[1] != "rm" for step in steps]
    for i, (argv, step) in enumerate(cases):
        network, peer = (f"c{i}", "t2") if argv[1] == "create" else ("mesh", "s2")
        argv = [{"NET": network, "SUBNET": f"10.{100 + i}.0.0/16"}.get(a, a) for a in argv]
        _killed(s.nsnet("h1", *argv, check=False, env={"NSNET_FAULT": step}), (argv, step))
        s.nsnet("h1", "gc")
        _agreed(s, network)
        if network != "mesh":
            s.nsnet("h2", "create", "t2", "--network", network)
            s.serve("h2", "t2")
        _works(s, network, peer)
        s.nsnet("h1", "network", "rm", "-f", network)
        _agreed(s, network)
        if network != "mesh":
            s.nsnet("h2", "rm", "-f", "t2")
            s.nsnet("h2", "network", "rm", network)  # the last host: the network leaves the cluster


def crash_leave(s: Scenario) -> None:
    """kill -9 at each step of `network rm` of an overlay, and of an agent programming a peer."""
    s.env["NSNET_CLUSTER_EVICT_AFTER"] = "300"  # h1's agent is stopped a while: it must not be evicted meanwhile
    s.nsnet("h2", "network", "create", "mesh", "--driver", "overlay", "--subnet", "10.80.0.0/16")
    s.nsnet("h2", "create", "s2", "--network", "mesh")
    s.serve("h2", "s2")
    for step in CRASHES[("network", "rm", "-f", "mesh")]:
        s.nsnet("h1", "create", "x", "--network", "mesh")
        _killed(s.nsnet("h1", "network", "rm", "-f", "mesh", check=False, env={"NSNET_FAULT": step}), step)
        s.nsnet("h1", "gc")
        joined = "mesh" in s.nsnet("h1", "network", "ls", "-q").stdout.split()
        assert joined == (step == "DeleteLink"), step  # gc finished the disconnect, or the leave
        _agreed(s, "mesh")
        _works(s, "mesh", "s2")
        s.nsnet("h1", "network", "rm", "-f", "mesh")
    # The agent killed while it programs a new peer: h3 joins while h1's agent is stopped, and the
    # agent started again dies at a step of programming it.
    stop = "from nsnet.cluster import control; from nsnet.store import state_dir; control.ask(state_dir(), 'stop')"
    agent = "from nsnet.cluster.agent import main; from nsnet.store import state_dir; main([state_dir()])"
    for step in ("ApplyFirewall", "ReplaceFdb", "ReplaceOnlinkRoute"):
        s.nsnet("h1", "create", "x", "--network", "mesh")
        s.hosts.run("h1", [sys.executable, "-c", stop])
        s.until("h1's agent is gone", lambda: s.agent_pid("h1") is None)
        s.nsnet("h3", "create", "s3", "--network", "mesh")
        s.serve("h3", "s3")
        _killed(s.hosts.run("h1", ["env", f"NSNET_FAULT={step}", sys.executable, "-c", agent], check=False), step)
        s.nsnet("h1", "gc")
        _agreed(s, "mesh")
        a3, ax = s.address("h3", "s3"), s.address("h1", "x")
        assert s.until("x reaches s3", lambda: s.connect("h1", "x", a3)) == f"s3 {ax}"
        s.nsnet("h3", "network", "rm", "-f", "mesh")
        s.nsnet("h3", "rm", "-f", "s3")
        s.nsnet("h1", "rm", "-f", "x")
        s.nsnet("h1", "network", "rm", "-f", "mesh")


SCENARIOS = {f.__name__: f for f in (basic, edges, rogue_vxlan, compaction, joins_at_once, agent_crash, host_death, evict_now, etcd_down, mtu_refusal, fencing,
                                     partition, crash_create, crash_leave)}


def main(name: str) -> int:
    scenario = Scenario(Hosts.current())
    try:
        SCENARIOS[name](scenario)
    finally:
        scenario.close()
    print(f"scenario {name}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
