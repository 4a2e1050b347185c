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
from ipaddress import ip_address, ip_network
from typing import Any

from ..errors import NsnetError

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
        # No networks: its loopback only (a lab node joined by links alone), never the engine's
        # default network, which no topology makes or removes.
        return {"networks": list(self.networks) or ["none"], **given}

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


def name_of(path: str) -> str:
    """The topology a file names, for `down`: its `name:` when valid, else its file name's stem. The
    rest of the file is not read, so a file edited into errors still takes its topology down."""
    try:
        topology = load(path)
    except TopologyError as exc:
        import yaml

        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle)
        except (OSError, yaml.YAMLError):
            raise exc from None  # its name cannot be known
        if not isinstance(data, dict):
            raise exc from None
        given = data.get("name")
        if given is not None:
            if not isinstance(given, str) or not _valid_name(given):
                raise exc from None
            return given
        return os.path.splitext(os.path.basename(path))[0]
    return topology.name


def _valid_name(text: str) -> bool:
    from .. import validate
    from ..errors import InvalidInput

    try:
        validate.name("topology name", text)
    except InvalidInput:
        return False
    return True


def parse(text: str, path: str, *, known_sandboxes: tuple[str, ...] = (), engine_type: type | None = None) -> Topology:
    from .reader import Reader

    reader = Reader(path, engine_type)
    topology = reader.topology(text, known_sandboxes)
    if reader.errors:
        ordered = sorted(reader.errors, key=lambda e: e[0])  # by line; a line's errors in the order found
        raise TopologyError([f"{path}:{line}: {message}" for line, message in ordered])
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
