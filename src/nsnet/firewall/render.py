"""Rendering of nsnet's ruleset as nftables JSON commands: pure functions, no I/O.

The skeleton (tables, sets, maps, chains, rules) is the same for any number of networks,
sandboxes and ports: they are elements. `render_skeleton` re-declares it idempotently (add
table/sets/chains, flush nsnet's own chains, add the rules), so every network change also repairs
a damaged skeleton, atomically, in the same transaction as its elements.

inet forward (traffic the host routes), one verdict-map lookup per question:
  an established flow (or a related packet) not involving an internal network: accept
  within one bridge: accept (the network's own traffic, and hairpin through a published port),
    but drop on a --no-icc network (a hairpin between two of its sandboxes)
  to a bridge: an internal network's is dropped, a regular network's goes through `to_network`
  from a bridge (to anywhere that is not a bridge): accept (egress), but not from an internal network
to_network: from an internal network: drop; connections to published ports (DNAT): accept; from
  another network: drop (isolation); a published sandbox port reached by direct routing: accept
  (Docker 28); anything else: drop.
inet nat: published ports are DNAT'ed through maps in prerouting and output (only for a local
destination address, checked once before jumping to them); postrouting masquerades egress of
non-internal subnets, hairpin traffic (so the reply comes back through the host) and the host's
127.0.0.1 connections to sandboxes.
inet input: an internal network's sandboxes reach nothing on the host (replies to the host's own
connections pass).
bridge: a sandbox port passes IPv4 from its own MAC and address, ARP from its own MAC naming its
own MAC and address, and IPv6 from its own MAC and its address or link-local one, but no router
advertisement, redirect, DHCPv6 server message or MLD message, and no neighbour advertisement
claiming an address that is not the port's; every other frame from a port of this ledger (its interface
group) is dropped, whatever its ethertype (VLAN tags, ...): what a frame may do is decided by what
it is, never by a sysctl root in the sandbox can change. (--no-icc at layer 2 is no rule: the
bridge itself forwards nothing between two isolated ports.)

Both families go through the same rules: a rule that names addresses exists once per family
(`Family`), with that family's sets; a network or sandbox gets elements in the families it has.

Every function takes the ledger's Owner: its tables' name and its links' interface group.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from ipaddress import ip_address

from ..model import Endpoint, Network, Owner, PortMapping, Service
from ..naming import link_local, vxlan_name
from ..record import record
from . import names

TYPE_CHECKING = False  # typing's import is 5 ms of a CNI plugin's start-up
if TYPE_CHECKING:
    from typing import Any

    Command = dict[str, Any]
ACCEPT: dict[str, Any] = {"accept": None}
DROP: dict[str, Any] = {"drop": None}
MASQUERADE: dict[str, Any] = {"masquerade": None}


def _table(owner: Owner, family: str = names.FAMILY) -> dict[str, str]:
    return {"family": family, "table": owner.table}


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


def _rule(owner: Owner, chain: str, *expr: dict[str, Any], comment: str, family: str = names.FAMILY) -> Command:
    return {"add": {"rule": {**_table(owner, family), "chain": chain, "expr": list(expr), "comment": comment}}}


def _set(owner: Owner, name: str, kind: Any, flags: list[str] | None = None, family: str = names.FAMILY,
         data: Any = None) -> Command:
    body: dict[str, Any] = {**_table(owner, family), "name": name, "type": kind}
    if flags:
        body["flags"] = flags
    if data:
        body["map"] = data
        return {"add": {"map": body}}
    return {"add": {"set": body}}


def _chain(owner: Owner, name: str, kind: str | None = None, hook: str | None = None, priority: int = 0,
           family: str = names.FAMILY) -> list[Command]:
    """A base chain (hooked) or, without a hook, a regular one that rules jump to; flushed either way."""
    ref = {**_table(owner, family), "name": name}
    chain = {**ref, "type": kind, "hook": hook, "prio": priority, "policy": "accept"} if hook else ref
    return [{"add": {"chain": chain}}, {"flush": {"chain": ref}}]


@record
class Family:
    """What differs between IPv4 and IPv6 in a rule: the protocol names and the address type."""

    version: int
    nfproto: str
    payload: str  # the network header's name: `ip saddr`, `ip6 saddr`
    address_type: str

    def set(self, name: str) -> str:
        return names.in_family(name, self.version)


IPV4_FAMILY = Family(4, "ipv4", "ip", "ipv4_addr")
IPV6_FAMILY = Family(6, "ipv6", "ip6", "ipv6_addr")
FAMILIES = (IPV4_FAMILY, IPV6_FAMILY)
BY_VERSION = {f.version: f for f in FAMILIES}
LOCAL_DESTINATION = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
TO_SANDBOX = _in_set("oifname", names.BRIDGES)
FROM_SANDBOX = _in_set("iifname", names.BRIDGES)
L4_DESTINATION = (_meta("l4proto"), _payload("th", "dport"))
ND_TARGET = {"payload": {"base": "th", "offset": 64, "len": 128}}  # after type, code, checksum, flags
ESTABLISHED = _match({"ct": {"key": "state"}}, {"set": ["established", "related"]}, "in")


ANY_KEY = ["inet_proto", "inet_service"]


def _address_sets(o: Owner, f: Family) -> list[Command]:
    addr_key = [f.address_type, "inet_proto", "inet_service"]
    return [
        _set(o, f.set(names.MASQ_SUBNETS), f.address_type, ["interval"]),
        _set(o, f.set(names.BRIDGE_SUBNETS), ["ifname", f.address_type], ["interval"]),
        _set(o, f.set(names.SANDBOX_ADDRESSES), ["ifname", f.address_type]),
        _set(o, f.set(names.PUBLISHED_ANY_IP), ANY_KEY, data=f.address_type),
        _set(o, f.set(names.PUBLISHED_ANY_PORT), ANY_KEY, data="inet_service"),
        _set(o, f.set(names.PUBLISHED_ADDR_IP), addr_key, data=f.address_type),
        _set(o, f.set(names.PUBLISHED_ADDR_PORT), addr_key, data="inet_service"),
        _set(o, f.set(names.PUBLISHED_TARGETS), addr_key),
        _set(o, f.set(names.DNS_LISTENERS), ["ifname", f.address_type, "inet_service"]),
        _set(o, f.set(names.DNS_PORTS), ["ifname", f.address_type], data="inet_service"),
    ]


def _service_sets(o: Owner) -> list[Command]:
    commands = []
    for f in FAMILIES:
        key = [f.address_type, "inet_proto", "inet_service"]
        commands += [
            _set(o, f.set(names.SERVICE_IPS), key, data="verdict"),
            {"add": {"map": {**_table(o), "name": f.set(names.SERVICE_BACKENDS),
                             "typeof": names.SERVICE_BACKENDS_TYPEOF[f.version]}}},
            _set(o, f.set(names.SERVICE_PORTS), key, data="inet_service"),
            _set(o, f.set(names.SERVICE_VIPS), f.address_type),
            _set(o, f.set(names.SERVICE_RANGE), f.address_type, ["interval"]),
            _set(o, f.set(names.SERVICE_NODE_PORTS), ANY_KEY, data="verdict"),
            {"add": {"map": {**_table(o), "name": f.set(names.SERVICE_NODE_BACKENDS),
                             "typeof": names.SERVICE_NODE_BACKENDS_TYPEOF[f.version]}}},
            _set(o, f.set(names.SERVICE_NODE_TARGETS), ANY_KEY, data="inet_service"),
        ]
    for f in FAMILIES:
        commands += [
            {"add": {"map": {**_table(o), "name": f.set(names.SERVICE_AFFINITY),
                             "typeof": names.SERVICE_AFFINITY_TYPEOF[f.version], "flags": ["dynamic", "timeout"],
                             "size": names.SERVICE_AFFINITY_SIZE}}},
            _set(o, f.set(names.SERVICE_REMEMBERED), f.address_type, data="verdict"),
        ]
    return commands


def _inet_sets(o: Owner) -> list[Command]:
    return [
        *_service_sets(o),
        _set(o, names.BRIDGES, "ifname"),
        _set(o, names.INTERNAL_BRIDGES, "ifname"),
        _set(o, names.WITHIN_NETWORK, ["ifname", "ifname"], data="verdict"),
        _set(o, names.TO_BRIDGE, "ifname", data="verdict"),
        _set(o, names.FROM_BRIDGE, "ifname", data="verdict"),
        _set(o, names.OVERLAY_PORTS, "inet_service"),
        _set(o, names.OVERLAY_VTEPS, ["ipv4_addr", "inet_service"]),
        *(command for f in FAMILIES for command in _address_sets(o, f)),
    ]


def _vmap(key: Any, map_name: str) -> dict[str, Any]:
    return {"vmap": {"key": key, "data": f"@{map_name}"}}


def _forward(o: Owner) -> list[Command]:
    """A packet of an established flow pays two lookups; a new one one lookup per question, and one
    of another program's (neither interface an nsnet bridge) three misses. The chain ends in a
    verdict only for nsnet's bridges."""
    f, to = names.FORWARD, names.TO_NETWORK
    return [
        *_chain(o, f, "filter", "forward", names.FORWARD_PRIORITY),
        # Masqueraded, a sandbox's datagram to an overlay peer's VXLAN port would arrive from this
        # host's VTEP, which the peer trusts: a frame injected into any of its overlay networks.
        _rule(o, f, FROM_SANDBOX, _match(_payload("udp", "dport"), f"@{names.OVERLAY_PORTS}"),
              _match(_concat(_payload("ip", "daddr"), _payload("udp", "dport")), f"@{names.OVERLAY_VTEPS}"),
              DROP, comment="no sandbox speaks VXLAN to an overlay peer"),
        # Most forwarded packets belong to a connection already accepted, and pay for this only.
        # An internal network has none: its first packet is always dropped, and so are stale
        # entries' (a removed network's subnet may be reused by an internal one).
        _rule(o, f, ESTABLISHED, _in_set("iifname", names.INTERNAL_BRIDGES, "!="),
              _in_set("oifname", names.INTERNAL_BRIDGES, "!="), ACCEPT, comment="replies, and established flows"),
        # A hairpin between two sandboxes of a --no-icc network is routed (in and out by the same
        # bridge), where the bridge's port isolation does not reach: its element here is a drop.
        _rule(o, f, _vmap(_concat(_meta("iifname"), _meta("oifname")), names.WITHIN_NETWORK),
              comment="within one network (no inter-container communication: drop)"),
        _rule(o, f, _vmap(_meta("oifname"), names.TO_BRIDGE), comment="into a network (internal: drop)"),
        _rule(o, f, _vmap(_meta("iifname"), names.FROM_BRIDGE), comment="egress (internal: drop)"),
        *_chain(o, to),
        _rule(o, to, _in_set("iifname", names.INTERNAL_BRIDGES), DROP, comment="internal: no way out"),
        *(_rule(o, to, _match(_meta("nfproto"), f.nfproto),
                _match({"ct": {"key": f"{f.payload} daddr", "dir": "original"}}, f"@{f.set(names.SERVICE_VIPS)}"),
                DROP, comment="a service is reached from its own network and the host only") for f in FAMILIES),
        _rule(o, to, _match({"ct": {"key": "status"}}, "dnat", "in"), ACCEPT, comment="published ports"),
        _rule(o, to, FROM_SANDBOX, DROP, comment="isolation between networks"),
        *(_rule(o, to, _match(_concat(_payload(f.payload, "daddr"), *L4_DESTINATION),
                              f"@{f.set(names.PUBLISHED_TARGETS)}"),
                ACCEPT, comment="published sandbox ports, routed directly") for f in FAMILIES),
        _rule(o, to, DROP, comment="nothing else reaches a sandbox"),
    ]


def _input(o: Owner) -> list[Command]:
    """One lookup per packet the host receives; only an internal bridge's go further."""
    chain, internal = names.INPUT, names.INTERNAL_INPUT
    return [
        *_chain(o, internal),
        _rule(o, internal, ESTABLISHED, ACCEPT, comment="replies to the host's own connections"),
        # Neighbour discovery is not tracked (its state is `untracked`): without it the host could
        # not reach the sandboxes it connects to.
        _rule(o, internal, _match(_payload("icmpv6", "type"), {"set": ["nd-neighbor-solicit", "nd-neighbor-advert"]}),
              ACCEPT, comment="IPv6 neighbour discovery"),
        # The resolver's socket on the network's own gateway, and no other host service.
        *(_rule(o, internal, _match(_meta("l4proto"), {"set": ["tcp", "udp"]}),
                _match(_concat(_meta("iifname"), _payload(f.payload, "daddr"), _payload("th", "dport")),
                       f"@{f.set(names.DNS_LISTENERS)}"),
                ACCEPT, comment="DNS questions to nsnet's resolver on the network's own gateway") for f in FAMILIES),
        _rule(o, internal, DROP, comment="an internal network reaches nothing outside itself, the host included"),
        *_chain(o, chain, "filter", "input", names.FORWARD_PRIORITY),
        _rule(o, chain, _in_set("iifname", names.INTERNAL_BRIDGES), {"jump": {"target": internal}},
              comment="from an internal network"),
        # Docker's overlay CVEs (2023-28840/1/2) came from VXLAN accepted from anyone: only the
        # overlay networks' peer hosts may send to their port.
        _rule(o, chain, _match(_payload("udp", "dport"), f"@{names.OVERLAY_PORTS}"),
              _match(_concat(_payload("ip", "saddr"), _payload("udp", "dport")), f"@{names.OVERLAY_VTEPS}", "!="),
              DROP, comment="VXLAN from a host that is no overlay peer"),
    ]


def _dnat_through(f: Family, key: dict[str, Any], ip_map: str, port_map: str) -> dict[str, Any]:
    return {"dnat": {"family": f.payload, "addr": {"map": {"key": key, "data": f"@{ip_map}"}},
                     "port": {"map": {"key": key, "data": f"@{port_map}"}}}}


def _published_ports(o: Owner, f: Family) -> list[Command]:
    """Jumped to for a new connection of the family to a local address (one FIB lookup for both
    rules). A key missing from a map ends the rule without a verdict, so the next rule is tried."""
    chain = f.set(names.PUBLISHED_PORTS)
    by_address = _concat(_payload(f.payload, "daddr"), *L4_DESTINATION)
    return [
        *_chain(o, chain),
        _rule(o, chain, _dnat_through(f, by_address, f.set(names.PUBLISHED_ADDR_IP),
                                      f.set(names.PUBLISHED_ADDR_PORT)),
              comment="ports published on one address"),
        _rule(o, chain, _dnat_through(f, _concat(*L4_DESTINATION), f.set(names.PUBLISHED_ANY_IP),
                                      f.set(names.PUBLISHED_ANY_PORT)),
              comment="ports published on every address"),
        _rule(o, chain, _vmap(_concat(*L4_DESTINATION), f.set(names.SERVICE_NODE_PORTS)),
              comment="service ports published on every address: a backend picked at random"),
    ]


LOOPBACK = {"prefix": {"addr": "127.0.0.0", "len": 8}}
LOOPBACK6 = "::1"


def _dnat(o: Owner, chain: str, arriving: bool) -> list[Command]:
    """IPv4 `arriving`: prerouting, where a packet to 127.0.0.0/8 never comes from this host (its
    own go through output and are translated there): DNAT runs before the kernel's martian check,
    so without this a neighbour routing 127.0.0.1 to the host would reach ports published on it.
    (The kernel drops an arriving packet to ::1 before any hook.) IPv6 leaving the host: [::1] is
    never translated, as the kernel cannot send it anywhere but lo (no route_localnet for IPv6);
    the host's connection to it is then refused, not lost."""
    rules = []
    for f in FAMILIES:
        if f.version == 4:
            not_loopback = [_match(_payload("ip", "daddr"), LOOPBACK, "!=")] if arriving else []
        else:
            not_loopback = [] if arriving else [_match(_payload("ip6", "daddr"), LOOPBACK6, "!=")]
        rules.append(_rule(o, chain, _match(_meta("nfproto"), f.nfproto), *not_loopback, LOCAL_DESTINATION,
                           {"jump": {"target": f.set(names.PUBLISHED_PORTS)}},
                           comment="to this host: maybe a published port"))
    return rules


def _dns_redirect(o: Owner, f: Family) -> Command:
    """A sandbox's question to its gateway's port 53, when another program holds that port there,
    goes to the resolver's port instead (before published ports: a port 53 published on every
    address must not take it)."""
    return _rule(o, names.PREROUTING_NAT, _match(_meta("nfproto"), f.nfproto),
                 _match(_meta("l4proto"), {"set": ["tcp", "udp"]}), _match(_payload("th", "dport"), 53),
                 {"redirect": {"port": {"map": {"key": _concat(_meta("iifname"), _payload(f.payload, "daddr")),
                                                "data": f"@{f.set(names.DNS_PORTS)}"}}}},
                 comment="DNS questions to a gateway whose port 53 another program holds")


# A DNAT that maps the port needs the transport protocol matched first (nft's own check).
SERVICE_PROTOCOLS = _match(_meta("l4proto"), {"set": ["tcp", "udp", "sctp"]})


def _service_key(f: Family, *more: Any) -> dict[str, Any]:
    return _concat(_payload(f.payload, "daddr"), *L4_DESTINATION, *more)


def _services(o: Owner, chain: str) -> list[Command]:
    """A new connection to a VIP (from a sandbox, arriving, or from the host, leaving) goes to the
    backend its client had, under affinity, else to its service's dispatch chain, or is refused;
    before published ports, so no port published on every address takes it. Nothing answers in
    the range but services' ports."""
    rules = []
    for f in FAMILIES:
        family = _match(_meta("nfproto"), f.nfproto)
        daddr = _payload(f.payload, "daddr")
        rules += [
            _rule(o, chain, family, SERVICE_PROTOCOLS,
                  {"dnat": {"family": f.payload,
                            "addr": {"map": {"key": _affinity_key(f), "data": f"@{f.set(names.SERVICE_AFFINITY)}"}},
                            "port": {"map": {"key": _service_key(f), "data": f"@{f.set(names.SERVICE_PORTS)}"}}}},
                  comment="services with client-IP affinity: the backend this client had"),
            _rule(o, chain, family, _vmap(_service_key(f), f.set(names.SERVICE_IPS)),
                  comment="services: a backend picked at random, or refused without one"),
            _rule(o, chain, family, _match(daddr, f"@{f.set(names.SERVICE_VIPS)}"),
                  {"reject": {"type": "icmpx", "expr": "port-unreachable"}}, comment="a service's VIP, another port"),
            _rule(o, chain, family, _match(daddr, f"@{f.set(names.SERVICE_RANGE)}"), DROP,
                  comment="an address of the service range no service holds"),
        ]
    return rules


def _raw(offset: int) -> dict[str, Any]:
    return {"payload": {"base": "nh", "offset": offset, "len": 64}}


# The low 64 bits of an IPv6 packet's source and destination (names.SERVICE_AFFINITY)
LOW_SOURCE6, LOW_DESTINATION6 = _raw(128), _raw(256)


def _affinity_key(f: Family) -> dict[str, Any]:
    """A new connection's client and VIP as the affinity map keys them."""
    if f.version == 4:
        return _concat(_payload("ip", "saddr"), _payload("ip", "daddr"))
    return _concat(LOW_SOURCE6, LOW_DESTINATION6)


def _service_picks(o: Owner) -> list[Command]:
    """A connection to a VIP of a service with affinity goes to the chain that remembers its
    client's backend (render_remember): in IPv4 its first packet once DNATed, in IPv6 its first
    reply once un-DNATed (a TCP handshake's SYN-ACK, every reply of the other protocols)."""
    commands = []
    for chain, hook in ((names.SERVICE_PICKS, "prerouting"), (names.SERVICE_PICKS_OUTPUT, "output")):
        commands += _chain(o, chain, "filter", hook, names.PICKS_PRIORITY)
        commands.append(_rule(o, chain, _match(_meta("nfproto"), "ipv4"), _match({"ct": {"key": "state"}}, "new", "in"),
                              _vmap({"ct": {"key": "ip daddr", "dir": "original"}}, names.SERVICE_REMEMBERED),
                              comment="a new connection to a service with affinity: remember its backend"))
    ipv6 = _match(_meta("nfproto"), "ipv6")
    reply = [_match({"ct": {"key": "direction"}}, "reply"), _match({"ct": {"key": "status"}}, "dnat", "in")]
    remembered = _vmap(_payload("ip6", "saddr"), names.in_family(names.SERVICE_REMEMBERED, 6))
    handshake = {"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, {"|": ["syn", "ack"]}]}
    for chain, hook in ((names.SERVICE_REPLIES, "postrouting"), (names.SERVICE_REPLIES_INPUT, "input")):
        commands += _chain(o, chain, "filter", hook, names.REPLIES_PRIORITY)
        commands += [
            _rule(o, chain, ipv6, *reply, _match(_meta("l4proto"), "tcp"), _match(handshake, {"|": ["syn", "ack"]}),
                  remembered, comment="a service with affinity answers a new TCP connection: remember its backend"),
            _rule(o, chain, ipv6, *reply, _match(_meta("l4proto"), "tcp", "!="), remembered,
                  comment="a service with affinity answers: remember its backend"),
        ]
    return commands


def _service_reject(o: Owner) -> list[Command]:
    chain = names.SERVICE_REJECT
    return [
        *_chain(o, chain),
        _rule(o, chain, _match(_meta("l4proto"), "tcp"), {"reject": {"type": "tcp reset"}},
              comment="a service without backends: refused at once"),
        _rule(o, chain, {"reject": {"type": "icmpx", "expr": "port-unreachable"}},
              comment="a service without backends: refused at once"),
    ]


def render_dispatch(owner: Owner, backends: int) -> list[Command]:
    """The chains that pick one of `backends` (one random number for the address; the port is the
    service's), for connections to a VIP and to a host port: declared, emptied and filled, so
    making them again changes nothing."""
    pick = {"numgen": {"mode": "random", "mod": backends, "offset": 0}}
    commands = []
    for chain, key, backends_map, ports_map in (
            (names.dispatch_chain(backends), _service_key, names.SERVICE_BACKENDS, names.SERVICE_PORTS),
            (names.node_dispatch_chain(backends), lambda f, *more: _concat(*L4_DESTINATION, *more),
             names.SERVICE_NODE_BACKENDS, names.SERVICE_NODE_TARGETS)):
        commands += _chain(owner, chain)
        commands += [_rule(owner, chain, _match(_meta("nfproto"), f.nfproto), SERVICE_PROTOCOLS,
                           {"dnat": {"family": f.payload,
                                     "addr": {"map": {"key": key(f, pick), "data": f"@{f.set(backends_map)}"}},
                                     "port": {"map": {"key": key(f), "data": f"@{f.set(ports_map)}"}}}},
                           comment=f"one of {backends} backends") for f in FAMILIES]
    return commands


def render_remember(owner: Owner, seconds: int) -> list[Command]:
    """The chain that remembers, for `seconds` after its last new connection, the backend a client
    of a service with that affinity got: client and VIP (conntrack's original destination) to
    the address the connection was DNATed to. In text (names.SERVICE_AFFINITY)."""
    rules = [f"meta nfproto ipv4 update @{names.SERVICE_AFFINITY} {{ ip saddr . ct original ip daddr timeout {seconds}s"
             " : ip daddr }",
             # A reply: from the VIP to the client (names.SERVICE_AFFINITY)
             f"meta nfproto ipv6 update @{names.in_family(names.SERVICE_AFFINITY, 6)} {{ @nh,256,64 . @nh,128,64 "
             f"timeout {seconds}s : ct reply ip6 saddr }}"]
    return [{"add": {"chain": {**_table(owner), "name": names.remember_chain(seconds), "rules_text": rules}}}]


def render_service(owner: Owner, verb: str, service: Service, picks: dict[int, list[str]] | None,
                   vip: bool = True) -> list[Command]:
    """A service's elements with these backends' addresses per family (None: its VIPs and ports
    only, as for a backend change's other half): per VIP, its verdict per port (its dispatch
    chain, or refusal), the backends by their place in the pick, its ports' targets, the VIP, and
    the chain remembering its clients' backends under affinity."""
    commands = []
    for address in service.vips:
        f, vip_text = BY_VERSION[address.version], str(address)
        keys = [_concat(vip_text, p.protocol, p.port) for p in service.ports]
        published = [p for p in service.ports if p.node_port]
        node_keys = [_concat(p.protocol, p.node_port) for p in published]
        if picks is not None:
            chosen = picks.get(f.version, [])
            for set_name, chain, items in ((names.SERVICE_IPS, names.dispatch_chain, keys),
                                           (names.SERVICE_NODE_PORTS, names.node_dispatch_chain, node_keys)):
                target = {"goto": {"target": chain(len(chosen)) if chosen else names.SERVICE_REJECT}}
                if items:
                    commands.append(_element(owner, verb, f.set(set_name),
                                             [k if verb == "delete" else [k, target] for k in items]))
            numbered = [(_concat(vip_text, p.protocol, p.port, i), a) for p in service.ports for i, a in enumerate(chosen)]
            node_numbered = [(_concat(p.protocol, p.node_port, i), a) for p in published for i, a in enumerate(chosen)]
            for set_name, items in ((names.SERVICE_BACKENDS, numbered), (names.SERVICE_NODE_BACKENDS, node_numbered)):
                if items:
                    commands.append(_element(owner, verb, f.set(set_name),
                                             [k if verb == "delete" else [k, a] for k, a in items]))
        if vip:
            commands.append(_element(owner, verb, f.set(names.SERVICE_PORTS),
                                     [k if verb == "delete" else [k, p.target] for k, p in zip(keys, service.ports)]))
            if node_keys:
                commands.append(_element(owner, verb, f.set(names.SERVICE_NODE_TARGETS),
                                         [k if verb == "delete" else [k, p.target]
                                          for k, p in zip(node_keys, published)]))
            commands.append(_element(owner, verb, f.set(names.SERVICE_VIPS), [vip_text]))
            if service.affinity:
                remember = {"goto": {"target": names.remember_chain(service.affinity)}}
                commands.append(_element(owner, verb, f.set(names.SERVICE_REMEMBERED),
                                         [vip_text if verb == "delete" else [vip_text, remember]]))
    return commands


def render_service_range(owner: Owner, verb: str, within: Iterable[Any]) -> list[Command]:
    return [_element(owner, verb, BY_VERSION[block.version].set(names.SERVICE_RANGE),
                     [{"prefix": {"addr": str(block.network_address), "len": block.prefixlen}}]) for block in within]


def _postrouting(o: Owner, f: Family) -> list[Command]:
    saddr = _payload(f.payload, "saddr")
    return [
        _rule(o, names.POSTROUTING, _match(saddr, f"@{f.set(names.MASQ_SUBNETS)}"),
              _in_set("oifname", names.BRIDGES, "!="), MASQUERADE, comment="egress"),
        # Hairpin: a sandbox reached its own network through a published port. The source is on the
        # bridge the packet leaves by (iifname is empty at postrouting, so the source address says
        # where it came from), and without masquerade the reply would skip the host's un-NAT.
        _rule(o, names.POSTROUTING, _match({"ct": {"key": "status"}}, "dnat", "in"),
              _match(_concat(_meta("oifname"), saddr), f"@{f.set(names.BRIDGE_SUBNETS)}"), MASQUERADE,
              comment="hairpin: replies must come back through the host"),
    ]


def _nat(o: Owner) -> list[Command]:
    loopback = LOOPBACK
    return [
        *_chain(o, names.PREROUTING_FILTER, "filter", "prerouting", names.RAW_PRIORITY),
        _rule(o, names.PREROUTING_FILTER, _match(_payload("ip", "daddr"), loopback), FROM_SANDBOX, DROP,
              comment="sandboxes never reach the host's loopback"),
        # Both ends sandboxes of the bridge the packet came by (so not the gateway: the host may
        # filter what reaches it by connection state): a hairpin, DNAT or egress always has one
        # address that is not a sandbox's of that bridge, so everything NAT needs stays tracked.
        *(_rule(o, names.PREROUTING_FILTER,
                _match(_concat(_meta("iifname"), _payload(f.payload, "saddr")), f"@{f.set(names.SANDBOX_ADDRESSES)}"),
                _match(_concat(_meta("iifname"), _payload(f.payload, "daddr")), f"@{f.set(names.SANDBOX_ADDRESSES)}"),
                {"notrack": None}, comment="traffic within one network needs no conntrack") for f in FAMILIES),
        *(command for f in FAMILIES for command in _published_ports(o, f)),
        *_service_reject(o),
        *_service_picks(o),
        *_chain(o, names.PREROUTING_NAT, "nat", "prerouting", names.DSTNAT_PRIORITY),
        *(_dns_redirect(o, f) for f in FAMILIES),
        *_services(o, names.PREROUTING_NAT),
        *_dnat(o, names.PREROUTING_NAT, arriving=True),
        *_chain(o, names.OUTPUT_NAT, "nat", "output", names.DSTNAT_PRIORITY),
        *_services(o, names.OUTPUT_NAT),
        *_dnat(o, names.OUTPUT_NAT, arriving=False),
        *_chain(o, names.POSTROUTING, "nat", "postrouting", names.POSTROUTING_PRIORITY),
        *(command for f in FAMILIES for command in _postrouting(o, f)),
        _rule(o, names.POSTROUTING, TO_SANDBOX, _match(_payload("ip", "saddr"), loopback), MASQUERADE,
              comment="the host's 127.0.0.1 connections to published ports"),
    ]


def _bridge_table(o: Owner) -> list[Command]:
    family = names.BRIDGE_FAMILY
    pre = names.BRIDGE_PREROUTING
    port = _meta("iifname")
    ether_source = _payload("ether", "saddr")
    ip6 = _match(_payload("ether", "type"), "ip6")
    from_port = _match(_meta("iifgroup"), o.group)
    return [
        {"add": {"table": {"family": family, "name": o.table}}},
        _set(o, names.PORT_IDENTITY, ["ifname", "ether_addr", "ipv4_addr"], family=family),
        _set(o, names.PORT_ARP_IDENTITY, ["ifname", "ether_addr", "ether_addr", "ipv4_addr"], family=family),
        _set(o, names.in_family(names.PORT_IDENTITY, 6), ["ifname", "ether_addr", "ipv6_addr"], family=family),
        {"add": {"set": {**_table(o, family), "name": names.ND_CLAIMS, "typeof": names.ND_CLAIMS_TYPEOF}}},
        *_chain(o, pre, "filter", "prerouting", names.BRIDGE_PREROUTING_PRIORITY, family),
        # A sandbox's own frames are accepted by one lookup; what is left from a port of this
        # ledger is forged or of another kind, or comes from a removed sandbox, whose namespace
        # (and veth) dies in the kernel's deferred work tens of ms after `rm`: until then its
        # port must not answer for an address that may be reused.
        # `ether type`, not `meta protocol`: the kernel strips a VLAN tag into the skb before this
        # hook, and meta protocol then names the inner type; ether type sees the tag.
        _rule(o, pre, _match(_payload("ether", "type"), "ip"),
              _match(_concat(port, ether_source, _payload("ip", "saddr")), f"@{names.PORT_IDENTITY}"),
              ACCEPT, comment="a sandbox's IPv4 frames, from its own MAC and address", family=family),
        # The Ethernet source counts as much as the ARP fields: the bridge learns from the former
        # (an ARP frame naming its sender honestly but sent from a neighbour's MAC would move
        # that MAC to this port), hosts from the latter.
        _rule(o, pre, _match(_payload("ether", "type"), "arp"),
              _match(_concat(port, ether_source, _payload("arp", "saddr ether"), _payload("arp", "saddr ip")),
                     f"@{names.PORT_ARP_IDENTITY}"),
              ACCEPT, comment="a sandbox's ARP, from and for its own MAC and address", family=family),
        # A sandbox is no router and no DHCPv6 server (rogue RA guard, RFC 6105).
        _rule(o, pre, from_port, ip6,
              _match(_payload("icmpv6", "type"), {"set": ["nd-router-advert", "nd-redirect"]}), DROP,
              comment="router advertisements and redirects from a sandbox", family=family),
        _rule(o, pre, from_port, ip6, _match(_payload("udp", "sport"), 547), DROP,
              comment="DHCPv6 server messages from a sandbox", family=family),
        _rule(o, pre, from_port, ip6, _match(_payload("udp", "dport"), 546), DROP,
              comment="anything to DHCPv6 clients from a sandbox", family=family),
        # MLD: a sandbox is no multicast router (queries), and its listener reports, which the
        # bridge floods to every port, would cost each attach one delivery per sandbox on the
        # network (benchmarks/attach.py --breakdown --dual-stack). Without them the bridge knows
        # no listener and floods multicast to every port, as to a network without snooping.
        _rule(o, pre, from_port, ip6, _match(_payload("icmpv6", "type"), {"set": [
            "mld-listener-query", "mld-listener-report", "mld-listener-done", "mld2-listener-report"]}), DROP,
              comment="multicast listener queries and reports from a sandbox", family=family),
        # A neighbour advertisement names the address it answers for in its target, not its
        # source: one claiming an address that is not the port's own is dropped.
        _rule(o, pre, from_port, ip6, _match(_payload("icmpv6", "type"), "nd-neighbor-advert"),
              _match(_concat(port, ND_TARGET), f"@{names.ND_CLAIMS}", "!="), DROP,
              comment="neighbour advertisements: only for the port's own addresses", family=family),
        _rule(o, pre, ip6,
              _match(_concat(port, ether_source, _payload("ip6", "saddr")),
                     f"@{names.in_family(names.PORT_IDENTITY, 6)}"),
              ACCEPT, comment="a sandbox's IPv6 frames, from its own MAC and address (or link-local)",
              family=family),
        _rule(o, pre, from_port, DROP,
              comment="anything else from a sandbox port: forged, another ethertype, or a removed sandbox's",
              family=family),
    ]


# Raised when the skeleton gains what elements or chains made outside it name (nsnet.engine's
# SKELETON_KEY): services' paths then send the skeleton once more, for tables an older nsnet made.
SKELETON_VERSION = "11"


def render_skeleton(owner: Owner) -> list[Command]:
    """Tables, sets, maps, chains and rules; idempotent, and it keeps the elements."""
    return [
        {"add": {"table": {"family": names.FAMILY, "name": owner.table}}},
        *_inet_sets(owner),
        *_forward(owner),
        *_input(owner),
        *_nat(owner),
        *_bridge_table(owner),
    ]


def _element(owner: Owner, verb: str, set_name: str, elements: Iterable[Any],
             family: str = names.FAMILY) -> Command:
    return {verb: {"element": {**_table(owner, family), "name": set_name, "elem": list(elements)}}}


def _network_elements(o: Owner, verb: str, network: Network) -> list[Command]:
    bridge = network.bridge
    internal = network.internal

    def entry(key: Any, verdict: dict[str, Any]) -> Any:
        return key if verb == "delete" else [key, verdict]  # a map element is deleted by its key

    commands = [
        _element(o, verb, names.BRIDGES, [bridge]),
        _element(o, verb, names.WITHIN_NETWORK, [entry(_concat(bridge, bridge), ACCEPT if network.icc else DROP)]),
        _element(o, verb, names.TO_BRIDGE,
                 [entry(bridge, DROP if internal else {"jump": {"target": names.TO_NETWORK}})]),
        _element(o, verb, names.FROM_BRIDGE, [entry(bridge, DROP if internal else ACCEPT)]),
    ]
    if internal:
        commands.append(_element(o, verb, names.INTERNAL_BRIDGES, [bridge]))
    if network.driver == "overlay":  # the VXLAN device is the network's way to its other hosts' sandboxes
        device = vxlan_name(network.id)
        # Within the network both ways; into it from another network only as into its bridge
        # (published ports); from it, nowhere else: no other host's sandbox leaves through this one.
        commands += [
            _element(o, verb, names.BRIDGES, [device]),
            _element(o, verb, names.WITHIN_NETWORK, [entry(_concat(bridge, device), ACCEPT if network.icc else DROP),
                                                     entry(_concat(device, bridge), ACCEPT if network.icc else DROP)]),
            _element(o, verb, names.TO_BRIDGE, [entry(device, DROP if internal else {"jump": {"target": names.TO_NETWORK}})]),
            _element(o, verb, names.FROM_BRIDGE, [entry(device, DROP)]),
        ]
        if internal:
            commands.append(_element(o, verb, names.INTERNAL_BRIDGES, [device]))
    for s in network.subnets:
        f = BY_VERSION[s.version]
        if network.dns and internal:
            commands.append(_element(o, verb, f.set(names.DNS_LISTENERS),
                                     [_concat(bridge, str(s.gateway), network.dns_port)]))
        if network.dns and network.dns_port != 53:
            commands.append(_element(o, verb, f.set(names.DNS_PORTS),
                                     [entry(_concat(bridge, str(s.gateway)), network.dns_port)]))
        subnet = {"prefix": {"addr": str(s.subnet.network_address), "len": s.subnet.prefixlen}}
        commands.append(_element(o, verb, f.set(names.BRIDGE_SUBNETS), [_concat(bridge, subnet)]))
        # Routed IPv6 leaves with the sandboxes' own addresses: no masquerade.
        if not internal and not network.routed(s.version):
            commands.append(_element(o, verb, f.set(names.MASQ_SUBNETS), [subnet]))
    return commands


def render_add_network(owner: Owner, network: Network) -> list[Command]:
    return [*render_skeleton(owner), *_network_elements(owner, "add", network)]


def render_network_elements(owner: Owner, network: Network) -> list[Command]:
    return _network_elements(owner, "add", network)


def render_remove_network(owner: Owner, network: Network) -> list[Command]:
    return _network_elements(owner, "delete", network)


def render_remove_table(owner: Owner) -> list[Command]:
    return [{"delete": {"table": {"family": family, "name": owner.table}}}
            for family in (names.FAMILY, names.BRIDGE_FAMILY)]


def _published(o: Owner, verb: str, endpoint: Endpoint, mappings: Iterable[PortMapping]) -> list[Command]:
    """A mapping on no host address is published on every address of each family the endpoint
    has; one on 0.0.0.0 or [::] on every address of that family; one on an address, on that one."""
    elements: dict[str, dict[str, Any]] = {}  # set -> its elements, by JSON text: ordered and unique

    def put(set_name: str, key: Any, value: Any = None) -> None:
        # A map element is deleted by its key alone.
        element = key if value is None or verb == "delete" else [key, value]
        elements.setdefault(set_name, {}).setdefault(json.dumps(element), element)

    for m in mappings:
        for address in endpoint.addresses:
            f, ip = BY_VERSION[address.version], str(address.ip)
            if m.host_ip is not None and m.host_ip.version != f.version:
                continue
            if m.host_ip is None or m.host_ip.is_unspecified:
                key, ip_map, port_map = (_concat(m.protocol, m.host_port), f.set(names.PUBLISHED_ANY_IP),
                                         f.set(names.PUBLISHED_ANY_PORT))
            else:
                key = _concat(str(m.host_ip), m.protocol, m.host_port)
                ip_map, port_map = f.set(names.PUBLISHED_ADDR_IP), f.set(names.PUBLISHED_ADDR_PORT)
            put(ip_map, key, ip)
            put(port_map, key, m.sandbox_port)
            put(f.set(names.PUBLISHED_TARGETS), _concat(ip, m.protocol, m.sandbox_port))
    return [_element(o, verb, set_name, items.values()) for set_name, items in elements.items()]


def nd_target(address: str) -> str | int:
    """An IPv6 address as an element of names.ND_CLAIMS, written as nft lists it back (a number
    when it fits in 64 bits, else hex), so `check` compares like with like."""
    value = int(ip_address(address))
    return value if value < 2**64 else hex(value)


def _endpoint_elements(o: Owner, verb: str, endpoint: Endpoint, network: Network) -> list[Command]:
    port, mac = endpoint.host_ifname, endpoint.mac
    family = names.BRIDGE_FAMILY
    commands = []
    for address in endpoint.addresses:
        f, ip = BY_VERSION[address.version], str(address.ip)
        commands.append(_element(o, verb, f.set(names.SANDBOX_ADDRESSES), [_concat(network.bridge, ip)]))
        if f.version == 4:
            commands += [_element(o, verb, names.PORT_IDENTITY, [_concat(port, mac, ip)], family),
                         _element(o, verb, names.PORT_ARP_IDENTITY, [_concat(port, mac, mac, ip)], family)]
        else:
            own = [ip, str(link_local(mac))]
            commands.append(_element(o, verb, f.set(names.PORT_IDENTITY), [_concat(port, mac, a) for a in own],
                                     family))
            commands.append(_element(o, verb, names.ND_CLAIMS, [_concat(port, nd_target(a)) for a in own], family))
    return commands + _published(o, verb, endpoint, endpoint.ports)


def render_add_endpoint(owner: Owner, endpoint: Endpoint, network: Network) -> list[Command]:
    """A sandbox's address on its bridge, its port's identity, and its published ports."""
    return _endpoint_elements(owner, "add", endpoint, network)


def render_remove_endpoints(owner: Owner, endpoints: Iterable[tuple[Endpoint, Network]]) -> list[Command]:
    return [command for endpoint, network in endpoints
            for command in _endpoint_elements(owner, "delete", endpoint, network)]


def render_overlay_peers(owner: Owner, verb: str, port: int, vteps: Iterable[str]) -> list[Command]:
    """The VXLAN port of an overlay network and its peers' VTEP addresses (the input allow-list)."""
    found = [_concat(vtep, port) for vtep in sorted(set(vteps))]
    commands = [_element(owner, verb, names.OVERLAY_PORTS, [port])] if verb == "add" else []
    return commands + ([_element(owner, verb, names.OVERLAY_VTEPS, found)] if found else [])


def render_overlay_port(owner: Owner, port: int) -> list[Command]:
    """The VXLAN port dropped from the allow-list's ports (the last overlay network left)."""
    return [_element(owner, "delete", names.OVERLAY_PORTS, [port])]
