"""Reading kernel state that is not on a hot path, through pyroute2's full netlink parser.

Imported only when needed: pyroute2 costs ~80-190 ms to import.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv4Network
from typing import Any

RT_TABLE_LOCAL = 255


def host_routes() -> list[tuple[IPv4Network, str]]:
    """(destination, device) of every IPv4 route of the host but default and local-table ones."""
    from pyroute2 import IPRoute

    found = []
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for route in ipr.get_routes(family=socket.AF_INET):
            table = route.get_attr("RTA_TABLE") or route["table"]
            if table == RT_TABLE_LOCAL or route["dst_len"] == 0:
                continue
            dst = route.get_attr("RTA_DST")
            if dst is None:
                continue
            oif = route.get_attr("RTA_OIF")
            found.append((IPv4Network(f"{dst}/{route['dst_len']}", strict=False), names.get(oif, "")))
    return found


def base_chains() -> list[Any]:
    """Every hooked chain of the ruleset, from libnftables' JSON listing."""
    from ..doctor import BaseChain
    from .nft import Nft

    listing = Nft().list_ruleset()
    return [
        BaseChain(c["family"], c["table"], c["name"], c["hook"], c.get("policy", "accept"))
        for item in listing for c in [item.get("chain")] if c and "hook" in c
    ]


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
    from ..model import Network
    from . import netns
    from .nft import Nft
    from .rtnl import RtnlSocket

    def probe() -> list[str]:
        netns.unshare(netns.CLONE_NEWNET)
        missing = []
        sock = RtnlSocket()
        try:
            for what, make in (("bridge", lambda: sock.create_bridge("probe-br", 1500, "02:4e:00:00:00:01")),):
                try:
                    make()
                except Exception as exc:
                    missing.append(f"{what}: {exc}")
            probe_network = Network(id="0" * 64, name="probe", bridge="probe-br",
                                    subnet=IPv4Network("192.0.2.0/24"), gateway=IPv4Address("192.0.2.1"))
            try:
                Nft().transaction(render.render_add_network(probe_network))
            except Exception as exc:
                missing.append(f"nftables ruleset: {exc}")
        finally:
            sock.close()
        return missing

    return netns.in_thread(probe)


def host_links() -> dict[str, Any]:
    """Every link of the host with its kind, master, state and IPv4 addresses."""
    from pyroute2 import IPRoute

    from ..reconcile import LinkState

    with IPRoute() as ipr:
        links = list(ipr.get_links())
        addresses: dict[int, set[str]] = {}
        for addr in ipr.get_addr(family=socket.AF_INET):
            addresses.setdefault(addr["index"], set()).add(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}")
    names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in links}
    found = {}
    for link in links:
        info = link.get_attr("IFLA_LINKINFO")
        kind = (info.get_attr("IFLA_INFO_KIND") if info else None) or ""
        port = info.get_attr("IFLA_INFO_SLAVE_DATA") if info else None
        found[names[link["index"]]] = LinkState(
            kind=kind, master=names.get(link.get_attr("IFLA_MASTER")), up=bool(link["flags"] & 1),
            addresses=frozenset(addresses.get(link["index"], ())),
            isolated=bool(port.get_attr("IFLA_BRPORT_ISOLATED")) if port else False,
        )
    return found


def nsnet_elements() -> frozenset[str] | None:
    """The elements of nsnet's sets and maps, or None when its inet table does not exist."""
    from ..firewall import names
    from ..reconcile import element_key
    from .nft import Nft

    listing = Nft().list_ruleset()
    tables = {(t["table"]["family"], t["table"]["name"]) for t in listing if "table" in t}
    if (names.FAMILY, names.TABLE) not in tables:
        return None
    keys = set()
    for item in listing:
        body = item.get("set") or item.get("map")
        if body and body["table"] == names.TABLE and body["family"] in (names.FAMILY, names.BRIDGE_FAMILY):
            keys.update(element_key(body["family"], body["name"], e) for e in body.get("elem", []))
    return frozenset(keys)


def sandbox_interfaces(path: str) -> tuple[dict[str, frozenset[str]], tuple[str, str] | None]:
    """Inside one sandbox: each interface's IPv4 addresses, and the default route (gateway,
    device). Read in a helper thread that enters the namespace, pyroute2 and all."""
    from pyroute2 import IPRoute

    from . import netns

    def inside() -> tuple[dict[str, frozenset[str]], tuple[str, str] | None]:
        with IPRoute() as ipr:
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            addresses: dict[str, set[str]] = {name: set() for name in names.values()}
            for addr in ipr.get_addr(family=socket.AF_INET):
                addresses[names[addr["index"]]].add(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}")
            defaults = [(str(r.get_attr("RTA_GATEWAY")), names.get(r.get_attr("RTA_OIF"), ""))
                        for r in ipr.get_routes(family=socket.AF_INET)
                        if r["dst_len"] == 0 and (r.get_attr("RTA_TABLE") or r["table"]) == 254]
        return {n: frozenset(a) for n, a in addresses.items()}, (defaults[0] if defaults else None)

    return netns.in_netns(path, inside)
