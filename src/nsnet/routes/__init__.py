"""Static routes inside sandboxes (`nsnet route add NAME DST via GW`): with links, a sandbox that
routes is a lab's router. A sandbox's first route of a family switches forwarding on inside it
for that family, and its last one off again (Mininet's LinuxRouter sets ip_forward by hand); the
default route stays its networks' (nsnet.engine). Parsing here is pure; the plan is
nsnet.plan.route's, the rows the store's.
"""

from __future__ import annotations

from ipaddress import ip_address, ip_network

from ..errors import InvalidInput
from ..model import IPAddress, IPNetwork, Link, Sandbox

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

FORWARDING = {4: "net.ipv4.ip_forward", 6: "net.ipv6.conf.all.forwarding"}


def destination(text: str) -> IPNetwork:
    try:
        network = ip_network(text)
    except ValueError as exc:
        reason = "has host bits set" if "host bits" in str(exc) else "is not a CIDR block"
        raise InvalidInput("DST", text, reason) from None
    if network.prefixlen == 0:
        raise InvalidInput("DST", text, "is the default route, which is the sandbox's networks'")
    if network.is_loopback or network.is_multicast or network.is_link_local:
        raise InvalidInput("DST", text, "is a loopback, multicast or link-local block")
    return network


def gateway(text: str, dst: IPNetwork) -> IPAddress:
    try:
        address = ip_address(text)
    except ValueError:
        raise InvalidInput("GW", text, "is not an IP address") from None
    if address.version != dst.version:
        raise InvalidInput("GW", text, f"is IPv{address.version}, and {dst} IPv{dst.version}")
    if address.is_loopback or address.is_multicast or address.is_unspecified or address in dst:
        raise InvalidInput("GW", text, f"cannot lead to {dst}")
    return address


def connected(sandbox: Sandbox, links: Iterable[Link]) -> list[IPNetwork]:
    """The subnets the sandbox has an address in: its networks' and its links' (given its links)."""
    return [*(a.network for e in sandbox.endpoints for a in e.addresses),
            *(a.network for lk in links for end in lk.ends if end.sandbox == sandbox.name for a in end.addresses)]


def reachable(via: IPAddress, connected: Iterable[IPNetwork]) -> bool:
    """Whether the gateway is on a subnet the sandbox has an address in (a network's or a link's)."""
    return any(via.version == n.version and via in n for n in connected)
