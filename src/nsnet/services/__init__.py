"""Services (the Kubernetes Service model): a virtual address (VIP) on a network whose ports the
kernel spreads over backends, sandboxes named or selected by label, followed live as sandboxes
come and go. Parsing and choosing here are pure; the rules are nsnet.firewall.render's, one map
lookup from VIP, protocol and port to the service whatever their number, then a random pick.
"""

from __future__ import annotations

import re
import socket
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from ..errors import InvalidInput
from ..model import Endpoint, Sandbox, Service, ServicePort
from ..record import replace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from ..model import IPAddress, IPNetwork

PROTOCOLS = ("tcp", "udp", "sctp")
# Beside the networks' default pool (10.210.0.0/16); the IPv6 one, a unique local /112 (as
# Kubernetes' fd00:10:96::/112), "nsvc" in its Global ID. NSNET_SERVICE_RANGE replaces either.
DEFAULT_RANGES = "10.211.0.0/16,fd00:6e73:7663::/112"
DEFAULT_AFFINITY = 10800  # Kubernetes' default for ClientIP affinity
MAX_AFFINITY = 86400
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


_PUBLISH = re.compile(r"(?P<host>[0-9]{1,5})(?::(?P<port>[0-9]{1,5}))?\Z")


def publish(specs: Sequence[str], ports: tuple[ServicePort, ...]) -> tuple[ServicePort, ...]:
    """`--publish HOST_PORT[:PORT]`: the service's port PORT (every protocol it has; PORT may be
    left out when the service has one port number) also on HOST_PORT of every host address."""
    chosen = list(ports)
    for spec in specs:
        found = _PUBLISH.match(spec)
        if not found:
            raise InvalidInput("--publish", spec, "must be HOST_PORT[:PORT], PORT a port of the service")
        host = int(found["host"])
        if not 1 <= host <= 65535:
            raise InvalidInput("--publish", spec, "must have ports from 1 to 65535")
        if found["port"] is None and len({p.port for p in chosen}) > 1:
            raise InvalidInput("--publish", spec, "must name the service port it reaches (HOST_PORT:PORT): the "
                               "service has several")
        wanted = int(found["port"]) if found["port"] else chosen[0].port
        matching = [i for i, p in enumerate(chosen) if p.port == wanted]
        if not matching:
            raise InvalidInput("--publish", spec, f"names port {wanted}, which is not a port of the service (-p)")
        for i in matching:
            if chosen[i].node_port is not None:
                raise InvalidInput("--publish", spec, f"publishes port {wanted}/{chosen[i].protocol} a second time")
            if any(p.node_port == host and p.protocol == chosen[i].protocol for p in chosen):
                raise InvalidInput("--publish", spec, f"repeats host port {host}/{chosen[i].protocol}")
            chosen[i] = replace(chosen[i], node_port=host)
    return tuple(chosen)


def selector(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """`--selector KEY=VALUE` (repeatable: every pair must hold)."""
    from ..validate import labels

    try:
        return labels(list(items))
    except InvalidInput as exc:
        raise InvalidInput("--selector", exc.value, exc.reason) from None


def service_ranges(text: str) -> dict[int, IPNetwork]:
    """NSNET_SERVICE_RANGE: an IPv4 block, and/or an IPv6 one, comma-separated (Kubernetes'
    --service-cluster-ip-range); a family left out keeps its default."""
    ranges: dict[int, IPNetwork] = {}
    for item in (t.strip() for t in text.split(",")):
        try:
            network = ip_network(item)
        except ValueError:
            raise InvalidInput("NSNET_SERVICE_RANGE", item, "is not a CIDR block") from None
        if network.num_addresses < 4:
            raise InvalidInput("NSNET_SERVICE_RANGE", item, "must hold at least 4 addresses")
        if network.version == 6 and network.prefixlen < 64:  # IPv6 affinity keys VIPs by their low 64 bits
            raise InvalidInput("NSNET_SERVICE_RANGE", item, "must lie within one /64 (a prefix of 64 or more)")
        if network.version in ranges:
            raise InvalidInput("NSNET_SERVICE_RANGE", item, f"is a second IPv{network.version} block")
        ranges[network.version] = network
    return ranges


def vip(text: str, within: dict[int, IPNetwork]) -> IPAddress:
    try:
        address = ip_address(text)
    except ValueError:
        raise InvalidInput("--vip", text, "is not an IP address") from None
    block = within.get(address.version)
    if block is None or address not in block or address in (block.network_address, block.broadcast_address):
        ranges = " or ".join(str(b) for b in within.values())
        raise InvalidInput("--vip", text, f"must be an address of the service range {ranges}")
    return address


def free_vip(within: IPNetwork, taken: set[str]) -> IPAddress | None:
    """The first address of the block no service holds (not its first or last). In integers: at
    thousands of services, ipaddress objects for every candidate were most of a create."""
    family, six = (socket.AF_INET, False) if within.version == 4 else (socket.AF_INET6, True)
    held = {int.from_bytes(socket.inet_pton(family, t), "big") for t in taken if (":" in t) is six}
    first, last = int(within.network_address) + 1, int(within.broadcast_address) - 1
    candidate = next((a for a in range(first, min(last, first + len(held)) + 1) if a not in held), None)
    if candidate is None:
        return None
    return IPv4Address(candidate) if within.version == 4 else IPv6Address(candidate)


def overlaps(within: IPNetwork, subnets: Iterable[IPNetwork]) -> IPNetwork | None:
    return next((s for s in subnets if s.version == within.version and s.overlaps(within)), None)


def affinity(text: str | None) -> int | None:
    """`--affinity client-ip[=SECONDS]` (Kubernetes' ClientIP: 10,800 s unless given, at most a
    day) or `none`."""
    if text is None or text == "none":
        return None
    kind, _, seconds = text.partition("=")
    if kind != "client-ip":
        raise InvalidInput("--affinity", text, "must be client-ip[=SECONDS] or none")
    if not seconds:
        return DEFAULT_AFFINITY
    if not seconds.isdigit() or not 1 <= int(seconds) <= MAX_AFFINITY:
        raise InvalidInput("--affinity", text, f"must keep a client from 1 to {MAX_AFFINITY} seconds")
    return int(seconds)


def serving(service: Service, sandboxes: Iterable[Sandbox]) -> list[tuple[str, Endpoint]]:
    """(sandbox, its endpoint on the service's network) of each sandbox serving: on the network,
    ready there, named or selected; by name, which gives each its place in the random pick. A
    sandbox on its way out (state removing, its row deleted after the services lock is let go)
    serves no more."""
    chosen = []
    for sandbox in sandboxes:
        if sandbox.state != "ready":
            continue
        endpoint = sandbox.endpoint(service.network)
        if endpoint is not None and endpoint.state == "ready" and service.selects(sandbox.name, sandbox.labels):
            chosen.append((sandbox.name, endpoint))
    return sorted(chosen, key=lambda c: c[0])


def backends(service: Service, sandboxes: Iterable[Sandbox]) -> list[tuple[str, tuple[str, ...]]]:
    """(sandbox, its addresses in the families of the service's VIPs) of each backend."""
    versions = {v.version for v in service.vips}
    return [(name, tuple(str(a.ip) for a in e.addresses if a.version in versions))
            for name, e in serving(service, sandboxes)]


def picks(service: Service, sandboxes: Iterable[Sandbox]) -> dict[int, list[str]]:
    """Per family of the service's VIPs, the backends' addresses in their order of pick."""
    chosen: dict[int, list[str]] = {v.version: [] for v in service.vips}
    for _, endpoint in serving(service, sandboxes):
        for address in endpoint.addresses:
            if address.version in chosen:
                chosen[address.version].append(str(address.ip))
    return chosen
