"""A model of the kernel for tests that need no root: it keeps the objects nsnet would make,
records every call, and can be told to fail at the Nth mutating call.

    kernel = FakeKernel(fail_at=3)      # the third mutating call raises KernelError(EPERM)
    engine = Engine(state_dir=tmp, kernel=kernel)
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from ..doctor import HostFacts
from ..model import IPAddress, IPInterface, IPNetwork, Owner
from ..record import replace
from .state import LinkState, Observed, Ruleset, element_key
from ..errors import KernelError, PathError
from ..publish import Listener, Listeners
from ..naming import etc_netns_dir, netns_path
from . import Kernel

SERVING = "serving"  # FakeKernel.resolver: a resolver that serves the ledger as it is


class FakeKernel(Kernel):
    def __init__(self, fail_at: int | None = None, routes: list[tuple[IPNetwork, str]] | None = None) -> None:
        self.fail_at = fail_at
        self.calls: list[tuple[Any, ...]] = []
        self.netns: set[str] = set()
        self.links: dict[tuple[str | None, str], dict[str, Any]] = {}
        self.unreachable: set[str] = set()
        self.addresses: set[tuple[str | None, str, IPInterface]] = set()
        self.routes: dict[tuple[str, int], tuple[IPAddress, str]] = {}  # (sandbox, version)
        self.nft_log: list[list[dict[str, Any]]] = []
        self.sysctls: dict[str, str] = {}
        self.etc: dict[str, dict[str, str]] = {}
        self.foreign_paths: set[str] = set()  # files a user made where a sandbox's would go
        self.resolver_syncs: list[bool] = []  # each sync_resolver's `wanted`
        self.resolver: str | None = None
        self.link_dns: dict[str, tuple[list[str], list[str]]] = {}  # what resolved was told, by link
        self.forgotten_flows: list[tuple[str, list[int], list[str]]] = []  # forget_udp_flows' calls
        self.forgotten_picks: list[tuple[str, list[str] | None]] = []  # forget_picks' calls
        self.static_routes: set[tuple[str, str, str]] = set()  # (sandbox, destination, gateway)
        self.sandbox_sysctls: dict[tuple[str, str], str] = {}  # (sandbox, key): its value inside
        self.sandbox_tables: dict[str, dict[str, list[dict[str, Any]]]] = {}  # sandbox -> table -> rules, elements
        self.dns_ports_taken: set[int] = set()  # ports another program holds on every gateway
        self.pids: dict[str, list[int]] = {}
        self.link_kinds: set[str] = {"macvlan"}  # what link_kind_missing finds (this machine: no ipvlan)
        self.host_route_table = list(routes or [])
        self.host_listeners: list[Listener] = []
        self.ra_takers: list[str] = []  # host interfaces with accept_ra 1, forwarding 0
        self.ephemeral = range(32768, 61000)
        self.facts = HostFacts(ip_forward="1", bridge_nf_call_iptables=None)
        self.nft_tables: set[tuple[str, str]] = set()
        self.nft_elements: dict[tuple[str, str, str], Any] = {}
        self.qdisc_kinds = frozenset({"sch_netem", "sch_tbf"})  # the shaping modules it has
        self.nft_skeleton: dict[tuple[str, str], tuple[dict[str, Any], list[dict[str, Any]]]] = {}

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
        self.sandbox_tables.pop(sandbox, None)
        for key, link in list(self.links.items()):
            if key in self.links and (key[0] == sandbox or link.get("peer_ns") == sandbox):
                self._drop_link(key)
        self.routes = {k: v for k, v in self.routes.items() if k[0] != sandbox}
        self.static_routes = {r for r in self.static_routes if r[0] != sandbox}

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

    def replace_etc_file(self, sandbox: str, filename: str, text: str | None) -> None:
        self._mutating("replace_etc_file", sandbox, filename)
        self._need(sandbox in self.etc, f"writing {filename} of")
        if text is None:
            self.etc[sandbox].pop(filename, None)
        else:
            self.etc[sandbox][filename] = text

    def read_etc_file(self, sandbox: str, filename: str) -> str | None:
        return self.etc.get(sandbox, {}).get(filename)

    def sandbox_paths_taken(self, sandbox: str) -> list[str]:
        paths = [netns_path(sandbox)] if sandbox in self.netns else []
        paths += [etc_netns_dir(sandbox)] if sandbox in self.etc else []
        return paths + [p for p in sorted(self.foreign_paths) if p in (netns_path(sandbox), etc_netns_dir(sandbox))]

    # Links, addresses, routes

    def _drop_link(self, key: tuple[str | None, str]) -> None:
        link = self.links.pop(key)
        if key[0] is None:  # an interface's sysctls go with it
            self.sysctls = {k: v for k, v in self.sysctls.items() if f".conf.{key[1]}." not in k}
        self.addresses = {a for a in self.addresses if (a[0], a[1]) != key}
        if "peer" in link:
            peer_key = (link["peer_ns"], link["peer"])
            self.links.pop(peer_key, None)
            self.addresses = {a for a in self.addresses if (a[0], a[1]) != peer_key}
            self.routes = {k: v for k, v in self.routes.items() if (k[0], v[1]) != peer_key}

    def create_bridge(self, name: str, mtu: int, mac: str, group: int) -> None:
        self._mutating("create_bridge", name, mtu, mac)
        if (None, name) in self.links:
            raise KernelError(f"creation of bridge {name}", errno.EEXIST)
        self.links[(None, name)] = {"kind": "bridge", "mtu": mtu, "mac": mac, "group": group, "up": True}

    def create_veth(self, name: str, bridge: str, sandbox: str, peer: str, mtu: int, mac: str, group: int) -> None:
        self._mutating("create_veth", name, bridge, sandbox, peer, mtu, mac)
        self._need((None, bridge) in self.links and sandbox in self.netns, f"creation of veth {name}")
        if (None, name) in self.links or (sandbox, peer) in self.links:
            raise KernelError(f"creation of veth {name}", errno.EEXIST)
        self.links[(None, name)] = {"kind": "veth", "master": bridge, "peer": peer, "peer_ns": sandbox, "mtu": mtu,
                                    "group": group, "up": True, "mac": "02:00:00:00:00:01", "learning": True,
                                    "static_macs": set()}
        self.links[(sandbox, peer)] = {"kind": "veth", "mac": mac, "mtu": mtu, "up": False}

    def create_macvlan(self, name: str, parent: str, sandbox: str, mode: str, mtu: int, mac: str, group: int) -> None:
        self._mutating("create_macvlan", name, parent, sandbox, mode, mtu, mac)
        self._need((None, parent) in self.links and sandbox in self.netns, f"creation of macvlan {name}")
        if (sandbox, name) in self.links:
            raise KernelError(f"creation of macvlan {name}", errno.EEXIST)
        self.links[(sandbox, name)] = {"kind": "macvlan", "parent": parent, "mode": mode, "mac": mac, "mtu": mtu,
                                       "up": False}

    def link_kind_missing(self, kind: str) -> str | None:
        return None if kind in self.link_kinds else f"creation of {kind} probe-child: Operation not supported"

    def create_tap(self, name: str, uid: int | None, gid: int | None) -> None:
        self._mutating("create_tap", name, uid, gid)
        if (None, name) in self.links:
            raise KernelError(f"creation of tap {name}", errno.EEXIST)
        self.links[(None, name)] = {"kind": "tun", "mtu": 1500, "group": 0, "up": False, "mac": "02:00:00:00:00:04",
                                    "learning": True, "static_macs": set(), "owner": (uid, gid)}

    def create_pair(self, sandbox: str, ifname: str, peer_sandbox: str, peer: str, mtu: int) -> None:
        self._mutating("create_pair", sandbox, ifname, peer_sandbox, peer, mtu)
        self._need(sandbox in self.netns and peer_sandbox in self.netns, f"creation of veth {ifname}")
        if (sandbox, ifname) in self.links or (peer_sandbox, peer) in self.links:
            raise KernelError(f"creation of veth {ifname}", errno.EEXIST)
        self.links[(sandbox, ifname)] = {"kind": "veth", "peer": peer, "peer_ns": peer_sandbox, "mtu": mtu, "up": True,
                                         "mac": "02:00:00:00:00:02"}
        self.links[(peer_sandbox, peer)] = {"kind": "veth", "peer": ifname, "peer_ns": sandbox, "mtu": mtu, "up": False,
                                            "mac": "02:00:00:00:00:03"}

    def forget_udp_flows(self, address: str, ports: list[int], keep: set[str]) -> int:
        self.forgotten_flows.append((address, sorted(ports), sorted(keep)))
        return 0

    def forget_picks(self, table: str, vip: str, keep: set[str] | None) -> int:
        self.forgotten_picks.append((vip, sorted(keep) if keep is not None else None))
        return 0

    def sandbox_nft(self, sandbox: str, commands: list[dict[str, Any]]) -> None:
        """A table per sandbox as the commands that made it (enough for nsnet.intercept)."""
        self._mutating("sandbox_nft", sandbox, len(commands))
        self._need(sandbox in self.netns, "the firewall of")
        tables = self.sandbox_tables.setdefault(sandbox, {})
        for command in commands:
            ((verb, body),) = command.items()
            if "table" in body and isinstance(body["table"], dict):
                name = body["table"]["name"]
                if verb == "add":
                    tables.setdefault(name, [])
                elif verb == "delete":
                    tables.pop(name, None)
            elif verb in ("add", "flush"):
                ((kind, item),) = body.items()
                if verb == "flush":
                    tables[item["table"]] = [c for c in tables[item["table"]]
                                             if not (kind == "chain" and c.get("chain") == item["name"])
                                             and not (kind == "set" and c.get("set") == item["name"])]
                elif kind == "rule":
                    tables[item["table"]].append({"chain": item["chain"], "rule": item})
                elif kind == "element":
                    tables[item["table"]] += [{"set": item["name"], "element": e} for e in item["elem"]]

    def sandbox_table(self, sandbox: str, table: str) -> list[dict[str, Any]] | None:
        """In nft's listing's shape: rules, and each set with its elements."""
        made = self.sandbox_tables.get(sandbox, {}).get(table)
        if made is None:
            return None
        sets: dict[str, list[Any]] = {}
        for item in made:
            if "set" in item:
                sets.setdefault(item["set"], []).append(item["element"])
        return [*({"set": {"name": name, "elem": elements}} for name, elements in sets.items()),
                *({"rule": item["rule"]} for item in made if "rule" in item)]

    # Overlay networks: a VXLAN device's entries live in its link's dict, and go with it.

    def create_vxlan(self, name: str, vni: int, port: int, local: str, underlay: str, mtu: int, mac: str,
                     group: int) -> None:
        self._mutating("create_vxlan", name, vni, port, local, underlay, mtu, mac, group)
        if (None, name) in self.links:
            raise KernelError(f"creation of VXLAN device {name}", errno.EEXIST)
        self.links[(None, name)] = {"kind": "vxlan", "mtu": mtu, "group": group, "up": False, "mac": mac,
                                    "learning": False, "static_macs": set(), "vni": vni,
                                    "neighbours": set(), "fdb": set(), "routes": set()}

    def _entries(self, device: str, kind: str, what: str) -> set[tuple[str, ...]]:
        return self._link(device, None, what)[kind]

    def replace_neighbour(self, device: str, address: str, mac: str) -> None:
        self._mutating("replace_neighbour", device, address, mac)
        found = self._entries(device, "neighbours", "neighbour on")
        found -= {e for e in found if e[0] == address}
        found.add((address, mac))

    def delete_neighbour(self, device: str, address: str, mac: str) -> None:
        self._mutating("delete_neighbour", device, address, mac)
        if (None, device) in self.links:
            self.links[(None, device)]["neighbours"].discard((address, mac))

    def replace_fdb(self, device: str, mac: str, destination: str) -> None:
        self._mutating("replace_fdb", device, mac, destination)
        found = self._entries(device, "fdb", "FDB entry on")
        found -= {e for e in found if e[0] == mac}
        found.add((mac, destination))

    def delete_fdb(self, device: str, mac: str, destination: str) -> None:
        self._mutating("delete_fdb", device, mac, destination)
        if (None, device) in self.links:
            self.links[(None, device)]["fdb"].discard((mac, destination))

    def replace_onlink_route(self, destination: str, via: str, device: str) -> None:
        self._mutating("replace_onlink_route", destination, via, device)
        found = self._entries(device, "routes", "route on")
        found -= {e for e in found if e[0] == destination}
        found.add((destination, via))

    def delete_onlink_route(self, destination: str, via: str, device: str) -> None:
        self._mutating("delete_onlink_route", destination, via, device)
        if (None, device) in self.links:
            self.links[(None, device)]["routes"].discard((destination, via))

    def replace_unreachable(self, destination: str) -> None:
        self._mutating("replace_unreachable", destination)
        self.unreachable.add(destination)

    def delete_unreachable(self, destination: str) -> None:
        self._mutating("delete_unreachable", destination)
        self.unreachable.discard(destination)

    def overlay_entries(self, device: str) -> dict[str, set[tuple[str, ...]]] | None:
        link = self.links.get((None, device))
        if link is None:
            return None
        return {kind: set(link[kind]) for kind in ("neighbours", "fdb", "routes")}

    def unreachable_routes(self) -> set[str]:
        return set(self.unreachable)

    def set_qdisc(self, sandbox: str | None, ifname: str, qdisc: Any) -> None:
        """A device's root qdisc lives in its link's dict, and goes with it."""
        self._mutating("set_qdisc", sandbox, ifname, qdisc)
        self._link(ifname, sandbox, "shaping of")["qdisc"] = qdisc

    def clear_qdisc(self, sandbox: str | None, ifname: str) -> None:
        self._mutating("clear_qdisc", sandbox, ifname)
        self._link(ifname, sandbox, "unshaping of").pop("qdisc", None)

    def root_qdisc(self, sandbox: str | None, ifname: str) -> str | None:
        made = self.links.get((sandbox, ifname), {}).get("qdisc")
        return made.summary if made is not None else None

    def qdisc_modules(self) -> frozenset[str]:
        return self.qdisc_kinds

    def set_link_dns(self, link: str, servers: list[str], domains: list[str]) -> None:
        self.link_dns[link] = (servers, domains)

    def dns_port(self, gateways: list[str], ours: set[str]) -> int | None:
        from ..dns.listen import ALTERNATE_PORTS, PORT

        return next((p for p in (PORT, *ALTERNATE_PORTS) if p not in self.dns_ports_taken), None)

    def sync_resolver(self, state_dir: str, wanted: bool) -> None:
        self.resolver_syncs.append(wanted)
        self.resolver = SERVING if wanted else None

    def resolver_status(self, state_dir: str) -> str | None:
        """A test's own line, or what a resolver serving the ledger as it is would say."""
        if self.resolver != SERVING:
            return self.resolver
        import sqlite3

        from ..dns import listen, supervise
        from ..dns.ledger import read_table

        db = sqlite3.connect(f"file:{os.path.join(state_dir, 'state.db')}?mode=ro", uri=True, isolation_level=None)
        try:
            table, _ = read_table(db)
        finally:
            db.close()
        return " ".join(["ok", "1", str(os.getpid()), supervise.namespace(),
                         *(listen.text(address, port) for address, port in table.listeners())])

    def link_mac(self, name: str) -> str | None:
        link = self.links.get((None, name))
        return link["mac"] if link else None

    def _link(self, name: str, sandbox: str | None, what: str) -> dict[str, Any]:
        self._need((sandbox, name) in self.links, f"{what} {name}")
        return self.links[(sandbox, name)]

    def set_port_flags(self, name: str, isolated: bool) -> None:
        self._mutating("set_port_flags", name, *(["isolated"] if isolated else []))
        link = self._link(name, None, "bridge port flags of")
        self._need("master" in link, f"bridge port flags of {name}")
        link.update(isolated=isolated, hairpin=True, learning=False, locked=True)

    def add_fdb_entry(self, port: str, mac: str) -> None:
        self._mutating("add_fdb_entry", port, mac)
        self._link(port, None, "static FDB entry on")["static_macs"].add(mac)

    def disable_ipv6(self, ifname: str) -> None:
        self._mutating("disable_ipv6", ifname)
        self._link(ifname, None, "disabling IPv6 on")

    def enable_ipv6(self, ifname: str, sandbox: str) -> None:
        self._mutating("enable_ipv6", ifname, sandbox)
        self._link(ifname, sandbox, "enabling IPv6 on")["ipv6"] = True

    def set_link_up(self, name: str, sandbox: str | None = None) -> None:
        self._mutating("set_link_up", name, sandbox)
        self._link(name, sandbox, "bringing up")["up"] = True

    def set_mtu(self, name: str, mtu: int, sandbox: str | None = None) -> None:
        self._mutating("set_mtu", name, mtu, sandbox)
        self._link(name, sandbox, "setting the MTU of")["mtu"] = mtu

    def set_group(self, name: str, group: int) -> None:
        self._mutating("set_group", name, group)
        self._link(name, None, "setting the group of")["group"] = group

    def set_mac(self, name: str, mac: str, sandbox: str | None = None) -> None:
        self._mutating("set_mac", name, mac, sandbox)
        self._link(name, sandbox, "setting the MAC of")["mac"] = mac

    def delete_link(self, name: str, sandbox: str | None = None) -> None:
        self._mutating("delete_link", name, sandbox)
        self._need((sandbox, name) in self.links, f"deletion of link {name}")
        self._drop_link((sandbox, name))
        if sandbox is None:  # its ports lose their bridge settings with it, as in the kernel
            for key, link in list(self.links.items()):
                if link.get("master") == name:
                    for flag in ("master", "isolated", "hairpin", "locked"):
                        link.pop(flag, None)
                    link.update(learning=True, static_macs=set())

    def attach_to_bridge(self, name: str, bridge: str) -> None:
        self._mutating("attach_to_bridge", name, bridge)
        self._need((None, name) in self.links and (None, bridge) in self.links, f"attaching {name}")
        self.links[(None, name)].update(master=bridge, isolated=False, hairpin=False, learning=True, locked=False,
                                        static_macs=set())

    def add_address(self, ifname: str, address: IPInterface, sandbox: str | None = None) -> None:
        self._mutating("add_address", ifname, str(address), sandbox)
        self._need((sandbox, ifname) in self.links, f"adding {address} to {ifname}")
        self.addresses.add((sandbox, ifname, address))

    def delete_address(self, ifname: str, address: IPInterface, sandbox: str | None = None) -> None:
        self._mutating("delete_address", ifname, str(address), sandbox)
        self._need((sandbox, ifname, address) in self.addresses, f"removing {address}")
        self.addresses.discard((sandbox, ifname, address))

    def replace_default_route(self, gateway: IPAddress, ifname: str, sandbox: str) -> None:
        self._mutating("replace_default_route", str(gateway), ifname, sandbox)
        self._need((sandbox, ifname) in self.links, f"default route in {sandbox}")
        if not self.links[(sandbox, ifname)].get("up", True):
            raise KernelError(f"default route in {sandbox}", errno.ENETUNREACH)
        self.routes[(sandbox, gateway.version)] = (gateway, ifname)

    def delete_default_route(self, sandbox: str, version: int = 4) -> None:
        self._mutating("delete_default_route", sandbox, version)
        self._need((sandbox, version) in self.routes, f"removing the default route in {sandbox}")
        del self.routes[(sandbox, version)]

    # Firewall and sysctls

    def nft(self, commands: list[dict[str, Any]]) -> None:
        """Tables, their sets, chains and rules, and elements, applied atomically as nft does:
        deleting what is not there (ENOENT) refuses the whole transaction. A map element is
        [key, value], deleted by key."""
        self._mutating("nft", len(commands))
        tables, elements = set(self.nft_tables), dict(self.nft_elements)
        skeleton = {k: (v[0], list(v[1])) for k, v in self.nft_skeleton.items()}
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
                    skeleton = {k: v for k, v in skeleton.items() if k[0] != obj["family"]}
            elif kind in ("set", "map", "chain") and verb == "delete":
                key = (obj["family"], f"{obj['family']} {kind} {obj['name']}")
                if skeleton.pop(key, KeyError) is KeyError:
                    raise KernelError("nftables transaction", errno.ENOENT, "No such file or directory")
                elements = {k: v for k, v in elements.items() if k[:2] != (obj["family"], obj["name"])}
            elif kind in ("set", "map") and verb == "flush":
                elements = {k: v for k, v in elements.items() if k[:2] != (obj["family"], obj["name"])}
            elif kind in ("set", "map", "chain"):
                key = (obj["family"], f"{obj['family']} {kind} {obj['name']}")
                declaration = {k: v for k, v in obj.items() if k != "elem"}
                skeleton[key] = (declaration, [] if kind != "chain" or verb == "flush" or key not in skeleton
                                 else skeleton[key][1])
            elif kind == "rule":
                skeleton[(obj["family"], f"{obj['family']} chain {obj['chain']}")][1].append(obj)
            elif kind == "element":
                for element in obj["elem"]:
                    key, value = element if isinstance(element, list) else (element, None)
                    where = (obj["family"], obj["name"], json.dumps(key, sort_keys=True))
                    if verb == "add":
                        elements[where] = value
                    elif elements.pop(where, KeyError) is KeyError:
                        raise KernelError("nftables transaction", errno.ENOENT, "No such file or directory")
        self.nft_tables, self.nft_elements, self.nft_skeleton = tables, elements, skeleton
        self.nft_log.append(commands)

    @property
    def ruleset(self) -> Ruleset:
        """The skeleton as the model holds it (chains that only a flush named are left out)."""
        sets = {k: d for (_, k), (d, _) in self.nft_skeleton.items() if " chain " not in k}
        chains = {k: (d, tuple(json.dumps(r, sort_keys=True) for r in rules))
                  for (_, k), (d, rules) in self.nft_skeleton.items() if " chain " in k}
        return Ruleset(sets=sets, chains=chains)

    def expected_ruleset(self, commands: list[dict[str, Any]], owner: Owner) -> Ruleset:
        model = FakeKernel()
        model.nft(commands)
        return model.ruleset

    def _observed_elements(self) -> frozenset[str]:
        return frozenset(element_key(family, name, json.loads(key) if value is None else [json.loads(key), value])
                         for (family, name, key), value in self.nft_elements.items())

    def ensure_sysctl(self, key: str, value: str, sandbox: str | None = None) -> str | None:
        self._mutating("ensure_sysctl", key, value, *((sandbox,) if sandbox else ()))
        values, where = (self.sysctls, key) if sandbox is None else (self.sandbox_sysctls, (sandbox, key))
        previous = values.get(where, "0")
        values[where] = value
        return previous if previous != value else None

    def add_route(self, sandbox: str, dst: Any, via: Any) -> None:
        self._mutating("add_route", sandbox, str(dst), str(via))
        self._need(sandbox in self.netns, f"route to {dst}")
        if any(s == sandbox and d == str(dst) for s, d, _ in self.static_routes):
            raise KernelError(f"route to {dst}", errno.EEXIST)
        self.static_routes.add((sandbox, str(dst), str(via)))

    def delete_route(self, sandbox: str, dst: Any, via: Any) -> None:
        self._mutating("delete_route", sandbox, str(dst), str(via))
        self._need((sandbox, str(dst), str(via)) in self.static_routes, f"removing the route to {dst}")
        self.static_routes.discard((sandbox, str(dst), str(via)))

    def write_sysctl(self, key: str, value: str) -> None:
        self._mutating("write_sysctl", key, value)
        self.sysctls[key] = value

    def host_routes(self) -> list[tuple[IPNetwork, str]]:
        return list(self.host_route_table)

    def router_advertisement_takers(self) -> list[str]:
        return list(self.ra_takers)

    def listeners(self) -> list[Listener]:
        return list(self.host_listeners)

    def ephemeral_ports(self) -> range:
        return self.ephemeral

    def port_holders(self) -> Listeners:
        return Listeners(self.host_listeners)

    def _state(self, ns: str | None, name: str, link: dict[str, Any]) -> LinkState:
        return LinkState(
            kind=link["kind"], master=link.get("master"), up=link.get("up", True),
            addresses=frozenset(str(a) for s, i, a in self.addresses if s == ns and i == name),
            isolated=link.get("isolated", False), mtu=link["mtu"], mac=link.get("mac", ""),
            group=link.get("group", 0), hairpin=link.get("hairpin", False), learning=link.get("learning", True),
            locked=link.get("locked", False), static_macs=frozenset(link.get("static_macs", ())),
        )

    def observe(self, sandboxes: Mapping[str, Iterable[str]], owner: Owner, sysctls: Iterable[str]) -> Observed:
        """The modelled links, namespaces and nft tables."""
        links = {name: self._state(None, name, link) for (ns, name), link in self.links.items() if ns is None}
        inside = {sandbox: {name: self._state(ns, name, link) for (ns, name), link in self.links.items()
                            if ns == sandbox}
                  for sandbox in sandboxes if sandbox in self.netns}
        routes = {name: {version: (str(gateway), ifname) for (ns, version), (gateway, ifname) in self.routes.items()
                         if ns == name}
                  for name in inside}
        present = ("inet", owner.table) in self.nft_tables
        any_table = present or ("bridge", owner.table) in self.nft_tables
        statics = {name: frozenset((d, v) for s, d, v in self.static_routes if s == name) for name in inside}
        return Observed(links=links, netns=frozenset(self.netns), sandbox_links=inside, sandbox_routes=routes,
                        sandbox_statics=statics,
                        nft=self._observed_elements() if present else None,
                        ip_forward=self.sysctls.get("net.ipv4.ip_forward", "0"),
                        sysctls={k: self.sysctls[k] for k in sysctls if k in self.sysctls},
                        ruleset=self.ruleset if any_table else None)

    def host_facts(self) -> HostFacts:
        return replace(self.facts, listeners=tuple(self.host_listeners), routes=tuple(self.host_route_table))
