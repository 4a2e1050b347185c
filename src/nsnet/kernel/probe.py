"""Sockets made inside a sandbox's network namespace, for probes (nsnet.topology.verify).

A socket belongs to the namespace it was made in, whichever thread uses it later: it is made in
a short-lived helper thread that entered the namespace (netns.in_netns), and used from the caller.
"""

from __future__ import annotations

import socket

from .netns import in_netns


def socket_in(netns_path: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket of the namespace pinned at netns_path; "" (a --network host sandbox's): of the
    namespace nsnet runs in."""
    if not netns_path:
        return socket.socket(family, kind, proto)
    return in_netns(netns_path, lambda: socket.socket(family, kind, proto))
