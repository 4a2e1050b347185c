"""This host in the cluster: its id, its VTEP (the underlay address and interface the cluster is
reached through) and the VTEP MAC of each overlay network."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import socket
import struct
from dataclasses import dataclass

from ..errors import InvalidInput, NsnetError

HOST_ID_FILE = "host-id"
HOST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
SIOCGIFADDR = 0x8915
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8 (IPv4 underlay)


@dataclass(frozen=True)
class Underlay:
    vtep_ip: str
    device: str
    mtu: int

    @property
    def overlay_mtu(self) -> int:
        return self.mtu - VXLAN_OVERHEAD


def host_id(state_dir: str) -> str:
    """NSNET_HOST_ID, else the id this ledger was given the first time (its host name then)."""
    wanted = os.environ.get("NSNET_HOST_ID")
    if wanted:
        if not HOST_ID.fullmatch(wanted):
            raise InvalidInput("NSNET_HOST_ID", wanted, "use letters, digits, '.', '_' and '-' (at most 63)")
        return wanted
    path = os.path.join(state_dir, HOST_ID_FILE)
    try:
        with open(path) as handle:
            return handle.read().strip()
    except FileNotFoundError:
        pass
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:63].lstrip("-_.") or "host"
    with open(path + ".new", "w") as handle:
        handle.write(name + "\n")
    os.replace(path + ".new", path)
    return name


def vtep_mac(host: str, vni: int) -> str:
    """Stable across restarts without being stored (flannel #1795): locally administered, unicast."""
    digest = hashlib.sha256(f"{host}/{vni}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def underlay(endpoints: list[tuple[str, int]]) -> Underlay:
    """The interface and address this host reaches the cluster store through (as flannel picks the
    interface of its default route), unless NSNET_CLUSTER_IFACE names one."""
    device = os.environ.get("NSNET_CLUSTER_IFACE")
    if device:
        address = _ipv4_of(device)
        if address is None:
            raise InvalidInput("NSNET_CLUSTER_IFACE", device, "no such interface with an IPv4 address here")
        return Underlay(address, device, _mtu(device))
    host, port = endpoints[0]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, port))  # a route lookup: UDP's connect sends nothing
            address = probe.getsockname()[0]
    except OSError as exc:
        raise NsnetError(f"cluster store unavailable: no route to {host} ({exc.strerror})") from exc
    for _, name in socket.if_nameindex():
        if _ipv4_of(name) == address:
            return Underlay(address, name, _mtu(name))
    raise NsnetError(f"no interface holds {address}, this host's address towards {host}")


def _ipv4_of(device: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("256s", device.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def _mtu(device: str) -> int:
    with open(f"/sys/class/net/{device}/mtu") as handle:
        return int(handle.read())
