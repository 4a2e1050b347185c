"""Plans for networks: a bridge holding the gateway address, forwarding on, the network's rules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..firewall import render
from ..model import Network, Owner
from ..naming import bridge_mac
from ..validate import IPV6_MIN_MTU  # below it, an interface has no net.ipv6.conf.<name> to write
from .ops import (
    AddAddress,
    ApplyFirewall,
    CreateBridge,
    DeleteLink,
    EnsureSysctl,
    Operation,
    RemoveFirewallElements,
    SetGroup,
    SetLinkUp,
    SetMac,
    SetMtu,
)

TYPE_CHECKING = False  # typing's import is 5 ms of a CNI plugin's start-up
if TYPE_CHECKING:
    from ..kernel.state import LinkState, Ruleset

IP_FORWARD = "net.ipv4.ip_forward"
IPV6_FORWARD = "net.ipv6.conf.all.forwarding"
FORWARDING = {4: IP_FORWARD, 6: IPV6_FORWARD}


def bridge_sysctls(network: Network) -> dict[str, str]:
    """What nsnet sets on each of its bridges; they go away with the bridge.

    route_localnet (IPv4) lets the host reach its ports published on 127.0.0.1: a packet from
    127.0.0.1 may then leave through the bridge (masqueraded to the gateway on its way);
    sandboxes' packets to 127.0.0.0/8 are dropped by nsnet's prerouting guard. A bridge of a
    network without IPv6 has IPv6 off, as the sandboxes' veths do (see kernel.linux.create_netns);
    one with IPv6 has it on (the host's default may be off), takes no router advertisements from
    sandboxes, and does no duplicate address detection: a bridge gets its link-local address when
    its first port comes, and until DAD ends (a second) the kernel sends no neighbour
    solicitation from it (ndisc_send_ns needs a link-local source that is not tentative), so
    nothing forwarded reaches a new sandbox for that second. Set before any port exists."""
    bridge = network.bridge
    found = {f"net.ipv4.conf.{bridge}.route_localnet": "1"} if network.ipv4 else {}
    if network.ipv6:
        found[f"net.ipv6.conf.{bridge}.disable_ipv6"] = "0"
        found[f"net.ipv6.conf.{bridge}.accept_ra"] = "0"
        found[f"net.ipv6.conf.{bridge}.accept_dad"] = "0"
    elif network.mtu >= IPV6_MIN_MTU:
        found[f"net.ipv6.conf.{bridge}.disable_ipv6"] = "1"
    return found


def forwarding(network: Network, ra_takers: Sequence[str] = ()) -> list[Operation]:
    """Forwarding on in each family the network has. Switching IPv6 forwarding on makes every host
    interface ignore router advertisements (accept_ra 1 means "only when not forwarding"), which
    can cut a real host off its IPv6 default route: the interfaces that take them now
    (`ra_takers`, `default` for ones made later) are set to accept_ra 2 first, "even when
    forwarding"."""
    ops: list[Operation] = []
    if network.ipv4:
        ops.append(EnsureSysctl(IP_FORWARD, "1"))
    if network.ipv6:
        ops += [EnsureSysctl(f"net.ipv6.conf.{name}.accept_ra", "2") for name in ra_takers]
        ops.append(EnsureSysctl(IPV6_FORWARD, "1"))
    return ops


def plan_create_network(network: Network, others: int, owner: Owner, ra_takers: Sequence[str] = ()) -> list[Operation]:
    """`others` is how many nsnet networks exist besides this one: undoing the first one's rules
    removes nsnet's table altogether."""
    reverse = render.render_remove_network(owner, network) if others else render.render_remove_table(owner)
    return [
        *forwarding(network, ra_takers),
        # The bridge's MAC is pinned: otherwise it takes the lowest MAC among its ports and changes
        # as sandboxes come and go, and every sandbox's ARP entry for the gateway goes stale.
        CreateBridge(network.bridge, network.mtu, bridge_mac(network), owner.group),
        *(EnsureSysctl(key, value) for key, value in bridge_sysctls(network).items()),
        *(AddAddress(network.bridge, subnet.gateway_interface) for subnet in network.subnets),
        ApplyFirewall(
            tuple(render.render_add_network(owner, network)), tuple(reverse), f"rules of network {network.name}"
        ),
    ]


def plan_remove_network(network: Network, others: int, owner: Owner) -> list[Operation]:
    """Rules go first, while the bridge they name still exists; then the bridge (and its route)."""
    if others:
        rules: Operation = RemoveFirewallElements(tuple(render.render_remove_network(owner, network)),
                                                  f"rules of network {network.name}")
    else:
        rules = ApplyFirewall(tuple(render.render_remove_table(owner)), description="removing nsnet's tables")
    return [rules, DeleteLink(network.bridge)]


def plan_repair_network(network: Network, bridge: LinkState | None, sysctls: Mapping[str, str],
                        owner: Owner) -> list[Operation]:
    """What a network needs back after a reboot or out-of-band damage (nothing when it is whole);
    its rules are rebuilt with the whole firewall (see plan_replace_firewall). `sysctls` are the
    observed values of the forwarding switches and the bridge's own (bridge_sysctls)."""
    ops: list[Operation] = [EnsureSysctl(FORWARDING[s.version], "1") for s in network.subnets
                            if sysctls.get(FORWARDING[s.version], "0") != "1"]
    mac = bridge_mac(network)
    if bridge is None:
        ops.append(CreateBridge(network.bridge, network.mtu, mac, owner.group))
    else:
        if bridge.mtu != network.mtu:
            ops.append(SetMtu(network.bridge, network.mtu))
        if bridge.mac != mac:
            ops.append(SetMac(network.bridge, mac))
        if bridge.group != owner.group:
            ops.append(SetGroup(network.bridge, owner.group))
        if not bridge.up:
            ops.append(SetLinkUp(network.bridge))
    ops += [EnsureSysctl(key, value) for key, value in bridge_sysctls(network).items()
            if bridge is None or sysctls.get(key, value) != value]
    ops += [AddAddress(network.bridge, s.gateway_interface) for s in network.subnets
            if bridge is None or str(s.gateway_interface) not in bridge.addresses]
    return ops


def plan_replace_firewall(commands: list[dict], owner: Owner, present: Ruleset | None) -> list[Operation]:
    """The owner's tables replaced, atomically, by what the ledger implies (commands: skeleton and
    elements), or removed when it implies nothing. Adding a table before deleting it makes the
    delete safe whether or not the table exists. Tables the ledger implies are kept, for the sets
    and maps a JSON transaction cannot declare (`typeof`, `Nft`): everything else in them
    (`present`) is deleted and those emptied, so the skeleton and elements that follow make it
    all anew (maps before chains: a verdict map's elements name chains)."""
    family, bridge_family = render.names.FAMILY, render.names.BRIDGE_FAMILY
    tables = [{"family": f, "name": owner.table} for f in (family, bridge_family)]
    if not commands:
        reset: list[dict] = [c for t in tables for c in ({"add": {"table": t}}, {"delete": {"table": t}})]
        return [ApplyFirewall(tuple(reset), description="rebuilding nsnet's tables from the ledger")]
    # What the commands make in text (`Nft`: before the JSON transaction that carries the rest):
    # those sets are kept and emptied, those chains kept as the text made them.
    typed = {(body["family"], body["name"]) for c in commands for kind in ("set", "map", "chain")
             for body in [c.get("add", {}).get(kind, {})] if "typeof" in body or "rules_text" in body}
    found = [key.split(" ", 2) for key in [*(present.chains if present else ()), *(present.sets if present else ())]]
    owned = [(f, kind, {"family": f, "table": owner.table, "name": name}) for f, kind, name in found]
    chains = [ref for f, kind, ref in owned if kind == "chain" and (f, ref["name"]) not in typed]
    reset = [{"add": {"table": t}} for t in tables]
    reset += [{"flush": {"chain": ref}} for ref in chains]  # no rule may name what is deleted next
    reset += [{"delete": {kind: ref}} for f, kind, ref in owned if kind != "chain" and (f, ref["name"]) not in typed]
    reset += [{"delete": {"chain": ref}} for ref in chains]
    reset += [{"flush": {kind: ref}} for f, kind, ref in owned if kind != "chain" and (f, ref["name"]) in typed]
    return [ApplyFirewall(tuple(reset + commands), description="rebuilding nsnet's tables from the ledger")]
