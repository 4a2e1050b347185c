"""Links (`nsnet link A B`): two sandboxes joined directly by a veth pair, no bridge between them,
the cable of a lab (Mininet's links, the article's first figure). Parsing and naming here are pure;
the plan is nsnet.plan.link's, the ledger's rows the store's.

Each end's interface is named after the sandbox at the other end when that name can be an
interface's (so `ip addr show db` inside `www` shows the cable to db), else linkN; never ethN,
which networks' endpoints take.
"""

from __future__ import annotations

import re
from ipaddress import ip_interface

from ..errors import InvalidInput
from ..model import IPInterface

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

MIN_MTU, MAX_MTU = 68, 65535
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}\Z")
_RESERVED = re.compile(r"(eth[0-9]+|lo|link[0-9]+)\Z")


def addresses(items: Sequence[str], a: str, b: str) -> dict[str, tuple[IPInterface, ...]]:
    """`--ip SANDBOX=CIDR` (repeatable, one per family and end) as each end's addresses; both ends
    of a family share its subnet and never its address."""
    found: dict[str, dict[int, IPInterface]] = {a: {}, b: {}}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or name not in found:
            raise InvalidInput("--ip", item, f"must be {a}=CIDR or {b}=CIDR")
        try:
            address = ip_interface(text)
        except ValueError:
            raise InvalidInput("--ip", item, "does not name an address with its prefix (CIDR)") from None
        network = address.network
        if address.ip.is_loopback or address.ip.is_multicast or address.ip.is_unspecified or address.ip.is_link_local:
            raise InvalidInput("--ip", item, "is not an address a link can carry (loopback, multicast, link-local or"
                               " unspecified)")
        if address.version == 4 and network.prefixlen < 31 and address.ip in (network.network_address,
                                                                               network.broadcast_address):
            raise InvalidInput("--ip", item, f"is the network or broadcast address of {network}")
        if address.version in found[name]:
            raise InvalidInput("--ip", item, f"is a second IPv{address.version} address for {name}")
        found[name][address.version] = address
    for version in (4, 6):
        one, other = found[a].get(version), found[b].get(version)
        if one is not None and other is not None:
            if one.ip == other.ip:
                raise InvalidInput("--ip", f"{b}={other}", f"is {a}'s address too")
            if one.network != other.network:
                raise InvalidInput("--ip", f"{b}={other}", f"is not in {a}'s subnet {one.network}")
    return {name: tuple(v for _, v in sorted(by.items())) for name, by in found.items()}


def mtu(value: int) -> int:
    if not MIN_MTU <= value <= MAX_MTU:
        raise InvalidInput("--mtu", str(value), f"must be from {MIN_MTU} to {MAX_MTU}")
    return value


def ifname(peer: str, taken: Iterable[str]) -> str:
    """The interface for the cable to `peer` (see the module's doc)."""
    taken = set(taken)
    if _IFNAME.match(peer) and not _RESERVED.match(peer) and peer not in taken:
        return peer
    index = 0
    while f"link{index}" in taken:
        index += 1
    return f"link{index}"
