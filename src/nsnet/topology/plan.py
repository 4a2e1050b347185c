"""The difference between a topology file and what its topology made, as engine calls in order.

Pure: `plan_up` and `plan_down` read a `State` (the ledger's networks, sandboxes, links, routes and
which topology made what) and return `Step`s; nothing here changes anything. Each step is one engine
call, shown as one plan line (`+` makes, `~` changes, `-` removes).

What `up` does with a difference (the choices, documented in the README):
- an object of the file that exists but another topology, or no topology, made: an error (it is
  never taken over);
- a network whose options changed: made again, its sandboxes of this topology disconnected and
  connected again around it (a sandbox whose FIRST network it is made again whole, so its address,
  ports and aliases stay on that network); a sandbox of no topology attached to it: an error;
- a sandbox whose networks changed after the first: connect/disconnect; any other change (first
  network, ip, ip6, publish, alias, label, kind, owner, group, mac): made again (removed then created,
  its links, routes and shaping with it);
- links, routes and shaping that changed: removed and made again; a route over a network or link
  being cut is removed first and made again after.
Removal order: routes, shaping, links, endpoints, sandboxes, networks; creation the reverse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from typing import Any

from ..model import Link, Network, Route, Sandbox
from . import calls
from .spec import Topology, TopologyError


ID = "_id"  # the key of a recorded spec that holds the ledger id of what the step made


@dataclass(frozen=True)
class Step:
    sign: str  # + make, ~ change, - remove
    text: str
    run: Callable[[Any], Any]  # given the engine
    own: tuple[str, str, dict] | None = None  # (kind, key, spec) recorded before run
    disown: tuple[str, str] | None = None  # (kind, key) forgotten after run
    with_it: tuple[tuple[str, str], ...] = ()  # (kind, key) of records whose objects went with this one

    @property
    def line(self) -> str:
        return f"{self.sign} {self.text}"


@dataclass(frozen=True)
class State:
    networks: dict[str, Network] = field(default_factory=dict)
    sandboxes: dict[str, Sandbox] = field(default_factory=dict)
    links: tuple[Link, ...] = ()
    routes: tuple[Route, ...] = ()
    owned: dict[tuple[str, str], tuple[str, dict]] = field(default_factory=dict)  # (kind, key) -> (topology, spec)

    @classmethod
    def read(cls, engine: Any) -> State:
        return cls({n.name: n for n in engine.networks()}, {s.name: s for s in engine.sandboxes()},
                   tuple(engine.links()), tuple(engine.routes()),
                   {(kind, key): (topo, spec) for topo, kind, key, spec in engine.topology_objects()})

    def mine(self, topology: str, kind: str) -> dict[str, dict]:
        """Topology's objects of a kind: key -> the file's entry as applied (without the ledger id)."""
        return {key: {f: v for f, v in spec.items() if f != ID} for (k, key), (topo, spec) in self.owned.items()
                if k == kind and topo == topology}

    def foreign(self, topology: str, kind: str, key: str) -> bool:
        """Whether the object of that name is not the one the topology made (removed and made again
        by another hand since): the ledger's id differs from the one recorded."""
        recorded = self.owned.get((kind, key), ("", {}))[1].get(ID)
        actual = {"network": self.networks.get(key), "sandbox": self.sandboxes.get(key),
                  "link": _link_of(self, key)}.get(kind)
        return recorded is not None and actual is not None and actual.id != recorded


def _link_key(a: str, b: str) -> str:
    return "|".join(sorted((a, b)))


def _link_of(state: State, key: str) -> Link | None:
    return next((lk for lk in state.links if _link_key(lk.a.sandbox, lk.b.sandbox) == key), None)


def _link_spec_of(link: Link) -> tuple[frozenset, int]:
    return frozenset(f"{e.sandbox}={a}" for e in link.ends for a in e.addresses), link.mtu


def _route_key(route: Route) -> str:
    return f"{route.sandbox}|{route.dst}"


class _Planner:
    def __init__(self, topology: Topology, state: State) -> None:
        self.t = topology
        self.s = state
        self.errors: list[tuple[int, str]] = []
        self.buckets: dict[str, list[Step]] = {b: [] for b in (
            "route-", "shape-", "unlink", "disconnect", "sandbox-", "network-",
            "network+", "sandbox+", "connect", "link", "route+", "shape+")}
        self.sandbox_remade: set[str] = set()  # removed and created again (or created)
        self.network_remade: set[str] = set()
        self.cut: dict[str, list] = {}  # sandbox -> subnets it loses for a while (disconnects, unlinks)
        self.relinked: set[str] = set()

    def add(self, bucket: str, step: Step) -> None:
        self.buckets[bucket].append(step)

    def claim(self, kind: str, key: str, actual_id: str | None, line: int, shown: str) -> bool:
        """Whether the object is this topology's to change; an error when it is someone else's.
        `actual_id`: the ledger's id of the object, "" for one without an id, None when absent."""
        owner = self.s.owned.get((kind, key))
        if owner is not None and owner[0] != self.t.name:
            self.errors.append((line, f"{shown} belongs to topology {owner[0]!r}"))
            return False
        if owner is not None and actual_id and owner[1].get(ID, actual_id) != actual_id:
            self.errors.append((line, f"{shown} was removed and made again by another hand since topology"
                                      f" {self.t.name!r} made it: it is not taken over (remove it)"))
            return False
        if actual_id is not None and owner is None:
            self.errors.append((line, f"{shown} exists and was not made by topology {self.t.name!r}: it is not taken"
                                      " over (remove it, or rename it in the file)"))
            return False
        return True

    # Networks

    def networks(self) -> None:
        t, s = self.t, self.s
        mine = s.mine(t.name, "network")
        for name, spec in t.networks.items():
            exists = name in s.networks
            if not self.claim("network", name, s.networks[name].id if exists else None, spec.line, f"network {name!r}"):
                continue
            if exists and mine.get(name) == spec.options:
                continue
            if exists:
                strangers = [sb.name for sb in s.sandboxes.values() if sb.endpoint(name) is not None
                             and s.owned.get(("sandbox", sb.name), ("",))[0] != t.name]
                if strangers:
                    self.errors.append((spec.line, f"network {name!r} changed, but sandboxes topology {t.name!r} did"
                                                   f" not make are attached ({', '.join(sorted(strangers))}): its"
                                                   " options cannot be changed"))
                    continue
                self.network_remade.add(name)
                self.add("network-", Step("-", f"remove network {name}", calls.remove_network(name)))
            self.add("network+", Step("+", f"create network {name}", calls.create_network(name, spec.kwargs),
                                      own=("network", name, spec.options)))
        for name in sorted(set(mine) - set(t.networks)):
            if name in s.networks:
                strangers = [sb.name for sb in s.sandboxes.values() if sb.endpoint(name) is not None
                             and s.owned.get(("sandbox", sb.name), ("",))[0] != t.name]
                if strangers:
                    self.errors.append((1, f"network {name!r} is no longer in the file, but sandboxes topology"
                                           f" {t.name!r} did not make are attached ({', '.join(sorted(strangers))})"))
                    continue
            self.add("network-", Step("-", f"remove network {name}", calls.remove_network(name),
                                      disown=("network", name)))

    # Sandboxes

    def sandboxes(self) -> None:
        t, s = self.t, self.s
        mine = s.mine(t.name, "sandbox")
        for name, spec in t.sandboxes.items():
            current = s.sandboxes.get(name)
            if not self.claim("sandbox", name, current.id if current is not None else None, spec.line,
                              f"sandbox {name!r}"):
                continue
            remake = current is None or mine.get(name) != spec.record or (
                not spec.special and spec.networks and spec.networks[0] in self.network_remade)
            if remake:
                if current is not None:
                    self.remove_sandbox(name, forget=False)
                self.sandbox_remade.add(name)
                self.add("sandbox+", Step("+", f"create sandbox {name}", calls.create_sandbox(name, spec.kwargs),
                                          own=("sandbox", name, spec.record)))
                continue
            if spec.special:
                continue
            have = [e.network for e in current.endpoints]
            for net in have:
                if net not in spec.networks or net in self.network_remade:
                    endpoint = current.endpoint(net)
                    self.cut.setdefault(name, []).extend(a.network for a in endpoint.addresses)
                    self.add("disconnect", Step("~", f"disconnect {name} from {net}", calls.disconnect(net, name)))
            for net in spec.networks:
                if net not in have or net in self.network_remade:
                    self.add("connect", Step("~", f"connect {name} to {net}", calls.connect(net, name)))
        for name in sorted(set(mine) - set(t.sandboxes)):
            self.remove_sandbox(name, forget=True)

    def remove_sandbox(self, name: str, forget: bool) -> None:
        self.sandbox_remade.add(name)
        self.add("sandbox-", Step("-", f"remove sandbox {name}", calls.remove_sandbox(name),
                                  disown=("sandbox", name) if forget else None))

    # Links

    def links(self) -> None:
        t, s = self.t, self.s
        mine = s.mine(t.name, "link")
        for spec in t.links:
            current = _link_of(s, spec.key)
            gone_with_end = current is not None and bool({spec.a, spec.b} & self.sandbox_remade)
            if not self.claim("link", spec.key, current.id if current is not None else None, spec.line,
                              f"link {spec.a}-{spec.b}"):
                continue
            record = {"a": spec.a, "b": spec.b, "ip": sorted(spec.ips), "mtu": spec.mtu}
            if current is not None and not gone_with_end and _link_spec_of(current) == (frozenset(spec.ips), spec.mtu):
                continue
            if current is not None:
                self.unlink(current, forget=False)
            self.relinked.add(spec.key)
            self.add("link", Step("+", f"link {spec.a} {spec.b}", calls.link(spec.a, spec.b, list(spec.ips), spec.mtu),
                                  own=("link", spec.key, record)))
        wanted = {spec.key for spec in t.links}
        for key in sorted(set(mine) - wanted):
            current = _link_of(s, key)
            if current is not None:
                self.unlink(current, forget=True)
            else:
                a, _, b = key.partition("|")
                self.add("unlink", Step("-", f"unlink {a} {b}", calls.unlink(a, b), disown=("link", key)))

    def unlink(self, link: Link, forget: bool) -> None:
        key = _link_key(link.a.sandbox, link.b.sandbox)
        self.relinked.add(key)
        for end in link.ends:
            self.cut.setdefault(end.sandbox, []).extend(a.network for a in end.addresses)
        a, b = sorted((link.a.sandbox, link.b.sandbox))
        self.add("unlink", Step("-", f"unlink {a} {b}", calls.unlink(a, b), disown=("link", key) if forget else None))

    # Routes

    def routes(self) -> None:
        t, s = self.t, self.s
        mine = s.mine(t.name, "route")
        current = {_route_key(r): r for r in s.routes}
        for spec in t.routes:
            route = current.get(spec.key)
            if not self.claim("route", spec.key, "" if route is not None else None, spec.line,
                              f"route of {spec.sandbox} to {ip_network(spec.dst)}"):
                continue
            if route is not None:
                cut = any(route.via in n for n in self.cut.get(spec.sandbox, []) if n.version == route.via.version)
                if spec.sandbox not in self.sandbox_remade and not cut and route.via == ip_address(spec.via):
                    continue
                # Removed first even when its sandbox goes: a link or network it goes over may be cut
                # before the sandbox is (the engine refuses to strand a route).
                self.add("route-", Step("-", f"remove route {spec.sandbox} {route.dst} via {route.via}",
                                        calls.remove_route(spec.sandbox, str(route.dst))))
            dst = str(ip_network(spec.dst))
            self.add("route+", Step("+", f"route {spec.sandbox} {dst} via {spec.via}",
                                    calls.add_route(spec.sandbox, dst, spec.via),
                                    own=("route", spec.key, {"via": spec.via})))
        wanted = {spec.key for spec in t.routes}
        for key in sorted(set(mine) - wanted):
            sandbox, _, dst = key.partition("|")
            route = current.get(key)
            via = f" via {route.via}" if route is not None else ""
            self.add("route-", Step("-", f"remove route {sandbox} {dst}{via}", calls.remove_route(sandbox, dst),
                                    disown=("route", key)))

    # Shaping (Engine.shape / clear_shape)

    def shapes(self) -> None:
        t, s = self.t, self.s
        mine = s.mine(t.name, "shape")
        for spec in t.shapes:
            record = {"sandbox": spec.sandbox, **({"network": spec.network} if spec.network else {"link": spec.link}),
                      **spec.knobs}
            if not self.claim("shape", spec.key, None, spec.line, f"shaping of {spec.sandbox}'s {spec.side}"):
                continue
            touched = (spec.sandbox in self.sandbox_remade
                       or (spec.network is not None and spec.network in self.network_remade)
                       or (spec.link is not None and _link_key(spec.sandbox, spec.link) in self.relinked)
                       or (spec.network is not None and spec.network not in
                           [e.network for e in getattr(s.sandboxes.get(spec.sandbox), "endpoints", ())]))
            if mine.get(spec.key) == record and not touched:
                continue
            if spec.key in mine and not touched:
                self.add("shape-", Step("-", f"clear shaping {spec.sandbox} {spec.side}",
                                        calls.clear_shape(spec.sandbox, spec.network, spec.link)))
            self.add("shape+", Step("+", f"shape {spec.sandbox} {spec.side} "
                                         + " ".join(f"{k}={v}" for k, v in spec.knobs.items()),
                                    calls.shape(spec.sandbox, spec.network, spec.link, spec.knobs),
                                    own=("shape", spec.key, record)))
        wanted = {spec.key for spec in t.shapes}
        for key in sorted(set(mine) - wanted):
            spec = mine[key]
            side = f"network {spec['network']}" if "network" in spec else f"link to {spec['link']}"
            self.add("shape-", Step("-", f"clear shaping {spec['sandbox']} {side}",
                                    calls.clear_shape(spec["sandbox"], spec.get("network"), spec.get("link")),
                                    disown=("shape", key)))

    def steps(self) -> list[Step]:
        return [step for bucket in self.buckets.values() for step in bucket]


def plan_up(topology: Topology, state: State) -> list[Step]:
    """The steps that make the ledger what the file says; [] when it is so already. Raises
    TopologyError (FILE:LINE lines) when the file names objects it may not change."""
    planner = _Planner(topology, state)
    planner.networks()
    planner.sandboxes()
    planner.links()
    planner.routes()
    planner.shapes()
    if planner.errors:
        raise TopologyError([f"{topology.path}:{line}: {message}" for line, message in sorted(planner.errors)])
    return planner.steps()


def plan_down(name: str, state: State) -> list[Step]:
    """Remove everything topology `name` made, in a safe order: routes, shaping, links, sandboxes,
    networks. An object already gone is removed (and forgotten) without error. Routes, shaping and
    links of a sandbox this down removes get no step of their own: they go with its namespace (one
    netns deletion instead of an unlink per cable, which made a 500-node chain's down 17 times
    slower), and their records with the sandbox's step."""
    going = {key for key in state.mine(name, "sandbox") if not state.foreign(name, "sandbox", key)}
    with_sandbox: dict[str, list[tuple[str, str]]] = {}

    def goes_with(kind: str, key: str, *sandboxes: str) -> bool:
        owner = next((s for s in sorted(sandboxes) if s in going), None)
        if owner is not None:
            with_sandbox.setdefault(owner, []).append((kind, key))
        return owner is not None

    steps = []
    for key in sorted(state.mine(name, "route")):
        sandbox, _, dst = key.partition("|")
        if not goes_with("route", key, sandbox):
            steps.append(Step("-", f"remove route {sandbox} {dst}", calls.remove_route(sandbox, dst),
                              disown=("route", key)))
    for key, spec in sorted(state.mine(name, "shape").items()):
        side = f"network {spec['network']}" if "network" in spec else f"link to {spec['link']}"
        if not goes_with("shape", key, spec["sandbox"]):
            steps.append(Step("-", f"clear shaping {spec['sandbox']} {side}",
                              calls.clear_shape(spec["sandbox"], spec.get("network"), spec.get("link")),
                              disown=("shape", key)))
    for key in sorted(state.mine(name, "link")):
        a, _, b = key.partition("|")
        if not goes_with("link", key, a, b):
            steps.append(_forget(state, name, "link", key) or
                         Step("-", f"unlink {a} {b}", calls.unlink(a, b), disown=("link", key)))
    for key in sorted(state.mine(name, "sandbox")):
        steps.append(_forget(state, name, "sandbox", key) or
                     Step("-", f"remove sandbox {key}", calls.remove_sandbox(key), disown=("sandbox", key),
                          with_it=tuple(with_sandbox.get(key, ()))))
    for key in sorted(state.mine(name, "network")):
        steps.append(_forget(state, name, "network", key) or
                     Step("-", f"remove network {key}", calls.remove_network(key), disown=("network", key)))
    return steps


def _forget(state: State, topology: str, kind: str, key: str) -> Step | None:
    """For an object removed and made again by another hand: the record goes, the object stays."""
    if not state.foreign(topology, kind, key):
        return None
    shown = key.replace("|", " ")
    return Step("-", f"forget {kind} {shown} (made again by another hand: left as it is)", lambda engine: None,
                disown=(kind, key))


__all__ = ["State", "Step", "plan_down", "plan_up"]
