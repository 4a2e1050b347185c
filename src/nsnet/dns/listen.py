"""The resolver's listening sockets, and the probe that tells whether one can be had."""

from __future__ import annotations

import errno
import socket

PORT = 53
# Where a gateway's resolver listens when another program holds port 53 on it (a host DNS
# server bound to every address): sandboxes still ask GW:53, and nsnet's firewall redirects
# their questions there (nsnet.firewall.render). Below the kernel's ephemeral ports, so no
# outgoing connection takes one for a moment.
ALTERNATE_PORTS = tuple(range(10053, 10063))
IP_FREEBIND = 15


def text(address: object, port: int) -> str:
    """ADDRESS:PORT, an IPv6 address in brackets: how the resolver's status names a listener."""
    return f"[{address}]:{port}" if ":" in str(address) else f"{address}:{port}"


def bind(address: str, port: int, kind: int) -> socket.socket:
    """A non-blocking socket bound to the address and port (UDP: SOCK_DGRAM, TCP: SOCK_STREAM),
    whether the address is on an interface yet or not (an IPv6 gateway is tentative for a moment)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock


def free(address: str, port: int) -> bool:
    """Whether the resolver could listen on the address and port, UDP and TCP, now."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        try:
            bind(address, port, kind).close()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def port_for(gateways: list[str], ours: set[str] = frozenset()) -> int | None:
    """The port the resolver can listen on at every gateway of a network: 53, or else the first
    alternate port free on all; None when every one is taken. `ours`: what nsnet's resolver
    listens on now (`text`), which it may be about to let go (a network just removed with the
    same gateway): not another program's."""
    return next((port for port in (PORT, *ALTERNATE_PORTS)
                 if all(text(g, port) in ours or free(g, port) for g in gateways)), None)
