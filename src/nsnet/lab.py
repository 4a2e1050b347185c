"""An isolated host: throwaway network, mount and pid namespaces to run nsnet in.

Inside, nsnet sees an empty host (only `lo`), and /run/netns, /etc/netns and its state directory
are private tmpfs mounts, so nothing it makes can touch the real machine; /etc/resolv.conf is the
lab's own and names no reachable server, so its resolver forwards nowhere the lab did not make. Every process of the lab
lives in its pid namespace, whatever network namespace it moves to (a sandbox's, one made with
`unshare -n`): when the command exits, the lab's init exits and the kernel ends them all, and with
the last of them every namespace, link and rule made inside. Tests, benchmarks and the demo all
run in one (`nsnet lab -- CMD`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import tempfile

from .kernel.netns import CLONE_NEWNET, CLONE_NEWNS, MS_BIND, MS_PRIVATE, MS_REC, mount, umount, unshare
from .kernel.rtnl import RtnlSocket
from .naming import ETC_NETNS_DIR, NETNS_DIR
from .store import state_dir

LAB_ENV = "NSNET_LAB"
LAB_RESOLV_CONF = ("# nsnet lab: no upstream resolver (a test binds its own over this file)\n"
                   "nameserver 192.0.2.53\noptions timeout:1 attempts:1\n")  # the inode of the lab's pid namespace
CLONE_NEWPID = 0x20000000
INIT_NETNS_INODE = 0xEFFFFFF9  # PROC_NET_INIT_INO: the inode of the machine's first network namespace
INIT_PIDNS_INODE = 0xEFFFFFFC  # PROC_PID_INIT_INO: the same for pid namespaces
PR_SET_PDEATHSIG = 1
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
MS_MOVE = 0x2000
CGROUP_DIR = "/sys/fs/cgroup"
TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP)

_libc = ctypes.CDLL(None, use_errno=True)


def enter() -> None:
    """Move this (single-threaded) process into a new isolated host. Call before starting threads.

    Its pid namespace stays the one it is in (run() gives the lab's command a new one)."""
    unshare(CLONE_NEWNET | CLONE_NEWNS)
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    for directory, mode in ((NETNS_DIR, "0755"), (ETC_NETNS_DIR, "0755"), (state_dir(), "0700")):
        os.makedirs(directory, mode=0o755, exist_ok=True)
        mount("tmpfs", directory, "tmpfs", 0, f"mode={mode}")
    # sysfs shows the interfaces of the namespace that mounted it; remount it for this one. The
    # cgroup hierarchies mounted below it are carried over (container runtimes need them).
    cgroups = tempfile.mkdtemp(prefix="nsnet-lab-cgroup-") if os.path.ismount(CGROUP_DIR) else None
    if cgroups:
        mount(CGROUP_DIR, cgroups, None, MS_BIND | MS_REC)
    umount("/sys")
    mount("sysfs", "/sys", "sysfs", 0)
    if cgroups:
        mount(cgroups, CGROUP_DIR, None, MS_MOVE)
        os.rmdir(cgroups)
    _private_resolv_conf()
    lo = RtnlSocket()
    lo.set_up(1, "lo")
    lo.close()
    os.environ[LAB_ENV] = str(_ns_inode("pid"))


def _private_resolv_conf() -> None:
    """The lab's own /etc/resolv.conf, naming only a documentation address (RFC 5737) that no
    route in a lab leads to: a lookup fails at once (with no server at all, glibc would wait 10 s
    on 127.0.0.1, down in a fresh namespace), and nsnet's resolver forwards nowhere unless a test
    binds an upstream of its own over it. The file lives on a tmpfs detached at once: the bind
    mount alone keeps it, for the lab's life."""
    if not os.path.exists("/etc/resolv.conf"):
        return  # nothing to cover: the lab has no route out either way
    directory = tempfile.mkdtemp(prefix="nsnet-lab-etc-")
    try:
        mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=64k")
        try:
            path = os.path.join(directory, "resolv.conf")
            with open(path, "w") as f:
                f.write(LAB_RESOLV_CONF)
            os.chmod(path, 0o644)
            mount(path, "/etc/resolv.conf", None, MS_BIND)
        finally:
            umount(directory)
    finally:
        os.rmdir(directory)


def run(argv: list[str], hosts: int = 0, members: int = 0, mtu: int = 1500) -> int:
    """Run argv (a shell when empty) in a new isolated host and return its exit status.

    The lab's first child is pid 1 of a new pid namespace (_init): it runs argv and exits with
    it, and the kernel then ends every process still in that namespace, so nothing outlives the
    lab (a server left in the background would otherwise keep the namespaces it is in alive)."""
    argv = argv or [os.environ.get("SHELL", "/bin/sh")]
    unshare(CLONE_NEWPID)
    enter()
    init = os.fork()
    if init == 0:
        os._exit(_init(argv, hosts, members, mtu))
    # The terminal's signals reach the command directly; the lab waits for it.
    for sig in TERMINAL_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    _, status = os.waitpid(init, 0)
    return _exit_code(status)


def _init(argv: list[str], hosts: int = 0, members: int = 0, mtu: int = 1500) -> int:
    """pid 1 of the lab's pid namespace: a /proc of its own, argv as its child, every orphan of
    the namespace reaped, and argv's status as its own."""
    try:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # a lab killed takes everything with it
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        os.environ[LAB_ENV] = str(_ns_inode("pid"))
        if hosts:  # several hosts on an underlay, etcd inside (nsnet.labhosts)
            from . import labhosts

            os.environ.update(labhosts.build(hosts, members, mtu))
        command = os.fork()
        if command == 0:
            try:
                os.execvp(argv[0], argv)
            except OSError as exc:  # 127: not found; 126: found but not executable (as a shell says)
                os.write(2, f"nsnet lab: {argv[0]}: {exc.strerror}\n".encode())
                os._exit(127 if isinstance(exc, (FileNotFoundError, NotADirectoryError)) else 126)
        for sig in TERMINAL_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        while True:
            pid, status = os.wait()
            if pid == command:
                return _exit_code(status)
    except BaseException as exc:  # pid 1 must exit, whatever happened
        os.write(2, f"nsnet lab: {exc}\n".encode())
        return 125


def _exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _ns_inode(kind: str) -> int:
    return os.stat(f"/proc/self/ns/{kind}").st_ino


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
    environment variable alone proves nothing, so this process must be in neither the machine's
    initial network namespace nor its initial pid namespace, NSNET_LAB must name its pid
    namespace (the lab's; a process in a pid namespace nested in it fails, closed), and the lab's
    private tmpfs mounts must be in place.
    """
    lab = os.environ.get(LAB_ENV)
    if not lab:
        return f"{LAB_ENV} is not set"
    try:
        if _ns_inode("net") == INIT_NETNS_INODE:
            return "this is the machine's initial network namespace"
        if _ns_inode("pid") == INIT_PIDNS_INODE:
            return "this is the machine's initial pid namespace"
        if lab != str(_ns_inode("pid")):
            return f"{LAB_ENV}={lab} does not name this process's pid namespace"
        missing = {NETNS_DIR, ETC_NETNS_DIR, state_dir()} - _tmpfs_mount_points()
        if missing:
            return f"no private tmpfs on {', '.join(sorted(missing))}"
    except (OSError, ValueError, IndexError) as exc:
        return f"cannot verify isolation ({exc})"
    return None
