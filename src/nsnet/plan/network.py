"""Plans for networks: a bridge holding the gateway address, forwarding on, the network's rules."""

from __future__ import annotations

from ..firewall import render
from ..model import Network
from ..naming import mac_for
from .ops import AddAddress, ApplyFirewall, CreateBridge, DeleteLink, EnsureSysctl, Operation

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
        AddAddress(network.bridge, network.gateway_interface),
        ApplyFirewall(
            tuple(render.render_add_network(network)), tuple(reverse), f"rules of network {network.name}"
        ),
    ]


def plan_remove_network(network: Network, others: int) -> list[Operation]:
    """Rules go first, while the bridge they name still exists; then the bridge (and its route)."""
    commands = render.render_remove_network(network) if others else render.render_remove_table()
    return [
        ApplyFirewall(tuple(commands), description=f"removing rules of network {network.name}"),
        DeleteLink(network.bridge),
    ]
