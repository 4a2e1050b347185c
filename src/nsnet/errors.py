"""nsnet's errors: one tree, raised by the library and translated once at each boundary.

    NsnetError                 base of everything nsnet raises on purpose
    ├── InvalidInput           bad user input: names the field, the value and the reason
    ├── NotFound               an unknown network or sandbox
    ├── Conflict               a name, subnet or address is taken; a network is in use
    │   └── Exhausted          no free address or subnet is left
    ├── KernelError            the kernel refused an operation (the operation and its errno)
    │   └── PathError          a file or directory could not be made, opened or removed
    └── TeardownError          a removal met errors; it did all it could and lists every one

The CLI catches NsnetError alone and prints its message on one line.
"""

from __future__ import annotations

import errno as _errno
import os


class NsnetError(Exception):
    """Base class of every error nsnet raises on purpose."""


class InvalidInput(NsnetError):
    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        shown = "" if value is None else f" {str(value)!r}"  # a flag has no value to show
        super().__init__(f"invalid {field}{shown}: {reason}")


class NotFound(NsnetError):
    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"no such {kind}: {name!r}")


class Conflict(NsnetError):
    pass


class Exhausted(Conflict):
    pass


class KernelError(NsnetError):
    """The kernel refused `operation`; `errno` is the kernel's code, `detail` its extended ack."""

    def __init__(self, operation: str, errno: int, detail: str = "") -> None:
        self.operation = operation
        self.errno = errno
        self.detail = detail
        super().__init__(self._describe(detail or os.strerror(errno)))

    def _describe(self, reason: str) -> str:
        return f"kernel refused {self.operation}: {reason} ({_errno.errorcode.get(self.errno, self.errno)})"

    @property
    def gone(self) -> bool:
        """True when the error only says the object is already absent."""
        return self.errno in (_errno.ENODEV, _errno.ENOENT, _errno.ESRCH, _errno.EADDRNOTAVAIL)


class PathError(KernelError):
    """A file or directory nsnet needs could not be made, opened or removed: the file system's
    answer (a file that exists, a missing directory), not a refusal of a netlink or nftables
    request. `operation` is a verb ("create"), `path` the file."""

    def __init__(self, operation: str, path: str, errno: int, detail: str = "") -> None:
        self.path = path
        super().__init__(operation, errno, detail)

    def _describe(self, reason: str) -> str:
        return f"cannot {self.operation} {self.path}: {reason[:1].lower()}{reason[1:]}"


class TeardownError(NsnetError):
    def __init__(self, what: str, errors: list[Exception]) -> None:
        self.errors = errors
        listed = "; ".join(str(e) for e in errors)
        super().__init__(f"{what} finished with {len(errors)} error(s): {listed}")
