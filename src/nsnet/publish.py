"""Which host ports a sandbox gets: pure resolution of PortRequests into PortMappings.

A host port is refused when nsnet already publishes it on an overlapping address (every address
overlaps every specific one) for the same protocol, or when a host process is bound to it: DNAT
would silently take the traffic away from that process. Ephemeral ports come from the host's
`ip_local_port_range`, skipping both.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from .errors import Conflict, Exhausted
from .model import PortMapping
from .portspec import PortRequest


@dataclass(frozen=True)
class Listener:
    """A host socket bound to a port: address None means every address (0.0.0.0 or [::])."""

    protocol: str
    address: IPv4Address | None
    port: int


def _overlap(a: IPv4Address | None, b: IPv4Address | None) -> bool:
    return a is None or b is None or a == b


def published_clash(candidate: PortMapping, published: Iterable[PortMapping]) -> PortMapping | None:
    return next((p for p in published if p.protocol == candidate.protocol and p.host_port == candidate.host_port
                 and _overlap(p.host_ip, candidate.host_ip)), None)


def listener_clash(candidate: PortMapping, listeners: Iterable[Listener]) -> Listener | None:
    return next((l for l in listeners if l.protocol == candidate.protocol and l.port == candidate.host_port
                 and _overlap(l.address, candidate.host_ip)), None)


def _free(host_ip: IPv4Address | None, protocol: str, port: int, published: list[PortMapping],
          listeners: Collection[Listener]) -> bool:
    candidate = PortMapping(host_ip, port, 0, protocol)
    return published_clash(candidate, published) is None and listener_clash(candidate, listeners) is None


def resolve(requests: Iterable[PortRequest], published: Iterable[PortMapping], listeners: Collection[Listener],
            ephemeral: range) -> list[PortMapping]:
    """PortMappings for the requests, each checked against what is published (including the ones
    resolved before it) and what host processes hold."""
    taken = list(published)
    mappings: list[PortMapping] = []

    def add(mapping: PortMapping) -> None:
        clash = published_clash(mapping, taken)
        if clash is not None:
            raise Conflict(f"host port {mapping.host_ip or '0.0.0.0'}:{mapping.host_port}/{mapping.protocol}"
                           " is already published")
        bound = listener_clash(mapping, listeners)
        if bound is not None:
            raise Conflict(f"host port {mapping.host_ip or '0.0.0.0'}:{mapping.host_port}/{mapping.protocol}"
                           f" is in use by a host process (bound to {bound.address or '0.0.0.0'}:{bound.port})")
        taken.append(mapping)
        mappings.append(mapping)

    for request in requests:
        ip, proto = request.host_ip, request.protocol
        if request.pick_one:
            port = next((p for p in request.host_ports if _free(ip, proto, p, taken, listeners)), None)
            if port is None:
                raise Conflict(f"no free host port in {ip or '0.0.0.0'}:{request.host_ports.start}-"
                               f"{request.host_ports.stop - 1}/{proto}")
            add(PortMapping(ip, port, request.sandbox_ports[0], proto))
        elif request.host_ports is not None:
            for host_port, sandbox_port in zip(request.host_ports, request.sandbox_ports):
                add(PortMapping(ip, host_port, sandbox_port, proto))
        else:
            for sandbox_port in request.sandbox_ports:
                port = next((p for p in ephemeral if _free(ip, proto, p, taken, listeners)), None)
                if port is None:
                    raise Exhausted(f"no free ephemeral host port left in {ephemeral.start}-{ephemeral.stop - 1}")
                add(PortMapping(ip, port, sandbox_port, proto))
    return mappings
