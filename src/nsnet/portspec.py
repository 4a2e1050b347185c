"""Parsing of `-p/--publish` specs, as Docker parses them, into PortRequests.

    [HOST_IP:][HOST_PORT[-END]:]SANDBOX_PORT[-END][/tcp|udp|sctp]

`80` publishes sandbox port 80 on an ephemeral host port of every host address; `8080:80`,
`127.0.0.1:8080:80`, `127.0.0.1::80` (ephemeral, one address), `[2001:db8::5]:8080:80` (an IPv6
address, in brackets), `9000-9010:9000-9010` (ranges of equal length), `8000-8010:80` (the first
free host port of the range). No address means every address of the host in each family the
sandbox's network has; as in Docker, `0.0.0.0` means every IPv4 address and `[::]` every IPv6
one. `[::1]` is refused: the kernel cannot forward IPv6 loopback traffic to another host (there
is no route_localnet for IPv6).
"""

from __future__ import annotations

import re
from ipaddress import IPv6Address

from .errors import InvalidInput
from .model import IPAddress
from .record import record
from .validate import address

PROTOCOLS = ("tcp", "udp", "sctp")
_RANGE = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?\Z")


@record
class PortRequest:
    """One -p spec: sandbox ports, and host ports unless IPAM-like allocation picks them."""

    sandbox_ports: range
    protocol: str = "tcp"
    host_ip: IPAddress | None = None  # None: every address of the host
    host_ports: range | None = None  # None: ephemeral ports

    @property
    def pick_one(self) -> bool:
        """`8000-8010:80`: one sandbox port, published on the first free port of a host range."""
        return self.host_ports is not None and len(self.sandbox_ports) == 1 and len(self.host_ports) > 1


def _ports(spec: str, text: str, what: str) -> range:
    match = _RANGE.match(text)
    if not match:
        raise InvalidInput("publish", spec, f"{what} {text!r} is not a port or a range of ports")
    first = int(match.group(1))
    last = int(match.group(2) or first)
    for port in (first, last):
        if not 1 <= port <= 65535:
            raise InvalidInput("publish", spec, f"{what} {port} is outside 1-65535")
    if last < first:
        raise InvalidInput("publish", spec, f"{what} range {text} ends before it starts")
    return range(first, last + 1)


def parse(spec: str) -> PortRequest:
    rest, slash, protocol = spec.rpartition("/")
    if not slash:
        rest, protocol = spec, "tcp"
    if protocol not in PROTOCOLS:
        raise InvalidInput("publish", spec, f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    host_text = None
    if rest.startswith("["):
        host_text, bracket, rest = rest[1:].partition("]")
        if not bracket or not rest.startswith(":") or not host_text:
            raise InvalidInput("publish", spec, "expected [IPV6]:[HOST_PORT]:SANDBOX_PORT[/PROTOCOL]")
        address("publish host address", host_text, 6)
        rest = rest[1:]
        if rest.count(":") != 1:
            raise InvalidInput("publish", spec, "expected [IPV6]:[HOST_PORT]:SANDBOX_PORT[/PROTOCOL]")
        parts = ["", *rest.split(":")]
    else:
        parts = rest.split(":")
        if len(parts) > 3:
            raise InvalidInput("publish", spec, "expected [HOST_IP:][HOST_PORT:]SANDBOX_PORT[/PROTOCOL] (an IPv6 "
                               "address goes in brackets)")
        if len(parts) == 3 and parts[0]:
            host_text = parts[0]
    host_ip = address("publish host address", host_text, 4 if not spec.startswith("[") else 6) \
        if host_text else None
    if host_ip == IPv6Address(1):
        raise InvalidInput("publish", spec, "the kernel cannot forward IPv6 loopback ([::1]) traffic to a sandbox "
                           "(IPv6 has no route_localnet); publish on 127.0.0.1 or on another address")
    sandbox_ports = _ports(spec, parts[-1], "sandbox port")
    host_ports = _ports(spec, parts[-2], "host port") if len(parts) >= 2 and parts[-2] else None
    if host_ports is not None and len(host_ports) != len(sandbox_ports) and len(sandbox_ports) != 1:
        raise InvalidInput("publish", spec, "host and sandbox port ranges must have the same length")
    return PortRequest(sandbox_ports=sandbox_ports, protocol=protocol, host_ip=host_ip, host_ports=host_ports)


def parse_all(specs: list[str] | tuple[str, ...]) -> list[PortRequest]:
    return [parse(spec) for spec in specs]
