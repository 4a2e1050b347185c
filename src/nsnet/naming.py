"""Names and addresses of the kernel objects nsnet makes, derived so that they say who owns them.

Interface names must fit IFNAMSIZ (15 characters). Bridges are `nsbr-<10 hex of the network id>`,
host-side veths `nsv<12 hex of the endpoint id>`: unique, recognisable as nsnet's, and never
derived from user input, so a user name can never collide with or spell an interface name.
"""

from __future__ import annotations

import os
from ipaddress import IPv4Address, IPv6Address

TYPE_CHECKING = False  # typing's import is 5 ms of a CNI plugin's start-up
if TYPE_CHECKING:
    from .model import Network

NETNS_DIR = "/run/netns"
ETC_NETNS_DIR = "/etc/netns"
BRIDGE_PREFIX = "nsbr-"
VXLAN_PREFIX = "nsvx-"
VETH_PREFIX = "nsv"
TAP_PREFIX = "nst"
IFNAMSIZ = 15


def new_id() -> str:
    return os.urandom(32).hex()  # as random as secrets.token_hex, without importing hashlib


def bridge_name(network_id: str) -> str:
    return BRIDGE_PREFIX + network_id[: IFNAMSIZ - len(BRIDGE_PREFIX)]


def vxlan_name(network_id: str) -> str:
    """An overlay network's VXLAN device (nsnet.cluster), beside its bridge."""
    return VXLAN_PREFIX + network_id[: IFNAMSIZ - len(VXLAN_PREFIX)]


def host_veth_name(endpoint_id: str) -> str:
    return VETH_PREFIX + endpoint_id[: IFNAMSIZ - len(VETH_PREFIX)]


def tap_name(endpoint_id: str) -> str:
    """A VM guest's tap device: `nst<12 hex of the endpoint id>` (nsnet.taps)."""
    return TAP_PREFIX + endpoint_id[: IFNAMSIZ - len(TAP_PREFIX)]


def tap_mac(guest_mac: str) -> str:
    """The tap device's own MAC: the guest's with 0xfe as first byte, as libvirt sets it, so the
    bridge never takes the tap for the guest ("received packet on vnetX with own address as
    source address")."""
    return "fe" + guest_mac[2:]


def sandbox_ifname(used: set[str] | frozenset[str]) -> str:
    """eth0, eth1, ...: the lowest index not used in the sandbox."""
    index = 0
    while f"eth{index}" in used:
        index += 1
    return f"eth{index}"


def mac_for(address: IPv4Address | IPv6Address | None) -> str:
    """A locally administered, unicast MAC. From an IPv4 address, stable: 02:4e ('N') followed by
    the address. Addresses are unique across nsnet's networks (subnets never overlap), so the
    MACs are too, and a sandbox that gets the same address back gets the same MAC, so peers' ARP
    caches stay right. On an IPv6-only network (address None, or IPv6), random under 0a:4e: 32
    bits of an IPv6 address could be chosen (--ip6) to equal a neighbour's, and a MAC names the
    bridge port it is pinned to."""
    if isinstance(address, IPv4Address):
        return "02:4e:" + ":".join(f"{b:02x}" for b in address.packed)
    return "0a:4e:" + ":".join(f"{b:02x}" for b in os.urandom(4))


def bridge_mac(network: Network) -> str:
    """A network's bridge MAC: from its IPv4 gateway, or (IPv6 only) from its id under 0a:4f:,
    apart from the sandboxes' random ones."""
    if network.ipv4 is not None:
        return mac_for(network.ipv4.gateway)
    return "0a:4f:" + ":".join(network.id[i:i + 2] for i in range(0, 8, 2))


def link_local(mac: str) -> IPv6Address:
    """The EUI-64 link-local address the kernel gives an interface with this MAC (addr_gen_mode 0)."""
    octets = bytes(int(part, 16) for part in mac.split(":"))
    interface_id = bytes([octets[0] ^ 0x02]) + octets[1:3] + b"\xff\xfe" + octets[3:]
    return IPv6Address(b"\xfe\x80" + bytes(6) + interface_id)


def netns_path(sandbox: str) -> str:
    return os.path.join(NETNS_DIR, sandbox)


def etc_netns_dir(sandbox: str) -> str:
    return os.path.join(ETC_NETNS_DIR, sandbox)
