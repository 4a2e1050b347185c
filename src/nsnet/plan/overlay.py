"""Plans for an overlay network's share on this host (nsnet.cluster): the VXLAN device beside the
network's bridge, and the peers: for each other host's block, a neighbour, an FDB entry and an
onlink route, added in that order and removed in reverse (flannel's), plus the VTEP allow-list.

Peers are planned against what the kernel holds, not only the ledger: a missing entry comes back,
and one nsnet did not plan (a peer gone while the agent was down, one added by hand) goes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..firewall import render
from ..model import Overlay, Owner, Peer
from .ops import (AddAddress, AddUnreachableRoute, ApplyFirewall, CreateVxlan, DeleteFdb, DeleteLink, DeleteNeighbour,
                  DeleteOnlinkRoute, DeleteUnreachableRoute, EnsureSysctl, Operation, RemoveFirewallElements,
                  ReplaceFdb, ReplaceNeighbour, ReplaceOnlinkRoute, SetLinkUp)


def vtep_address(block) -> str:
    """A block's VTEP-side address: its .0 (flannel's), on the peer's VXLAN device."""
    return str(block.network_address)


def plan_device(overlay: Overlay, block, mtu: int, owner: Owner, first: bool = True) -> list[Operation]:
    """The VXLAN device, up, holding the block's .0 as a /32 (the host's source towards other
    blocks), and the whole subnet unreachable but for the blocks routed. The VXLAN port joins the
    allow-list's ports; undone only by the `first` overlay of the host (the others share it)."""
    from ipaddress import ip_interface

    port = ApplyFirewall(tuple(render.render_overlay_peers(owner, "add", overlay.port, ())),
                         tuple(render.render_overlay_port(owner, overlay.port)) if first else (),
                         f"VXLAN port of {overlay.network}")
    return [
        port,
        CreateVxlan(overlay.device, overlay.vni, overlay.port, str(overlay.vtep_ip), overlay.underlay, mtu,
                    overlay.vtep_mac, owner.group),
        EnsureSysctl(f"net.ipv6.conf.{overlay.device}.disable_ipv6", "1"),
        SetLinkUp(overlay.device),
        AddAddress(overlay.device, ip_interface(f"{vtep_address(block)}/32")),
        AddUnreachableRoute(str(overlay.supernet)),
    ]


def plan_remove_device(overlay: Overlay, peers: Sequence[Peer], owner: Owner) -> list[Operation]:
    """The device goes with its entries; the allow-list's elements and the unreachable route too."""
    ops: list[Operation] = []
    vteps = [str(p.vtep_ip) for p in peers]
    if vteps:
        ops.append(RemoveFirewallElements(tuple(render.render_overlay_peers(owner, "delete", overlay.port, vteps)),
                                          f"VTEPs of {overlay.network}"))
    return [*ops, DeleteUnreachableRoute(str(overlay.supernet)), DeleteLink(overlay.device)]


def plan_peers(overlay: Overlay, recorded: Sequence[Peer], wanted: Sequence[Peer],
               held: Mapping[str, set[tuple[str, ...]]] | None, owner: Owner) -> list[Operation]:
    """From the peers the ledger records and the entries the kernel holds (None: no device) to
    `wanted`. Entries of peers that go, or that nothing wants, are removed first (route, FDB,
    neighbour); then every wanted entry the kernel lacks is added (neighbour, FDB, route)."""
    device = overlay.device
    held = held or {"neighbours": set(), "fdb": set(), "routes": set()}
    want_neighbours = {(vtep_address(p.block), p.vtep_mac) for p in wanted}
    want_fdb = {(p.vtep_mac, str(p.vtep_ip)) for p in wanted}
    want_routes = {(str(p.block), vtep_address(p.block)) for p in wanted}
    ops: list[Operation] = []
    ops += [DeleteOnlinkRoute(dst, via, device) for dst, via in sorted(held["routes"] - want_routes)]
    ops += [DeleteFdb(device, mac, dst) for mac, dst in sorted(held["fdb"] - want_fdb)]
    ops += [DeleteNeighbour(device, address, mac) for address, mac in sorted(held["neighbours"] - want_neighbours)]
    for peer in sorted(wanted, key=lambda p: p.block):
        neighbour = (vtep_address(peer.block), peer.vtep_mac)
        fdb = (peer.vtep_mac, str(peer.vtep_ip))
        route = (str(peer.block), vtep_address(peer.block))
        if neighbour not in held["neighbours"]:
            ops.append(ReplaceNeighbour(device, *neighbour))
        if fdb not in held["fdb"]:
            ops.append(ReplaceFdb(device, *fdb))
        if route not in held["routes"]:
            ops.append(ReplaceOnlinkRoute(route[0], route[1], device))
    old = {str(p.vtep_ip) for p in recorded}
    new = {str(p.vtep_ip) for p in wanted}
    if new - old:
        add = render.render_overlay_peers(owner, "add", overlay.port, new - old)
        ops.insert(0, ApplyFirewall(tuple(add), tuple(render.render_overlay_peers(owner, "delete", overlay.port,
                                                                                  new - old)),
                                    f"VTEPs of {overlay.network}"))
    if held.get("down"):  # set down behind nsnet's back: its routes went with it
        ops.insert(0, SetLinkUp(device))
    if old - new:
        ops.append(RemoveFirewallElements(tuple(render.render_overlay_peers(owner, "delete", overlay.port, old - new)),
                                          f"VTEPs of {overlay.network}"))
    return ops
