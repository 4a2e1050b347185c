"""`nsnet doctor`: what on this host would break nsnet's traffic, why, and how to fix it.

`diagnose` is pure: it reads HostFacts (gathered by kernel/observe.py) and nsnet's own networks
and published ports, and returns Findings. A finding is a `problem` when nsnet traffic is broken
or will be, a `warning` when it may be or is slowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .model import IPNetwork, Network, PortMapping
from .publish import Listener, listener_clash, listening_on
from .record import record, values


@record
class BaseChain:
    """A chain hooked into the packet path by some table, nsnet's or another's."""

    family: str
    table: str
    name: str
    hook: str
    policy: str
    # Its last rule drops or rejects whatever reaches it (firewalld ends its input so, with an
    # accept policy): a drop by default all the same.
    ends_in_drop: bool = False

    def drops_by_default(self) -> bool:
        return self.policy == "drop" or self.ends_in_drop


@record
class HostFacts:
    ip_forward: str
    bridge_nf_call_iptables: str | None  # None: br_netfilter is not there
    base_chains: tuple[BaseChain, ...] = ()
    legacy_iptables_tables: tuple[str, ...] = ()
    listeners: tuple[Listener, ...] = ()
    routes: tuple[tuple[IPNetwork, str], ...] = ()
    missing_features: tuple[str, ...] = ()
    ipv6_forwarding: str = "0"
    # Host interfaces (or `default`) that ignore router advertisements because IPv6 forwarding is
    # on and their accept_ra is 1 (accept_ra 2 takes them anyway).
    ra_ignored: tuple[str, ...] = ()


@record
class Finding:
    check: str
    severity: str  # "problem" or "warning"
    reason: str
    fix: str
    details: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**values(self), "details": list(self.details)}


def _foreign(chains: Iterable[BaseChain]) -> list[BaseChain]:
    return [c for c in chains if c.table != "nsnet"]


def _forward_drops(facts: HostFacts) -> list[Finding]:
    drops = [c for c in _foreign(facts.base_chains) if c.hook == "forward" and c.policy == "drop"]
    if not drops:
        return []
    names = tuple(f"table {c.family} {c.table}, chain {c.name}" for c in drops)
    with_brnf = facts.bridge_nf_call_iptables == "1"
    bridged = " and, with br_netfilter, bridged traffic between sandboxes" if with_brnf else ""
    return [Finding(
        "forward-policy", "problem",
        f"another table drops forwarded packets by default: sandbox egress, published ports{bridged} are dropped "
        "there whatever nsnet accepts (nftables runs every base chain; an accept in one does not bypass another)",
        "add accept rules for nsnet's bridges (iifname/oifname \"nsbr-*\") to that chain, or set its policy to "
        "accept (Docker installs such a policy: its DOCKER-USER chain is the place for the rules)",
        names,
    )]


def _dns_input_drops(facts: HostFacts, networks: list[Network]) -> list[Finding]:
    """Sandboxes ask nsnet's resolver on their gateway: an input chain of another table that
    drops by default drops their questions, and lookups time out (20 s with search domains)."""
    served = [n for n in networks if n.dns]
    drops = [c for c in _foreign(facts.base_chains) if c.hook == "input" and c.drops_by_default()]
    if not served or not drops:
        return []
    bridges = ", ".join(f'"{n.bridge}"' for n in served)
    ports = ", ".join(str(p) for p in sorted({53, *(n.dns_port for n in served)}))
    rule = f"iifname {{ {bridges} }} meta l4proto {{ tcp, udp }} th dport {{ {ports} }} accept"
    return [Finding(
        "dns-input", "problem",
        "another table drops packets to this host by default: sandboxes' DNS questions to nsnet's resolver on "
        f"their gateway ({', '.join(n.name for n in served)}) are dropped there whatever nsnet accepts, and lookups "
        "time out",
        "accept them before that table's drop (nsnet changes no table but its own), for each chain below",
        tuple(f"nft insert rule {c.family} {c.table} {c.name} {rule}" for c in drops),
    )]


def _dns_ports(networks: list[Network]) -> list[Finding]:
    moved = [n for n in networks if n.dns and n.dns_port != 53]
    if not moved:
        return []
    return [Finding(
        "dns-port", "warning",
        "another program held port 53 on these networks' gateways when they were made: nsnet's resolver answers on "
        "another port there and the firewall redirects the sandboxes' questions to it; the host's own questions to "
        "a gateway's port 53 reach the other program",
        "nothing is needed for sandboxes; to give port 53 back to nsnet, bind the other server to the host's own "
        "addresses only (dnsmasq: --bind-interfaces --except-interface=nsbr-*), then recreate the networks",
        tuple(f"network {n.name}: answers on port {n.dns_port} of {', '.join(str(s.gateway) for s in n.subnets)}"
              for n in moved),
    )]


def _legacy(facts: HostFacts) -> list[Finding]:
    if "filter" not in facts.legacy_iptables_tables:
        return []
    return [Finding(
        "legacy-iptables", "warning",
        "legacy (x_tables) iptables filter rules are loaded; nsnet cannot read them, and a FORWARD policy of DROP "
        "there drops sandbox traffic",
        "check with `iptables-legacy -S FORWARD`; accept traffic from and to nsnet's bridges (nsbr-*)",
    )]


def _ip_forward(facts: HostFacts, networks: list[Network]) -> list[Finding]:
    if facts.ip_forward == "1" or not networks:
        return []
    return [Finding(
        "ip-forward", "problem",
        "net.ipv4.ip_forward is 0: the host routes nothing, so sandboxes have no egress and published ports "
        "do not reach them",
        "sysctl -w net.ipv4.ip_forward=1 (nsnet sets it when it creates a network; something reset it)",
    )]


def _ipv6_forward(facts: HostFacts, networks: list[Network]) -> list[Finding]:
    if facts.ipv6_forwarding == "1" or not any(n.ipv6 for n in networks):
        return []
    return [Finding(
        "ipv6-forward", "problem",
        "net.ipv6.conf.all.forwarding is 0: the host routes no IPv6, so sandboxes have no IPv6 egress and ports "
        "published in IPv6 do not reach them",
        "`nsnet gc` sets it back (after setting accept_ra=2 where the host takes router advertisements)",
    )]


def _router_advertisements(facts: HostFacts) -> list[Finding]:
    if not facts.ra_ignored:
        return []
    return [Finding(
        "ipv6-router-advertisements", "warning",
        "with IPv6 forwarding on, interfaces whose accept_ra is 1 ignore router advertisements: their IPv6 default "
        "route and SLAAC addresses expire, and the host loses IPv6 beyond its link",
        "where the host relies on router advertisements, `sysctl -w net.ipv6.conf.IFACE.accept_ra=2` (nsnet does "
        "this itself for the interfaces that took them when it switched forwarding on)",
        facts.ra_ignored,
    )]


def _br_netfilter(facts: HostFacts) -> list[Finding]:
    if facts.bridge_nf_call_iptables != "1":
        return []
    return [Finding(
        "br-netfilter", "warning",
        "br_netfilter sends traffic switched between sandboxes of one network through the IPv4 hooks of every "
        "table, and through conntrack: foreign filters see it, and the bridge path is slower",
        "nsnet does not need it; if nothing else on this host does (Docker and Kubernetes do), "
        "`sysctl -w net.bridge.bridge-nf-call-iptables=0`",
    )]


def _port_listeners(facts: HostFacts, published: list[tuple[str, PortMapping]]) -> list[Finding]:
    stolen = []
    for sandbox, mapping in published:
        bound = listener_clash(mapping, facts.listeners)
        if bound is not None:
            holder = f"{listening_on(bound)}:{bound.port}"
            stolen.append(f"{mapping.host}:{mapping.host_port}/{mapping.protocol} "
                          f"(published by {sandbox}; a host process is bound to {holder})")
    if not stolen:
        return []
    return [Finding(
        "port-taken", "problem",
        "a host process bound a port after nsnet published it: connections to it are translated to the sandbox "
        "before they can reach the process, which silently receives nothing",
        "stop the host process or move it to another port, or unpublish the port (remove the sandbox)",
        tuple(stolen),
    )]


def _overlapping_routes(facts: HostFacts, networks: list[Network]) -> list[Finding]:
    clashes = []
    for network in networks:
        for subnet in (s.subnet for s in network.subnets):
            for dst, dev in facts.routes:
                if dev not in (network.bridge, network.parent) and dst.version == subnet.version and dst.overlaps(subnet):
                    clashes.append(f"network {network.name} ({subnet}) and route {dst} on {dev or '?'}")
    if not clashes:
        return []
    return [Finding(
        "route-overlap", "problem",
        "a host route overlaps a network's subnet: replies to sandboxes, or traffic to that route, go the wrong way",
        "remove the route, or recreate the network with another --subnet",
        tuple(clashes),
    )]


def _features(facts: HostFacts) -> list[Finding]:
    drivers = tuple(m for m in facts.missing_features if m.startswith(DRIVER_FEATURES))
    needed = tuple(m for m in facts.missing_features if m not in drivers)
    found = [Finding(
        "kernel-features", "problem",
        "the kernel refused something nsnet needs",
        "load the modules (bridge, veth, nf_tables, nft_nat, nft_fib, nft_ct) or use a kernel that has them",
        needed,
    )] if needed else []
    if drivers:
        found.append(Finding(
            "kernel-drivers", "warning",
            "the kernel cannot make the links of some network drivers: `network create --driver` refuses them",
            "nothing, unless you need them: a kernel with the module (CONFIG_MACVLAN, CONFIG_IPVLAN)",
            drivers,
        ))
    return found


# Optional: only `network create --driver` needs them (nsnet.drivers).
DRIVER_FEATURES = ("macvlan ", "ipvlan ")


def diagnose(facts: HostFacts, networks: list[Network], published: list[tuple[str, PortMapping]]) -> list[Finding]:
    return [
        *_features(facts),
        *_ip_forward(facts, networks),
        *_ipv6_forward(facts, networks),
        *_router_advertisements(facts),
        *_forward_drops(facts),
        *_dns_input_drops(facts, networks),
        *_dns_ports(networks),
        *_legacy(facts),
        *_br_netfilter(facts),
        *_port_listeners(facts, published),
        *_overlapping_routes(facts, networks),
    ]
