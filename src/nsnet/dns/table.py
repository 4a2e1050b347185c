"""What the resolver knows, built in one pass from the ledger's rows and never changed after: a
reload builds a new Table and swaps it in with one assignment, so no query sees half of one.

Scoping: a sandbox sees the names of the DNS networks it is attached to, and nothing else; any
other source (the host, a gateway) sees every DNS network. Names are the sandbox's name and its
aliases on each network, asked as NAME, NAME.NETWORK, or either under the zone (NAME.nsnet,
NAME.NETWORK.nsnet); letter case never matters.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    Address = IPv4Address | IPv6Address

ZONE = "nsnet"
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")


def dns_label(name: str) -> bool:
    """Whether a name (sandbox, alias) can be asked for: letters, digits and inner hyphens."""
    return bool(_LABEL.match(name.lower()))


class NetworkRow:
    """A DNS network as the ledger has it."""

    __slots__ = ("name", "gateways", "subnets", "internal", "servers")

    def __init__(self, name: str, gateways: Iterable[str], subnets: Iterable[str], internal: bool,
                 servers: Iterable[str]) -> None:
        self.name, self.internal = name.lower(), internal
        self.gateways = tuple(ip_address(g) for g in gateways)
        self.subnets = tuple(ip_network(s) for s in subnets)
        self.servers = tuple(servers)


class EndpointRow:
    """One sandbox's attachment to a DNS network: its addresses and its aliases there."""

    __slots__ = ("sandbox", "network", "addresses", "aliases")

    def __init__(self, sandbox: str, network: str, addresses: Iterable[str], aliases: Iterable[str]) -> None:
        self.sandbox, self.network = sandbox.lower(), network.lower()
        self.addresses = tuple(ip_address(a) for a in addresses)
        self.aliases = tuple(a.lower() for a in aliases)


class Answer:
    """The outcome of a lookup: addresses (empty: the name exists without one of that family),
    or `known` False for a name nsnet does not have."""

    __slots__ = ("known", "addresses", "in_zone")

    def __init__(self, known: bool, addresses: tuple[Address, ...] = (), in_zone: bool = False) -> None:
        self.known, self.addresses, self.in_zone = known, addresses, in_zone


class Table:
    def __init__(self, networks: Iterable[NetworkRow], endpoints: Iterable[EndpointRow]) -> None:
        self.networks = {n.name: n for n in networks}
        # name -> network -> addresses, for sandbox names and aliases alike
        self.names: dict[str, dict[str, tuple[Address, ...]]] = {}
        self.sandbox_of: dict[Address, str] = {}
        self.networks_of: dict[str, frozenset[str]] = {}
        self.pointers: dict[tuple[Address, str], str] = {}  # (address, network) -> the name it points to
        self.skipped: list[str] = []  # names no DNS question can ask for
        attached: dict[str, set[str]] = {}
        for e in endpoints:
            if e.network not in self.networks:
                continue
            attached.setdefault(e.sandbox, set()).add(e.network)
            for address in e.addresses:
                self.sandbox_of[address] = e.sandbox
                self.pointers[(address, e.network)] = f"{e.sandbox}.{e.network}.{ZONE}"
            for name in (e.sandbox, *e.aliases):
                if not dns_label(name):
                    self.skipped.append(name)
                    continue
                on = self.names.setdefault(name, {})
                on[e.network] = on.get(e.network, ()) + e.addresses
        self.networks_of = {s: frozenset(n) for s, n in attached.items()}

    def visible(self, source: Address | None) -> frozenset[str] | None:
        """The networks a source sees; None: all of them (not a sandbox's address)."""
        sandbox = self.sandbox_of.get(source) if source is not None else None
        return self.networks_of.get(sandbox) if sandbox is not None else None

    def may_forward(self, source: Address | None) -> bool:
        """False for a sandbox whose DNS networks are all internal: its questions never leave
        (Docker's CVE-2024-29018)."""
        seen = self.visible(source)
        return seen is None or any(not self.networks[n].internal for n in seen)

    def upstreams(self, source: Address | None) -> tuple[str, ...]:
        """The servers its networks name (--dns); empty: the host's."""
        seen = self.visible(source)
        names = sorted(seen) if seen is not None else sorted(self.networks)
        return tuple(dict.fromkeys(s for n in names for s in self.networks[n].servers))

    def lookup(self, qname: str, source: Address | None) -> Answer:
        in_zone = qname == ZONE or qname.endswith("." + ZONE)
        name = qname[:-len(ZONE) - 1] if qname.endswith("." + ZONE) else qname
        seen = self.visible(source)
        found = self._find(name, seen)
        if found is None:
            return Answer(False, in_zone=in_zone)
        return Answer(True, found, in_zone)

    def _find(self, name: str, seen: frozenset[str] | None) -> tuple[Address, ...] | None:
        on = self.names.get(name)
        if on is not None:
            networks = [n for n in on if seen is None or n in seen]
            if networks:
                return tuple(a for n in sorted(networks) for a in on[n])
        # NAME.NETWORK, the network's name possibly holding dots itself
        for cut in [i for i, c in enumerate(name) if c == "."]:
            head, network = name[:cut], name[cut + 1:]
            if network in self.networks and (seen is None or network in seen):
                addresses = self.names.get(head, {}).get(network)
                if addresses is not None:
                    return addresses
        return None

    def pointer(self, address: Address, source: Address | None) -> str | None:
        seen = self.visible(source)
        for network in sorted(self.networks):
            if seen is None or network in seen:
                target = self.pointers.get((address, network))
                if target is not None:
                    return target
        return None

    def owns_reverse(self, address: Address, source: Address | None) -> bool:
        """Whether the address lies in a subnet of a network the source sees: a PTR for it that
        nsnet cannot answer is nobody else's either, so it is not forwarded."""
        seen = self.visible(source)
        return any(address in subnet for n in self.networks.values() if seen is None or n.name in seen
                   for subnet in n.subnets)

    def listen_addresses(self) -> list[Address]:
        return sorted({g for n in self.networks.values() for g in n.gateways}, key=lambda a: (a.version, a))
