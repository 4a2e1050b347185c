"""Topology files: YAML read with its line numbers into a `Topology`, every error of the file at once.

The file's keys map onto the engine's keyword arguments one line each (NETWORK_KEYS, SANDBOX_KEYS,
SHAPE_KEYS below), and every value goes through the validators the engine itself calls, so a file
that loads is one the engine accepts: nothing is touched before the whole file is known good.
Errors are `FILE:LINE: message` lines (LINE from 1), in file order.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_interface, ip_network
from typing import Any

import yaml

from .. import links as link_rules
from .. import portspec, validate
from .. import routes as route_rules
from ..errors import InvalidInput, NsnetError

# Value kinds a key takes.
STR, STRS, BOOL, INT, LABELS, KNOB = "a string", "a string or a list of strings", "true or false", "an integer", \
    "a mapping of labels or a list of KEY=VALUE", "a string or a number"

# file key       -> (Engine.create_network kwarg, kind)
NETWORK_KEYS = {
    "subnet":       ("subnet", STRS),
    "gateway":      ("gateway", STRS),
    "ip_range":     ("ip_range", STRS),
    "ipv4":         ("ipv4", BOOL),
    "ipv6":         ("ipv6", BOOL),
    "ipv4_routed":  ("ipv4_routed", BOOL),
    "ipv6_routed":  ("ipv6_routed", BOOL),
    "internal":     ("internal", BOOL),
    "mtu":          ("mtu", INT),
    "icc":          ("icc", BOOL),
    "label":        ("labels", LABELS),
    "dns":          ("dns", BOOL),
    "dns_servers":  ("dns_servers", STRS),
    "driver":       ("driver", STR),   # bridge (default) | macvlan
    "parent":       ("parent", STR),   # macvlan: the parent interface
    "mode":         ("mode", STR),     # macvlan: bridge | private | vepa | passthru
}
# file key       -> (Engine.create_sandbox kwarg, kind)
SANDBOX_KEYS = {
    "networks":     ("networks", STRS),  # a file network, or host | none | container:SANDBOX alone
    "ip":           ("ip", STR),
    "ip6":          ("ip6", STR),
    "publish":      ("publish", STRS),
    "alias":        ("aliases", STRS),
    "label":        ("labels", LABELS),
    "kind":         ("kind", STR),     # netns (default) | tap
    "owner":        ("owner", INT),    # tap: the uid that may open it
    "group":        ("group", INT),    # tap: the gid that may open it
    "mac":          ("mac", STR),      # tap: the guest's MAC
}
# file key       -> Engine.shape kwarg (sandbox positional; network | link names the side)
SHAPE_KEYS = {
    "sandbox":      "sandbox",
    "network":      "network",
    "link":         "link",
    "rate":         "rate",
    "delay":        "delay",
    "jitter":       "jitter",
    "loss":         "loss",
    "reorder":      "reorder",
    "limit":        "limit",
    "direction":    "direction",
}
LINK_KEYS = ("a", "b", "ip", "mtu")
ROUTE_KEYS = ("sandbox", "dst", "via")
EXPECT_KEYS = ("from", "reach", "not_reach")
TOP_KEYS = ("name", "networks", "sandboxes", "links", "routes", "shape", "expect")
DRIVERS = ("bridge", "macvlan")
MACVLAN_MODES = ("bridge", "private", "vepa", "passthru")
KINDS = ("netns", "tap")
SPECIAL_NETWORKS = ("host", "none")  # and container:SANDBOX
PROTOCOLS = ("tcp", "udp")


class TopologyError(NsnetError):
    """A topology file is wrong: every error found, one `FILE:LINE: message` line each."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    line: int
    options: dict[str, Any]  # the file's keys and values, as written (the ledger's record)

    @property
    def kwargs(self) -> dict[str, Any]:
        return {NETWORK_KEYS[k][0]: _kwarg(v) for k, v in self.options.items()
                if not (k == "driver" and v == "bridge")}


@dataclass(frozen=True)
class SandboxSpec:
    name: str
    line: int
    networks: tuple[str, ...]
    options: dict[str, Any]  # every key but networks, as written

    @property
    def kwargs(self) -> dict[str, Any]:
        given = {SANDBOX_KEYS[k][0]: _kwarg(v) for k, v in self.options.items() if not (k == "kind" and v == "netns")}
        return {"networks": list(self.networks), **given}

    @property
    def special(self) -> bool:
        """On host, none or another sandbox's namespace: no endpoints of its own to connect."""
        return any(n in SPECIAL_NETWORKS or n.startswith("container:") for n in self.networks)

    @property
    def record(self) -> dict[str, Any]:
        """What decides whether the sandbox must be made again: all but networks after the first."""
        first = self.networks[:1] if not self.special else self.networks
        return {**self.options, "networks": list(first)}


@dataclass(frozen=True)
class LinkSpec:
    a: str
    b: str
    ips: tuple[str, ...]  # SANDBOX=CIDR, as `nsnet link --ip`
    mtu: int
    line: int

    @property
    def key(self) -> str:
        return "|".join(sorted((self.a, self.b)))


@dataclass(frozen=True)
class RouteSpec:
    sandbox: str
    dst: str
    via: str
    line: int

    @property
    def key(self) -> str:
        return f"{self.sandbox}|{ip_network(self.dst)}"


@dataclass(frozen=True)
class ShapeSpec:
    sandbox: str
    network: str | None
    link: str | None
    knobs: dict[str, str]
    line: int

    @property
    def key(self) -> str:
        return f"{self.sandbox}|network:{self.network}" if self.network else f"{self.sandbox}|link:{self.link}"

    @property
    def side(self) -> str:
        return f"network {self.network}" if self.network else f"link to {self.link}"


@dataclass(frozen=True)
class Expectation:
    source: str
    target: str  # as written: SANDBOX or IP, then :PORT and /PROTO
    host: str    # the sandbox or IP
    port: int | None
    protocol: str  # tcp, udp, or icmp when no port
    reach: bool
    line: int

    @property
    def text(self) -> str:
        return f"{'reach' if self.reach else 'not_reach'} {self.target}"


@dataclass(frozen=True)
class Topology:
    name: str
    path: str
    networks: dict[str, NetworkSpec] = field(default_factory=dict)
    sandboxes: dict[str, SandboxSpec] = field(default_factory=dict)
    links: tuple[LinkSpec, ...] = ()
    routes: tuple[RouteSpec, ...] = ()
    shapes: tuple[ShapeSpec, ...] = ()
    expectations: tuple[Expectation, ...] = ()


def _kwarg(value: Any) -> Any:
    if isinstance(value, dict):  # labels as a mapping
        return [f"{k}={v}" for k, v in value.items()]
    return value


def load(path: str, *, known_sandboxes: tuple[str, ...] = (), engine_type: type | None = None) -> Topology:
    """Read and check the file; TopologyError lists all its errors. `known_sandboxes` may be
    named by expectations besides the file's own (verify: the ledger's sandboxes)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise NsnetError(f"cannot read {path}: {exc.strerror}") from None
    return parse(text, path, known_sandboxes=known_sandboxes, engine_type=engine_type)


def parse(text: str, path: str, *, known_sandboxes: tuple[str, ...] = (), engine_type: type | None = None) -> Topology:
    reader = _Reader(path, engine_type)
    topology = reader.topology(text, known_sandboxes)
    if reader.errors:
        raise TopologyError([f"{path}:{line}: {message}" for line, message in sorted(reader.errors, key=lambda e: e[0])])
    assert topology is not None
    return topology


def _supports(engine_type: type | None, method: str, kwarg: str | None = None) -> bool:
    if engine_type is None:
        from ..engine import Engine

        engine_type = Engine
    fn = getattr(engine_type, method, None)
    if fn is None:
        return False
    return kwarg is None or kwarg in inspect.signature(fn).parameters


class _Reader:
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
        assert self.loader is not None
        return self.loader.construct_object(node, deep=True)

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
            ok &= self.check(lines["mac"], what, validate.mac, "mac", options["mac"]) is not None
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

    def links(self, node: yaml.Node | None, sandboxes: dict[str, SandboxSpec]) -> list[LinkSpec]:
        found: list[LinkSpec] = []
        seen: dict[str, int] = {}
        for item, fields in self.entries(node, "links", LINK_KEYS):
            a, b = (self.required(item, fields, end, "link") for end in ("a", "b"))
            if a is None or b is None:
                continue
            bad = False
            for end, name in (("a", a), ("b", b)):
                if name not in self.declared_sandboxes:
                    self.error(fields[end][1], f"link: sandbox {name!r} is not in the file's sandboxes")
                    bad = True
            if a == b:
                self.error(fields["b"][1], f"link: {a!r} is both ends")
                continue
            ips: list[str] = []
            if "ip" in fields:
                given = self.typed(fields["ip"][1], LABELS, "link: ip")
                if given is None:
                    continue
                if isinstance(given, list):
                    self.error(fields["ip"][1], "link: ip must be a mapping SANDBOX: CIDR")
                    continue
                ips = [f"{k}={v}" for k, v in given.items()]
                if self.check(fields["ip"][1], f"link {a}-{b}", link_rules.addresses, ips, a, b) is None:
                    bad = True
            mtu = 1500
            if "mtu" in fields:
                mtu = self.typed(fields["mtu"][1], INT, "link: mtu")
                if mtu is None or self.check(fields["mtu"][1], f"link {a}-{b}", link_rules.mtu, mtu) is None:
                    bad = True
            spec = LinkSpec(a, b, tuple(ips), mtu or 1500, item.start_mark.line + 1)
            if spec.key in seen:
                self.error(item, f"link {a}-{b} is given twice (first on line {seen[spec.key]})")
                continue
            seen[spec.key] = spec.line
            if not bad:
                found.append(spec)
        return found

    def routes(self, node: yaml.Node | None, sandboxes: dict[str, SandboxSpec], networks: dict[str, NetworkSpec],
               link_specs: list[LinkSpec]) -> list[RouteSpec]:
        found: list[RouteSpec] = []
        seen: dict[str, int] = {}
        for item, fields in self.entries(node, "routes", ROUTE_KEYS):
            sandbox, dst, via = (self.required(item, fields, k, "route") for k in ROUTE_KEYS)
            if sandbox is None or dst is None or via is None:
                continue
            bad = False
            if sandbox not in self.declared_sandboxes:
                self.error(fields["sandbox"][1], f"route: sandbox {sandbox!r} is not in the file's sandboxes")
                bad = True
            wanted = self.check(fields["dst"][1], "route", route_rules.destination, dst)
            gateway = self.check(fields["via"][1], "route", route_rules.gateway, via, wanted) if wanted else None
            if wanted is None or gateway is None or bad:
                continue
            subnets = self.known_subnets(sandboxes[sandbox], networks, link_specs) if sandbox in sandboxes else None
            if subnets is not None and not route_rules.reachable(gateway, subnets):
                self.error(fields["via"][1], f"route: gateway {via} is on none of {sandbox}'s networks or links")
                continue
            spec = RouteSpec(sandbox, dst, via, item.start_mark.line + 1)
            if spec.key in seen:
                self.error(item, f"route: {sandbox} to {wanted} is given twice (first on line {seen[spec.key]})")
                continue
            seen[spec.key] = spec.line
            found.append(spec)
        return found

    @staticmethod
    def known_subnets(sandbox: SandboxSpec, networks: dict[str, NetworkSpec], link_specs: list[LinkSpec]) -> list | None:
        """The subnets the sandbox will have an address in, or None when one is left to IPAM."""
        subnets = []
        for net in sandbox.networks:
            spec = networks.get(net)
            if spec is None:
                return None  # a network of the file with errors of its own
            given = _listed(spec.options.get("subnet"))
            if not given:
                return None
            subnets += [ip_network(s, strict=False) for s in given]
        for lk in link_specs:
            for item in lk.ips:
                end, _, cidr = item.partition("=")
                if end == sandbox.name:
                    subnets.append(ip_interface(cidr).network)
        return subnets

    def shapes(self, node: yaml.Node | None, sandboxes: dict[str, SandboxSpec],
               link_specs: list[LinkSpec]) -> list[ShapeSpec]:
        found: list[ShapeSpec] = []
        seen: dict[str, int] = {}
        for item, fields in self.entries(node, "shape", tuple(SHAPE_KEYS)):
            sandbox = self.required(item, fields, "sandbox", "shape")
            if sandbox is None:
                continue
            if not _supports(self.engine_type, "shape"):
                self.error(item, "shape: this nsnet has no shaping (nsnet shape)")
                continue
            if sandbox not in self.declared_sandboxes:
                self.error(fields["sandbox"][1], f"shape: sandbox {sandbox!r} is not in the file's sandboxes")
                continue
            if sandbox not in sandboxes:
                continue
            sides = [k for k in ("network", "link") if k in fields]
            if len(sides) != 1:
                self.error(item, "shape: give one of network or link")
                continue
            side = self.typed(fields[sides[0]][1], STR, f"shape: {sides[0]}")
            if side is None:
                continue
            if sides[0] == "network" and side not in sandboxes[sandbox].networks:
                self.error(fields["network"][1], f"shape: sandbox {sandbox!r} is not on network {side!r}")
                continue
            if sides[0] == "link" and not any({lk.a, lk.b} == {sandbox, side} for lk in link_specs):
                self.error(fields["link"][1], f"shape: sandbox {sandbox!r} has no link to {side!r}")
                continue
            knobs = {}
            for knob in ("rate", "delay", "jitter", "loss", "reorder", "limit", "direction"):
                if knob in fields:
                    value = self.typed(fields[knob][1], KNOB, f"shape: {knob}")
                    if value is not None:
                        knobs[knob] = str(value)
            if not any(k != "direction" for k in knobs):
                self.error(item, "shape: give at least one of rate, delay, jitter, loss, reorder, limit")
                continue
            spec = ShapeSpec(sandbox, side if sides[0] == "network" else None, side if sides[0] == "link" else None,
                             knobs, item.start_mark.line + 1)
            if spec.key in seen:
                self.error(item, f"shape: {sandbox}'s {spec.side} is given twice (first on line {seen[spec.key]})")
                continue
            seen[spec.key] = spec.line
            found.append(spec)
        return found

    def expectations(self, node: yaml.Node | None, sandboxes: set[str]) -> list[Expectation]:
        found = []
        for item, fields in self.entries(node, "expect", EXPECT_KEYS):
            source = self.required(item, fields, "from", "expect")
            kinds = [k for k in ("reach", "not_reach") if k in fields]
            if len(kinds) != 1:
                self.error(item, "expect: give one of reach or not_reach")
                continue
            target = self.typed(fields[kinds[0]][1], STR, f"expect: {kinds[0]}")
            if source is None or target is None:
                continue
            if source not in sandboxes:
                self.error(fields["from"][1], f"expect: sandbox {source!r} is not in the file's sandboxes")
                continue
            try:
                host, port, protocol = parse_target(target)
            except ValueError as exc:
                self.error(fields[kinds[0]][1], f"expect: {kinds[0]} {target!r}: {exc}")
                continue
            if not _is_ip(host) and host not in sandboxes:
                self.error(fields[kinds[0]][1], f"expect: sandbox {host!r} is not in the file's sandboxes")
                continue
            found.append(Expectation(source, target, host, port, protocol, kinds[0] == "reach",
                                     item.start_mark.line + 1))
        return found


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _is_ip(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


def parse_target(text: str) -> tuple[str, int | None, str]:
    """`db`, `db:5432`, `db:53/udp`, `10.0.0.5:80/tcp`, `[fd00::5]:80` → (host, port, protocol);
    protocol icmp when no port is given."""
    rest, slash, protocol = text.partition("/")
    if slash and protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError("an IPv6 address with a port is written [ADDRESS]:PORT")
        port_text = tail[1:] if tail else ""
    elif rest.count(":") > 1:  # a bare IPv6 address
        host, port_text = rest, ""
    else:
        host, _, port_text = rest.partition(":")
    if not host:
        raise ValueError("names no sandbox or address")
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"port {port_text!r} is not from 1 to 65535")
        return host, int(port_text), protocol or "tcp"
    if slash:
        raise ValueError(f"{protocol} needs a port")
    return host, None, "icmp"
