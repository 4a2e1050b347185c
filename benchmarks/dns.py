"""Names: nsnet's resolver against dnsmasq serving the same names, its reload cost, and what DNS
adds to `nsnet create`.

Run it from the repository root, inside a throwaway isolated host (it refuses to run anywhere else):

    .venv/bin/nsnet lab -- .venv/bin/python benchmarks/dns.py
    .venv/bin/nsnet lab -- .venv/bin/python benchmarks/dns.py --quick

Setup (not timed): a fresh state directory, network `bench` (10.40.0.0/16, DNS on) and N sandboxes
on it (sb0000..., made through the API; 999 by default), plus a sandbox `client` that asks: 1,000
sandboxes in all. dnsmasq (Debian's
dnsmasq-base) runs in the host namespace on the gateway's port 5353 with the same names and
addresses in a hosts file (`--no-resolv --no-hosts --local-ttl=0`), so both servers answer from
memory, authoritatively, with TTL 0. Both are asked from `client`, over the bridge.

Timed, interleaved round by round (nsnet then dnsmasq, then the other order):
- throughput: `dnsperf -l SECONDS` with a file of the N names (A queries), from `client`; its
  queries per second, and its average latency;
- latency: one query at a time (a stdlib UDP client, 2,000 queries of random names), p50 and p99;
- reload: the control socket's `reload` round trip (what every create/rm waits for) at N sandboxes,
  each after a commit to the ledger, so the resolver reads it all again;
- create: `nsnet create` on a second DNS network (the resolver then serves 1,001 sandboxes) against
  one with --no-dns (`nsnet rm` after each), p50.

Targets (issue 12): local answers >= 0.6x dnsmasq's queries/s; reload at 1,000 sandboxes <= 10 ms;
create with DNS <= 1.1x without.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

from harness import percentile, refuse_outside_lab, save_json, source_state

from nsnet import Engine
from nsnet.dns.supervise import ask

GATEWAY = "10.40.0.1"
DNSMASQ_PORT = 5353


_LATENCY = r"""
import random, socket, struct, sys, time
server, port, count, names = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(2)
samples, lost = [], 0
for i in range(count):
    name = random.choice(names)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    message = struct.pack("!HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0) + labels + b"\x00\x00\x01\x00\x01"
    start = time.perf_counter()
    sock.sendto(message, (server, port))
    try:
        reply = sock.recv(4096)
        while reply[:2] != message[:2]:  # a late answer to a question given up on
            reply = sock.recv(4096)
    except socket.timeout:
        lost += 1
        continue
    samples.append(time.perf_counter() - start)
    assert reply[3] & 0x0F == 0 and struct.unpack("!H", reply[6:8])[0] == 1, reply
print(lost, " ".join(f"{s:.7f}" for s in samples))
"""


def in_client(argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", "client", *argv]


def dnsperf(port: int, names_file: str, seconds: int) -> tuple[float, float]:
    done = subprocess.run(in_client(["dnsperf", "-s", GATEWAY, "-p", str(port), "-d", names_file, "-l", str(seconds),
                                     "-c", "4", "-Q", "100000"]), capture_output=True, text=True, timeout=seconds + 60)
    qps = re.search(r"Queries per second:\s+([\d.]+)", done.stdout)
    latency = re.search(r"Average Latency \(s\):\s+([\d.]+)", done.stdout)
    lost = re.search(r"Queries lost:\s+(\d+)", done.stdout)
    if not qps or not latency:
        raise SystemExit(f"dnsperf said: {done.stdout}{done.stderr}")
    if lost and int(lost.group(1)) > 0:
        print(f"  (dnsperf: {lost.group(1)} queries lost)", flush=True)
    return float(qps.group(1)), float(latency.group(1)) * 1e6


def sequential(port: int, names: list[str], count: int) -> list[float]:
    done = subprocess.run(in_client([sys.executable, "-c", _LATENCY, GATEWAY, str(port), str(count),
                                     *random.sample(names, min(len(names), 200))]),
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"the latency client failed: {done.stderr.strip()[-400:]}")
    lost, *samples = done.stdout.split()
    if int(lost):
        print(f"  ({lost} of {count} one-at-a-time questions unanswered within 2 s)", flush=True)
    return [float(s) * 1e6 for s in samples]


def timed_cli(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return (time.perf_counter() - start) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 sandboxes, 1 round of 3 s: to debug")
    parser.add_argument("--n", type=int, help="named sandboxes (default 999, which with the client makes 1,000;"
                        " --quick 100)")
    parser.add_argument("--json", help="write the samples and summaries here")
    args = parser.parse_args()
    refuse_outside_lab()
    for tool in ("dnsperf", "dnsmasq"):
        if shutil.which(tool) is None:
            raise SystemExit(f"dns.py: {tool} is missing: apt-get install dnsperf dnsmasq-base")
    # 999 + the client: a bridge flooding a broadcast to more than net.core.netdev_max_backlog
    # (1,000) veths drops some copies, ARP requests included (see benchmarks/README.md).
    n = args.n or (100 if args.quick else 999)
    rounds, seconds = (1, 3) if args.quick else (3, 10)
    state = tempfile.mkdtemp(prefix="nsnet-bench-dns-")
    env = {**os.environ, "NSNET_STATE_DIR": state}
    nsnet = os.path.join(os.path.dirname(sys.executable), "nsnet")
    work = tempfile.mkdtemp(prefix="nsnet-bench-dns-files-")
    print(f"nsnet {source_state()}; {subprocess.run(['dnsmasq', '--version'], capture_output=True, text=True).stdout.splitlines()[0]}",
          flush=True)
    results: dict = {"n": n, "rounds": rounds}
    with Engine(state_dir=state) as engine:
        engine.create_network("bench", subnet="10.40.0.0/16")
        engine.create_network("quiet", subnet="10.41.0.0/16", dns=False)
        engine.create_network("side", subnet="10.42.0.0/16")  # bench is full: creates go here
        started = time.perf_counter()
        for i in range(n):
            engine.create_sandbox(f"sb{i:04d}", networks=["bench"])
        print(f"setup: {n} sandboxes in {time.perf_counter() - started:.1f} s", flush=True)
        engine.create_sandbox("client", networks=["bench"])
        names = [f"sb{i:04d}" for i in range(n)]
        hosts = os.path.join(work, "hosts")
        with open(hosts, "w") as f:
            for i, sandbox in enumerate(engine.sandboxes()):
                if sandbox.name.startswith("sb"):
                    f.write(f"{sandbox.endpoints[0].address.ip} {sandbox.name}\n")
        names_file = os.path.join(work, "names")
        with open(names_file, "w") as f:
            f.writelines(f"{name} A\n" for name in names)
        dnsmasq = subprocess.Popen(["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", f"--addn-hosts={hosts}",
                                    f"--listen-address={GATEWAY}", "--bind-interfaces", f"--port={DNSMASQ_PORT}",
                                    "--local-ttl=0", "--cache-size=0", "--user=root", "--pid-file="],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            time.sleep(0.5)
            if dnsmasq.poll() is not None:
                raise SystemExit(f"dnsmasq did not start: {dnsmasq.stderr.read().decode()}")
            servers = {"nsnet": 53, "dnsmasq": DNSMASQ_PORT}
            qps: dict[str, list[float]] = {s: [] for s in servers}
            avg: dict[str, list[float]] = {s: [] for s in servers}
            latency: dict[str, list[float]] = {s: [] for s in servers}
            for r in range(rounds):
                order = list(servers) if r % 2 == 0 else list(reversed(servers))
                for server in order:
                    q, a = dnsperf(servers[server], names_file, seconds)
                    qps[server].append(q)
                    avg[server].append(a)
                    latency[server] += sequential(servers[server], names, 2000 if not args.quick else 300)
                    print(f"  round {r + 1} {server}: {q:,.0f} queries/s, dnsperf average {a:.0f} us", flush=True)
        finally:
            dnsmasq.kill()
            dnsmasq.wait()
        reloads = []
        ledger = sqlite3.connect(os.path.join(state, "state.db"), isolation_level=None)
        for i in range(30):
            # A commit first, as after any create or rm: the resolver reads the whole ledger again
            # (a reload that finds the ledger unchanged only answers).
            ledger.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('benchmark-tick', ?)", (str(i),))
            start = time.perf_counter()
            assert (ask(state, "reload") or "").startswith("ok")
            reloads.append((time.perf_counter() - start) * 1000)
        ledger.close()
        creates: dict[str, list[float]] = {"dns": [], "no-dns": []}
        for i in range(10 if args.quick else 30):
            for kind, network in (("dns", "side"), ("no-dns", "quiet")) if i % 2 == 0 else (("no-dns", "quiet"), ("dns", "side")):
                creates[kind].append(timed_cli([nsnet, "create", f"c{kind}{i}", "--network", network], env))
                subprocess.run([nsnet, "rm", f"c{kind}{i}"], env=env, check=True, capture_output=True)
        for sandbox in engine.sandboxes():
            engine.remove_sandbox(sandbox.name, force=True)
        for network in engine.networks():
            engine.remove_network(network.name)
    shutil.rmtree(work)
    shutil.rmtree(state, ignore_errors=True)

    med = {s: statistics.median(v) for s, v in qps.items()}
    print(f"\nN={n} names, {rounds} round(s) of {seconds} s, dnsperf -c 4 from a sandbox over the bridge")
    print(f"{'server':10} {'queries/s':>12} {'dnsperf avg us':>15} {'seq p50 us':>11} {'seq p99 us':>11}")
    for s in servers:
        print(f"{s:10} {med[s]:>12,.0f} {statistics.median(avg[s]):>15.0f} {percentile(latency[s], 0.5):>11.0f}"
              f" {percentile(latency[s], 0.99):>11.0f}")
    ratio = med["nsnet"] / med["dnsmasq"]
    reload_p50 = statistics.median(reloads)
    create_ratio = statistics.median(creates["dns"]) / statistics.median(creates["no-dns"])
    print("\nTargets (issue 12):")
    print(f"  local answers: nsnet / dnsmasq queries/s = {ratio:.2f}x (>= 0.6x): {'meets' if ratio >= 0.6 else 'MISSES'}")
    print(f"  reload at {n + 1} sandboxes: p50 {reload_p50:.1f} ms, p95 {percentile(reloads, 0.95):.1f} ms (<= 10 ms at"
          f" 1,000): {'meets' if reload_p50 <= 10 else 'MISSES'}")
    print(f"  create: DNS {statistics.median(creates['dns']):.1f} ms vs no DNS {statistics.median(creates['no-dns']):.1f}"
          f" ms p50 = {create_ratio:.2f}x (<= 1.1x): {'meets' if create_ratio <= 1.1 else 'MISSES'}")
    results.update(qps=qps, dnsperf_avg_us=avg, sequential_us=latency, reload_ms=reloads, create_ms=creates)
    if args.json:
        save_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
