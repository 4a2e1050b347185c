"""A model of the kernel for tests that need no root: it keeps the objects nsnet would make,
records every call, and can be told to fail at the Nth mutating call.

    kernel = FakeKernel(fail_at=3)      # the third mutating call raises KernelError(EPERM)
    engine = Engine(state_dir=tmp, kernel=kernel)
"""

from __future__ import annotations

import errno
import json
from dataclasses import replace
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from ..doctor import HostFacts
from ..reconcile import LinkState, Observed, element_key
from ..errors import KernelError, PathError
from ..publish import Listener, Listeners
from ..naming import etc_netns_dir, netns_path
from . import Kernel


class FakeKernel(Kernel):
    def __init__(self, fail_at: int | None = None, routes: list[tuple[IPv4Network, str]] | None = None) -> None:
        self.fail_at = fail_at
        self.calls: list[tuple[Any, ...]] = []
        self.netns: set[str] = set()
        self.links: dict[tuple[str | None, str], dict[str, Any]] = {}
        self.addresses: set[tuple[str | None, str, IPv4Interface]] = set()
        self.routes: dict[str, tuple[IPv4Address, str]] = {}
        self.nft_log: list[list[dict[str, Any]]] = []
        self.sysctls: dict[str, str] = {}
        self.etc: dict[str, dict[str, str]] = {}
        self.foreign_paths: set[str] = set()  # files a user made where a sandbox's would go
        self.pids: dict[str, list[int]] = {}
        self.host_route_table = list(routes or [])
        self.host_listeners: list[Listener] = []
        self.ephemeral = range(32768, 61000)
        self.facts = HostFacts(ip_forward="1", bridge_nf_call_iptables=None)
        self.nft_tables: set[tuple[str, str]] = set()
        self.nft_elements: dict[tuple[str, str, str], Any] = {}

    def _mutating(self, *call: Any) -> None:
        self.calls.append(call)
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise KernelError(str(call[0]), errno.EPERM, "injected failure")

    def _need(self, present: bool, what: str) -> None:
        if not present:
            raise KernelError(what, errno.ENODEV)

    @property
    def empty(self) -> bool:
        """True when nothing nsnet made is left (sysctls are left on purpose)."""
        return not (self.netns or self.links or self.addresses or self.routes or self.etc)

    # Namespaces

    def create_netns(self, sandbox: str) -> None:
        self._mutating("create_netns", sandbox)
        if sandbox in self.netns or netns_path(sandbox) in self.foreign_paths:
            raise PathError("create", netns_path(sandbox), errno.EEXIST)
        self.netns.add(sandbox)

    def delete_netns(self, sandbox: str) -> None:
        self._mutating("delete_netns", sandbox)
        if sandbox not in self.netns:
            raise PathError("delete", netns_path(sandbox), errno.ENOENT, "no namespace is pinned there")
        self.netns.discard(sandbox)
        for key, link in list(self.links.items()):
            if key in self.links and (key[0] == sandbox or link.get("peer_ns") == sandbox):
                self._drop_link(key)
        self.routes.pop(sandbox, None)

    def netns_exists(self, sandbox: str) -> bool:
        return sandbox in self.netns

    def pids_in_netns(self, sandbox: str) -> list[int]:
        return list(self.pids.get(sandbox, []))

    def kill(self, pids: list[int]) -> None:
        self._mutating("kill", tuple(pids))
        for sandbox in self.pids:
            self.pids[sandbox] = [p for p in self.pids[sandbox] if p not in pids]

    def write_etc_files(self, sandbox: str, files: dict[str, str]) -> None:
        self._mutating("write_etc_files", sandbox)
        if sandbox in self.etc or etc_netns_dir(sandbox) in self.foreign_paths:
            raise PathError("create", etc_netns_dir(sandbox), errno.EEXIST)
        self.etc[sandbox] = dict(files)

    def remove_etc_files(self, sandbox: str) -> None:
        self._mutating("remove_etc_files", sandbox)
        self.etc.pop(sandbox, None)

    def sandbox_paths_taken(self, sandbox: str) -> list[str]:
        paths = [netns_path(sandbox)] if sandbox in self.netns else []
        paths += [etc_netns_dir(sandbox)] if sandbox in self.etc else []
        return paths + [p for p in sorted(self.foreign_paths) if p in (netns_path(sandbox), etc_netns_dir(sandbox))]

    # Links, addresses, routes

    def _drop_link(self, key: tuple[str | None, str]) -> None:
        link = self.links.pop(key)
        self.addresses = {a for a in self.addresses if (a[0], a[1]) != key}
        if "peer" in link:
            peer_key = (link["peer_ns"], link["peer"])
            self.links.pop(peer_key, None)
            self.addresses = {a for a in self.addresses if (a[0], a[1]) != peer_key}
            if self.routes.get(link["peer_ns"], (None, None))[1] == link["peer"]:
                self.routes.pop(link["peer_ns"])

    def create_bridge(self, name: str, mtu: int, mac: str) -> None:
        self._mutating("create_bridge", name, mtu, mac)
        if (None, name) in self.links:
            raise KernelError(f"creation of bridge {name}", errno.EEXIST)
        self.links[(None, name)] = {"kind": "bridge", "mtu": mtu, "mac": mac}

    def create_veth(self, name: str, bridge: str, sandbox: str, peer: str, mtu: int, mac: str,
                    isolated: bool = False) -> None:
        self._mutating("create_veth", name, bridge, sandbox, peer, mtu, mac, *(["isolated"] if isolated else []))
        self._need((None, bridge) in self.links and sandbox in self.netns, f"creation of veth {name}")
        self.links[(None, name)] = {"kind": "veth", "master": bridge, "peer": peer, "peer_ns": sandbox, "mtu": mtu,
                                    "isolated": isolated}
        self.links[(sandbox, peer)] = {"kind": "veth", "mac": mac, "mtu": mtu}

    def delete_link(self, name: str, sandbox: str | None = None) -> None:
        self._mutating("delete_link", name, sandbox)
        self._need((sandbox, name) in self.links, f"deletion of link {name}")
        self._drop_link((sandbox, name))
        if sandbox is None:
            for key, link in list(self.links.items()):
                if link.get("master") == name:
                    del link["master"]

    def attach_to_bridge(self, name: str, bridge: str, isolated: bool = False) -> None:
        self._mutating("attach_to_bridge", name, bridge, *(["isolated"] if isolated else []))
        self._need((None, name) in self.links and (None, bridge) in self.links, f"attaching {name}")
        self.links[(None, name)].update(master=bridge, isolated=isolated)

    def add_address(self, ifname: str, address: IPv4Interface, sandbox: str | None = None) -> None:
        self._mutating("add_address", ifname, str(address), sandbox)
        self._need((sandbox, ifname) in self.links, f"adding {address} to {ifname}")
        self.addresses.add((sandbox, ifname, address))

    def delete_address(self, ifname: str, address: IPv4Interface, sandbox: str | None = None) -> None:
        self._mutating("delete_address", ifname, str(address), sandbox)
        self._need((sandbox, ifname, address) in self.addresses, f"removing {address}")
        self.addresses.discard((sandbox, ifname, address))

    def replace_default_route(self, gateway: IPv4Address, ifname: str, sandbox: str) -> None:
        self._mutating("replace_default_route", str(gateway), ifname, sandbox)
        self._need((sandbox, ifname) in self.links, f"default route in {sandbox}")
        self.routes[sandbox] = (gateway, ifname)

    def delete_default_route(self, sandbox: str) -> None:
        self._mutating("delete_default_route", sandbox)
        self._need(sandbox in self.routes, f"removing the default route in {sandbox}")
        del self.routes[sandbox]

    # Firewall and sysctls

    def nft(self, commands: list[dict[str, Any]]) -> None:
        """Tables and elements, applied atomically as nft does: deleting what is not there
        (ENOENT) refuses the whole transaction. A map element is [key, value], deleted by key."""
        self._mutating("nft", len(commands))
        tables, elements = set(self.nft_tables), dict(self.nft_elements)
        for command in commands:
            ((verb, body),) = command.items()
            ((kind, obj),) = body.items()
            if kind == "table":
                table = (obj["family"], obj["name"])
                if verb == "delete" and table not in tables:
                    raise KernelError("nftables transaction", errno.ENOENT, "No such file or directory")
                if verb == "add":
                    tables.add(table)
                elif verb == "delete":
                    tables.discard(table)
                    elements = {k: v for k, v in elements.items() if k[0] != obj["family"]}
            elif kind == "element":
                for element in obj["elem"]:
                    key, value = element if isinstance(element, list) else (element, None)
                    where = (obj["family"], obj["name"], json.dumps(key, sort_keys=True))
                    if verb == "add":
                        elements[where] = value
                    elif elements.pop(where, KeyError) is KeyError:
                        raise KernelError("nftables transaction", errno.ENOENT, "No such file or directory")
        self.nft_tables, self.nft_elements = tables, elements
        self.nft_log.append(commands)

    def _observed_elements(self) -> frozenset[str]:
        return frozenset(element_key(family, name, json.loads(key) if value is None else [json.loads(key), value])
                         for (family, name, key), value in self.nft_elements.items())

    def ensure_sysctl(self, key: str, value: str) -> bool:
        self._mutating("ensure_sysctl", key, value)
        changed = self.sysctls.get(key) != value
        self.sysctls[key] = value
        return changed

    def host_routes(self) -> list[tuple[IPv4Network, str]]:
        return list(self.host_route_table)

    def listeners(self) -> list[Listener]:
        return list(self.host_listeners)

    def ephemeral_ports(self) -> range:
        return self.ephemeral

    def port_holders(self) -> Listeners:
        return Listeners(self.host_listeners)

    def observe(self, sandboxes: Mapping[str, Iterable[str]]) -> Observed:
        """The modelled links, namespaces and nft elements."""
        links = {}
        for (ns, name), link in self.links.items():
            if ns is None:
                addresses = frozenset(str(a) for s, i, a in self.addresses if s is None and i == name)
                links[name] = LinkState(link["kind"], link.get("master"), True, addresses, link.get("isolated", False))
        inside = {name: {i: frozenset(str(a) for s, n, a in self.addresses if s == name and n == i)
                         for (s, i) in self.links if s == name}
                  for name in sandboxes if name in self.netns}
        routes = {name: ((str(self.routes[name][0]), self.routes[name][1]) if name in self.routes else None)
                  for name in inside}
        nft = self._observed_elements() if ("inet", "nsnet") in self.nft_tables else None
        bridges = [name for (ns, name), link in self.links.items() if ns is None and link["kind"] == "bridge"]
        sysctls = {k: v for k, v in self.sysctls.items() if any(f".{b}." in k for b in bridges)}
        return Observed(links=links, netns=frozenset(self.netns), sandbox_links=inside, sandbox_routes=routes, nft=nft,
                        ip_forward=self.sysctls.get("net.ipv4.ip_forward", "0"), sysctls=sysctls)

    def host_facts(self) -> HostFacts:
        return replace(self.facts, listeners=tuple(self.host_listeners), routes=tuple(self.host_route_table))
