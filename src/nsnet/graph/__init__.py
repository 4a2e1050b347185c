"""`nsnet graph`: a picture of what the ledger holds.

Networks (switch-like nodes with their driver, bridge, subnets and whether internal), sandboxes
(with their routes), an edge per endpoint (the sandbox's addresses on that network), per link (both
ends' interfaces and addresses, the MTU), per sandbox with published ports (from the host), per
service backend, and shaping as label lines on the edge it shapes. model.py builds the data from
the engine's reads; formats.py turns it into DOT, Mermaid or SVG (Graphviz's `dot`). Read-only:
nothing here changes the ledger or the kernel.
"""

from __future__ import annotations

from .model import Edge, Graph, Node, build, from_engine, with_shaping
from .formats import FORMATS, render, render_dot, render_mermaid, render_svg

__all__ = ["FORMATS", "Edge", "Graph", "Node", "build", "from_engine", "render", "render_dot", "render_mermaid",
           "render_svg", "with_shaping"]
