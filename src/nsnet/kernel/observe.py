"""Reading kernel state that is not on a hot path, through pyroute2's full netlink parser.

Imported only when needed: pyroute2 costs ~80-190 ms to import.
"""

from __future__ import annotations

import json
import os
import socket
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import Any

from ..firewall.names import SERVICE_AFFINITY, in_family

RT_TABLE_LOCAL = 255
RTPROT_STATIC = 4
# Routes every IPv6 interface has, which no subnet of nsnet's may take anyway (validate.RESERVED).
_IPV6_SCOPED = (IPv6Network("fe80::/10"), IPv6Network("ff00::/8"))


def host_routes() -> list[tuple[Any, str]]:
    """(destination, device) of every route of the host in both families, but default,
    local-table, link-local and multicast ones. Through nsnet's own rtnetlink (two dumps and a
    link dump): `network create`, and a CNI plugin's first ADD, would otherwise import pyroute2."""
    from .rtnl import RtnlSocket

    found = []
    sock = RtnlSocket()
    try:
        names = sock.link_names()
        for family in (socket.AF_INET, socket.AF_INET6):
            for table, dst_len, dst, oif in sock.routes(family):
                if table == RT_TABLE_LOCAL or dst_len == 0 or dst is None:
                    continue
                network = ip_network((dst, dst_len), strict=False)
                if any(network.subnet_of(scoped) for scoped in _IPV6_SCOPED if network.version == 6):
                    continue
                found.append((network, names.get(oif, "") if oif is not None else ""))
    finally:
        sock.close()
    return found


def base_chains() -> list[Any]:
    """Every hooked chain of the ruleset, from libnftables' JSON listing."""
    from ..doctor import BaseChain
    from .nft import Nft

    listing = Nft().list_ruleset()
    last_rule: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for item in listing:
        rule = item.get("rule")
        if rule:
            last_rule[(rule["family"], rule["table"], rule["chain"])] = rule.get("expr", [])
    return [
        BaseChain(c["family"], c["table"], c["name"], c["hook"], c.get("policy", "accept"),
                  _drops_everything(last_rule.get((c["family"], c["table"], c["name"]), [])))
        for item in listing for c in [item.get("chain")] if c and "hook" in c
    ]


def _drops_everything(expr: list[dict[str, Any]]) -> bool:
    """A rule that matches nothing and drops or rejects (counting or logging on the way)."""
    kinds = {key for statement in expr for key in statement}
    return bool(kinds & {"drop", "reject"}) and kinds <= {"drop", "reject", "counter", "log", "limit"}


def legacy_iptables_tables() -> list[str]:
    """Tables of legacy (x_tables) iptables in use, as the kernel lists them."""
    try:
        with open("/proc/net/ip_tables_names") as handle:
            return handle.read().split()
    except FileNotFoundError:
        return []


def missing_features() -> list[str]:
    """Try what nsnet needs in a throwaway namespace (a helper thread's), and report refusals."""
    from ..firewall import render
    from ..model import Network, Owner, Subnet
    from . import netns
    from .nft import Nft
    from .rtnl import RtnlSocket

    def probe() -> list[str]:
        netns.unshare(netns.CLONE_NEWNET)
        missing = []
        sock = RtnlSocket()
        owner = Owner()
        try:
            try:
                sock.create_bridge("probe-br", 1500, "02:4e:00:00:00:01", owner.group)
            except Exception as exc:
                missing.append(f"bridge: {exc}")
            probe_network = Network(id="0" * 64, name="probe", bridge="probe-br", subnets=(
                Subnet(IPv4Network("192.0.2.0/24"), IPv4Address("192.0.2.1")),
                Subnet(IPv6Network("2001:db8::/64"), IPv6Address("2001:db8::1"))))
            try:
                Nft().transaction(render.render_add_network(owner, probe_network))
            except Exception as exc:
                missing.append(f"nftables ruleset: {exc}")
            for kind in ("macvlan", "ipvlan"):  # network create --driver (nsnet.drivers)
                problem = link_kind_missing(kind)
                if problem is not None:
                    missing.append(f"{kind} (network create --driver {kind}): {problem}")
        finally:
            sock.close()
        return missing

    return netns.in_thread(probe)


def link_kind_missing(kind: str) -> str | None:
    """Whether this kernel makes links of `kind` on a parent (macvlan, ipvlan): tried for real on a
    veth in a throwaway namespace; the kernel's refusal, or None."""
    from . import netns
    from .rtnl import RtnlSocket

    def probe() -> str | None:
        netns.unshare(netns.CLONE_NEWNET)
        sock = RtnlSocket()
        here = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            sock.create_veth("probe-parent", 0, 1500, "probe-peer", here, None, 0)
            sock.create_child(kind, "probe-child", sock.link_index("probe-parent"))
        except Exception as exc:
            return str(exc)
        finally:
            os.close(here)
            sock.close()
        return None

    return netns.in_thread(probe)


def vxlan_missing() -> str | None:
    """Whether this kernel makes VXLAN devices (overlay networks): tried for real in a throwaway
    namespace; the kernel's refusal, or None."""
    from . import netns

    def probe() -> str | None:
        from pyroute2 import IPRoute

        netns.unshare(netns.CLONE_NEWNET)
        try:
            with IPRoute() as ipr:
                ipr.link("add", ifname="probe-vxlan", kind="vxlan", vxlan_id=4096, vxlan_port=4789, vxlan_learning=0)
        except Exception as exc:  # noqa: BLE001 - the kernel's refusal is the answer
            return str(exc)
        return None

    return netns.in_thread(probe)


IFLA_BRPORT_FLAGS = ("IFLA_BRPORT_MODE", "IFLA_BRPORT_LEARNING", "IFLA_BRPORT_LOCKED", "IFLA_BRPORT_ISOLATED")
NUD_NOARP = 0x40  # a static entry


def _link_states(ipr: Any, static_macs: dict[int, set[str]] | None = None) -> dict[str, Any]:
    """Every link of the namespace ipr is bound to, with its kind, master, state, MTU, MAC, group,
    bridge port flags and addresses (both families)."""
    from .state import LinkState

    links = list(ipr.get_links())
    addresses: dict[int, set[str]] = {}
    for family in (socket.AF_INET, socket.AF_INET6):
        for addr in ipr.get_addr(family=family):
            addresses.setdefault(addr["index"], set()).add(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}")
    names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in links}
    found = {}
    for link in links:
        info = link.get_attr("IFLA_LINKINFO")
        kind = (info.get_attr("IFLA_INFO_KIND") if info else None) or ""
        port = info.get_attr("IFLA_INFO_SLAVE_DATA") if info else None
        mode, learning, locked, isolated = (port.get_attr(f) if port else None for f in IFLA_BRPORT_FLAGS)
        found[names[link["index"]]] = LinkState(
            kind=kind, master=names.get(link.get_attr("IFLA_MASTER")), up=bool(link["flags"] & 1),
            addresses=frozenset(addresses.get(link["index"], ())), isolated=bool(isolated),
            mtu=link.get_attr("IFLA_MTU") or 0, mac=link.get_attr("IFLA_ADDRESS") or "",
            group=link.get_attr("IFLA_GROUP") or 0, hairpin=bool(mode), learning=learning is None or bool(learning),
            locked=bool(locked), static_macs=frozenset((static_macs or {}).get(link["index"], ())),
        )
    return found


def host_links() -> dict[str, Any]:
    """Every link of the host (see _link_states), with each bridge port's static FDB entries."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        static: dict[int, set[str]] = {}
        for entry in ipr.get_neighbours(family=7):  # AF_BRIDGE: the bridges' FDBs
            if entry["state"] & NUD_NOARP and entry.get_attr("NDA_MASTER"):
                static.setdefault(entry["ifindex"], set()).add(entry.get_attr("NDA_LLADDR"))
        return _link_states(ipr, static)


def _normalised(listing: list[dict[str, Any]], table: str) -> tuple[frozenset[str], Any]:
    """The elements of the table's sets and maps (inet and bridge), and its skeleton."""
    from .state import Ruleset, element_key

    keys: set[str] = set()
    sets: dict[str, Any] = {}
    chains: dict[str, Any] = {}
    for item in listing:
        ((kind, body),) = item.items()
        if kind not in ("set", "map", "chain", "rule") or body.get("table") != table:
            continue
        body = {k: v for k, v in body.items() if k != "handle"}
        if kind in ("set", "map"):
            found = body.pop("elem", [])
            if body["name"] not in DYNAMIC:  # what packets write is no drift
                keys.update(element_key(body["family"], body["name"], e) for e in found)
            sets[f"{body['family']} {kind} {body['name']}"] = body
        elif kind == "chain":
            chains.setdefault(f"{body['family']} chain {body['name']}", [None, []])[0] = body
        else:
            chains.setdefault(f"{body['family']} chain {body['chain']}", [None, []])[1].append(body)
    return frozenset(keys), Ruleset(sets=sets, chains={k: (d, tuple(json.dumps(r, sort_keys=True) for r in rules))
                                                      for k, (d, rules) in chains.items()})


DYNAMIC = frozenset(in_family(SERVICE_AFFINITY, v) for v in (4, 6))


def nft_tables(table: str) -> tuple[frozenset[str] | None, Any]:
    """The elements and the skeleton of the owner's tables: no elements (None) when its inet table
    does not exist, and no skeleton either when neither table does."""
    from .nft import Nft

    listing = Nft().list_ruleset()
    present = {t["table"]["family"] for t in listing if t.get("table", {}).get("name") == table}
    if not present:
        return None, None
    elements, ruleset = _normalised(listing, table)
    return (elements if "inet" in present else None), ruleset


def ruleset_made_of(commands: list[dict[str, Any]], table: str) -> Any:
    """What the kernel makes of commands, listed back from a throwaway namespace (a helper thread's)."""
    from . import netns
    from .nft import Nft

    def probe() -> Any:
        netns.unshare(netns.CLONE_NEWNET)
        nft = Nft()
        nft.transaction(commands)
        return _normalised(nft.list_ruleset(), table)[1]

    return netns.in_thread(probe)


def sandbox_interfaces(path: str) -> tuple[dict[str, Any], dict[int, tuple[str, str]], frozenset[tuple[str, str]]]:
    """Inside one sandbox: each interface's state, the default route of each family that has one,
    as (gateway, device), and every other static route of the main table, as (destination,
    gateway). Read in a helper thread that enters the namespace, pyroute2 and all."""
    from pyroute2 import IPRoute

    from . import netns

    def inside() -> tuple[dict[str, Any], dict[int, tuple[str, str]], frozenset[tuple[str, str]]]:
        defaults: dict[int, tuple[str, str]] = {}
        statics: set[tuple[str, str]] = set()
        with IPRoute() as ipr:
            links = _link_states(ipr)
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            for version, family in ((4, socket.AF_INET), (6, socket.AF_INET6)):
                for r in ipr.get_routes(family=family):
                    main, gateway = (r.get_attr("RTA_TABLE") or r["table"]) == 254, r.get_attr("RTA_GATEWAY")
                    if r["dst_len"] == 0 and main and gateway and version not in defaults:
                        defaults[version] = (str(gateway), names.get(r.get_attr("RTA_OIF"), ""))
                    elif r["dst_len"] and main and gateway and r["proto"] == RTPROT_STATIC:
                        statics.add((str(ip_network(f"{r.get_attr('RTA_DST')}/{r['dst_len']}")), str(gateway)))
        return links, defaults, frozenset(statics)

    return netns.in_netns(path, inside)
