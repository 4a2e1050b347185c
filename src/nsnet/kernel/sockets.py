"""Sockets bound in the host namespace, read from /proc/net (what `ss -ltun` shows).

TCP counts when listening, UDP when bound; an IPv6 socket on [::] also takes IPv4 unless it is
v6only, which /proc does not say, so it is counted as taking every address of both families
(Listener address None); 0.0.0.0 takes every IPv4 address.
"""

from __future__ import annotations

import errno
import socket
import struct
from ipaddress import IPv4Address, IPv6Address, ip_address

from ..errors import InvalidInput
from ..model import IPAddress, PortMapping
from ..publish import Listener, listener_clash

TCP_LISTEN = "0A"
_FILES = (("tcp", "/proc/net/tcp", 4), ("tcp", "/proc/net/tcp6", 6), ("udp", "/proc/net/udp", 4),
          ("udp", "/proc/net/udp6", 6))


def _address(hex_address: str, family: int) -> IPAddress | None:
    """/proc's address (32-bit words in host order); None for [::], a v4-mapped one as IPv4."""
    raw = bytes.fromhex(hex_address)
    if family == 4:
        return IPv4Address(struct.pack("<I", struct.unpack(">I", raw)[0]))
    words = struct.unpack(">4I", raw)
    return _unmapped(IPv6Address(b"".join(struct.pack("<I", w) for w in words)))


def _unmapped(address: IPv6Address) -> IPAddress | None:
    if address == IPv6Address(0):
        return None
    return address.ipv4_mapped or address


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
            found.append(Listener(protocol, _address(hex_address, family), int(hex_port, 16)))
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
            found.append(Listener("sctp", _unmapped(parsed) if parsed.version == 6 else parsed, port))
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
        """No host address (every address of both families) is probed in both: 0.0.0.0 and [::]."""
        if candidate.host_ip is None:
            probes = [(socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")]
        else:
            family = socket.AF_INET6 if candidate.host_ip.version == 6 else socket.AF_INET
            probes = [(family, str(candidate.host_ip))]
        for family, address in probes:
            if self._refused(candidate, family, address):
                return self._holder_in_proc(candidate)
        return None

    def _refused(self, candidate: PortMapping, family: int, address: str) -> bool:
        kind, proto = self._TYPES[candidate.protocol]
        try:
            probe = socket.socket(family, kind, proto)
        except OSError:  # no SCTP (or no IPv6) in this kernel: then no host process can hold that port
            return False
        try:
            if candidate.protocol == "tcp":
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # [::] alone, not the IPv4 addresses too
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind((address, candidate.host_port))
            return False
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise InvalidInput("publish host address", address, "is not an address of this host") from None
            if exc.errno != errno.EADDRINUSE:
                raise
            return True
        finally:
            probe.close()

    @staticmethod
    def _holder_in_proc(candidate: PortMapping) -> Listener:
        """The socket that refused our bind; the candidate itself when /proc shows none (a TCP
        socket bound without listening, or one gone since)."""
        found = listener_clash(candidate, listeners())
        return found or Listener(candidate.protocol, candidate.host_ip, candidate.host_port)
