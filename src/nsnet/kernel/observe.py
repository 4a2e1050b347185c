"""Reading kernel state that is not on a hot path, through pyroute2's full netlink parser.

Imported only when needed: pyroute2 costs ~80-190 ms to import.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Network

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
