"""Which nsnet processes may change the ledger and the kernel at once.

One lock file in the state directory, locked by byte ranges with Linux open file description
locks (F_OFD_SETLKW): the kernel releases them when the process dies, however it dies, so a held
lock is an owner that can be checked.

- Byte 0, the ledger lock. Every command that changes sandboxes holds it shared for its whole
  run; `gc`, `check`, `network create` and `network rm` hold it exclusively. While gc holds it,
  no other command is half-way, so a row left 'creating' or 'removing' belongs to a process that
  died; and a network is never removed while a sandbox is being attached to it.
- One byte per sandbox name (its hash, in a range of 2^20): held exclusively by every command on
  that sandbox, so two commands on the same sandbox run one after the other and the second sees
  what the first left. Two names sharing a byte only wait for each other.

- One byte for services (after the sandboxes' range): held exclusively by every command that
  changes who serves a service (a sandbox made, connected, disconnected or removed on a network
  with services), from reading the backends to programming them, so two such commands cannot
  program from the same old list.

Always in that order (ledger, sandbox, services), so two processes cannot wait for each other.
"""

from __future__ import annotations

import fcntl
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

LOCK_FILE = "lock"
SANDBOX_SLOTS = 1 << 20
_FLOCK = "hhqqi"  # struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks)


class Locks:
    """The locks of one ledger, held through one open file description; re-entrant per process."""

    def __init__(self, directory: str) -> None:
        self._path = os.path.join(directory, LOCK_FILE)
        self._fd: int | None = None
        self._ledger: str | None = None  # "shared" or "exclusive" while held
        self._sandboxes: dict[int, int] = {}  # slot -> depth

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        return self._fd

    def _lock(self, kind: int, start: int) -> None:
        fcntl.fcntl(self._file(), fcntl.F_OFD_SETLKW, struct.pack(_FLOCK, kind, os.SEEK_SET, start, 1, 0))

    @contextmanager
    def ledger(self, exclusive: bool = False) -> Iterator[None]:
        """Inside an exclusive hold, any nested hold is already granted; a shared hold cannot
        become exclusive (that would wait for itself)."""
        if self._ledger == "exclusive" or (self._ledger == "shared" and not exclusive):
            yield
            return
        if self._ledger == "shared":
            raise RuntimeError("an exclusive ledger lock was asked while holding it shared")
        self._lock(fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK, 0)
        self._ledger = "exclusive" if exclusive else "shared"
        try:
            yield
        finally:
            self._ledger = None
            self._lock(fcntl.F_UNLCK, 0)

    @contextmanager
    def services(self) -> Iterator[None]:
        with self._slot(1 + SANDBOX_SLOTS):
            yield

    @contextmanager
    def sandbox(self, name: str) -> Iterator[None]:
        with self._slot(1 + zlib.crc32(name.encode()) % SANDBOX_SLOTS):
            yield

    @contextmanager
    def _slot(self, slot: int) -> Iterator[None]:
        depth = self._sandboxes.get(slot, 0)
        if depth == 0:
            self._lock(fcntl.F_WRLCK, slot)
        self._sandboxes[slot] = depth + 1
        try:
            yield
        finally:
            self._sandboxes[slot] -= 1
            if self._sandboxes[slot] == 0:
                del self._sandboxes[slot]
                self._lock(fcntl.F_UNLCK, slot)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
