"""Names and addresses of the kernel objects nsnet makes, derived so that they say who owns them.

Interface names must fit IFNAMSIZ (15 characters). Bridges are `nsbr-<10 hex of the network id>`,
host-side veths `nsv<12 hex of the endpoint id>`: unique, recognisable as nsnet's, and never
derived from user input, so a user name can never collide with or spell an interface name.
"""

from __future__ import annotations

import os
from ipaddress import IPv4Address

NETNS_DIR = "/run/netns"
ETC_NETNS_DIR = "/etc/netns"
BRIDGE_PREFIX = "nsbr-"
VETH_PREFIX = "nsv"
IFNAMSIZ = 15


def new_id() -> str:
    return os.urandom(32).hex()  # as random as secrets.token_hex, without importing hashlib


def bridge_name(network_id: str) -> str:
    return BRIDGE_PREFIX + network_id[: IFNAMSIZ - len(BRIDGE_PREFIX)]


def host_veth_name(endpoint_id: str) -> str:
    return VETH_PREFIX + endpoint_id[: IFNAMSIZ - len(VETH_PREFIX)]


def sandbox_ifname(used: set[str] | frozenset[str]) -> str:
    """eth0, eth1, ...: the lowest index not used in the sandbox."""
    index = 0
    while f"eth{index}" in used:
        index += 1
    return f"eth{index}"


def mac_for(address: IPv4Address) -> str:
    """A stable, locally administered, unicast MAC: 02:4e ('N') followed by the IPv4 address.

    Addresses are unique across nsnet's networks (subnets never overlap), so the MACs are too, and a
    sandbox that gets the same address back gets the same MAC, so peers' ARP caches stay right.
    """
    return "02:4e:" + ":".join(f"{b:02x}" for b in address.packed)


def netns_path(sandbox: str) -> str:
    return os.path.join(NETNS_DIR, sandbox)


def etc_netns_dir(sandbox: str) -> str:
    return os.path.join(ETC_NETNS_DIR, sandbox)
