"""CLI latency: the wall time of one `nsnet` process per verb, against the interpreter's own floor,
and which modules each verb imports.

Run it from the repository root, inside a throwaway isolated host (it refuses to run anywhere else):

    .venv/bin/nsnet lab -- .venv/bin/python benchmarks/cli_latency.py

Setup (not timed): one network `bench` (10.40.0.0/16) and 20 sandboxes on it, each publishing one
port (sb0000..sb0019, host ports 10000..10019 to 80), made through the API in a fresh state directory
that every command gets as NSNET_STATE_DIR.

Timed, ROUNDS times each after WARMUP untimed rounds, wall time of the whole process as a caller
sees it (fork, exec, interpreter startup, imports, work, exit):
- `python -c pass` with the venv's interpreter: the floor every Python CLI pays;
- `nsnet --help`, `nsnet network ls`, `nsnet ps`, `nsnet inspect sb0007`;
- `nsnet create latN --network bench -p PORT:80` then `nsnet rm -f latN` (what compare.py's cli
  contender does per sandbox), and the same create without `-p` then its `rm -f`.
Each round runs every block once, the blocks in an order rotated by the round, so the VM's drift
is spread over all of them. Reported: median, p95, min, and the median minus the floor's.

Then each verb once more under `python -X importtime`: how many modules it imports beyond the
floor, their total import time, nsnet's own modules, the heaviest top-level imports, and whether
pyroute2 is among them (it must not be for --help, ls, ps and inspect).
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
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import nsnet
from nsnet.store import state_dir

from harness import (
    nsnet_executable, percentile, refuse_outside_lab, remove_snapshot, run_from_snapshot, save_json, source_state,
)

LAB_COMMAND = ".venv/bin/nsnet lab -- .venv/bin/python benchmarks/cli_latency.py"
NETWORK, SUBNET = "bench", "10.40.0.0/16"
SANDBOXES = 20
INSPECTED = "sb0007"
ROUNDS = 15
QUICK_ROUNDS = 5
WARMUP = 2
MUST_NOT_IMPORT_PYROUTE2 = ("--help", "network ls", "ps", "inspect")
HEAVY_MS = 2.0  # top-level imports at least this expensive are listed


@dataclass
class Command:
    label: str
    argv: list[str]
    samples: list[float] = field(default_factory=list)


def run(argv: Sequence[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(list(argv), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=False, timeout=60)
    elapsed = (time.perf_counter() - start) * 1000.0
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` exited {done.returncode}: {done.stderr.strip()}")
    return elapsed


def blocks(exe: str, nsnet_cli: str, tag: str, round_index: int) -> list[list[Command]]:
    """The commands of one round, grouped where order matters (a create before its rm)."""
    with_port, without = f"latp{tag}{round_index:03d}", f"lat{tag}{round_index:03d}"
    port = 20000 + 100 * int(tag) + round_index
    return [
        [Command("python -c pass (floor)", [exe, "-c", "pass"])],
        [Command("--help", [nsnet_cli, "--help"])],
        [Command("network ls", [nsnet_cli, "network", "ls"])],
        [Command("ps", [nsnet_cli, "ps"])],
        [Command("inspect", [nsnet_cli, "inspect", INSPECTED])],
        [Command("create -p", [nsnet_cli, "create", with_port, "--network", NETWORK, "-p", f"{port}:80"]),
         Command("rm -f (of create -p)", [nsnet_cli, "rm", "-f", with_port])],
        [Command("create", [nsnet_cli, "create", without, "--network", NETWORK]),
         Command("rm -f", [nsnet_cli, "rm", "-f", without])],
    ]


def measure(exe: str, nsnet_cli: str, variants: Sequence[tuple[str, dict[str, str]]], rounds: int,
            warmup: int) -> dict[str, dict[str, Command]]:
    """{variant: {label: Command}}; per round, every group once in a rotated order, each group run
    under every variant in turn, so drift hits all of them alike."""
    results: dict[str, dict[str, Command]] = {name: {} for name, _ in variants}
    for round_index in range(warmup + rounds):
        order = list(range(len(blocks(exe, nsnet_cli, "0", 0))))
        shift = round_index % len(order)
        for position in order[shift:] + order[:shift]:
            for tag, (name, env) in enumerate(variants):
                for command in blocks(exe, nsnet_cli, str(tag), round_index)[position]:
                    elapsed = run(command.argv, env)
                    if round_index >= warmup:
                        kept = results[name].setdefault(command.label, Command(command.label, command.argv))
                        kept.samples.append(elapsed)
    for name in results:  # table order = the blocks' order
        labels = [c.label for group in blocks(exe, nsnet_cli, "0", 0) for c in group]
        results[name] = {label: results[name][label] for label in labels}
    return results


def bytecode_variants(cache: str) -> list[tuple[str, dict[str, str]]]:
    """The CLI as installed (bytecode cached, in a private PYTHONPYCACHEPREFIX tree so src/ is not
    written), and the CLI in this environment as it is (which may forbid writing bytecode)."""
    cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cached["PYTHONPYCACHEPREFIX"] = cache
    as_is = dict(os.environ)
    if sys.flags.dont_write_bytecode or os.environ.get("PYTHONDONTWRITEBYTECODE"):
        label = "environment as is: PYTHONDONTWRITEBYTECODE is set and the editable src/ has no __pycache__, " \
                "so nsnet is compiled from source on every run"
    else:
        label = "environment as is"
    return [("bytecode cached (as after pip install)", cached), (label, as_is)]


# Imports

IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


def imports(argv: Sequence[str], env: dict[str, str]) -> list[tuple[str, int, int, int]]:
    """(module, self us, cumulative us, depth) for every module the command imports."""
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"importtime of {' '.join(argv)} exited {done.returncode}: {done.stderr[-500:]}")
    found = []
    for line in done.stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if match:
            found.append((match.group(4), int(match.group(1)), int(match.group(2)), len(match.group(3)) // 2))
    return found


def import_report(label: str, argv: Sequence[str], env: dict[str, str], floor: set[str]) -> dict[str, Any]:
    found = imports(argv, env)
    extra = [m for m in found if m[0] not in floor]
    top = sorted((m for m in extra if m[3] == 0 and m[2] >= HEAVY_MS * 1000), key=lambda m: -m[2])
    names = {m[0] for m in found}
    return {
        "label": label,
        "modules": len(extra),
        "import_ms": sum(m[1] for m in extra) / 1000.0,
        "pyroute2": any(n == "pyroute2" or n.startswith("pyroute2.") for n in names),
        "pyroute2_modules": sum(1 for n in names if n == "pyroute2" or n.startswith("pyroute2.")),
        "nsnet": sorted(n for n in names if n == "nsnet" or n.startswith("nsnet.")),
        "heavy": [(m[0], m[2] / 1000.0) for m in top],
        "notable": sorted(n for n in names & {"nftables", "sqlite3", "subprocess", "json", "ipaddress", "ctypes",
                                              "threading", "argparse", "dataclasses", "typing", "socket"}),
    }


# Output


FLOOR = "python -c pass (floor)"


def print_latency(results: dict[str, dict[str, Command]]) -> None:
    (first, cached), (second, as_is) = results.items()
    floor = statistics.median(cached[FLOOR].samples)
    headers = ("command", "median ms", "p95 ms", "min ms", "over floor", "| as is: median", "p95")
    rows = [headers]
    for label, command in cached.items():
        median = statistics.median(command.samples)
        other = as_is[label].samples
        rows.append((label, f"{median:.1f}", f"{percentile(command.samples, 0.95):.1f}",
                     f"{min(command.samples):.1f}", f"{median - floor:+.1f}",
                     f"{statistics.median(other):.1f}", f"{percentile(other, 0.95):.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    for row in rows:
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    runs = len(cached[FLOOR].samples)
    print(f"wall time of one process, {runs} runs each after {WARMUP} untimed, {SANDBOXES} sandboxes and 1 network "
          f"present;\nleft: {first}; right: {second}")


def print_imports(reports: list[dict[str, Any]]) -> None:
    print("\nImports per verb (python -X importtime, bytecode cached; modules beyond `python -c pass`;"
          " importtime's own overhead inflates the ms):")
    for r in reports:
        verdict = ""
        if r["label"] in MUST_NOT_IMPORT_PYROUTE2:
            verdict = " (must not: VIOLATION)" if r["pyroute2"] else " (must not: ok)"
        pyroute2 = f"yes, {r['pyroute2_modules']} modules" if r["pyroute2"] else "no"
        print(f"  {r['label']}: {r['modules']} modules, {r['import_ms']:.1f} ms of imports "
              f"({r['import_ms_as_is']:.1f} ms as is); pyroute2: {pyroute2}{verdict}")
        print(f"      nsnet: {', '.join(n.removeprefix('nsnet.') for n in r['nsnet'])}")
        print(f"      heaviest top-level (cumulative ms): "
              f"{', '.join(f'{n} {ms:.1f}' for n, ms in r['heavy']) or 'none over ' + str(HEAVY_MS)}")
        print(f"      of note: {', '.join(r['notable'])}")


# Command line

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=f"run it as: {LAB_COMMAND}")
    parser.add_argument("--rounds", type=int, help=f"timed runs per command (default {ROUNDS}; --quick {QUICK_ROUNDS})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROUNDS} timed runs per command (for debugging)")
    parser.add_argument("--json", metavar="PATH", help="write every sample and the import reports as JSON")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = QUICK_ROUNDS if args.quick else ROUNDS
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    refuse_outside_lab()
    run_from_snapshot(sys.argv[1:] if argv is None else argv)
    try:
        return measure_all(args)
    finally:
        remove_snapshot()


def measure_all(args: argparse.Namespace) -> int:
    from nsnet import Engine

    nsnet_cli = nsnet_executable()
    directory = tempfile.mkdtemp(prefix="cli-latency-", dir=state_dir())
    cache = tempfile.mkdtemp(prefix="cli-latency-pycache-", dir=state_dir())
    variants = [(name, dict(env, NSNET_STATE_DIR=directory)) for name, env in bytecode_variants(cache)]
    print(f"nsnet {nsnet.__version__} ({source_state()}) from {os.path.dirname(nsnet.__file__)}; "
          f"python {sys.version.split()[0]}")
    try:
        with Engine(state_dir=directory) as engine:
            engine.create_network(NETWORK, subnet=SUBNET)
            for index in range(SANDBOXES):
                engine.create_sandbox(f"sb{index:04d}", networks=[NETWORK], publish=[f"{10000 + index}:80"])
        results = measure(sys.executable, nsnet_cli, variants, args.rounds, WARMUP)
        (_, cached), (_, as_is) = variants
        floor = {m[0] for m in imports(["-c", "pass"], cached)}
        verbs = [("--help", ["--help"]), ("network ls", ["network", "ls"]), ("ps", ["ps"]),
                 ("inspect", ["inspect", INSPECTED]),
                 ("create -p", ["create", "imp", "--network", NETWORK, "-p", "30000:80"]),
                 ("rm -f", ["rm", "-f", "imp"])]
        reports = []
        for label, verb in verbs:
            report = import_report(label, [nsnet_cli, *verb], cached, floor)
            if label == "create -p":  # the same create again, as is, needs the name free
                run([nsnet_cli, "rm", "-f", "imp"], cached)
            report["import_ms_as_is"] = import_report(label, [nsnet_cli, *verb], as_is, floor)["import_ms"]
            reports.append(report)
    finally:
        with Engine(state_dir=directory) as engine:
            for sandbox in engine.sandboxes():
                engine.remove_sandbox(sandbox.name, force=True)
            engine.remove_network(NETWORK, force=True)
        shutil.rmtree(directory)
        shutil.rmtree(cache)
    print()
    print_latency(results)
    print_imports(reports)
    if args.json:
        latency = {variant: {c.label: {"argv": c.argv, "samples_ms": c.samples} for c in commands.values()}
                   for variant, commands in results.items()}
        save_json(args.json, {"nsnet_source": source_state(), "latency": latency, "imports": reports})
    return 0


if __name__ == "__main__":
    sys.exit(main())
