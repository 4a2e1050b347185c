"""Data-plane benchmark: what nsnet's paths cost a packet, next to a direct veth pair.

Run it from the repository root, inside a throwaway isolated host (it refuses to run anywhere else):

    .venv/bin/nsnet lab -- .venv/bin/python benchmarks/dataplane.py
    .venv/bin/nsnet lab -- .venv/bin/python benchmarks/dataplane.py --quick

Issue 5 part 3. Four paths, each between two namespaces made here (client -> server):

- direct: `bench-a` -> `bench-b`, one veth pair (192.0.2.1 -> 192.0.2.2): the limit;
- bridge: sandbox `peer` -> sandbox `web`, both on nsnet network `app` (10.31.0.0/24);
- nat:    sandbox `web` -> namespace `wan` at 198.51.100.2, through the lab host's masquerade
          (the host's `wan0` is 198.51.100.1, as the integration tests' `wan` fixture);
- dnat:   `wan` -> 198.51.100.1:<published port> -> `web` (`publish=["8080:5201", ...]`);
- dnat6:  the same in IPv6: `wan` (2001:db8:100::2) -> [2001:db8:100::1]:<published port> -> `web`
          (the network is dual stack, `fd00:31::/64` beside its IPv4 subnet); read against dnat
          (`dnat6 / dnat` below the table), the IPv4 path measured in the same round.

And a reference for each of the last three, so that one run tells the kernel's own cost on this
machine (what any runtime pays for a bridge, conntrack and NAT) from the cost of nsnet's rules. The
reference paths are built by hand with the least a Docker-like runtime needs, in a namespace
`ref-host` of their own that plays the host, where nsnet's hooks cannot see them: a Linux bridge
`rbr` (172.30.1.1/24) with `ref-a` (172.30.1.2) and `ref-b` (172.30.1.3) on it, a veth `rwan`
(172.30.2.1) to `ref-wan` (172.30.2.2), ip_forward=1, no IPv6 (nsnet's sandbox interfaces have
none either), and one nftables table `ip ref`: a DNAT rule per published port for packets arriving
on `rwan` (the same ports as `web`'s) and a masquerade for the bridge's subnet leaving by `rwan`;
no filtering at all. Its nat table loads conntrack in ref-host, so with bridge-nf-call-iptables=1
its bridged traffic is conntracked: the "Docker-like ruleset with br_netfilter" of the issue.

- ref-bridge: `ref-a` -> `ref-b` (mirrors bridge);
- ref-nat:    `ref-b` -> `ref-wan` at 172.30.2.2, through ref-host's masquerade (mirrors nat);
- ref-dnat:   `ref-wan` -> 172.30.2.1:<published port> -> `ref-b` (mirrors dnat).

Per path: TCP throughput of one stream (iperf3 -J, client and server each in its namespace, received
side), round-trip latency (a Python TCP ping-pong of one byte with TCP_NODELAY, 2,000 round trips on
one connection after 100 untimed; p50) and new-connection rate (two client processes, each
connecting and closing with SO_LINGER 0 as fast as it can for 2 s; two servers sharing the port
with SO_REUSEPORT; the total per second). The paths are interleaved, each nsnet path next to its
reference so that both see the same noise of the machine (direct, bridge, ref-bridge, nat, ref-nat,
dnat, ref-dnat), three rounds. Reported: the medians, their ratios to `direct`, and each nsnet
path's ratio to its reference (`x ref`: what nsnet's rules cost over the kernel's minimum); a
reference's own ratio to `direct` is the floor this machine's kernel sets for that path.

All of it twice, interleaved round by round: with net.bridge.bridge-nf-call-iptables as the lab has
it, and with it set to 0 (in the lab's own network namespace and in ref-host's, the sysctl being per
namespace; the lab's is restored afterwards). Conntrack is flushed, in the lab host and in ref-host,
before every measurement. Every process started here is bounded (an alarm inside it and a timeout
outside) and killed by its own PID; every sandbox, the network and the namespaces are removed
afterwards and checked gone.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import nsnet  # noqa: E402
from nsnet import Engine  # noqa: E402
from nsnet.errors import NsnetError  # noqa: E402
from nsnet.store import state_dir  # noqa: E402

from harness import host, refuse_outside_lab, save_json

# The generic helpers (bounded processes, listening checks, the wan and direct namespaces, cleanup
# checks) are ports.py's, so that both benchmarks build the same topology the same way.
from ports import (  # noqa: E402
    DIRECT_A, DIRECT_B, DIRECT_B_IP, WAN_HOST, WAN_NS, WAN_PEER, finish, flush_conntrack, host_sysctl,
    in_netns, iperf_gbit, leftovers, make_direct_pair, make_wan, netns_sysctl, run, started, stop,
    wait_listening, wait_settled,
)

LAB_COMMAND = ".venv/bin/nsnet lab -- .venv/bin/python benchmarks/dataplane.py"

NETWORK, SUBNET, SUBNET6 = "app", "10.31.0.0/24", "fd00:31::/64"
WAN6_HOST, WAN6_PEER = "2001:db8:100::1", "2001:db8:100::2"
WEB, PEER = "web", "peer"
IPERF_PORT, PING_PORT, CONN_PORT = 5201, 7001, 7002
# Host port -> web's port, for the dnat path.
PUBLISH = {IPERF_PORT: 8080, PING_PORT: 8081, CONN_PORT: 8082}
BRIDGE_NF = "net.bridge.bridge-nf-call-iptables"
# A measure -> the prefix of its ratios' keys in the summary.
MEASURES = {"gbit_s": "gbit", "rtt_p50_us": "rtt", "conn_s": "conn"}
# Each nsnet path next to its reference, so that both see the same noise of the machine.
PATHS = ("direct", "bridge", "ref-bridge", "nat", "ref-nat", "dnat", "dnat6", "ref-dnat")
REFERENCE = {"bridge": "ref-bridge", "nat": "ref-nat", "dnat": "ref-dnat"}
CONN_CLIENTS = 2
# The ping-pong's client and server both run on this CPU (a veth delivers on the sending CPU, so the
# whole round trip stays there): unpinned, the p50 of the same path moved between ~14 and ~55 us
# from one run to the next, with the wake-ups landing on one CPU or the other.
PING_CPU = "0"

# The reference paths' namespaces, ref-host playing the host (see the module's docstring).
REF_HOST, REF_A, REF_B, REF_WAN = "ref-host", "ref-a", "ref-b", "ref-wan"
REF_NAMESPACES = (REF_HOST, REF_A, REF_B, REF_WAN)
REF_BRIDGE, REF_GATEWAY, REF_SUBNET = "rbr", "172.30.1.1", "172.30.1.0/24"
REF_A_IP, REF_B_IP = "172.30.1.2", "172.30.1.3"
REF_WAN_IF, REF_WAN_HOST, REF_WAN_PEER = "rwan", "172.30.2.1", "172.30.2.2"
# Bridge member -> (its veth's end in ref-host, its address).
REF_MEMBERS = {REF_A: ("rveth-a", REF_A_IP), REF_B: ("rveth-b", REF_B_IP)}
REF_TABLE = "ref"

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
port, mode, lifetime, six = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "6"
signal.alarm(lifetime)
s = socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("::" if six else "0.0.0.0", port))
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
    c = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
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

    @property
    def family(self) -> str:
        return "6" if ":" in self.target else "4"


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
        "dnat6": Path("dnat6", WAN_NS, netns_name(web), WAN6_HOST, True),
        "ref-bridge": Path("ref-bridge", REF_A, REF_B, REF_B_IP, False),
        "ref-nat": Path("ref-nat", REF_B, REF_WAN, REF_WAN_PEER, False),
        "ref-dnat": Path("ref-dnat", REF_WAN, REF_B, REF_WAN_HOST, True),
    }


# The reference paths

def make_ref_namespace(ns: str) -> None:
    """A namespace without IPv6, set before any link exists: no DAD or router solicitations."""
    run("ip", "netns", "add", ns)
    run(*in_netns(ns, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]))
    run("ip", "-n", ns, "link", "set", "lo", "up")


def veth_to_ref_host(ns: str, host_end: str, ip: str) -> None:
    """A veth from ref-host (host_end, down, for the caller to finish) to ns (eth0 with ip, up)."""
    run("ip", "-n", REF_HOST, "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
    run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
    run("ip", "-n", ns, "link", "set", "eth0", "up")


def reference_ruleset() -> str:
    """Docker's minimum: one DNAT rule per published port, one masquerade, no filtering."""
    dnat = [f'    iifname "{REF_WAN_IF}" tcp dport {host_port} dnat to {REF_B_IP}:{port}'
            for port, host_port in PUBLISH.items()]
    return "\n".join([
        f"table ip {REF_TABLE} {{",
        "  chain prerouting {", "    type nat hook prerouting priority -100; policy accept;", *dnat, "  }",
        "  chain postrouting {", "    type nat hook postrouting priority 100; policy accept;",
        f'    ip saddr {REF_SUBNET} oifname "{REF_WAN_IF}" masquerade', "  }",
        "}", "",
    ])


def make_reference(directory: str) -> None:
    for ns in REF_NAMESPACES:
        make_ref_namespace(ns)
    run(*in_netns(REF_HOST, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]))
    run("ip", "-n", REF_HOST, "link", "add", REF_BRIDGE, "type", "bridge")
    run("ip", "-n", REF_HOST, "addr", "add", f"{REF_GATEWAY}/24", "dev", REF_BRIDGE)
    run("ip", "-n", REF_HOST, "link", "set", REF_BRIDGE, "up")
    for ns, (host_end, ip) in REF_MEMBERS.items():
        veth_to_ref_host(ns, host_end, ip)
        run("ip", "-n", REF_HOST, "link", "set", host_end, "master", REF_BRIDGE, "up")
        run("ip", "-n", ns, "route", "add", "default", "via", REF_GATEWAY)
    veth_to_ref_host(REF_WAN, REF_WAN_IF, REF_WAN_PEER)
    run("ip", "-n", REF_HOST, "addr", "add", f"{REF_WAN_HOST}/24", "dev", REF_WAN_IF)
    run("ip", "-n", REF_HOST, "link", "set", REF_WAN_IF, "up")
    path = os.path.join(directory, "reference.nft")
    with open(path, "w") as handle:
        handle.write(reference_ruleset())
    run(*in_netns(REF_HOST, ["nft", "-f", path]))


def remove_reference() -> None:
    """Deleting the namespaces deletes their links (and ref-host's ruleset) with them."""
    for ns in REF_NAMESPACES:
        run("ip", "netns", "del", ns, check=False)


# Measurements

def popen(ns: str, program: str, *args: object, cpu: str | None = None, **kwargs: Any) -> subprocess.Popen:
    pin = ["taskset", "-c", cpu] if cpu is not None else []
    return subprocess.Popen(in_netns(ns, [*pin, sys.executable, "-c", program, *map(str, args)]), **kwargs)


def in_namespace(ns: str, argv: list[str], **kwargs: Any) -> subprocess.Popen:
    return subprocess.Popen(in_netns(ns, argv), **kwargs)


def measure_iperf(path: Path, seconds: int) -> float:
    """Gbit/s of one TCP stream, received side."""
    return iperf_gbit(in_namespace, path.server_ns, path.client_ns, path.target, IPERF_PORT, path.port(IPERF_PORT),
                      seconds, path.name)


def measure_ping(path: Path, count: int) -> float:
    """p50 of count TCP round trips of one byte, in microseconds."""
    server = popen(path.server_ns, SERVER, PING_PORT, "echo", 120, path.family, cpu=PING_CPU, stdout=subprocess.DEVNULL)
    with started(server):
        wait_listening(server.pid, PING_PORT)
        client = popen(path.client_ns, PING_CLIENT, path.target, path.port(PING_PORT), count, 60, cpu=PING_CPU,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return finish(client, 90)["p50_us"]


def measure_conn(path: Path, seconds: float) -> dict[str, float]:
    """New connections per second, all clients together, and the failed attempts."""
    servers = [popen(path.server_ns, SERVER, CONN_PORT, "accept", 120, path.family, stdout=subprocess.DEVNULL)
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


def flush_all_conntrack() -> None:
    """The lab host's table and ref-host's (each network namespace has its own)."""
    flush_conntrack()
    if shutil.which("conntrack"):
        run(*in_netns(REF_HOST, ["conntrack", "-F"]), check=False)


def measure(path: Path, s: Settings) -> dict[str, float]:
    flush_all_conntrack()
    gbit = measure_iperf(path, s.iperf_seconds)
    flush_all_conntrack()
    rtt = measure_ping(path, s.pings)
    flush_all_conntrack()
    conn = measure_conn(path, s.conn_seconds)
    return {"gbit_s": gbit, "rtt_p50_us": rtt, **conn}


def set_bridge_nf(value: str) -> None:
    run("sysctl", "-qw", f"{BRIDGE_NF}={value}")


def set_bridge_nf_everywhere(value: str) -> None:
    """The lab host's and ref-host's alike: the sysctl is per network namespace."""
    set_bridge_nf(value)
    if netns_sysctl(REF_HOST, BRIDGE_NF, value) != value:
        raise RuntimeError(f"{BRIDGE_NF} in {REF_HOST} did not take the value {value}")


def widen_port_range(namespaces: Sequence[str]) -> None:
    """Clients open ~tens of thousands of connections per run: give them the widest ephemeral range."""
    for ns in namespaces:
        run(*in_netns(ns, ["sysctl", "-qw", "net.ipv4.ip_local_port_range=10000 65000"]))


def run_all(engine: Engine, s: Settings, nf_settings: list[str]) -> dict[str, dict[str, list[dict[str, float]]]]:
    """samples[setting][path] = one dict per round; rounds interleave settings, and the paths in PATHS' order."""
    paths = make_paths(engine)
    widen_port_range({p.client_ns for p in paths.values()})
    samples: dict[str, dict[str, list[dict[str, float]]]] = {v: {p: [] for p in PATHS} for v in nf_settings}
    for round_ in range(s.rounds):
        for value in nf_settings:
            if value != "absent":  # without br_netfilter there is nothing to toggle
                set_bridge_nf_everywhere(value)
            for name in PATHS:
                print(f"round {round_ + 1}/{s.rounds}, {BRIDGE_NF}={value}, {name} ...", flush=True)
                samples[value][name].append(measure(paths[name], s))
    return samples


def ratios(medians: dict[str, float], base: dict[str, float], suffix: str) -> dict[str, float]:
    return {f"{short}_{suffix}": medians[key] / base[key] for key, short in MEASURES.items()}


def summarize(samples: dict[str, dict[str, list[dict[str, float]]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Medians per path, their ratios to direct (<measure>_ratio) and, for an nsnet path, to its
    reference (<measure>_vs_ref)."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for value, by_path in samples.items():
        medians = {p: {k: statistics.median(r[k] for r in rounds) for k in MEASURES}
                   for p, rounds in by_path.items()}
        summary[value] = {}
        for p, m in medians.items():
            summary[value][p] = {**m, "errors": sum(r["errors"] for r in by_path[p]),
                                 **ratios(m, medians["direct"], "ratio")}
            if p in REFERENCE:
                summary[value][p].update(ratios(m, medians[REFERENCE[p]], "vs_ref"))
    return summary


def verdicts(summary: dict[str, dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    out = []
    for value, by_path in summary.items():
        for p, targets in TARGETS.items():
            for measure_, minimum in targets.items():
                short = MEASURES[measure_]
                ratio = by_path[p][f"{short}_ratio"]
                out.append({"bridge_nf_call_iptables": value, "path": p, "measure": measure_,
                            "ratio": ratio, "target": minimum, "met": ratio >= minimum,
                            "reference": REFERENCE[p], "reference_ratio": by_path[REFERENCE[p]][f"{short}_ratio"],
                            "vs_reference": by_path[p][f"{short}_vs_ref"]})
    return out


def vs_ref_cell(m: dict[str, float], short: str) -> str:
    key = f"{short}_vs_ref"
    return f"{m[key]:.2f}" if key in m else "-"


def print_table(summary: dict[str, dict[str, dict[str, float]]], rounds: int) -> None:
    header = ("bridge-nf", "path", "Gbit/s", "x direct", "x ref", "RTT p50 us", "x direct", "x ref",
              "conn/s", "x direct", "x ref", "conn errors")
    rows = [header]
    for value, by_path in summary.items():
        for p in PATHS:
            m = by_path[p]
            rows.append((value, p, f"{m['gbit_s']:.2f}", f"{m['gbit_ratio']:.2f}", vs_ref_cell(m, "gbit"),
                         f"{m['rtt_p50_us']:.1f}", f"{m['rtt_ratio']:.2f}", vs_ref_cell(m, "rtt"),
                         f"{m['conn_s']:,.0f}", f"{m['conn_ratio']:.2f}", vs_ref_cell(m, "conn"), f"{m['errors']:.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    print(f"medians of {rounds} round(s), ratios within the same setting: x direct = over the direct veth pair; "
          "x ref = an nsnet path over its reference")
    print(f"ref-*: the same path built by hand in {REF_HOST} with a Docker-like minimal ruleset and no nsnet rules; "
          "its x direct is this kernel's floor for the path")
    for row in rows:
        print("  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))


def print_ipv6(summary: dict[str, dict[str, dict[str, float]]]) -> None:
    """The IPv6 published-port path over the IPv4 one, measured in the same rounds."""
    for value, by_path in summary.items():
        six, four = by_path["dnat6"], by_path["dnat"]
        print(f"dnat6 / dnat ({BRIDGE_NF}={value}): throughput {six['gbit_s'] / four['gbit_s']:.2f}x, "
              f"RTT {six['rtt_p50_us'] / four['rtt_p50_us']:.2f}x, new connections {six['conn_s'] / four['conn_s']:.2f}x")


def print_targets(results: list[dict[str, Any]]) -> None:
    print("\ntargets (issue 5: bridge >= 0.95 of direct throughput and >= 0.90 of its connection rate; "
          "NAT and DNAT >= 0.93 and >= 0.70):")
    for r in results:
        print(f"  {BRIDGE_NF}={r['bridge_nf_call_iptables']}: {r['path']:<6} {r['measure']:<7} "
              f"{r['ratio']:.3f} >= {r['target']:.2f}: {'met' if r['met'] else 'MISSED'} "
              f"(reference, no nsnet rules: {r['reference_ratio']:.3f} of direct; "
              f"nsnet/reference {r['vs_reference']:.3f})")


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
    remove_reference()
    shutil.rmtree(directory, ignore_errors=True)
    wait_settled()
    remaining = leftovers()
    if errors or remaining:
        raise RuntimeError(f"cleanup: errors {errors}, left behind {remaining[:10]}")


# Where the CPU goes (--perf)

# Kernel symbol -> the part of the path it belongs to; the first pattern that matches wins.
PERF_AREAS = (
    ("idle", r"safe_halt|cpuidle|do_idle|default_idle|poll_idle"),
    ("nft rules", r"^(nft_|__nft_|nf_tables_|pipapo)"),
    ("conntrack+nat", r"^(nf_ct_|__nf_ct_|nf_conntrack|__nf_conntrack|nf_confirm|nf_nat|__nf_nat|ipv4_conntrack)"),
    ("br_netfilter", r"^(br_nf_|brnf_|br_validate|setup_pre_routing|nf_bridge)"),
    ("netfilter hooks", r"^(nf_hook|nf_)"),
    ("bridge", r"^(br_|__br_|nbp_)"),
    ("veth", r"^veth_"),
    ("routing", r"^(fib_|fib4_|ip_route|__ip_route|rt_|dst_|ip_forward)"),
    ("copy to/from user", r"copy_(to|from)_iter|_copy_(to|from)_user"),
    ("irq/softirq entry (VM timer sampling lands here)", r"_raw_spin_unlock_irq|^handle_softirqs|^__do_softirq"),
)
PERF_WARMUP_S, PERF_RECORD_S = 1.0, 2.0


def perf_areas(data: str) -> dict[str, float]:
    """Share of the recorded samples per area, in % of all samples (user space counts as "user")."""
    report = run("perf", "report", "-i", data, "--no-children", "--sort", "sym", "--stdio", "-g", "none",
                 timeout=300)
    shares: dict[str, float] = {}
    for line in report.splitlines():
        match = re.match(r"\s+([\d.]+)%\s+\[(.)\]\s+(\S+)", line)
        if not match:
            continue
        share, space, symbol = float(match[1]), match[2], match[3]
        area = "user" if space == "." else next((a for a, pattern in PERF_AREAS if re.search(pattern, symbol)),
                                                 "rest of the kernel (TCP/IP, sockets, scheduler)")
        shares[area] = shares.get(area, 0.0) + share
    return shares


def profile(path: Path, workload: str, directory: str) -> dict[str, float]:
    """perf record -a for PERF_RECORD_S seconds in the middle of the workload on this path."""
    data = os.path.join(directory, f"{path.name}-{workload}.perf")
    seconds = PERF_WARMUP_S + PERF_RECORD_S + 1.0
    result: list[Any] = []

    def load() -> None:
        result.append(measure_iperf(path, int(seconds)) if workload == "stream" else measure_conn(path, seconds))

    thread = threading.Thread(target=load)
    flush_all_conntrack()
    thread.start()
    time.sleep(PERF_WARMUP_S)
    run("perf", "record", "-a", "-q", "-o", data, "--", "sleep", str(PERF_RECORD_S), timeout=60)
    thread.join(timeout=seconds + 60)
    if not result:
        raise RuntimeError(f"the {workload} workload on {path.name} did not finish")
    return perf_areas(data)


def run_perf(engine: Engine, nf_settings: list[str], directory: str) -> dict[str, dict[str, dict[str, float]]]:
    """areas[setting/workload][path] = % of all samples per area."""
    paths = make_paths(engine)
    widen_port_range({p.client_ns for p in paths.values()})
    areas: dict[str, dict[str, dict[str, float]]] = {}
    for value in nf_settings:
        if value != "absent":
            set_bridge_nf_everywhere(value)
        for workload in ("stream", "connections"):
            for name in PATHS:
                print(f"perf: {BRIDGE_NF}={value}, {workload}, {name} ...", flush=True)
                areas.setdefault(f"{value}/{workload}", {})[name] = profile(paths[name], workload, directory)
    return areas


def print_perf(areas: dict[str, dict[str, dict[str, float]]]) -> None:
    names = ["user", *(a for a, _ in PERF_AREAS), "rest of the kernel (TCP/IP, sockets, scheduler)"]
    print(f"perf record -a, {PERF_RECORD_S:.0f} s in the middle of each workload: % of all samples on both CPUs "
          "(idle included)")
    for key, by_path in areas.items():
        value, workload = key.split("/")
        print(f"\n{BRIDGE_NF}={value}, {workload} (iperf3 stream or {CONN_CLIENTS} connecting clients):")
        print(f"  {'area':<50}" + "".join(f"{p:>11}" for p in PATHS))
        for area in names:
            if any(by_path[p].get(area, 0.0) >= 0.05 for p in PATHS):
                print(f"  {area:<50}" + "".join(f"{by_path[p].get(area, 0.0):>10.1f}%" for p in PATHS))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=f"run it as: {LAB_COMMAND}")
    parser.add_argument("--quick", action="store_true",
                        help="1 round, 1 s iperf3, 500 pings, 1 s connection rate (for debugging)")
    parser.add_argument("--rounds", type=int, help="rounds of every path (default 3; --quick 1)")
    parser.add_argument("--json", metavar="PATH", help="write every sample and the summaries as JSON")
    parser.add_argument("--perf", action="store_true",
                        help="instead of measuring, profile each path with perf (Debian: linux-perf) and print "
                             "where the CPU goes: nft rules, conntrack, br_netfilter, bridge, veth, routing, ... "
                             "(with --quick: only the lab's bridge-nf-call-iptables setting)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    refuse_outside_lab()
    if args.perf and shutil.which("perf") is None:
        sys.stderr.write("dataplane.py --perf needs perf (Debian: apt-get install linux-perf)\n")
        return 2
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
        for argv in (["sysctl", "-qw", "net.ipv6.conf.wan0.accept_dad=0"],
                     [*in_netns(WAN_NS, ["sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"])],
                     ["ip", "addr", "add", f"{WAN6_HOST}/64", "dev", "wan0", "nodad"],
                     ["ip", "-n", WAN_NS, "addr", "add", f"{WAN6_PEER}/64", "dev", "eth0", "nodad"]):
            run(*argv)
        make_direct_pair()
        make_reference(directory)
        with Engine(state_dir=directory) as engine:
            engine.create_network(NETWORK, subnet=[SUBNET, SUBNET6])
            original_nf = host_sysctl(BRIDGE_NF)  # br_netfilter may be loaded by the network's creation
            nf_settings = [original_nf] if original_nf is not None else []
            if original_nf != "0":
                nf_settings.append("0")
            if original_nf is None:
                print(f"{BRIDGE_NF} does not exist here (br_netfilter not loaded): one setting only")
                nf_settings = ["absent"]
            engine.create_sandbox(WEB, networks=[NETWORK], publish=[f"{h}:{p}" for p, h in PUBLISH.items()])
            engine.create_sandbox(PEER, networks=[NETWORK])
            print(f"{BRIDGE_NF} in the lab: {original_nf}; measuring with: {', '.join(nf_settings)} "
                  f"(set alike in {REF_HOST})", flush=True)
            if args.perf:
                areas = run_perf(engine, nf_settings[:1] if args.quick else nf_settings, directory)
            else:
                samples = run_all(engine, settings, nf_settings)
    finally:
        cleanup(directory, original_nf)
    if args.perf:
        print()
        print_perf(areas)
        if args.json:
            save_json(args.json, {"benchmark": "nsnet data plane profile", "paths": list(PATHS),
                                   "started": started_at, "perf_record_s": PERF_RECORD_S, "areas": areas})
        return 0
    summary = summarize(samples)
    results = verdicts(summary)
    print()
    print_table(summary, settings.rounds)
    print_ipv6(summary)
    print_targets(results)
    if args.json:
        document = {
            "benchmark": "nsnet data plane",
            "paths": list(PATHS),
            "nsnet": {"version": nsnet.__version__, "path": os.path.dirname(nsnet.__file__)},
            "host": host(),
            "settings": asdict(settings),
            "bridge_nf_call_iptables": {"lab": original_nf, "measured": list(samples)},
            "started": started_at,
            "samples": samples,
            "summary": summary,
            "targets": results,
        }
        save_json(args.json, document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
