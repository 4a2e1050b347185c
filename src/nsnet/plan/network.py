"""Plans for networks: a bridge holding the gateway address, forwarding on, the network's rules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..firewall import render
from ..model import Network
from ..naming import mac_for
from .ops import AddAddress, ApplyFirewall, CreateBridge, DeleteLink, EnsureSysctl, Operation, RemoveFirewallElements

if TYPE_CHECKING:
    from ..reconcile import LinkState

IP_FORWARD = "net.ipv4.ip_forward"


def plan_create_network(network: Network, others: int) -> list[Operation]:
    """`others` is how many nsnet networks exist besides this one: undoing the first one's rules
    removes nsnet's table altogether."""
    reverse = render.render_remove_network(network) if others else render.render_remove_table()
    return [
        EnsureSysctl(IP_FORWARD, "1"),
        # The bridge's MAC is pinned: otherwise it takes the lowest MAC among its ports and changes
        # as sandboxes come and go, and every sandbox's ARP entry for the gateway goes stale.
        CreateBridge(network.bridge, network.mtu, mac_for(network.gateway)),
        # Lets the host reach its ports published on 127.0.0.1: a packet from 127.0.0.1 may then
        # leave through this bridge (masqueraded to the gateway on its way). Sandboxes' packets to
        # 127.0.0.0/8 are dropped by nsnet's prerouting guard. Goes away with the bridge.
        EnsureSysctl(f"net.ipv4.conf.{network.bridge}.route_localnet", "1"),
        AddAddress(network.bridge, network.gateway_interface),
        ApplyFirewall(
            tuple(render.render_add_network(network)), tuple(reverse), f"rules of network {network.name}"
        ),
    ]


def plan_remove_network(network: Network, others: int) -> list[Operation]:
    """Rules go first, while the bridge they name still exists; then the bridge (and its route)."""
    if others:
        rules: Operation = RemoveFirewallElements(tuple(render.render_remove_network(network)),
                                                  f"rules of network {network.name}")
    else:
        rules = ApplyFirewall(tuple(render.render_remove_table()), description="removing nsnet's tables")
    return [rules, DeleteLink(network.bridge)]


def plan_repair_network(network: Network, bridge: LinkState | None, ip_forward: str) -> list[Operation]:
    """What a network needs back after a reboot or out-of-band damage (nothing when it is whole);
    its rules are rebuilt with the whole firewall (see plan_replace_firewall)."""
    ops: list[Operation] = [] if ip_forward == "1" else [EnsureSysctl(IP_FORWARD, "1")]
    if bridge is None:
        ops += [
            CreateBridge(network.bridge, network.mtu, mac_for(network.gateway)),
            EnsureSysctl(f"net.ipv4.conf.{network.bridge}.route_localnet", "1"),
        ]
    if bridge is None or str(network.gateway_interface) not in bridge.addresses:
        ops.append(AddAddress(network.bridge, network.gateway_interface))
    return ops


def plan_replace_firewall(commands: list[dict]) -> list[Operation]:
    """nsnet's tables replaced, atomically, by what the ledger implies (commands: skeleton and
    elements), or removed when it implies nothing. Adding a table before deleting it makes the
    delete safe whether or not the table exists."""
    tables = [{"family": family, "name": render.names.TABLE} for family in (render.names.FAMILY,
                                                                             render.names.BRIDGE_FAMILY)]
    reset = [{"add": {"table": t}} for t in tables] + [{"delete": {"table": t}} for t in tables]
    return [ApplyFirewall(tuple(reset + commands), description="rebuilding nsnet's tables from the ledger")]
