"""Which host ports a sandbox gets: pure resolution of PortRequests into PortMappings.

A host port is refused when nsnet already publishes it on an overlapping address (every address
overlaps every specific one) for the same protocol, or when a host process is bound to it: DNAT
would silently take the traffic away from that process. Ephemeral ports come from the host's
`ip_local_port_range`, skipping both.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol
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
    return next((held for held in listeners if held.protocol == candidate.protocol
                 and held.port == candidate.host_port and _overlap(held.address, candidate.host_ip)), None)


def _free(host_ip: IPv4Address | None, protocol: str, port: int, published: PortLookup,
          holders: HolderLookup) -> bool:
    candidate = PortMapping(host_ip, port, 0, protocol)
    return published.clash(candidate) is None and holders.holder(candidate) is None


class Published:
    """Published ports indexed by (protocol, host port), so a clash costs one lookup."""

    def __init__(self, mappings: Iterable[PortMapping] = ()) -> None:
        self._by_port: dict[tuple[str, int], list[PortMapping]] = {}
        for mapping in mappings:
            self.append(mapping)

    def append(self, mapping: PortMapping) -> None:
        self._by_port.setdefault((mapping.protocol, mapping.host_port), []).append(mapping)

    def __iter__(self) -> Iterator[PortMapping]:
        return (m for group in self._by_port.values() for m in group)

    def clash(self, candidate: PortMapping) -> PortMapping | None:
        return published_clash(candidate, self._by_port.get((candidate.protocol, candidate.host_port), ()))


class Listeners:
    """Host listeners indexed by (protocol, port); the same `holder` question a kernel probe answers."""

    def __init__(self, listeners: Iterable[Listener]) -> None:
        self._by_port: dict[tuple[str, int], list[Listener]] = {}
        for listener in listeners:
            self._by_port.setdefault((listener.protocol, listener.port), []).append(listener)

    def holder(self, candidate: PortMapping) -> Listener | None:
        return listener_clash(candidate, self._by_port.get((candidate.protocol, candidate.host_port), ()))


class PortLookup(Protocol):
    def clash(self, candidate: PortMapping) -> PortMapping | None: ...
    def append(self, mapping: PortMapping) -> None: ...


class HolderLookup(Protocol):
    def holder(self, candidate: PortMapping) -> Listener | None: ...


def resolve(requests: Iterable[PortRequest], published: PortLookup | Iterable[PortMapping],
            listeners: HolderLookup | Collection[Listener], ephemeral: range) -> list[PortMapping]:
    """PortMappings for the requests, each checked against what is published (including the ones
    resolved before it) and what host processes hold. Both are asked one port at a time, so the
    cost does not grow with the number of ports already published."""
    taken = published if hasattr(published, "clash") else Published(published)
    holders = listeners if hasattr(listeners, "holder") else Listeners(listeners)
    mappings: list[PortMapping] = []

    def add(mapping: PortMapping) -> None:
        clash = taken.clash(mapping)
        if clash is not None:
            raise Conflict(f"host port {mapping.host_ip or '0.0.0.0'}:{mapping.host_port}/{mapping.protocol}"
                           " is already published")
        bound = holders.holder(mapping)
        if bound is not None:
            raise Conflict(f"host port {mapping.host_ip or '0.0.0.0'}:{mapping.host_port}/{mapping.protocol}"
                           f" is in use by a host process (bound to {bound.address or '0.0.0.0'}:{bound.port})")
        taken.append(mapping)
        mappings.append(mapping)

    for request in requests:
        ip, proto = request.host_ip, request.protocol
        if request.pick_one:
            port = next((p for p in request.host_ports if _free(ip, proto, p, taken, holders)), None)
            if port is None:
                raise Conflict(f"no free host port in {ip or '0.0.0.0'}:{request.host_ports.start}-"
                               f"{request.host_ports.stop - 1}/{proto}")
            add(PortMapping(ip, port, request.sandbox_ports[0], proto))
        elif request.host_ports is not None:
            for host_port, sandbox_port in zip(request.host_ports, request.sandbox_ports):
                add(PortMapping(ip, host_port, sandbox_port, proto))
        else:
            for sandbox_port in request.sandbox_ports:
                port = next((p for p in ephemeral if _free(ip, proto, p, taken, holders)), None)
                if port is None:
                    raise Exhausted(f"no free ephemeral host port left in {ephemeral.start}-{ephemeral.stop - 1}")
                add(PortMapping(ip, port, sandbox_port, proto))
    return mappings
