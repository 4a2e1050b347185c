"""Sockets bound in the host namespace, read from /proc/net (what `ss -ltun` shows).

TCP counts when listening, UDP when bound; an IPv6 socket on [::] also takes IPv4 unless it is
v6only, which /proc does not say, so it is counted as taking every address.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address, ip_address

from ..publish import Listener

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
