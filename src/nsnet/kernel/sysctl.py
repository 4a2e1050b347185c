"""Sysctls of the namespace nsnet runs in: read-compare-write for shared settings, so an equal value
is never rewritten; a plain write for interfaces nsnet has just made."""

from __future__ import annotations

import os

from ..errors import PathError

# The /proc/sys/net trees of all network namespaces share their first directories: the dcache
# holds one `ipv6` (and `ipv4`, ...) per namespace whose sysctls were ever opened, all under the
# same parent, and a lookup compares the name against each of them (~0.3 us apiece: a write that
# cost 0.04 ms took 0.16-0.25 ms with 1,000 sandboxes, perf showing proc_sys_compare). Below
# net.ipv6.conf every directory is the namespace's own: a directory opened once there makes each
# later lookup cost the same whatever the number of namespaces.
Directory = tuple[str, int]  # a key prefix ("net.ipv6.conf") and an open descriptor of it


def _path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def open_directory(prefix: str) -> Directory:
    """prefix's directory in this thread's network namespace, for write(..., under=)."""
    return prefix, os.open(_path(prefix), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def read(key: str) -> str:
    with open(_path(key)) as handle:
        return handle.read().strip()


def write(key: str, value: str, under: Directory | None = None) -> None:
    """Set key without reading it first: for an interface nsnet has just made, whose value is the
    kernel's default. A key below `under` (from open_directory) is opened relative to it."""
    try:
        if under is not None and key.startswith(under[0] + "."):
            relative = key[len(under[0]) + 1:].replace(".", "/")
            fd = os.open(relative, os.O_WRONLY | os.O_CLOEXEC, dir_fd=under[1])
        else:
            fd = os.open(_path(key), os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise PathError("write", _path(key), exc.errno or 0) from None


def ensure(key: str, value: str) -> str | None:
    """Set key to value; the value it had when it had to change (for an undo), None when it had it
    already. For settings others may rely on or have set."""
    try:
        previous = read(key)
    except OSError as exc:
        raise PathError("read", _path(key), exc.errno or 0) from None
    if previous == value:
        return None
    write(key, value)
    return previous
