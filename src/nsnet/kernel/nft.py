"""nftables transactions in process, through libnftables' JSON interface.

One call is one atomic transaction: the kernel applies every command of it or none. An
in-process transaction costs ~0.06 ms where forking `nft` costs 10-20 ms.

One exception, forced by libnftables 1.0.6: its JSON cannot declare a `typeof` set or map, so a
set or map command carrying "typeof" (nsnet's own key) is declared first, in a text transaction of
its own. That declares an empty set at most (idempotently), which no packet sees until a rule of
the JSON transaction names it.
"""

from __future__ import annotations

import errno
import json

from ..errors import KernelError

TYPE_CHECKING = False  # typing's import is 5 ms of a CNI plugin's start-up
if TYPE_CHECKING:
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
        typed = [(kind, c["add"][kind]) for c in commands for kind in ("set", "map")
                 if "typeof" in c.get("add", {}).get(kind, {})]
        if typed:
            self._run(self._context().cmd, "; ".join(
                f"add table {s['family']} {s['table']}; "
                f"add {kind} {s['family']} {s['table']} {s['name']} {{ typeof {s['typeof']}; }}" for kind, s in typed))
            commands = [c for c in commands
                        if not any("typeof" in c.get("add", {}).get(kind, {}) for kind in ("set", "map"))]
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
        rc, output, error = self._context().cmd(f"list table {family} {name}")
        if rc != 0:
            if "No such file or directory" in error:
                return None
            raise KernelError(f"listing table {family} {name}", 0, " ".join(error.split()))
        return json.loads(output)["nftables"] if output.strip() else []

    def list_ruleset(self) -> list[dict[str, Any]]:
        rc, output, error = self._context().cmd("list ruleset")
        if rc != 0:
            raise KernelError("listing the nftables ruleset", 0, " ".join(error.split()))
        return json.loads(output)["nftables"] if output.strip() else []
