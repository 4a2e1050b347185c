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
that is not an nsnet bridge. In `table bridge nsnet`, frames switched from the port of a sandbox
on a --no-icc network to another port are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..model import Endpoint, Network
from . import names

Command = dict[str, Any]


def _table(family: str = names.FAMILY) -> dict[str, str]:
    return {"family": family, "table": names.TABLE}


def _meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def _match(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _in_set(key: str, set_name: str, op: str = "==") -> dict[str, Any]:
    return _match(_meta(key), f"@{set_name}", op)


def _rule(chain: str, *expr: dict[str, Any], comment: str | None = None, family: str = names.FAMILY) -> Command:
    rule: dict[str, Any] = {**_table(family), "chain": chain, "expr": list(expr)}
    if comment:
        rule["comment"] = comment
    return {"add": {"rule": rule}}


ACCEPT: dict[str, Any] = {"accept": None}
DROP: dict[str, Any] = {"drop": None}


def _set(name: str, kind: Any, flags: list[str] | None = None, family: str = names.FAMILY) -> Command:
    body: dict[str, Any] = {"family": family, "table": names.TABLE, "name": name, "type": kind}
    if flags:
        body["flags"] = flags
    return {"add": {"set": body}}


def _sets() -> list[Command]:
    return [
        _set(names.BRIDGES, "ifname"),
        _set(names.INTERNAL_BRIDGES, "ifname"),
        _set(names.SAME_BRIDGE, ["ifname", "ifname"]),
        _set(names.MASQ_SUBNETS, "ipv4_addr", ["interval"]),
    ]


def _chain(name: str, kind: str, hook: str, priority: int, family: str = names.FAMILY) -> list[Command]:
    chain = {**_table(family), "name": name, "type": kind, "hook": hook, "prio": priority, "policy": "accept"}
    ref = {"family": family, "table": names.TABLE, "name": name}
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


def _bridge_table() -> list[Command]:
    """Layer 2: frames switched between two sandboxes of a --no-icc network are dropped."""
    family = names.BRIDGE_FAMILY
    return [
        {"add": {"table": {"family": family, "name": names.TABLE}}},
        _set(names.NO_ICC_PORTS, "ifname", family=family),
        *_chain(names.BRIDGE_FORWARD, "filter", "forward", names.BRIDGE_FORWARD_PRIORITY, family),
        _rule(names.BRIDGE_FORWARD, _in_set("iifname", names.NO_ICC_PORTS), DROP,
              comment="no inter-container communication", family=family),
    ]


def render_skeleton() -> list[Command]:
    """Tables, sets, chains and rules; idempotent, and it keeps the sets' elements."""
    return [
        {"add": {"table": {"family": names.FAMILY, "name": names.TABLE}}},
        *_sets(),
        *_chain(names.FORWARD, "filter", "forward", names.FORWARD_PRIORITY),
        *_forward_rules(),
        *_chain(names.POSTROUTING, "nat", "postrouting", names.POSTROUTING_PRIORITY),
        *_postrouting_rules(),
        *_bridge_table(),
    ]


def _element(verb: str, set_name: str, elements: Iterable[Any], family: str = names.FAMILY) -> Command:
    return {verb: {"element": {**_table(family), "name": set_name, "elem": list(elements)}}}


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


def _endpoint_elements(verb: str, endpoints: Iterable[tuple[Endpoint, Network]]) -> list[Command]:
    ports = [endpoint.host_ifname for endpoint, network in endpoints if not network.icc]
    return [_element(verb, names.NO_ICC_PORTS, ports, names.BRIDGE_FAMILY)] if ports else []


def render_add_endpoint(endpoint: Endpoint, network: Network) -> list[Command]:
    """The endpoint's per-port elements; none at all on an ordinary network."""
    return _endpoint_elements("add", [(endpoint, network)])


def render_remove_endpoints(endpoints: Iterable[tuple[Endpoint, Network]]) -> list[Command]:
    return _endpoint_elements("delete", endpoints)


def render_remove_table() -> list[Command]:
    return [{"delete": {"table": {"family": family, "name": names.TABLE}}}
            for family in (names.FAMILY, names.BRIDGE_FAMILY)]
