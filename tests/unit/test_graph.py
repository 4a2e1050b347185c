"""`nsnet graph`: the data model built from ledger records, its exact DOT and Mermaid text, names
that would break either syntax, shaping labels (nsnet.shaping's records), and
the model an engine on a FakeKernel gives."""

from __future__ import annotations

import shutil
import subprocess
from ipaddress import ip_address, ip_interface, ip_network

import pytest

from nsnet.engine import Engine
from nsnet.errors import InvalidInput
from nsnet.graph import build, from_engine, render, render_dot, render_mermaid, with_shaping
from nsnet.graph import formats
from nsnet.shaping import Shaping, settings
from nsnet.model import (Endpoint, Link, LinkEnd, Network, PortMapping, Route, Sandbox, Service, ServicePort,
                         Subnet)


def endpoint(sandbox: str, network: str, address: str, ports: tuple[PortMapping, ...] = ()) -> Endpoint:
    return Endpoint(id=f"e-{sandbox}", sandbox=sandbox, network=network, ifname="eth0", host_ifname="nsv0",
                    mac="02:00:00:00:00:01", addresses=(ip_interface(address),),
                    gateways=(ip_interface(address).network.network_address + 1,), ports=ports)


def fixed_model(web: str = "web", app: str = "app"):
    """Two networks (one internal), three sandboxes, a link, a router's route, two published
    ports and a service: the lab the exact texts below describe."""
    networks = [Network(id="n2", name="back", bridge="nsbr-2", subnets=(
                    Subnet(ip_network("10.2.0.0/24"), ip_address("10.2.0.1")),
                    Subnet(ip_network("fd00:2::/64"), ip_address("fd00:2::1"))), internal=True),
                Network(id="n1", name=app, bridge="nsbr-1",
                        subnets=(Subnet(ip_network("10.1.0.0/24"), ip_address("10.1.0.1")),))]
    sandboxes = [
        Sandbox(id="s1", name=web, netns="", endpoints=(
            endpoint(web, app, "10.1.0.2/24", (PortMapping(None, 8080, 80), PortMapping(ip_address("127.0.0.1"), 53,
                                                                                         53, "udp"))),)),
        Sandbox(id="s2", name="db", netns="", endpoints=(endpoint("db", "back", "10.2.0.2/24"),)),
        Sandbox(id="s3", name="r1", netns="", endpoints=(endpoint("r1", "back", "10.2.0.3/24"),)),
    ]
    links = [Link(id="l1", a=LinkEnd(web, "r1", (ip_interface("10.9.0.1/30"),)),
                  b=LinkEnd("r1", web[:15], (ip_interface("10.9.0.2/30"),)), mtu=9000)]
    routes = [Route("r1", ip_network("10.1.0.0/24"), ip_address("10.9.0.1"))]
    services = [(Service(id="v1", name="front", network=app, vips=(ip_address("10.211.0.1"),),
                         ports=(ServicePort("tcp", 80, 8080),)), [(web, ("10.1.0.2",))])]
    return networks, sandboxes, links, routes, services


DOT = r'''digraph nsnet {
  rankdir=LR;
  node [fontname="Helvetica", fontsize=10];
  edge [fontname="Helvetica", fontsize=9];
  "net1" [shape=box, style="rounded,filled", fillcolor="#dde8f5", label="network app\nbridge nsbr-1\n10.1.0.0/24 gw 10.1.0.1"];
  "net2" [shape=box, style="rounded,filled", fillcolor="#dde8f5", label="network back\nbridge nsbr-2\n10.2.0.0/24 gw 10.2.0.1\nfd00:2::/64 gw fd00:2::1\ninternal"];
  "sb1" [shape=box, label="sandbox db"];
  "sb2" [shape=box, label="sandbox r1\nroute 10.1.0.0/24 via 10.9.0.1"];
  "sb3" [shape=box, label="sandbox web"];
  "host" [shape=house, style=filled, fillcolor="#e4e4e4", label="host"];
  "svc1" [shape=cds, style=filled, fillcolor="#f5ecd7", label="service front\non app\nvip 10.211.0.1\n80/tcp -> 8080"];
  "net1" -> "sb3" [dir=none, label="10.1.0.2/24"];
  "net2" -> "sb1" [dir=none, label="10.2.0.2/24"];
  "net2" -> "sb2" [dir=none, label="10.2.0.3/24"];
  "sb2" -> "sb3" [dir=none, penwidth=2, label="r1:web 10.9.0.2/30\nweb:r1 10.9.0.1/30\nmtu 9000"];
  "host" -> "sb3" [label="8080 -> 80/tcp\n127.0.0.1:53 -> 53/udp"];
  "svc1" -> "sb3" [style=dashed];
}
'''

MERMAID = '''graph LR
  net1{{"network app<br/>bridge nsbr-1<br/>10.1.0.0/24 gw 10.1.0.1"}}
  net2{{"network back<br/>bridge nsbr-2<br/>10.2.0.0/24 gw 10.2.0.1<br/>fd00:2::/64 gw fd00:2::1<br/>internal"}}
  sb1["sandbox db"]
  sb2["sandbox r1<br/>route 10.1.0.0/24 via 10.9.0.1"]
  sb3["sandbox web"]
  host(["host"])
  svc1>"service front<br/>on app<br/>vip 10.211.0.1<br/>80/tcp -> 8080"]
  net1 ---|"10.1.0.2/24"| sb3
  net2 ---|"10.2.0.2/24"| sb1
  net2 ---|"10.2.0.3/24"| sb2
  sb2 ===|"r1:web 10.9.0.2/30<br/>web:r1 10.9.0.1/30<br/>mtu 9000"| sb3
  host -->|"8080 -> 80/tcp<br/>127.0.0.1:53 -> 53/udp"| sb3
  svc1 -.-> sb3
'''


def test_dot_and_mermaid_of_a_fixed_model_are_exact_and_do_not_depend_on_input_order() -> None:
    networks, sandboxes, links, routes, services = fixed_model()
    graph = build(networks, sandboxes, links, routes, services)
    assert render_dot(graph) == DOT
    assert render_mermaid(graph) == MERMAID
    shuffled = build(networks[::-1], sandboxes[::-1], links, routes, services)
    assert render(shuffled, "dot") == DOT and render(shuffled, "mermaid") == MERMAID


def test_an_empty_ledger_draws_an_empty_graph() -> None:
    graph = build([], [])
    assert render_dot(graph).splitlines()[-1] == "}" and len(render_dot(graph).splitlines()) == 5
    assert render_mermaid(graph) == "graph LR\n"


EVIL = 'x"];\n"sb9" -> "net1";//\\'  # ends a DOT string, adds an edge, comments out the rest
EVIL_MERMAID = 'y"]; A-->B %%<b>#|'


def test_names_that_break_the_syntax_stay_label_text() -> None:
    networks, sandboxes, links, routes, services = fixed_model(web=EVIL, app=EVIL_MERMAID)
    graph = build(networks, sandboxes, links, routes, services)
    dot = render_dot(graph)
    # the name is one escaped label: quote and backslash escaped, the line break a space
    assert r'label="sandbox x\"]; \"sb9\" -> \"net1\";//\\"' in dot
    assert '"sb9"' not in dot.replace(r'\"sb9\"', "")
    # every statement line is a node or an edge of nsnet's ids: nothing added
    statements = [line for line in dot.splitlines()[4:-1]]
    assert len(statements) == len(graph.nodes) + len(graph.edges)
    assert all(line.startswith(('  "net', '  "sb', '  "svc', '  "host')) for line in statements)
    mermaid = render_mermaid(graph)
    assert "network y#34;#93;#59; A-->B #37;#37;#60;b>#35;#124;<br/>" in mermaid
    for line in mermaid.splitlines()[1:]:
        # outside the one quoted label of a line, only nsnet's ids, shapes and arrows
        head, _, rest = line.partition('"')
        label, _, tail = rest.partition('"')
        assert '"' not in tail and head.strip().split(" ")[0].rstrip("{[(>").isalnum()
    if shutil.which("dot"):  # Graphviz reads it as the same graph: no edge more
        plain = subprocess.run(["dot", "-Tplain"], input=dot, capture_output=True, text=True, check=True).stdout
        assert sum(line.startswith("edge ") for line in plain.splitlines()) == len(graph.edges)
        assert sum(line.startswith("node ") for line in plain.splitlines()) == len(graph.nodes)


def shaped(sandbox: str, network: str | None = None, link: str | None = None, direction: str = "out",
           **knobs: str | int) -> Shaping:
    return Shaping(sandbox, network, link, direction, settings(**knobs))


def test_shaping_labels_go_on_the_edge_they_shape() -> None:
    graph = build(*fixed_model())
    drawn = with_shaping(graph, [
        shaped("web", network="app", rate="10mbit", delay="20ms", jitter="5ms", loss="1%"),
        shaped("r1", link="web", rate="1mbit", limit=100, direction="in"),
        shaped("web", link="r1", loss="2%"),
        shaped("db", network="app", rate="5mbit"),  # no such endpoint: on the node
        shaped("ghost", network="app", rate="5mbit"),  # no such sandbox: nowhere
    ])
    dot = render_dot(drawn)
    assert '"net1" -> "sb3" [dir=none, label="10.1.0.2/24\\nweb out: rate 10mbit, delay 20ms, jitter 5ms, loss 1%"];' in dot
    assert ('label="r1:web 10.9.0.2/30\\nweb:r1 10.9.0.1/30\\nmtu 9000\\nr1 in: rate 1mbit, limit 100'
            '\\nweb out: loss 2%"];' in dot)
    assert '"sb1" [shape=box, label="sandbox db\\nshaped db out: rate 5mbit"];' in dot
    assert "ghost" not in dot
    assert render_dot(with_shaping(graph, [])) == DOT


def test_the_engine_model_holds_every_kind_of_object(engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("back", subnet="10.32.0.0/24", internal=True)
    engine.create_sandbox("web", networks=["app"], publish=["8080:80"])
    engine.create_sandbox("r1", networks=["back"])
    engine.link("web", "r1", ips=["web=10.9.0.1/30", "r1=10.9.0.2/30"])
    engine.add_route("r1", "10.31.0.0/24", "10.9.0.1")
    graph = from_engine(engine)
    labels = {n.id: n.lines[0] for n in graph.nodes}
    assert labels == {"net1": "network app", "net2": "network back", "sb1": "sandbox r1", "sb2": "sandbox web",
                      "host": "host"}
    assert [(e.a, e.b, e.kind, e.lines) for e in graph.edges] == [
        ("net1", "sb2", "endpoint", ("10.31.0.2/24",)), ("net2", "sb1", "endpoint", ("10.32.0.2/24",)),
        ("sb1", "sb2", "link", ("r1:web 10.9.0.2/30", "web:r1 10.9.0.1/30", "mtu 1500")),
        ("host", "sb2", "port", ("8080 -> 80/tcp",))]
    assert graph.nodes[2].lines == ("sandbox r1", "route 10.31.0.0/24 via 10.9.0.1")


def test_macvlan_networks_and_network_modes_are_labelled() -> None:
    networks = [Network(id="n1", name="lan", bridge="", driver="macvlan", parent="eth1", driver_mode="bridge",
                        subnets=(Subnet(ip_network("192.168.5.0/24"), ip_address("192.168.5.1")),))]
    sandboxes = [Sandbox(id="s1", name="edge", netns="", network_mode="host"),
                 Sandbox(id="s2", name="side", netns="", network_mode="container:web")]
    assert render_mermaid(build(networks, sandboxes)) == (
        'graph LR\n  net1{{"network lan<br/>macvlan on eth1 #40;bridge#41;<br/>192.168.5.0/24 gw 192.168.5.1"}}\n'
        '  sb1["sandbox edge<br/>network host"]\n  sb2["sandbox side<br/>network container:web"]\n')


def test_an_unknown_format_and_a_missing_dot_are_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    graph = build(*fixed_model())
    with pytest.raises(InvalidInput, match=r"^invalid --format 'png': must be one of dot, mermaid, svg$"):
        render(graph, "png")
    monkeypatch.setattr(formats.shutil, "which", lambda name: None)
    with pytest.raises(InvalidInput) as caught:
        render(graph, "svg")
    assert str(caught.value) == ("invalid --format 'svg': needs Graphviz's dot, which is not installed "
                                 "(Debian package graphviz)")
