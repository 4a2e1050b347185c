"""Sysctls of the namespace nsnet runs in: read-compare-write for shared settings, so an equal value
is never rewritten; a plain write for interfaces nsnet has just made."""

from __future__ import annotations

from ..errors import KernelError


def _path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def read(key: str) -> str:
    with open(_path(key)) as handle:
        return handle.read().strip()


def write(key: str, value: str) -> None:
    """Set key without reading it first: for an interface nsnet has just made, whose value is the
    kernel's default. Each /proc/sys open costs more as interfaces multiply (~0.3 ms at 1,000)."""
    try:
        with open(_path(key), "w") as handle:
            handle.write(value)
    except OSError as exc:
        raise KernelError(f"setting {key}={value}", exc.errno or 0) from None


def ensure(key: str, value: str) -> bool:
    """Set key to value; True when it had to change. For settings others may rely on or have set."""
    try:
        if read(key) == value:
            return False
    except OSError as exc:
        raise KernelError(f"reading {key}", exc.errno or 0) from None
    write(key, value)
    return True
