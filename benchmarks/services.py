"""Services: what a VIP costs a new connection, and how that grows with the number of services.

Run it from the repository root, inside a throwaway isolated host (it refuses to run anywhere else):

    .venv/bin/nsnet lab -- .venv/bin/python benchmarks/services.py
    .venv/bin/nsnet lab -- .venv/bin/python benchmarks/services.py --quick

Setup (not timed): a fresh state directory, network `bench` (10.41.0.0/24), a backend sandbox
`web` (10.41.0.2, labelled app=web) whose server accepts on 8080, and a sandbox `client` that
connects. For each S (default 10, 1,000 and 5,000, growing), services are made through the API
until there are S, each with port 80 -> 8080 and a selector none of the sandboxes has, but the
last one's, which selects `web`: its VIP is the one measured, the last a linear scan would reach.

Timed, per S, 8 rounds interleaved (vip, direct, linear, then the reverse order):
- vip: 1,000 sequential new connections from `client` to the measured VIP (connect, one byte
  back, RST close), each timed in the client process; p50 and p95;
- direct: the same to web's own address and port: the anchor, what the service hop adds to;
- linear: kube-proxy's iptables-mode shape, one `ip daddr VIP tcp dport 80 dnat` rule per service
  in a nat prerouting chain of this benchmark's own table (priority -110, VIPs in 10.212.0.0/16
  that no nsnet service holds), connecting to the last rule's VIP; the table is loaded for its
  own measurement only (in the hook, every packet would scan it, the VIP's too);
- rate: one client process per CPU at once connecting for 2 s, to each of the three; new
  connections per second, median of the rounds (each connection stays on its client's CPU, see
  CPUS; the latency client runs on the first);
- create: one more `service create` through the API at S services (what programming a service
  costs as their number grows: kube-proxy's #139513 is there, not in packets).

Interleaved (the targets are judged here): the sequential phase's scales are minutes apart, and this
VM drifts by 10-30 % over minutes (its direct connections move as much). So, while the first
scale's services exist, each of 12 rounds measures the VIP at every scale, the maps given the other
services' elements (as nsnet makes them for services without backends) for their turn and
emptied of them after, in one nft transaction each way.

Targets (issue 13): the VIP's p50 latency and connection rate flat within 5 % from 10 to 5,000
services, interleaved; the sequential phase's growth is printed beside it, with the same rounds'
direct connections (the machine's drift) and the linear chain's growth.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from harness import percentile, refuse_outside_lab, save_json, source_state

from nsnet import Engine

SUBNET, WEB_IP, PORT, TARGET = "10.41.0.0/24", "10.41.0.2", 80, 8080
LINEAR_TABLE = "bench_linear_services"
LINEAR_RANGE = ipaddress.ip_network("10.212.0.0/16")

# Every connection stays on one CPU, as in benchmarks/ports.py (whose comment has the measurements:
# across CPUs, wake-ups made the rate swing by a third): one server per CPU sharing the port
# (SO_REUSEPORT) with SO_INCOMING_CPU, so that the kernel hands a connection to the server on the
# CPU it arrived on, which is its client's (a veth delivers on the sending CPU).
CPUS = [str(i) for i in range(min(2, os.cpu_count() or 1))]
_SERVER = r"""
import os, socket, sys
port, cpu = int(sys.argv[1]), int(sys.argv[2])
os.sched_setaffinity(0, {cpu})
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
server.setsockopt(socket.SOL_SOCKET, 49, cpu)  # SO_INCOMING_CPU
server.bind(("0.0.0.0", port))
server.listen(512)
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    conn.sendall(b"x")
    conn.close()
"""
# Sequential connections, each timed; RST close (SO_LINGER 0) so no TIME_WAIT piles up.
_CLIENT = r"""
import os, socket, struct, sys, time
ip, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.sched_setaffinity(0, {int(sys.argv[4])})
linger = struct.pack("ii", 1, 0)
samples = []
address, clock = (ip, port), time.perf_counter_ns
for _ in range(count):
    start = clock()
    s = socket.socket()  # not create_connection: its name lookup would be timed too
    s.settimeout(3)
    s.connect(address)
    s.recv(1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    s.close()
    samples.append((clock() - start) / 1000)
print(" ".join(f"{x:.1f}" for x in samples))
"""


# Connections for SECONDS as fast as one process can make them; prints how many.
_RATE = r"""
import os, socket, struct, sys, time
ip, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
os.sched_setaffinity(0, {int(sys.argv[4])})
linger = struct.pack("ii", 1, 0)
done, end, address = 0, time.monotonic() + seconds, (ip, port)
while time.monotonic() < end:
    s = socket.socket()
    s.settimeout(3)
    s.connect(address)
    s.recv(1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    s.close()
    done += 1
print(done)
"""
RATE_SECONDS = 2.0


def in_client(argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", "client", *argv]


def connect_times(ip: str, port: int, count: int) -> list[float]:
    done = subprocess.run(in_client([sys.executable, "-c", _CLIENT, ip, str(port), str(count), CPUS[0]]),
                          capture_output=True, text=True, timeout=count * 3 + 30, check=True)
    return [float(x) for x in done.stdout.split()]


def connection_rate(ip: str, port: int) -> float:
    """New connections per second from one process per CPU at once."""
    clients = [subprocess.Popen(in_client([sys.executable, "-c", _RATE, ip, str(port), str(RATE_SECONDS), cpu]),
                                stdout=subprocess.PIPE, text=True) for cpu in CPUS]
    total = 0
    for client in clients:
        out, _ = client.communicate(timeout=RATE_SECONDS + 30)
        total += int(out)
    return total / RATE_SECONDS


EXTRA_RANGE = ipaddress.ip_network("10.213.0.0/16")


def extra_elements(table: str, count: int, verb: str, directory: str) -> None:
    """`count` more services' elements in nsnet's maps, exactly as it makes them for a service
    without backends (as the sequential phase's other services are): its port's verdict (the
    refusing chain), its target port, its VIP; added or deleted in one transaction."""
    vips = [str(EXTRA_RANGE.network_address + 1 + i) for i in range(count)]
    keys = [f"{v} . tcp . {PORT}" for v in vips]
    if verb == "add":
        body = [("service_ips", [f"{k} : goto service_reject" for k in keys]),
                ("service_ports", [f"{k} : {TARGET}" for k in keys]), ("service_vips", vips)]
    else:
        body = [("service_ips", keys), ("service_ports", keys), ("service_vips", vips)]
    path = os.path.join(directory, "extra.nft")
    with open(path, "w") as handle:
        for name, elements in body:
            handle.write(f"{verb} element inet {table} {name} {{ {', '.join(elements)} }}\n")
    subprocess.run(["nft", "-f", path], check=True)


def linear_vip(i: int) -> str:
    return str(LINEAR_RANGE.network_address + 1 + i)


def load_linear(services: int, directory: str) -> None:
    """One DNAT rule per service, the measured VIP's last."""
    rules = "\n".join(f"    ip daddr {linear_vip(i)} tcp dport {PORT} dnat ip to {WEB_IP}:{TARGET}"
                      for i in range(services))
    path = os.path.join(directory, "linear.nft")
    with open(path, "w") as handle:
        handle.write(f"table inet {LINEAR_TABLE} {{\n  chain prerouting {{\n"
                     f"    type nat hook prerouting priority -110; policy accept;\n{rules}\n  }}\n}}\n")
    subprocess.run(["nft", "-f", path], check=True)


def delete_linear() -> None:
    subprocess.run(["nft", "delete", "table", "inet", LINEAR_TABLE], capture_output=True)


def measure_interleaved(table: str, vip: str, scales: tuple[int, ...], count: int, rounds: int,
                        work: str) -> dict[str, dict]:
    """The data path alone, every scale in every round (the machine drifts by 10-30 % over the
    minutes between the sequential phase's scales): at the first scale's services, the maps are
    given the other scales' worth of services' elements for their turn (extra_elements)."""
    samples: dict[int, list[float]] = {s: [] for s in scales}
    rates: dict[int, list[float]] = {s: [] for s in scales}
    direct: list[float] = []
    for r in range(rounds):
        for scale in (scales if r % 2 == 0 else tuple(reversed(scales))):
            extra = scale - scales[0]
            if extra:
                extra_elements(table, extra, "add", work)
            samples[scale] += connect_times(vip, PORT, count)
            rates[scale].append(connection_rate(vip, PORT))
            if extra:
                extra_elements(table, extra, "delete", work)
        direct += connect_times(WEB_IP, TARGET, count)
    found = {str(s): {"p50_us": statistics.median(samples[s]), "rate": statistics.median(rates[s]),
                      "samples_us": samples[s], "rates": rates[s]} for s in scales}
    print("  interleaved, the VIP at " + ", ".join(
        f"{s:,}: p50 {found[str(s)]['p50_us']:.0f} us, {found[str(s)]['rate']:,.0f}/s" for s in scales)
        + f"; direct p50 {statistics.median(direct):.0f} us", flush=True)
    return {"scales": found, "direct_p50_us": statistics.median(direct)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 and 200 services, 200 connections: to debug")
    parser.add_argument("--json", help="write the samples and summaries here")
    args = parser.parse_args()
    refuse_outside_lab()
    scales = (10, 200) if args.quick else (10, 1000, 5000)
    count = 200 if args.quick else 1000
    rounds = 2 if args.quick else 8
    ab_rounds = 2 if args.quick else 12

    state = tempfile.mkdtemp(prefix="nsnet-bench-services-")
    work = tempfile.mkdtemp(prefix="nsnet-bench-services-work-")
    print(f"nsnet {source_state()}", flush=True)
    results: dict[str, dict] = {}
    servers: list[subprocess.Popen] = []
    try:
        with Engine(state_dir=state) as engine:
            engine.create_network("bench", subnet=SUBNET)
            engine.create_sandbox("web", networks=["bench"], labels=["app=web"])
            engine.create_sandbox("client", networks=["bench"])
            for cpu in CPUS:
                servers.append(subprocess.Popen(["ip", "netns", "exec", "web", sys.executable, "-c", _SERVER,
                                                 str(TARGET), cpu], stdout=subprocess.PIPE, text=True))
                assert servers[-1].stdout.readline().strip() == "ready"
            made = 0
            measured = None
            interleaved: dict = {}
            for scale in scales:
                start = time.perf_counter()
                if measured is not None:  # the measured service stays the last one
                    engine.remove_service(measured)
                    made -= 1
                while made < scale - 1:
                    engine.create_service(f"s{made:05d}", network="bench", ports=[f"{PORT}:{TARGET}"],
                                          selector=["app=none"])
                    made += 1
                created = time.perf_counter()
                vip = str(engine.create_service("measured", network="bench", ports=[f"{PORT}:{TARGET}"],
                                                selector=["app=web"]).vips[0])
                create_ms = (time.perf_counter() - created) * 1000
                measured = "measured"
                made += 1
                print(f"S={scale:,}: {made:,} services ready in {time.perf_counter() - start:.1f} s", flush=True)
                samples: dict[str, list[float]] = {"vip": [], "direct": [], "linear": []}
                rates: dict[str, list[float]] = {"vip": [], "direct": [], "linear": []}
                targets = {"vip": (vip, PORT), "direct": (WEB_IP, TARGET), "linear": (linear_vip(scale - 1), PORT)}
                for r in range(rounds):
                    order = list(targets) if r % 2 == 0 else list(reversed(targets))
                    for kind in order:
                        if kind == "linear":  # in the hook only while measured: every packet would scan it
                            load_linear(scale, work)
                        samples[kind] += connect_times(*targets[kind], count)
                        rates[kind].append(connection_rate(*targets[kind]))
                        if kind == "linear":
                            delete_linear()
                p50 = {k: statistics.median(v) for k, v in samples.items()}
                rate = {k: statistics.median(v) for k, v in rates.items()}
                results[str(scale)] = {"samples_us": samples, "p50_us": p50, "rates": rates, "rate": rate,
                                       "create_ms": create_ms}
                print(f"  p50 us: vip {p50['vip']:.0f}, direct {p50['direct']:.0f}, linear {p50['linear']:.0f};"
                      f" p95 vip {percentile(samples['vip'], 0.95):.0f}; connections/s: vip {rate['vip']:,.0f},"
                      f" direct {rate['direct']:,.0f}, linear {rate['linear']:,.0f}; one more service created in"
                      f" {create_ms:.1f} ms", flush=True)
                if scale == scales[0]:
                    interleaved = measure_interleaved(engine.owner.table, vip, scales, count, ab_rounds, work)
            for sandbox in engine.sandboxes():
                engine.remove_sandbox(sandbox.name, force=True)
            for service, _ in engine.services():
                engine.remove_service(service.name)
            engine.remove_network("bench")
    finally:
        for server in servers:
            server.kill()
            server.wait()
        delete_linear()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)

    print(f"\nNew TCP connections from a sandbox, p50 (us), {rounds} rounds of {count} per kind, interleaved")
    print(f"{'services':>9} {'vip':>7} {'direct':>7} {'linear':>7} {'vip/direct':>11} {'vip/linear':>11}"
          f" {'create ms':>10}")
    for scale, r in results.items():
        p = r["p50_us"]
        print(f"{int(scale):>9,} {p['vip']:>7.0f} {p['direct']:>7.0f} {p['linear']:>7.0f}"
              f" {p['vip'] / p['direct']:>10.2f}x {p['vip'] / p['linear']:>10.2f}x {r['create_ms']:>10.1f}")
    print(f"\nNew connections per second, {len(CPUS)} clients (one per CPU) for {RATE_SECONDS:.0f} s, median of"
          f" {rounds} rounds")
    print(f"{'services':>9} {'vip':>8} {'direct':>8} {'linear':>8} {'vip/direct':>11} {'vip/linear':>11}")
    for scale, r in results.items():
        q = r["rate"]
        print(f"{int(scale):>9,} {q['vip']:>8,.0f} {q['direct']:>8,.0f} {q['linear']:>8,.0f}"
              f" {q['vip'] / q['direct']:>10.2f}x {q['vip'] / q['linear']:>10.2f}x")
    first, last = results[str(scales[0])], results[str(scales[-1])]

    def change(kind: str, key: str) -> float:
        return last[key][kind] / first[key][kind] - 1

    ab = interleaved["scales"]
    print(f"\nThe data path interleaved (every scale in each of {ab_rounds} rounds; {count} connections and a rate"
          " per scale and round)")
    print(f"{'services':>9} {'vip p50 us':>11} {'vip conn/s':>11}")
    for scale, r in ab.items():
        print(f"{int(scale):>9,} {r['p50_us']:>11.0f} {r['rate']:>11,.0f}")
    growth = ab[str(scales[-1])]["p50_us"] / ab[str(scales[0])]["p50_us"] - 1
    rate_growth = ab[str(scales[-1])]["rate"] / ab[str(scales[0])]["rate"] - 1
    print("\nTargets (issue 13), from {:,} to {:,} services, interleaved:".format(scales[0], scales[-1]))
    print(f"  VIP p50 latency {growth * 100:+.1f} % (flat within 5 %): {'meets' if abs(growth) <= 0.05 else 'MISSES'}")
    print(f"  VIP connection rate {rate_growth * 100:+.1f} % (flat within 5 %):"
          f" {'meets' if abs(rate_growth) <= 0.05 else 'MISSES'}")
    # The sequential phase, minutes apart: the machine's drift shows in the anchor.
    print(f"  (sequential: VIP latency {change('vip', 'p50_us') * 100:+.1f} %, rate {change('vip', 'rate') * 100:+.1f} %;"
          f" the same rounds' direct connections: latency {change('direct', 'p50_us') * 100:+.1f} %,"
          f" rate {change('direct', 'rate') * 100:+.1f} %; the rule-per-service chain: latency"
          f" {change('linear', 'p50_us') * 100:+.1f} %, rate {change('linear', 'rate') * 100:+.1f} %)")
    if args.json:
        save_json(args.json, {"results": results, "interleaved": interleaved, "growth": growth,
                               "rate_growth": rate_growth})
    return 0


if __name__ == "__main__":
    sys.exit(main())
