"""Data-plane benchmark: what published ports cost a new connection, and how that grows with their number.

Run it from the repository root, inside a throwaway isolated host (it refuses to run anywhere else):

    .venv/bin/nsnet lab -- .venv/bin/python benchmarks/ports.py
    .venv/bin/nsnet lab -- .venv/bin/python benchmarks/ports.py --quick

The topology: one network `app` (10.31.0.0/24), one sandbox `web` at 10.31.0.2, and another
machine, namespace `wan` at 198.51.100.2, linked to the lab host's wan0 at 198.51.100.1 (as the
integration tests' `wan` fixture). For each P (default 10, 1,000 and 10,000), `web` publishes host
ports 10000..10000+P-1 to the same sandbox ports, and a server in `web` listens only on the LAST
one, so a lookup that scans the ports one by one pays for all of them. Clients in `wan` connect to
198.51.100.1:<last port>. Per P, in 4 sweeps over the values of P (increasing, decreasing, ...):

- maps (nsnet): the P ports are elements of nsnet's nft maps;
  - latency: 2,000 sequential TCP connections after a warm-up of 200; each one connects, receives
    one byte, closes (RST, SO_LINGER 0, so no TIME_WAIT piles up); the client process times each
    connection itself (perf_counter_ns; process startup excluded); p50 and p95 of all sweeps;
  - rate: two client processes in parallel (the VM has 2 cores), each connecting, waiting for the
    server's close and resetting, until 20,000 connections in all or 3 s; the total connections
    per second, median of the sweeps;
  - publish one more: create and remove a sandbox `extra` on `app` with `-p 9000:80`, and without,
    alternately; medians of the create times, their difference (what publishing costs) and the
    nftables transaction of the create with the port (libnftables call timed in process);
- linear (Docker's shape, for comparison): `web` publishes nothing through nsnet; a table
  `inet bench_linear` of this benchmark's own holds one `tcp dport HP dnat ip to 10.31.0.2:SP` rule
  per port in a nat prerouting chain at priority -110 (before nsnet's at -100), loaded with one
  `nft -f`; the same latency and rate.

Every connection stays on one CPU (see LATENCY_CPU below for why and how).

Then the throughput of one TCP stream (iperf3, -t 5) on four paths, interleaved A B C D five
times in the same run: DNAT (wan -> 198.51.100.1:<published port> -> web), a direct veth pair between
two fresh namespaces (the limit), the bridge path (a sandbox to `web` on the same network), and
kernel-dnat, a reference: wan -> one plain DNAT rule of the benchmark's own -> a veth to a namespace,
no bridge and no map (what the kernel's routed DNAT hop costs by itself on this machine).

Conntrack is flushed before each measurement, and each removal of `web` is awaited until the
kernel has destroyed its veth (see wait_settled). Every process the benchmark starts is bounded (an
alarm inside it and a timeout outside) and killed by its own PID if it outlives its work; every
sandbox, the network, the benchmark's tables and namespaces are removed afterwards and checked gone.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import nsnet
from nsnet import Engine
from nsnet.errors import NsnetError
from nsnet.naming import VETH_PREFIX
from nsnet.store import state_dir

from harness import leftovers as harness_leftovers
from harness import host, nsnet_links, percentile, refuse_outside_lab, save_json

LAB_COMMAND = ".venv/bin/nsnet lab -- .venv/bin/python benchmarks/ports.py"

NETWORK = "app"
SUBNET = "10.31.0.0/24"
WEB = "web"
WEB_IP = "10.31.0.2"  # fixed, so the linear rules can name it and every phase has the same target
FIRST_PORT = 10000
DEFAULT_PORTS = "10,1000,10000"

WAN_NS, WAN_HOST, WAN_PEER = "wan", "198.51.100.1", "198.51.100.2"
DIRECT_A, DIRECT_B = "bench-a", "bench-b"  # the direct veth pair, the throughput limit
DIRECT_A_IP, DIRECT_B_IP = "192.0.2.1", "192.0.2.2"
PEER = "peer"  # a sandbox on `app`, the client of the bridge path
IPERF_PORT_DIRECT = 5201
ROUTED_NS, ROUTED_HOST_IF = "bench-r", "brt0"  # the kernel-dnat reference path
ROUTED_GATEWAY, ROUTED_IP, ROUTED_PORT = "10.99.0.1", "10.99.0.2", 7000
ROUTED_TABLE = "bench_routed"

LINEAR_TABLE = "bench_linear"
LINEAR_PRIORITY = -110  # before nsnet's dstnat chains (-100): the first nat binding wins
EXTRA = "extra"
EXTRA_PUBLISH = "9000:80"

# Anchors and targets from /work/shared/DESIGN.md ("Measured anchors", this VM) and the issue.
ANCHOR_MAP_US = {10: 16.0, 1000: 15.9, 10000: 16.4}  # nft map lookup, new connection
ANCHOR_LINEAR_US = {10: 17.0, 1000: 52.7, 10000: 385.0}  # one DNAT rule per port
TARGET_FLAT = 0.05  # connect latency and rate at the largest P within 5 % of the smallest
TARGET_PUBLISH_GROWTH = 1.2  # "publish time flat", read here as: at most 1.2x (attach.py's growth target)
TARGET_DNAT_VS_DIRECT = 0.93  # DNAT path throughput over direct veth throughput


@dataclass(frozen=True)
class Settings:
    sweeps: int  # passes over every P, alternately in increasing and decreasing order
    latency_warmup: int
    latency_count: int  # per P, mode and sweep
    rate_warmup: int  # per client
    rate_seconds: float  # a rate run ends after this or after rate_count connections
    rate_count: int  # both clients together
    publish_rounds: int  # per P and sweep, each with and without a port
    iperf_seconds: int
    iperf_rounds: int


DEFAULT = Settings(sweeps=4, latency_warmup=200, latency_count=2000, rate_warmup=200, rate_seconds=3.0,
                   rate_count=20000, publish_rounds=5, iperf_seconds=5, iperf_rounds=5)
QUICK = Settings(sweeps=1, latency_warmup=50, latency_count=300, rate_warmup=50, rate_seconds=1.0, rate_count=5000,
                 publish_rounds=5, iperf_seconds=1, iperf_rounds=1)

# CPUs. Every connection stays on one CPU: its client, the softirq work of its packets (a veth
# delivers on the sending CPU), and the server that accepts it. Across CPUs, the wake-ups made the
# latency p50 jump between ~64, ~80 and ~95 us from run to run on this VM, and the rate between
# ~17,000 and ~25,000/s; on one CPU the p50 stayed within 2 us. Latency: one client and one server,
# both on LATENCY_CPU. Rate: one client and one server per CPU, the servers sharing the port
# (SO_REUSEPORT) with SO_INCOMING_CPU, so that the kernel hands each connection to the server on
# the CPU it arrived on: ~35,000/s within +-4 %.
LATENCY_CPU = "0"

RATE_CLIENTS = 2
READY_TIMEOUT_S = 10.0
LISTEN_TIMEOUT_S = 10.0


# Programs run in the namespaces. Each bounds itself with an alarm; the benchmark kills it by PID
# if it is still there when its work is done.

SERVER = r"""
import os, signal, socket, sys
port, mode, lifetime, cpu = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
signal.alarm(lifetime)
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # one server per CPU for the rate
if cpu != "-":
    os.sched_setaffinity(0, {int(cpu)})
    # Of the servers sharing the port, the kernel then picks the one on the CPU the SYN arrives on.
    server.setsockopt(socket.SOL_SOCKET, 49, int(cpu))  # SO_INCOMING_CPU
server.bind(("0.0.0.0", port))
server.listen(4096)
print("ready", flush=True)
accept, close, write = server._accept, os.close, os.write  # raw fds: no socket objects in the loop
if mode == "greet":
    while True:
        fd, _ = accept()
        try:
            write(fd, b"x")
        except OSError:
            pass
        close(fd)
else:
    while True:
        fd, _ = accept()
        close(fd)
"""

CLIENT = r"""
import json, os, signal, socket, struct, sys, time
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
warmup, count, seconds, cpu = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), sys.argv[7]
if cpu != "-":
    os.sched_setaffinity(0, {int(cpu)})
signal.alarm(int(seconds) + 30)  # a stuck connect ends the process
address = (host, port)
LINGER0 = struct.pack("ii", 1, 0)  # close sends RST: no TIME_WAIT, ephemeral ports never run out
AF_INET, SOCK_STREAM, SOL_SOCKET, SO_LINGER = socket.AF_INET, socket.SOCK_STREAM, socket.SOL_SOCKET, socket.SO_LINGER
new_socket, clock = socket.socket, time.perf_counter_ns
errors, failed = [], [0]  # the first error messages, and how many failed

def once():
    s = new_socket(AF_INET, SOCK_STREAM)
    s.setsockopt(SOL_SOCKET, SO_LINGER, LINGER0)
    t0 = clock()
    try:
        s.connect(address)
        try:
            s.recv(1)
        except ConnectionResetError:
            pass
    except OSError as exc:
        s.close()
        failed[0] += 1
        if len(errors) < 5:
            errors.append(f"{type(exc).__name__}: {exc}")
        return None
    s.close()
    return clock() - t0

for _ in range(warmup):
    once()
report = {"warmup_failed": failed[0], "warmup_errors": errors[:]}
failed[0], errors[:] = 0, []
if mode == "latency":
    samples, deadline = [], time.monotonic() + seconds
    while len(samples) < count and time.monotonic() < deadline:
        ns = once()
        if ns is not None:
            samples.append(ns)
    report["samples_ns"] = samples
else:
    print("ready", flush=True)
    sys.stdin.readline()
    done = 0
    start = time.monotonic()
    deadline = start + seconds
    while done + failed[0] < count and time.monotonic() < deadline:
        if once() is not None:
            done += 1
    report.update(connections=done, start=start, end=time.monotonic())
report.update(failed=failed[0], errors=errors)
print(json.dumps(report))
"""


# Processes and namespaces

def run(*argv: str, timeout: float = 60.0, check: bool = True) -> str:
    result = subprocess.run(list(argv), check=False, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}: exit {result.returncode}: {result.stderr.strip()[:500]}")
    return result.stdout


def in_netns(ns: str, argv: Sequence[str]) -> list[str]:
    """argv run in a namespace of the benchmark's own (`ip netns exec` execs it: same PID)."""
    return ["ip", "netns", "exec", ns, *argv]


def stop(process: subprocess.Popen, grace_s: float = 5.0) -> None:
    """End a process this benchmark started, by its own PID."""
    if process.poll() is None:
        process.kill()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"process {process.pid} did not exit after SIGKILL") from None


@contextmanager
def started(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    try:
        yield process
    finally:
        stop(process)


def read_line(process: subprocess.Popen, timeout_s: float) -> str:
    """One line of the process's stdout, or an error after timeout_s (never blocks longer)."""
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    if not ready:
        raise RuntimeError(f"process {process.pid} wrote nothing in {timeout_s:.0f} s")
    return process.stdout.readline().strip()


def wait_listening(pid: int, port: int, timeout_s: float = LISTEN_TIMEOUT_S) -> None:
    """Until process pid's namespace has a TCP socket listening on port (read from /proc/PID/net)."""
    wanted = f":{port:04X}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name in ("tcp", "tcp6"):
            try:
                with open(f"/proc/{pid}/net/{name}") as handle:
                    for line in handle.readlines()[1:]:
                        fields = line.split()
                        if fields[1].endswith(wanted) and fields[3] == "0A":
                            return
            except FileNotFoundError:
                pass
        time.sleep(0.01)
    raise RuntimeError(f"nothing listens on port {port} in process {pid}'s namespace after {timeout_s:.0f} s")


def flush_conntrack() -> None:
    """The lab host's connection tracking table, emptied so that every phase starts alike."""
    if shutil.which("conntrack"):
        run("conntrack", "-F", check=False)


def make_wan() -> None:
    run("ip", "netns", "add", WAN_NS)
    run("ip", "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", WAN_NS)
    run("ip", "addr", "add", f"{WAN_HOST}/24", "dev", "wan0")
    run("ip", "link", "set", "wan0", "up")
    run("ip", "-n", WAN_NS, "addr", "add", f"{WAN_PEER}/24", "dev", "eth0")
    run("ip", "-n", WAN_NS, "link", "set", "eth0", "up")
    run("ip", "-n", WAN_NS, "link", "set", "lo", "up")


def make_direct_pair() -> None:
    for ns in (DIRECT_A, DIRECT_B):
        run("ip", "netns", "add", ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")
    run("ip", "-n", DIRECT_A, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", DIRECT_B)
    for ns, ip in ((DIRECT_A, DIRECT_A_IP), (DIRECT_B, DIRECT_B_IP)):
        run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")


def remove_own_namespaces() -> None:
    run("ip", "link", "del", "wan0", check=False)
    remove_routed_path()
    for ns in (WAN_NS, DIRECT_A, DIRECT_B):
        run("ip", "netns", "del", ns, check=False)


def netns_sysctl(ns: str, key: str, value: str | None = None) -> str:
    if value is not None:
        run(*in_netns(ns, ["sysctl", "-qw", f"{key}={value}"]))
    return run(*in_netns(ns, ["sysctl", "-n", key])).strip()


def host_sysctl(key: str) -> str | None:
    try:
        with open("/proc/sys/" + key.replace(".", "/")) as handle:
            return " ".join(handle.read().split())
    except FileNotFoundError:
        return None


# Measurements

def serve(engine: Engine, port: int, mode: str, cpu: str = "-", lifetime_s: int = 300) -> subprocess.Popen:
    process = engine.popen(WEB, [sys.executable, "-c", SERVER, str(port), mode, str(lifetime_s), cpu],
                           stdout=subprocess.PIPE, text=True)
    try:
        line = read_line(process, READY_TIMEOUT_S)
        if line != "ready":
            raise RuntimeError(f"server in {WEB} on port {port}: {line!r}")
    except BaseException:
        stop(process)
        raise
    return process


def client(mode: str, port: int, warmup: int, count: int, seconds: float, cpu: str = "-") -> subprocess.Popen:
    argv = [sys.executable, "-c", CLIENT, WAN_HOST, str(port), mode, str(warmup), str(count), str(seconds), cpu]
    return subprocess.Popen(in_netns(WAN_NS, argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def output(process: subprocess.Popen, timeout_s: float, label: str) -> str:
    """What a process started here printed, once it has exited 0 (it is stopped either way); an
    error naming label, with the end of its output, otherwise."""
    with started(process):
        try:
            out, err = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{label} still running after {timeout_s:.0f} s") from None
    if process.returncode != 0:
        raise RuntimeError(f"{label}: exit {process.returncode}: {((out or '') + (err or '')).strip()[-300:]}")
    return out


def finish(process: subprocess.Popen, timeout_s: float) -> dict[str, Any]:
    """The JSON line a client prints."""
    return json.loads(output(process, timeout_s, f"client {process.pid}").strip().splitlines()[-1])


def measure_latency(engine: Engine, port: int, s: Settings) -> list[float]:
    """Microseconds per connection (connect, one byte, close), sequential, in one client process."""
    flush_conntrack()
    with started(serve(engine, port, "greet", LATENCY_CPU)):
        seconds = 30.0
        result = finish(client("latency", port, s.latency_warmup, s.latency_count, seconds, LATENCY_CPU),
                        seconds + 40)
    if result["failed"] or result["warmup_failed"] or len(result["samples_ns"]) < s.latency_count:
        raise RuntimeError(f"latency run to port {port}: {len(result['samples_ns'])} of {s.latency_count} "
                           f"connections, {result['failed']} failed {result['errors'][:3]}, "
                           f"{result['warmup_failed']} failed in the warm-up {result['warmup_errors'][:3]}")
    return [ns / 1000.0 for ns in result["samples_ns"]]


def measure_rate(engine: Engine, port: int, s: Settings) -> dict[str, Any]:
    """Connections per second of RATE_CLIENTS parallel clients, started together after a warm-up."""
    flush_conntrack()
    per_client = s.rate_count // RATE_CLIENTS
    cpus = [str(i % (os.cpu_count() or 1)) for i in range(RATE_CLIENTS)]
    servers: list[subprocess.Popen] = []
    try:
        for cpu in sorted(set(cpus)):
            servers.append(serve(engine, port, "close", cpu))
        clients = [client("rate", port, s.rate_warmup, per_client, s.rate_seconds, cpu) for cpu in cpus]
        try:
            for process in clients:
                line = read_line(process, READY_TIMEOUT_S + 30)
                if line != "ready":
                    raise RuntimeError(f"rate client {process.pid}: {line!r}")
            for process in clients:
                process.stdin.write("go\n")
                process.stdin.flush()
            results = [finish(process, s.rate_seconds + 40) for process in clients]
        finally:
            for process in clients:
                stop(process)
    finally:
        for process in servers:
            stop(process)
    failed = sum(r["failed"] + r["warmup_failed"] for r in results)
    if failed:
        raise RuntimeError(f"rate run to port {port}: {failed} failed connections: "
                           f"{[e for r in results for e in r['errors'] + r['warmup_errors']][:3]}")
    total = sum(r["connections"] for r in results)
    window = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {"per_second": total / window, "connections": total, "seconds": window, "clients": results}


@contextmanager
def timed_nft(engine: Engine) -> Iterator[list[float]]:
    """Milliseconds of each libnftables transaction the engine makes (an instance attribute over
    LinuxKernel.nft; nsnet itself is not changed)."""
    kernel = engine.kernel
    original = kernel.nft
    calls: list[float] = []

    def nft(commands: list[dict[str, Any]]) -> None:
        start = time.perf_counter()
        try:
            original(commands)
        finally:
            calls.append((time.perf_counter() - start) * 1000.0)

    kernel.nft = nft  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        del kernel.nft


def measure_publish(engine: Engine, rounds: int) -> dict[str, list[float]]:
    """create_sandbox(extra) with one published port and without, alternately; ms each, and the ms of
    the create's nft transaction (its sandbox's elements, the port among them)."""
    samples: dict[str, list[float]] = {"with_port_ms": [], "without_port_ms": [], "nft_with_port_ms": [],
                                       "nft_without_port_ms": [], "remove_ms": []}
    for _ in range(rounds):
        for publish, key in (([EXTRA_PUBLISH], "with_port"), ([], "without_port")):
            with timed_nft(engine) as calls:
                start = time.perf_counter()
                engine.create_sandbox(EXTRA, networks=[NETWORK], publish=publish)
                samples[f"{key}_ms"].append((time.perf_counter() - start) * 1000.0)
            samples[f"nft_{key}_ms"].append(sum(calls))
            start = time.perf_counter()
            engine.remove_sandbox(EXTRA, force=True)
            samples["remove_ms"].append((time.perf_counter() - start) * 1000.0)
    return samples


def linear_ruleset(ports: int) -> str:
    """Docker's shape: one DNAT rule per published port, scanned in order."""
    lines = [f"table inet {LINEAR_TABLE} {{", "  chain prerouting {",
             f"    type nat hook prerouting priority {LINEAR_PRIORITY}; policy accept;"]
    lines += [f"    tcp dport {port} dnat ip to {WEB_IP}:{port}" for port in published_range(ports)]
    lines += ["  }", "}", ""]
    return "\n".join(lines)


def load_linear(ports: int, directory: str) -> float:
    path = os.path.join(directory, "linear.nft")
    with open(path, "w") as handle:
        handle.write(linear_ruleset(ports))
    start = time.perf_counter()
    run("nft", "-f", path, timeout=120)
    elapsed = (time.perf_counter() - start) * 1000.0
    listed = json.loads(run("nft", "-j", "list", "chain", "inet", LINEAR_TABLE, "prerouting", timeout=120))
    rules = sum(1 for item in listed["nftables"] if "rule" in item)
    if rules != ports:
        raise RuntimeError(f"linear table holds {rules} rules, expected {ports}")
    return elapsed


def delete_linear() -> None:
    run("nft", "delete", "table", "inet", LINEAR_TABLE, check=False)


def published_range(ports: int) -> range:
    return range(FIRST_PORT, FIRST_PORT + ports)


def publish_spec(ports: int) -> str:
    last = FIRST_PORT + ports - 1
    return f"{FIRST_PORT}-{last}:{FIRST_PORT}-{last}"


@dataclass
class PortsRun:
    """Every sample at one P, all sweeps pooled."""

    ports: int
    web_create_ms: list[float] = field(default_factory=list)
    web_remove_ms: list[float] = field(default_factory=list)
    web_settle_ms: list[float] = field(default_factory=list)
    map_latency_us: list[float] = field(default_factory=list)
    map_rates: list[dict[str, Any]] = field(default_factory=list)
    publish: dict[str, list[float]] = field(default_factory=dict)
    linear_load_ms: list[float] = field(default_factory=list)
    linear_latency_us: list[float] = field(default_factory=list)
    linear_rates: list[dict[str, Any]] = field(default_factory=list)


def timed_ms(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000.0


def run_ports(engine: Engine, result: PortsRun, s: Settings, directory: str, sweep: int) -> None:
    """One sweep's measurements at result.ports, added to result."""
    ports = result.ports
    last = FIRST_PORT + ports - 1

    print(f"  sweep {sweep}, P={ports:,}: maps ({WEB} publishes {ports:,} ports through nsnet) ...", flush=True)
    result.web_create_ms.append(timed_ms(lambda: engine.create_sandbox(WEB, networks=[NETWORK], ip=WEB_IP,
                                                                       publish=[publish_spec(ports)])))
    try:
        published = len(engine.ports(WEB))
        if published != ports:
            raise RuntimeError(f"{WEB} publishes {published} ports, expected {ports}")
        result.map_latency_us += measure_latency(engine, last, s)
        result.map_rates.append(measure_rate(engine, last, s))
        for key, values in measure_publish(engine, s.publish_rounds).items():
            result.publish.setdefault(key, []).extend(values)
    finally:
        result.web_remove_ms.append(timed_ms(lambda: engine.remove_sandbox(WEB, force=True)))
        result.web_settle_ms.append(wait_settled())

    print(f"  sweep {sweep}, P={ports:,}: linear ({ports:,} DNAT rules in inet {LINEAR_TABLE}) ...", flush=True)
    engine.create_sandbox(WEB, networks=[NETWORK], ip=WEB_IP)
    try:
        result.linear_load_ms.append(load_linear(ports, directory))
        result.linear_latency_us += measure_latency(engine, last, s)
        result.linear_rates.append(measure_rate(engine, last, s))
    finally:
        delete_linear()
        engine.remove_sandbox(WEB, force=True)
        wait_settled()


def sweep_order(ports: Sequence[int], sweep: int) -> list[int]:
    """Increasing, then decreasing, and so on: drift over time does not favour one end."""
    return list(ports) if sweep % 2 == 0 else list(reversed(ports))


# Throughput

@dataclass(frozen=True)
class Path:
    """One iperf3 path: where the server runs, where the client runs and what it connects to."""

    name: str
    what: str
    server_in: str  # a sandbox of nsnet's (entered through the Engine) or a namespace of the benchmark's
    client_in: str
    target: str
    port: int  # 0: the last published port
    sandboxes: tuple[str, ...] = ()  # which of server_in/client_in are nsnet sandboxes


THROUGHPUT_PATHS = (
    Path("dnat", "wan -> 198.51.100.1:<published port> -> nsnet DNAT -> bridge -> web",
         WEB, WAN_NS, WAN_HOST, 0, (WEB,)),
    Path("direct", "a veth pair between two fresh namespaces (the limit)",
         DIRECT_B, DIRECT_A, DIRECT_B_IP, IPERF_PORT_DIRECT),
    Path("bridge", f"sandbox {PEER} -> web on the same nsnet network",
         WEB, PEER, WEB_IP, 0, (WEB, PEER)),
    Path("kernel-dnat", ("wan -> 198.51.100.1:7000 -> one plain DNAT rule -> a veth to a namespace "
                         "(no bridge, no nsnet map; the kernel's own cost of the routed DNAT hop)"),
         ROUTED_NS, WAN_NS, WAN_HOST, ROUTED_PORT),
)


def popen_in(engine: Engine, place: str, sandboxes: tuple[str, ...], argv: list[str],
             **kwargs: Any) -> subprocess.Popen:
    if place in sandboxes:
        return engine.popen(place, argv, **kwargs)
    return subprocess.Popen(in_netns(place, argv), **kwargs)


def iperf_gbit(start: Callable[..., subprocess.Popen], server_at: str, client_at: str, target: str,
               listen_port: int, connect_port: int, seconds: int, label: str) -> float:
    """Gbit/s of one TCP stream (received side): an iperf3 server started at server_at listening on
    listen_port, a client at client_at sending to target:connect_port. start(place, argv, **popen
    keywords) starts a process in a place (a namespace, or a sandbox through the engine)."""
    lifetime = seconds + 30
    family = "-6" if ":" in target else "-4"
    server = start(server_at, ["iperf3", "-s", "-1", family, "-p", str(listen_port)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with started(server):
        wait_listening(server.pid, listen_port)
        client = start(client_at, ["iperf3", "-c", target, "-p", str(connect_port), "-t", str(seconds), "-J"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out = output(client, lifetime, f"iperf3 client on {label}")
        server.wait(timeout=10)
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def iperf_once(engine: Engine, path: Path, published_port: int, seconds: int) -> float:
    """Gbit/s of one TCP stream (received side) on one path."""
    port = path.port or published_port

    def start(place: str, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        return popen_in(engine, place, path.sandboxes, argv, **kwargs)

    return iperf_gbit(start, path.server_in, path.client_in, path.target, port, port, seconds,
                      f"the {path.name} path")


def make_routed_path(directory: str) -> None:
    """The kernel-dnat reference: a namespace behind a host veth, reached through one DNAT rule in a
    table of the benchmark's own (nsnet's forward chain still sees the traffic and lets it through)."""
    run("ip", "netns", "add", ROUTED_NS)
    run("ip", "link", "add", ROUTED_HOST_IF, "type", "veth", "peer", "name", "eth0", "netns", ROUTED_NS)
    run("ip", "addr", "add", f"{ROUTED_GATEWAY}/24", "dev", ROUTED_HOST_IF)
    run("ip", "link", "set", ROUTED_HOST_IF, "up")
    run("ip", "-n", ROUTED_NS, "link", "set", "lo", "up")
    run("ip", "-n", ROUTED_NS, "addr", "add", f"{ROUTED_IP}/24", "dev", "eth0")
    run("ip", "-n", ROUTED_NS, "link", "set", "eth0", "up")
    run("ip", "-n", ROUTED_NS, "route", "add", "default", "via", ROUTED_GATEWAY)
    path = os.path.join(directory, "routed.nft")
    with open(path, "w") as handle:
        handle.write(f"table ip {ROUTED_TABLE} {{\n  chain prerouting {{\n"
                     f"    type nat hook prerouting priority {LINEAR_PRIORITY}; policy accept;\n"
                     f"    iifname \"wan0\" tcp dport {ROUTED_PORT} dnat to {ROUTED_IP}:{ROUTED_PORT}\n  }}\n}}\n")
    run("nft", "-f", path)


def remove_routed_path() -> None:
    run("nft", "delete", "table", "ip", ROUTED_TABLE, check=False)
    run("ip", "link", "del", ROUTED_HOST_IF, check=False)
    run("ip", "netns", "del", ROUTED_NS, check=False)


def run_throughput(engine: Engine, s: Settings, ports: int, directory: str) -> dict[str, list[float]]:
    """Interleaved rounds (A B C D, A B C D, ...), so that drift in the VM hits every path alike."""
    published_port = FIRST_PORT + ports - 1
    samples: dict[str, list[float]] = {path.name: [] for path in THROUGHPUT_PATHS}
    print(f"  throughput: {WEB} publishing {ports} ports, iperf3 -t {s.iperf_seconds}, "
          f"{s.iperf_rounds} x {' '.join(samples)} ...", flush=True)
    engine.create_sandbox(WEB, networks=[NETWORK], ip=WEB_IP, publish=[publish_spec(ports)])
    try:
        engine.create_sandbox(PEER, networks=[NETWORK])
        make_direct_pair()
        make_routed_path(directory)
        for _ in range(s.iperf_rounds):
            for path in THROUGHPUT_PATHS:
                flush_conntrack()
                samples[path.name].append(iperf_once(engine, path, published_port, s.iperf_seconds))
    finally:
        engine.remove_sandbox(PEER, force=True)
        engine.remove_sandbox(WEB, force=True)
        remove_routed_path()
        for ns in (DIRECT_A, DIRECT_B):
            run("ip", "netns", "del", ns, check=False)
    return samples


# Cleanup and leftovers

def leftovers() -> list[str]:
    return harness_leftovers(("nsnet", LINEAR_TABLE, ROUTED_TABLE))


def wait_settled(timeout_s: float = 60.0) -> float:
    """Milliseconds until no sandbox veth is left. remove_sandbox returns before the kernel has
    destroyed the namespace, and until then the old sandbox's veth stays on the bridge and its
    namespace still answers on its address and MAC: a `web` re-created at once with the same address
    lost its first connections to the old one (ECONNREFUSED from its stack), so every removal
    of `web` is awaited."""
    start = time.monotonic()
    while any(name.startswith(VETH_PREFIX) for name in nsnet_links()):
        if time.monotonic() - start > timeout_s:
            raise RuntimeError(f"veths still there {timeout_s:.0f} s after cleanup: {nsnet_links()[:10]}")
        time.sleep(0.002)
    return (time.monotonic() - start) * 1000.0


def remove_everything(directory: str) -> None:
    """Whatever is left (only after a failure is there anything), then the benchmark's own objects."""
    errors = []
    try:
        delete_linear()
        with Engine(state_dir=directory) as engine:
            for sandbox in engine.sandboxes():
                engine.remove_sandbox(sandbox.name, force=True)
            engine.remove_network(NETWORK, force=True)
    except (NsnetError, OSError, RuntimeError, subprocess.SubprocessError) as exc:  # the namespaces below go too
        errors.append(exc)
    remove_own_namespaces()
    shutil.rmtree(directory, ignore_errors=True)
    wait_settled()
    remaining = leftovers()
    if errors or remaining:
        raise RuntimeError(f"cleanup: errors {errors}, left behind {remaining[:10]}")


# Statistics


def summary(r: PortsRun) -> dict[str, float]:
    pub = r.publish
    with_port, without = statistics.median(pub["with_port_ms"]), statistics.median(pub["without_port_ms"])
    return {
        "map_p50_us": percentile(r.map_latency_us, 0.50),
        "map_p95_us": percentile(r.map_latency_us, 0.95),
        "map_rate": statistics.median(rate["per_second"] for rate in r.map_rates),
        "publish_ms": with_port,
        "publish_cost_ms": with_port - without,
        "publish_nft_ms": statistics.median(pub["nft_with_port_ms"]),
        "linear_p50_us": percentile(r.linear_latency_us, 0.50),
        "linear_p95_us": percentile(r.linear_latency_us, 0.95),
        "linear_rate": statistics.median(rate["per_second"] for rate in r.linear_rates),
        "web_create_ms": statistics.median(r.web_create_ms),
        "web_remove_ms": statistics.median(r.web_remove_ms),
        "web_settle_ms": statistics.median(r.web_settle_ms),
        "linear_load_ms": statistics.median(r.linear_load_ms),
    }


# Output

COLUMNS = (
    ("P", None, ""),
    ("maps p50", "map_p50_us", "us"),
    ("maps p95", "map_p95_us", "us"),
    ("maps rate", "map_rate", "/s"),
    ("publish +1", "publish_ms", "ms"),
    ("(port part)", "publish_cost_ms", "ms"),
    ("(nft txn)", "publish_nft_ms", "ms"),
    ("linear p50", "linear_p50_us", "us"),
    ("linear p95", "linear_p95_us", "us"),
    ("linear rate", "linear_rate", "/s"),
)


def cell(value: float, unit: str) -> str:
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "us":
        return f"{value:.1f} us"
    return f"{value:.2f} ms"


def print_rows(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def ratio(runs: Sequence[PortsRun], key: str) -> float:
    small, large = min(runs, key=lambda r: r.ports), max(runs, key=lambda r: r.ports)
    return summary(large)[key] / summary(small)[key]


def paired_rate_ratios(runs: Sequence[PortsRun], mode: str) -> list[float]:
    """Largest P over smallest P, sweep by sweep: drift of the VM that hits a whole sweep cancels."""
    small, large = min(runs, key=lambda r: r.ports), max(runs, key=lambda r: r.ports)
    pairs = zip(getattr(large, f"{mode}_rates"), getattr(small, f"{mode}_rates"), strict=True)
    return [big["per_second"] / little["per_second"] for big, little in pairs]


def print_ports_table(runs: Sequence[PortsRun]) -> None:
    rows = [tuple(name for name, _, _ in COLUMNS)]
    for r in runs:
        s = summary(r)
        rows.append((f"{r.ports:,}", *(cell(s[key], unit) for _, key, unit in COLUMNS[1:])))
    if len(runs) > 1:
        small, large = min(r.ports for r in runs), max(r.ports for r in runs)
        rows.append((f"{large:,}/{small:,}", *(
            "-" if key == "publish_cost_ms" else f"{ratio(runs, key):.3f}x" for _, key, _ in COLUMNS[1:])))
    print_rows(rows)
    sweeps = len(runs[0].map_rates)
    print(f"latency: one connection (connect, receive 1 byte, close, RST) timed by the client process in wan, "
          f"Python's socket calls included, client and server on CPU {LATENCY_CPU}; "
          f"{len(runs[0].map_latency_us):,} connections per cell ({sweeps} sweeps)")
    print(f"rate: {RATE_CLIENTS} clients in parallel, each with its server on its own CPU, total connections/s, "
          f"median of {sweeps} runs: "
          + "; ".join(f"P={r.ports:,} maps " + " ".join(f"{x['per_second']:,.0f}" for x in r.map_rates)
                      + " | linear " + " ".join(f"{x['per_second']:,.0f}" for x in r.linear_rates) for r in runs))
    print(f"publish +1: median of {len(runs[0].publish['with_port_ms'])} create_sandbox(extra, -p {EXTRA_PUBLISH}); "
          "port part: minus the median create without -p; nft txn: that create's libnftables transaction")
    print("setup (medians): " + "; ".join(
        f"P={r.ports:,}: create {WEB} {summary(r)['web_create_ms']:,.0f} ms, remove "
        f"{summary(r)['web_remove_ms']:,.0f} ms (+ {summary(r)['web_settle_ms']:,.0f} ms until its veth is gone), "
        f"nft -f linear table {summary(r)['linear_load_ms']:,.0f} ms"
        for r in runs))


def print_throughput(samples: dict[str, list[float]]) -> None:
    direct = statistics.median(samples["direct"])
    rows = [("path", "runs (Gbit/s)", "median", "/ direct", "/ direct, round by round")]
    for path in THROUGHPUT_PATHS:
        values = samples[path.name]
        median = statistics.median(values)
        paired = [x / d for x, d in zip(values, samples["direct"], strict=True)]
        rows.append((path.name, " ".join(f"{x:.2f}" for x in values), f"{median:.2f} Gbit/s", f"{median / direct:.3f}",
                     " ".join(f"{x:.2f}" for x in paired)))
    print_rows(rows)
    for path in THROUGHPUT_PATHS:
        print(f"{path.name}: {path.what}")
    print("one TCP stream each (iperf3, received side), paths interleaved round by round; "
          f"host bridge-nf-call-iptables: {host_sysctl('net.bridge.bridge-nf-call-iptables')}")


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def print_targets(runs: Sequence[PortsRun], throughput: dict[str, list[float]] | None) -> None:
    print("\nTargets (issue): connect latency and rate at 10,000 ports within 5 % of 10 ports; publish time "
          "flat; DNAT path >= 0.93 of direct veth throughput")
    if len(runs) > 1:
        small, large = min(r.ports for r in runs), max(r.ports for r in runs)
        lat, rate = ratio(runs, "map_p50_us"), ratio(runs, "map_rate")
        print(f"  maps latency p50 {large:,} vs {small:,} ports: {lat:.3f}x (<= {1 + TARGET_FLAT:.2f}x), "
              f"{verdict(lat <= 1 + TARGET_FLAT)}")
        paired = paired_rate_ratios(runs, "map")
        print(f"  maps rate {large:,} vs {small:,} ports: {rate:.3f}x (>= {1 - TARGET_FLAT:.2f}x), "
              f"{verdict(rate >= 1 - TARGET_FLAT)}; sweep by sweep "
              + " ".join(f"{x:.3f}" for x in paired) + f" (median {statistics.median(paired):.3f})")
        pub = ratio(runs, "publish_ms")
        nft = ratio(runs, "publish_nft_ms")
        print(f"  publish one more port, {large:,} vs {small:,}: create {pub:.3f}x, its nft transaction {nft:.3f}x "
              f"(flat read as <= {TARGET_PUBLISH_GROWTH}x), {verdict(pub <= TARGET_PUBLISH_GROWTH)}")
        lin_lat, lin_rate = ratio(runs, "linear_p50_us"), ratio(runs, "linear_rate")
        lin_paired = paired_rate_ratios(runs, "linear")
        print(f"  for comparison, linear: latency p50 {lin_lat:.2f}x, rate {lin_rate:.3f}x (sweep by sweep "
              + " ".join(f"{x:.3f}" for x in lin_paired) + ") over the same range")
    else:
        print("  (latency, rate and publish flatness need at least two values of --ports)")
    if throughput is not None:
        share = statistics.median(throughput["dnat"]) / statistics.median(throughput["direct"])
        kernel = statistics.median(throughput["dnat"]) / statistics.median(throughput["kernel-dnat"])
        print(f"  DNAT throughput / direct veth: {share:.3f} (>= {TARGET_DNAT_VS_DIRECT}), "
              f"{verdict(share >= TARGET_DNAT_VS_DIRECT)}; nsnet's DNAT path / the kernel's plain routed DNAT: "
              f"{kernel:.3f}")
    print("Anchors (DESIGN.md, new connection, per-connection cost measured another way): nft map "
          + " / ".join(f"{v} us" for v in ANCHOR_MAP_US.values()) + ", one DNAT rule per port "
          + " / ".join(f"{v} us" for v in ANCHOR_LINEAR_US.values()) + " at 10 / 1,000 / 10,000 ports")
    for r in runs:
        s = summary(r)
        print(f"  here at P={r.ports:,}: linear - maps p50 = {s['linear_p50_us'] - s['map_p50_us']:+.1f} us "
              f"(anchors: {ANCHOR_LINEAR_US[r.ports] - ANCHOR_MAP_US[r.ports]:+.1f} us)"
              if r.ports in ANCHOR_MAP_US else
              f"  here at P={r.ports:,}: linear - maps p50 = {s['linear_p50_us'] - s['map_p50_us']:+.1f} us")


def source_state() -> dict[str, Any]:
    """The commit nsnet's source was at, and its files changed since (the source may be a work tree)."""
    directory = os.path.dirname(nsnet.__file__)
    try:
        head = run("git", "-C", directory, "rev-parse", "HEAD").strip()
        changed = run("git", "-C", directory, "status", "--short", "--", ".").splitlines()
    except (OSError, RuntimeError, subprocess.SubprocessError):
        return {}
    return {"commit": head, "changed": changed}


def write_json(path: str, runs: Sequence[PortsRun], throughput: dict[str, list[float]] | None,
               settings: Settings, facts: dict[str, Any], started_at: str) -> None:
    document = {
        "benchmark": "nsnet published ports",
        "network": {"name": NETWORK, "subnet": SUBNET, "web": WEB_IP, "first_port": FIRST_PORT},
        "nsnet": {"version": nsnet.__version__, "path": os.path.dirname(nsnet.__file__), "source": source_state()},
        "host": host(),
        "settings": asdict(settings),
        "facts": facts,
        "started": started_at,
        "runs": [{**asdict(r), "summary": summary(r)} for r in runs],
        "throughput_gbit_s": throughput,
    }
    save_json(path, document)


# Command line

def port_counts(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    limit = 65536 - FIRST_PORT
    if not values or any(not 1 <= value <= limit for value in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give counts between 1 and {limit}, for example 10,1000,10000")
    return sorted(set(values))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=f"run it as: {LAB_COMMAND}")
    parser.add_argument("--ports", type=port_counts, default=port_counts(DEFAULT_PORTS), metavar="P,...",
                        help=f"numbers of published ports (default {DEFAULT_PORTS})")
    parser.add_argument("--quick", action="store_true", help="fewer samples and shorter runs (for debugging)")
    parser.add_argument("--no-throughput", action="store_true", help="skip the iperf3 phase")
    parser.add_argument("--json", metavar="PATH", help="write every sample and the summaries as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    refuse_outside_lab()
    settings = QUICK if args.quick else DEFAULT
    print(f"nsnet {nsnet.__version__} from {os.path.dirname(nsnet.__file__)}"
          f"{' (--quick: fewer samples)' if args.quick else ''}")
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    directory = tempfile.mkdtemp(prefix="bench-ports-", dir=state_dir())
    runs: list[PortsRun] = []
    throughput = None
    try:
        make_wan()
        facts = {
            "wan ip_local_port_range": netns_sysctl(WAN_NS, "net.ipv4.ip_local_port_range"),
            "wan tcp_tw_reuse (set to 1)": netns_sysctl(WAN_NS, "net.ipv4.tcp_tw_reuse", "1"),
            "nf_conntrack_max": host_sysctl("net.netfilter.nf_conntrack_max"),
        }
        with Engine(state_dir=directory) as engine:
            engine.create_network(NETWORK, subnet=SUBNET)
            facts["host bridge-nf-call-iptables"] = host_sysctl("net.bridge.bridge-nf-call-iptables")
            print("; ".join(f"{k}: {v}" for k, v in facts.items()), flush=True)
            by_ports = {ports: PortsRun(ports) for ports in args.ports}
            for sweep in range(settings.sweeps):
                for ports in sweep_order(args.ports, sweep):
                    run_ports(engine, by_ports[ports], settings, directory, sweep + 1)
            runs = list(by_ports.values())
            if not args.no_throughput:
                throughput = run_throughput(engine, settings, min(args.ports), directory)
            engine.remove_network(NETWORK)
    finally:
        remove_everything(directory)
    print()
    print_ports_table(runs)
    if throughput is not None:
        print()
        print_throughput(throughput)
    print_targets(runs, throughput)
    if args.json:
        write_json(args.json, runs, throughput, settings, facts, started_at)
    return 0


if __name__ == "__main__":
    sys.exit(main())
