"""Topology files (`nsnet up FILE [--dry-run]`, `nsnet down FILE`, `nsnet verify FILE`): a whole lab
described in YAML, made, changed and removed through the engine's own calls.

- spec: the file format (its keys map onto engine keyword arguments, one line each), read by reader
  and lists with line numbers: every error at once, before anything changes.
- plan: the difference between the file and what its topology made, as ordered steps, each one
  engine call (calls).
- verify: the file's expectations probed with real packets from inside the sandboxes.

Ownership comes from the ledger (table topology_objects): a topology (the file's `name:`, default
its file name without extension) removes only what it made, and never takes over an object it did
not make. Each step is one engine call, atomic and rolled back by the engine on failure; the steps
of an `up` are not rolled back as a whole: a failure stops `up` with the objects made so far
recorded as the topology's, so `up` again finishes the work and `down` removes it (a whole
rollback could not restore a sandbox that `up` removed to make again, and would undo work that a
re-run keeps).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

from ..errors import NsnetError
from .plan import ID, State, Step, plan_down, plan_up
from .spec import Topology, TopologyError, load, name_of

__all__ = ["State", "Step", "Topology", "TopologyError", "down", "load", "plan_down", "plan_up", "up"]


class Progress:
    """A carriage-return bar on a terminal (stderr a TTY), nothing otherwise."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.on = total > 0 and self.stream.isatty()
        self.done = 0

    def show(self, text: str) -> None:
        if not self.on:
            return
        filled = self.WIDTH * self.done // self.total
        self.stream.write(f"\r\x1b[K[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total} {text}")
        self.stream.flush()

    def step(self) -> None:
        self.done += 1

    def clear(self) -> None:
        if self.on:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def run_steps(engine: Any, topology: str, steps: list[Step], *, out: Callable[[str], None],
              keep_going: bool = False) -> None:
    """Each step: its ownership recorded, its engine call, its record forgotten (removals). A
    failure stops at once (up), or is collected while the rest go on (down, keep_going)."""
    progress = Progress(len(steps))
    errors: list[str] = []
    for step in steps:
        progress.show(step.text)
        try:
            if step.own is not None:
                engine.own_object(topology, *step.own)
            made = step.run(engine)
            if step.own is not None and getattr(made, "id", None):  # the ledger id: whose it is, later
                kind, key, spec = step.own
                engine.own_object(topology, kind, key, {**spec, ID: made.id})
            for kind, key in (*step.with_it, *([step.disown] if step.disown else [])):
                engine.disown_object(topology, kind, key)
        except NsnetError as exc:
            progress.clear()
            if not keep_going:
                raise NsnetError(f"{step.line[2:]} failed: {exc} (what topology {topology!r} made so far is"
                                 " recorded: run up again to finish, or down to remove it)") from None
            errors.append(f"{step.line[2:]}: {exc}")
            continue
        progress.step()
        progress.clear()
        out(step.line)
    progress.clear()
    if errors:
        raise NsnetError(f"down of topology {topology!r} left {len(errors)} object(s): " + "; ".join(errors))


def up(engine: Any, path: str, *, dry_run: bool = False, out: Callable[[str], None] = print) -> list[Step]:
    """Make the ledger and the kernel what the file says; prints each step (the plan with dry_run)."""
    topology = load(path)
    _refuse_what_the_kernel_lacks(engine, topology)
    with engine.topology_lock(topology.name):
        steps = plan_up(topology, State.read(engine))
        if not steps:
            out(f"topology {topology.name}: up to date")
        elif dry_run:
            for step in steps:
                out(step.line)
        else:
            run_steps(engine, topology.name, steps, out=out)
    return steps


def _refuse_what_the_kernel_lacks(engine: Any, topology: Topology) -> None:
    """What this host cannot give, refused before anything is made, as the commands would refuse
    it half-way: shaping knobs the kernel cannot serve (sch_netem's), and a macvlan network's
    parent that is not here."""
    from .. import shaping
    from ..errors import InvalidInput

    errors = []
    for net in topology.networks.values():
        parent = net.options.get("parent")
        if parent is not None and engine.kernel.link_mac(str(parent)) is None:
            errors.append(f"{topology.path}:{net.line}: network {net.name!r}: invalid --parent {parent!r}: no such"
                          " interface in this namespace")
    for spec in topology.shapes:
        asked = {k: v for k, v in spec.knobs.items() if k != "direction"}
        made = shaping.settings(**asked)
        if made.qdisc:
            try:
                shaping.refuse(made, asked, engine.kernel.qdisc_modules())
            except InvalidInput as exc:
                errors.append(f"{topology.path}:{spec.line}: shape: {exc}")
    if errors:
        raise TopologyError(errors)


def down(engine: Any, path: str, *, out: Callable[[str], None] = print) -> list[Step]:
    """Remove everything the file's topology made; what is gone already counts as removed. Only the
    file's name is read (spec.name_of): a file edited into errors still comes down."""
    name = name_of(path)
    with engine.topology_lock(name):
        steps = plan_down(name, State.read(engine))
        if not steps:
            out(f"topology {name}: nothing to remove")
        run_steps(engine, name, steps, out=out, keep_going=True)
    return steps
