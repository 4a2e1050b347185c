"""Sockets bound in the host namespace, read from /proc/net (what `ss -ltun` shows).

TCP counts when listening, UDP when bound; an IPv6 socket on [::] also takes IPv4 unless it is
v6only, which /proc does not say, so it is counted as taking every address.
"""

from __future__ import annotations

import errno
import socket
import struct
from ipaddress import IPv4Address, IPv6Address, ip_address

from ..errors import InvalidInput
from ..model import PortMapping
from ..publish import Listener, listener_clash

TCP_LISTEN = "0A"
_FILES = (("tcp", "/proc/net/tcp", 4), ("tcp", "/proc/net/tcp6", 6), ("udp", "/proc/net/udp", 4),
          ("udp", "/proc/net/udp6", 6))


def _address(hex_address: str, family: int) -> IPv4Address | None:
    """None for a wildcard; IPv6 addresses other than the wildcard and v4-mapped ones are skipped."""
    raw = bytes.fromhex(hex_address)
    if family == 4:
        ip = IPv4Address(struct.pack("<I", struct.unpack(">I", raw)[0]))
        return None if ip == IPv4Address(0) else ip
    words = struct.unpack(">4I", raw)
    host_order = b"".join(struct.pack("<I", w) for w in words)
    if host_order == bytes(16):
        return None
    if host_order[:12] == b"\0" * 10 + b"\xff\xff":
        return IPv4Address(host_order[12:])
    return IPv4Address(0)  # an IPv6 address: it takes no IPv4 port


def listeners() -> list[Listener]:
    found = []
    for protocol, path, family in _FILES:
        try:
            with open(path) as handle:
                lines = handle.readlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            if protocol == "tcp" and state != TCP_LISTEN:
                continue
            hex_address, hex_port = local.split(":")
            address = _address(hex_address, family)
            if address != IPv4Address(0):
                found.append(Listener(protocol, address, int(hex_port, 16)))
    found += _sctp()
    return found


def _sctp() -> list[Listener]:
    """SCTP endpoints, when the sctp module is loaded: LADDRS are printed as text."""
    try:
        with open("/proc/net/sctp/eps") as handle:
            lines = handle.readlines()[1:]
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        port = int(fields[5])
        for text in fields[8:]:
            try:
                parsed = ip_address(text)
            except ValueError:
                continue
            if parsed.version == 6:  # like tcp6: the wildcard takes every address, v4-mapped one
                if parsed.ipv4_mapped is not None:
                    parsed = parsed.ipv4_mapped
                elif parsed == IPv6Address(0):
                    found.append(Listener("sctp", None, port))
                    continue
                else:
                    continue
            found.append(Listener("sctp", None if parsed == IPv4Address(0) else parsed, port))
    return found


class BindProbe:
    """Whether a host process holds a port, asked of the kernel by trying to bind it ourselves.

    One bind() per port, where reading /proc/net/tcp costs ~4 ms whatever the port (the kernel
    walks its whole socket table). TCP binds with SO_REUSEADDR, so only a listening socket (or
    one bound without it) conflicts, not connections that merely use the port. A host address
    that is not this host's fails with EADDRNOTAVAIL: nothing could ever reach such a port.
    A refused bind says only that something holds the port; /proc/net, read then, says on which
    address, so the message names the real socket (127.0.0.1, not the 0.0.0.0 we tried).
    """

    _TYPES = {"tcp": (socket.SOCK_STREAM, 0), "udp": (socket.SOCK_DGRAM, 0), "sctp": (socket.SOCK_STREAM, 132)}

    def holder(self, candidate: PortMapping) -> Listener | None:
        kind, proto = self._TYPES[candidate.protocol]
        address = str(candidate.host_ip) if candidate.host_ip is not None else "0.0.0.0"
        try:
            probe = socket.socket(socket.AF_INET, kind, proto)
        except OSError:  # no SCTP in this kernel: then no host process can hold an SCTP port
            return None
        try:
            if candidate.protocol == "tcp":
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((address, candidate.host_port))
            return None
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise InvalidInput("publish host address", address, "is not an address of this host") from None
            if exc.errno != errno.EADDRINUSE:
                raise
            return self._holder_in_proc(candidate)
        finally:
            probe.close()

    @staticmethod
    def _holder_in_proc(candidate: PortMapping) -> Listener:
        """The socket that refused our bind; the candidate itself when /proc shows none (a TCP
        socket bound without listening, or one gone since)."""
        found = listener_clash(candidate, listeners())
        return found or Listener(candidate.protocol, candidate.host_ip, candidate.host_port)
