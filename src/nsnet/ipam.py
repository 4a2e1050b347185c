"""Address and subnet allocation: pure functions, no I/O.

Addresses are handed out round-robin, like CNI's host-local: the search starts after the last
address allocated, so an address freed a moment ago (a crash-looping sandbox) is not handed out
again at once. The caller passes what is taken as a Collection, which may be backed by a query.
Every function serves both families; an IPv6 subnet's first and last addresses are left out as
an IPv4 one's are (the subnet-router anycast address, and the top of the range).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from ipaddress import IPv6Network

from .errors import Conflict, Exhausted, InvalidInput
from .model import IPAddress, IPNetwork


def default_gateway(subnet: IPNetwork) -> IPAddress:
    return subnet.network_address + 1


def _bounds(subnet: IPNetwork, ip_range: IPNetwork | None) -> tuple[int, int]:
    """First and last usable integer addresses: the range, without network and broadcast addresses."""
    scope = ip_range or subnet
    first = max(int(scope.network_address), int(subnet.network_address) + 1)
    last = min(int(scope.broadcast_address), int(subnet.broadcast_address) - 1)
    return first, last


def capacity(subnet: IPNetwork, gateway: IPAddress | None, ip_range: IPNetwork | None = None) -> int:
    first, last = _bounds(subnet, ip_range)
    size = max(0, last - first + 1)
    return size - (1 if gateway is not None and first <= int(gateway) <= last else 0)


def allocate(
    subnet: IPNetwork,
    gateway: IPAddress | None,
    taken: Collection[IPAddress],
    last: IPAddress | None = None,
    ip_range: IPNetwork | None = None,
) -> IPAddress:
    """The next free address after `last`, wrapping around the range once."""
    if len(taken) >= capacity(subnet, gateway, ip_range):
        raise Exhausted(f"network {subnet}: no free address left in {ip_range or subnet}")
    first, end = _bounds(subnet, ip_range)
    size = end - first + 1
    kind = type(subnet.network_address)
    start = int(last) + 1 if last is not None and first <= int(last) < end else first
    for step in range(size):
        candidate = kind(first + (start - first + step) % size)
        if candidate != gateway and candidate not in taken:
            return candidate
    raise Exhausted(f"network {subnet}: no free address left in {ip_range or subnet}")


def check_requested(
    requested: IPAddress,
    subnet: IPNetwork,
    gateway: IPAddress | None,
    taken: Collection[IPAddress],
    ip_range: IPNetwork | None = None,
) -> IPAddress:
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


def overlapping(subnet: IPNetwork, others: Iterable[IPNetwork]) -> IPNetwork | None:
    return next((o for o in others if subnet.overlaps(o)), None)


def pick_subnet(pool: IPNetwork, size: int, used: Iterable[IPNetwork]) -> IPNetwork:
    """The first /size subnet of the pool that overlaps nothing in `used`."""
    used = sorted(used, key=lambda n: (int(n.network_address), n.prefixlen))
    for candidate in pool.subnets(new_prefix=size):
        if overlapping(candidate, used) is None:
            return candidate
    raise Exhausted(f"address pool {pool}: every /{size} overlaps a network or a route of the host")


def ula_prefix(random40: bytes) -> IPv6Network:
    """An RFC 4193 unique local /48: fd00::/8 and 40 random bits (the Global ID), chosen once per
    ledger; nsnet's IPv6 subnets are /64s of it unless the user names one."""
    if len(random40) != 5:
        raise ValueError("a ULA Global ID is 40 bits")
    return IPv6Network((b"\xfd" + random40 + bytes(10), 48))
