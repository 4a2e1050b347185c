"""The table that intercepts a sandbox's traffic, rendered as nftables JSON commands: pure.

One table, `inet TABLE` (the ledger's table name), inside the sandbox's namespace, replaced whole
in one transaction (declared, emptied, filled), so an update never shows a half-made state:

  prerouting (nat, dstnat): traffic arriving by lo, and to excluded inbound ports, is left alone;
    other new inbound TCP is redirected to the inbound port (on the address it arrived for).
  output (nat, dstnat): the excluded users' traffic (the proxy's own), loopback traffic and
    traffic to excluded addresses or ports is left alone; DNS (UDP and TCP 53) goes to the DNS
    port, other new outbound TCP to 127.0.0.1 (or ::1) on the outbound port.

Only a connection's first packet meets these rules (NAT is decided once per conntrack entry), so
established connections are untouched by `intercept add` and `rm`, as with Istio.
"""

from __future__ import annotations

from . import Interception

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Command = dict[str, Any]

FAMILY = "inet"
PREROUTING, OUTPUT = "prerouting", "output"
DSTNAT = -100
UIDS, PORTS, INBOUND_PORTS, CIDRS, CIDRS6 = "excluded_uids", "excluded_ports", "excluded_inbound_ports", \
    "excluded_cidrs", "excluded_cidrs6"
RETURN: dict[str, Any] = {"return": None}


def _match(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def _dport() -> dict[str, Any]:
    return {"payload": {"protocol": "th", "field": "dport"}}


def _redirect(port: int) -> dict[str, Any]:
    return {"redirect": {"port": port}}


def render_table(table: str, spec: Interception) -> list[Command]:
    """The whole table for this interception, replacing whatever the table held."""
    ref = {"family": FAMILY, "table": table}

    def chain(name: str) -> list[Command]:
        body = {**ref, "name": name, "type": "nat", "hook": name, "prio": DSTNAT, "policy": "accept"}
        return [{"add": {"chain": body}}, {"flush": {"chain": {**ref, "name": name}}}]

    def a_set(name: str, kind: str, elements: list[Any], interval: bool = False) -> list[Command]:
        body = {**ref, "name": name, "type": kind, **({"flags": ["interval"]} if interval else {})}
        commands = [{"add": {"set": body}}, {"flush": {"set": {**ref, "name": name}}}]
        if elements:
            commands.append({"add": {"element": {**ref, "name": name, "elem": elements}}})
        return commands

    def rule(chain_name: str, *expr: dict[str, Any], comment: str) -> Command:
        return {"add": {"rule": {**ref, "chain": chain_name, "expr": list(expr), "comment": comment}}}

    def prefix(cidr: Any) -> dict[str, Any]:
        return {"prefix": {"addr": str(cidr.network_address), "len": cidr.prefixlen}}

    tcp = _match(_meta("l4proto"), "tcp")
    commands: list[Command] = [
        {"add": {"table": {"family": FAMILY, "name": table}}},
        *a_set(UIDS, "uid", list(spec.exclude_uids)),
        *a_set(PORTS, "inet_service", list(spec.exclude_ports)),
        *a_set(INBOUND_PORTS, "inet_service", list(spec.exclude_inbound_ports)),
        *a_set(CIDRS, "ipv4_addr", [prefix(c) for c in spec.exclude_cidrs if c.version == 4], interval=True),
        *a_set(CIDRS6, "ipv6_addr", [prefix(c) for c in spec.exclude_cidrs if c.version == 6], interval=True),
        *chain(PREROUTING),
        *chain(OUTPUT),
    ]
    if spec.inbound_port is not None:
        commands += [
            rule(PREROUTING, _match(_meta("iifname"), "lo"), RETURN, comment="loopback is never captured"),
            rule(PREROUTING, tcp, _match(_dport(), f"@{INBOUND_PORTS}"), RETURN, comment="excluded inbound ports"),
            rule(PREROUTING, tcp, _redirect(spec.inbound_port), comment="inbound TCP to the proxy"),
        ]
    commands.append(rule(OUTPUT, _match(_meta("skuid"), f"@{UIDS}"), RETURN,
                         comment="the excluded users' own traffic (the proxy's): never captured"))
    commands.append(rule(OUTPUT, _match(_meta("oifname"), "lo"), RETURN, comment="loopback is never captured"))
    if spec.dns_port is not None:
        commands.append(rule(OUTPUT, _match(_meta("l4proto"), {"set": ["tcp", "udp"]}), _match(_dport(), 53),
                             _redirect(spec.dns_port), comment="DNS to the proxy's DNS port"))
    if spec.outbound_port is not None:
        commands += [
            rule(OUTPUT, _match({"payload": {"protocol": "ip", "field": "daddr"}}, f"@{CIDRS}"), RETURN,
                 comment="excluded destinations"),
            rule(OUTPUT, _match({"payload": {"protocol": "ip6", "field": "daddr"}}, f"@{CIDRS6}"), RETURN,
                 comment="excluded destinations"),
            rule(OUTPUT, tcp, _match(_dport(), f"@{PORTS}"), RETURN, comment="excluded destination ports"),
            rule(OUTPUT, tcp, _redirect(spec.outbound_port), comment="outbound TCP to the proxy"),
        ]
    return commands


def render_removal(table: str) -> list[Command]:
    """The table gone, whether it was there or not (declared first, so the delete cannot fail)."""
    ref = {"family": FAMILY, "name": table}
    return [{"add": {"table": ref}}, {"delete": {"table": ref}}]


def summary(listing: list[dict[str, Any]]) -> tuple[list[tuple[str, str]], dict[str, list[str]]]:
    """What `check` compares of a table: its rules (chain, comment), in order, and each set's
    elements, from nft's JSON listing (or `as_listing` of rendered commands)."""
    from ipaddress import ip_network

    def element(value: Any) -> str:
        if isinstance(value, dict) and "prefix" in value:
            return str(ip_network(f"{value['prefix']['addr']}/{value['prefix']['len']}"))
        if isinstance(value, str):
            try:
                return str(ip_network(value))
            except ValueError:
                return value
        return str(value)

    rules = [(item["rule"]["chain"], item["rule"].get("comment", "")) for item in listing if "rule" in item]
    sets = {item["set"]["name"]: sorted(element(e) for e in item["set"].get("elem", []))
            for item in listing if "set" in item}
    return rules, {name: elements for name, elements in sets.items() if elements}


def as_listing(commands: list[Command]) -> list[dict[str, Any]]:
    """Rendered commands in the shape of nft's listing of the table they make."""
    sets: dict[str, list[Any]] = {}
    rules = []
    for command in commands:
        body = command.get("add", {})
        if "element" in body:
            sets.setdefault(body["element"]["name"], []).extend(body["element"]["elem"])
        elif "rule" in body:
            rules.append({"rule": body["rule"]})
    return [*({"set": {"name": name, "elem": elements}} for name, elements in sets.items()), *rules]
