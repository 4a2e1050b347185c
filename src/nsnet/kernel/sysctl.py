"""Sysctls of the namespace nsnet runs in, read-compare-write so an equal value is never rewritten."""

from __future__ import annotations

from ..errors import KernelError


def _path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def read(key: str) -> str:
    with open(_path(key)) as handle:
        return handle.read().strip()


def ensure(key: str, value: str) -> bool:
    """Set key to value; True when it had to change."""
    try:
        if read(key) == value:
            return False
        with open(_path(key), "w") as handle:
            handle.write(value)
    except OSError as exc:
        raise KernelError(f"setting {key}={value}", exc.errno or 0) from None
    return True
