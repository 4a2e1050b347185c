"""The ledger against the live kernel: what `nsnet check` reports and `nsnet gc` repairs. Pure.

The ledger says what should exist; Observed says what does. Every kernel object nsnet makes is
recorded before it is made, so a difference is one of: a half-done operation (a row still
'creating' or 'removing'), something missing (removed behind nsnet's back, or a reboot), something
wrong (a veth no longer on its bridge), or an orphan (an nsnet-named link or nft element that no
row describes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .firewall import render
from .model import Network, Sandbox
from .plan.network import bridge_sysctls

NSNET_LINK = re.compile(r"(nsbr-[0-9a-f]{10}|nsv[0-9a-f]{12})\Z")


@dataclass(frozen=True)
class LinkState:
    kind: str
    master: str | None
    up: bool
    addresses: frozenset[str]  # "10.31.0.1/24"
    isolated: bool = False  # a bridge port that forwards nothing to other isolated ports (--no-icc)


@dataclass(frozen=True)
class Observed:
    links: Mapping[str, LinkState]  # the host's links, by name
    netns: frozenset[str]  # names pinned under /run/netns
    # Per sandbox whose namespace exists: each interface with its IPv4 addresses, and the default
    # route as (gateway, device) or None.
    sandbox_links: Mapping[str, Mapping[str, frozenset[str]]]
    sandbox_routes: Mapping[str, tuple[str, str] | None]
    nft: frozenset[str] | None  # nsnet's set and map elements (element_key); None when its tables are absent
    ip_forward: str
    sysctls: Mapping[str, str] = field(default_factory=dict)  # the per-bridge ones nsnet sets (bridge_sysctls)


@dataclass(frozen=True)
class Drift:
    kind: str  # half-done, missing, wrong, orphan
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.detail}"

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "subject": self.subject, "detail": self.detail}


def element_key(family: str, set_name: str, element: Any) -> str:
    return f"{family} {set_name} {json.dumps(element, sort_keys=True)}"


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


def desired_firewall(networks: list[Network], sandboxes: list[Sandbox]) -> list[dict[str, Any]]:
    """nsnet's whole ruleset as the ledger implies it: the skeleton and every element."""
    nets, boxes = ready(networks, sandboxes)
    by_name = {n.name: n for n in nets}
    commands = [c for n in nets for c in render.render_add_network(n)]
    for sandbox in boxes:
        for endpoint in sandbox.endpoints:
            if endpoint.state == "ready" and endpoint.network in by_name:
                commands += render.render_add_endpoint(endpoint, by_name[endpoint.network])
    return commands or []


def find_drift(networks: list[Network], sandboxes: list[Sandbox], observed: Observed) -> list[Drift]:
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
    drift += _network_drift(nets, observed)
    drift += _sandbox_drift(nets, boxes, observed)
    drift += _orphans(networks, sandboxes, observed)
    drift += _firewall_drift(networks, sandboxes, observed)
    return drift


def _network_drift(networks: list[Network], observed: Observed) -> list[Drift]:
    drift = []
    if networks and observed.ip_forward != "1":
        drift.append(Drift("wrong", "sysctl net.ipv4.ip_forward", f"is {observed.ip_forward}, networks need 1"))
    for n in networks:
        link = observed.links.get(n.bridge)
        subject = f"network {n.name}"
        if link is None:
            drift.append(Drift("missing", subject, f"bridge {n.bridge} does not exist"))
            continue
        if str(n.gateway_interface) not in link.addresses:
            drift.append(Drift("missing", subject, f"bridge {n.bridge} lacks its gateway {n.gateway_interface}"))
        if not link.up:
            drift.append(Drift("wrong", subject, f"bridge {n.bridge} is down"))
        for key, value in bridge_sysctls(n.bridge).items():
            if observed.sysctls.get(key, value) != value:
                drift.append(Drift("wrong", subject, f"sysctl {key} is {observed.sysctls[key]}, nsnet sets {value}"))
    return drift


def _sandbox_drift(networks: list[Network], sandboxes: list[Sandbox], observed: Observed) -> list[Drift]:
    bridges = {n.name: n.bridge for n in networks}
    no_icc = {n.name for n in networks if not n.icc}
    drift = []
    for s in sandboxes:
        subject = f"sandbox {s.name}"
        if s.name not in observed.netns:
            drift.append(Drift("missing", subject, f"its namespace /run/netns/{s.name} is gone"))
            continue
        inside = observed.sandbox_links.get(s.name, {})
        for e in (e for e in s.endpoints if e.state == "ready"):
            link = observed.links.get(e.host_ifname)
            if link is None or e.ifname not in inside:
                drift.append(Drift("missing", subject, f"veth {e.host_ifname} / {e.ifname} to {e.network} is gone"))
                continue
            if link.master != bridges.get(e.network):
                drift.append(Drift("wrong", subject, f"veth {e.host_ifname} is not on bridge {bridges.get(e.network)}"))
            elif link.isolated != (e.network in no_icc):
                drift.append(Drift("wrong", subject, f"bridge port {e.host_ifname} is "
                                   f"{'not ' if not link.isolated else ''}isolated, its network's icc says otherwise"))
            if str(e.address) not in inside[e.ifname]:
                drift.append(Drift("missing", subject, f"{e.ifname} lacks its address {e.address}"))
            if e.default_route and observed.sandbox_routes.get(s.name) != (str(e.gateway), e.ifname):
                drift.append(Drift("missing", subject, f"no default route via {e.gateway} on {e.ifname}"))
    return drift


def _orphans(networks: list[Network], sandboxes: list[Sandbox], observed: Observed) -> list[Drift]:
    known = {n.bridge for n in networks} | {e.host_ifname for s in sandboxes for e in s.endpoints}
    return [Drift("orphan", f"link {name}", "named like nsnet's but in no ledger row")
            for name in sorted(observed.links) if NSNET_LINK.match(name) and name not in known]


def _firewall_drift(networks: list[Network], sandboxes: list[Sandbox], observed: Observed) -> list[Drift]:
    expected = element_keys(desired_firewall(networks, sandboxes))
    if observed.nft is None:
        return [Drift("missing", "nftables", "nsnet's tables are gone")] if ready(networks, sandboxes)[0] else []
    drift = [Drift("missing", "nftables element", key) for key in sorted(expected - observed.nft)]
    drift += [Drift("orphan", "nftables element", key) for key in sorted(observed.nft - expected)]
    return drift
