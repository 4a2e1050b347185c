"""Address and subnet allocation: pure functions, no I/O.

Addresses are handed out round-robin, like CNI's host-local: the search starts after the last
address allocated, so an address freed a moment ago (a crash-looping sandbox) is not handed out
again at once. The caller passes what is taken as a Collection, which may be backed by a query.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from ipaddress import IPv4Address, IPv4Network

from .errors import Conflict, Exhausted, InvalidInput


def default_gateway(subnet: IPv4Network) -> IPv4Address:
    return subnet.network_address + 1


def _bounds(subnet: IPv4Network, ip_range: IPv4Network | None) -> tuple[int, int]:
    """First and last usable integer addresses: the range, without network and broadcast addresses."""
    scope = ip_range or subnet
    first = max(int(scope.network_address), int(subnet.network_address) + 1)
    last = min(int(scope.broadcast_address), int(subnet.broadcast_address) - 1)
    return first, last


def capacity(subnet: IPv4Network, gateway: IPv4Address, ip_range: IPv4Network | None = None) -> int:
    first, last = _bounds(subnet, ip_range)
    size = max(0, last - first + 1)
    return size - (1 if first <= int(gateway) <= last else 0)


def allocate(
    subnet: IPv4Network,
    gateway: IPv4Address,
    taken: Collection[IPv4Address],
    last: IPv4Address | None = None,
    ip_range: IPv4Network | None = None,
) -> IPv4Address:
    """The next free address after `last`, wrapping around the range once."""
    if len(taken) >= capacity(subnet, gateway, ip_range):
        raise Exhausted(f"network {subnet}: no free address left in {ip_range or subnet}")
    first, end = _bounds(subnet, ip_range)
    size = end - first + 1
    start = int(last) + 1 if last is not None and first <= int(last) < end else first
    for step in range(size):
        candidate = IPv4Address(first + (start - first + step) % size)
        if candidate != gateway and candidate not in taken:
            return candidate
    raise Exhausted(f"network {subnet}: no free address left in {ip_range or subnet}")


def check_requested(
    requested: IPv4Address,
    subnet: IPv4Network,
    gateway: IPv4Address,
    taken: Collection[IPv4Address],
    ip_range: IPv4Network | None = None,
) -> IPv4Address:
    """Accept a user's `--ip` only if it is a free, usable address of the subnet (and range)."""
    if requested not in subnet:
        raise InvalidInput("ip", requested, f"is outside the subnet {subnet}")
    if ip_range is not None and requested not in ip_range:
        raise InvalidInput("ip", requested, f"is outside the ip-range {ip_range}")
    if requested in (subnet.network_address, subnet.broadcast_address):
        raise InvalidInput("ip", requested, f"is the network or broadcast address of {subnet}")
    if requested == gateway:
        raise Conflict(f"ip {requested} is the gateway of {subnet}")
    if requested in taken:
        raise Conflict(f"ip {requested} is already in use on {subnet}")
    return requested


def overlapping(subnet: IPv4Network, others: Iterable[IPv4Network]) -> IPv4Network | None:
    return next((o for o in others if subnet.overlaps(o)), None)


def pick_subnet(pool: IPv4Network, size: int, used: Iterable[IPv4Network]) -> IPv4Network:
    """The first /size subnet of the pool that overlaps nothing in `used`."""
    used = sorted(used, key=lambda n: (int(n.network_address), n.prefixlen))
    for candidate in pool.subnets(new_prefix=size):
        if overlapping(candidate, used) is None:
            return candidate
    raise Exhausted(f"address pool {pool}: every /{size} overlaps a network or a route of the host")
