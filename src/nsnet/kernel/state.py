"""What the kernel layer reports when it observes: plain data, compared with the ledger by
nsnet.reconcile. It lives here so that the kernel layer imports nothing above it."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..record import record


@record
class LinkState:
    kind: str
    master: str | None
    up: bool
    addresses: frozenset[str]  # "10.31.0.1/24"
    isolated: bool = False  # a bridge port that forwards nothing to other isolated ports (--no-icc)
    mtu: int = 1500
    mac: str = ""
    group: int = 0
    hairpin: bool = False
    learning: bool = True
    locked: bool = False
    static_macs: frozenset[str] = frozenset()  # a bridge port's static FDB entries


@record
class Ruleset:
    """An owner's nftables skeleton, elements left out: each set's declaration, each chain's hook
    and its rules in order, normalised (no handles) so two listings compare with ==."""

    sets: Mapping[str, Any]  # "family set name" -> declaration
    chains: Mapping[str, Any]  # "family chain name" -> (declaration, rules)


@record
class Observed:
    links: Mapping[str, LinkState]  # the host's links, by name
    netns: frozenset[str]  # names pinned under /run/netns
    # Per sandbox whose namespace exists: each interface's state (addresses included), and the
    # default route of each family that has one, as (gateway, device).
    sandbox_links: Mapping[str, Mapping[str, LinkState]]
    sandbox_routes: Mapping[str, Mapping[int, tuple[str, str]]]
    nft: frozenset[str] | None  # the owner's set and map elements (element_key); None: its tables are absent
    ip_forward: str
    sysctls: Mapping[str, str] = MappingProxyType({})  # the per-bridge ones asked for
    ruleset: Ruleset | None = None  # the owner's skeleton as the kernel has it; None: tables absent
    # Per sandbox observed: its static routes but the default, as (destination, gateway)
    sandbox_statics: Mapping[str, frozenset[tuple[str, str]]] = MappingProxyType({})


def element_key(family: str, set_name: str, element: Any) -> str:
    import json

    return f"{family} {set_name} {json.dumps(element, sort_keys=True)}"
