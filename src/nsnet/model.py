"""The plain data nsnet works with: what a user asks for and what exists.

Every object here is a frozen dataclass with no behaviour beyond describing itself; the engine
returns them, the planner reads them, the store persists them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

DEFAULT_NETWORK = "nsnet"
DEFAULT_MTU = 1500


@dataclass(frozen=True)
class NetworkRequest:
    """A validated `network create`; subnet and gateway may still be left to IPAM."""

    name: str
    subnet: IPv4Network | None = None
    gateway: IPv4Address | None = None
    ip_range: IPv4Network | None = None
    internal: bool = False
    mtu: int = DEFAULT_MTU
    icc: bool = True
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    bridge: str
    subnet: IPv4Network
    gateway: IPv4Address
    ip_range: IPv4Network | None = None
    internal: bool = False
    mtu: int = DEFAULT_MTU
    icc: bool = True
    labels: tuple[tuple[str, str], ...] = ()
    created: float = 0.0
    state: str = "ready"

    @property
    def gateway_interface(self) -> IPv4Interface:
        return IPv4Interface(f"{self.gateway}/{self.subnet.prefixlen}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "Name": self.name,
            "Driver": "bridge",
            "Bridge": self.bridge,
            "Subnet": str(self.subnet),
            "Gateway": str(self.gateway),
            "IPRange": str(self.ip_range) if self.ip_range else None,
            "Internal": self.internal,
            "ICC": self.icc,
            "MTU": self.mtu,
            "Labels": dict(self.labels),
            "Created": self.created,
            "State": self.state,
        }


@dataclass(frozen=True)
class PortMapping:
    """One published port: host address (None: all of them) and port, to the sandbox's port."""

    host_ip: IPv4Address | None
    host_port: int
    sandbox_port: int
    protocol: str = "tcp"

    def __str__(self) -> str:
        return f"{self.sandbox_port}/{self.protocol} -> {self.host_ip or '0.0.0.0'}:{self.host_port}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "HostIp": str(self.host_ip) if self.host_ip else "0.0.0.0",
            "HostPort": self.host_port,
            "SandboxPort": self.sandbox_port,
            "Protocol": self.protocol,
        }


@dataclass(frozen=True)
class Endpoint:
    """One sandbox attached to one network: a veth pair, its MAC and its address."""

    id: str
    sandbox: str
    network: str
    ifname: str
    host_ifname: str
    mac: str
    address: IPv4Interface
    gateway: IPv4Address
    default_route: bool = False
    state: str = "ready"
    ports: tuple[PortMapping, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "EndpointId": self.id,
            "Network": self.network,
            "Interface": self.ifname,
            "HostInterface": self.host_ifname,
            "MacAddress": self.mac,
            "IPAddress": str(self.address.ip),
            "IPPrefixLen": self.address.network.prefixlen,
            "Gateway": str(self.gateway),
            "DefaultRoute": self.default_route,
            "Ports": [p.to_dict() for p in self.ports],
        }


@dataclass(frozen=True)
class Sandbox:
    id: str
    name: str
    netns: str
    endpoints: tuple[Endpoint, ...] = field(default=())
    created: float = 0.0
    state: str = "ready"

    def endpoint(self, network: str) -> Endpoint | None:
        return next((e for e in self.endpoints if e.network == network), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "Name": self.name,
            "NetNS": self.netns,
            "Created": self.created,
            "State": self.state,
            "Networks": {e.network: e.to_dict() for e in self.endpoints},
        }


@dataclass(frozen=True)
class Owner:
    """What marks a ledger's kernel objects as its own, so two ledgers on one host (two state
    directories) never take each other's: its nftables tables' name, and the interface group
    (IFLA_GROUP) of every bridge and host-side veth it makes."""

    table: str = "nsnet"
    group: int = 0x4E000001
