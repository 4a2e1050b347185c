"""Rendering of nsnet's ruleset as nftables JSON commands: pure functions, no I/O.

The skeleton (table, sets, chains, rules) is the same for any number of networks: per-network
facts are set elements. `render_skeleton` re-declares it idempotently (add table/sets/chains,
flush nsnet's own chains, add the rules), so every network change also repairs a damaged
skeleton, atomically, in the same transaction as its elements.

Policy, in the forward chain (traffic routed by the host):
  - traffic between the two ends of one bridge is the network's own: accepted;
  - from or to an internal network's bridge: dropped (internal networks reach only themselves);
  - between two different nsnet bridges: dropped (networks are isolated);
  - from a bridge to elsewhere: accepted (egress);
  - to a bridge: only replies (established/related) and DNAT'ed connections, like Docker >= 28.
Postrouting masquerades a non-internal network's subnet when it leaves through any interface
that is not an nsnet bridge.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..model import Network
from . import names

Command = dict[str, Any]


def _table() -> dict[str, str]:
    return {"family": names.FAMILY, "table": names.TABLE}


def _meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def _match(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _in_set(key: str, set_name: str, op: str = "==") -> dict[str, Any]:
    return _match(_meta(key), f"@{set_name}", op)


def _rule(chain: str, *expr: dict[str, Any], comment: str | None = None) -> Command:
    rule: dict[str, Any] = {**_table(), "chain": chain, "expr": list(expr)}
    if comment:
        rule["comment"] = comment
    return {"add": {"rule": rule}}


ACCEPT: dict[str, Any] = {"accept": None}
DROP: dict[str, Any] = {"drop": None}


def _sets() -> list[Command]:
    def declare(name: str, kind: Any, flags: list[str] | None = None) -> Command:
        body: dict[str, Any] = {"family": names.FAMILY, "table": names.TABLE, "name": name, "type": kind}
        if flags:
            body["flags"] = flags
        return {"add": {"set": body}}

    return [
        declare(names.BRIDGES, "ifname"),
        declare(names.INTERNAL_BRIDGES, "ifname"),
        declare(names.SAME_BRIDGE, ["ifname", "ifname"]),
        declare(names.MASQ_SUBNETS, "ipv4_addr", ["interval"]),
    ]


def _chain(name: str, kind: str, hook: str, priority: int) -> list[Command]:
    chain = {**_table(), "name": name, "type": kind, "hook": hook, "prio": priority, "policy": "accept"}
    ref = {"family": names.FAMILY, "table": names.TABLE, "name": name}
    return [{"add": {"chain": chain}}, {"flush": {"chain": ref}}]


def _forward_rules() -> list[Command]:
    f = names.FORWARD
    pair = {"concat": [_meta("iifname"), _meta("oifname")]}
    return [
        _rule(f, _match(pair, f"@{names.SAME_BRIDGE}"), ACCEPT, comment="within one network"),
        _rule(f, _in_set("iifname", names.INTERNAL_BRIDGES), DROP, comment="internal: no way out"),
        _rule(f, _in_set("oifname", names.INTERNAL_BRIDGES), DROP, comment="internal: no way in"),
        _rule(f, _in_set("iifname", names.BRIDGES), _in_set("oifname", names.BRIDGES), DROP,
              comment="isolation between networks"),
        _rule(f, _in_set("iifname", names.BRIDGES), ACCEPT, comment="egress"),
        _rule(f, _in_set("oifname", names.BRIDGES),
              _match({"ct": {"key": "state"}}, {"set": ["established", "related"]}, "in"), ACCEPT,
              comment="replies"),
        _rule(f, _in_set("oifname", names.BRIDGES), _match({"ct": {"key": "status"}}, "dnat", "in"), ACCEPT,
              comment="published ports"),
        _rule(f, _in_set("oifname", names.BRIDGES), DROP, comment="nothing else reaches a sandbox"),
    ]


def _postrouting_rules() -> list[Command]:
    saddr = {"payload": {"protocol": "ip", "field": "saddr"}}
    return [
        _rule(names.POSTROUTING, _match(saddr, f"@{names.MASQ_SUBNETS}"),
              _in_set("oifname", names.BRIDGES, "!="), {"masquerade": None}, comment="egress NAT"),
    ]


def render_skeleton() -> list[Command]:
    """Table, sets, chains and rules; idempotent, and it keeps the sets' elements."""
    return [
        {"add": {"table": {"family": names.FAMILY, "name": names.TABLE}}},
        *_sets(),
        *_chain(names.FORWARD, "filter", "forward", names.FORWARD_PRIORITY),
        *_forward_rules(),
        *_chain(names.POSTROUTING, "nat", "postrouting", names.POSTROUTING_PRIORITY),
        *_postrouting_rules(),
    ]


def _element(verb: str, set_name: str, elements: Iterable[Any]) -> Command:
    return {verb: {"element": {**_table(), "name": set_name, "elem": list(elements)}}}


def _subnet(network: Network) -> dict[str, Any]:
    return {"prefix": {"addr": str(network.subnet.network_address), "len": network.subnet.prefixlen}}


def _network_elements(verb: str, network: Network) -> list[Command]:
    bridge = network.bridge
    commands = [
        _element(verb, names.BRIDGES, [bridge]),
        _element(verb, names.SAME_BRIDGE, [{"concat": [bridge, bridge]}]),
    ]
    if network.internal:
        commands.append(_element(verb, names.INTERNAL_BRIDGES, [bridge]))
    else:
        commands.append(_element(verb, names.MASQ_SUBNETS, [_subnet(network)]))
    return commands


def render_add_network(network: Network) -> list[Command]:
    return [*render_skeleton(), *_network_elements("add", network)]


def render_remove_network(network: Network) -> list[Command]:
    return _network_elements("delete", network)


def render_remove_table() -> list[Command]:
    return [{"delete": {"table": {"family": names.FAMILY, "name": names.TABLE}}}]
