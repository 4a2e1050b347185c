"""Shaping in `nsnet check` and `nsnet gc` (called by nsnet.repair): each ledger row against the
kernel's root qdiscs and the sandbox's loss table.

check reports a row left half-way ('creating': a `shape` that died; 'removing': a `--clear` that
died), a device whose root qdisc is missing or not the one nsnet set (`tc qdisc del` behind
nsnet's back, a link made again), and a loss table that is gone or differs. gc undoes the first
(a new setting's qdiscs cleared and drops removed) or finishes the second, and sets the others
again from the ledger. A sandbox whose namespace is gone is its own drift: its rows go with it.
"""

from __future__ import annotations

from ..plan.ops import ApplySandboxFirewall, ClearQdisc, Operation, SetQdisc
from ..plan.shape import drops, place, qdiscs
from ..reconcile import Drift
from .render import render, summary, table_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ..kernel import Kernel
    from ..model import Owner
    from ..reconcile import Observed
    from ..store import Store
    from . import Shaping


def _where(sandbox: str | None, ifname: str) -> str:
    return f"{sandbox}'s {ifname}" if sandbox else f"host veth {ifname}"


def _survey(store: Store, kernel: Kernel, observed: Observed, owner: Owner,
            also: Iterable[str] = ()) -> list[tuple[Drift, list[Operation], Shaping | None]]:
    """(drift, the operations that repair it, the row to forget once done) of every difference,
    in the sandboxes with rows and those named in `also` (whose last row was just forgotten)."""
    networks = {n.name: n for n in store.networks()}
    table = table_name(owner.table)
    found: list[tuple[Drift, list[Operation], Shaping | None]] = []
    by_sandbox: dict[str, list[Shaping]] = {name: [] for name in also}
    for shaping in store.shapings():
        by_sandbox.setdefault(shaping.sandbox, []).append(shaping)
    for name, rows in by_sandbox.items():
        sandbox = store.sandbox(name)
        if sandbox is None or sandbox.handle not in observed.netns:
            continue
        links = store.links(name)
        placed = [(s, place(s, sandbox, links, networks)) for s in rows]
        placed = [(s, p) for s, p in placed if p is not None]
        for shaping, where in placed:
            subject = f"shaping of {name}'s {shaping.target}"
            if shaping.state != "ready":
                undo = [ClearQdisc(d.sandbox, d.ifname) for d in qdiscs(shaping, where)]
                found.append((Drift("half-done", subject, f"left {shaping.state} by a command that did not finish"
                                    " (gc removes it)"), undo, shaping))
                continue
            for device, wanted in qdiscs(shaping, where).items():
                if device.sandbox is not None and device.sandbox not in observed.netns:
                    continue
                actual = kernel.root_qdisc(device.sandbox, device.ifname)
                if actual != wanted.summary:
                    found.append((Drift("missing" if actual is None else "wrong", subject,
                                        f"{_where(device.sandbox, device.ifname)} has "
                                        f"{actual or 'no qdisc of nsnet'}, not {wanted.summary} (gc sets it again)"),
                                  [SetQdisc(device.sandbox, device.ifname, wanted)], None))
        rules = [r for s, p in placed if s.state == "ready" for r in drops(s, p)]
        listing = kernel.sandbox_table(sandbox.handle, table)
        if summary(listing) != summary(render(table, rules)) or (listing is not None and not rules):
            what = "is gone" if listing is None else "differs from what nsnet made"
            found.append((Drift("missing" if listing is None else "wrong", f"loss table of {name}",
                                f"{table} {what} (gc makes it again)"),
                          [ApplySandboxFirewall(sandbox.handle, tuple(render(table, rules)))], None))
    return found


def drift(store: Store, kernel: Kernel, observed: Observed, owner: Owner) -> list[Drift]:
    return [found for found, _, _ in _survey(store, kernel, observed, owner)]


def repair(store: Store, kernel: Kernel, observed: Observed, owner: Owner,
           run: Callable[[list[Operation], str], None]) -> None:
    """Repairs every difference through `run` (nsnet.repair's, which never stops at a failure):
    the rows left half-way are undone and forgotten first, then the qdiscs and loss tables set
    as the remaining rows say."""
    # Every sandbox's table is looked at here (check looks at those with rows only): a disconnect
    # that died is finished by gc, and its rows go with the endpoint, maybe before their drops.
    everyone = {s.name for s in store.sandboxes() if not s.container_id}
    surveyed = _survey(store, kernel, observed, owner, also=everyone)
    half = [(found, ops, row) for found, ops, row in surveyed if row is not None]
    for found, ops, row in half:
        run(ops, f"undid the {found.subject}")
        with store.transaction():
            store.delete_shaping(store.sandbox(row.sandbox).id, row.key)
    if half:
        surveyed = _survey(store, kernel, observed, owner, also=everyone)
    for found, ops, _ in surveyed:
        run(ops, f"repaired the {found.subject}")
