"""Plans for sandboxes and their endpoints: netns, veth to the bridge, address, default route."""

from __future__ import annotations

from ..firewall import render
from ..model import Endpoint, Network
from .ops import (
    AddAddress,
    ApplyFirewall,
    CreateNetns,
    CreateVeth,
    DeleteLink,
    DeleteNetns,
    KillProcesses,
    Operation,
    RemoveEtcFiles,
    SetDefaultRoute,
    WriteEtcFiles,
)


def hosts_file(name: str, endpoints: list[Endpoint]) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{e.address.ip}\t{name}" for e in endpoints[:1]]
    return "\n".join(lines) + "\n"


def plan_connect(endpoint: Endpoint, network: Network) -> list[Operation]:
    ops: list[Operation] = []
    rules = render.render_add_endpoint(endpoint, network)
    if rules:
        # Before the veth exists, so no frame ever crosses the port unfiltered.
        reverse = render.render_remove_endpoints([(endpoint, network)])
        ops.append(ApplyFirewall(tuple(rules), tuple(reverse), f"rules of {endpoint.host_ifname}"))
    ops += [
        CreateVeth(endpoint.host_ifname, network.bridge, endpoint.sandbox, endpoint.ifname, network.mtu, endpoint.mac),
        AddAddress(endpoint.ifname, endpoint.address, endpoint.sandbox),
    ]
    if endpoint.default_route:
        ops.append(SetDefaultRoute(endpoint.sandbox, endpoint.gateway, endpoint.ifname))
    return ops


def _remove_rules(attachments: list[tuple[Endpoint, Network]], what: str) -> list[Operation]:
    rules = render.render_remove_endpoints(attachments)
    return [ApplyFirewall(tuple(rules), description=f"removing rules of {what}")] if rules else []


def plan_create_sandbox(name: str, attachments: list[tuple[Endpoint, Network]]) -> list[Operation]:
    ops: list[Operation] = [
        CreateNetns(name),
        WriteEtcFiles(name, (("hosts", hosts_file(name, [e for e, _ in attachments])),)),
    ]
    for endpoint, network in attachments:
        ops += plan_connect(endpoint, network)
    return ops


def plan_disconnect(endpoint: Endpoint, network: Network, successor: Endpoint | None) -> list[Operation]:
    """Deleting the host end deletes the pair, and with the peer its address and routes. When the
    endpoint carried the default route, the next endpoint (if any) takes it over."""
    ops: list[Operation] = [DeleteLink(endpoint.host_ifname), *_remove_rules([(endpoint, network)], endpoint.host_ifname)]
    if endpoint.default_route and successor is not None:
        ops.append(SetDefaultRoute(successor.sandbox, successor.gateway, successor.ifname))
    return ops


def plan_remove_sandbox(name: str, force: bool, attachments: list[tuple[Endpoint, Network]]) -> list[Operation]:
    ops: list[Operation] = [KillProcesses(name)] if force else []
    return ops + [DeleteNetns(name), RemoveEtcFiles(name), *_remove_rules(attachments, f"sandbox {name}")]
