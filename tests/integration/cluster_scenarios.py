"""Overlay scenarios across hosts, each run inside its own `nsnet lab --hosts N` by test_cluster.py:
`python -m tests.integration.cluster_scenarios NAME`. A scenario asserts as it goes; a failed
assertion exits non-zero with its traceback, which the test shows.

Every process here lives in the multi-host lab: the hosts, etcd, the sandboxes and their traffic.
Waits are bounded polls (a deadline, never a timing assertion).
"""

from __future__ import annotations

import json
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
        probe = ("from nsnet.dns import supervise; from nsnet.cluster.agent import AGENT; from nsnet.store import"
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
    s.hosts.etcd_stop("e1")
    deadline = time.monotonic() + 6  # three lease TTLs
    rounds = 0
    while time.monotonic() < deadline:
        assert s.connect("h1", "s1", found["s2"]) == f"s2 {found['s1']}"
        rounds += 1
    assert rounds >= 3 and s.routes("h1") == before
    refused = s.nsnet("h1", "network", "create", "other", "--driver", "overlay", "--subnet", "10.81.0.0/16", check=False)
    assert refused.returncode == 1 and refused.stderr.startswith("nsnet: error: cluster store unavailable"), refused.stderr
    assert len(refused.stderr.splitlines()) == 1
    assert "other" not in s.nsnet("h1", "network", "ls").stdout
    assert s.nsnet("h2", "cluster", "hosts", check=False).returncode == 1
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


SCENARIOS = {f.__name__: f for f in (basic, agent_crash, host_death, evict_now, etcd_down, mtu_refusal, fencing,
                                     partition)}


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
