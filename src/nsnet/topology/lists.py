"""The lists of a topology file (links, routes, shape, expect), read by the Reader (reader.py),
whose helpers (error, typed, check, entries, required) they use."""

from __future__ import annotations

from ipaddress import ip_interface, ip_network

from .. import links as link_rules
from .. import shaping
from ..errors import InvalidInput
from .. import routes as route_rules
from .spec import (INT, KNOB, LABELS, LINK_KEYS, ROUTE_KEYS, SHAPE_KEYS, STR, EXPECT_KEYS, Expectation, LinkSpec,
                   NetworkSpec, RouteSpec, SandboxSpec, ShapeSpec, _is_ip, _listed, _supports, parse_target)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import yaml


class ListReader:
    errors: list[tuple[int, str]]
    declared_sandboxes: set[str]
    engine_type: type | None

    def links(self, node: yaml.Node | None, sandboxes: dict[str, SandboxSpec]) -> list[LinkSpec]:
        found: list[LinkSpec] = []
        seen: dict[str, int] = {}
        for item, fields in self.entries(node, "links", LINK_KEYS):
            a, b = (self.required(item, fields, end, "link") for end in ("a", "b"))
            if a is None or b is None:
                continue
            if a == b:
                self.error(fields["b"][1], f"link: {a!r} is both ends")
                continue
            bad = False
            for end, name in (("a", a), ("b", b)):
                if name not in self.declared_sandboxes:
                    self.error(fields[end][1], f"link: sandbox {name!r} is not in the file's sandboxes")
                    bad = True
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
    def known_subnets(sandbox: SandboxSpec, networks: dict[str, NetworkSpec],
                      link_specs: list[LinkSpec]) -> list | None:
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
            try:  # the values as `nsnet shape` judges them, before anything is made
                shaping.settings(**{k: v for k, v in knobs.items() if k != "direction"})
                shaping.direction(knobs.get("direction", "out"))
            except InvalidInput as exc:
                self.error(fields.get(exc.field.removeprefix("--"), (None, item))[1], f"shape: {exc}")
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
