"""nftables transactions in process, through libnftables' JSON interface.

One call is one atomic transaction: the kernel applies every command of it or none. An
in-process transaction costs ~0.06 ms where forking `nft` costs 10-20 ms.

Two exceptions, forced by libnftables 1.0.6, whose JSON cannot declare a `typeof` set or map (nor
a dynamic one) and cannot write a statement that updates a map from the packet path: a set or map
command carrying "typeof" (nsnet's own key, with its "flags" and "size"), and a chain command
carrying "rules_text" (its rules in nft's syntax, the chain emptied first), are made first, in a
text transaction of their own. That declares an empty set, or fills a chain no packet reaches,
until a rule or element of the JSON transaction names it; made again, it is the same.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from contextlib import contextmanager

from ..errors import KernelError

TYPE_CHECKING = False  # typing's import is 5 ms of a CNI plugin's start-up
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


class Nft:
    def __init__(self) -> None:
        self._ctx: Any = None

    def _context(self) -> Any:
        if self._ctx is None:
            try:
                import nftables  # Debian's python3-nftables, the official binding of libnftables
            except ImportError as exc:
                raise KernelError("loading libnftables (install Debian's python3-nftables)", 0, str(exc)) from None
            self._ctx = nftables.Nftables()
            self._ctx.set_json_output(True)
            self._ctx.set_handle_output(False)
        return self._ctx

    def transaction(self, commands: list[dict[str, Any]]) -> None:
        texts = [_as_text(c) for c in commands]
        if any(texts):
            self._run(self._context().cmd, "\n".join(line for lines in texts for line in lines))
            commands = [c for c, lines in zip(commands, texts) if not lines]
        if commands:
            self._run(self._context().json_cmd, {"nftables": commands})

    @staticmethod
    def _run(call: Any, request: Any) -> None:
        rc, _, error = call(request)
        if rc != 0:
            # libnftables reports only text; recover the errno that matters for teardown.
            code = errno.ENOENT if "No such file or directory" in error else 0
            raise KernelError("nftables transaction", code, " ".join(error.split()) or f"exit code {rc}")

    def list_table(self, family: str, name: str) -> list[dict[str, Any]] | None:
        with _quiet_stderr():
            rc, output, error = self._context().cmd(f"list table {family} {name}")
        if rc != 0:
            if "No such file or directory" in error:
                return None
            raise KernelError(f"listing table {family} {name}", 0, " ".join(error.split()))
        return json.loads(output)["nftables"] if output.strip() else []

    def list_ruleset(self) -> list[dict[str, Any]]:
        with _quiet_stderr():
            rc, output, error = self._context().cmd("list ruleset")
        if rc != 0:
            raise KernelError("listing the nftables ruleset", 0, " ".join(error.split()))
        return json.loads(output)["nftables"] if output.strip() else []

    def list_elements(self, family: str, table: str, kind: str, name: str) -> list[Any]:
        """The elements of one set or map, as the listing gives them; none when it is absent."""
        rc, output, error = self._context().cmd(f"list {kind} {family} {table} {name}")
        if rc != 0:
            if "No such file or directory" in error:
                return []
            raise KernelError(f"listing {kind} {family} {table} {name}", 0, " ".join(error.split()))
        found = json.loads(output)["nftables"] if output.strip() else []
        return next((item[kind].get("elem", []) for item in found if kind in item), [])


def _as_text(command: dict[str, Any]) -> list[str]:
    """The text lines of a command JSON cannot carry (see the module's doc); none for the others."""
    body = command.get("add", {})
    for kind in ("set", "map"):
        s = body.get(kind, {})
        if "typeof" in s:
            options = "".join(f" {k} {v};" for k, v in (("flags", ",".join(s.get("flags", []))), ("size", s.get("size")))
                              if v)
            return [f"add table {s['family']} {s['table']}",
                    f"add {kind} {s['family']} {s['table']} {s['name']} {{ typeof {s['typeof']};{options} }}"]
    chain = body.get("chain", {})
    if "rules_text" in chain:
        where = f"{chain['family']} {chain['table']} {chain['name']}"
        return [f"add table {chain['family']} {chain['table']}", f"add chain {where}", f"flush chain {where}",
                *(f"add rule {where} {rule}" for rule in chain["rules_text"])]
    return []


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """libnftables 1.0.6 writes a warning straight to stderr for each rule whose statement its JSON
    cannot print (the affinity map's update), then prints it as text; nsnet expects that."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
