"""The reader of topology files (spec.parse): the file's top level, networks and sandboxes; its
lists (links, routes, shape, expect) are lists.ListReader's. Every value is checked where it was
written, through the engine's own validators, and every error kept with its line."""

from __future__ import annotations

import os
from ipaddress import ip_network
from typing import Any

from .. import portspec, taps, validate
from ..errors import InvalidInput, NsnetError

try:
    import yaml
except ImportError:  # a dependency (pyproject); say which package brings it
    raise NsnetError("topology files need PyYAML (Debian: python3-yaml; pip: PyYAML)") from None
from .lists import ListReader
from .spec import (BOOL, DRIVERS, INT, KINDS, KNOB, LABELS, MACVLAN_MODES, NETWORK_KEYS, SANDBOX_KEYS,
                   SPECIAL_NETWORKS, STR, STRS, TOP_KEYS, NetworkSpec, SandboxSpec, Topology, _kwarg, _listed,
                   _supports)


UNREADABLE = object()


class Reader(ListReader):
    """Walks the composed YAML nodes, so every value keeps the line it was written on."""

    def __init__(self, path: str, engine_type: type | None) -> None:
        self.path = path
        self.engine_type = engine_type
        self.errors: list[tuple[int, str]] = []
        self.declared_networks: set[str] = set()
        self.declared_sandboxes: set[str] = set()
        self.loader: yaml.SafeLoader | None = None

    def error(self, node: yaml.Node, message: str) -> None:
        self.errors.append((node.start_mark.line + 1, message))

    def value(self, node: yaml.Node) -> Any:
        """The node's Python value; UNREADABLE (and an error) for a tag or scalar YAML cannot make
        one of (`!!python/...`, `!!int x`): no value ever fails a type check silently."""
        assert self.loader is not None
        try:
            return self.loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            self.loader.constructed_objects, self.loader.recursive_objects = {}, {}
            problem = getattr(exc, "problem", None) or str(exc)
            found = (node.start_mark.line + 1, f"cannot read this value: {problem}")
            if found not in self.errors:
                self.errors.append(found)
            return UNREADABLE

    def mapping(self, node: yaml.Node, what: str) -> list[tuple[yaml.ScalarNode, yaml.Node]] | None:
        """The mapping's (key, value) nodes; duplicate and non-string keys are errors."""
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping")
            return None
        seen: dict[str, int] = {}
        pairs = []
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or not isinstance(self.value(key), str):
                self.error(key, f"{what}: keys must be strings")
                continue
            if key.value in seen:
                self.error(key, f"{what}: {key.value!r} is given twice (first on line {seen[key.value]})")
                continue
            seen[key.value] = key.start_mark.line + 1
            pairs.append((key, value))
        return pairs

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, f"{what} must be a list")
            return []
        return list(node.value)

    def typed(self, node: yaml.Node, kind: str, what: str) -> Any:
        """The value if it is of the kind, else None and an error."""
        value = self.value(node)
        if value is UNREADABLE:
            return None
        ok = {
            STR: lambda v: isinstance(v, str),
            STRS: lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
            BOOL: lambda v: isinstance(v, bool),
            INT: lambda v: isinstance(v, int) and not isinstance(v, bool),
            LABELS: lambda v: (isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, (str, int, float))
                                                           and not isinstance(x, bool) for k, x in v.items()))
            or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
            KNOB: lambda v: isinstance(v, (str, int, float)) and not isinstance(v, bool),
        }[kind](value)
        if not ok:
            self.error(node, f"{what} must be {kind}")
            return None
        if isinstance(value, dict):
            return {k: str(x) for k, x in value.items()}
        return value

    def check(self, node: yaml.Node, what: str, fn: Any, *args: Any) -> Any:
        """fn(*args), an engine validator: its refusal becomes this node's error."""
        try:
            return fn(*args)
        except InvalidInput as exc:
            self.error(node, f"{what}: {exc}")
            return None

    # The file

    def topology(self, text: str, known: tuple[str, ...]) -> Topology | None:
        self.loader = yaml.SafeLoader(text)
        try:
            root = self.loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            self.errors.append(((mark.line + 1) if mark else 1, f"not YAML: {exc.problem or exc.context}"))
            return None
        except yaml.YAMLError as exc:
            self.errors.append((1, f"not YAML: {exc}"))
            return None
        finally:
            self.loader.dispose()
        if root is None:
            self.errors.append((1, "the file is empty"))
            return None
        pairs = self.mapping(root, "the file")
        if pairs is None:
            return None
        sections: dict[str, yaml.Node] = {}
        for key, value in pairs:
            if key.value not in TOP_KEYS:
                self.error(key, f"unknown key {key.value!r} (known: {', '.join(TOP_KEYS)})")
            else:
                sections[key.value] = value
        name = os.path.splitext(os.path.basename(self.path))[0]
        if "name" in sections:
            given = self.typed(sections["name"], STR, "name")
            if given is not None and self.check(sections["name"], "name", validate.name, "topology name", given):
                name = given
        # References are checked against the names the file declares, valid or not: one mistake
        # is one error, not one more for each entry that names it.
        self.declared_networks = self.names(sections.get("networks"))
        self.declared_sandboxes = self.names(sections.get("sandboxes"))
        networks = self.networks(sections.get("networks"))
        sandboxes = self.sandboxes(sections.get("sandboxes"), networks)
        link_specs = self.links(sections.get("links"), sandboxes)
        route_specs = self.routes(sections.get("routes"), sandboxes, networks, link_specs)
        shapes = self.shapes(sections.get("shape"), sandboxes, link_specs)
        expectations = self.expectations(sections.get("expect"), self.declared_sandboxes | set(known))
        return Topology(name, self.path, networks, sandboxes, tuple(link_specs), tuple(route_specs), tuple(shapes),
                        tuple(expectations))

    @staticmethod
    def names(node: yaml.Node | None) -> set[str]:
        if not isinstance(node, yaml.MappingNode):
            return set()
        return {key.value for key, _ in node.value if isinstance(key, yaml.ScalarNode)}

    def entries(self, node: yaml.Node | None, what: str, keys: tuple[str, ...]) -> list[tuple[yaml.Node, dict]]:
        """A list of mappings with known keys: each as (its node, key -> (key node, value node))."""
        found = []
        for item in self.sequence(node, what) if node is not None else []:
            pairs = self.mapping(item, f"{what} entry")
            if pairs is None:
                continue
            fields = {}
            for key, value in pairs:
                if key.value not in keys:
                    self.error(key, f"{what}: unknown key {key.value!r} (known: {', '.join(keys)})")
                else:
                    fields[key.value] = (key, value)
            found.append((item, fields))
        return found

    def required(self, item: yaml.Node, fields: dict, key: str, what: str) -> str | None:
        if key not in fields:
            self.error(item, f"{what}: {key!r} is missing")
            return None
        return self.typed(fields[key][1], STR, f"{what}: {key}")

    # Sections

    def networks(self, node: yaml.Node | None) -> dict[str, NetworkSpec]:
        found: dict[str, NetworkSpec] = {}
        for key, body in (self.mapping(node, "networks") or []) if node is not None else []:
            name = key.value
            what = f"network {name!r}"
            if not self.check(key, what, validate.name, "network name", name):
                continue
            options: dict[str, Any] = {}
            lines: dict[str, yaml.Node] = {}
            if not (isinstance(body, yaml.ScalarNode) and self.value(body) is None):
                for opt, value in self.mapping(body, what) or []:
                    if opt.value not in NETWORK_KEYS:
                        self.error(opt, f"{what}: unknown key {opt.value!r} (known: {', '.join(NETWORK_KEYS)})")
                        continue
                    kwarg, kind = NETWORK_KEYS[opt.value]
                    got = self.typed(value, kind, f"{what}: {opt.value}")
                    if got is not None:
                        options[opt.value] = got
                        lines[opt.value] = value
            if self.network_valid(name, options, lines, key):
                found[name] = NetworkSpec(name, key.start_mark.line + 1, options)
        return found

    def network_valid(self, name: str, options: dict, lines: dict, key: yaml.Node) -> bool:
        what = f"network {name!r}"
        ok = True
        driver = options.get("driver", "bridge")
        if driver not in DRIVERS:
            self.error(lines["driver"], f"{what}: driver {driver!r} is not one of {', '.join(DRIVERS)}")
            ok = False
        elif driver != "bridge" and not _supports(self.engine_type, "create_network", "driver"):
            self.error(lines["driver"], f"{what}: driver {driver!r} needs macvlan networks, which this nsnet lacks")
            ok = False
        for opt in ("parent", "mode"):
            if opt in options and driver != "macvlan":
                self.error(lines[opt], f"{what}: {opt} is for driver macvlan only")
                ok = False
        if "parent" in options:
            ok &= self.check(lines["parent"], what, validate.interface_name, "parent", options["parent"]) is not None
        if "mode" in options and options["mode"] not in MACVLAN_MODES:
            self.error(lines["mode"], f"{what}: mode {options['mode']!r} is not one of {', '.join(MACVLAN_MODES)}")
            ok = False
        if driver == "macvlan" and "parent" not in options:
            self.error(key, f"{what}: driver macvlan needs a parent")
            ok = False
        listed = lambda v: [v] if isinstance(v, str) else list(v or [])  # noqa: E731
        try:
            validate.network_request(
                name, subnets=listed(options.get("subnet")), gateways=listed(options.get("gateway")),
                ip_ranges=listed(options.get("ip_range")), ipv4=options.get("ipv4", True),
                ipv6=options.get("ipv6", False), ipv6_routed=options.get("ipv6_routed", False),
                internal=options.get("internal", False), mtu_value=options.get("mtu", 1500),
                icc=options.get("icc", True), label_items=_kwarg(options.get("label", [])),
                ipv4_routed=options.get("ipv4_routed", False), dns=options.get("dns", True),
                dns_servers=listed(options.get("dns_servers")))
        except InvalidInput as exc:
            where = exc.field.lstrip("-").replace("-", "_").replace("no_ipv4", "ipv4").replace("network name", "")
            where = {"dns": "dns_servers" if "dns_servers" in lines else "dns"}.get(where, where)
            self.error(lines.get(where, key), f"{what}: {exc}")
            ok = False
        return ok

    def sandboxes(self, node: yaml.Node | None, networks: dict[str, NetworkSpec]) -> dict[str, SandboxSpec]:
        found: dict[str, SandboxSpec] = {}
        pairs = (self.mapping(node, "sandboxes") or []) if node is not None else []
        names = {key.value for key, _ in pairs}
        for key, body in pairs:
            name = key.value
            what = f"sandbox {name!r}"
            if not self.check(key, what, validate.name, "sandbox name", name):
                continue
            options: dict[str, Any] = {}
            lines: dict[str, yaml.Node] = {}
            nets: list[str] = []
            ok = True
            if not (isinstance(body, yaml.ScalarNode) and self.value(body) is None):
                for opt, value in self.mapping(body, what) or []:
                    if opt.value not in SANDBOX_KEYS:
                        self.error(opt, f"{what}: unknown key {opt.value!r} (known: {', '.join(SANDBOX_KEYS)})")
                        ok = False
                        continue
                    got = self.typed(value, SANDBOX_KEYS[opt.value][1], f"{what}: {opt.value}")
                    if got is None:
                        ok = False
                        continue
                    if opt.value == "networks":
                        nets = [got] if isinstance(got, str) else got
                        lines["networks"] = value
                    else:
                        options[opt.value] = got
                        lines[opt.value] = value
            ok &= self.sandbox_networks(what, nets, lines.get("networks", key), networks, names - {name})
            ok &= self.sandbox_options(what, options, lines, nets, networks)
            if ok:
                found[name] = SandboxSpec(name, key.start_mark.line + 1, tuple(nets), options)
        return found

    def sandbox_networks(self, what: str, nets: list[str], node: yaml.Node, networks: dict[str, NetworkSpec],
                         others: set[str]) -> bool:
        ok = True
        items = list(node.value) if isinstance(node, yaml.SequenceNode) else [node] * len(nets)
        for net, item in zip(nets, items):
            if nets.count(net) > 1:
                self.error(item, f"{what}: network {net!r} is listed twice")
                return False
            special = net in SPECIAL_NETWORKS or net.startswith("container:")
            if special and len(nets) > 1:
                self.error(item, f"{what}: network {net!r} cannot be joined with other networks")
                ok = False
            elif net.startswith("container:") and net.partition(":")[2] not in others:
                self.error(item, f"{what}: {net!r} names no other sandbox of the file")
                ok = False
            elif not special and net not in self.declared_networks:
                self.error(item, f"{what}: network {net!r} is not in the file's networks")
                ok = False
        return ok

    def sandbox_options(self, what: str, options: dict, lines: dict, nets: list[str],
                        networks: dict[str, NetworkSpec]) -> bool:
        ok = True
        first = networks.get(nets[0]) if nets else None
        for opt, version in (("ip", 4), ("ip6", 6)):
            if opt in options:
                got = self.check(lines[opt], what, validate.address, opt, options[opt], version)
                ok &= got is not None
                subnets = [s for s in _listed((first.options if first else {}).get("subnet"))]
                mine = [ip_network(s, strict=False) for s in subnets if ip_network(s, strict=False).version == version]
                if got is not None and mine and got not in mine[0]:
                    self.error(lines[opt], f"{what}: {opt} {options[opt]} is outside the subnet {mine[0]} of network"
                                           f" {nets[0]!r}")
                    ok = False
        if "publish" in options:
            ok &= self.check(lines["publish"], what, portspec.parse_all, _listed(options["publish"])) is not None
        if "alias" in options:
            ok &= self.check(lines["alias"], what, validate.aliases, tuple(_listed(options["alias"]))) is not None
        if "label" in options:
            ok &= self.check(lines["label"], what, validate.labels, _kwarg(options["label"])) is not None
        if "mac" in options:
            ok &= self.check(lines["mac"], what, taps.guest_mac, "mac", options["mac"]) is not None
        for opt in ("owner", "group"):
            if opt in options:
                ok &= self.check(lines[opt], what, taps.identity, opt, options[opt]) is not None
        kind = options.get("kind", "netns")
        if kind not in KINDS:
            self.error(lines["kind"], f"{what}: kind {kind!r} is not one of {', '.join(KINDS)}")
            ok = False
        for opt in ("owner", "group", "mac"):
            if opt in options and kind != "tap":
                self.error(lines[opt], f"{what}: {opt} is for kind tap only")
                ok = False
        for opt in ("kind", "owner", "group", "mac"):
            if opt in options and kind == "tap" and not _supports(self.engine_type, "create_sandbox",
                                                                  SANDBOX_KEYS[opt][0]):
                self.error(lines[opt], f"{what}: {opt} needs tap endpoints, which this nsnet lacks")
                ok = False
        if ("ip" in options or "ip6" in options or "publish" in options or "alias" in options) and (
                not nets or any(n in SPECIAL_NETWORKS or n.startswith("container:") for n in nets)):
            self.error(lines.get("ip", lines.get("ip6", lines.get("publish", lines.get("alias")))),
                       f"{what}: ip, ip6, publish and alias need a network of the file")
            ok = False
        return ok
