"""The ledger against the live kernel: what `nsnet check` reports and `nsnet gc` repairs. Pure.

The ledger says what should exist; Observed says what does. Every kernel object nsnet makes is
recorded before it is made, so a difference is one of: a half-done operation (a row still
'creating' or 'removing'), something missing (removed behind nsnet's back, or a reboot), something
wrong (a veth no longer on its bridge, a link down, a port flag, MTU or MAC changed, a rule or
chain edited), or an orphan (a link of this ledger's interface group, or an nft element or chain
in its tables, that no row describes). Links are this ledger's by their interface group
(model.Owner), never by the shape of their names: another ledger's are not looked at.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .firewall import render
from .kernel.state import LinkState, Observed, Ruleset, element_key
from .model import Endpoint, Network, Owner, Sandbox, Service
from .plan.drivers import driver
from .plan.network import FORWARDING, bridge_sysctls
from .naming import bridge_mac, vxlan_name
from .record import record

__all__ = ["Drift", "LinkState", "Observed", "Ruleset", "desired_firewall", "element_key",
           "element_keys",
           "find_drift", "default_route_holder", "default_route_wrong"]


@record
class Drift:
    kind: str  # half-done, missing, wrong, orphan
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.detail}"

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "subject": self.subject, "detail": self.detail}


def element_keys(commands: Iterable[dict[str, Any]]) -> frozenset[str]:
    """The elements that `add element` commands put in place."""
    keys = set()
    for command in commands:
        body = command.get("add", {}).get("element")
        if body:
            keys.update(element_key(body["family"], body["name"], e) for e in body["elem"])
    return frozenset(keys)


def ready(networks: list[Network], sandboxes: list[Sandbox]) -> tuple[list[Network], list[Sandbox]]:
    return [n for n in networks if n.state == "ready"], [s for s in sandboxes if s.state == "ready"]


def service_firewall(owner: Owner, services: Sequence[Service], sandboxes: list[Sandbox],
                     within: Any) -> list[dict[str, Any]]:
    """What the ledger's services imply: a dispatch chain per number of backends in use, a
    remember chain per affinity timeout in use, each service's elements, and the range's blocks
    (`within`) while there is a service."""
    from .services import picks

    chosen = [(s, picks(s, sandboxes)) for s in services if s.state == "ready"]
    counts = sorted({len(a) for _, p in chosen for a in p.values() if a})
    timeouts = sorted({s.affinity for s, _ in chosen if s.affinity})
    return [*(c for n in counts for c in render.render_dispatch(owner, n)),
            *(c for t in timeouts for c in render.render_remember(owner, t)),
            *(c for s, p in chosen for c in render.render_service(owner, "add", s, p)),
            *(render.render_service_range(owner, "add", within) if chosen and within is not None else [])]


def desired_firewall(networks: list[Network], sandboxes: list[Sandbox], owner: Owner,
                     skeleton: bool = True, services: Sequence[Service] = (),
                     service_range: Any = None, overlay_vteps: Sequence[tuple[int, Sequence[str]]] = ()
                     ) -> list[dict[str, Any]]:
    """The owner's whole ruleset as the ledger implies it: the skeleton and every element (with
    `skeleton` False, the networks' and endpoints' commands only), services' included."""
    nets, boxes = ready(networks, sandboxes)
    nets = [n for n in nets if driver(n).firewalled]  # a macvlan network has no rules (nsnet.drivers)
    by_name = {n.name: n for n in nets}
    render_network = render.render_add_network if skeleton else render.render_network_elements
    commands = [c for n in nets for c in render_network(owner, n)]
    for sandbox in boxes:
        for endpoint in sandbox.endpoints:
            if endpoint.state == "ready" and endpoint.network in by_name:
                commands += render.render_add_endpoint(owner, endpoint, by_name[endpoint.network])
    commands += [c for port, vteps in overlay_vteps for c in render.render_overlay_peers(owner, "add", port, vteps)]
    return commands + service_firewall(owner, services, boxes, service_range)


def default_route_holder(endpoints: Iterable[Endpoint], networks: dict[str, Network]) -> Endpoint | None:
    """The endpoint that should carry a sandbox's default route: the first one on a network that
    is not internal (Docker never routes through an internal network)."""
    return next((e for e in endpoints if e.network in networks and not networks[e.network].internal), None)


def default_route_wrong(endpoints: list[Endpoint], networks: dict[str, Network]) -> bool:
    """The ledger's invariant: one endpoint carries the default route, on a network that is not
    internal, when the sandbox has any; none when it has none."""
    flagged = [e for e in endpoints if e.default_route]
    if default_route_holder(endpoints, networks) is None:
        return bool(flagged)
    return len(flagged) != 1 or networks[flagged[0].network].internal


def find_drift(networks: list[Network], sandboxes: list[Sandbox], observed: Observed, owner: Owner,
               expected_ruleset: Ruleset | None = None, services: Sequence[Service] = (),
               service_range: Any = None, overlay_vteps: Sequence[tuple[int, Sequence[str]]] = ()) -> list[Drift]:
    drift: list[Drift] = []
    for n in networks:
        if n.state != "ready":
            drift.append(Drift("half-done", f"network {n.name}", f"left '{n.state}' by an interrupted command"))
    for s in sandboxes:
        if s.state != "ready":
            drift.append(Drift("half-done", f"sandbox {s.name}", f"left '{s.state}' by an interrupted command"))
        for e in s.endpoints:
            if e.state != "ready":
                drift.append(Drift("half-done", f"sandbox {s.name} on {e.network}",
                                   f"endpoint left '{e.state}' by an interrupted command"))
    nets, boxes = ready(networks, sandboxes)
    drift += _network_drift([n for n in nets if n.bridge], observed)
    drift += [Drift("missing", f"network {n.name}", f"its parent interface {n.parent} is gone (nsnet never makes or"
                                                    " changes a parent: make it again)")
              for n in nets if n.parent and n.parent not in observed.links]
    drift += _sandbox_drift(nets, boxes, observed)
    drift += _unmarked(nets, boxes, observed, owner)
    drift += _orphans(networks, sandboxes, observed, owner)
    drift += _firewall_drift(networks, sandboxes, observed, owner, expected_ruleset, services, service_range,
                             overlay_vteps)
    drift += [Drift("half-done", f"service {s.name}", f"left '{s.state}' by an interrupted command")
              for s in services if s.state != "ready"]
    return drift


def _link_drift(subject: str, what: str, link: LinkState, mtu: int, mac: str | None) -> list[Drift]:
    drift = []
    if not link.up:
        drift.append(Drift("wrong", subject, f"{what} is down"))
    if link.mtu != mtu:
        drift.append(Drift("wrong", subject, f"{what} has MTU {link.mtu}, the network's is {mtu}"))
    if mac is not None and link.mac != mac:
        drift.append(Drift("wrong", subject, f"{what} has MAC {link.mac}, nsnet gave it {mac}"))
    return drift


def _network_drift(networks: list[Network], observed: Observed) -> list[Drift]:
    drift = []
    for version in sorted({s.version for n in networks for s in n.subnets}):
        key = FORWARDING[version]
        value = observed.ip_forward if version == 4 else observed.sysctls.get(key, "0")
        if value != "1":
            drift.append(Drift("wrong", f"sysctl {key}", f"is {value}, networks need 1"))
    for n in networks:
        link = observed.links.get(n.bridge)
        subject = f"network {n.name}"
        if link is None:
            drift.append(Drift("missing", subject, f"bridge {n.bridge} does not exist"))
            continue
        for gateway in (s.gateway_interface for s in n.subnets):
            if str(gateway) not in link.addresses:
                drift.append(Drift("missing", subject, f"bridge {n.bridge} lacks its gateway {gateway}"))
        drift += _link_drift(subject, f"bridge {n.bridge}", link, n.mtu, bridge_mac(n))
        for key, value in bridge_sysctls(n).items():
            if observed.sysctls.get(key, value) != value:
                drift.append(Drift("wrong", subject, f"sysctl {key} is {observed.sysctls[key]}, nsnet sets {value}"))
    return drift


def _port_drift(subject: str, e: Endpoint, link: LinkState, network: Network) -> list[Drift]:
    port = f"bridge port {e.host_ifname}"
    if link.master != network.bridge:
        return [Drift("wrong", subject, f"veth {e.host_ifname} is not on bridge {network.bridge}")]
    drift = []
    if link.isolated != (not network.icc):
        drift.append(Drift("wrong", subject, f"{port} is {'not ' if not link.isolated else ''}isolated, "
                                             "its network's icc says otherwise"))
    if not link.hairpin:
        drift.append(Drift("wrong", subject, f"{port} has hairpin mode off"))
    if link.learning:
        drift.append(Drift("wrong", subject, f"{port} learns MAC addresses"))
    if not link.locked:
        drift.append(Drift("wrong", subject, f"{port} is not locked to its static FDB entry"))
    if e.mac not in link.static_macs:
        drift.append(Drift("missing", subject, f"{port} lacks its static FDB entry {e.mac}"))
    return drift


def _tap_drift(subject: str, sandbox: Sandbox, networks: dict[str, Network], observed: Observed) -> list[Drift]:
    """A VM guest's tap (nsnet.taps): there, on its bridge, up, with its port's lock."""
    from .plan.tap import tap_problem

    drift = []
    for e in sandbox.endpoints:
        if e.state == "ready" and e.network in networks:
            problem = tap_problem(e, networks[e.network], observed.links.get(e.host_ifname))
            if problem is not None:
                drift.append(Drift(problem[0], subject, f"{problem[1]} (gc repairs it)"))
    return drift


def _sandbox_drift(networks: list[Network], sandboxes: list[Sandbox], observed: Observed) -> list[Drift]:
    by_name = {n.name: n for n in networks}
    drift = []
    for s in sandboxes:
        subject = f"sandbox {s.name}"
        if s.network_mode is not None:  # the host's namespace or its donor's: nothing of its own
            continue
        if s.tap is not None:
            drift += _tap_drift(subject, s, by_name, observed)
            continue
        if s.handle not in observed.netns:
            drift.append(Drift("missing", subject, f"its namespace {s.netns} is gone"))
            continue
        inside = observed.sandbox_links.get(s.handle, {})
        endpoints = [e for e in s.endpoints if e.state == "ready" and e.network in by_name]
        if default_route_wrong(endpoints, by_name):
            drift.append(Drift("wrong", subject, "the ledger does not give the default route to exactly one "
                                                 "endpoint on a network that is not internal"))
        for e in endpoints:
            network = by_name[e.network]
            link, peer = observed.links.get(e.host_ifname), inside.get(e.ifname)
            if not network.bridge:  # a macvlan child, alone in the sandbox (nsnet.drivers)
                if peer is None or peer.kind != network.driver:
                    drift.append(Drift("missing", subject, f"{network.driver} {e.ifname} on {network.parent} to"
                                                           f" {e.network} is gone"))
                    continue
            elif link is None or peer is None:
                drift.append(Drift("missing", subject, f"veth {e.host_ifname} / {e.ifname} to {e.network} is gone"))
                continue
            else:
                drift += _port_drift(subject, e, link, network)
                drift += _link_drift(subject, f"veth {e.host_ifname}", link, network.mtu, None)
            drift += _link_drift(subject, f"{e.ifname}", peer, network.mtu, e.mac)
            for address in e.addresses:
                if str(address) not in peer.addresses:
                    drift.append(Drift("missing", subject, f"{e.ifname} lacks its address {address}"))
            routes = observed.sandbox_routes.get(s.handle, {})
            for gateway in e.gateways if e.default_route else ():
                if routes.get(gateway.version) != (str(gateway), e.ifname):
                    drift.append(Drift("missing", subject, f"no default route via {gateway} on {e.ifname}"))
    return drift


def _unmarked(networks: list[Network], sandboxes: list[Sandbox], observed: Observed, owner: Owner) -> list[Drift]:
    """Links of this ledger's rows not in its interface group (an older nsnet made them): the
    bridge filter drops forged frames only from ports of the group."""
    names = [n.bridge for n in networks] + [e.host_ifname for s in sandboxes for e in s.endpoints]
    return [Drift("wrong", f"link {name}", f"is not in this ledger's interface group {owner.group:#x}")
            for name in names if name in observed.links and observed.links[name].group != owner.group]


def known_links(networks: Iterable[Network], sandboxes: Iterable[Sandbox]) -> set[str]:
    """The host's links the ledger describes: bridges, overlays' VXLAN devices, sandboxes' ends."""
    networks = list(networks)
    return ({n.bridge for n in networks} | {vxlan_name(n.id) for n in networks if n.driver == "overlay"}
            | {e.host_ifname for s in sandboxes for e in s.endpoints})


def _orphans(networks: list[Network], sandboxes: list[Sandbox], observed: Observed, owner: Owner) -> list[Drift]:
    known = known_links(networks, sandboxes)
    return [Drift("orphan", f"link {name}", "of this ledger's interface group, but in no ledger row")
            for name, link in sorted(observed.links.items()) if link.group == owner.group and name not in known]


def _firewall_drift(networks: list[Network], sandboxes: list[Sandbox], observed: Observed, owner: Owner,
                    expected_ruleset: Ruleset | None, services: Sequence[Service],
                    service_range: Any, overlay_vteps: Sequence[tuple[int, Sequence[str]]] = ()) -> list[Drift]:
    desired = desired_firewall(networks, sandboxes, owner, services=services, service_range=service_range,
                               overlay_vteps=overlay_vteps)
    if observed.nft is None:
        return [Drift("missing", "nftables", f"nsnet's tables ({owner.table}) are gone")] if desired else []
    expected = element_keys(desired)
    drift = [Drift("missing", "nftables element", key) for key in sorted(expected - observed.nft)]
    drift += [Drift("orphan", "nftables element", key) for key in sorted(observed.nft - expected)]
    if expected_ruleset is not None and observed.ruleset is not None:
        drift += ruleset_drift(expected_ruleset, observed.ruleset)
    return drift


def ruleset_drift(expected: Ruleset, actual: Ruleset) -> list[Drift]:
    """Every set, map and chain of the skeleton that is missing, different (a rule deleted, added
    or edited; a hook or policy changed) or not nsnet's."""
    drift = []
    for kind, want, have in (("set", expected.sets, actual.sets), ("chain", expected.chains, actual.chains)):
        for key in sorted(want):
            if key not in have:
                drift.append(Drift("missing", "nftables", f"{key}"))
            elif have[key] != want[key]:
                drift.append(Drift("wrong", "nftables", f"{key} differs from nsnet's"
                                   + (" (its rules)" if kind == "chain" and have[key][0] == want[key][0] else "")))
        drift += [Drift("orphan", "nftables", f"{key} is not nsnet's") for key in sorted(set(have) - set(want))]
    return drift
