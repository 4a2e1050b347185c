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
