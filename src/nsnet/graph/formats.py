"""Text for a Graph (nsnet.graph.model): Graphviz DOT, Mermaid `graph LR`, and SVG through `dot`.

Names come from users: they reach the output only as label text, escaped for each syntax (DOT's
double-quoted strings; Mermaid's entity codes for every character outside a small safe set), and
node ids are nsnet's own (net1, sb1...), so no name can end a string, open a statement or add an
edge. The renderers are pure; render_svg runs Graphviz's `dot -Tsvg` on render_dot's text.
"""

from __future__ import annotations

import shutil
import subprocess

from ..errors import InvalidInput, NsnetError
from .model import Edge, Graph, Node

# DOT

_DOT_SHAPES = {"network": 'shape=box, style="rounded,filled", fillcolor="#dde8f5"',
               "sandbox": "shape=box",
               "service": 'shape=cds, style=filled, fillcolor="#f5ecd7"',
               "host": 'shape=house, style=filled, fillcolor="#e4e4e4"'}
_DOT_EDGES = {"endpoint": "dir=none", "link": "dir=none, penwidth=2", "port": "", "service": "style=dashed"}


def dot_string(text: str) -> str:
    """A DOT double-quoted string: backslashes and quotes escaped, and no raw line break
    (control characters become spaces). Inside a label, DOT reads a backslash escape, so a
    user's backslash is doubled: it stays a backslash."""
    cleaned = "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in text)
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_label(lines: tuple[str, ...]) -> str:
    """Lines joined by DOT's centred line break (`\\n`, added after escaping each line)."""
    return "\\n".join(dot_string(line)[1:-1] for line in lines)


def _dot_node(node: Node) -> str:
    return f'  "{node.id}" [{_DOT_SHAPES[node.kind]}, label="{_dot_label(node.lines)}"];'


def _dot_edge(edge: Edge) -> str:
    attributes = [a for a in (_DOT_EDGES[edge.kind],) if a]
    if edge.lines:
        attributes.append(f'label="{_dot_label(edge.lines)}"')
    return f'  "{edge.a}" -> "{edge.b}"' + (f" [{', '.join(attributes)}]" if attributes else "") + ";"


def render_dot(graph: Graph) -> str:
    lines = ["digraph nsnet {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=9];']
    lines += [_dot_node(n) for n in graph.nodes]
    lines += [_dot_edge(e) for e in graph.edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


# Mermaid

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:/_-+=*>")
_MERMAID_SHAPES = {"network": ("{{", "}}"), "sandbox": ("[", "]"), "service": (">", "]"), "host": ("([", "])")}
_MERMAID_EDGES = {"endpoint": "---", "link": "===", "port": "-->", "service": "-.->"}


def mermaid_text(text: str) -> str:
    """Every character outside a small safe set as Mermaid's entity code (#NNN;), so quotes,
    brackets, pipes, semicolons, '<' and '#' stay text ('>' is text inside a quoted label)."""
    return "".join(c if c in _SAFE else f"#{ord(c)};" for c in text)


def _mermaid_label(lines: tuple[str, ...]) -> str:
    return '"' + "<br/>".join(mermaid_text(line) for line in lines) + '"'


def render_mermaid(graph: Graph) -> str:
    lines = ["graph LR"]
    for node in graph.nodes:
        opening, closing = _MERMAID_SHAPES[node.kind]
        lines.append(f"  {node.id}{opening}{_mermaid_label(node.lines)}{closing}")
    for edge in graph.edges:
        arrow = _MERMAID_EDGES[edge.kind]
        label = f"|{_mermaid_label(edge.lines)}|" if edge.lines else ""
        lines.append(f"  {edge.a} {arrow}{label} {edge.b}")
    return "\n".join(lines) + "\n"


# SVG

DOT_PACKAGE = "graphviz"


def render_svg(graph: Graph) -> str:
    """render_dot's text laid out by Graphviz's `dot -Tsvg`."""
    dot = shutil.which("dot")
    if dot is None:
        raise InvalidInput("--format", "svg", f"needs Graphviz's dot, which is not installed (Debian package "
                           f"{DOT_PACKAGE})")
    try:
        done = subprocess.run([dot, "-Tsvg"], input=render_dot(graph), capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NsnetError(f"dot -Tsvg failed: {exc}") from exc
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise NsnetError(f"dot -Tsvg failed: {reason}")
    return done.stdout


FORMATS = {"dot": render_dot, "mermaid": render_mermaid, "svg": render_svg}


def render(graph: Graph, fmt: str = "dot") -> str:
    if fmt not in FORMATS:
        raise InvalidInput("--format", fmt, f"must be one of {', '.join(sorted(FORMATS))}")
    return FORMATS[fmt](graph)
