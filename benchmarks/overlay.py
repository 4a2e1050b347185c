"""Overlay networks across hosts: how fast a new sandbox is reachable from another host, how fast
peers are programmed as the cluster grows, and what the VXLAN path costs against the underlay.

Run it from the repository root inside a lab (it makes the multi-host labs it needs, nested):

    .venv/bin/nsnet lab -- .venv/bin/python benchmarks/overlay.py
    .venv/bin/nsnet lab -- .venv/bin/python benchmarks/overlay.py --quick

Phases, each in a fresh `nsnet lab --hosts N --etcd 1` (so no phase inherits another's state):

- reach (N = 3 and 10 hosts): network `mesh` made on h2, one sandbox on every host but h1, and a
  bridge network `flat` on h1. A warm driver process on h1 creates the sandboxes; per round the
  clock starts in it, a listener enters the new sandbox's namespace the moment it exists, and a
  prober connects to the sandbox's address (picked ahead) every millisecond once create has
  returned; the sample is the first accepted connect. Rounds alternate three arms: `api` (the
  engine's create_sandbox in the driver, as a runtime's daemon calls it), `cli` (`nsnet create`,
  a process, as a user types it), both probed from h2 through the overlay, and `bridge` (the CLI
  on the bridge network, probed from h1: the anchor, what a create costs with no overlay). The
  first round joins h1 (block, VXLAN device, peers), as the first create of a network on a host
  does. Target (issue 15): p50 <= 50 ms at 3 and at 10 hosts, for the API; the CLI's figure is
  the bridge anchor's plus the overlay's share. All processes share the kernel's
  CLOCK_MONOTONIC, whatever host namespace they are in.
- peers (10, 50, 100 simulated hosts): h1 joined, then N blocks of simulated hosts written into
  etcd (fake VTEPs on the underlay); timed: one more block written → its route in h1's kernel
  (a netlink listener in h1 stamps it), and h1's agent restarted → all N peers programmed.
- path: TCP throughput (iperf3, 3 x 4 s per arm, interleaved) and RTT (ping, 200 x 10 ms) between a
  sandbox on h1 and one on h2 through the overlay, and between h1 and h2 on the underlay, in the
  same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from harness import percentile, refuse_outside_lab, save_json

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NSNET = [sys.executable, "-m", "nsnet"]
ENV = {"NSNET_CLUSTER_EVICT_AFTER": "3600"}
PORT = 7070
TARGET_MS = 50.0

LISTENER = r"""
import ctypes, os, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
path = "/run/netns/" + sys.argv[1]
while True:  # the namespace file appears before it is pinned: setns fails until then
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        time.sleep(0.0002)
        continue
    if libc.setns(fd, 0x40000000) == 0:
        break
    os.close(fd)
    time.sleep(0.0002)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
while True:
    try:
        s.bind(("0.0.0.0", int(sys.argv[2]))); break
    except OSError:
        time.sleep(0.0002)
s.listen(8); print("up", flush=True)
c, _ = s.accept(); c.close()
"""
PROBER = r"""
import socket, sys, time
address, port = sys.argv[1], int(sys.argv[2])
start = float(sys.stdin.readline())  # given once create has returned
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    c = socket.socket(); c.settimeout(0.05)
    try:
        c.connect((address, port))
        print(f"{(time.monotonic() - start) * 1000:.2f}", flush=True); sys.exit(0)
    except OSError:
        pass
    finally:
        c.close()
    time.sleep(0.001)
print("timeout", flush=True); sys.exit(1)
"""
# On h1, warm: creates a sandbox when told, by the CLI (a process, as a user types it) or by the
# engine's API in this process (as a runtime's daemon would), and says when it started and returned.
DRIVER = r"""
import json, subprocess, sys, time
from nsnet.engine import Engine
engine = Engine()
for line in sys.stdin:
    job = json.loads(line)
    start = time.monotonic()
    if job["how"] == "cli":
        argv = [sys.executable, "-m", "nsnet", "create", job["sandbox"], "--network", job["network"]]
        subprocess.run(argv + (["--ip", job["ip"]] if job["ip"] else []), check=True, stdout=subprocess.DEVNULL)
    else:
        engine.create_sandbox(job["sandbox"], networks=[job["network"]], ip=job["ip"])
    print(f"{start!r} {time.monotonic()!r}", flush=True)
"""
ARMS = ("cli", "api", "bridge")
ROUTE_WATCH = r"""
import socket, struct, sys, time
from ipaddress import ip_network
wanted = ip_network(sys.argv[1])
dest = struct.unpack("<I", wanted.network_address.packed)[0]
mask = struct.unpack("<I", wanted.netmask.packed)[0]
print("up", flush=True)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    with open("/proc/net/route") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if int(fields[1], 16) == dest and int(fields[7], 16) == mask:
                print(f"{time.monotonic():.6f}", flush=True)
                sys.exit(0)
    time.sleep(0.0005)
print("timeout", flush=True)
"""


def in_host(host: str, argv: list[str], **kwargs):
    env = ["env", *(f"{k}={v}" for k, v in ENV.items())]
    return subprocess.run([*NSNET, "lab", "exec", host, "--", *env, *argv], capture_output=True, text=True, **kwargs)


def popen_in(host: str, argv: list[str], **kwargs) -> subprocess.Popen:
    env = ["env", *(f"{k}={v}" for k, v in ENV.items())]
    return subprocess.Popen([*NSNET, "lab", "exec", host, "--", *env, *argv], stdout=subprocess.PIPE, text=True,
                            **kwargs)


def nsnet(host: str, *args: str) -> str:
    done = in_host(host, [*NSNET, *args])
    if done.returncode != 0:
        raise RuntimeError(f"{host}: nsnet {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def address(host: str, sandbox: str) -> str:
    return json.loads(nsnet(host, "inspect", sandbox))[0]["Networks"]["mesh"]["IPAddress"]


# Phase: reach

def reach(hosts: int, rounds: int) -> dict:
    """Rounds alternate the arms (cli, api, bridge), so that drift over the run hits each alike."""
    nsnet("h2", "network", "create", "mesh", "--driver", "overlay", "--subnet", "10.80.0.0/16")
    nsnet("h1", "network", "create", "flat", "--subnet", "10.81.0.0/24")
    for i in range(2, hosts + 1):
        nsnet(f"h{i}", "create", f"s{i}", "--network", "mesh")
    driver = popen_in("h1", [sys.executable, "-c", DRIVER], stdin=subprocess.PIPE)
    samples: dict[str, list[float]] = {"first": [], "first_create": []}
    for arm in ARMS:
        samples[arm], samples[f"{arm}_create"] = [], []
    block = None
    try:
        for r in range(rounds * len(ARMS) + 1):
            arm = "first" if r == 0 else ARMS[(r - 1) % len(ARMS)]
            sandbox = f"x{r}"
            # The address is picked ahead, so that the prober need not wait for inspect.
            ip = None if block is None else f"10.81.0.{10 + r}" if arm == "bridge" else f"{block}.{10 + r}"
            network = "flat" if arm == "bridge" else "mesh"
            prober_host = "h1" if arm == "bridge" else "h2"  # a bridge network is this host's alone
            listener = popen_in("h1", [sys.executable, "-c", LISTENER, sandbox, str(PORT)])
            prober = popen_in(prober_host, [sys.executable, "-c", PROBER, ip, str(PORT)],
                              stdin=subprocess.PIPE) if ip else None
            time.sleep(0.3)  # all started: their interpreters' start-up is not the overlay's
            driver.stdin.write(json.dumps({"how": "api" if arm == "api" else "cli", "sandbox": sandbox,
                                           "network": network, "ip": ip}) + "\n")
            driver.stdin.flush()
            start, created = map(float, driver.stdout.readline().split())
            if ip is None:  # the first create joins h1: its block is known only after
                ip = address("h1", sandbox)
                block = ip.rsplit(".", 1)[0]
                prober = popen_in("h2", [sys.executable, "-c", PROBER, ip, str(PORT)], stdin=subprocess.PIPE)
            # Probing before the sandbox exists would leave h1's neighbour entry for it failed for a
            # second (ARP retries): the client asks once create has returned, as a user would.
            prober.stdin.write(f"{start!r}\n")
            prober.stdin.flush()
            samples[f"{arm}_create"].append((created - start) * 1000)
            line = prober.stdout.readline().strip()
            prober.wait()
            listener.kill()
            listener.wait()
            if line == "timeout":
                raise RuntimeError(f"round {r} ({arm}): {prober_host} never reached {ip}")
            samples[arm].append(float(line))
    finally:
        driver.stdin.close()
        driver.wait()
    return samples


# Phase: peers

def peers(counts: list[int]) -> dict:
    sys.path.insert(0, os.path.join(ROOT, "src"))
    from nsnet.cluster import records
    from nsnet.cluster.etcd import open_store
    from nsnet.cluster.host import vtep_mac
    from nsnet.cluster.records import Block

    nsnet("h1", "network", "create", "mesh", "--driver", "overlay", "--subnet", "10.112.0.0/12")
    nsnet("h1", "create", "s1", "--network", "mesh")
    store = open_store()
    config = records.decode(records.NetworkConfig, store.get(records.config_key("mesh")).value)
    out: dict = {}
    written = 0
    held, _ = store.range(records.blocks_prefix("mesh"))
    taken = {records.block_of(kv.key.rsplit("/", 1)[1]) for kv in held}  # h1's own: never written over
    free = [b for b in config.supernet.subnets(new_prefix=24) if b not in taken]
    blocks = iter(free)

    def put(n: int) -> list[str]:
        nonlocal written
        made = []
        for _ in range(n):
            written += 1
            cidr = next(blocks)
            host = f"sim{written}"
            store.put(records.block_key("mesh", cidr), records.encode(
                Block(host, f"10.99.{2 + written // 250}.{1 + written % 250}", vtep_mac(host, config.vni), config.mtu)))
            made.append(str(cidr))
        return made

    for i, count in enumerate(counts):
        before = put(count - written)
        settle = popen_in("h1", [sys.executable, "-c", ROUTE_WATCH, before[-1]])  # the burst programmed first
        settle.stdout.readline()
        if settle.stdout.readline().strip() == "timeout":
            log = in_host("h1", ["tail", "-5", "/var/lib/nsnet/cluster.log"]).stdout
            raise RuntimeError(f"h1 never routed {before[-1]}; its agent's log ends:\n{log}")
        settle.wait()
        # One more simulated host: from its block's put to its route in h1's kernel.
        cidr = str(free[written])
        watcher = popen_in("h1", [sys.executable, "-c", ROUTE_WATCH, cidr])
        assert watcher.stdout.readline().strip() == "up"
        start = time.monotonic()
        put(1)
        line = watcher.stdout.readline().strip()
        if line == "timeout":
            raise RuntimeError(f"h1 never routed {cidr}")
        one = (float(line) - start) * 1000
        watcher.wait()
        # A real host joining a network of count+1 others: its create returns once its agent has
        # programmed every peer (route, neighbour, FDB).
        joiner = f"h{i + 2}"
        start = time.monotonic()
        nsnet(joiner, "create", f"s{i + 2}", "--network", "mesh")
        join = (time.monotonic() - start) * 1000
        routes = in_host(joiner, ["ip", "-4", "route", "show"]).stdout
        out[count] = {"one_more_ms": one, "join_ms": join, "routes": routes.count(" onlink")}
    store.close()
    return out


def path() -> dict:
    nsnet("h1", "network", "create", "mesh", "--driver", "overlay", "--subnet", "10.80.0.0/16")
    nsnet("h1", "create", "s1", "--network", "mesh")
    nsnet("h2", "create", "s2", "--network", "mesh")
    s2 = address("h2", "s2")
    h2 = in_host("h2", ["ip", "-4", "-o", "addr", "show", "eth0"]).stdout.split()[3].split("/")[0]
    servers = [popen_in("h2", ["iperf3", "-s", "-B", h2]), popen_in("h2", [*NSNET, "exec", "s2", "--", "iperf3", "-s"])]
    time.sleep(0.5)
    arms = {"underlay": ("h1", ["iperf3", "-c", h2, "-t", "4", "-J"], ["ping", "-c", "200", "-i", "0.01", "-q", h2]),
            "overlay": ("h1", [*NSNET, "exec", "s1", "--", "iperf3", "-c", s2, "-t", "4", "-J"],
                        [*NSNET, "exec", "s1", "--", "ping", "-c", "200", "-i", "0.01", "-q", s2])}
    gbits: dict[str, list[float]] = {k: [] for k in arms}
    rtt: dict[str, float] = {}
    for _ in range(3):
        for arm, (host, iperf, _) in arms.items():
            done = in_host(host, iperf)
            gbits[arm].append(json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9)
    for arm, (host, _, ping) in arms.items():
        summary = in_host(host, ping).stdout.strip().splitlines()[-1]  # rtt min/avg/max/mdev = a/b/c/d ms
        rtt[arm] = float(summary.split("=")[1].split("/")[1])
    for server in servers:
        server.kill()
        server.wait()
    return {"gbits": gbits, "rtt_ms": rtt}


def phase(name: str, *args: str) -> None:
    """In a multi-host lab: run one phase and print its JSON result."""
    if name == "reach":
        result = reach(int(args[0]), int(args[1]))
    elif name == "peers":
        result = peers([int(a) for a in args])
    else:
        result = path()
    print("RESULT " + json.dumps(result))


def run_phase(hosts: int, name: str, *args: str) -> dict:
    done = subprocess.run([*NSNET, "lab", "--hosts", str(hosts), "--etcd", "1", "--", sys.executable,
                           os.path.abspath(__file__), "--phase", name, *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"phase {name} at {hosts} hosts failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        phase(*args.phase)
        return 0
    refuse_outside_lab()
    rounds = 6 if args.quick else 21
    report: dict = {"reach": {}, "peers": {}, "path": {}}
    for hosts in (3, 10):
        samples = run_phase(hosts, "reach", str(hosts), str(rounds))
        report["reach"][hosts] = samples
        p50 = {key: statistics.median(values) for key, values in samples.items()}
        verdict = "meets" if p50["api"] <= TARGET_MS else "misses"
        print(f"reach, {hosts} hosts: first create (joins) {samples['first'][0]:.1f} ms; then, p50 (p90):")
        for arm, what in (("api", "overlay, engine API"), ("cli", "overlay, nsnet create"),
                          ("bridge", "bridge network, nsnet create (anchor)")):
            print(f"  {what:<40} reach {p50[arm]:6.1f} ms ({percentile(samples[arm], 0.9):6.1f}),"
                  f" of it the create {p50[arm + '_create']:6.1f} ms")
        print(f"  target (API reach p50 <= {TARGET_MS:.0f} ms): {verdict}; overlay CLI create vs bridge CLI create"
              f" {p50['cli_create'] / p50['bridge_create']:.2f}x")
    counts = [10, 50] if args.quick else [10, 50, 100]
    report["peers"] = run_phase(1 + len(counts), "peers", *map(str, counts))
    for count, figures in report["peers"].items():
        print(f"peers: {count} hosts: one more host programmed here in {figures['one_more_ms']:.1f} ms; a new host"
              f" joins (create, block, VXLAN, {figures['routes']} peers programmed) in {figures['join_ms']:.0f} ms")
    report["path"] = run_phase(2, "path")
    g, r = report["path"]["gbits"], report["path"]["rtt_ms"]
    print(f"path: TCP overlay {statistics.median(g['overlay']):.2f} Gbit/s vs underlay"
          f" {statistics.median(g['underlay']):.2f} ({statistics.median(g['overlay']) / statistics.median(g['underlay']):.2f});"
          f" RTT overlay {r['overlay']:.3f} ms vs underlay {r['underlay']:.3f} ms")
    save_json(os.path.join(HERE, "results", "overlay.json"), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
