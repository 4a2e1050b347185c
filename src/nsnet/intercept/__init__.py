"""Transparent interception (the Istio sidecar model): a sandbox's outbound TCP goes to a local
port, its inbound TCP to another, through nftables rules of nsnet's inside the sandbox's own
namespace. The proxy listening there reads the original destination with SO_ORIGINAL_DST.

`spec` parses what a user asks for (Interception), `render` makes the table: both pure.
"""

from __future__ import annotations

from ipaddress import ip_network

from ..errors import InvalidInput
from ..record import record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..model import IPNetwork

MAX_UID = 2**32 - 2  # (uid_t)-1 is "no uid"


@record
class Interception:
    outbound_port: int | None  # outbound TCP goes to 127.0.0.1:PORT (None: not captured)
    inbound_port: int | None  # inbound TCP goes to PORT on the address it arrived for
    exclude_uids: tuple[int, ...] = ()  # the proxy's own traffic, or it would loop
    exclude_ports: tuple[int, ...] = ()  # outbound destination ports left alone
    exclude_inbound_ports: tuple[int, ...] = ()
    exclude_cidrs: tuple[IPNetwork, ...] = ()  # outbound destinations left alone
    dns_port: int | None = None  # UDP and TCP 53 outbound go to this port (None: not captured)

    def to_dict(self) -> dict:
        return {"OutboundPort": self.outbound_port, "InboundPort": self.inbound_port,
                "ExcludeUIDs": list(self.exclude_uids), "ExcludePorts": list(self.exclude_ports),
                "ExcludeInboundPorts": list(self.exclude_inbound_ports),
                "ExcludeCIDRs": [str(c) for c in self.exclude_cidrs], "DNSPort": self.dns_port}

    @classmethod
    def from_dict(cls, data: dict) -> Interception:
        return cls(data["OutboundPort"], data["InboundPort"], tuple(data["ExcludeUIDs"]),
                   tuple(data["ExcludePorts"]), tuple(data["ExcludeInboundPorts"]),
                   tuple(ip_network(c) for c in data["ExcludeCIDRs"]), data.get("DNSPort"))


def _port(field: str, value: int | str | None) -> int | None:
    if value is None:
        return None
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(field, value, "is not a port number") from None
    if not 1 <= port <= 65535:
        raise InvalidInput(field, value, "must be a port from 1 to 65535")
    return port


def _uid(value: int | str) -> int:
    try:
        uid = int(value)
    except (TypeError, ValueError):
        raise InvalidInput("--exclude-uid", value, "is not a user id") from None
    if not 0 <= uid <= MAX_UID:
        raise InvalidInput("--exclude-uid", value, f"must be a user id from 0 to {MAX_UID}")
    return uid


def _cidr(value: str) -> IPNetwork:
    try:
        return ip_network(value, strict=False)
    except ValueError:
        raise InvalidInput("--exclude-cidr", value, "is not an address or CIDR block") from None


def spec(*, outbound_port: int | str | None = None, inbound_port: int | str | None = None,
         exclude_uids: Sequence[int | str] = (), exclude_ports: Sequence[int | str] = (),
         exclude_inbound_ports: Sequence[int | str] = (), exclude_cidrs: Sequence[str] = (),
         dns_port: int | str | None = None) -> Interception:
    """An interception as asked, validated; it must capture something."""
    made = Interception(
        _port("--outbound-port", outbound_port), _port("--inbound-port", inbound_port),
        tuple(sorted({_uid(u) for u in exclude_uids})),
        tuple(sorted({_port("--exclude-port", p) for p in exclude_ports})),
        tuple(sorted({_port("--exclude-inbound-port", p) for p in exclude_inbound_ports})),
        tuple(sorted({_cidr(c) for c in exclude_cidrs}, key=lambda c: (c.version, c))),
        _port("--dns-port", dns_port),
    )
    if made.outbound_port is None and made.inbound_port is None and made.dns_port is None:
        raise InvalidInput("--outbound-port", None, "is needed (or --inbound-port, or --dns-port): nothing to capture")
    if made.outbound_port is not None and not made.exclude_uids:
        # The proxy's own connections would come back to it for ever.
        raise InvalidInput("--exclude-uid", None, "is needed with --outbound-port: the proxy's own user, or it loops")
    return made
