"""`nsnet graph` on a real lab: networks, sandboxes, a link, a route, a published port and a service
drawn from the ledger as DOT and Mermaid (exact edges) and as SVG laid out by Graphviz (valid XML
naming every object); drawing changes nothing."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from nsnet import Engine

from .conftest import cli

SVG = "{http://www.w3.org/2000/svg}"


def lab(engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("back", subnet="10.32.0.0/24", internal=True)
    engine.create_sandbox("web", networks=["app"], publish=["8080:80"])
    engine.create_sandbox("db", networks=["back"])
    engine.create_sandbox("r1", networks=["back"])
    engine.link("web", "r1", ips=["web=10.9.0.1/30", "r1=10.9.0.2/30"], mtu=9000)
    engine.add_route("r1", "10.31.0.0/24", "10.9.0.1")
    engine.create_service("front", network="app", ports=["80:8080"], backends=["web"])


def test_graph_draws_the_lab_in_every_format(engine: Engine) -> None:
    empty = cli("graph", "--format", "mermaid")
    assert empty.returncode == 0 and empty.stdout == "graph LR\n", empty.stderr
    lab(engine)
    bridges = {n.name: n.bridge for n in engine.networks()}

    dot = cli("graph")
    assert dot.returncode == 0 and dot.stderr == "", dot.stderr
    lines = dot.stdout.splitlines()
    for expected in (
            f'  "net1" [shape=box, style="rounded,filled", fillcolor="#dde8f5", label="network app\\nbridge '
            f'{bridges["app"]}\\n10.31.0.0/24 gw 10.31.0.1"];',
            f'  "net2" [shape=box, style="rounded,filled", fillcolor="#dde8f5", label="network back\\nbridge '
            f'{bridges["back"]}\\n10.32.0.0/24 gw 10.32.0.1\\ninternal"];',
            '  "sb2" [shape=box, label="sandbox r1\\nroute 10.31.0.0/24 via 10.9.0.1"];',
            '  "net1" -> "sb3" [dir=none, label="10.31.0.2/24"];',
            '  "net2" -> "sb1" [dir=none, label="10.32.0.2/24"];',
            '  "net2" -> "sb2" [dir=none, label="10.32.0.3/24"];',
            '  "sb2" -> "sb3" [dir=none, penwidth=2, label="r1:web 10.9.0.2/30\\nweb:r1 10.9.0.1/30\\nmtu 9000"];',
            '  "host" -> "sb3" [label="8080 -> 80/tcp"];',
            '  "svc1" -> "sb3" [style=dashed];'):
        assert expected in lines, (expected, dot.stdout)
    assert sum(line.startswith('  "') and '" -> "' in line for line in lines) == 6

    mermaid = cli("graph", "--format", "mermaid")
    assert mermaid.returncode == 0, mermaid.stderr
    drawn = mermaid.stdout.splitlines()
    assert [line.split('"')[0] for line in drawn[:8]] == ["graph LR", "  net1{{", "  net2{{", "  sb1[", "  sb2[", "  sb3[",
                                                          "  host([", "  svc1>"]
    edges = drawn[8:]
    assert edges == ['  net1 ---|"10.31.0.2/24"| sb3', '  net2 ---|"10.32.0.2/24"| sb1',
                     '  net2 ---|"10.32.0.3/24"| sb2',
                     '  sb2 ===|"r1:web 10.9.0.2/30<br/>web:r1 10.9.0.1/30<br/>mtu 9000"| sb3',
                     '  host -->|"8080 -> 80/tcp"| sb3', '  svc1 -.-> sb3']

    svg = cli("graph", "--format", "svg")
    assert svg.returncode == 0 and svg.stderr == "", svg.stderr
    root = ET.fromstring(svg.stdout)
    assert root.tag == f"{SVG}svg"
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    for name in ("network app", "network back", "sandbox web", "sandbox db", "sandbox r1", "service front", "host",
                 "8080 -> 80/tcp", "r1:web 10.9.0.2/30", "web:r1 10.9.0.1/30", "mtu 9000",
                 "route 10.31.0.0/24 via 10.9.0.1", "10.31.0.2/24", bridges["app"], bridges["back"]):
        assert any(name in t for t in texts), (name, texts)
    nodes = [g for g in root.iter(f"{SVG}g") if g.get("class") == "node"]
    edge_groups = [g for g in root.iter(f"{SVG}g") if g.get("class") == "edge"]
    assert len(nodes) == 7 and len(edge_groups) == 6

    assert cli("check").stdout == "" and len(engine.sandboxes()) == 3  # drawing changed nothing


def test_a_bad_format_is_a_usage_error() -> None:
    done = cli("graph", "--format", "png")
    assert done.returncode == 2 and done.stdout == ""
    assert "invalid choice: 'png'" in done.stderr and len(done.stderr.splitlines()) == 1
