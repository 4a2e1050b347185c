"""Services (the Kubernetes Service model): a virtual address (VIP) on a network whose ports the
kernel spreads over backends, sandboxes named or selected by label, followed live as sandboxes
come and go. Parsing and choosing here are pure; the rules are nsnet.firewall.render's, one map
lookup from VIP, protocol and port to the service whatever their number, then a random pick.
"""

from __future__ import annotations

import re
import socket
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network

from ..errors import InvalidInput
from ..model import Sandbox, Service, ServicePort

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from ..model import IPNetwork

PROTOCOLS = ("tcp", "udp", "sctp")
DEFAULT_RANGE = "10.211.0.0/16"  # next to the networks' default pool (10.210.0.0/16), NSNET_SERVICE_RANGE
_PORT = re.compile(r"(?P<port>[0-9]{1,5})(?::(?P<target>[0-9]{1,5}))?(?:/(?P<protocol>[a-z]+))?\Z")


def ports(specs: Sequence[str]) -> tuple[ServicePort, ...]:
    """`-p PORT[:TARGET][/tcp|udp|sctp]`, at least one, no port twice in a protocol."""
    if not specs:
        raise InvalidInput("-p", None, "is needed: at least one port of the service")
    parsed: dict[tuple[str, int], ServicePort] = {}
    for spec in specs:
        found = _PORT.match(spec)
        if not found:
            raise InvalidInput("-p", spec, "must be PORT[:TARGET_PORT][/tcp|udp|sctp]")
        protocol = found["protocol"] or "tcp"
        if protocol not in PROTOCOLS:
            raise InvalidInput("-p", spec, f"has protocol {protocol!r}; it must be one of tcp, udp, sctp")
        port = int(found["port"])
        target = int(found["target"] or port)
        for value in (port, target):
            if not 1 <= value <= 65535:
                raise InvalidInput("-p", spec, "must have ports from 1 to 65535")
        if (protocol, port) in parsed:
            raise InvalidInput("-p", spec, f"repeats port {port}/{protocol}")
        parsed[(protocol, port)] = ServicePort(protocol, port, target)
    return tuple(parsed.values())


def selector(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """`--selector KEY=VALUE` (repeatable: every pair must hold)."""
    from ..validate import labels

    try:
        return labels(list(items))
    except InvalidInput as exc:
        raise InvalidInput("--selector", exc.value, exc.reason) from None


def service_range(text: str) -> IPv4Network:
    try:
        network = ip_network(text)
    except ValueError:
        raise InvalidInput("NSNET_SERVICE_RANGE", text, "is not an IPv4 CIDR block") from None
    if not isinstance(network, IPv4Network) or network.prefixlen > 30:
        raise InvalidInput("NSNET_SERVICE_RANGE", text, "must be an IPv4 block of at least 4 addresses")
    return network


def vip(text: str, within: IPv4Network) -> IPv4Address:
    try:
        address = ip_address(text)
    except ValueError:
        raise InvalidInput("--vip", text, "is not an IPv4 address") from None
    if not isinstance(address, IPv4Address) or address not in within or address in (within.network_address,
                                                                                       within.broadcast_address):
        raise InvalidInput("--vip", text, f"must be an address of the service range {within}")
    return address


def free_vip(within: IPv4Network, taken: set[str]) -> IPv4Address | None:
    """The first address of the range no service holds (not its first or last). In integers: at
    thousands of services, ipaddress objects for every candidate were most of a create."""
    held = {int.from_bytes(socket.inet_aton(t), "big") for t in taken}
    first, last = int(within.network_address) + 1, int(within.broadcast_address) - 1
    candidate = next((a for a in range(first, min(last, first + len(held)) + 1) if a not in held), None)
    return IPv4Address(candidate) if candidate is not None else None


def overlaps(within: IPv4Network, subnets: Iterable[IPNetwork]) -> IPNetwork | None:
    return next((s for s in subnets if s.version == 4 and s.overlaps(within)), None)


def backends(service: Service, sandboxes: Iterable[Sandbox], network: str) -> list[tuple[str, str]]:
    """(sandbox, IPv4 address) of each sandbox serving: on the service's network, ready there,
    named or selected; by name, which gives each its place in the random pick."""
    chosen = []
    for sandbox in sandboxes:
        endpoint = sandbox.endpoint(network)
        if endpoint is None or endpoint.state != "ready" or not service.selects(sandbox.name, sandbox.labels):
            continue
        address = next((a.ip for a in endpoint.addresses if a.version == 4), None)
        if address is not None:
            chosen.append((sandbox.name, str(address)))
    return sorted(chosen)
