"""An isolated host: a throwaway network namespace and mount namespace to run nsnet in.

Inside, nsnet sees an empty host (only `lo`), and /run/netns, /etc/netns and its state directory
are private tmpfs mounts, so nothing it makes can touch or outlive the real machine: when the last
process of the lab exits, the kernel reclaims every namespace, link and rule made inside it.
Tests, benchmarks and the demo all run in one (`nsnet lab -- CMD`).
"""

from __future__ import annotations

import os
import signal

from .kernel.netns import CLONE_NEWNET, CLONE_NEWNS, MS_PRIVATE, MS_REC, kill, mount, pids_in_namespace, umount, unshare
from .kernel.rtnl import RtnlSocket
from .naming import ETC_NETNS_DIR, NETNS_DIR
from .store import state_dir

LAB_ENV = "NSNET_LAB"
INIT_NETNS_INODE = 0xEFFFFFF9  # PROC_NET_INIT_INO: the inode of the machine's first network namespace


def enter() -> None:
    """Move this (single-threaded) process into a new isolated host. Call before starting threads."""
    unshare(CLONE_NEWNET | CLONE_NEWNS)
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    for directory, mode in ((NETNS_DIR, "0755"), (ETC_NETNS_DIR, "0755"), (state_dir(), "0700")):
        os.makedirs(directory, mode=0o755, exist_ok=True)
        mount("tmpfs", directory, "tmpfs", 0, f"mode={mode}")
    # sysfs shows the interfaces of the namespace that mounted it; remount it for this one.
    umount("/sys")
    mount("sysfs", "/sys", "sysfs", 0)
    lo = RtnlSocket()
    lo.set_up(1, "lo")
    lo.close()
    os.environ[LAB_ENV] = str(os.getpid())


def run(argv: list[str]) -> int:
    """Run argv (a shell when empty) in a new isolated host; when it exits, end every process
    still running in that host, so nothing outlives it (a server left in the background would
    otherwise keep the namespace, and everything in it, alive). Returns argv's exit status."""
    enter()
    argv = argv or [os.environ.get("SHELL", "/bin/sh")]
    child = os.fork()
    if child == 0:
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            os.write(2, f"nsnet lab: {argv[0]}: {exc.strerror}\n".encode())
            os._exit(127)
    # The terminal's signals reach the command directly; the lab waits for it.
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP):
        signal.signal(sig, signal.SIG_IGN)
    _, status = os.waitpid(child, 0)
    kill([pid for pid in _pids_left() if pid != os.getpid()])
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _pids_left() -> list[int]:
    """Processes still in the lab's network namespace or in one pinned under its private
    /run/netns (a sandbox's, or one made with `ip netns add`): a daemon started in a sandbox
    would otherwise outlive the lab."""
    namespaces = {os.stat("/proc/self/ns/net").st_ino}
    for entry in os.listdir(NETNS_DIR):
        try:
            namespaces.add(os.stat(os.path.join(NETNS_DIR, entry)).st_ino)
        except OSError:
            continue
    return [pid for namespace in namespaces for pid in pids_in_namespace(namespace)]


def _ns_inode(pid: int | str) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def _parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


def _is_self_or_ancestor(pid: int) -> bool:
    current = os.getpid()
    while current > 1:
        if current == pid:
            return True
        current = _parent_pid(current)
    return False


def _tmpfs_mount_points() -> set[str]:
    points = set()
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields, _, rest = line.partition(" - ")
            if rest.split()[0] == "tmpfs":
                points.add(fields.split()[4])
    return points


def isolation_problem() -> str | None:
    """Why this process is not provably inside an isolated host, or None when it is.

    For tests, benchmarks and demos that make namespaces, links and rules. It fails closed: an
    environment variable alone proves nothing, so NSNET_LAB must name this process or an
    ancestor, whose parent (the shell that ran `nsnet lab`) is in another network namespace, and
    the lab's private tmpfs mounts must be in place.
    """
    lab_pid = os.environ.get(LAB_ENV)
    if not lab_pid:
        return f"{LAB_ENV} is not set"
    try:
        ours = _ns_inode("self")
        if ours == INIT_NETNS_INODE:
            return "this is the machine's initial network namespace"
        if not lab_pid.isdigit() or not _is_self_or_ancestor(int(lab_pid)):
            return f"{LAB_ENV}={lab_pid} is not this process or one of its ancestors"
        if _ns_inode(_parent_pid(int(lab_pid))) == ours:
            return "the lab's parent shares this network namespace"
        missing = {NETNS_DIR, ETC_NETNS_DIR, state_dir()} - _tmpfs_mount_points()
        if missing:
            return f"no private tmpfs on {', '.join(sorted(missing))}"
    except (OSError, ValueError, IndexError) as exc:
        return f"cannot verify isolation ({exc})"
    return None
