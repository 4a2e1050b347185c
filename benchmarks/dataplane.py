"""Data-plane benchmark: what nsnet's paths cost a packet, next to a direct veth pair.

Run it from the repository root, inside a throwaway isolated host (it refuses to run anywhere else):

    .venv/bin/nsnet lab -- .venv/bin/python benchmarks/dataplane.py
    .venv/bin/nsnet lab -- .venv/bin/python benchmarks/dataplane.py --quick

Issue 5 part 3. Four paths, each between two namespaces made here (client -> server):

- direct: `bench-a` -> `bench-b`, one veth pair (192.0.2.1 -> 192.0.2.2): the limit;
- bridge: sandbox `peer` -> sandbox `web`, both on nsnet network `app` (10.31.0.0/24);
- nat:    sandbox `web` -> namespace `wan` at 198.51.100.2, through the lab host's masquerade
          (the host's `wan0` is 198.51.100.1, as the integration tests' `wan` fixture);
- dnat:   `wan` -> 198.51.100.1:<published port> -> `web` (`publish=["8080:5201", ...]`).

Per path: TCP throughput of one stream (iperf3 -J, client and server each in its namespace, received
side), round-trip latency (a Python TCP ping-pong of one byte with TCP_NODELAY, 2,000 round trips on
one connection after 100 untimed; p50) and new-connection rate (two client processes, each
connecting and closing with SO_LINGER 0 as fast as it can for 2 s; two servers sharing the port
with SO_REUSEPORT; the total per second). The paths are interleaved A B C D, three rounds, and the
medians and their ratios to `direct` are reported.

All of it twice, interleaved round by round: with net.bridge.bridge-nf-call-iptables as the lab has
it, and with it set to 0 (in the lab's own network namespace; restored afterwards). Conntrack is
flushed before every measurement. Every process started here is bounded (an alarm inside it and a
timeout outside) and killed by its own PID; every sandbox, the network and the namespaces are removed
afterwards and checked gone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import nsnet  # noqa: E402
from nsnet import Engine  # noqa: E402
from nsnet.errors import NsnetError  # noqa: E402
from nsnet.store import state_dir  # noqa: E402

from harness import refuse_outside_lab

# The generic helpers (bounded processes, listening checks, the wan and direct namespaces, cleanup
# checks) are ports.py's, so that both benchmarks build the same topology the same way.
from ports import (  # noqa: E402
    DIRECT_A, DIRECT_B, DIRECT_B_IP, WAN_HOST, WAN_NS, WAN_PEER, flush_conntrack, host_sysctl,
    in_netns, leftovers, make_direct_pair, make_wan, run, started, stop, wait_listening, wait_settled,
)

LAB_COMMAND = ".venv/bin/nsnet lab -- .venv/bin/python benchmarks/dataplane.py"

NETWORK, SUBNET = "app", "10.31.0.0/24"
WEB, PEER = "web", "peer"
IPERF_PORT, PING_PORT, CONN_PORT = 5201, 7001, 7002
# Host port -> web's port, for the dnat path.
PUBLISH = {IPERF_PORT: 8080, PING_PORT: 8081, CONN_PORT: 8082}
BRIDGE_NF = "net.bridge.bridge-nf-call-iptables"
PATHS = ("direct", "bridge", "nat", "dnat")
CONN_CLIENTS = 2
# The ping-pong's client and server both run on this CPU (a veth delivers on the sending CPU, so the
# whole round trip stays there): unpinned, the p50 of the same path moved between ~14 and ~55 us
# from one run to the next, with the wake-ups landing on one CPU or the other.
PING_CPU = "0"

# Issue 5's targets: a path's median over direct's median, per measure.
TARGETS = {
    "bridge": {"gbit_s": 0.95, "conn_s": 0.90},
    "nat": {"gbit_s": 0.93, "conn_s": 0.70},
    "dnat": {"gbit_s": 0.93, "conn_s": 0.70},
}


@dataclass(frozen=True)
class Settings:
    rounds: int
    iperf_seconds: int
    pings: int
    conn_seconds: float


DEFAULT = Settings(rounds=3, iperf_seconds=3, pings=2000, conn_seconds=2.0)
QUICK = Settings(rounds=1, iperf_seconds=1, pings=500, conn_seconds=1.0)

# Programs run in the namespaces; each bounds itself with an alarm.

SERVER = r"""
import signal, socket, sys
port, mode, lifetime = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
signal.alarm(lifetime)
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("0.0.0.0", port))
s.listen(4096)
if mode == "echo":
    while True:
        c, _ = s.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            data = c.recv(64)
            if not data:
                break
            c.sendall(data)
        c.close()
else:
    while True:
        try:
            c, _ = s.accept()
            c.close()
        except OSError:
            pass
"""

PING_CLIENT = r"""
import json, signal, socket, sys, time
host, port, count, lifetime = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
signal.alarm(lifetime)
c = socket.create_connection((host, port), timeout=5)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
samples = []
for i in range(100 + count):
    t = time.perf_counter_ns()
    c.sendall(b"x")
    if c.recv(64) != b"x":
        raise SystemExit("bad echo")
    if i >= 100:
        samples.append((time.perf_counter_ns() - t) / 1000.0)
c.close()
samples.sort()
print(json.dumps({"p50_us": samples[len(samples) // 2], "count": len(samples)}))
"""

CONN_CLIENT = r"""
import json, signal, socket, struct, sys, time
host, port, seconds, lifetime = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
signal.alarm(lifetime)
linger = struct.pack("ii", 1, 0)
ok = errors = 0
start = time.monotonic()
end = start + seconds
while time.monotonic() < end:
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    c.settimeout(2)
    try:
        c.connect((host, port))
        ok += 1
    except OSError:
        errors += 1
    c.close()
print(json.dumps({"ok": ok, "errors": errors, "seconds": time.monotonic() - start}))
"""


@dataclass(frozen=True)
class Path:
    name: str
    client_ns: str
    server_ns: str
    target: str
    published: bool  # the client connects to the host's published port, not the server's

    def port(self, port: int) -> int:
        return PUBLISH[port] if self.published else port


def netns_name(sandbox: Any) -> str:
    """The name `ip netns exec` takes (the store keeps the path under /run/netns)."""
    return os.path.basename(sandbox.netns)


def make_paths(engine: Engine) -> dict[str, Path]:
    web, peer = engine.sandbox(WEB), engine.sandbox(PEER)
    web_ip = str(web.endpoint(NETWORK).address.ip)
    return {
        "direct": Path("direct", DIRECT_A, DIRECT_B, DIRECT_B_IP, False),
        "bridge": Path("bridge", netns_name(peer), netns_name(web), web_ip, False),
        "nat": Path("nat", netns_name(web), WAN_NS, WAN_PEER, False),
        "dnat": Path("dnat", WAN_NS, netns_name(web), WAN_HOST, True),
    }


def popen(ns: str, program: str, *args: object, cpu: str | None = None, **kwargs: Any) -> subprocess.Popen:
    pin = ["taskset", "-c", cpu] if cpu is not None else []
    return subprocess.Popen(in_netns(ns, [*pin, sys.executable, "-c", program, *map(str, args)]), **kwargs)


def finish(process: subprocess.Popen, timeout_s: float) -> dict[str, Any]:
    """The JSON line a client prints, or an error with its output (the process is stopped either way)."""
    with started(process):
        try:
            out, err = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"client {process.pid} still running after {timeout_s:.0f} s") from None
    if process.returncode != 0:
        raise RuntimeError(f"client exit {process.returncode}: {(out + err).strip()[-300:]}")
    return json.loads(out.strip().splitlines()[-1])


def measure_iperf(path: Path, seconds: int) -> float:
    """Gbit/s of one TCP stream, received side."""
    server = subprocess.Popen(in_netns(path.server_ns, ["iperf3", "-s", "-1", "-4", "-p", str(IPERF_PORT)]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with started(server):
        wait_listening(server.pid, IPERF_PORT)
        client = subprocess.Popen(in_netns(path.client_ns, ["iperf3", "-c", path.target, "-p",
                                                            str(path.port(IPERF_PORT)), "-t", str(seconds), "-J"]),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with started(client):
            try:
                out, err = client.communicate(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"iperf3 on {path.name} still running after {seconds + 30} s") from None
        if client.returncode != 0:
            raise RuntimeError(f"iperf3 on {path.name}: exit {client.returncode}: {(out + err).strip()[-300:]}")
        server.wait(timeout=10)
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def measure_ping(path: Path, count: int) -> float:
    """p50 of count TCP round trips of one byte, in microseconds."""
    server = popen(path.server_ns, SERVER, PING_PORT, "echo", 120, cpu=PING_CPU, stdout=subprocess.DEVNULL)
    with started(server):
        wait_listening(server.pid, PING_PORT)
        client = popen(path.client_ns, PING_CLIENT, path.target, path.port(PING_PORT), count, 60, cpu=PING_CPU,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return finish(client, 90)["p50_us"]


def measure_conn(path: Path, seconds: float) -> dict[str, float]:
    """New connections per second, all clients together, and the failed attempts."""
    servers = [popen(path.server_ns, SERVER, CONN_PORT, "accept", 120, stdout=subprocess.DEVNULL)
               for _ in range(CONN_CLIENTS)]
    try:
        for server in servers:
            wait_listening(server.pid, CONN_PORT)
        clients = [popen(path.client_ns, CONN_CLIENT, path.target, path.port(CONN_PORT), seconds, int(seconds) + 30,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for _ in range(CONN_CLIENTS)]
        try:
            reports = [finish(client, seconds + 40) for client in clients]
        finally:
            for client in clients:
                stop(client)
    finally:
        for server in servers:
            stop(server)
    return {"conn_s": sum(r["ok"] / r["seconds"] for r in reports), "errors": sum(r["errors"] for r in reports)}


def measure(path: Path, s: Settings) -> dict[str, float]:
    flush_conntrack()
    gbit = measure_iperf(path, s.iperf_seconds)
    flush_conntrack()
    rtt = measure_ping(path, s.pings)
    flush_conntrack()
    conn = measure_conn(path, s.conn_seconds)
    return {"gbit_s": gbit, "rtt_p50_us": rtt, **conn}


def set_bridge_nf(value: str) -> None:
    run("sysctl", "-qw", f"{BRIDGE_NF}={value}")


def widen_port_range(namespaces: Sequence[str]) -> None:
    """Clients open ~tens of thousands of connections per run: give them the widest ephemeral range."""
    for ns in namespaces:
        run(*in_netns(ns, ["sysctl", "-qw", "net.ipv4.ip_local_port_range=10000 65000"]))


def run_all(engine: Engine, s: Settings, nf_settings: list[str]) -> dict[str, dict[str, list[dict[str, float]]]]:
    """samples[setting][path] = one dict per round; rounds interleave settings, and paths A B C D."""
    paths = make_paths(engine)
    widen_port_range({p.client_ns for p in paths.values()})
    samples: dict[str, dict[str, list[dict[str, float]]]] = {v: {p: [] for p in PATHS} for v in nf_settings}
    for round_ in range(s.rounds):
        for value in nf_settings:
            if value != "absent":  # without br_netfilter there is nothing to toggle
                set_bridge_nf(value)
            for name in PATHS:
                print(f"round {round_ + 1}/{s.rounds}, {BRIDGE_NF}={value}, {name} ...", flush=True)
                samples[value][name].append(measure(paths[name], s))
    return samples


def summarize(samples: dict[str, dict[str, list[dict[str, float]]]]) -> dict[str, dict[str, dict[str, float]]]:
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for value, by_path in samples.items():
        medians = {p: {k: statistics.median(r[k] for r in rounds) for k in ("gbit_s", "rtt_p50_us", "conn_s")}
                   for p, rounds in by_path.items()}
        summary[value] = {}
        for p, m in medians.items():
            direct = medians["direct"]
            summary[value][p] = {
                **m,
                "errors": sum(r["errors"] for r in by_path[p]),
                "gbit_ratio": m["gbit_s"] / direct["gbit_s"],
                "rtt_ratio": m["rtt_p50_us"] / direct["rtt_p50_us"],
                "conn_ratio": m["conn_s"] / direct["conn_s"],
            }
    return summary


def verdicts(summary: dict[str, dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    out = []
    for value, by_path in summary.items():
        for p, targets in TARGETS.items():
            for measure_, minimum in targets.items():
                ratio = by_path[p]["gbit_ratio" if measure_ == "gbit_s" else "conn_ratio"]
                out.append({"bridge_nf_call_iptables": value, "path": p, "measure": measure_,
                            "ratio": ratio, "target": minimum, "met": ratio >= minimum})
    return out


def print_table(summary: dict[str, dict[str, dict[str, float]]], rounds: int) -> None:
    header = ("bridge-nf", "path", "Gbit/s", "x direct", "RTT p50 us", "x direct", "conn/s", "x direct", "conn errors")
    rows = [header]
    for value, by_path in summary.items():
        for p in PATHS:
            m = by_path[p]
            rows.append((value, p, f"{m['gbit_s']:.2f}", f"{m['gbit_ratio']:.2f}", f"{m['rtt_p50_us']:.1f}",
                         f"{m['rtt_ratio']:.2f}", f"{m['conn_s']:,.0f}", f"{m['conn_ratio']:.2f}", f"{m['errors']:.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    print(f"medians of {rounds} round(s); ratios are over the direct veth pair in the same setting")
    for row in rows:
        print("  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))


def print_targets(results: list[dict[str, Any]]) -> None:
    print("\ntargets (issue 5: bridge >= 0.95 of direct throughput and >= 0.90 of its connection rate; "
          "NAT and DNAT >= 0.93 and >= 0.70):")
    for r in results:
        print(f"  {BRIDGE_NF}={r['bridge_nf_call_iptables']}: {r['path']:<6} {r['measure']:<7} "
              f"{r['ratio']:.3f} >= {r['target']:.2f}: {'met' if r['met'] else 'MISSED'}")


def cleanup(directory: str, original_nf: str | None) -> None:
    """Whatever is left, then the benchmark's own namespaces; checks nothing remains."""
    errors: list[Exception] = []
    if original_nf is not None and original_nf != host_sysctl(BRIDGE_NF):
        try:
            set_bridge_nf(original_nf)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            errors.append(exc)
    try:
        with Engine(state_dir=directory) as engine:
            for sandbox in engine.sandboxes():
                engine.remove_sandbox(sandbox.name, force=True)
            if any(n.name == NETWORK for n in engine.networks()):
                engine.remove_network(NETWORK, force=True)
    except (NsnetError, OSError, RuntimeError, subprocess.SubprocessError) as exc:
        errors.append(exc)
    run("ip", "link", "del", "wan0", check=False)
    for ns in (WAN_NS, DIRECT_A, DIRECT_B):
        run("ip", "netns", "del", ns, check=False)
    shutil.rmtree(directory, ignore_errors=True)
    wait_settled()
    remaining = leftovers()
    if errors or remaining:
        raise RuntimeError(f"cleanup: errors {errors}, left behind {remaining[:10]}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=f"run it as: {LAB_COMMAND}")
    parser.add_argument("--quick", action="store_true",
                        help="1 round, 1 s iperf3, 500 pings, 1 s connection rate (for debugging)")
    parser.add_argument("--rounds", type=int, help="rounds of A B C D (default 3; --quick 1)")
    parser.add_argument("--json", metavar="PATH", help="write every sample and the summaries as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    refuse_outside_lab()
    settings = QUICK if args.quick else DEFAULT
    if args.rounds:
        settings = Settings(args.rounds, settings.iperf_seconds, settings.pings, settings.conn_seconds)
    print(f"nsnet {nsnet.__version__} from {os.path.dirname(nsnet.__file__)}"
          f"{' (--quick: fewer samples)' if args.quick else ''}")
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    directory = tempfile.mkdtemp(prefix="bench-dataplane-", dir=state_dir())
    original_nf = None
    try:
        make_wan()
        make_direct_pair()
        with Engine(state_dir=directory) as engine:
            engine.create_network(NETWORK, subnet=SUBNET)
            original_nf = host_sysctl(BRIDGE_NF)  # br_netfilter may be loaded by the network's creation
            nf_settings = [original_nf] if original_nf is not None else []
            if original_nf != "0":
                nf_settings.append("0")
            if original_nf is None:
                print(f"{BRIDGE_NF} does not exist here (br_netfilter not loaded): one setting only")
                nf_settings = ["absent"]
            engine.create_sandbox(WEB, networks=[NETWORK], publish=[f"{h}:{p}" for p, h in PUBLISH.items()])
            engine.create_sandbox(PEER, networks=[NETWORK])
            print(f"{BRIDGE_NF} in the lab: {original_nf}; measuring with: {', '.join(nf_settings)}", flush=True)
            samples = run_all(engine, settings, nf_settings)
    finally:
        cleanup(directory, original_nf)
    summary = summarize(samples)
    results = verdicts(summary)
    print()
    print_table(summary, settings.rounds)
    print_targets(results)
    if args.json:
        document = {
            "benchmark": "nsnet data plane",
            "paths": list(PATHS),
            "nsnet": {"version": nsnet.__version__, "path": os.path.dirname(nsnet.__file__)},
            "host": {"kernel": platform.release(), "python": platform.python_version(), "cpus": os.cpu_count()},
            "settings": asdict(settings),
            "bridge_nf_call_iptables": {"lab": original_nf, "measured": list(samples)},
            "started": started_at,
            "samples": samples,
            "summary": summary,
            "targets": results,
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(document, handle, indent=2)
            handle.write("\n")
        print(f"\nraw samples written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
