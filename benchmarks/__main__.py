"""Every benchmark, one command: issue 5's reproducible run, written up in benchmarks/RESULTS.md.

Run it from the repository root, inside a throwaway isolated host (it refuses to run anywhere else):

    .venv/bin/nsnet lab -- .venv/bin/python -m benchmarks
    .venv/bin/nsnet lab -- .venv/bin/python -m benchmarks --quick

It checks isolation, installs the contenders and tools that are missing (containernetworking-plugins,
netavark, iperf3, strace, linux-perf, dnsperf, dnsmasq-base; through apt-get, which works in the lab because its filesystem is the
host's) and, when that is impossible, says what is missing and skips what needs it. Then it runs
each benchmark script as its own process, with `--json benchmarks/results/<name>.json` (ignored by
git), streaming and capturing what it prints, and writes benchmarks/RESULTS.md: the date, the
machine, the versions, the goals of issue 5 with "met"/"missed" read from the JSON results, and
each benchmark's printed tables with the command that reproduces them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nsnet.lab import isolation_problem

LAB_COMMAND = ".venv/bin/nsnet lab -- .venv/bin/python -m benchmarks"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS_DIR = os.path.join(HERE, "results")
RESULTS_MD = os.path.join(HERE, "RESULTS.md")
BENCHMARK_TIMEOUT_S = 1800  # per script; the default compare.py takes ~5 minutes
CNI_DIR = "/usr/lib/cni"


def perf_works() -> bool:
    """Debian's /usr/bin/perf is a wrapper that fails when no perf matches the running kernel."""
    try:
        return subprocess.run(["perf", "--version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# Debian package -> how to tell it is there.
PACKAGES = {
    "containernetworking-plugins": lambda: os.path.exists(f"{CNI_DIR}/bridge") and os.path.exists(f"{CNI_DIR}/portmap"),
    "netavark": lambda: netavark_path() is not None,
    "iperf3": lambda: shutil.which("iperf3") is not None,
    "strace": lambda: shutil.which("strace") is not None,
    "linux-perf": perf_works,
    "dnsperf": lambda: shutil.which("dnsperf") is not None,
    "dnsmasq-base": lambda: shutil.which("dnsmasq") is not None,
}


def netavark_path() -> str | None:
    for candidate in ("/usr/libexec/podman/netavark", "/usr/lib/podman/netavark"):
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("netavark")


@dataclass
class Benchmark:
    name: str  # the JSON is results/<name>.json; the script <name>.py unless `script` names another
    title: str
    args: list[str] = field(default_factory=list)
    script: str | None = None
    skipped: str | None = None  # why it did not run
    output: str = ""
    returncode: int | None = None
    seconds: float = 0.0

    @property
    def json_path(self) -> str:
        return os.path.join("benchmarks", "results", f"{self.name}.json")

    def command(self) -> list[str]:
        return [".venv/bin/python", f"benchmarks/{self.script or self.name}.py", *self.args, "--json", self.json_path]

    def lab_command(self) -> str:
        return ".venv/bin/nsnet lab -- " + " ".join(self.command())


# Setup

def ensure_packages() -> set[str]:
    """Install what is missing; return the packages still missing afterwards."""
    missing = [name for name, present in PACKAGES.items() if not present()]
    if not missing:
        return set()
    print(f"missing: {', '.join(missing)}; installing with apt-get", flush=True)
    if shutil.which("apt-get") is None:
        print("apt-get is not available here: skipping what needs them", flush=True)
        return set(missing)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        result = subprocess.run(["apt-get", "install", "-y", *missing], env=env, timeout=900,
                                capture_output=True, text=True)
        if result.returncode != 0:
            print(f"apt-get install failed (exit {result.returncode}): {result.stderr.strip()[-500:]}", flush=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"apt-get install failed: {exc}", flush=True)
    still = {name for name in missing if not PACKAGES[name]()}
    if still:
        print(f"still missing: {', '.join(sorted(still))}: skipping what needs them", flush=True)
    return still


def plan(quick: bool, missing: set[str]) -> list[Benchmark]:
    q = ["--quick"] if quick else []
    contenders = ["api", "cli"] + [c for c, pkg in (("cni", "containernetworking-plugins"), ("netavark", "netavark"))
                                   if pkg not in missing]
    compare_args = [*q, "--contenders", ",".join(contenders)] + (["--no-trace"] if "strace" in missing else [])
    benchmarks = [
        Benchmark("attach", "Control plane: attach and detach", [*q]),
        Benchmark("ports", "Published ports: lookup cost at 10, 1,000 and 10,000 ports",
                  [*q] + (["--no-throughput"] if "iperf3" in missing else [])),
        Benchmark("compare", "nsnet, the CNI plugins and netavark doing the same work", compare_args),
        Benchmark("cli_latency", "What one nsnet process costs, per verb", [*q]),
        Benchmark("dataplane", "Data plane: throughput, latency and connection rate per path", [*q]),
        Benchmark("dataplane_perf", "Data plane: where each path's CPU goes (perf)", [*q, "--perf"],
                  script="dataplane"),
        Benchmark("dns", "Names: nsnet's resolver against dnsmasq, its reload, DNS's cost to create", [*q]),
        Benchmark("services", "Services: a VIP's new-connection cost at 10, 1,000 and 5,000 services", [*q]),
        Benchmark("topology", "Topologies: a linear topology of 100 and 500 nodes up and down, nsnet and Mininet",
                  [*q]),
    ]
    by_name = {b.name: b for b in benchmarks}
    if missing & {"dnsperf", "dnsmasq-base"}:
        by_name["dns"].skipped = "dnsperf or dnsmasq is missing"
    # Not installed by ensure_packages: plain apt-get would bring Open vSwitch (a recommends) and its daemon.
    if shutil.which("mnexec") is None or shutil.which("brctl") is None:
        by_name["topology"].skipped = "Mininet is missing (install.sh installs mininet and bridge-utils)"
    if "iperf3" in missing:
        by_name["dataplane"].skipped = by_name["dataplane_perf"].skipped = "iperf3 is missing"
    elif "linux-perf" in missing:
        by_name["dataplane_perf"].skipped = "perf is missing (Debian: linux-perf)"
    return benchmarks


# Running

def run_benchmark(b: Benchmark) -> None:
    """Run one script to completion (bounded), echoing its output and keeping it."""
    print(f"\n=== {b.name}: {' '.join(b.command())}", flush=True)
    start = time.monotonic()
    process = subprocess.Popen(b.command(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        while True:
            if time.monotonic() - start > BENCHMARK_TIMEOUT_S:
                lines.append(f"(stopped after {BENCHMARK_TIMEOUT_S} s)")
                break
            ready, _, _ = select.select([process.stdout], [], [], 5.0)
            if not ready:
                continue
            line = process.stdout.readline()
            if not line:
                break
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line.rstrip("\n"))
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        process.stdout.close()
    b.returncode = process.returncode
    b.seconds = time.monotonic() - start
    b.output = "\n".join(lines)


PROGRESS = re.compile(r"(\.\.\.|^\[\s*\d+ s\].*)$")


def printed_tables(output: str) -> str:
    """What a benchmark printed, without its progress lines (they end with '...')."""
    kept = [line for line in output.splitlines() if not PROGRESS.search(line.strip())]
    return "\n".join(kept).strip()


# Facts

def sh(*argv: str) -> str:
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=20, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    return (result.stdout.strip() or result.stderr.strip() or "unavailable").splitlines()[0]


def memory() -> str:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def debian_version() -> str:
    try:
        with open("/etc/debian_version") as handle:
            return handle.read().strip()
    except OSError:
        return "unknown"


def facts() -> dict[str, str]:
    netavark = netavark_path()
    dirty = sh("git", "status", "--porcelain", "--", "src")
    commit = sh("git", "rev-parse", "--short", "HEAD")
    return {
        "nproc": str(os.cpu_count()),
        "memory": memory(),
        "kernel": platform.release(),
        "Debian": debian_version(),
        "python": platform.python_version(),
        "nsnet commit": commit + (" (src/ had uncommitted changes at the start)"
                                  if dirty not in ("", "unavailable") else " (at the start of the run)"),
        "nft": sh("nft", "--version"),
        "CNI plugins": sh("dpkg-query", "-W", "containernetworking-plugins"),
        "netavark": sh(netavark, "--version") if netavark else "missing",
        "iperf3": sh("iperf3", "--version") if shutil.which("iperf3") else "missing",
        "perf": sh("perf", "--version") if perf_works() else "missing",
    }


# Goals

def load(name: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(RESULTS_DIR, f"{name}.json")) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


SEE = "see table"


def verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def attach_goals(doc: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    goals = ["API attach p50 <= 10 ms", "attach growth <= 1.2x over 1,000", "API detach p50 <= 5 ms"]
    api = [r for r in (doc or {}).get("runs", []) if r.get("mode") == "api"]
    if not api:
        return [(g, SEE, SEE) for g in goals]
    largest = max(api, key=lambda r: r["n"])
    s, n = largest["summary"], largest["n"]
    rows = [(goals[0], f"{s['attach_p50_ms']:.2f} ms at N={n}", verdict(s["attach_p50_ms"] <= 10))]
    growth = s.get("attach_growth")
    rows.append((goals[1], f"{growth:.2f}x at N={n}" if growth is not None else SEE,
                 verdict(growth <= 1.2) if growth is not None and n >= 1000 else SEE))
    rows.append((goals[2], f"{s['detach_p50_ms']:.2f} ms at N={n}", verdict(s["detach_p50_ms"] <= 5)))
    return rows


def compare_goal(doc: dict[str, Any] | None) -> tuple[str, str, str]:
    goal = "CLI attach faster than netavark (same run)"
    results = (doc or {}).get("results", [])
    by = {(r["contender"], r["n"]): r["summary"] for r in results if r.get("summary")}
    common = sorted(n for (c, n) in by if c == "cli" and ("netavark", n) in by)
    if not common:
        return (goal, SEE, SEE)
    n = common[-1]
    cli, net = by[("cli", n)]["attach_p50_ms"], by[("netavark", n)]["attach_p50_ms"]
    return (goal, f"{cli:.1f} vs {net:.1f} ms p50 at N={n}", verdict(cli < net))


def ports_goal(doc: dict[str, Any] | None) -> tuple[str, str, str]:
    goal = "port lookup flat to 10,000 (latency and rate within 5 %)"
    runs = sorted((doc or {}).get("runs", []), key=lambda r: r["ports"])
    if len(runs) < 2:
        return (goal, SEE, SEE)
    small, large = runs[0], runs[-1]
    lat = large["summary"]["map_p50_us"] / small["summary"]["map_p50_us"]
    rate = large["summary"]["map_rate"] / small["summary"]["map_rate"]
    return (goal, f"{large['ports']:,} vs {small['ports']:,} ports: latency {lat:.3f}x, rate {rate:.3f}x",
            verdict(lat <= 1.05 and rate >= 0.95))


def dataplane_measured(target: dict[str, Any]) -> str:
    """A path's ratio to direct, and its reference's (the same path built by hand, no nsnet rules) when
    the run measured one."""
    floor = f"reference {target['reference_ratio']:.3f}, " if "reference_ratio" in target else ""
    return f"{target['ratio']:.3f} ({floor}bridge-nf-call-iptables={target['bridge_nf_call_iptables']})"


def dataplane_goals(doc: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    labels = {("bridge", "gbit_s"): "bridge >= 0.95 of direct-veth throughput",
              ("bridge", "conn_s"): "bridge >= 0.90 of direct-veth connection rate",
              ("nat", "gbit_s"): "NAT >= 0.93 of throughput", ("nat", "conn_s"): "NAT >= 0.70 of connection rate",
              ("dnat", "gbit_s"): "DNAT >= 0.93 of throughput", ("dnat", "conn_s"): "DNAT >= 0.70 of connection rate"}
    targets = (doc or {}).get("targets", [])
    rows = []
    for (path, measure), label in labels.items():
        found = [t for t in targets if t["path"] == path and t["measure"] == measure]
        if not found:
            rows.append((label, SEE, SEE))
            continue
        value = "; ".join(dataplane_measured(t) for t in found)
        rows.append((label, value, " / ".join(verdict(t["met"]) for t in found)))
    return rows


def goals() -> list[tuple[str, str, str]]:
    return [*attach_goals(load("attach")), compare_goal(load("compare")), ports_goal(load("ports")),
            *dataplane_goals(load("dataplane"))]


# RESULTS.md

def write_results(benchmarks: Sequence[Benchmark], quick: bool, started: str, missing: set[str],
                  f: dict[str, str]) -> None:
    out = ["# Benchmark results", "",
           f"Written by `{LAB_COMMAND}{' --quick' if quick else ''}` on {started}"
           + (" (**--quick**: fewer samples, smaller counts; for checking, not for quoting)." if quick else "."),
           "Raw samples: `benchmarks/results/*.json` (ignored by git).", "",
           "## Machine", "",
           f"- {f['nproc']} CPUs (nproc), {f['memory']} memory, kernel {f['kernel']}, Debian {f['Debian']}", "",
           "## Versions", ""]
    out += [f"- {k}: {f[k]}" for k in ("python", "nsnet commit", "nft", "CNI plugins", "netavark", "iperf3", "perf")]
    if missing:
        out += ["", f"Missing and not installable here: {', '.join(sorted(missing))} (what needs them was skipped)."]
    out += ["", "## Goals (issue 5)", "",
            "Read from the JSON results of this run; \"see table\" where the value is not in them. Data-plane "
            "verdicts are given with bridge-nf-call-iptables as the lab has it, then 0; \"reference\" is the same "
            "ratio for the same path built by hand with a Docker-like minimal ruleset and no nsnet rules (the "
            "kernel's floor on this machine).", "",
            "| goal | measured | verdict |", "|---|---|---|"]
    out += [f"| {g} | {m} | {v} |" for g, m, v in goals()]
    for b in benchmarks:
        heading = " ".join([f"{b.script or b.name}.py", *(a for a in b.args if a == "--perf")])
        out += ["", f"## {heading}: {b.title}", "", "```", b.lab_command(), "```", ""]
        if b.skipped:
            out.append(f"Skipped: {b.skipped}.")
            continue
        status = f"exit {b.returncode}, {b.seconds:.0f} s"
        out += [f"({status})", "", "```", printed_tables(b.output) or "(nothing printed)", "```"]
    with open(RESULTS_MD, "w") as handle:
        handle.write("\n".join(out) + "\n")
    print(f"\nwrote {os.path.relpath(RESULTS_MD, ROOT)}")


# Command line

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
                                     epilog=f"run it as: {LAB_COMMAND}")
    parser.add_argument("--quick", action="store_true", help="every benchmark's quick form (~3 minutes)")
    parser.add_argument("--only", metavar="NAME,...", help="run only these benchmarks (attach,ports,compare,"
                        "cli_latency,dataplane,dataplane_perf); RESULTS.md still reads every JSON present")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    problem = isolation_problem()
    if problem is not None:
        sys.stderr.write(f"benchmarks: refusing to run outside an isolated host ({problem}); run: {LAB_COMMAND}\n")
        return 2
    if os.path.abspath(os.getcwd()) != ROOT:
        sys.stderr.write(f"benchmarks: run it from the repository root ({ROOT})\n")
        return 2
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    os.makedirs(RESULTS_DIR, exist_ok=True)
    missing = ensure_packages()
    f = facts()  # before the runs: the commit measured is the one checked out when they start
    benchmarks = plan(args.quick, missing)
    if args.only:
        wanted = set(args.only.split(","))
        for b in benchmarks:
            if b.name not in wanted:
                b.skipped = "not asked for (--only)"
    failed = []
    for b in benchmarks:
        if b.skipped:
            print(f"\n=== {b.name}: skipped ({b.skipped})", flush=True)
            continue
        if os.path.exists(os.path.join(ROOT, b.json_path)):
            os.remove(os.path.join(ROOT, b.json_path))  # no stale result may pass for this run's
        run_benchmark(b)
        if b.returncode != 0:
            failed.append(f"{b.name} (exit {b.returncode})")
    write_results(benchmarks, args.quick, started, missing, f)
    print("\ngoals:")
    for g, m, v in goals():
        print(f"  {v:<10} {g}: {m}")
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
