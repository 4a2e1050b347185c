"""What the benchmarks share: the isolated-host check, percentiles, the source they measured, and
a private snapshot of nsnet to measure. Each benchmark is run as a script (`python
benchmarks/NAME.py`), so this module is imported from the script's own directory."""

from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import nsnet
from nsnet import lab
from nsnet.kernel.netns import CLONE_NEWNS, MS_PRIVATE, MS_REC, mount, unshare
from nsnet.lab import isolation_problem
from nsnet.naming import BRIDGE_PREFIX, ETC_NETNS_DIR, NETNS_DIR, VETH_PREFIX

SNAPSHOT_ENV = "NSNET_BENCH_SNAPSHOT"
SOURCE_ENV = "NSNET_BENCH_SOURCE"


def script_name() -> str:
    return os.path.basename(sys.argv[0])


def refuse_outside_lab() -> None:
    """Everything a benchmark makes (namespaces, links, rules) belongs in a throwaway isolated host."""
    problem = isolation_problem()
    if problem is not None:
        command = f".venv/bin/nsnet lab -- .venv/bin/python benchmarks/{script_name()}"
        sys.stderr.write(f"{script_name()}: refusing to run outside an isolated host ({problem}); run: {command}\n")
        sys.exit(2)


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default); q in [0, 1]."""
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def nsnet_executable() -> str:
    """The `nsnet` entry point: the snapshot's copy of the venv's (see run_from_snapshot), or the venv's."""
    snapshot = os.environ.get(SNAPSHOT_ENV)
    if snapshot and os.path.exists(os.path.join(snapshot, "bin", "nsnet")):
        return os.path.join(snapshot, "bin", "nsnet")
    found = shutil.which("nsnet", path=os.path.dirname(sys.executable))
    if found is None:
        raise SystemExit(f"{script_name()}: no nsnet entry point next to {sys.executable}; "
                         "run it with the venv's python")
    return found


def source_state() -> str:
    """The commit nsnet was measured at, and whether its src/ had uncommitted changes."""
    if os.environ.get(SOURCE_ENV):
        return os.environ[SOURCE_ENV]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head or 'unknown'}{f' + {len(dirty)} uncommitted src files' if dirty else ''}"


def tree_digest(directory: str) -> str:
    """A short digest of every file under directory (names and contents), to tell snapshots apart."""
    import hashlib

    digest = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(directory)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, directory).encode())
            with open(path, "rb") as handle:
                digest.update(handle.read())
    return digest.hexdigest()[:12]


def run_from_snapshot(argv: Sequence[str]) -> None:
    """Re-execute this benchmark on a private copy of nsnet's package, first on PYTHONPATH, and of the
    venv's `nsnet` console script, so that edits made to src/ (or a reinstall) while it runs cannot
    mix two versions in one measurement; every process it starts (the CLI included) inherits the
    copy. The copy is removed by remove_snapshot."""
    if os.environ.get(SNAPSHOT_ENV):
        return
    snapshot = tempfile.mkdtemp(prefix="nsnet-bench-src-")  # under /tmp: every phase's host sees it
    entry_point = nsnet_executable()  # the console script imports a name of nsnet.cli: copied with it
    shutil.copytree(os.path.dirname(nsnet.__file__), os.path.join(snapshot, "nsnet"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    os.makedirs(os.path.join(snapshot, "bin"))
    shutil.copy2(entry_point, os.path.join(snapshot, "bin", "nsnet"))
    os.environ[SNAPSHOT_ENV] = snapshot
    os.environ[SOURCE_ENV] = f"{source_state()}, snapshot {tree_digest(os.path.join(snapshot, 'nsnet'))}"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [snapshot, os.environ.get("PYTHONPATH")]))
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, os.path.abspath(sys.argv[0]), *argv])


def remove_snapshot() -> None:
    snapshot = os.environ.get(SNAPSHOT_ENV)
    if snapshot and os.path.dirname(nsnet.__file__) == os.path.join(snapshot, "nsnet"):
        shutil.rmtree(snapshot, ignore_errors=True)


def nsnet_links() -> list[str]:
    return [name for name in os.listdir("/sys/class/net") if name.startswith((VETH_PREFIX, BRIDGE_PREFIX))]


def leftovers(tables: Sequence[str] = ()) -> list[str]:
    """What a benchmark may have left in its (lab) host: nsnet's interfaces, pinned namespaces,
    /etc/netns directories, and nft tables whose name holds one of `tables`."""
    found = [f"link {name}" for name in nsnet_links()]
    for directory in (NETNS_DIR, ETC_NETNS_DIR):
        if os.path.isdir(directory):
            found += [os.path.join(directory, entry) for entry in os.listdir(directory)]
    if tables:
        listing = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        found += [line for line in listing.splitlines() if any(t in line for t in tables)]
    return found


# A fresh host per phase (compare.py, topology.py): every contender starts from an empty host, and
# whatever a phase left dies with its namespaces.

PRIVATE_DIRS = ("/run", "/var/lib")
_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def enter_fresh_host() -> None:
    """Make this (forked, single-threaded) child a new isolated host nested in the lab."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # never outlive the benchmark
    unshare(CLONE_NEWNS)
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    for directory in PRIVATE_DIRS:
        mount("tmpfs", directory, "tmpfs", 0, "mode=0755")
    lab.enter()  # new netns + mount ns, tmpfs on /run/netns, /etc/netns, the state dir; lo up
    problem = isolation_problem()
    if problem is not None:
        raise RuntimeError(f"the phase's host is not isolated: {problem}")


def in_fresh_host(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) in a forked child that is a fresh isolated host; its JSON-able result comes back by pipe."""
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        code = 0
        try:
            enter_fresh_host()
            payload = {"result": fn(*args)}
        except BaseException:  # noqa: BLE001 - everything goes back to the parent
            payload = {"error": traceback.format_exc()}
            code = 1
        try:
            with os.fdopen(write_end, "w") as out:
                json.dump(payload, out)
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        with os.fdopen(read_end) as incoming:
            text = incoming.read()
        os.waitpid(child, 0)
    except BaseException:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        raise
    payload = json.loads(text) if text else {"error": "the phase's process died without a result"}
    if "error" in payload:
        raise RuntimeError(f"phase {fn.__name__}{args} failed:\n{payload['error']}")
    return payload["result"]


def host() -> dict[str, Any]:
    """The machine a JSON result was measured on."""
    return {"kernel": platform.release(), "python": platform.python_version(), "cpus": os.cpu_count()}


def save_json(path: str, document: dict[str, Any]) -> None:
    """A benchmark's raw samples and summaries (benchmarks/results/ is ignored by git)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
    print(f"\nraw samples written to {path}")
