"""The only code that touches the system: netlink, nftables, sysctls, namespaces, processes.

`Kernel` is the boundary the planner's operations call; `LinuxKernel` is the real thing and
`FakeKernel` (kernel/fake.py) a model of it for tests that need no root. A method's `sandbox`
argument names the namespace to act in; None is the host, the namespace nsnet runs in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping

TYPE_CHECKING = False  # typing's import is 5 ms of a CNI plugin's start-up
if TYPE_CHECKING:  # annotations only: a create must not pay for importing doctor and reconcile
    from typing import Any

    from ..doctor import HostFacts
    from ..model import IPAddress, IPInterface, IPNetwork, Owner
    from ..publish import HolderLookup, Listener
    from ..reconcile import Observed, Ruleset
    from ..shaping import Qdisc


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
    def replace_etc_file(self, sandbox: str, filename: str, text: str | None) -> None:
        """One of the sandbox's files under /etc/netns replaced at once, or removed (None)."""
    @abstractmethod
    def read_etc_file(self, sandbox: str, filename: str) -> str | None:
        """One of the sandbox's files under /etc/netns; None when it is not there."""
    @abstractmethod
    def sandbox_paths_taken(self, sandbox: str) -> list[str]:
        """The paths a new sandbox needs (/run/netns/NAME, /etc/netns/NAME) that exist already."""

    # Links, addresses, routes. Each method is one kernel change, so that an operation's undo
    # covers all it did. `group` is the ledger's interface group (model.Owner).
    @abstractmethod
    def create_bridge(self, name: str, mtu: int, mac: str, group: int) -> None: ...
    @abstractmethod
    def create_veth(self, name: str, bridge: str, sandbox: str, peer: str, mtu: int, mac: str, group: int) -> None:
        """The pair, its host end up on the bridge, its peer (down) inside the sandbox."""
    @abstractmethod
    def create_macvlan(self, name: str, parent: str, sandbox: str, mode: str, mtu: int, mac: str, group: int) -> None:
        """A macvlan child of the host's interface `parent`, born (down) inside the sandbox as `name`."""
    @abstractmethod
    def link_kind_missing(self, kind: str) -> str | None:
        """Why this kernel cannot make a link of `kind` (macvlan, ipvlan) on a parent; None if it can."""
    @abstractmethod
    def create_tap(self, name: str, uid: int | None, gid: int | None) -> None:
        """A persistent tap (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR), owned by uid and gid when given,
        that no process holds: it stays when nsnet closes it, until deleted."""
    def flood_limit(self) -> int | None:
        """How many ports of one bridge a broadcast can reach before the kernel drops copies;
        None: no limit beyond the bridge's own."""
        return None

    # The resolver (nsnet.dns), a process of this namespace.
    @abstractmethod
    def set_link_dns(self, link: str, servers: list[str], domains: list[str]) -> None:
        """The host's own resolver (systemd-resolved) asks `servers` for names under `domains`
        through this link, and nothing else: a setting of the link, gone with it."""

    @abstractmethod
    def dns_port(self, gateways: list[str], ours: set[str]) -> int | None:
        """The port a network's resolver can listen on at all its gateways: 53 unless another
        program holds it there, then an alternate one; None when none is free. `ours`: the
        resolver's own listeners (ADDRESS:PORT), which are not another program's."""
    @abstractmethod
    def sync_resolver(self, state_dir: str, wanted: bool) -> None:
        """Have the ledger's resolver serve it as it is now: reload a running one, start one when
        none runs and `wanted` (the ledger has DNS networks)."""
    @abstractmethod
    def resolver_status(self, state_dir: str) -> str | None:
        """A running resolver's status line (`ok GENERATION PID ADDRESSES...`); None: none runs."""
    @abstractmethod
    def link_mac(self, name: str) -> str | None:
        """A host link's hardware address; None when there is no such link."""
    @abstractmethod
    def set_port_flags(self, name: str, isolated: bool) -> None:
        """A sandbox port's bridge flags: hairpin, no learning, locked, and isolation (--no-icc)."""
    @abstractmethod
    def add_fdb_entry(self, port: str, mac: str) -> None:
        """A static, sticky FDB entry: mac lives on port."""
    @abstractmethod
    def disable_ipv6(self, ifname: str) -> None:
        """On a host interface nsnet has just made (whose value is the kernel's default)."""
    @abstractmethod
    def enable_ipv6(self, ifname: str, sandbox: str) -> None:
        """On a sandbox's interface (down, just made): IPv6 on, no DAD, no router advertisements,
        EUI-64 link-local."""
    @abstractmethod
    def set_link_up(self, name: str, sandbox: str | None = None) -> None: ...
    @abstractmethod
    def set_mtu(self, name: str, mtu: int, sandbox: str | None = None) -> None: ...
    @abstractmethod
    def set_mac(self, name: str, mac: str, sandbox: str | None = None) -> None: ...
    @abstractmethod
    def set_group(self, name: str, group: int) -> None: ...
    @abstractmethod
    def delete_link(self, name: str, sandbox: str | None = None) -> None: ...
    @abstractmethod
    def attach_to_bridge(self, name: str, bridge: str) -> None: ...
    @abstractmethod
    def add_address(self, ifname: str, address: IPInterface, sandbox: str | None = None) -> None: ...
    @abstractmethod
    def delete_address(self, ifname: str, address: IPInterface, sandbox: str | None = None) -> None: ...
    @abstractmethod
    def replace_default_route(self, gateway: IPAddress, ifname: str, sandbox: str) -> None: ...
    @abstractmethod
    def delete_default_route(self, sandbox: str, version: int = 4) -> None: ...

    # Firewall and sysctls
    @abstractmethod
    def nft(self, commands: list[dict[str, Any]]) -> None: ...
    @abstractmethod
    def forget_udp_flows(self, address: str, ports: list[int], keep: set[str]) -> int:
        """Delete the UDP conntrack entries to address:port (one of ports) whose replies come from
        an address not in `keep` (a backend gone); how many."""
    @abstractmethod
    def add_route(self, sandbox: str, dst: IPNetwork, via: IPAddress) -> None:
        """A static route inside the sandbox (main table, protocol static)."""
    @abstractmethod
    def delete_route(self, sandbox: str, dst: IPNetwork, via: IPAddress) -> None: ...
    @abstractmethod
    def create_pair(self, sandbox: str, ifname: str, peer_sandbox: str, peer: str, mtu: int) -> None:
        """A veth pair from inside one sandbox, its peer (down) inside another."""
    @abstractmethod
    def forget_picks(self, table: str, vip: str, keep: set[str] | None) -> int:
        """Delete the affinity entries (firewall.names.SERVICE_AFFINITY) of clients of this VIP
        whose backend is not in `keep` (every one: None); how many."""
    @abstractmethod
    def sandbox_nft(self, sandbox: str, commands: list[dict[str, Any]]) -> None:
        """One atomic nftables transaction inside the sandbox's namespace."""
    @abstractmethod
    def sandbox_table(self, sandbox: str, table: str) -> list[dict[str, Any]] | None:
        """The JSON listing of one inet table inside the sandbox's namespace; None: no such table."""
    @abstractmethod
    def ensure_sysctl(self, key: str, value: str, sandbox: str | None = None) -> str | None:
        """Set key to value (inside the sandbox's namespace, when given); the value it had when it
        had to change, None when it had it already."""
    @abstractmethod
    def write_sysctl(self, key: str, value: str) -> None: ...

    # Shaping (nsnet.shaping): a device's root qdisc, in a sandbox or (None) the host
    @abstractmethod
    def set_qdisc(self, sandbox: str | None, ifname: str, qdisc: Qdisc) -> None:
        """The device's root qdisc replaced by this one (and its child)."""
    @abstractmethod
    def clear_qdisc(self, sandbox: str | None, ifname: str) -> None:
        """The device back to the kernel's default root qdisc (done when it has it already)."""
    @abstractmethod
    def root_qdisc(self, sandbox: str | None, ifname: str) -> str | None:
        """The device's root qdisc as Qdisc.summary says it; None: the kernel's default, or no device."""
    @abstractmethod
    def qdisc_modules(self) -> frozenset[str]:
        """Which of the shaping modules (sch_netem, sch_tbf) the kernel has, probed for real
        without changing anything of the host's."""

    # Overlay networks (nsnet.cluster, kernel.vxlan), in the host's namespace
    @abstractmethod
    def create_vxlan(self, name: str, vni: int, port: int, local: str, underlay: str, mtu: int, mac: str,
                     group: int) -> None: ...
    @abstractmethod
    def replace_neighbour(self, device: str, address: str, mac: str) -> None: ...
    @abstractmethod
    def delete_neighbour(self, device: str, address: str, mac: str) -> None:
        """Done when it is gone already (as every overlay delete)."""
    @abstractmethod
    def replace_fdb(self, device: str, mac: str, destination: str) -> None: ...
    @abstractmethod
    def delete_fdb(self, device: str, mac: str, destination: str) -> None: ...
    @abstractmethod
    def replace_onlink_route(self, destination: str, via: str, device: str) -> None: ...
    @abstractmethod
    def delete_onlink_route(self, destination: str, via: str, device: str) -> None: ...
    @abstractmethod
    def replace_unreachable(self, destination: str) -> None: ...
    @abstractmethod
    def delete_unreachable(self, destination: str) -> None: ...
    @abstractmethod
    def overlay_entries(self, device: str) -> dict[str, set[tuple[str, ...]]] | None:
        """A VXLAN device's permanent neighbours (address, MAC), FDB entries (MAC, destination)
        and routes (destination, via); None when there is no such device."""
    @abstractmethod
    def unreachable_routes(self) -> set[str]: ...

    # Observation
    @abstractmethod
    def host_routes(self) -> list[tuple[IPNetwork, str]]:
        """(destination, device) of the host's routes in both families, but default, local,
        link-local and multicast ones."""
    @abstractmethod
    def router_advertisement_takers(self) -> list[str]:
        """The host's interfaces (and `default`) that take router advertisements only while IPv6
        forwarding is off (accept_ra 1 and forwarding 0): switching forwarding on would cut them
        off their IPv6 default route."""
    @abstractmethod
    def listeners(self) -> list[Listener]: ...
    @abstractmethod
    def ephemeral_ports(self) -> range: ...
    @abstractmethod
    def port_holders(self) -> HolderLookup:
        """Answers, port by port, whether a host process holds it (publish.HolderLookup)."""
    @abstractmethod
    def observe(self, sandboxes: Mapping[str, Iterable[str]], owner: Owner, sysctls: Iterable[str]) -> Observed:
        """What exists of the owner's: host links, pinned namespaces, the given interfaces inside
        each given sandbox, its nftables tables, ip_forward and the given sysctls (those that
        exist)."""
    @abstractmethod
    def expected_ruleset(self, commands: list[dict[str, Any]], owner: Owner) -> Ruleset:
        """The ruleset the kernel makes of these commands (the owner's skeleton), read back from a
        throwaway namespace, in the form observe() reports it."""
    @abstractmethod
    def host_facts(self) -> HostFacts:
        """What `nsnet doctor` judges: read-only observations of the host."""

    def release_sandboxes(self) -> None:
        """Let go of whatever is held inside sandboxes (sockets), which would keep a namespace
        that another process removes, and its veth, alive."""

    def close(self) -> None:
        """Release sockets and handles."""


def default_kernel() -> Kernel:
    """The real kernel, loaded on first use."""
    from .linux import LinuxKernel

    return LinuxKernel()
