"""What the resolver knows, built in one pass from the ledger's rows and never changed after: a
reload builds a new Table and swaps it in with one assignment, so no query sees half of one.

Scoping: a sandbox sees the names of the DNS networks it is attached to, and nothing else; any
other source (the host, a gateway) sees every DNS network. Each asker's Scope is made once per
table (on its first question), and each lookup is remembered, so a question costs a few dictionary
lookups. Names are the sandbox's name and its aliases on each network, asked as NAME, NAME.NETWORK,
or either under the zone (NAME.nsnet, NAME.NETWORK.nsnet); letter case never matters. Addresses
stay text and wire bytes (Addr): parsing a thousand of them into ipaddress objects was half of a
reload.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from ..validate import dns_label

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    Address = IPv4Address | IPv6Address
    Listener = tuple[Address, int]  # an address and port the resolver answers on

ZONE = "nsnet"
MAX_REMEMBERED = 65536  # lookups kept per table: a flood of random names cannot grow it further
class NetworkRow:
    """A DNS network as the ledger has it."""

    __slots__ = ("name", "gateways", "subnets", "internal", "servers", "port")

    def __init__(self, name: str, gateways: Iterable[str], subnets: Iterable[str], internal: bool,
                 servers: Iterable[str], port: int = 53) -> None:
        self.name, self.internal, self.port = name.lower(), internal, port
        self.gateways = tuple(ip_address(g) for g in gateways)
        self.subnets = tuple(ip_network(s) for s in subnets)
        self.servers = tuple(servers)


class Addr:
    """An address as the ledger writes it (`text`, also how recvfrom gives a peer's) and as an
    answer carries it (`packed`)."""

    __slots__ = ("version", "packed", "text")

    def __init__(self, text: str) -> None:
        self.version = 6 if ":" in text else 4
        self.packed = socket.inet_pton(socket.AF_INET6 if self.version == 6 else socket.AF_INET, text)
        self.text = text

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Addr({self.text!r})"


class EndpointRow:
    """One sandbox's attachment to a DNS network: its addresses and its aliases there; or a
    service's name and VIP on its network (`service`: no asker ever has that address)."""

    __slots__ = ("sandbox", "network", "addresses", "aliases", "service", "names", "unaskable")

    def __init__(self, sandbox: str, network: str, addresses: Iterable[str], aliases: Iterable[str],
                 service: bool = False) -> None:
        self.sandbox, self.network, self.service = sandbox.lower(), network.lower(), service
        self.addresses = tuple(Addr(a) for a in addresses)
        self.aliases = tuple(a.lower() for a in aliases)
        # Checked once per row, not per reload: a row is kept across reloads (dns.ledger).
        self.names = tuple(n for n in (self.sandbox, *self.aliases) if dns_label(n))
        self.unaskable = tuple(n for n in (self.sandbox, *self.aliases) if n not in self.names)


class Answer:
    """The outcome of a lookup: addresses (empty: the name exists without one of that family),
    or `known` False for a name nsnet does not have."""

    __slots__ = ("known", "addresses", "in_zone")

    def __init__(self, known: bool, addresses: tuple[Addr, ...] = (), in_zone: bool = False) -> None:
        self.known, self.addresses, self.in_zone = known, addresses, in_zone


class Scope:
    """What one asker sees: its DNS networks (None: all of them, for the host or any address not
    a sandbox's), whether its questions may leave, and its networks' own upstream servers."""

    __slots__ = ("key", "networks", "forwards", "servers", "subnets")

    def __init__(self, key: str, networks: frozenset[str] | None, all_networks: dict[str, NetworkRow]) -> None:
        self.key, self.networks = key, networks
        seen = sorted(networks) if networks is not None else sorted(all_networks)
        # False for a sandbox whose DNS networks are all internal: its questions never leave
        # (Docker's CVE-2024-29018).
        self.forwards = networks is None or any(not all_networks[n].internal for n in networks)
        self.servers = tuple(dict.fromkeys(s for n in seen for s in all_networks[n].servers))
        self.subnets = tuple(subnet for n in seen for subnet in all_networks[n].subnets)

    def sees(self, network: str) -> bool:
        return self.networks is None or network in self.networks


class Table:
    def __init__(self, networks: Iterable[NetworkRow], endpoints: Iterable[EndpointRow]) -> None:
        self.networks = {n.name: n for n in networks}
        # name -> network -> addresses, for sandbox names and aliases alike
        self.names: dict[str, dict[str, tuple[Addr, ...]]] = {}
        self.pointers: dict[tuple[str, str], str] = {}  # (address, network) -> the name it points to
        self.skipped: list[str] = []  # names no DNS question can ask for
        sandbox_of: dict[str, str] = {}  # an address as recvfrom gives it -> its sandbox
        attached: dict[str, set[str]] = {}
        for e in endpoints:
            if e.network not in self.networks:
                continue
            if not e.service:
                attached.setdefault(e.sandbox, set()).add(e.network)
            for address in e.addresses:
                if not e.service:
                    sandbox_of[address.text] = e.sandbox
                self.pointers[(address.text, e.network)] = f"{e.sandbox}.{e.network}.{ZONE}"
            self.skipped += e.unaskable
            for name in e.names:
                on = self.names.setdefault(name, {})
                on[e.network] = on.get(e.network, ()) + e.addresses
        self.everything = Scope("", None, self.networks)
        self._sandbox_of = sandbox_of
        self._attached = attached
        self._scopes: dict[str, Scope] = {}  # by sandbox, made on its first question
        self._answers: dict[tuple[str, str], Answer] = {}  # lookups made, per scope (the table never changes)

    def scope(self, source: str | None) -> Scope:
        """The scope of an asker, by its address as text (a scope id, `%eth0`, ignored)."""
        if source is None:
            return self.everything
        sandbox = self._sandbox_of.get(source)
        if sandbox is None and ("%" in source or ":" in source):
            try:
                sandbox = self._sandbox_of.get(str(ip_address(source.split("%", 1)[0])))
            except ValueError:
                return self.everything
        if sandbox is None:
            return self.everything
        scope = self._scopes.get(sandbox)
        if scope is None:
            scope = self._scopes[sandbox] = Scope(sandbox, frozenset(self._attached[sandbox]), self.networks)
        return scope

    def lookup(self, qname: str, scope: Scope) -> Answer:
        key = (scope.key, qname)
        answer = self._answers.get(key)
        if answer is None:
            in_zone = qname == ZONE or qname.endswith("." + ZONE)
            name = qname[:-len(ZONE) - 1] if qname.endswith("." + ZONE) else qname
            found = self._find(name, scope)
            answer = Answer(False, in_zone=in_zone) if found is None else Answer(True, found, in_zone)
            if len(self._answers) < MAX_REMEMBERED:
                self._answers[key] = answer
        return answer

    def _find(self, name: str, scope: Scope) -> tuple[Addr, ...] | None:
        on = self.names.get(name)
        if on is not None:
            networks = [n for n in on if scope.sees(n)]
            if networks:
                return tuple(a for n in sorted(networks) for a in on[n])
        # NAME.NETWORK, the network's name possibly holding dots itself
        for cut in [i for i, c in enumerate(name) if c == "."]:
            head, network = name[:cut], name[cut + 1:]
            if network in self.networks and scope.sees(network):
                addresses = self.names.get(head, {}).get(network)
                if addresses is not None:
                    return addresses
        return None

    def pointer(self, address: Address, scope: Scope) -> str | None:
        for network in sorted(self.networks):
            if scope.sees(network):
                target = self.pointers.get((str(address), network))
                if target is not None:
                    return target
        return None

    def owns_reverse(self, address: Address, scope: Scope) -> bool:
        """Whether the address lies in a subnet of a network the asker sees: a PTR for it that
        nsnet cannot answer is nobody else's either, so it is not forwarded."""
        return any(address in subnet for subnet in scope.subnets)

    def listeners(self) -> list[Listener]:
        """Each gateway with the port its network's questions come to (53, or the one the
        firewall redirects them to)."""
        return sorted({(g, n.port) for n in self.networks.values() for g in n.gateways},
                      key=lambda listener: (listener[0].version, *listener))
