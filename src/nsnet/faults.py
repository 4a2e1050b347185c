"""A fault hook for tests: NSNET_FAULT=STEP makes the process kill itself (SIGKILL, no cleanup,
no rollback) when it reaches STEP, to prove that a crash at any instant leaves a state that
`nsnet gc` brings back to consistent.

Steps are the class names of plan operations (`CreateNetns`, `CreateVeth`, `ApplyFirewall`, ...,
the first one of that name in the plan, or the Nth with `AddAddress#2`), `reserved` (the ledger
holds the new rows, the kernel is untouched) and `applied` (the kernel is done, the rows are not
yet marked ready); and in an overlay network's commands (nsnet.cluster), `configured` (the
network is in the cluster store, this host has not joined it), `leased` (this host's block is
in the store, nothing local yet) and `left` (this host's keys are gone from the store, its
kernel half is still there). A resident process a command starts does not inherit the hook.
"""

from __future__ import annotations

import os
import signal

ENV = "NSNET_FAULT"
_STEP = os.environ.get(ENV)


_reached: dict[str, int] = {}


def point(step: str) -> None:
    if _STEP is None:
        return
    _reached[step] = _reached.get(step, 0) + 1
    if _STEP in (step, f"{step}#{_reached[step]}"):
        os.kill(os.getpid(), signal.SIGKILL)
