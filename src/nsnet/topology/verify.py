"""`nsnet verify FILE`: every expectation of the file probed with real packets from inside its
`from` sandbox, in parallel, each bounded by a timeout.

- `reach: "db:5432/tcp"`: a TCP connection from the sandbox to db's address (on a network or a link
  they share, else db's first address: a routed path). The probe is end to end: when nothing listens
  on db's port, verify listens there itself for the probe's time; when the port is taken (EADDRINUSE),
  a real service is there and the probe connects to it.
- `/udp`: a datagram and its answer; verify's own echo responder when the port is free, else the
  service's answer is needed.
- no port: an ICMP echo (raw socket) and its reply.
- `not_reach`: the same probe must fail (time out, be refused or unreachable), with the listener in
  place, so that a pass means the network stopped it, not an empty port.
A target may be an IP address; a sandbox's address then gets the listener.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

from ..kernel.probe import socket_in
from ..model import IPAddress
from .plan import State
from .spec import Expectation, Topology

TIMEOUT = 2.0  # seconds per probe
PARALLEL = 16


@dataclass(frozen=True)
class Result:
    expectation: Expectation
    ok: bool
    detail: str

    def row(self) -> tuple[str, str, str, str, str]:
        e = self.expectation
        return (e.source, e.target, "reach" if e.reach else "not reach", "ok" if self.ok else "MISS", self.detail)


def _addresses(state: State, name: str) -> list[tuple[str, IPAddress]]:
    """(network or link:PEER, address) of a sandbox."""
    box = state.sandboxes[name]
    found = [(e.network, a.ip) for e in box.endpoints for a in e.addresses]
    for lk in state.links:
        for end, other in ((lk.a, lk.b), (lk.b, lk.a)):
            if end.sandbox == name:
                found += [(f"link:{other.sandbox}", a.ip) for a in end.addresses]
    return found


def target_address(state: State, source: str, target: str) -> IPAddress | None:
    """A sandbox's address as `source` should reach it: on a network they share, or on their link,
    else one that a static route of `source` leads to, else its first (IPv4 before IPv6)."""
    theirs = _addresses(state, target)
    mine = {where.replace(f"link:{target}", "LINK") for where, _ in _addresses(state, source)}
    shared = [a for where, a in theirs if where.replace(f"link:{source}", "LINK") in mine]
    routed = [a for _, a in theirs if any(r.sandbox == source and a in r.dst for r in state.routes)]
    for pool in (shared, routed, [a for _, a in theirs]):
        for version in (4, 6):
            found = next((a for a in pool if a.version == version), None)
            if found is not None:
                return found
    return None


def owner_of(state: State, address: IPAddress) -> str | None:
    for name in state.sandboxes:
        if any(a == address for _, a in _addresses(state, name)):
            return name
    return None


def publisher_of(state: State, address: IPAddress, port: int, protocol: str) -> tuple[str, int] | None:
    """(sandbox, its port) behind a published port that an address of the host may be."""
    for box in state.sandboxes.values():
        for endpoint in box.endpoints:
            for mapping in endpoint.ports:
                if (mapping.protocol == protocol and mapping.host_port == port
                        and mapping.host_ip in (None, address)):
                    return box.name, mapping.sandbox_port
    return None


class Listener:
    """A short-lived TCP listener or UDP echo responder inside a sandbox, or the service there."""

    def __init__(self, netns: str, protocol: str, port: int, version: int) -> None:
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
        self.sock: socket.socket | None = socket_in(netns, family, kind)
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        try:
            if protocol == "tcp":  # past connections' TIME_WAIT; a UDP socket would share the port
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if version == 6:
                self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.sock.bind(("0.0.0.0" if version == 4 else "::", port))
            if protocol == "tcp":
                self.sock.listen(64)
            else:
                self.thread = threading.Thread(target=self._echo, daemon=True)
                self.thread.start()
            self.mine = True
        except OSError as exc:
            self.sock.close()
            self.sock = None
            if exc.errno != errno.EADDRINUSE:
                raise
            self.mine = False  # a real service holds the port

    def _echo(self) -> None:
        assert self.sock is not None
        while not self.stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.1)
            if ready:
                data, peer = self.sock.recvfrom(2048)
                self.sock.sendto(data, peer)

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
        if self.sock is not None:
            self.sock.close()


def _family(address: IPAddress) -> int:
    return socket.AF_INET if address.version == 4 else socket.AF_INET6


def probe_tcp(netns: str, address: IPAddress, port: int) -> tuple[bool, str]:
    with socket_in(netns, _family(address), socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        try:
            sock.connect((str(address), port))
        except TimeoutError:
            return False, "timed out"
        except OSError as exc:
            return False, os.strerror(exc.errno).lower() if exc.errno else str(exc)
        return True, "connected"


def probe_udp(netns: str, address: IPAddress, port: int) -> tuple[bool, str]:
    with socket_in(netns, _family(address), socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        payload = b"nsnet-verify " + os.urandom(8).hex().encode()
        try:
            sock.connect((str(address), port))
            sock.send(payload)
            answer = sock.recv(2048)
        except TimeoutError:
            return False, "no answer"
        except OSError as exc:
            return False, os.strerror(exc.errno).lower() if exc.errno else str(exc)
        return True, "answered" if answer == payload else "answered (the service's own answer)"


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def probe_icmp(netns: str, address: IPAddress) -> tuple[bool, str]:
    """An echo request and its reply, through a raw socket in the sandbox (root, no ping needed)."""
    v6 = address.version == 6
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    request, reply = (128, 129) if v6 else (8, 0)
    ident = int.from_bytes(os.urandom(2), "big")
    body = b"nsnet-verify"
    header = struct.pack("!BBHHH", request, 0, 0, ident, 1)
    packet = header if v6 else struct.pack("!BBHHH", request, 0, _checksum(header + body), ident, 1)
    with socket_in(netns, _family(address), socket.SOCK_RAW, proto) as sock:
        try:
            sock.sendto(packet + body, (str(address), 0))
        except OSError as exc:
            return False, os.strerror(exc.errno).lower() if exc.errno else str(exc)
        deadline = time.monotonic() + TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            data, peer = sock.recvfrom(4096)
            icmp = data if v6 else data[(data[0] & 0x0F) * 4:]
            if len(icmp) >= 8 and ip_address(peer[0]) == address:
                kind, _, _, got_id, _ = struct.unpack("!BBHHH", icmp[:8])
                if kind == reply and got_id == ident:
                    return True, "echo reply"
        return False, "no echo reply"


def verify(engine: Any, topology: Topology) -> list[Result]:
    """Every expectation of the file, probed; in the file's order."""
    state = State.read(engine)
    # (expectation, sandbox that gets the listener, address probed, listener's port, problem)
    plans: list[tuple[Expectation, str, IPAddress | None, int, str | None]] = []
    for e in topology.expectations:
        if e.source not in state.sandboxes:
            plans.append((e, "", None, 0, f"sandbox {e.source!r} does not exist (run up first)"))
            continue
        if state.sandboxes[e.source].tap is not None:
            plans.append((e, "", None, 0, f"sandbox {e.source!r} is a VM guest's tap: probes run from sandboxes'"
                                          " namespaces, not from inside guests"))
            continue
        port = e.port or 0
        if e.host in state.sandboxes:
            address = target_address(state, e.source, e.host)
            holder: str | None = e.host
        elif e.host in topology.sandboxes:
            plans.append((e, "", None, 0, f"sandbox {e.host!r} does not exist (run up first)"))
            continue
        else:
            address = ip_address(e.host)
            holder = owner_of(state, address)
            published = publisher_of(state, address, port, e.protocol) if holder is None and port else None
            if published is not None:
                holder, port = published
        if address is None:
            plans.append((e, "", None, 0, f"sandbox {e.host!r} has no address"))
            continue
        if holder in state.sandboxes and state.sandboxes[holder].tap is not None:
            holder = None  # no listener can go into a guest: what it runs answers, or nothing does
        plans.append((e, holder or "", address, port, None))
    listeners: dict[tuple[str, str, int], Listener] = {}
    try:
        for e, holder, address, port, problem in plans:
            if problem is None and holder and e.port is not None:
                key = (holder, e.protocol, port)
                if key not in listeners:
                    # Both families where the sandbox has them: an IPv6 socket on [::] takes IPv4 too.
                    listeners[key] = Listener(state.sandboxes[holder].netns, e.protocol, port, 6)

        def probe(item: tuple[Expectation, str, IPAddress | None, int, str | None]) -> Result:
            e, holder, address, port, problem = item
            if problem is not None or address is None:
                return Result(e, False, problem or "")
            netns = state.sandboxes[e.source].netns
            where = f"{address}" if e.port is None else (
                f"{address}:{e.port}" if address.version == 4 else f"[{address}]:{e.port}")
            if e.protocol == "tcp":
                reached, how = probe_tcp(netns, address, e.port)
            elif e.protocol == "udp":
                reached, how = probe_udp(netns, address, e.port)
            else:
                reached, how = probe_icmp(netns, address)
            listener = listeners.get((holder, e.protocol, port))
            by = "" if listener is None else (" (verify's listener)" if listener.mine else " (a service's port)")
            return Result(e, reached == e.reach, f"{where} {how}{by}")

        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            return list(pool.map(probe, plans))
    finally:
        for listener in listeners.values():
            listener.close()
