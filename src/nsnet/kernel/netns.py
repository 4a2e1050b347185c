"""Named network namespaces, made and entered the way `ip netns` does, without its process.

A namespace is pinned by bind-mounting its nsfs file on /run/netns/NAME, so it outlives the task
that made it. Entering one is per thread for network namespaces: work that must happen inside a
sandbox runs in a short-lived helper thread that calls setns/unshare, so the calling thread never
changes namespace, even on an error path (the helper simply ends). Whole processes enter a sandbox
only through `enter_sandbox`, which is meant to run in a child just before exec.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from collections.abc import Callable
from typing import TypeVar

from ..errors import KernelError
from ..naming import ETC_NETNS_DIR, NETNS_DIR, etc_netns_dir, netns_path

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 0x2

T = TypeVar("T")

# The C library the interpreter already has loaded; ctypes.util.find_library costs ~10 ms.
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, operation: str) -> None:
    if result != 0:
        raise KernelError(operation, ctypes.get_errno())


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount on {target}")


def umount(target: str) -> None:
    _check(_libc.umount2(target.encode(), MNT_DETACH), f"unmount of {target}")


def in_thread(fn: Callable[[], T]) -> T:
    """Run fn in a fresh thread and return its result; the thread's namespaces die with it."""
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # handed back to the caller below
            error.append(exc)

    thread = threading.Thread(target=body, name="nsnet-netns")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def in_netns(path: str, fn: Callable[[], T]) -> T:
    """Run fn inside the network namespace pinned at path, in a helper thread."""

    def body() -> T:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(fd, CLONE_NEWNET)
        finally:
            os.close(fd)
        return fn()

    return in_thread(body)


_run_dir_ready = False


def _ensure_run_dir() -> None:
    """Make /run/netns a shared mount point, as iproute2 does.

    Shared propagation lets an unmount here reach copies of the mount held by other mount
    namespaces (for example a process started by `nsnet exec`), so deleting a sandbox really
    releases its namespace.
    """
    global _run_dir_ready
    if _run_dir_ready:
        return
    os.makedirs(NETNS_DIR, mode=0o755, exist_ok=True)
    if _libc.mount(b"none", NETNS_DIR.encode(), b"none", MS_SHARED | MS_REC, None) != 0:
        if ctypes.get_errno() != 22:  # EINVAL: not a mount point yet
            raise KernelError(f"making {NETNS_DIR} shared", ctypes.get_errno())
        mount(NETNS_DIR, NETNS_DIR, "none", MS_BIND | MS_REC)
        mount("none", NETNS_DIR, "none", MS_SHARED | MS_REC)
    _run_dir_ready = True


def create(name: str, inside: Callable[[], T]) -> T:
    """Create and pin the namespace NAME, then run `inside` in it (still in the helper thread).

    `inside` is where the caller opens its netlink socket and brings lo up: both are born in the
    new namespace at no extra cost.
    """
    _ensure_run_dir()
    path = netns_path(name)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except OSError as exc:
        raise KernelError(f"creation of {path}", exc.errno) from None

    def body() -> T:
        unshare(CLONE_NEWNET)
        mount(f"/proc/self/task/{threading.get_native_id()}/ns/net", path, "none", MS_BIND)
        return inside()

    try:
        return in_thread(body)
    except BaseException:
        _release(path)
        raise


def _release(path: str) -> None:
    if _libc.umount2(path.encode(), MNT_DETACH) != 0 and ctypes.get_errno() not in (22, 2):
        raise KernelError(f"unmount of {path}", ctypes.get_errno())
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def delete(name: str) -> None:
    """Unpin the namespace; the kernel destroys it (and its veths) once no process is inside."""
    path = netns_path(name)
    if not os.path.exists(path):
        raise KernelError(f"deletion of {path}", 2)
    _release(path)


def exists(name: str) -> bool:
    return os.path.exists(netns_path(name))


def inode(name: str) -> int:
    return os.stat(netns_path(name)).st_ino


def pids_inside(name: str) -> list[int]:
    """Processes whose network namespace is the sandbox's (what `ip netns pids` reports)."""
    try:
        return pids_in_namespace(inode(name))
    except FileNotFoundError:
        return []


def pids_in_namespace(namespace_inode: int) -> list[int]:
    target = f"net:[{namespace_inode}]"
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.readlink(f"/proc/{entry.name}/ns/net") == target:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def enter_sandbox(name: str) -> None:
    """Move the calling process into the sandbox, as `ip netns exec` does. Call only in a child.

    Besides the network namespace, the process gets a mount namespace of its own in which /sys
    shows the sandbox's interfaces and each file under /etc/netns/NAME is bound over /etc.
    """
    try:
        fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise KernelError(f"entering sandbox {name}", exc.errno or 0) from None
    setns(fd, CLONE_NEWNET)
    os.close(fd)
    unshare(CLONE_NEWNS)
    mount("none", "/", None, MS_SLAVE | MS_REC)
    if _libc.umount2(b"/sys", MNT_DETACH) == 0:
        mount(name, "/sys", "sysfs", 0)
    etc = etc_netns_dir(name)
    if os.path.isdir(etc):
        for entry in os.listdir(etc):
            target = os.path.join("/etc", entry)
            if os.path.exists(target):
                mount(os.path.join(etc, entry), target, "none", MS_BIND)


def write_etc_files(name: str, files: dict[str, str]) -> None:
    directory = etc_netns_dir(name)
    os.makedirs(ETC_NETNS_DIR, mode=0o755, exist_ok=True)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    try:
        for filename, text in files.items():
            with open(os.path.join(directory, filename), "w") as handle:
                handle.write(text)
    except OSError as exc:
        remove_etc_files(name)  # this step's own undo: it made the directory
        raise KernelError(f"writing {directory}", exc.errno or 0) from None


def remove_etc_files(name: str) -> None:
    directory = etc_netns_dir(name)
    if not os.path.isdir(directory):
        return
    for entry in os.listdir(directory):
        os.unlink(os.path.join(directory, entry))
    os.rmdir(directory)
