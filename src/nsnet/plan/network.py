"""Plans for networks: a bridge holding the gateway address, forwarding on, the network's rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..firewall import render
from ..model import Network, Owner
from ..naming import mac_for
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

if TYPE_CHECKING:
    from ..kernel.state import LinkState

IP_FORWARD = "net.ipv4.ip_forward"
# Below this MTU the kernel gives an interface no IPv6 at all (RFC 8200's minimum link MTU), and
# with it no net.ipv6.conf.<name> directory to write.
IPV6_MIN_MTU = 1280


def bridge_sysctls(bridge: str, mtu: int) -> dict[str, str]:
    """What nsnet sets on each of its bridges; they go away with the bridge.

    route_localnet lets the host reach its ports published on 127.0.0.1: a packet from 127.0.0.1
    may then leave through the bridge (masqueraded to the gateway on its way); sandboxes' packets
    to 127.0.0.0/8 are dropped by nsnet's prerouting guard. IPv6 is off, as on the sandboxes'
    veths (see kernel.linux.create_netns): nsnet's networks are IPv4."""
    found = {f"net.ipv4.conf.{bridge}.route_localnet": "1"}
    if mtu >= IPV6_MIN_MTU:
        found[f"net.ipv6.conf.{bridge}.disable_ipv6"] = "1"
    return found


def plan_create_network(network: Network, others: int, owner: Owner) -> list[Operation]:
    """`others` is how many nsnet networks exist besides this one: undoing the first one's rules
    removes nsnet's table altogether."""
    reverse = render.render_remove_network(owner, network) if others else render.render_remove_table(owner)
    return [
        EnsureSysctl(IP_FORWARD, "1"),
        # The bridge's MAC is pinned: otherwise it takes the lowest MAC among its ports and changes
        # as sandboxes come and go, and every sandbox's ARP entry for the gateway goes stale.
        CreateBridge(network.bridge, network.mtu, mac_for(network.gateway), owner.group),
        *(EnsureSysctl(key, value) for key, value in bridge_sysctls(network.bridge, network.mtu).items()),
        AddAddress(network.bridge, network.gateway_interface),
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


def plan_repair_network(network: Network, bridge: LinkState | None, ip_forward: str,
                        sysctls: Mapping[str, str], owner: Owner) -> list[Operation]:
    """What a network needs back after a reboot or out-of-band damage (nothing when it is whole);
    its rules are rebuilt with the whole firewall (see plan_replace_firewall). `sysctls` are the
    observed values of the bridge's own (bridge_sysctls)."""
    ops: list[Operation] = [] if ip_forward == "1" else [EnsureSysctl(IP_FORWARD, "1")]
    mac = mac_for(network.gateway)
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
    ops += [EnsureSysctl(key, value) for key, value in bridge_sysctls(network.bridge, network.mtu).items()
            if bridge is None or sysctls.get(key, value) != value]
    if bridge is None or str(network.gateway_interface) not in bridge.addresses:
        ops.append(AddAddress(network.bridge, network.gateway_interface))
    return ops


def plan_replace_firewall(commands: list[dict], owner: Owner) -> list[Operation]:
    """The owner's tables replaced, atomically, by what the ledger implies (commands: skeleton and
    elements), or removed when it implies nothing. Adding a table before deleting it makes the
    delete safe whether or not the table exists."""
    tables = [{"family": family, "name": owner.table} for family in (render.names.FAMILY,
                                                                      render.names.BRIDGE_FAMILY)]
    reset = [{"add": {"table": t}} for t in tables] + [{"delete": {"table": t}} for t in tables]
    return [ApplyFirewall(tuple(reset + commands), description="rebuilding nsnet's tables from the ledger")]
