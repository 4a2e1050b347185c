"""The real kernel: nsnet's rtnetlink client, libnftables, /proc/sys and namespace syscalls."""

from __future__ import annotations

import errno
import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping

from ..errors import KernelError, NsnetError
from . import Kernel, netns, sysctl

TYPE_CHECKING = False  # typing's import is 5 ms of a CNI plugin's start-up
if TYPE_CHECKING:
    from typing import Any

    from ..doctor import HostFacts
    from ..model import IPAddress, IPInterface, IPNetwork, Owner
    from ..publish import HolderLookup, Listener
    from ..shaping import Qdisc
    from .state import Observed, Ruleset
from .nft import Nft
from .rtnl import RtnlSocket

LOOPBACK_INDEX = 1


# Sockets into sandboxes are kept for the few most recent ones: an operation sends several
# messages to one sandbox, but keeping one per sandbox would exhaust file descriptors.
SANDBOX_SOCKETS = 8


DEFAULT_NETDEV_MAX_BACKLOG = 1000  # the kernel's

class LinuxKernel(Kernel):
    def __init__(self) -> None:
        self._host: RtnlSocket | None = None
        self._sandboxes: OrderedDict[str, _Inside] = OrderedDict()
        self._nft = Nft()
        self._host_ipv6_conf: sysctl.Directory | None = None  # see sysctl.Directory
        self._qdisc_modules: frozenset[str] | None = None  # probed once (tc.qdisc_modules)

    def _rtnl(self, sandbox: str | None) -> RtnlSocket:
        if sandbox is None:
            if self._host is None:
                self._host = RtnlSocket()
            return self._host
        return self._inside(sandbox).sock

    def _inside(self, sandbox: str) -> _Inside:
        inside = self._sandboxes.get(sandbox)
        if inside is None:
            inside = netns.in_netns(netns.path_of(sandbox), _Inside.open)
            self._keep(sandbox, inside)
        self._sandboxes.move_to_end(sandbox)
        return inside

    def _keep(self, sandbox: str, inside: _Inside) -> None:
        self._sandboxes[sandbox] = inside
        while len(self._sandboxes) > SANDBOX_SOCKETS:
            self._sandboxes.popitem(last=False)[1].close()

    def _forget(self, sandbox: str) -> None:
        inside = self._sandboxes.pop(sandbox, None)
        if inside is not None:
            inside.close()

    # Namespaces

    def create_netns(self, sandbox: str) -> None:
        def inside() -> _Inside:
            # Interfaces added to the sandbox start without IPv6, as Docker's on networks without
            # IPv6; EnableIPv6 turns it on, without DAD or router advertisements, on a network
            # that has it. Otherwise each new veth's duplicate address detection, router
            # solicitations and MLD reports flood every port of the bridge (the main cost growth
            # at 1,000 sandboxes). lo exists already and keeps ::1.
            sysctl.write("net.ipv6.conf.default.disable_ipv6", "1")  # a new namespace: the default is 0
            made = _Inside.open()
            made.sock.set_up(LOOPBACK_INDEX, "lo")
            return made

        self._forget(sandbox)
        self._keep(sandbox, netns.create(sandbox, inside))

    def delete_netns(self, sandbox: str) -> None:
        self._forget(sandbox)
        netns.delete(sandbox)

    def netns_exists(self, sandbox: str) -> bool:
        return netns.exists(sandbox)

    def pids_in_netns(self, sandbox: str) -> list[int]:
        return netns.pids_inside(sandbox)

    def kill(self, pids: list[int]) -> None:
        netns.kill(pids)

    def write_etc_files(self, sandbox: str, files: dict[str, str]) -> None:
        netns.write_etc_files(sandbox, files)

    def remove_etc_files(self, sandbox: str) -> None:
        netns.remove_etc_files(sandbox)

    def replace_etc_file(self, sandbox: str, filename: str, text: str | None) -> None:
        netns.replace_etc_file(sandbox, filename, text)

    def read_etc_file(self, sandbox: str, filename: str) -> str | None:
        return netns.read_etc_file(sandbox, filename)

    def sandbox_paths_taken(self, sandbox: str) -> list[str]:
        return netns.paths_taken(sandbox)

    # Links, addresses, routes

    def create_bridge(self, name: str, mtu: int, mac: str, group: int) -> None:
        self._rtnl(None).create_bridge(name, mtu, mac, group)

    def create_veth(self, name: str, bridge: str, sandbox: str, peer: str, mtu: int, mac: str, group: int) -> None:
        host = self._rtnl(None)
        # A runtime's path may be /proc/PID/ns/net, a link to follow; nsnet's own are never links.
        fd = os.open(netns.path_of(sandbox), os.O_RDONLY | os.O_CLOEXEC | (0 if sandbox.startswith("/") else os.O_NOFOLLOW))
        try:
            host.create_veth(name, host.link_index(bridge), mtu, peer, fd, mac, group)
        finally:
            os.close(fd)

    def create_macvlan(self, name: str, parent: str, sandbox: str, mode: str, mtu: int, mac: str, group: int) -> None:
        from ..drivers import MACVLAN_MODES

        host = self._rtnl(None)
        fd = os.open(netns.path_of(sandbox), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            host.create_child("macvlan", name, host.link_index(parent), mtu, mac, MACVLAN_MODES[mode], fd, group)
        finally:
            os.close(fd)

    def link_kind_missing(self, kind: str) -> str | None:
        from . import observe

        return observe.link_kind_missing(kind)

    def create_tap(self, name: str, uid: int | None, gid: int | None) -> None:
        from .tap import create_tap

        create_tap(name, uid, gid)

    def add_route(self, sandbox: str, dst: IPNetwork, via: IPAddress) -> None:
        self._rtnl(sandbox).add_route(dst, via, f"sandbox {sandbox}")

    def delete_route(self, sandbox: str, dst: IPNetwork, via: IPAddress) -> None:
        self._rtnl(sandbox).delete_route(dst, via, f"sandbox {sandbox}")

    def create_pair(self, sandbox: str, ifname: str, peer_sandbox: str, peer: str, mtu: int) -> None:
        fd = os.open(netns.path_of(peer_sandbox), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            self._rtnl(sandbox).create_veth(ifname, 0, mtu, peer, fd, None, 0)
        finally:
            os.close(fd)

    def link_mac(self, name: str) -> str | None:
        return self._rtnl(None).link_mac(name)

    def flood_limit(self) -> int | None:
        # A veth hands each frame it carries to the per-CPU backlog, which holds at most
        # netdev_max_backlog frames: a bridge flooding an ARP request to more ports than that in
        # one go drops the last copies (softnet_stat's dropped count), and the sandboxes on
        # those ports stop being reachable. The setting is the whole machine's, shown only in its
        # first network namespace: elsewhere (a lab) it is taken to be the kernel's default.
        try:
            return int(_read_or("net.core.netdev_max_backlog", str(DEFAULT_NETDEV_MAX_BACKLOG)))
        except ValueError:
            return None

    def set_link_dns(self, link: str, servers: list[str], domains: list[str]) -> None:
        import subprocess

        for argv in (["resolvectl", "dns", link, *servers], ["resolvectl", "domain", link, *domains],
                     ["resolvectl", "default-route", link, "false"]):
            try:
                done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
            except FileNotFoundError:
                raise NsnetError("resolvectl (systemd-resolved) is not installed") from None
            if done.returncode != 0:
                reason = " ".join(done.stderr.split()) or f"exit {done.returncode}"
                raise NsnetError(f"`{' '.join(argv)}` failed: {reason}")

    def dns_port(self, gateways: list[str], ours: set[str]) -> int | None:
        from ..dns import listen

        return listen.port_for(gateways, ours)

    def sync_resolver(self, state_dir: str, wanted: bool) -> None:
        from ..dns import supervise

        supervise.sync(state_dir, wanted)

    def resolver_status(self, state_dir: str) -> str | None:
        from ..dns import supervise

        return supervise.ask(state_dir, "status")

    def set_port_flags(self, name: str, isolated: bool) -> None:
        self._rtnl(None).set_port_flags(name, isolated)

    def add_fdb_entry(self, port: str, mac: str) -> None:
        host = self._rtnl(None)
        host.add_fdb_entry(host.link_index(port), mac, port)

    def disable_ipv6(self, ifname: str) -> None:
        if self._host_ipv6_conf is None:
            self._host_ipv6_conf = sysctl.open_directory("net.ipv6.conf")
        sysctl.write(f"net.ipv6.conf.{ifname}.disable_ipv6", "1", self._host_ipv6_conf)

    def enable_ipv6(self, ifname: str, sandbox: str) -> None:
        # Below the sandbox's own net.ipv6.conf, opened inside it (with its netlink socket), so
        # no thread has to enter the namespace again: /proc/sys/net is the namespace of the
        # thread that opened it.
        under = self._inside(sandbox).ipv6_conf
        for key, value in (("accept_ra", "0"), ("accept_dad", "0"), ("addr_gen_mode", "0"), ("disable_ipv6", "0")):
            sysctl.write(f"net.ipv6.conf.{ifname}.{key}", value, under)

    def set_link_up(self, name: str, sandbox: str | None = None) -> None:
        sock = self._rtnl(sandbox)
        sock.set_up(sock.link_index(name), _where(name, sandbox))

    def set_mtu(self, name: str, mtu: int, sandbox: str | None = None) -> None:
        self._rtnl(sandbox).set_mtu(name, mtu)

    def set_group(self, name: str, group: int) -> None:
        self._rtnl(None).set_group(name, group)

    def set_mac(self, name: str, mac: str, sandbox: str | None = None) -> None:
        self._rtnl(sandbox).set_mac(name, mac)

    def delete_link(self, name: str, sandbox: str | None = None) -> None:
        self._rtnl(sandbox).delete_link(name)

    def attach_to_bridge(self, name: str, bridge: str) -> None:
        host = self._rtnl(None)
        host.set_master(name, host.link_index(bridge))

    def add_address(self, ifname: str, address: IPInterface, sandbox: str | None = None) -> None:
        sock = self._rtnl(sandbox)
        sock.add_address(sock.link_index(ifname), address, _where(ifname, sandbox))

    def delete_address(self, ifname: str, address: IPInterface, sandbox: str | None = None) -> None:
        sock = self._rtnl(sandbox)
        sock.delete_address(sock.link_index(ifname), address, _where(ifname, sandbox))

    def replace_default_route(self, gateway: IPAddress, ifname: str, sandbox: str) -> None:
        sock = self._rtnl(sandbox)
        sock.replace_default_route(gateway, sock.link_index(ifname), f"sandbox {sandbox}")

    def delete_default_route(self, sandbox: str, version: int = 4) -> None:
        self._rtnl(sandbox).delete_default_route(version, f"sandbox {sandbox}")

    # Firewall and sysctls

    def nft(self, commands: list[dict[str, Any]]) -> None:
        self._nft.transaction(commands)

    def forget_udp_flows(self, address: str, ports: list[int], keep: set[str]) -> int:
        import socket

        from pyroute2 import Conntrack
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

        removed = 0
        with Conntrack(nfgen_family=socket.AF_INET6 if ":" in address else socket.AF_INET) as conntrack:
            for entry in list(conntrack.dump_entries(tuple_orig=NFCTAttrTuple(proto=socket.IPPROTO_UDP,
                                                                                daddr=address))):
                original, reply = entry.tuple_orig, entry.tuple_reply
                if original.daddr == address and original.dport in ports and reply.saddr not in keep:
                    conntrack.delete(entry)
                    removed += 1
        return removed

    def forget_picks(self, table: str, vip: str, keep: set[str] | None) -> int:
        from ipaddress import ip_address

        from ..firewall.names import SERVICE_AFFINITY, in_family

        address = ip_address(vip)
        name = in_family(SERVICE_AFFINITY, address.version)
        # An IPv6 entry keys the VIP by its low 64 bits (a number, or hex text, as nft lists it).
        wanted = vip if address.version == 4 else int(address) & (2**64 - 1)
        for _ in range(3):  # an entry may expire between the listing and the deletion
            stale = []
            for key, backend in self._nft.list_elements("inet", table, "map", name):
                value = key["elem"]["val"] if isinstance(key, dict) and "elem" in key else key
                listed = value["concat"][1]
                if address.version == 6 and isinstance(listed, str):
                    listed = int(listed, 16)
                if listed == wanted and (keep is None or backend not in keep):
                    stale.append(value)
            if not stale:
                return 0
            try:
                self._nft.transaction([{"delete": {"element": {"family": "inet", "table": table, "name": name,
                                                               "elem": stale}}}])
                return len(stale)
            except KernelError as exc:
                if exc.code != errno.ENOENT:
                    raise
        raise KernelError(f"forgetting the backends clients of {vip} had", errno.EAGAIN, "entries kept changing")

    def sandbox_nft(self, sandbox: str, commands: list[dict[str, Any]]) -> None:
        # A context of its own, made in the namespace: its netlink socket is that namespace's.
        netns.in_netns(netns.path_of(sandbox), lambda: Nft().transaction(commands))

    def sandbox_table(self, sandbox: str, table: str) -> list[dict[str, Any]] | None:
        return netns.in_netns(netns.path_of(sandbox), lambda: Nft().list_table("inet", table))

    def create_vxlan(self, name: str, vni: int, port: int, local: str, underlay: str, mtu: int, mac: str,
                     group: int) -> None:
        from . import vxlan

        vxlan.create_vxlan(name, vni, port, local, underlay, mtu, mac, group)

    def replace_neighbour(self, device: str, address: str, mac: str) -> None:
        from . import vxlan

        vxlan.replace_neighbour(device, address, mac)

    def delete_neighbour(self, device: str, address: str, mac: str) -> None:
        from . import vxlan

        vxlan.delete_neighbour(device, address, mac)

    def replace_fdb(self, device: str, mac: str, destination: str) -> None:
        from . import vxlan

        vxlan.replace_fdb(device, mac, destination)

    def delete_fdb(self, device: str, mac: str, destination: str) -> None:
        from . import vxlan

        vxlan.delete_fdb(device, mac, destination)

    def replace_onlink_route(self, destination: str, via: str, device: str) -> None:
        from . import vxlan

        vxlan.replace_onlink_route(destination, via, device)

    def delete_onlink_route(self, destination: str, via: str, device: str) -> None:
        from . import vxlan

        vxlan.delete_onlink_route(destination, via, device)

    def replace_unreachable(self, destination: str) -> None:
        from . import vxlan

        vxlan.replace_unreachable(destination)

    def delete_unreachable(self, destination: str) -> None:
        from . import vxlan

        vxlan.delete_unreachable(destination)

    def overlay_entries(self, device: str) -> dict[str, set[tuple[str, ...]]] | None:
        from . import vxlan

        return vxlan.entries(device)

    def unreachable_routes(self) -> set[str]:
        from . import vxlan

        return vxlan.unreachable_routes()

    def set_qdisc(self, sandbox: str | None, ifname: str, qdisc: Qdisc) -> None:
        from . import tc

        tc.set_qdisc(sandbox, ifname, qdisc)

    def clear_qdisc(self, sandbox: str | None, ifname: str) -> None:
        from . import tc

        tc.clear_qdisc(sandbox, ifname)

    def root_qdisc(self, sandbox: str | None, ifname: str) -> str | None:
        from . import tc

        return tc.root_qdisc(sandbox, ifname)

    def qdisc_modules(self) -> frozenset[str]:
        from . import tc

        if self._qdisc_modules is None:
            self._qdisc_modules = tc.qdisc_modules()
        return self._qdisc_modules

    def ensure_sysctl(self, key: str, value: str, sandbox: str | None = None) -> str | None:
        if sandbox is None:
            return sysctl.ensure(key, value)
        # /proc/sys/net is the namespace of the thread that opens it: a helper thread inside.
        return netns.in_netns(netns.path_of(sandbox), lambda: sysctl.ensure(key, value))

    def write_sysctl(self, key: str, value: str) -> None:
        sysctl.write(key, value)

    def host_routes(self) -> list[tuple[IPNetwork, str]]:
        from .observe import host_routes

        return host_routes()

    def router_advertisement_takers(self) -> list[str]:
        return _accept_ra_1(forwarding="0")

    def listeners(self) -> list[Listener]:
        from .sockets import listeners

        return listeners()

    def observe(self, sandboxes: Mapping[str, Iterable[str]], owner: Owner, sysctls: Iterable[str]) -> Observed:
        from . import observe
        from .state import Observed

        # A link under /run/netns is no sandbox's namespace (netns.exists): gc must not repair through it.
        pinned = frozenset(n for n in os.listdir(netns.NETNS_DIR) if netns.exists(n)) \
            if os.path.isdir(netns.NETNS_DIR) else frozenset()
        pinned |= {h for h in sandboxes if h.startswith("/") and netns.is_namespace(h)}  # runtimes' namespaces
        inside: dict[str, dict] = {}
        routes: dict[str, dict[int, tuple[str, str]]] = {}
        statics: dict[str, frozenset[tuple[str, str]]] = {}
        for name in sandboxes:
            if name in pinned:
                try:
                    inside[name], routes[name], statics[name] = observe.sandbox_interfaces(netns.path_of(name))
                except (KernelError, OSError):  # pinned, but not a usable namespace
                    inside[name], routes[name], statics[name] = {}, {}, frozenset()
        values = {}
        for key in sysctls:
            try:
                values[key] = sysctl.read(key)
            except OSError:
                pass
        elements, ruleset = observe.nft_tables(owner.table)
        return Observed(
            links=observe.host_links(), netns=pinned, sandbox_links=inside, sandbox_routes=routes,
            sandbox_statics=statics, nft=elements, ip_forward=sysctl.read("net.ipv4.ip_forward"), sysctls=values,
            ruleset=ruleset,
        )

    def expected_ruleset(self, commands: list[dict[str, Any]], owner: Owner) -> Ruleset:
        from . import observe

        return observe.ruleset_made_of(commands, owner.table)

    def host_facts(self) -> HostFacts:
        from ..doctor import HostFacts
        from . import observe
        from .sockets import listeners

        try:
            brnf: str | None = sysctl.read("net.bridge.bridge-nf-call-iptables")
        except FileNotFoundError:
            brnf = None
        return HostFacts(
            ip_forward=sysctl.read("net.ipv4.ip_forward"),
            bridge_nf_call_iptables=brnf,
            base_chains=tuple(observe.base_chains()),
            legacy_iptables_tables=tuple(observe.legacy_iptables_tables()),
            listeners=tuple(listeners()),
            routes=tuple(observe.host_routes()),
            missing_features=tuple(observe.missing_features()),
            ipv6_forwarding=_read_or("net.ipv6.conf.all.forwarding", "0"),
            ra_ignored=tuple(_accept_ra_1(forwarding="1")),
            shaping_modules=self._probed_qdisc_modules(),
        )

    def _probed_qdisc_modules(self) -> tuple[str, ...] | None:
        try:
            return tuple(sorted(self.qdisc_modules()))
        except Exception:  # doctor reports what it can: a probe that fails says nothing of the modules
            return None

    def port_holders(self) -> HolderLookup:
        from .sockets import BindProbe

        return BindProbe()

    def ephemeral_ports(self) -> range:
        first, last = sysctl.read("net.ipv4.ip_local_port_range").split()
        return range(int(first), int(last) + 1)

    def release_sandboxes(self) -> None:
        for sandbox in list(self._sandboxes):
            self._forget(sandbox)

    def close(self) -> None:
        self.release_sandboxes()
        if self._host is not None:
            self._host.close()
            self._host = None
        if self._host_ipv6_conf is not None:
            os.close(self._host_ipv6_conf[1])
            self._host_ipv6_conf = None


class _Inside:
    """What nsnet keeps of a sandbox it works in: a netlink socket and its net.ipv6.conf
    directory, both opened by a thread inside its namespace."""

    def __init__(self, sock: RtnlSocket, ipv6_conf: sysctl.Directory) -> None:
        self.sock = sock
        self.ipv6_conf = ipv6_conf

    @classmethod
    def open(cls) -> _Inside:
        return cls(RtnlSocket(), sysctl.open_directory("net.ipv6.conf"))

    def close(self) -> None:
        self.sock.close()
        os.close(self.ipv6_conf[1])


def _accept_ra_1(forwarding: str) -> list[str]:
    """`default` and the interfaces with IPv6 on, accept_ra 1 and this forwarding value."""
    names = ["default"] + sorted(set(os.listdir("/proc/sys/net/ipv6/conf")) - {"all", "default", "lo"})
    return [name for name in names
            if _read_or(f"net.ipv6.conf.{name}.accept_ra", "") == "1"
            and _read_or(f"net.ipv6.conf.{name}.forwarding", "") == forwarding
            and _read_or(f"net.ipv6.conf.{name}.disable_ipv6", "0") != "1"]


def _read_or(key: str, missing: str) -> str:
    try:
        return sysctl.read(key)
    except OSError:
        return missing


def _where(ifname: str, sandbox: str | None) -> str:
    return f"{ifname} in sandbox {sandbox}" if sandbox else ifname
