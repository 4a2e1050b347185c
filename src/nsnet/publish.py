"""Which host ports a sandbox gets: pure resolution of PortRequests into PortMappings.

A host port is refused when nsnet already publishes it on an overlapping address for the same
protocol (no address, "every address in every family", overlaps all; 0.0.0.0 overlaps every IPv4
address and [::] every IPv6 one; the two families never overlap otherwise), or when a host process is bound to it: DNAT
would silently take the traffic away from that process. Ephemeral ports come from the host's
`ip_local_port_range`, skipping both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence

from .errors import Conflict, Exhausted
from .model import IPAddress, PortMapping
from .portspec import PortRequest
from .record import record

TYPE_CHECKING = False  # typing's import is 5 ms of a CNI plugin's start-up
if TYPE_CHECKING:
    from typing import Protocol

    class PortLookup(Protocol):
        def clash(self, candidate: PortMapping) -> PortMapping | None: ...
        def append(self, mapping: PortMapping) -> None: ...

    class HolderLookup(Protocol):
        def holder(self, candidate: PortMapping) -> Listener | None: ...


@record
class Listener:
    """A host socket bound to a port: address None means every address of both families ([::],
    which takes IPv4 too unless v6only, which /proc does not say); 0.0.0.0 every IPv4 one."""

    protocol: str
    address: IPAddress | None
    port: int


def _overlap(a: IPAddress | None, b: IPAddress | None) -> bool:
    if a is None or b is None:
        return True
    return a.version == b.version and (a == b or a.is_unspecified or b.is_unspecified)


def published_clash(candidate: PortMapping, published: Iterable[PortMapping]) -> PortMapping | None:
    return next((p for p in published if p.protocol == candidate.protocol and p.host_port == candidate.host_port
                 and _overlap(p.host_ip, candidate.host_ip)), None)


def listener_clash(candidate: PortMapping, listeners: Iterable[Listener]) -> Listener | None:
    return next((held for held in listeners if held.protocol == candidate.protocol
                 and held.port == candidate.host_port and _overlap(held.address, candidate.host_ip)), None)


def _free(host_ip: IPAddress | None, protocol: str, port: int, published: PortLookup,
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


class _Cursor:
    """Where the search for a free port of one range, address and protocol goes on.

    Ports before the cursor were found taken or handed out during this resolution, and nothing
    frees a port meanwhile, so each search continues after the last port chosen: resolving N
    ports costs N lookups plus one per taken port, not N²/2.
    """

    def __init__(self, taken: PortLookup, holders: HolderLookup) -> None:
        self._taken = taken
        self._holders = holders
        self._next: dict[tuple[IPAddress | None, str, range], int] = {}

    def next_free(self, host_ip: IPAddress | None, protocol: str, ports: range) -> int | None:
        key = (host_ip, protocol, ports)
        for index in range(self._next.get(key, 0), len(ports)):
            if _free(host_ip, protocol, ports[index], self._taken, self._holders):
                self._next[key] = index + 1
                return ports[index]
        self._next[key] = len(ports)
        return None


def _refuse_more_than_the_range(requests: Sequence[PortRequest], ephemeral: range) -> None:
    """Fail at once when one address and protocol need more ephemeral ports than the range holds,
    rather than after probing every port of it."""
    wanted: Counter[tuple[IPAddress | None, str]] = Counter()
    for request in requests:
        if request.host_ports is None:
            wanted[(request.host_ip, request.protocol)] += len(request.sandbox_ports)
    for (host_ip, protocol), count in wanted.items():
        if count > len(ephemeral):
            raise Exhausted(f"{count} ports to publish on ephemeral host ports of {PortMapping(host_ip, 0, 0).host}/{protocol},"
                            f" but the ephemeral range {ephemeral.start}-{ephemeral.stop - 1} holds only"
                            f" {len(ephemeral)}")


def resolve(requests: Iterable[PortRequest], published: PortLookup | Iterable[PortMapping],
            listeners: HolderLookup | Collection[Listener], ephemeral: range) -> list[PortMapping]:
    """PortMappings for the requests, each checked against what is published (including the ones
    resolved before it) and what host processes hold. Both are asked one port at a time, so the
    cost does not grow with the number of ports already published."""
    requests = list(requests)
    _refuse_more_than_the_range(requests, ephemeral)
    taken = published if hasattr(published, "clash") else Published(published)
    holders = listeners if hasattr(listeners, "holder") else Listeners(listeners)
    cursor = _Cursor(taken, holders)
    mappings: list[PortMapping] = []

    def add(mapping: PortMapping, checked: bool = False) -> None:
        if not checked:
            refuse_taken(mapping, taken, holders)
        taken.append(mapping)
        mappings.append(mapping)

    for request in requests:
        ip, proto = request.host_ip, request.protocol
        if request.pick_one:
            port = cursor.next_free(ip, proto, request.host_ports)
            if port is None:
                raise Conflict(f"no free host port in {PortMapping(ip, 0, 0).host}:{request.host_ports.start}-"
                               f"{request.host_ports.stop - 1}/{proto}")
            add(PortMapping(ip, port, request.sandbox_ports[0], proto), checked=True)
        elif request.host_ports is not None:
            for host_port, sandbox_port in zip(request.host_ports, request.sandbox_ports):
                add(PortMapping(ip, host_port, sandbox_port, proto))
        else:
            for sandbox_port in request.sandbox_ports:
                port = cursor.next_free(ip, proto, ephemeral)
                if port is None:
                    raise Exhausted(f"no free ephemeral host port left in {ephemeral.start}-{ephemeral.stop - 1}")
                add(PortMapping(ip, port, sandbox_port, proto), checked=True)
    return mappings


def refuse_taken(mapping: PortMapping, taken: PortLookup, holders: HolderLookup) -> None:
    where = f"host port {mapping.host}:{mapping.host_port}/{mapping.protocol}"
    if taken.clash(mapping) is not None:
        raise Conflict(f"{where} is already published")
    bound = holders.holder(mapping)
    if bound is not None:
        raise Conflict(f"{where} is in use by a host process (bound to {listening_on(bound)}:{bound.port})")


def listening_on(listener: Listener) -> str:
    if listener.address is None:
        return "[::]"
    return f"[{listener.address}]" if listener.address.version == 6 else str(listener.address)
