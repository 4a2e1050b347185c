"""Rendering of nsnet's ruleset as nftables JSON commands: pure functions, no I/O.

The skeleton (tables, sets, maps, chains, rules) is the same for any number of networks,
sandboxes and ports: they are elements. `render_skeleton` re-declares it idempotently (add
table/sets/chains, flush nsnet's own chains, add the rules), so every network change also repairs
a damaged skeleton, atomically, in the same transaction as its elements.

inet forward (traffic the host routes), in order:
  within one --no-icc bridge (a hairpin through a published port): drop
  within one bridge: accept (the network's own traffic, and hairpin through a published port)
  from or to an internal network: drop (internal networks reach only themselves)
  to a sandbox: replies accepted, and connections to published ports (DNAT) from anywhere
  between two different nsnet bridges: drop (isolation)
  from a sandbox to elsewhere: accept (egress)
  to a sandbox: a published sandbox port reached by direct routing: accept; else drop (Docker 28)
inet nat: published ports are DNAT'ed through maps in prerouting and output (only for a local
destination address); postrouting masquerades egress of non-internal subnets, hairpin traffic
(so the reply comes back through the host) and the host's 127.0.0.1 connections to sandboxes.
bridge: frames from a sandbox port with a MAC or IPv4 source not its own are dropped; frames
switched from a --no-icc sandbox's port to another port are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ..model import Endpoint, Network, PortMapping
from ..naming import VETH_PREFIX
from . import names

Command = dict[str, Any]
ACCEPT: dict[str, Any] = {"accept": None}
DROP: dict[str, Any] = {"drop": None}
MASQUERADE: dict[str, Any] = {"masquerade": None}


def _table(family: str = names.FAMILY) -> dict[str, str]:
    return {"family": family, "table": names.TABLE}


def _meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def _payload(protocol: str, field: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": field}}


def _concat(*items: Any) -> dict[str, Any]:
    return {"concat": list(items)}


def _match(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _in_set(key: str, set_name: str, op: str = "==") -> dict[str, Any]:
    return _match(_meta(key), f"@{set_name}", op)


def _rule(chain: str, *expr: dict[str, Any], comment: str, family: str = names.FAMILY) -> Command:
    return {"add": {"rule": {**_table(family), "chain": chain, "expr": list(expr), "comment": comment}}}


def _set(name: str, kind: Any, flags: list[str] | None = None, family: str = names.FAMILY,
         data: Any = None) -> Command:
    body: dict[str, Any] = {**_table(family), "name": name, "type": kind}
    if flags:
        body["flags"] = flags
    if data:
        body["map"] = data
        return {"add": {"map": body}}
    return {"add": {"set": body}}


def _chain(name: str, kind: str, hook: str, priority: int, family: str = names.FAMILY) -> list[Command]:
    chain = {**_table(family), "name": name, "type": kind, "hook": hook, "prio": priority, "policy": "accept"}
    ref = {**_table(family), "name": name}
    return [{"add": {"chain": chain}}, {"flush": {"chain": ref}}]


IPV4 = _match(_meta("nfproto"), "ipv4")
LOCAL_DESTINATION = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
TO_SANDBOX = _in_set("oifname", names.BRIDGES)
FROM_SANDBOX = _in_set("iifname", names.BRIDGES)
L4_DESTINATION = (_meta("l4proto"), _payload("th", "dport"))


ANY_KEY = ["inet_proto", "inet_service"]
ADDR_KEY = ["ipv4_addr", "inet_proto", "inet_service"]


def _inet_sets() -> list[Command]:
    return [
        _set(names.BRIDGES, "ifname"),
        _set(names.INTERNAL_BRIDGES, "ifname"),
        _set(names.SAME_BRIDGE, ["ifname", "ifname"]),
        _set(names.MASQ_SUBNETS, "ipv4_addr", ["interval"]),
        _set(names.BRIDGE_SUBNETS, ["ifname", "ipv4_addr"], ["interval"]),
        _set(names.NO_ICC_BRIDGES, "ifname"),
        _set(names.GATEWAYS, "ipv4_addr"),
        _set(names.PUBLISHED_ANY_IP, ANY_KEY, data="ipv4_addr"),
        _set(names.PUBLISHED_ANY_PORT, ANY_KEY, data="inet_service"),
        _set(names.PUBLISHED_ADDR_IP, ADDR_KEY, data="ipv4_addr"),
        _set(names.PUBLISHED_ADDR_PORT, ADDR_KEY, data="inet_service"),
        _set(names.PUBLISHED_TARGETS, ADDR_KEY),
    ]


def _forward() -> list[Command]:
    f = names.FORWARD
    return [
        *_chain(f, "filter", "forward", names.FORWARD_PRIORITY),
        # Without br_netfilter, a hairpin between two sandboxes of a --no-icc network is routed
        # and leaves by the bridge's output, past table bridge nsnet's forward hook: drop it here.
        _rule(f, _in_set("iifname", names.NO_ICC_BRIDGES),
              _match(_concat(_meta("iifname"), _meta("oifname")), f"@{names.SAME_BRIDGE}"), DROP,
              comment="no inter-container communication, even through published ports"),
        _rule(f, _match(_concat(_meta("iifname"), _meta("oifname")), f"@{names.SAME_BRIDGE}"), ACCEPT,
              comment="within one network"),
        _rule(f, _in_set("iifname", names.INTERNAL_BRIDGES), DROP, comment="internal: no way out"),
        _rule(f, _in_set("oifname", names.INTERNAL_BRIDGES), DROP, comment="internal: no way in"),
        _rule(f, TO_SANDBOX, _match({"ct": {"key": "state"}}, {"set": ["established", "related"]}, "in"), ACCEPT,
              comment="replies"),
        _rule(f, TO_SANDBOX, _match({"ct": {"key": "status"}}, "dnat", "in"), ACCEPT, comment="published ports"),
        _rule(f, FROM_SANDBOX, TO_SANDBOX, DROP, comment="isolation between networks"),
        _rule(f, FROM_SANDBOX, ACCEPT, comment="egress"),
        _rule(f, TO_SANDBOX, _match(_concat(_payload("ip", "daddr"), *L4_DESTINATION),
                                    f"@{names.PUBLISHED_TARGETS}"), ACCEPT,
              comment="published sandbox ports, routed directly"),
        _rule(f, TO_SANDBOX, DROP, comment="nothing else reaches a sandbox"),
    ]


def _dnat_through(key: dict[str, Any], ip_map: str, port_map: str) -> dict[str, Any]:
    return {"dnat": {"family": "ip", "addr": {"map": {"key": key, "data": f"@{ip_map}"}},
                     "port": {"map": {"key": key, "data": f"@{port_map}"}}}}


def _dnat(chain: str) -> list[Command]:
    """A key missing from a map ends the rule without a verdict, so the next rule is tried."""
    by_address = _concat(_payload("ip", "daddr"), *L4_DESTINATION)
    return [
        _rule(chain, IPV4, LOCAL_DESTINATION,
              _dnat_through(by_address, names.PUBLISHED_ADDR_IP, names.PUBLISHED_ADDR_PORT),
              comment="ports published on one address"),
        _rule(chain, IPV4, LOCAL_DESTINATION,
              _dnat_through(_concat(*L4_DESTINATION), names.PUBLISHED_ANY_IP, names.PUBLISHED_ANY_PORT),
              comment="ports published on every address"),
    ]


def _nat() -> list[Command]:
    loopback = {"prefix": {"addr": "127.0.0.0", "len": 8}}
    saddr = _payload("ip", "saddr")
    return [
        *_chain(names.PREROUTING_FILTER, "filter", "prerouting", names.RAW_PRIORITY),
        _rule(names.PREROUTING_FILTER, FROM_SANDBOX, _match(_payload("ip", "daddr"), loopback), DROP,
              comment="sandboxes never reach the host's loopback"),
        # Both ends in the subnet of the bridge the packet came by, and not the gateway (the host
        # may filter what reaches it by connection state): a hairpin, DNAT or egress always has
        # one address outside the subnet, so everything NAT needs stays tracked.
        _rule(names.PREROUTING_FILTER,
              _match(_concat(_meta("iifname"), _payload("ip", "saddr")), f"@{names.BRIDGE_SUBNETS}"),
              _match(_concat(_meta("iifname"), _payload("ip", "daddr")), f"@{names.BRIDGE_SUBNETS}"),
              _match(_payload("ip", "daddr"), f"@{names.GATEWAYS}", "!="), {"notrack": None},
              comment="traffic within one network needs no conntrack"),
        *_chain(names.PREROUTING_NAT, "nat", "prerouting", names.DSTNAT_PRIORITY),
        *_dnat(names.PREROUTING_NAT),
        *_chain(names.OUTPUT_NAT, "nat", "output", names.DSTNAT_PRIORITY),
        *_dnat(names.OUTPUT_NAT),
        *_chain(names.POSTROUTING, "nat", "postrouting", names.POSTROUTING_PRIORITY),
        _rule(names.POSTROUTING, _match(saddr, f"@{names.MASQ_SUBNETS}"), _in_set("oifname", names.BRIDGES, "!="),
              MASQUERADE, comment="egress"),
        # Hairpin: a sandbox reached its own network through a published port. The source is on the
        # bridge the packet leaves by (iifname is empty at postrouting, so the source address says
        # where it came from), and without masquerade the reply would skip the host's un-NAT.
        _rule(names.POSTROUTING, _match({"ct": {"key": "status"}}, "dnat", "in"),
              _match(_concat(_meta("oifname"), saddr), f"@{names.BRIDGE_SUBNETS}"), MASQUERADE,
              comment="hairpin: replies must come back through the host"),
        _rule(names.POSTROUTING, TO_SANDBOX, _match(saddr, loopback), MASQUERADE,
              comment="the host's 127.0.0.1 connections to published ports"),
    ]


def _bridge_table() -> list[Command]:
    family = names.BRIDGE_FAMILY
    pre, fwd = names.BRIDGE_PREROUTING, names.BRIDGE_FORWARD
    port = _meta("iifname")
    sandbox_port = _in_set("iifname", names.SANDBOX_PORTS)
    return [
        {"add": {"table": {"family": family, "name": names.TABLE}}},
        _set(names.SANDBOX_PORTS, "ifname", family=family),
        _set(names.PORT_MACS, ["ifname", "ether_addr"], family=family),
        _set(names.PORT_IDENTITY, ["ifname", "ether_addr", "ipv4_addr"], family=family),
        _set(names.NO_ICC_PORTS, "ifname", family=family),
        *_chain(pre, "filter", "prerouting", names.BRIDGE_PREROUTING_PRIORITY, family),
        # A removed sandbox's namespace (and veth) dies in the kernel's deferred work, tens of ms
        # after `rm`: until then its port must not answer for an address that may be reused.
        _rule(pre, _match(port, f"{VETH_PREFIX}*"), _in_set("iifname", names.SANDBOX_PORTS, "!="), DROP,
              comment="ports of removed sandboxes", family=family),
        _rule(pre, sandbox_port, _match(_concat(port, _payload("ether", "saddr")), f"@{names.PORT_MACS}", "!="),
              DROP, comment="anti-spoofing: MAC", family=family),
        _rule(pre, sandbox_port, _match(_concat(port, _payload("ether", "saddr"), _payload("ip", "saddr")),
                                        f"@{names.PORT_IDENTITY}", "!="),
              DROP, comment="anti-spoofing: IPv4 source", family=family),
        _rule(pre, sandbox_port, _match(_concat(port, _payload("arp", "saddr ether"), _payload("arp", "saddr ip")),
                                        f"@{names.PORT_IDENTITY}", "!="),
              DROP, comment="anti-spoofing: ARP sender", family=family),
        *_chain(fwd, "filter", "forward", names.BRIDGE_FORWARD_PRIORITY, family),
        _rule(fwd, _in_set("iifname", names.NO_ICC_PORTS), DROP, comment="no inter-container communication",
              family=family),
    ]


def render_skeleton() -> list[Command]:
    """Tables, sets, maps, chains and rules; idempotent, and it keeps the elements."""
    return [
        {"add": {"table": {"family": names.FAMILY, "name": names.TABLE}}},
        *_inet_sets(),
        *_forward(),
        *_nat(),
        *_bridge_table(),
    ]


def _element(verb: str, set_name: str, elements: Iterable[Any], family: str = names.FAMILY) -> Command:
    return {verb: {"element": {**_table(family), "name": set_name, "elem": list(elements)}}}


def _network_elements(verb: str, network: Network) -> list[Command]:
    bridge = network.bridge
    subnet = {"prefix": {"addr": str(network.subnet.network_address), "len": network.subnet.prefixlen}}
    commands = [
        _element(verb, names.BRIDGES, [bridge]),
        _element(verb, names.SAME_BRIDGE, [_concat(bridge, bridge)]),
        _element(verb, names.BRIDGE_SUBNETS, [_concat(bridge, subnet)]),
        _element(verb, names.GATEWAYS, [str(network.gateway)]),
        _element(verb, names.INTERNAL_BRIDGES, [bridge]) if network.internal
        else _element(verb, names.MASQ_SUBNETS, [subnet]),
    ]
    if not network.icc:
        commands.append(_element(verb, names.NO_ICC_BRIDGES, [bridge]))
    return commands


def render_add_network(network: Network) -> list[Command]:
    return [*render_skeleton(), *_network_elements("add", network)]


def render_remove_network(network: Network) -> list[Command]:
    return _network_elements("delete", network)


def render_remove_table() -> list[Command]:
    return [{"delete": {"table": {"family": family, "name": names.TABLE}}}
            for family in (names.FAMILY, names.BRIDGE_FAMILY)]


def _published(verb: str, endpoint: Endpoint, mappings: Iterable[PortMapping]) -> list[Command]:
    ip = str(endpoint.address.ip)
    elements: dict[str, dict[str, Any]] = {}  # set -> its elements, by JSON text: ordered and unique

    def put(set_name: str, key: Any, value: Any = None) -> None:
        # A map element is deleted by its key alone.
        element = key if value is None or verb == "delete" else [key, value]
        elements.setdefault(set_name, {}).setdefault(json.dumps(element), element)

    for m in mappings:
        if m.host_ip is None:
            key, ip_map, port_map = _concat(m.protocol, m.host_port), names.PUBLISHED_ANY_IP, names.PUBLISHED_ANY_PORT
        else:
            key = _concat(str(m.host_ip), m.protocol, m.host_port)
            ip_map, port_map = names.PUBLISHED_ADDR_IP, names.PUBLISHED_ADDR_PORT
        put(ip_map, key, ip)
        put(port_map, key, m.sandbox_port)
        put(names.PUBLISHED_TARGETS, _concat(ip, m.protocol, m.sandbox_port))
    return [_element(verb, set_name, items.values()) for set_name, items in elements.items()]


def _endpoint_elements(verb: str, endpoint: Endpoint, network: Network) -> list[Command]:
    port, mac, ip = endpoint.host_ifname, endpoint.mac, str(endpoint.address.ip)
    family = names.BRIDGE_FAMILY
    commands = [
        _element(verb, names.SANDBOX_PORTS, [port], family),
        _element(verb, names.PORT_MACS, [_concat(port, mac)], family),
        _element(verb, names.PORT_IDENTITY, [_concat(port, mac, ip)], family),
    ]
    if not network.icc:
        commands.append(_element(verb, names.NO_ICC_PORTS, [port], family))
    return commands + _published(verb, endpoint, endpoint.ports)


def render_add_endpoint(endpoint: Endpoint, network: Network) -> list[Command]:
    """A sandbox's port on the bridge: its identity, its icc rule, and its published ports."""
    return _endpoint_elements("add", endpoint, network)


def render_remove_endpoints(endpoints: Iterable[tuple[Endpoint, Network]]) -> list[Command]:
    return [command for endpoint, network in endpoints for command in _endpoint_elements("delete", endpoint, network)]
