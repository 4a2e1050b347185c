"""Running plans against a Kernel.

`apply` is for building: on any failure (a kernel refusal, an exception, Ctrl-C) it undoes the
completed operations in reverse and re-raises. `teardown` is for removing: it never stops at the
first error, treats "already gone" as done, and reports every error at the end.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import faults
from .errors import KernelError, NsnetError, TeardownError
from .kernel import Kernel
from .plan.ops import Operation


def apply(plan: Sequence[Operation], kernel: Kernel) -> None:
    undos: list[Operation] = []
    try:
        for op in plan:
            faults.point(type(op).__name__)
            undo = op.apply(kernel)
            if undo is not None:
                undos.append(undo)
    except BaseException as exc:
        failures = rollback(undos, kernel)
        if failures:
            exc.add_note(f"rollback also failed: {'; '.join(str(f) for f in failures)}")
        if isinstance(exc, NsnetError) or not isinstance(exc, Exception):
            raise
        raise NsnetError(f"{type(exc).__name__}: {exc}") from exc


def rollback(undos: Sequence[Operation], kernel: Kernel) -> list[Exception]:
    """Runs the undos in reverse; returns what failed."""
    failures: list[Exception] = []
    for undo in reversed(undos):
        try:
            undo.run(kernel)
        except KernelError as exc:
            if not exc.gone:
                failures.append(exc)
        except Exception as exc:
            failures.append(exc)
    return failures


def teardown(plan: Sequence[Operation], kernel: Kernel, what: str) -> None:
    failures: list[Exception] = []
    for op in plan:
        faults.point(type(op).__name__)
        try:
            op.run(kernel)
        except KernelError as exc:
            if not exc.gone:
                failures.append(exc)
        except Exception as exc:
            failures.append(exc)
    if failures:
        raise TeardownError(what, failures)
