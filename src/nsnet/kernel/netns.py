"""Named network namespaces, made and entered the way `ip netns` does, without its process.

A namespace is pinned by bind-mounting its nsfs file on /run/netns/NAME, so it outlives the task
that made it. Entering one is per thread for network namespaces: work that must happen inside a
sandbox runs in a short-lived helper thread that calls setns/unshare, so the calling thread never
changes namespace, even on an error path (the helper simply ends). Whole processes enter a sandbox
only through `enter_sandbox`, which is meant to run in a child just before exec.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import stat
import threading
from collections.abc import Callable

from ..errors import KernelError, PathError
from ..naming import ETC_NETNS_DIR, NETNS_DIR, etc_netns_dir, netns_path

TYPE_CHECKING = False  # typing's import is 5 ms of a CNI plugin's start-up
if TYPE_CHECKING:
    from typing import TypeVar

    T = TypeVar("T")

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

# The files nsnet writes under /etc/netns/NAME: the only ones it ever removes there.
ETC_FILES = ("hosts", "resolv.conf")
NOT_A_LINK = "it is a symbolic link, and nsnet follows no link it did not make"

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
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            setns(fd, CLONE_NEWNET)
        finally:
            os.close(fd)
        return fn()

    return in_thread(body)


def in_netns_of(fd: int, fn: Callable[[], T]) -> T:
    """Run fn inside the network namespace an open descriptor refers to (a /proc/PID/ns/net the
    caller opened), in a helper thread."""

    def body() -> T:
        setns(fd, CLONE_NEWNET)
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
    _make_directory(NETNS_DIR)
    _refuse_link(NETNS_DIR)
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
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0))
    except OSError as exc:
        raise PathError("create", path, exc.errno or 0) from None

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
    """Unpin and unlink path, never through a symbolic link: not at path (UMOUNT_NOFOLLOW, and a
    link found there is left alone) nor at /run/netns itself."""
    _refuse_link(NETNS_DIR)
    if _libc.umount2(path.encode(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0 and ctypes.get_errno() not in (22, 2):
        raise KernelError(f"unmount of {path}", ctypes.get_errno())
    if _pinned_stat(path) is None:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise PathError("remove", path, exc.errno or 0) from None


def delete(name: str) -> None:
    """Unpin the namespace; the kernel destroys it (and its veths) once no process is inside.
    A symbolic link at /run/netns/NAME is not a namespace nsnet pinned: it counts as gone."""
    path = netns_path(name)
    if _pinned_stat(path) is None:
        raise PathError("delete", path, errno.ENOENT, "no namespace is pinned there")
    _release(path)


def _pinned_stat(path: str) -> os.stat_result | None:
    """path's own status, or None when it is missing or a symbolic link (never followed)."""
    try:
        status = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return None if stat.S_ISLNK(status.st_mode) else status


def _make_directory(path: str) -> None:
    """path as a directory (0755) unless something is there already: what that is, the caller checks."""
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass
    except OSError as exc:
        raise PathError("create", path, exc.errno or 0) from None


def _refuse_link(path: str) -> None:
    """Refuse a directory nsnet works in that is a symbolic link (or not a directory)."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(status.st_mode):
        raise PathError("use", path, errno.ELOOP, NOT_A_LINK)
    if not stat.S_ISDIR(status.st_mode):
        raise PathError("use", path, errno.ENOTDIR)


def exists(name: str) -> bool:
    return _pinned_stat(netns_path(name)) is not None


def path_of(handle: str) -> str:
    """A sandbox's namespace: its name (pinned by nsnet under /run/netns) or, for a container
    runtime's, the absolute path the runtime gave (model.Sandbox.handle)."""
    return handle if handle.startswith("/") else netns_path(handle)


def is_namespace(path: str) -> bool:
    """Whether path (a runtime's: a bind mount or /proc/PID/ns/net, followed) is a network
    namespace, which lives on the nsfs filesystem as this process's own does."""
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def inode(name: str) -> int:
    status = _pinned_stat(netns_path(name))
    if status is None:
        raise FileNotFoundError(errno.ENOENT, "no namespace pinned", netns_path(name))
    return status.st_ino


def paths_taken(name: str, run_dir: str = NETNS_DIR, etc_dir: str = ETC_NETNS_DIR) -> list[str]:
    """The paths a new sandbox NAME needs that exist already, in any form (a file, a directory,
    a symbolic link, even a dangling one)."""
    return [path for path in (os.path.join(run_dir, name), os.path.join(etc_dir, name)) if os.path.lexists(path)]


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
    path = netns_path(name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        detail = NOT_A_LINK if exc.errno == errno.ELOOP else ""
        raise PathError("open", path, exc.errno or 0, detail) from None
    setns(fd, CLONE_NEWNET)
    os.close(fd)
    unshare(CLONE_NEWNS)
    mount("none", "/", None, MS_SLAVE | MS_REC)
    if _libc.umount2(b"/sys", MNT_DETACH) == 0:
        mount(name, "/sys", "sysfs", 0)
    etc = etc_netns_dir(name)
    for entry in _etc_entries(etc):
        target = os.path.join("/etc", entry)
        if os.path.exists(target):
            mount(os.path.join(etc, entry), target, "none", MS_BIND)


def _etc_entries(etc: str) -> list[str]:
    """What is in /etc/netns/NAME, or nothing when it (or /etc/netns) is missing or a link."""
    try:
        base_fd = _open_directory(ETC_NETNS_DIR)
    except PathError:
        return []
    try:
        fd = _open_directory(os.path.basename(etc), base_fd, etc)
    except PathError:
        return []
    finally:
        os.close(base_fd)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


def write_etc_files(name: str, files: dict[str, str], base: str = ETC_NETNS_DIR) -> None:
    """Make base/NAME and write files in it, following no symbolic link and overwriting nothing:
    base is opened without following a link, NAME must not exist, and each file is created
    exclusively. On failure, undo only what this call made."""
    unknown = set(files) - set(ETC_FILES)
    if unknown:
        raise ValueError(f"not among the files nsnet owns under {base}: {sorted(unknown)}")
    directory = os.path.join(base, name)
    _make_directory(base)
    base_fd = _open_directory(base)
    try:
        try:
            os.mkdir(name, 0o755, dir_fd=base_fd)
        except OSError as exc:
            raise PathError("create", directory, exc.errno or 0) from None
        try:
            _write_new_files(base_fd, name, files, directory)
        except BaseException:
            _rmdir_if_empty(base_fd, name, directory)  # the files it made are gone already
            raise
    finally:
        os.close(base_fd)


def _write_new_files(base_fd: int, name: str, files: dict[str, str], directory: str) -> None:
    dir_fd = _open_directory(name, base_fd, directory)
    made: list[str] = []
    try:
        os.fchmod(dir_fd, 0o755)  # whatever the umask: processes of any user in the sandbox read these
        for filename, text in files.items():
            path = os.path.join(directory, filename)
            try:
                fd = os.open(filename, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o644, dir_fd=dir_fd)
            except OSError as exc:
                raise PathError("create", path, exc.errno or 0) from None
            made.append(filename)
            try:
                os.fchmod(fd, 0o644)
                with os.fdopen(fd, "w") as handle:
                    handle.write(text)
            except OSError as exc:
                raise PathError("write", path, exc.errno or 0) from None
    except BaseException:
        for filename in made:
            _unlink_regular(dir_fd, filename, os.path.join(directory, filename))
        raise
    finally:
        os.close(dir_fd)


def replace_etc_file(name: str, filename: str, text: str | None, base: str = ETC_NETNS_DIR) -> None:
    """Put text in base/NAME/filename in one step (a new file renamed over it), or remove the
    file when text is None; following no link, and writing only into the directory nsnet made."""
    if filename not in ETC_FILES:
        raise ValueError(f"{filename} is not among the files nsnet owns under {base}")
    directory = os.path.join(base, name)
    base_fd = _open_directory(base)
    try:
        dir_fd = _open_directory(name, base_fd, directory)
    finally:
        os.close(base_fd)
    path = os.path.join(directory, filename)
    try:
        if text is None:
            _unlink_regular(dir_fd, filename, path)
            return
        temporary = f".{filename}.{os.getpid()}.new"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=dir_fd)
        except OSError as exc:
            raise PathError("create", os.path.join(directory, temporary), exc.errno or 0) from None
        try:
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.rename(temporary, filename, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            _unlink_regular(dir_fd, temporary, os.path.join(directory, temporary))
            raise PathError("write", path, exc.errno or 0) from None
    finally:
        os.close(dir_fd)


def read_etc_file(name: str, filename: str, base: str = ETC_NETNS_DIR, limit: int = 1 << 20) -> str | None:
    """base/NAME/filename's text, following no link; None when it is not there (or not a file)."""
    try:
        base_fd = _open_directory(base)
        try:
            dir_fd = _open_directory(name, base_fd)
        finally:
            os.close(base_fd)
    except PathError:
        return None
    try:
        fd = os.open(filename, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        return handle.read(limit).decode("utf-8", "replace")


def remove_etc_files(name: str, base: str = ETC_NETNS_DIR) -> None:
    """Remove the files nsnet writes (ETC_FILES) from base/NAME, and the directory if that leaves
    it empty. Files a user added there, and the directory holding them, stay; a symbolic link
    (at base, at NAME or in place of a file) is neither followed nor removed."""
    try:
        base_fd = _open_directory(base)
    except PathError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            return  # nsnet writes only into a real directory: nothing there is its
        raise
    try:
        _remove_own_directory(base_fd, name, os.path.join(base, name))
    finally:
        os.close(base_fd)


def _remove_own_directory(base_fd: int, name: str, directory: str) -> None:
    try:
        dir_fd = _open_directory(name, base_fd, directory)
    except PathError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            return
        raise
    try:
        for filename in ETC_FILES:
            _unlink_regular(dir_fd, filename, os.path.join(directory, filename))
    finally:
        os.close(dir_fd)
    _rmdir_if_empty(base_fd, name, directory)


def _rmdir_if_empty(base_fd: int, name: str, directory: str) -> None:
    try:
        os.rmdir(name, dir_fd=base_fd)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.ENOTDIR):
            raise PathError("remove", directory, exc.errno or 0) from None


def _unlink_regular(dir_fd: int, filename: str, path: str) -> None:
    """Unlink filename if it is a regular file (never a link, a directory or anything else)."""
    try:
        if not stat.S_ISREG(os.stat(filename, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            return
        os.unlink(filename, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise PathError("remove", path, exc.errno or 0) from None


def _open_directory(path: str, dir_fd: int | None = None, shown: str | None = None) -> int:
    """A descriptor of the directory path (relative to dir_fd), refusing a symbolic link."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        shown = shown or path
        if exc.errno in (errno.ENOTDIR, errno.ELOOP) and _is_link(path, dir_fd):
            raise PathError("use", shown, errno.ELOOP, NOT_A_LINK) from None
        raise PathError("open", shown, exc.errno or 0) from None


def _is_link(path: str, dir_fd: int | None = None) -> bool:
    try:
        return stat.S_ISLNK(os.stat(path, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False
