"""A client of etcd's v3 JSON gateway (`/v3/...`, etcd >= 3.4) on the standard library.

Why not a library (brief §3): etcd3gw loses its watch silently after an etcd restart and hides
the header revision; python-etcd3 no longer imports with current protobuf; aetcd brings grpcio
(19 MB) and asyncio. The surface nsnet needs is small: range, put, delete, txn, leases, watch.

What matters for correctness, and is done here:
- every request carries `Grpc-Metadata-hasleader: true` (clientv3.WithRequireLeader): a member
  that lost its leader answers 503 instead of stale reads and silent watches (brief §4.7);
- a watch resumes from a revision; a compacted one raises Compacted (the agent re-lists); a
  broken stream raises Unavailable; the watch socket has TCP keepalive, so a dead peer is seen;
- endpoints are tried in order, a failure moves to the next one;
- TLS (a CA, a client certificate) and etcd's users (`/v3/auth/authenticate` → a token).

The JSON form: keys and values are base64; int64 fields are strings; absent fields mean zero.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..errors import InvalidInput, NsnetError
from . import CLUSTER_ENV
from .store import Compacted, Compare, Delete, Event, KeyValue, Put, Unavailable, WatchBatch

CONNECT_TIMEOUT_S = 2.0
REQUEST_TIMEOUT_S = 5.0
REQUIRE_LEADER = {"Grpc-Metadata-hasleader": "true"}
TARGETS = {"create": "CREATE", "mod": "MOD", "version": "VERSION", "value": "VALUE", "lease": "LEASE"}
RESULTS = {"=": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}
WRITES = ("kv/txn", "kv/put", "kv/deleterange")


class _NotSent(Exception):
    """The connection failed before a request was sent."""


TARGET_FIELDS = {"create": "create_revision", "mod": "mod_revision", "version": "version", "value": "value",
                 "lease": "lease"}


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: str) -> bytes:
    """The range_end that makes `prefix` a prefix query: the prefix with its last byte plus one."""
    raw = bytearray(prefix.encode())
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"


def key_value(data: Mapping[str, Any]) -> KeyValue:
    return KeyValue(key=_unb64(data.get("key")).decode(), value=_unb64(data.get("value")),
                    create_revision=int(data.get("create_revision", 0)), mod_revision=int(data.get("mod_revision", 0)),
                    version=int(data.get("version", 0)), lease=int(data.get("lease", 0)))


def compare_json(compare: Compare) -> dict[str, Any]:
    field = TARGET_FIELDS[compare.target]
    value = _b64(compare.value) if compare.target == "value" else str(compare.value)
    return {"key": _b64(compare.key), "target": TARGETS[compare.target], "result": RESULTS[compare.result],
            field: value}


def op_json(op: Put | Delete) -> dict[str, Any]:
    if isinstance(op, Put):
        body: dict[str, Any] = {"key": _b64(op.key), "value": _b64(op.value)}
        if op.lease:
            body["lease"] = str(op.lease)
        return {"request_put": body}
    body = {"key": _b64(op.key)}
    if op.prefix:
        body["range_end"] = _b64(prefix_end(op.key))
    return {"request_delete_range": body}


class Settings:
    """Where the cluster is and how to talk to it, from NSNET_CLUSTER and its companions (named
    like etcdctl's): NSNET_CLUSTER_CACERT, _CERT, _KEY, _USER (`user` or `user:password`), _PASSWORD."""

    def __init__(self, url: str, environ: Mapping[str, str]) -> None:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("etcd", "etcds"):
            raise InvalidInput(CLUSTER_ENV, url, "must be etcd://HOST:PORT[,HOST:PORT...] (etcds:// for TLS)")
        self.tls = scheme == "etcds"
        self.endpoints: list[tuple[str, int]] = []
        for item in rest.rstrip("/").split(","):
            host, colon, port = item.strip().rpartition(":")
            if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise InvalidInput(CLUSTER_ENV, url, f"endpoint {item.strip()!r} is not HOST:PORT")
            self.endpoints.append((host.strip("[]"), int(port)))
        self.cacert = environ.get("NSNET_CLUSTER_CACERT") or None
        self.cert = environ.get("NSNET_CLUSTER_CERT") or None
        self.key = environ.get("NSNET_CLUSTER_KEY") or None
        user = environ.get("NSNET_CLUSTER_USER") or ""
        self.user, _, password = user.partition(":")
        self.password = password or environ.get("NSNET_CLUSTER_PASSWORD", "")
        if (self.cacert or self.cert) and not self.tls:
            raise InvalidInput(CLUSTER_ENV, url, "certificates are given: use etcds://")
        if bool(self.cert) != bool(self.key):
            raise InvalidInput("NSNET_CLUSTER_KEY" if self.cert else "NSNET_CLUSTER_CERT", None,
                               "a client certificate needs both NSNET_CLUSTER_CERT and NSNET_CLUSTER_KEY")
        for variable, path in (("NSNET_CLUSTER_CACERT", self.cacert), ("NSNET_CLUSTER_CERT", self.cert),
                               ("NSNET_CLUSTER_KEY", self.key)):
            if path and not os.path.isfile(path):
                raise InvalidInput(variable, path, "no such file")
        self.context: ssl.SSLContext | None = None
        if self.tls:
            self.context = ssl.create_default_context(cafile=self.cacert)
            if self.cert:
                self.context.load_cert_chain(self.cert, self.key)


class EtcdGateway:
    """One client: a connection per call (etcd's gateway closes idle ones; a CLI makes a few calls)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.endpoints = settings.endpoints
        self._token: str | None = None
        self._preferred = 0

    # Transport

    def _connection(self, index: int, timeout: float) -> http.client.HTTPConnection:
        host, port = self.endpoints[index]
        if self.settings.context is not None:
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self.settings.context)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **REQUIRE_LEADER}
        if self._token:
            headers["Authorization"] = self._token
        return headers

    def call(self, path: str, body: Mapping[str, Any], *, auth: bool = True) -> dict[str, Any]:
        """POST /v3/PATH on the first endpoint that answers; Unavailable when none does."""
        reasons = []
        for attempt in range(len(self.endpoints)):
            index = (self._preferred + attempt) % len(self.endpoints)
            try:
                status, answer = self._post(index, path, body, auth)
            except _NotSent as exc:  # nothing reached etcd: the next endpoint may answer
                reasons.append(f"{self._name(index)}: {exc}")
                continue
            except (OSError, http.client.HTTPException) as exc:
                reason = f"{self._name(index)}: {getattr(exc, 'strerror', None) or exc}"
                if path in WRITES:  # it may have been applied: sent again, a CAS would misread its own write
                    raise Unavailable(f"{reason} (the write's outcome is unknown)") from None
                reasons.append(reason)
                continue
            if status == 401 and auth and self.settings.user:  # an expired token: once more with a new one
                self._token = None
                status, answer = self._post(index, path, body, auth)
            if status == 503 or (status >= 500 and "leader" in str(answer.get("message", answer.get("error", "")))):
                reasons.append(f"{self._name(index)}: {answer.get('message') or answer.get('error') or status}")
                continue
            if status != 200:
                message = answer.get("message") or answer.get("error") or f"HTTP {status}"
                raise NsnetError(f"cluster store refused {path}: {message}")
            self._preferred = index
            return answer
        raise Unavailable("; ".join(reasons))

    def _name(self, index: int) -> str:
        host, port = self.endpoints[index]
        return f"{host}:{port}"

    def _post(self, index: int, path: str, body: Mapping[str, Any], auth: bool) -> tuple[int, dict[str, Any]]:
        if auth and self.settings.user and self._token is None:
            self._authenticate(index)
        connection = self._connection(index, REQUEST_TIMEOUT_S)
        try:
            connection.connect()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise _NotSent(getattr(exc, "strerror", None) or str(exc)) from None
        try:
            connection.request("POST", f"/v3/{path}", json.dumps(body), self._headers())
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        try:
            answer = json.loads(data) if data else {}
        except ValueError:
            answer = {"message": data[:200].decode("utf-8", "replace")}
        return response.status, answer if isinstance(answer, dict) else {}

    def _authenticate(self, index: int) -> None:
        status, answer = self._post(index, "auth/authenticate", {"name": self.settings.user,
                                                                 "password": self.settings.password}, False)
        if status != 200 or "token" not in answer:
            raise NsnetError(f"cluster store refused user {self.settings.user!r}: "
                             f"{answer.get('message') or answer.get('error') or status}")
        self._token = answer["token"]

    # The ClusterStore interface (nsnet.cluster.store)

    def get(self, key: str) -> KeyValue | None:
        answer = self.call("kv/range", {"key": _b64(key)})
        kvs = answer.get("kvs") or []
        return key_value(kvs[0]) if kvs else None

    def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        answer = self.call("kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))})
        return [key_value(kv) for kv in answer.get("kvs") or []], int(answer["header"]["revision"])

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        return self.txn([], [Put(key, value, lease)])[1]

    def delete(self, key: str, prefix: bool = False) -> int:
        body = op_json(Delete(key, prefix))["request_delete_range"]
        return int(self.call("kv/deleterange", body).get("deleted", 0))

    def txn(self, compares: Sequence[Compare], success: Sequence[Put | Delete],
            failure: Sequence[Put | Delete] = ()) -> tuple[bool, int]:
        answer = self.call("kv/txn", {"compare": [compare_json(c) for c in compares],
                                      "success": [op_json(op) for op in success],
                                      "failure": [op_json(op) for op in failure]})
        return bool(answer.get("succeeded", False)), int(answer["header"]["revision"])

    def grant(self, ttl: int) -> int:
        return int(self.call("lease/grant", {"TTL": str(ttl)})["ID"])

    def keepalive(self, lease: int) -> int:
        answer = self.call("lease/keepalive", {"ID": str(lease)})
        return int(answer.get("result", {}).get("TTL", 0))

    def revoke(self, lease: int) -> None:
        try:
            self.call("lease/revoke", {"ID": str(lease)})
        except NsnetError as exc:
            if "not found" not in str(exc):
                raise

    def time_to_live(self, lease: int) -> int:
        """The lease's remaining TTL; -1 when it is gone."""
        return int(self.call("lease/timetolive", {"ID": str(lease)}).get("TTL", -1))

    def compact(self, revision: int) -> None:
        self.call("kv/compaction", {"revision": str(revision), "physical": True})

    def version(self) -> str:
        """etcd's server version (GET /version), refused below 3.4 (no /v3 gateway)."""
        reasons = []
        for index in range(len(self.endpoints)):
            connection = self._connection(index, CONNECT_TIMEOUT_S)
            try:
                connection.request("GET", "/version")
                answer = json.loads(connection.getresponse().read() or b"{}")
            except (OSError, http.client.HTTPException, ValueError) as exc:
                reasons.append(f"{self._name(index)}: {getattr(exc, 'strerror', None) or exc}")
                continue
            finally:
                connection.close()
            version = answer.get("etcdserver", "")
            parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
            if parts < (3, 4):
                raise NsnetError(f"cluster store: etcd {version or '(unknown)'} is too old (nsnet needs 3.4 or later)")
            return version
        raise Unavailable("; ".join(reasons))

    def watch(self, prefix: str, start_revision: int) -> GatewayWatch:
        return GatewayWatch(self, prefix, start_revision)

    def close(self) -> None:
        pass


class GatewayWatch:
    """One streaming POST /v3/watch: a JSON object per line, `created` first."""

    def __init__(self, client: EtcdGateway, prefix: str, start_revision: int) -> None:
        self.client, self.prefix, self.start = client, prefix, start_revision
        self._connection: http.client.HTTPConnection | None = None
        self.closed = False

    def __iter__(self) -> Iterator[WatchBatch]:
        client = self.client
        body = {"create_request": {"key": _b64(self.prefix), "range_end": _b64(prefix_end(self.prefix)),
                                   "start_revision": str(self.start), "progress_notify": True}}
        reasons = []
        response = None
        for attempt in range(len(client.endpoints)):
            index = (client._preferred + attempt) % len(client.endpoints)
            try:
                if client.settings.user and client._token is None:
                    client._authenticate(index)
                connection = client._connection(index, CONNECT_TIMEOUT_S)
                connection.connect()
                _keepalive(connection.sock)
                connection.sock.settimeout(None)
                connection.request("POST", "/v3/watch", json.dumps(body), client._headers())
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                reasons.append(f"{client._name(index)}: {getattr(exc, 'strerror', None) or exc}")
                continue
            if response.status != 200:
                reasons.append(f"{client._name(index)}: HTTP {response.status}")
                connection.close()
                continue
            self._connection = connection
            break
        if self._connection is None or response is None:
            if self.closed:
                return
            raise Unavailable("; ".join(reasons) or "no endpoint")
        try:
            while not self.closed:
                try:
                    line = response.readline()
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    if self.closed:
                        return
                    raise Unavailable(f"watch stream broken: {exc}") from None
                if not line:
                    if self.closed:
                        return
                    raise Unavailable("watch stream ended")
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if "error" in message:
                    error = message["error"]
                    raise Unavailable(f"watch: {error.get('message', error) if isinstance(error, dict) else error}")
                result = message.get("result", {})
                if result.get("canceled"):
                    if int(result.get("compact_revision", 0)):
                        raise Compacted(int(result["compact_revision"]))
                    raise Unavailable(f"watch canceled: {result.get('cancel_reason', 'no reason given')}")
                events = tuple(Event("delete" if e.get("type") == "DELETE" else "put", key_value(e.get("kv", {})))
                               for e in result.get("events") or [])
                if events:  # resuming after the last event seen loses nothing
                    yield WatchBatch(max(e.kv.mod_revision for e in events), events)
                elif result.get("created"):  # nothing delivered yet: a batch to reconcile on, no progress
                    yield WatchBatch(self.start - 1, ())
                elif result.get("header", {}).get("revision"):  # a progress notice: all before it was sent
                    yield WatchBatch(int(result["header"]["revision"]), ())
        finally:
            self.close()

    def close(self) -> None:
        self.closed = True
        connection = self._connection
        if connection is not None and connection.sock is not None:
            try:
                connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _keepalive(sock: socket.socket) -> None:
    """A dead peer (a member cut off, a host gone) is noticed in ~11 s, not at TCP's two hours."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 2)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


def open_store(url: str | None = None, environ: Mapping[str, str] = os.environ) -> EtcdGateway | None:
    """The cluster NSNET_CLUSTER names; None when it names none."""
    url = url if url is not None else environ.get(CLUSTER_ENV, "")
    if not url:
        return None
    return EtcdGateway(Settings(url, environ))
