"""Plans for sandboxes and their endpoints: netns, veth to the bridge, address, default route,
and each endpoint's firewall elements (identity, icc, published ports)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..firewall import render
from ..model import Endpoint, Network
from .ops import (
    AddAddress,
    AttachToBridge,
    ApplyFirewall,
    CreateNetns,
    CreateVeth,
    DeleteLink,
    DeleteNetns,
    KillProcesses,
    Operation,
    RemoveEtcFiles,
    RemoveFirewallElements,
    SetDefaultRoute,
    WriteEtcFiles,
)

if TYPE_CHECKING:
    from ..reconcile import LinkState

Attachment = tuple[Endpoint, Network]


def hosts_file(name: str, endpoints: list[Endpoint]) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{e.address.ip}\t{name}" for e in endpoints[:1]]
    return "\n".join(lines) + "\n"


def _add_rules(attachments: list[Attachment]) -> Operation:
    """One transaction for every endpoint's elements, made before any veth exists, so no frame
    ever crosses a port unfiltered."""
    rules = [c for endpoint, network in attachments for c in render.render_add_endpoint(endpoint, network)]
    reverse = render.render_remove_endpoints(attachments)
    ports = ", ".join(e.host_ifname for e, _ in attachments)
    return ApplyFirewall(tuple(rules), tuple(reverse), f"rules of {ports}")


def _remove_rules(attachments: list[Attachment], what: str) -> list[Operation]:
    rules = render.render_remove_endpoints(attachments)
    return [RemoveFirewallElements(tuple(rules), f"rules of {what}")] if rules else []


def _attach(endpoint: Endpoint, network: Network) -> list[Operation]:
    ops: list[Operation] = [
        CreateVeth(endpoint.host_ifname, network.bridge, endpoint.sandbox, endpoint.ifname, network.mtu, endpoint.mac,
                   isolated=not network.icc),
        AddAddress(endpoint.ifname, endpoint.address, endpoint.sandbox),
    ]
    if endpoint.default_route:
        ops.append(SetDefaultRoute(endpoint.sandbox, endpoint.gateway, endpoint.ifname))
    return ops


def plan_connect(endpoint: Endpoint, network: Network) -> list[Operation]:
    return [_add_rules([(endpoint, network)]), *_attach(endpoint, network)]


def plan_create_sandbox(name: str, attachments: list[Attachment]) -> list[Operation]:
    ops: list[Operation] = [
        CreateNetns(name),
        WriteEtcFiles(name, (("hosts", hosts_file(name, [e for e, _ in attachments])),)),
    ]
    if attachments:
        ops.append(_add_rules(attachments))
    for endpoint, network in attachments:
        ops += _attach(endpoint, network)
    return ops


def plan_disconnect(endpoint: Endpoint, network: Network, successor: Endpoint | None) -> list[Operation]:
    """Deleting the host end deletes the pair, and with the peer its address and routes. When the
    endpoint carried the default route, the next endpoint (if any) takes it over."""
    ops: list[Operation] = [DeleteLink(endpoint.host_ifname)]
    ops += _remove_rules([(endpoint, network)], endpoint.host_ifname)
    if endpoint.default_route and successor is not None:
        ops.append(SetDefaultRoute(successor.sandbox, successor.gateway, successor.ifname))
    return ops


def plan_remove_sandbox(name: str, force: bool, attachments: list[Attachment]) -> list[Operation]:
    """Rules go first: without its elements a port is cut off at once, while the kernel takes
    some milliseconds more to destroy the namespace and its veths."""
    ops: list[Operation] = [KillProcesses(name)] if force else []
    return ops + [*_remove_rules(attachments, f"sandbox {name}"), DeleteNetns(name), RemoveEtcFiles(name)]


def plan_repair_endpoint(endpoint: Endpoint, network: Network, host_end: LinkState | None,
                         inside: frozenset[str] | None, default_route: tuple[str, str] | None) -> list[Operation]:
    """A veth gone (either end) is made again; one that lost its bridge (the bridge was re-made) or its isolation
    is attached to it again; a lost address or default route is put back. `inside` is the
    sandbox end's addresses, None when it is gone."""
    if host_end is None or inside is None:
        ops: list[Operation] = [DeleteLink(endpoint.host_ifname)] if host_end is not None else []
        return ops + _attach(endpoint, network)
    attached = host_end.master == network.bridge and host_end.isolated == (not network.icc)
    ops = [] if attached else [AttachToBridge(endpoint.host_ifname, network.bridge, isolated=not network.icc)]
    if str(endpoint.address) not in inside:
        ops.append(AddAddress(endpoint.ifname, endpoint.address, endpoint.sandbox))
    if endpoint.default_route and default_route != (str(endpoint.gateway), endpoint.ifname):
        ops.append(SetDefaultRoute(endpoint.sandbox, endpoint.gateway, endpoint.ifname))
    return ops
