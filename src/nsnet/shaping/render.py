"""The table that drops a sandbox's packets at random (loss), rendered as nftables JSON: pure.

One table, `inet TABLE` (the ledger's table name with `_shape`), inside the sandbox's namespace,
apart from the interception's table (which `intercept rm` deletes whole). It holds every loss
setting of the sandbox's interfaces and is replaced whole in one transaction (declared, chains
emptied, filled), or deleted when the sandbox has none left:

  prerouting (filter, raw priority -300, before conntrack: a dropped packet leaves no entry):
    `iifname IF numgen random mod 10000 < K drop` for loss on what arrives through IF;
  postrouting (filter, priority 300, after NAT): `oifname IF ... drop` for what leaves through IF.

Interfaces are matched by name, so a rule of an interface that went (a disconnect or an unlink
re-renders the table, and gc repairs what a crash left) is never applied to another by index.
"""

from __future__ import annotations

from . import LOSS_SCALE, percent_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    Command = dict[str, Any]

FAMILY = "inet"
SUFFIX = "_shape"
PREROUTING, POSTROUTING = "prerouting", "postrouting"
PRIORITY = {PREROUTING: -300, POSTROUTING: 300}


def table_name(owner_table: str) -> str:
    return f"{owner_table}{SUFFIX}"


def _comment(chain: str, ifname: str, steps: int) -> str:
    return f"loss {percent_text(steps)} {'into' if chain == PREROUTING else 'out of'} {ifname}"


def render_table(table: str, rules: Iterable[tuple[str, str, int]]) -> list[Command]:
    """The whole table for these (chain, interface, steps) drops, replacing what it held."""
    ref = {"family": FAMILY, "table": table}
    commands: list[Command] = [{"add": {"table": {"family": FAMILY, "name": table}}}]
    for chain in (PREROUTING, POSTROUTING):
        commands += [{"add": {"chain": {**ref, "name": chain, "type": "filter", "hook": chain,
                                        "prio": PRIORITY[chain], "policy": "accept"}}},
                     {"flush": {"chain": {**ref, "name": chain}}}]
    for chain, ifname, steps in sorted(rules):
        key = "iifname" if chain == PREROUTING else "oifname"
        expr = [{"match": {"op": "==", "left": {"meta": {"key": key}}, "right": ifname}},
                {"match": {"op": "<", "left": {"numgen": {"mode": "random", "mod": LOSS_SCALE, "offset": 0}},
                           "right": steps}},
                {"drop": None}]
        commands.append({"add": {"rule": {**ref, "chain": chain, "expr": expr,
                                          "comment": _comment(chain, ifname, steps)}}})
    return commands


def render_removal(table: str) -> list[Command]:
    """The table gone, whether it was there or not (declared first, so the delete cannot fail)."""
    ref = {"family": FAMILY, "name": table}
    return [{"add": {"table": ref}}, {"delete": {"table": ref}}]


def render(table: str, rules: Iterable[tuple[str, str, int]]) -> list[Command]:
    """The table for these drops, or its removal when there are none."""
    rules = list(rules)
    return render_table(table, rules) if rules else render_removal(table)


def summary(listing: list[dict[str, Any]] | None) -> list[tuple[str, str]]:
    """What `check` compares of a table: its rules (chain, comment), sorted, from nft's JSON
    listing or from rendered commands; [] for no table."""
    found = []
    for item in listing or ():
        body = item.get("rule") or item.get("add", {}).get("rule")
        if body:
            found.append((body["chain"], body.get("comment", "")))
    return sorted(found)
