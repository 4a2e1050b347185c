"""The cluster store interface nsnet's overlay needs (etcd v3's semantics: keys with revisions,
compare-and-swap transactions, leases, watches from a revision), its errors, and MemoryStore, an
in-memory implementation for unit tests. The etcd client is nsnet.cluster.etcd."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

from ..errors import NsnetError


class Unavailable(NsnetError):
    def __init__(self, why: str) -> None:
        super().__init__(f"cluster store unavailable: {why}")


class Compacted(Exception):
    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted (now from {compact_revision})")
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True)
class Event:
    type: str  # put | delete
    kv: KeyValue


@dataclass(frozen=True)
class WatchBatch:
    revision: int
    events: tuple[Event, ...]


@dataclass(frozen=True)
class Compare:
    key: str
    target: str  # create | mod | version | value | lease
    result: str  # = != < >
    value: int | bytes


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: str
    prefix: bool = False


def holds(compare: Compare, kv: KeyValue | None) -> bool:
    """Whether a comparison holds against a key's current state (absent: every number is 0)."""
    actual: int | bytes
    if compare.target == "value":
        actual = kv.value if kv else b""
    else:
        attribute = {"create": "create_revision", "mod": "mod_revision", "version": "version", "lease": "lease"}
        actual = getattr(kv, attribute[compare.target]) if kv else 0
    wanted = compare.value
    return {"=": actual == wanted, "!=": actual != wanted, "<": actual < wanted, ">": actual > wanted}[compare.result]


@dataclass
class _Lease:
    ttl: int
    keys: set[str] = field(default_factory=set)


class MemoryStore:
    """etcd's model in memory, thread-safe: every write a new revision, leases that end only by
    expire() (or revoke), compaction, watches, and fail() to play an unreachable store."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._data: dict[str, KeyValue] = {}
        self._history: list[tuple[int, Event]] = []
        self._revision = 1
        self._compacted = 0
        self._leases: dict[int, _Lease] = {}
        self._next_lease = 0x1000
        self._failing = False

    def fail(self, failing: bool = True) -> None:
        with self._lock:
            self._failing = failing
            self._lock.notify_all()

    def _check(self) -> None:
        if self._failing:
            raise Unavailable("connection refused (MemoryStore.fail)")

    def get(self, key: str) -> KeyValue | None:
        with self._lock:
            self._check()
            return self._data.get(key)

    def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        with self._lock:
            self._check()
            return [self._data[k] for k in sorted(self._data) if k.startswith(prefix)], self._revision

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        return self.txn([], [Put(key, value, lease)])[1]

    def delete(self, key: str, prefix: bool = False) -> int:
        with self._lock:
            self._check()
            count = len(self._matching(Delete(key, prefix)))
        self.txn([], [Delete(key, prefix)])
        return count

    def _matching(self, op: Delete) -> list[str]:
        return [k for k in self._data if k.startswith(op.key)] if op.prefix else [op.key] * (op.key in self._data)

    def txn(self, compares: Sequence[Compare], success: Sequence[Put | Delete],
            failure: Sequence[Put | Delete] = ()) -> tuple[bool, int]:
        with self._lock:
            self._check()
            ok = all(holds(c, self._data.get(c.key)) for c in compares)
            ops = success if ok else failure
            events = []
            revision = self._revision + 1
            for op in ops:
                if isinstance(op, Put):
                    if op.lease and op.lease not in self._leases:
                        raise NsnetError("etcdserver: requested lease not found")
                    old = self._data.get(op.key)
                    if old is not None and old.lease in self._leases:
                        self._leases[old.lease].keys.discard(op.key)
                    kv = KeyValue(op.key, op.value, old.create_revision if old else revision, revision,
                                  (old.version if old else 0) + 1, op.lease)
                    self._data[op.key] = kv
                    if op.lease:
                        self._leases[op.lease].keys.add(op.key)
                    events.append(Event("put", kv))
                else:
                    for key in self._matching(op):
                        old = self._data.pop(key)
                        if old.lease in self._leases:
                            self._leases[old.lease].keys.discard(key)
                        events.append(Event("delete", replace(old, value=b"", mod_revision=revision)))
            if events:
                self._revision = revision
                self._history += [(revision, e) for e in events]
                self._lock.notify_all()
            return ok, self._revision

    def grant(self, ttl: int) -> int:
        with self._lock:
            self._check()
            self._next_lease += 1
            self._leases[self._next_lease] = _Lease(ttl)
            return self._next_lease

    def keepalive(self, lease: int) -> int:
        with self._lock:
            self._check()
            found = self._leases.get(lease)
            return found.ttl if found else 0

    def time_to_live(self, lease: int) -> int:
        """The lease's TTL; -1 when it is gone (etcd's answer)."""
        with self._lock:
            self._check()
            found = self._leases.get(lease)
            return found.ttl if found else -1

    def revoke(self, lease: int) -> None:
        self.expire(lease)

    def expire(self, lease: int) -> None:
        """End a lease now, deleting its keys (what etcd does when its TTL runs out)."""
        with self._lock:
            self._check()
            found = self._leases.pop(lease, None)
        if found and found.keys:
            self.txn([], [Delete(k) for k in sorted(found.keys)])

    def compact(self, revision: int) -> None:
        with self._lock:
            self._compacted = max(self._compacted, revision)
            self._history = [(r, e) for r, e in self._history if r > revision]

    def watch(self, prefix: str, start_revision: int) -> MemoryWatch:
        return MemoryWatch(self, prefix, start_revision)

    def close(self) -> None:
        pass


class MemoryWatch:
    def __init__(self, store: MemoryStore, prefix: str, start_revision: int) -> None:
        self.store, self.prefix, self.next = store, prefix, start_revision
        self.closed = False

    def __iter__(self) -> Iterator[WatchBatch]:
        store = self.store
        while True:
            with store._lock:
                while True:
                    if self.closed:
                        return
                    store._check()
                    if self.next <= store._compacted:
                        raise Compacted(store._compacted + 1)
                    pending = [(r, e) for r, e in store._history if r >= self.next and e.kv.key.startswith(self.prefix)]
                    if pending:
                        break
                    self.next = max(self.next, store._revision + 1)
                    store._lock.wait()
                revision = pending[-1][0]
                self.next = revision + 1
            for rev in sorted({r for r, _ in pending}):
                yield WatchBatch(rev, tuple(e for r, e in pending if r == rev))

    def close(self) -> None:
        with self.store._lock:
            self.closed = True
            self.store._lock.notify_all()
