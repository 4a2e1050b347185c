"""The picture as plain data: nodes, edges and their label lines, built from the ledger's reads.

`build` is pure: it takes what the engine returns (networks, sandboxes, links, routes, services)
and returns a Graph whose nodes and edges are sorted, so the same ledger always draws the same
text. Node ids are made here (net1, sb1, svc1, host), never from a name: a name only ever reaches
a renderer as label text, which each renderer escapes. Nothing here reads the ledger or the kernel.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..shaping import Shaping

HOST = "host"


@dataclass(frozen=True)
class Node:
    id: str
    kind: str  # network | sandbox | service | host
    lines: tuple[str, ...]  # the first is its name


@dataclass(frozen=True)
class Edge:
    a: str  # node ids
    b: str
    kind: str  # endpoint (network - sandbox) | link (sandbox - sandbox) | port (host -> sandbox) | service
    lines: tuple[str, ...] = ()
    key: tuple[str, ...] = ()  # what the edge stands for, to find it again (shaping)

    @property
    def directed(self) -> bool:
        return self.kind in ("port", "service")


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...] = ()
    edges: tuple[Edge, ...] = ()
    ids: dict[tuple[str, str], str] = field(default_factory=dict, compare=False)  # (kind, name) -> id


def _addresses(addresses: Iterable[Any]) -> str:
    return ", ".join(str(a) for a in addresses) or "no address"


def _network_lines(network: Any) -> tuple[str, ...]:
    driver = getattr(network, "driver", "bridge")
    if driver == "macvlan":
        mode = getattr(network, "driver_mode", None)
        lines = [f"network {network.name}", f"macvlan on {network.parent}" + (f" ({mode})" if mode else "")]
    else:
        lines = [f"network {network.name}", f"{driver} {network.bridge}"]
    lines += [f"{s.subnet} gw {s.gateway}" for s in network.subnets]
    if network.internal:
        lines.append("internal")
    return tuple(lines)


def _port(p: Any) -> str:
    host = "" if p.host_ip is None else (f"[{p.host_ip}]:" if p.host_ip.version == 6 else f"{p.host_ip}:")
    return f"{host}{p.host_port} -> {p.sandbox_port}/{p.protocol}"


def build(networks: Sequence[Any], sandboxes: Sequence[Any], links: Sequence[Any] = (), routes: Sequence[Any] = (),
          services: Sequence[tuple[Any, Sequence[tuple[str, Sequence[str]]]]] = ()) -> Graph:
    """The graph of what the ledger holds (the engine's networks(), sandboxes(), links(), routes()
    and services() as they return them)."""
    ids: dict[tuple[str, str], str] = {}
    nodes: list[Node] = []
    for i, network in enumerate(sorted(networks, key=lambda n: n.name), 1):
        ids[("network", network.name)] = f"net{i}"
        nodes.append(Node(f"net{i}", "network", _network_lines(network)))
    routed: dict[str, list[Any]] = {}
    for route in routes:
        routed.setdefault(route.sandbox, []).append(route)
    for i, sandbox in enumerate(sorted(sandboxes, key=lambda s: s.name), 1):
        ids[("sandbox", sandbox.name)] = f"sb{i}"
        mode = getattr(sandbox, "network_mode", None)  # host, container:NAME (nsnet.modes)
        lines = [f"sandbox {sandbox.name}"] + ([f"network {mode}"] if mode else [])
        lines += [f"route {r.dst} via {r.via}" for r in sorted(routed.get(sandbox.name, ()),
                                                               key=lambda r: (r.dst.version, r.dst))]
        nodes.append(Node(f"sb{i}", "sandbox", tuple(lines)))
    edges: list[Edge] = []
    published: dict[str, list[Any]] = {}
    for sandbox in sandboxes:
        for endpoint in sandbox.endpoints:
            network = ids.get(("network", endpoint.network))
            if network is not None:
                edges.append(Edge(network, ids[("sandbox", sandbox.name)], "endpoint",
                                  (_addresses(endpoint.addresses),), ("endpoint", sandbox.name, endpoint.network)))
            published.setdefault(sandbox.name, []).extend(endpoint.ports)
    for link in links:
        a, b = sorted(link.ends, key=lambda e: e.sandbox)
        if ("sandbox", a.sandbox) not in ids or ("sandbox", b.sandbox) not in ids:
            continue
        edges.append(Edge(ids[("sandbox", a.sandbox)], ids[("sandbox", b.sandbox)], "link",
                          (f"{a.sandbox}:{a.ifname} {_addresses(a.addresses)}", f"{b.sandbox}:{b.ifname} {_addresses(b.addresses)}",
                           f"mtu {link.mtu}"), ("link", a.sandbox, b.sandbox, link.id)))
    if any(published.values()):
        nodes.append(Node(HOST, "host", ("host",)))
        ids[("host", HOST)] = HOST
    for name, ports in published.items():
        if ports:
            ordered = sorted(ports, key=lambda p: (p.protocol, p.host_port, str(p.host_ip or ""), p.sandbox_port))
            edges.append(Edge(HOST, ids[("sandbox", name)], "port", tuple(_port(p) for p in ordered), ("port", name)))
    for i, (service, backends) in enumerate(sorted(services, key=lambda s: s[0].name), 1):
        sid = ids[("service", service.name)] = f"svc{i}"
        lines = [f"service {service.name}", f"on {service.network}", "vip " + ", ".join(str(v) for v in service.vips)]
        lines += [str(p) for p in service.ports]
        nodes.append(Node(sid, "service", tuple(lines)))
        for name, _ in backends:
            if ("sandbox", name) in ids:
                edges.append(Edge(sid, ids[("sandbox", name)], "service", (), ("service", service.name, name)))
    order = {"endpoint": 0, "link": 1, "port": 2, "service": 3}
    edges.sort(key=lambda e: (order[e.kind], _id_key(e.a), _id_key(e.b), e.lines))
    return Graph(tuple(nodes), tuple(edges), ids)


def _id_key(node_id: str) -> tuple[str, int]:
    """net2 before net10."""
    head = node_id.rstrip("0123456789")
    return head, int(node_id[len(head):] or 0)


# Shaping (nsnet.shaping's records)

def shaping_text(shaping: Shaping) -> str:
    """One line: whose, which way, and the knobs set (nsnet.shaping's own wording)."""
    return f"{shaping.sandbox} {shaping.direction}: {shaping.settings}"


def with_shaping(graph: Graph, shapings: Iterable[Shaping]) -> Graph:
    """The graph with one label line per shaping on the edge it shapes: the endpoint edge of its
    sandbox on its network, or the link between its sandbox and `link` (the peer's name); on the
    sandbox's node when neither edge is drawn."""
    extra_edges: dict[int, list[str]] = {}
    extra_nodes: dict[str, list[str]] = {}
    for shaping in shapings:
        text = shaping_text(shaping)
        network, link = shaping.network, shaping.link
        found = None
        for i, edge in enumerate(graph.edges):
            if network and edge.key == ("endpoint", shaping.sandbox, network):
                found = i
            elif link and edge.kind == "link" and shaping.sandbox in edge.key[1:3] and link in edge.key[1:]:
                found = i
            if found is not None:
                break
        if found is not None:
            extra_edges.setdefault(found, []).append(text)
        elif ("sandbox", shaping.sandbox) in graph.ids:
            extra_nodes.setdefault(graph.ids[("sandbox", shaping.sandbox)], []).append("shaped " + text)
    edges = tuple(replace(e, lines=e.lines + tuple(sorted(extra_edges.get(i, ())))) for i, e in enumerate(graph.edges))
    nodes = tuple(replace(n, lines=n.lines + tuple(sorted(extra_nodes.get(n.id, ())))) for n in graph.nodes)
    return Graph(nodes, edges, graph.ids)


def from_engine(engine: Any) -> Graph:
    """What the engine's ledger holds now, shaping included."""
    graph = build(engine.networks(), engine.sandboxes(), engine.links(), engine.routes(), engine.services())
    return with_shaping(graph, engine.shapings())
