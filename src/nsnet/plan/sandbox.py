"""Plans for sandboxes and their endpoints: netns, veth to the bridge, address, default route,
and each endpoint's firewall elements (identity, icc, published ports)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..firewall import render
from ..model import Endpoint, Network, Owner
from .network import IPV6_MIN_MTU
from .ops import (
    AddAddress,
    AddFdbEntry,
    ApplyFirewall,
    AttachToBridge,
    CreateNetns,
    CreateVeth,
    DeleteLink,
    DeleteNetns,
    DisableIPv6,
    EnableIPv6,
    KillProcesses,
    Operation,
    RemoveEtcFiles,
    RemoveFirewallElements,
    ReplaceEtcFile,
    SetDefaultRoute,
    SetGroup,
    SetLinkUp,
    SetMac,
    SetMtu,
    SetPortFlags,
    WriteEtcFiles,
)

TYPE_CHECKING = False  # typing's import is 5 ms of a CNI plugin's start-up
if TYPE_CHECKING:
    from ..kernel.state import LinkState

Attachment = tuple[Endpoint, Network]
EtcChange = tuple[str, "str | None", "str | None"]  # a file under /etc/netns/NAME: before, after (None: none)


def hosts_file(name: str, endpoints: Iterable[Endpoint]) -> str:
    """localhost, and the sandbox's name on each of its addresses (on every network, as Docker's)."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{address.ip}\t{name}" for e in endpoints for address in e.addresses]
    return "\n".join(lines) + "\n"


def etc_files(name: str, endpoints: Iterable[Endpoint], networks: Mapping[str, Network]) -> dict[str, str | None]:
    """What nsnet writes under /etc/netns/NAME for a sandbox with these endpoints (None: no such
    file): its hosts file, and a resolv.conf naming the resolver when a network has DNS."""
    from ..dns.resolvconf import for_networks

    endpoints = list(endpoints)
    return {"hosts": hosts_file(name, endpoints),
            "resolv.conf": for_networks([networks[e.network] for e in endpoints])}


def _firewalled(attachments: list[Attachment]) -> list[Attachment]:
    """The attachments nsnet's firewall sees (nsnet.drivers: not macvlan's)."""
    from .drivers import driver

    return [(e, n) for e, n in attachments if driver(n).firewalled]


def _attach(endpoint: Endpoint, network: Network, owner: Owner) -> list[Operation]:
    from .drivers import driver

    return driver(network).attach(endpoint, network, owner)


def _add_rules(attachments: list[Attachment], owner: Owner) -> list[Operation]:
    """One transaction for every endpoint's elements, made before any veth exists, so no frame
    ever crosses a port unfiltered."""
    attachments = _firewalled(attachments)
    if not attachments:
        return []
    rules = [c for endpoint, network in attachments for c in render.render_add_endpoint(owner, endpoint, network)]
    reverse = render.render_remove_endpoints(owner, attachments)
    ports = ", ".join(e.host_ifname for e, _ in attachments)
    return [ApplyFirewall(tuple(rules), tuple(reverse), f"rules of {ports}")]


def _remove_rules(attachments: list[Attachment], what: str, owner: Owner) -> list[Operation]:
    attachments = _firewalled(attachments)
    if not attachments:
        return []
    rules = render.render_remove_endpoints(owner, attachments)
    return [RemoveFirewallElements(tuple(rules), f"rules of {what}")] if rules else []


def _port(endpoint: Endpoint, network: Network) -> list[Operation]:
    """A new port's flags, its sandbox's MAC pinned on it, and no IPv6 on it: each its own
    kernel change, done while the sandbox end is still down."""
    ops: list[Operation] = [SetPortFlags(endpoint.host_ifname, isolated=not network.icc),
                            AddFdbEntry(endpoint.host_ifname, endpoint.mac)]
    if network.mtu >= IPV6_MIN_MTU:
        ops.append(DisableIPv6(endpoint.host_ifname))
    return ops


def _default_routes(endpoint: Endpoint) -> list[Operation]:
    return [SetDefaultRoute(endpoint.where, gateway, endpoint.ifname) for gateway in endpoint.gateways]


def bridge_attach(endpoint: Endpoint, network: Network, owner: Owner) -> list[Operation]:
    """The bridge driver's attachment (nsnet.plan.drivers): a veth from the bridge."""
    ops: list[Operation] = [
        CreateVeth(endpoint.host_ifname, network.bridge, endpoint.where, endpoint.ifname, network.mtu, endpoint.mac,
                   owner.group),
        *_port(endpoint, network),
    ]
    if endpoint.family(6):
        ops.append(EnableIPv6(endpoint.ifname, endpoint.where))
    ops.append(SetLinkUp(endpoint.ifname, endpoint.where))
    ops += [AddAddress(endpoint.ifname, address, endpoint.where) for address in endpoint.addresses]
    if endpoint.default_route:
        ops += _default_routes(endpoint)
    return ops


def _etc_files(sandbox: str, changes: Iterable[EtcChange]) -> list[Operation]:
    """The sandbox's files under /etc/netns that its networks changed, rewritten."""
    return [ReplaceEtcFile(sandbox, filename, after, before) for filename, before, after in changes if before != after]


def plan_connect(endpoint: Endpoint, network: Network, owner: Owner, etc: Iterable[EtcChange] = ()) -> list[Operation]:
    """`etc`: (file, before, after) of the sandbox's /etc/netns files the new network changes."""
    return [*_add_rules([(endpoint, network)], owner), *_attach(endpoint, network, owner),
            *_etc_files(endpoint.sandbox, etc)]


def plan_create_sandbox(name: str, attachments: list[Attachment], owner: Owner,
                        files: Mapping[str, str | None] | None = None) -> list[Operation]:
    """`files`: its /etc/netns files (etc_files); by default its hosts file alone."""
    if files is None:
        files = {"hosts": hosts_file(name, [e for e, _ in attachments])}
    written = tuple((filename, text) for filename, text in files.items() if text is not None)
    ops: list[Operation] = [CreateNetns(name), WriteEtcFiles(name, written)]
    ops += _add_rules(attachments, owner)
    for endpoint, network in attachments:
        ops += _attach(endpoint, network, owner)
    return ops


def plan_disconnect(endpoint: Endpoint, network: Network, successor: Endpoint | None, owner: Owner,
                    etc: Iterable[EtcChange] = ()) -> list[Operation]:
    """Deleting the host end deletes the pair, and with the peer its address and routes. When the
    endpoint carried the default route, `successor` (chosen, and marked in the ledger, by the
    caller) takes it over."""
    from .drivers import driver

    ops: list[Operation] = driver(network).detach(endpoint, network)
    ops += _remove_rules([(endpoint, network)], endpoint.host_ifname, owner)
    if successor is not None:
        ops += _default_routes(successor)
    return ops + _etc_files(endpoint.sandbox, etc)


def plan_remove_sandbox(name: str, force: bool, attachments: list[Attachment], owner: Owner) -> list[Operation]:
    """Rules go first: without its elements a port is cut off at once, while the kernel takes
    some milliseconds more to destroy the namespace and its veths."""
    ops: list[Operation] = [KillProcesses(name)] if force else []
    return ops + [*_remove_rules(attachments, f"sandbox {name}", owner), DeleteNetns(name), RemoveEtcFiles(name)]


def plan_repair_endpoint(endpoint: Endpoint, network: Network, host_end: LinkState | None,
                         inside: LinkState | None, default_routes: Mapping[int, tuple[str, str]],
                         owner: Owner) -> list[Operation]:
    """What the endpoint needs back, as its network's driver knows (nsnet.plan.drivers)."""
    from .drivers import driver

    return driver(network).repair_endpoint(endpoint, network, host_end, inside, default_routes, owner)


def plan_repair_bridge_endpoint(endpoint: Endpoint, network: Network, host_end: LinkState | None,
                                inside: LinkState | None, default_routes: Mapping[int, tuple[str, str]],
                                owner: Owner) -> list[Operation]:
    """A veth gone (either end) is made again; otherwise each wrong property is set back: the
    bridge it sits on (re-made by gc), its port flags and static FDB entry, each end's state,
    MTU and (sandbox end) MAC, the address and the default route, in an order that works (up
    before the route: a route needs its interface up)."""
    if host_end is None or inside is None:
        ops: list[Operation] = [DeleteLink(endpoint.host_ifname)] if host_end is not None else []
        return ops + _attach(endpoint, network, owner)
    host = endpoint.host_ifname
    ops = [] if host_end.master == network.bridge else [AttachToBridge(host, network.bridge)]
    flags = (host_end.hairpin, host_end.learning, host_end.locked, host_end.isolated)
    if ops or flags != (True, False, True, not network.icc):
        ops.append(SetPortFlags(host, isolated=not network.icc))
    if endpoint.mac not in host_end.static_macs:
        ops.append(AddFdbEntry(host, endpoint.mac))
    if host_end.mtu != network.mtu:
        ops.append(SetMtu(host, network.mtu))
    if host_end.group != owner.group:
        ops.append(SetGroup(host, owner.group))
    if not host_end.up:
        ops.append(SetLinkUp(host))
    return ops + plan_repair_inside(endpoint, network, inside, default_routes)


def plan_repair_inside(endpoint: Endpoint, network: Network, inside: LinkState,
                       default_routes: Mapping[int, tuple[str, str]]) -> list[Operation]:
    """What sets an endpoint's interface inside its sandbox back as recorded (whatever the driver
    that made it): MTU, MAC, addresses, up, default route."""
    ifname, sandbox = endpoint.ifname, endpoint.where
    ops: list[Operation] = []
    if inside.mtu != network.mtu:
        ops.append(SetMtu(ifname, network.mtu, sandbox))
    if inside.mac != endpoint.mac:
        ops.append(SetMac(ifname, endpoint.mac, sandbox))
    missing = [a for a in endpoint.addresses if str(a) not in inside.addresses]
    if any(a.version == 6 for a in missing):  # IPv6 switched off takes the addresses with it
        ops.append(EnableIPv6(ifname, sandbox))
    if not inside.up:
        ops.append(SetLinkUp(ifname, sandbox))
    ops += [AddAddress(ifname, address, sandbox) for address in missing]
    if endpoint.default_route:
        ops += [SetDefaultRoute(sandbox, gateway, ifname) for gateway in endpoint.gateways
                if not inside.up or default_routes.get(gateway.version) != (str(gateway), ifname)]
    return ops
