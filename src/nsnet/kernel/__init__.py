"""The only code that touches the system: netlink, nftables, sysctls, namespaces, processes.

`Kernel` is the boundary the planner's operations call; `LinuxKernel` is the real thing and
`FakeKernel` (kernel/fake.py) a model of it for tests that need no root. A method's `sandbox`
argument names the namespace to act in; None is the host, the namespace nsnet runs in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: a create must not pay for importing doctor and reconcile
    from ..doctor import HostFacts
    from ..publish import HolderLookup, Listener
    from ..reconcile import Observed


class Kernel(ABC):
    # Namespaces
    @abstractmethod
    def create_netns(self, sandbox: str) -> None: ...
    @abstractmethod
    def delete_netns(self, sandbox: str) -> None: ...
    @abstractmethod
    def netns_exists(self, sandbox: str) -> bool: ...
    @abstractmethod
    def pids_in_netns(self, sandbox: str) -> list[int]: ...
    @abstractmethod
    def kill(self, pids: list[int]) -> None: ...
    @abstractmethod
    def write_etc_files(self, sandbox: str, files: dict[str, str]) -> None: ...
    @abstractmethod
    def remove_etc_files(self, sandbox: str) -> None: ...
    @abstractmethod
    def sandbox_paths_taken(self, sandbox: str) -> list[str]:
        """The paths a new sandbox needs (/run/netns/NAME, /etc/netns/NAME) that exist already."""

    # Links, addresses, routes
    @abstractmethod
    def create_bridge(self, name: str, mtu: int, mac: str) -> None: ...
    @abstractmethod
    def create_veth(self, name: str, bridge: str, sandbox: str, peer: str, mtu: int, mac: str,
                    isolated: bool = False) -> None: ...
    @abstractmethod
    def delete_link(self, name: str, sandbox: str | None = None) -> None: ...
    @abstractmethod
    def attach_to_bridge(self, name: str, bridge: str, isolated: bool = False) -> None: ...
    @abstractmethod
    def add_address(self, ifname: str, address: IPv4Interface, sandbox: str | None = None) -> None: ...
    @abstractmethod
    def delete_address(self, ifname: str, address: IPv4Interface, sandbox: str | None = None) -> None: ...
    @abstractmethod
    def replace_default_route(self, gateway: IPv4Address, ifname: str, sandbox: str) -> None: ...
    @abstractmethod
    def delete_default_route(self, sandbox: str) -> None: ...

    # Firewall and sysctls
    @abstractmethod
    def nft(self, commands: list[dict[str, Any]]) -> None: ...
    @abstractmethod
    def ensure_sysctl(self, key: str, value: str) -> bool: ...

    # Observation
    @abstractmethod
    def host_routes(self) -> list[tuple[IPv4Network, str]]: ...
    @abstractmethod
    def listeners(self) -> list[Listener]: ...
    @abstractmethod
    def ephemeral_ports(self) -> range: ...
    @abstractmethod
    def port_holders(self) -> HolderLookup:
        """Answers, port by port, whether a host process holds it (publish.HolderLookup)."""
    @abstractmethod
    def observe(self, sandboxes: Mapping[str, Iterable[str]]) -> Observed:
        """What exists of nsnet's: host links, pinned namespaces, the given interfaces inside each
        given sandbox, nsnet's nft elements, ip_forward."""
    @abstractmethod
    def host_facts(self) -> HostFacts:
        """What `nsnet doctor` judges: read-only observations of the host."""

    def close(self) -> None:
        """Release sockets and handles."""


def default_kernel() -> Kernel:
    """The real kernel, loaded on first use."""
    from .linux import LinuxKernel

    return LinuxKernel()
