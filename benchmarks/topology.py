"""Topologies: bringing up and tearing down a linear topology of N nodes, nsnet against Mininet 2.3.

Run it from the repository root, inside a throwaway isolated host (it refuses to run anywhere else):

    .venv/bin/nsnet lab -- .venv/bin/python benchmarks/topology.py
    .venv/bin/nsnet lab -- .venv/bin/python benchmarks/topology.py --quick

Mininet's `mn --topo linear,N` is N switches in a chain, one host on each: N host namespaces, N
bridges (LinuxBridge: Mininet's switch that needs no Open vSwitch and no controller), 2N-1 veth
pairs, an address per host. The contenders, each timed from reading the description to a
topology that is up, then from "tear it down" to nothing left:

- mininet: `Mininet(topo=LinearTopo(N), switch=LinuxBridge, controller=None)`, `build()` and
  `start()`; `stop()`. Its Python API, not its CLI. Its global cleanup (`mn -c`, which kills
  processes and deletes links by name pattern) is never called.
- chain: nsnet's linear topology, what a user writes for one: N sandboxes, each adjacent pair
  joined by a link (a veth pair, no bridge) with a /30 per link (10.200.0.0/16): N namespaces,
  N-1 veth pairs, two addresses per link.
- switched: the same kernel objects as Mininet's, in nsnet's vocabulary: N networks (a bridge and
  a /30 each, 10.201.0.0/16, no DNS), a sandbox on each, adjacent sandboxes linked as in chain:
  N namespaces, N bridges, 2N-1 veth pairs. (nsnet cannot cable bridges to each other; the
  chain's cables join the sandboxes instead.)

`chain` is the shape judged against the target (nsnet >= 5x faster than Mininet at every N, up and
down each); `switched` is printed beside it, so that a reader sees the speed does not come from
making fewer objects.

nsnet is driven two ways (`--driver`): `up` (the default) writes a topology file and runs `nsnet up
FILE`, then `nsnet down FILE`, as processes; `api` makes the same objects through one in-process
Engine (create_network, create_sandbox, link; then remove_sandbox, remove_network), to measure the
engine without the topology layer.

Measurement choices:
- A fresh host per phase (harness.in_fresh_host): every (contender, N, round) runs in a forked child
  that is a new isolated host nested in the lab, so no contender inherits another's objects or
  firewall, and whatever a phase leaves dies with it. The phase checks it left nothing anyway.
- up: until the topology exists (Mininet: start() returned; nsnet: `up` returned). down: until
  the call returned; settled: until the host holds no interface but lo and no namespace is pinned
  (the kernel destroys a deleted namespace's veths asynchronously, after nsnet's `down` returned;
  Mininet deletes its links itself). Ratios use settled, the stricter.
- What each side made is checked after up (namespaces, interfaces, ledger rows; Mininet's
  interfaces and host shells) and after down (no pinned namespace, no interface but lo, no
  ledger row; Mininet: no interface but lo and none of its shells alive).
- Mininet's `fixLimits()` is skipped (`Mininet.inited = True`, Mininet's own "already set up"
  flag): it writes host-wide sysctls (fs.file-max, kernel.pty.max, net.core.[rw]mem_max) that a
  lab's network namespace does not isolate. The benchmark raises its own process's open-file limit
  instead, which is all Mininet needs of it here.
- Rounds interleave the contenders and rotate their order: 3 rounds at N=100 and 2 at N=500 by
  default (500 nodes is minutes of Mininet on 2 CPUs); `--quick`: one round at N=20 and N=100.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from harness import (host, in_fresh_host, nsnet_executable, refuse_outside_lab, remove_snapshot, run_from_snapshot,
                     save_json, source_state)

from nsnet.naming import NETNS_DIR

CHAIN_RANGE = ipaddress.ip_network("10.200.0.0/16")
SWITCH_RANGE = ipaddress.ip_network("10.201.0.0/16")
CONTENDERS = ("mininet", "chain", "switched")
TARGET = 5.0  # nsnet at least 5x faster than Mininet, up and down, at every N
SETTLE_TIMEOUT_S = 120.0


def node(i: int) -> str:
    return f"h{i + 1:04d}"


def slash30(block: ipaddress.IPv4Network, i: int) -> ipaddress.IPv4Network:
    return ipaddress.ip_network(f"{block.network_address + 4 * i}/30")


def link_ips(i: int) -> tuple[str, str]:
    """The addresses of the link between node i and node i+1."""
    net = slash30(CHAIN_RANGE, i)
    return f"{net.network_address + 1}/30", f"{net.network_address + 2}/30"


# The nsnet topologies, as a file for `nsnet up` and as engine calls

def topology_file(shape: str, n: int) -> str:
    """The topology file (DESIGN.md's keys) of `shape` at N nodes."""
    lines = []
    if shape == "switched":
        lines.append("networks:")
        lines += [f"  s{i + 1:04d}: {{subnet: {slash30(SWITCH_RANGE, i)}, dns: false}}" for i in range(n)]
    lines.append("sandboxes:")
    lines += [f"  {node(i)}: {{networks: [{f's{i + 1:04d}' if shape == 'switched' else 'none'}]}}" for i in range(n)]
    if n > 1:
        lines.append("links:")
        for i in range(n - 1):
            a, b = link_ips(i)
            lines.append(f"  - {{a: {node(i)}, b: {node(i + 1)}, ip: {{{node(i)}: {a}, {node(i + 1)}: {b}}}}}")
    return "\n".join(lines) + "\n"


def api_up(engine: Any, shape: str, n: int) -> None:
    for i in range(n):
        if shape == "switched":
            engine.create_network(f"s{i + 1:04d}", subnet=str(slash30(SWITCH_RANGE, i)), dns=False)
        engine.create_sandbox(node(i), networks=[f"s{i + 1:04d}" if shape == "switched" else "none"])
    for i in range(n - 1):
        a, b = link_ips(i)
        engine.link(node(i), node(i + 1), ips=[f"{node(i)}={a}", f"{node(i + 1)}={b}"])


def api_down(engine: Any, shape: str, n: int) -> None:
    for i in range(n):  # a sandbox's links go with it
        engine.remove_sandbox(node(i), force=True)
    if shape == "switched":
        for i in range(n):
            engine.remove_network(f"s{i + 1:04d}")


# What a host holds

def interfaces() -> list[str]:
    return sorted(os.listdir("/sys/class/net"))


def pinned() -> list[str]:
    return sorted(os.listdir(NETNS_DIR)) if os.path.isdir(NETNS_DIR) else []


def wait_settled(start: float) -> float:
    """Seconds from `start` until the host holds no interface but lo and no pinned namespace."""
    deadline = time.perf_counter() + SETTLE_TIMEOUT_S
    while interfaces() != ["lo"] or pinned():
        if time.perf_counter() > deadline:
            raise RuntimeError(f"not settled after {SETTLE_TIMEOUT_S:.0f} s: interfaces {interfaces()[:10]}, "
                               f"namespaces {pinned()[:10]}")
        time.sleep(0.002)
    return time.perf_counter() - start


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise RuntimeError(what)


# Phases (each in a fresh host)

def mininet_phase(n: int) -> dict[str, Any]:
    from mininet.log import setLogLevel
    from mininet.net import Mininet
    from mininet.nodelib import LinuxBridge
    from mininet.topo import LinearTopo

    setLogLevel("error")
    Mininet.inited = True  # no fixLimits(): it writes host-wide sysctls (see the module's docstring)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    start = time.perf_counter()
    net = Mininet(topo=LinearTopo(n), switch=LinuxBridge, controller=None, build=False, waitConnected=False)
    net.build()
    net.start()
    up = time.perf_counter() - start
    expect(len(net.hosts) == n and len(net.switches) == n and len(net.links) == 2 * n - 1,
           f"Mininet made {len(net.hosts)} hosts, {len(net.switches)} switches, {len(net.links)} links")
    # its switches and their ports live in this host: N bridges, N host ports, 2(N-1) inter-switch ends
    expect(len(interfaces()) == 1 + n + n + 2 * (n - 1), f"Mininet's host holds {len(interfaces())} interfaces")
    shells = [h.pid for h in net.hosts + net.switches]
    start = time.perf_counter()
    net.stop()
    down = time.perf_counter() - start
    settled = wait_settled(start)
    alive = [pid for pid in shells if os.path.exists(f"/proc/{pid}") and _state(pid) != "Z"]
    expect(not alive, f"Mininet left {len(alive)} node shells running")
    return {"up_s": up, "down_s": down, "settled_s": settled}


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def nsnet_phase(shape: str, n: int, driver: str) -> dict[str, Any]:
    from nsnet import Engine

    work = tempfile.mkdtemp(prefix="nsnet-bench-topology-")
    path = os.path.join(work, "linear.yaml")
    try:
        start = time.perf_counter()
        if driver == "up":
            with open(path, "w") as handle:
                handle.write(topology_file(shape, n))
            run_nsnet("up", path)
        else:
            with Engine() as engine:
                api_up(engine, shape, n)
        up = time.perf_counter() - start
        with Engine() as engine:
            expect(len(engine.sandboxes()) == n and len(engine.links()) == n - 1
                   and len(engine.networks()) == (n if shape == "switched" else 0),
                   f"the ledger holds {len(engine.sandboxes())} sandboxes, {len(engine.links())} links, "
                   f"{len(engine.networks())} networks")
        expect(len(pinned()) == n, f"{len(pinned())} namespaces are pinned")
        expect(len(interfaces()) == 1 + (2 * n if shape == "switched" else 0),
               f"the host holds {len(interfaces())} interfaces")
        start = time.perf_counter()
        if driver == "up":
            run_nsnet("down", path)
        else:
            with Engine() as engine:
                api_down(engine, shape, n)
        down = time.perf_counter() - start
        settled = wait_settled(start)
        with Engine() as engine:
            rows = (len(engine.sandboxes()), len(engine.links()), len(engine.networks()), len(engine.routes()))
        expect(rows == (0, 0, 0, 0), f"the ledger still holds (sandboxes, links, networks, routes) {rows}")
        return {"up_s": up, "down_s": down, "settled_s": settled}
    finally:
        for name in os.listdir(work):
            os.remove(os.path.join(work, name))
        os.rmdir(work)


def run_nsnet(verb: str, path: str) -> None:
    done = subprocess.run([nsnet_executable(), verb, path], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"nsnet {verb} exited {done.returncode}: {done.stderr.strip()[-500:]}")


def phase(contender: str, n: int, driver: str) -> dict[str, Any]:
    return mininet_phase(n) if contender == "mininet" else nsnet_phase(contender, n, driver)


# Report

def summarize(samples: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    return {c: {k: statistics.median(s[k] for s in runs) for k in ("up_s", "down_s", "settled_s")}
            for c, runs in samples.items() if runs}


def print_report(results: dict[int, dict[str, Any]], driver: str) -> bool:
    met = True
    print(f"\nLinear topology, median seconds (nsnet driven by `{driver}`); x = Mininet's time / nsnet's")
    print(f"{'N':>5} {'contender':<9} {'runs':>4} {'up':>8} {'down':>8} {'settled':>8} {'up x':>7} {'down x':>7}")
    for n, result in results.items():
        med = result["medians"]
        anchor = med.get("mininet")
        for contender, m in med.items():
            runs = len(result["samples"][contender])
            if anchor is None or contender == "mininet":
                ratios = ("", "")
            else:
                ratios = (f"{anchor['up_s'] / m['up_s']:.1f}x", f"{anchor['settled_s'] / m['settled_s']:.1f}x")
            print(f"{n:>5} {contender:<9} {runs:>4} {m['up_s']:>8.2f} {m['down_s']:>8.2f} {m['settled_s']:>8.2f}"
                  f" {ratios[0]:>7} {ratios[1]:>7}")
    print(f"\nTarget: nsnet's linear topology (chain) >= {TARGET:.0f}x faster than Mininet, up and down (settled),"
          " at every N:")
    for n, result in results.items():
        med = result["medians"]
        if "mininet" not in med or "chain" not in med:
            print(f"  N={n}: not measured (needs mininet and chain)")
            continue
        up = med["mininet"]["up_s"] / med["chain"]["up_s"]
        down = med["mininet"]["settled_s"] / med["chain"]["settled_s"]
        ok = up >= TARGET and down >= TARGET
        met = met and ok
        print(f"  N={n}: up {up:.1f}x, down {down:.1f}x: {'meets' if ok else 'MISSES'}")
    return met


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round at N=20 and N=100")
    parser.add_argument("--sizes", help="comma-separated N (default 100,500)")
    parser.add_argument("--rounds", help="rounds per N, comma-separated like --sizes (default 3,2)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help=f"some of {','.join(CONTENDERS)}")
    parser.add_argument("--driver", choices=["up", "api"], default="up",
                        help="nsnet through `nsnet up/down FILE` processes (default) or one in-process Engine")
    parser.add_argument("--json", help="write the samples and summaries here")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in (args.sizes or ("20,100" if args.quick else "100,500")).split(",")]
    rounds = [int(x) for x in (args.rounds or ("1,1" if args.quick else "3,2")).split(",")]
    args.plan = list(zip(sizes, rounds + [rounds[-1]] * (len(sizes) - len(rounds))))
    args.contender_list = [c for c in args.contenders.split(",") if c]
    unknown = set(args.contender_list) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders: {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    refuse_outside_lab()
    run_from_snapshot(sys.argv[1:])
    try:
        return measure(args)
    finally:
        remove_snapshot()


def measure(args: argparse.Namespace) -> int:
    print(f"nsnet {source_state()}; nsnet driven by `{args.driver}`", flush=True)
    results: dict[int, dict[str, Any]] = {}
    for n, rounds in args.plan:
        samples: dict[str, list[dict[str, Any]]] = {c: [] for c in args.contender_list}
        for r in range(rounds):
            k = r % len(args.contender_list)
            for contender in args.contender_list[k:] + args.contender_list[:k]:
                sample = in_fresh_host(phase, contender, n, args.driver)
                samples[contender].append(sample)
                print(f"N={n} round {r + 1}/{rounds} {contender}: up {sample['up_s']:.2f} s, down"
                      f" {sample['down_s']:.2f} s, settled {sample['settled_s']:.2f} s ...", flush=True)
        results[n] = {"samples": samples, "medians": summarize(samples)}
    met = print_report(results, args.driver)
    if args.json:
        save_json(args.json, {"host": host(), "nsnet": source_state(), "driver": args.driver,
                              "results": {str(n): r for n, r in results.items()}, "target": TARGET, "met": met})
    return 0


if __name__ == "__main__":
    sys.exit(main())
