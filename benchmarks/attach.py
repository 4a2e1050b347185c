"""Control-plane benchmark: how long nsnet takes to attach and detach a sandbox, and how that grows.

Run it from the repository root, inside a throwaway isolated host (it refuses to run anywhere else):

    .venv/bin/nsnet lab -- .venv/bin/python benchmarks/attach.py
    .venv/bin/nsnet lab -- .venv/bin/python benchmarks/attach.py --profile

For each mode and each N, on ONE network (10.40.0.0/16) that starts empty:
- attach: create a sandbox connected to the network (named netns, lo up, veth pair on the bridge,
  address, default route), timed per sandbox, N times in a row;
- detach: remove each sandbox with force (`rm -f`), timed per sandbox, in the order they were made;
- settle: after the last detach returns, how long until the kernel has destroyed the namespaces
  and their veths (it does that asynchronously, so detach times alone hide this cost);
- growth: median of the last N/10 attaches over the median of the first N/10 (100 vs 100 at N=1000).

Modes: `api` uses one in-process `Engine`; `cli` runs one `nsnet create` (and one `nsnet rm -f`)
process per sandbox and times each process's wall time, startup included. `api6` and `cli6` do
the same on a dual-stack network (SUBNET and SUBNET6: an address, a default route and anti-spoofing
elements in each family); `--dual-stack` runs each of them right after its IPv4-only twin at the
same N and prints dual/v4 ratios measured in that run (target: attach p50 <= 1.2x). Every run gets a fresh
state directory and a fresh network, and everything is removed (and checked gone) before the next.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
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
from nsnet.naming import VETH_PREFIX
from nsnet.store import state_dir

from harness import host, leftovers, nsnet_executable, nsnet_links, percentile, refuse_outside_lab, save_json

NETWORK = "bench"
SUBNET = "10.40.0.0/16"
SUBNET6 = "fd00:40::/64"
TARGET_DUAL_STACK_RATIO = 1.2
DEFAULT_COUNTS = "1,100,1000"
CLI_COUNT_LIMIT = 100  # one process per sandbox: N above this is only run when --cli-n asks for it
QUICK_CLI_COUNTS = "1,20"
PROFILE_COUNT = 200
PROFILE_TOP = 25
SETTLE_TIMEOUT_S = 120.0
LAB_COMMAND = ".venv/bin/nsnet lab -- .venv/bin/python benchmarks/attach.py"

# Anchors from /work/shared/DESIGN.md ("Measured anchors", this VM). Their attach also installs
# masquerade and one published port; nsnet installs masquerade once per network, and this
# benchmark publishes no port.
TARGET_API_ATTACH_P50_MS = 10.0
TARGET_API_GROWTH = 1.2
NETAVARK_ATTACH_P50_MS = 59.0  # netavark 1.4 at N=100, growing 44 -> 107 ms over 250 containers
NETAVARK_DETACH_P50_MS = 105.0
CNI_ATTACH_P50_MS = 120.0  # CNI reference plugins 1.1.1, bridge + portmap chain
CNI_DETACH_P50_MS = 230.0


# Drivers: one way each of making and removing sandboxes

class ApiDriver:
    """One in-process Engine for the whole run."""

    def __init__(self, directory: str) -> None:
        self._engine = Engine(state_dir=directory)

    def create_network(self) -> None:
        self._engine.create_network(NETWORK, subnet=SUBNET)

    def attach(self, sandbox: str) -> None:
        self._engine.create_sandbox(sandbox, networks=[NETWORK])

    def detach(self, sandbox: str) -> None:
        self._engine.remove_sandbox(sandbox, force=True)

    def remove_network(self) -> None:
        self._engine.remove_network(NETWORK)

    def close(self) -> None:
        self._engine.close()


class CliDriver:
    """One `nsnet` process per call, the state directory passed as NSNET_STATE_DIR."""

    def __init__(self, directory: str) -> None:
        self._nsnet = nsnet_executable()
        self._env = dict(os.environ, NSNET_STATE_DIR=directory)

    def _run(self, *args: str) -> None:
        done = subprocess.run([self._nsnet, *args], check=False, env=self._env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"`nsnet {' '.join(args)}` exited {done.returncode}: {done.stderr.strip()}")

    def create_network(self) -> None:
        self._run("network", "create", NETWORK, "--subnet", SUBNET)

    def attach(self, sandbox: str) -> None:
        self._run("create", sandbox, "--network", NETWORK)

    def detach(self, sandbox: str) -> None:
        self._run("rm", "-f", sandbox)

    def remove_network(self) -> None:
        self._run("network", "rm", NETWORK)

    def close(self) -> None:
        pass


class DualStackApiDriver(ApiDriver):
    def create_network(self) -> None:
        self._engine.create_network(NETWORK, subnet=[SUBNET, SUBNET6])


class DualStackCliDriver(CliDriver):
    def create_network(self) -> None:
        self._run("network", "create", NETWORK, "--subnet", SUBNET, "--subnet", SUBNET6)


DRIVERS = {"api": ApiDriver, "cli": CliDriver, "api6": DualStackApiDriver, "cli6": DualStackCliDriver}
DUAL_STACK_TWIN = {"api": "api6", "cli": "cli6"}


# One run

@dataclass
class Run:
    mode: str
    n: int
    attach_ms: list[float] = field(default_factory=list)
    detach_ms: list[float] = field(default_factory=list)
    settle_ms: float = 0.0


def sandbox_names(n: int) -> list[str]:
    return [f"sb{i:04d}" for i in range(n)]


def timed_ms(action: Callable[[str], None], name: str) -> float:
    start = time.perf_counter()
    action(name)
    return (time.perf_counter() - start) * 1000.0


def run_once(mode: str, n: int) -> Run:
    """N attaches then N detaches on a fresh network in a fresh state directory, cleaned up after."""
    directory = tempfile.mkdtemp(prefix=f"bench-{mode}-{n}-", dir=state_dir())
    run = Run(mode, n)
    driver = DRIVERS[mode](directory)
    try:
        driver.create_network()
        names = sandbox_names(n)
        run.attach_ms = [timed_ms(driver.attach, name) for name in names]
        run.detach_ms = [timed_ms(driver.detach, name) for name in names]
        run.settle_ms = wait_until_settled()
        driver.remove_network()
    finally:
        driver.close()
        remove_everything(directory)
    return run


# Cleanup and leftovers


def wait_until_settled(timeout_s: float = SETTLE_TIMEOUT_S) -> float:
    """Milliseconds until no sandbox veth is left: the kernel destroys an unpinned namespace, and the
    veths in it, asynchronously (namespace files and /etc/netns go at once, so they are not awaited)."""
    start = time.perf_counter()
    while any(name.startswith(VETH_PREFIX) for name in nsnet_links()):
        if time.perf_counter() - start > timeout_s:
            raise RuntimeError(f"veths still there {timeout_s:.0f} s after the last detach: {nsnet_links()[:10]}")
        time.sleep(0.002)
    return (time.perf_counter() - start) * 1000.0


def remove_everything(directory: str) -> None:
    """Remove whatever a run left (only after a failure is there anything), then its state directory."""
    with Engine(state_dir=directory) as engine:
        for sandbox in engine.sandboxes():
            engine.remove_sandbox(sandbox.name, force=True)
        engine.remove_network(NETWORK, force=True)
    shutil.rmtree(directory)
    wait_until_settled()
    remaining = leftovers()
    if remaining:
        raise RuntimeError(f"left behind after cleanup: {remaining[:10]}")


# Statistics


def growth_window(n: int) -> int:
    """How many attaches the first and last medians are taken over: 100 at N=1000, 10 at N=100."""
    return n // 10


def growth(samples: Sequence[float]) -> float | None:
    window = growth_window(len(samples))
    if window < 1:
        return None
    return statistics.median(samples[-window:]) / statistics.median(samples[:window])


def summary(run: Run) -> dict[str, Any]:
    return {
        "attach_p50_ms": percentile(run.attach_ms, 0.50),
        "attach_p95_ms": percentile(run.attach_ms, 0.95),
        "detach_p50_ms": percentile(run.detach_ms, 0.50),
        "detach_p95_ms": percentile(run.detach_ms, 0.95),
        "attach_growth": growth(run.attach_ms),
        "detach_growth": growth(run.detach_ms),
        "growth_window": growth_window(run.n),
        "settle_ms": run.settle_ms,
    }


# Output

TABLE_HEADERS = ("mode", "N", "attach p50", "attach p95", "detach p50", "detach p95", "growth", "settle")


def table_row(run: Run) -> tuple[str, ...]:
    s = summary(run)
    window = s["growth_window"]
    ratio = f"{s['attach_growth']:.2f}x ({window}/{window})" if s["attach_growth"] is not None else "-"
    return (run.mode, str(run.n), *(f"{s[key]:.2f} ms" for key in
            ("attach_p50_ms", "attach_p95_ms", "detach_p50_ms", "detach_p95_ms")),
            ratio, f"{s['settle_ms']:.0f} ms")


def print_table(runs: Sequence[Run]) -> None:
    rows = [TABLE_HEADERS] + [table_row(run) for run in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEADERS))]
    for row in rows:
        print("  ".join(cell.ljust(width) if i < 2 else cell.rjust(width)
                        for i, (cell, width) in enumerate(zip(row, widths, strict=True))))
    print("growth = median of the last N/10 attaches / median of the first N/10; settle = from the last "
          "detach until the kernel has destroyed every namespace and veth")


def closest_to_anchor(runs: Sequence[Run], mode: str) -> Run | None:
    """The run of `mode` nearest N=100, where the anchors were measured."""
    return min((run for run in runs if run.mode == mode), key=lambda run: abs(run.n - 100), default=None)


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def target_lines(runs: Sequence[Run]) -> list[str]:
    api = [run for run in runs if run.mode == "api"]
    if not api:
        return []
    worst = max(api, key=lambda run: summary(run)["attach_p50_ms"])
    p50 = summary(worst)["attach_p50_ms"]
    lines = [f"API attach p50 <= {TARGET_API_ATTACH_P50_MS:.0f} ms: worst {p50:.2f} ms (N={worst.n}), "
             f"{verdict(p50 <= TARGET_API_ATTACH_P50_MS)}"]
    largest = max(api, key=lambda run: run.n)
    ratio = summary(largest)["attach_growth"]
    if ratio is not None:
        lines.append(f"API growth <= {TARGET_API_GROWTH}x: {ratio:.2f}x over {largest.n}, "
                     f"{verdict(ratio <= TARGET_API_GROWTH)}")
    return lines


def anchor_line(run: Run) -> str:
    s = summary(run)
    attach, detach = s["attach_p50_ms"], s["detach_p50_ms"]
    return (f"{run.mode} at N={run.n}: attach p50 {attach:.2f} ms = {attach / NETAVARK_ATTACH_P50_MS:.2f}x "
            f"netavark 1.4 ({NETAVARK_ATTACH_P50_MS:.0f} ms at N=100, 44 -> 107 ms over 250), "
            f"{attach / CNI_ATTACH_P50_MS:.2f}x CNI bridge+portmap ({CNI_ATTACH_P50_MS:.0f} ms); "
            f"detach p50 {detach:.2f} ms = {detach / NETAVARK_DETACH_P50_MS:.2f}x netavark "
            f"({NETAVARK_DETACH_P50_MS:.0f} ms), {detach / CNI_DETACH_P50_MS:.2f}x CNI ({CNI_DETACH_P50_MS:.0f} ms)")


def dual_stack_lines(runs: Sequence[Run]) -> list[str]:
    """Each dual-stack run against its IPv4-only twin at the same N, from the same run."""
    by_key = {(run.mode, run.n): summary(run) for run in runs}
    lines = []
    for (mode, n), dual in by_key.items():
        if mode not in DUAL_STACK_TWIN.values():
            continue
        v4 = by_key.get((mode[:-1], n))
        if v4 is None:
            continue
        ratio = dual["attach_p50_ms"] / v4["attach_p50_ms"]
        line = (f"{mode} / {mode[:-1]} at N={n}: attach p50 {dual['attach_p50_ms']:.2f} / {v4['attach_p50_ms']:.2f} ms"
                f" = {ratio:.2f}x (<= {TARGET_DUAL_STACK_RATIO}x: {verdict(ratio <= TARGET_DUAL_STACK_RATIO)}), "
                f"detach p50 {dual['detach_p50_ms']:.2f} / {v4['detach_p50_ms']:.2f} ms = "
                f"{dual['detach_p50_ms'] / v4['detach_p50_ms']:.2f}x")
        if dual["attach_growth"] is not None and v4["attach_growth"] is not None:
            line += f", growth {dual['attach_growth']:.2f}x / {v4['attach_growth']:.2f}x"
        lines.append(line)
    return lines


def print_targets(runs: Sequence[Run]) -> None:
    print("\nTargets and anchors (the anchors' attach also publishes one port; this one does not):")
    anchored = [run for run in (closest_to_anchor(runs, mode) for mode in ("api", "cli")) if run is not None]
    for line in target_lines(runs) + [anchor_line(run) for run in anchored] + dual_stack_lines(runs):
        print(f"  {line}")


def write_json(path: str, runs: Sequence[Run], started: str) -> None:
    document = {
        "benchmark": "nsnet attach/detach",
        "network": {"name": NETWORK, "subnet": SUBNET},
        "nsnet": {"version": nsnet.__version__, "path": os.path.dirname(nsnet.__file__)},
        "host": host(),
        "started": started,
        "runs": [{**asdict(run), "summary": summary(run)} for run in runs],
    }
    save_json(path, document)


# Profile mode

def profile_attach(count: int = PROFILE_COUNT, top: int = PROFILE_TOP) -> None:
    """cProfile over `count` API attaches on a fresh network; prints the top functions by cumulative time.

    Work that nsnet does in its short-lived namespace helper threads shows up as the main thread
    waiting (thread start/join), since cProfile only sees the thread it was enabled in.
    """
    directory = tempfile.mkdtemp(prefix="bench-profile-", dir=state_dir())
    names = sandbox_names(count)
    profiler = cProfile.Profile()
    try:
        with Engine(state_dir=directory) as engine:
            engine.create_network(NETWORK, subnet=SUBNET)
            profiler.enable()
            for name in names:
                engine.create_sandbox(name, networks=[NETWORK])
            profiler.disable()
            for name in names:
                engine.remove_sandbox(name, force=True)
            wait_until_settled()
            engine.remove_network(NETWORK)
    finally:
        profiler.disable()
        remove_everything(directory)
    print(f"cProfile of {count} API attaches (create_sandbox with one network), top {top} by cumulative time:")
    pstats.Stats(profiler).strip_dirs().sort_stats("cumulative").print_stats(top)


# Where attach time grows with N

BREAKDOWN_COUNT = 1000


@contextmanager
def timed_calls(targets: list[tuple[Any, str, Any]]) -> Iterator[dict[str, list[float]]]:
    """Every call of each (object, attribute) timed under its label (a string, or a function of the
    call's arguments that names it), for as long as the block runs."""
    times: dict[str, list[float]] = {label: [] for _, _, label in targets if isinstance(label, str)}
    originals = [(obj, name, getattr(obj, name)) for obj, name, _ in targets]

    def timed(function: Callable[..., Any], label: str | Callable[..., str]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                key = label(*args) if callable(label) else label
                times.setdefault(key, []).append(time.perf_counter() - start)
        return call

    for (obj, name, original), (_, _, label) in zip(originals, targets):
        setattr(obj, name, timed(original, label))
    try:
        yield times
    finally:
        for obj, name, original in originals:
            setattr(obj, name, original)


def breakdown_attach(count: int = BREAKDOWN_COUNT, dual_stack: bool = False) -> None:
    """Each kernel step of an API attach timed on its own, first tenth of `count` attaches against
    the last: which steps grow with the number of sandboxes on one bridge (a dual-stack one with
    `dual_stack`)."""
    from nsnet.kernel import linux, rtnl, sysctl

    def sysctl_label(key: str, *_: Any) -> str:
        return "sysctl: default.disable_ipv6 (new netns)" if ".default." in key else "sysctl: host veth disable_ipv6"

    targets = [(linux.LinuxKernel, name, f"kernel.{name}") for name in
               ("create_netns", "write_etc_files", "nft", "create_veth", "enable_ipv6", "add_address",
                "replace_default_route")]
    targets += [(rtnl.RtnlSocket, "create_veth", "  rtnl: RTM_NEWLINK veth (+ peer, master, up)"),
                (rtnl.RtnlSocket, "set_port_flags", "  rtnl: bridge port flags (hairpin, isolated)"),
                (rtnl.RtnlSocket, "set_up", "  rtnl: set up (lo, peer)"),
                (sysctl, "write", sysctl_label)]
    directory = tempfile.mkdtemp(prefix="bench-breakdown-", dir=state_dir())
    names = sandbox_names(count)
    totals: list[float] = []
    try:
        with Engine(state_dir=directory) as engine:
            engine.create_network(NETWORK, subnet=[SUBNET, SUBNET6] if dual_stack else SUBNET)
            with timed_calls(targets) as times:
                for name in names:
                    start = time.perf_counter()
                    engine.create_sandbox(name, networks=[NETWORK])
                    totals.append(time.perf_counter() - start)
            for name in names:
                engine.remove_sandbox(name, force=True)
            wait_until_settled()
            engine.remove_network(NETWORK)
    finally:
        remove_everything(directory)
    tenth = max(count // 10, 1)

    def first_last(per_attach: list[float]) -> tuple[float, float]:
        return statistics.median(per_attach[:tenth]) * 1e3, statistics.median(per_attach[-tenth:]) * 1e3

    a, b = first_last(totals)
    print(f"attach steps, median ms of the first {tenth} and the last {tenth} of {count} attaches on one bridge:")
    print(f"  {'whole attach':<46} {a:7.3f} -> {b:7.3f}  (+{b - a:.3f})")
    for label, samples in times.items():
        if len(samples) % count:
            continue  # not once (or a fixed number of times) per attach
        per = len(samples) // count
        per_attach = [sum(samples[i * per:(i + 1) * per]) for i in range(count)]
        a, b = first_last(per_attach)
        print(f"  {label:<46} {a:7.3f} -> {b:7.3f}  (+{b - a:.3f})" + (f"  ({per} calls)" if per > 1 else ""))


# Command line

def counts(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give positive counts, for example 1,100,1000")
    return values


def modes(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [value for value in values if value not in DRIVERS]
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: modes are {', '.join(DRIVERS)}")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=f"run it as: {LAB_COMMAND}")
    parser.add_argument("--n", type=counts, default=counts(DEFAULT_COUNTS), metavar="N,...",
                        help=f"sandbox counts for the API (default {DEFAULT_COUNTS})")
    parser.add_argument("--cli-n", type=counts, metavar="N,...",
                        help=f"sandbox counts for the CLI (default: the --n values up to {CLI_COUNT_LIMIT})")
    parser.add_argument("--modes", type=modes, default=["api", "cli"], metavar="api,cli",
                        help="which ways of attaching to measure (default api,cli; also api6, cli6: dual stack)")
    parser.add_argument("--dual-stack", action="store_true",
                        help="run each mode on a dual-stack network too, right after it, and print the ratios")
    parser.add_argument("--quick", action="store_true",
                        help=f"CLI at N={QUICK_CLI_COUNTS} only (the API runs take seconds; for debugging)")
    parser.add_argument("--json", metavar="PATH", help="write every sample and the summaries as JSON")
    parser.add_argument("--breakdown", action="store_true",
                        help=f"only time each kernel step of {BREAKDOWN_COUNT} API attaches, first tenth against last")
    parser.add_argument("--profile", action="store_true",
                        help=f"only profile {PROFILE_COUNT} API attaches and print the top {PROFILE_TOP} functions")
    return parser.parse_args(argv)


def plan_runs(args: argparse.Namespace) -> list[tuple[str, int]]:
    if args.quick and not args.cli_n:
        args.cli_n = counts(QUICK_CLI_COUNTS)
    cli_counts = args.cli_n or [n for n in args.n if n <= CLI_COUNT_LIMIT]
    plan = []
    for mode in args.modes:
        for n in cli_counts if mode.startswith("cli") else args.n:
            plan.append((mode, n))
            if args.dual_stack and mode in DUAL_STACK_TWIN:
                plan.append((DUAL_STACK_TWIN[mode], n))
    if "cli" in args.modes:
        how = ("from --cli-n" if args.cli_n
               else f"default: the --n values up to {CLI_COUNT_LIMIT}; ask for more with --cli-n")
        print(f"CLI runs at N = {','.join(map(str, cli_counts)) or 'none'} ({how})")
    return plan


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    refuse_outside_lab()
    print(f"nsnet {nsnet.__version__} from {os.path.dirname(nsnet.__file__)}")
    if args.profile:
        profile_attach()
        return 0
    if args.breakdown:
        breakdown_attach(dual_stack=args.dual_stack)
        return 0
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    runs = []
    for mode, n in plan_runs(args):
        print(f"running {mode} N={n} ...", flush=True)
        runs.append(run_once(mode, n))
    print()
    print_table(runs)
    print_targets(runs)
    if args.json:
        write_json(args.json, runs, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
