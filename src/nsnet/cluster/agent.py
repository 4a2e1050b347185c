"""The overlay agent: one resident process per host (per ledger), the cluster's hands on this host.

- Liveness: `hosts/<me>` under a lease it keeps alive; a lease found gone (TTL 0 after a
  partition or a stall) is granted anew and the host registered again.
- Peers: list the cluster, then watch from the list's revision; a broken stream resumes from the
  last revision seen, a compacted one re-lists (flannel's resync). Each change is reconciled: the
  blocks of other hosts become the engine's overlay peers (route, neighbour, FDB), this host's
  sandboxes are published as names, other hosts' names are written to the ledger for the resolver.
- Eviction: a block owner whose liveness is gone is marked suspect under a lease of
  NSNET_CLUSTER_EVICT_AFTER seconds (etcd is the timer); when that lease ends and the host has not
  come back, its blocks are deleted by a transaction that any agent may win.
- Fencing: a host whose block was evicted while it was cut off marks the network fenced and never
  takes the block back.
- Outages change nothing here: the kernel keeps every entry while etcd is away, and the agent
  retries with a backoff.

Kill -9 loses nothing (etcd and the ledger are the truth); the next nsnet command, `nsnet gc` or
systemd starts it again. Run by supervise.start: `python -m nsnet.cluster.agent STATE_DIR READY_FD`.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from typing import Any

from . import membership, records
from .control import AGENT, LOCK, LOST, MINE, UNAVAILABLE
from .host import host_id, underlay
from .records import HostRecord
from .store import Compacted, Compare, Delete, Put, Unavailable
from .view import View, parse

TTL_ENV, EVICT_ENV = "NSNET_CLUSTER_TTL", "NSNET_CLUSTER_EVICT_AFTER"
DEFAULT_TTL, DEFAULT_EVICT_AFTER = 15, 300
BACKOFF_MAX = 2.0
RESYNC_S = 5.0


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"t": round(time.time(), 3), "event": event, **fields}, default=str), file=sys.stderr, flush=True)


def _seconds(name: str, default: int, least: int) -> int:
    try:
        return max(least, int(os.environ.get(name, default)))
    except ValueError:
        return default


class Agent:
    def __init__(self, state_dir: str, open_store, engine) -> None:
        self.state_dir = state_dir
        self.open_store = open_store  # a new client per thread: one connection each
        self.engine = engine
        self.me = host_id(state_dir)
        self.ttl = _seconds(TTL_ENV, DEFAULT_TTL, 2)
        self.evict_after = _seconds(EVICT_ENV, DEFAULT_EVICT_AFTER, 0)
        self.values: dict[str, bytes] = {}
        self.revision = 0
        self.lease = 0
        self.stopping = threading.Event()
        self.lock = threading.RLock()  # one reconcile at a time
        self.watch = None
        self.names_written: dict[str, Any] = {}
        self.dirty = threading.Event()  # the view changed since the last reconcile
        self.expired: list[str] = []  # hosts whose suspect mark ended, for the next reconcile
        self.fenced: set[str] = set()
        self.programmed: dict[str, list] = {}  # network -> the peers last made so in the kernel

    # Liveness

    def register(self, store) -> None:
        from . import endpoints

        here = underlay(endpoints())
        lease = store.grant(self.ttl)
        record = HostRecord(self.me, here.vtep_ip, here.mtu, _boot_id())
        key = records.host_key(self.me)
        current = store.get(key)
        if current is not None and current.lease not in (0, self.lease):
            other = records.decode(HostRecord, current.value)
            if other is not None and other.vtep_ip != here.vtep_ip:
                store.revoke(lease)
                raise RuntimeError(f"host id {self.me!r} is already {other.vtep_ip}'s in the cluster")
        # Alive and no longer suspect at once: no agent sees this host gone and unsuspected.
        store.txn([], [Put(key, records.encode(record), lease), Delete(records.suspect_key(self.me))])
        old, self.lease = self.lease, lease
        if old:
            try:
                store.revoke(old)
            except Unavailable:
                pass
        log("registered", host=self.me, vtep=here.vtep_ip, lease=lease)

    def keepalive_loop(self) -> None:
        """Keeps the liveness lease, and reconciles every RESYNC_S seconds besides the watch: what
        failed while the store was away (a name to publish, an entry the kernel refused) is done
        then, as flannel's periodic resync does."""
        store = self.open_store()
        interval = max(0.5, self.ttl / 3)
        last_resync = time.monotonic()
        while not self.stopping.wait(interval):
            try:
                if store.keepalive(self.lease) <= 0:
                    log("lease_lost", lease=self.lease)
                    self.register(store)
                if time.monotonic() - last_resync >= RESYNC_S:
                    last_resync = time.monotonic()
                    self.reconcile(store)
            except Unavailable as exc:
                log("keepalive_failed", error=str(exc))
            except Exception as exc:  # noqa: BLE001 - the loop must go on
                log("keepalive_error", error=repr(exc))

    # Watching

    def watch_loop(self) -> None:
        store = self.open_store()
        backoff = 0.1
        while not self.stopping.is_set():
            try:
                if not self.revision:
                    self.relist(store)
                self.watch = store.watch(records.PREFIX, self.revision + 1)
                for batch in self.watch:
                    backoff = 0.1
                    with self.lock:
                        for event in batch.events:
                            if event.type == "put":
                                self.values[event.kv.key] = event.kv.value
                            else:
                                self.values.pop(event.kv.key, None)
                                if event.kv.key.startswith(records.key("suspects") + "/"):
                                    self.expired.append(event.kv.key.rsplit("/", 1)[1])
                        self.revision = max(self.revision, batch.revision)
                    self.dirty.set()
                    if self.stopping.is_set():
                        return
            except Compacted as exc:
                log("watch_compacted", compact_revision=exc.compact_revision)
                self.revision = 0
            except Unavailable as exc:
                if self.stopping.is_set():
                    return
                log("watch_broken", error=str(exc), resume=self.revision + 1)
                self.stopping.wait(backoff)
                backoff = min(BACKOFF_MAX, backoff * 2)
            except Exception as exc:  # noqa: BLE001 - log, back off, go on
                log("watch_error", error=repr(exc))
                self.stopping.wait(backoff)
                backoff = min(BACKOFF_MAX, backoff * 2)

    def reconcile_loop(self) -> None:
        """Reconciles after changes: a burst of changes (50 hosts joining) costs one reconcile
        of the latest view, not one per change."""
        store = self.open_store()
        while not self.stopping.is_set():
            self.dirty.wait()
            self.dirty.clear()
            if self.stopping.is_set():
                return
            with self.lock:
                expired, self.expired = self.expired, []
            self.reconcile(store, expired=expired, full=False)

    def relist(self, store) -> None:
        values, revision = store.range(records.PREFIX)
        with self.lock:
            self.values = {kv.key: kv.value for kv in values}
            self.revision = revision
            log("listed", keys=len(values), revision=revision)
            self.reconcile(store)

    # Reconciling

    def reconcile(self, store, expired: list[str] = (), full: bool = True) -> None:
        """Make this host's kernel, its published names and the ledger's remote names agree with the
        cluster as last seen; mark or evict hosts whose liveness is gone. Errors are logged and
        the next change or sync retries (a failure must never stop the agent). Not `full` (after
        a watch event, most of them a name published somewhere): a network whose peers did not
        change is not read back from the kernel; the resync every RESYNC_S seconds is full."""
        with self.lock:
            view = parse(self.values)
            for overlay_network in self.engine.overlay_networks():
                try:
                    self._reconcile_network(store, view, overlay_network, full)
                except Unavailable as exc:
                    log("reconcile_unavailable", network=overlay_network.name, error=str(exc))
                except Exception as exc:  # noqa: BLE001
                    log("reconcile_error", network=overlay_network.name, error=repr(exc))
            try:
                self._judge_hosts(store, view, expired)
            except Unavailable as exc:
                log("evict_unavailable", error=str(exc))

    def _reconcile_network(self, store, view: View, network, full: bool) -> None:
        name = network.name
        mine = view.blocks.get(name, {}).get(self.engine.network(name).subnets[0].subnet)
        if records.key("fenced", self.me, name) in self.values or (mine is not None and mine.host != self.me):
            self.programmed.pop(name, None)
            if name not in self.fenced:
                self.engine.fence_overlay(name)
                self.fenced.add(name)
                log("fenced", network=name, reason="this host's block was evicted while it was cut off")
            return
        self.fenced.discard(name)
        if mine is None:
            return  # not in the view yet (a join's block put not seen yet); the next change brings it
        from ..model import Peer

        peers = [Peer(host=b.host, block=cidr, vtep_ip=b.vtep_ip, vtep_mac=b.vtep_mac)
                 for cidr, b in sorted(view.blocks.get(name, {}).items()) if b.host != self.me]
        if full or self.programmed.get(name) != peers:
            self.programmed.pop(name, None)  # until it is done: a failure half-way is tried again
            self.engine.set_overlay_peers(name, peers)
            self.programmed[name] = peers
        self._publish_names(store, view, name)
        self._remote_names(view, name)

    def _publish_names(self, store, view: View, name: str) -> None:
        local = self.engine.overlay_names(name)  # sandbox → (addresses, aliases)
        published = {sandbox: endpoint for (host, sandbox), endpoint in view.endpoints.get(name, {}).items()
                     if host == self.me}
        ops: list[Any] = []
        for sandbox, (addresses, aliases) in local.items():
            wanted = records.Endpoint(tuple(addresses), tuple(aliases))
            if published.get(sandbox) != wanted:
                ops.append(Put(records.endpoint_key(name, self.me, sandbox), records.encode(wanted)))
        ops += [Delete(records.endpoint_key(name, self.me, sandbox)) for sandbox in published if sandbox not in local]
        if ops:
            store.txn([], ops)

    def _remote_names(self, view: View, name: str) -> None:
        rows = sorted((host, sandbox, endpoint.addresses, endpoint.aliases)
                      for (host, sandbox), endpoint in view.endpoints.get(name, {}).items() if host != self.me)
        if self.names_written.get(name) != rows:
            self.engine.set_remote_names(name, rows)
            self.names_written[name] = rows

    def _judge_hosts(self, store, view: View, expired: list[str]) -> None:
        gone = view.owners() - set(view.hosts) - {self.me}
        for host in sorted(gone):
            if host in expired or (self.evict_after == 0 and host not in view.suspects):
                try:
                    evicted = membership.evict(store, host)
                except Exception as exc:  # noqa: BLE001 - another agent won, or the host came back
                    log("evict_skipped", host=host, error=str(exc))
                else:
                    log("evicted", host=host, blocks=evicted)
            elif host not in view.suspects:
                lease = store.grant(self.evict_after)
                key = records.suspect_key(host)
                ok, _ = store.txn([Compare(key, "create", "=", 0), Compare(records.host_key(host), "create", "=", 0)],
                                  [Put(key, records.encode({"by": self.me}), lease)])
                if not ok:
                    store.revoke(lease)
                else:
                    log("suspect", host=host, evict_after=self.evict_after)

    # The control socket (nsnet.cluster.control says what each request is for).

    def serve(self, ready: int | None) -> None:
        path = os.path.join(self.state_dir, AGENT.socket)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        server.bind(path)
        os.chmod(path, 0o600)
        server.listen(16)
        store = self.open_store()
        self.register(store)
        self.relist(store)
        threads = [threading.Thread(target=loop, daemon=True)
                   for loop in (self.keepalive_loop, self.watch_loop, self.reconcile_loop)]
        for thread in threads:
            thread.start()
        if ready is not None:
            os.write(ready, b"ready\n")
            os.close(ready)
        while not self.stopping.is_set():
            connection, _ = server.accept()
            with connection:
                connection.settimeout(5)
                try:
                    request = connection.recv(256).decode("ascii", "replace").strip()
                    try:
                        answer = self.answer(request, store)
                    except Exception as exc:  # noqa: BLE001 - one bad request must not end the agent
                        log("request_failed", request=request, error=repr(exc))
                        answer = f"error {exc}"
                    connection.sendall((answer + "\n").encode())
                except OSError:
                    continue
        server.close()

    def answer(self, request: str, store) -> str:
        verb, *args = request.split() or [""]
        if verb == "status":
            return f"ok {os.getpid()} {self.me} {self.revision} {self.lease}"
        if verb == "sync":
            with self.lock:
                self.reconcile(store)
            if not self.engine.overlay_networks():
                self.stop(store)
                return "ok stopping"
            return "ok"
        if verb == "publish":
            return self.publish(store, args)
        if verb == "verify" and len(args) == 2:
            try:
                return "ok " + (MINE if membership.holds_block(store, self.me, *args) else LOST)
            except Unavailable:
                return "ok " + UNAVAILABLE
        if verb == "stop":
            self.stop(store)
            return "ok stopping"
        return "error unknown request"

    def publish(self, store, names: list[str]) -> str:
        """This host's names in networks `names` published now, as after a local create, connect
        or removal: one transaction, not a whole reconcile (peers are the watch's business)."""
        joined = {n.name for n in self.engine.overlay_networks()}
        try:
            with self.lock:
                view = parse(self.values)
                for name in names:
                    if name in joined and name not in self.fenced:
                        self._publish_names(store, view, name)
        except Unavailable as exc:
            return f"error {exc} (published once it answers)"
        return "ok"

    def stop(self, store) -> None:
        self.stopping.set()
        self.dirty.set()
        if self.watch is not None:
            self.watch.close()
        try:
            store.revoke(self.lease)  # a graceful leave: peers drop this host at once
        except Unavailable:
            pass


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def main(argv: list[str]) -> int:
    from ..dns.supervise import run_resident

    state_dir, ready = argv[0], int(argv[1]) if len(argv) > 1 else None

    def serve(fd: int | None) -> None:
        from ..engine import Engine
        from .etcd import open_store

        def opener():
            store = open_store()
            if store is None:
                raise RuntimeError("NSNET_CLUSTER is not set")
            return store

        Agent(state_dir, opener, Engine(state_dir)).serve(fd)

    return run_resident(state_dir, ready, LOCK, "nsnet-cluster", serve)


if __name__ == "__main__":
    if len(sys.argv) > 2 and os.fork():  # the starter waits for this parent, not for the agent
        os._exit(0)
    sys.exit(main(sys.argv[1:]))
