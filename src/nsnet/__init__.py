"""nsnet: the Docker bridge network model built from the Linux kernel's own parts.

The public surface is `Engine` (engine.py), the data it returns (model.py) and the errors it raises
(errors.py). Everything else is private and may change. Names load on first use, so a CLI verb
that needs no engine (`--help`) does not pay for importing it.
"""

from __future__ import annotations

from importlib import import_module

__all__ = [
    "Conflict",
    "Endpoint",
    "Engine",
    "Exhausted",
    "InvalidInput",
    "KernelError",
    "Network",
    "NotFound",
    "NsnetError",
    "Sandbox",
    "TeardownError",
]
__version__ = "0.1.0"

_HOMES = {
    "Engine": ".engine",
    "Endpoint": ".model",
    "Network": ".model",
    "Sandbox": ".model",
    **{name: ".errors" for name in ("Conflict", "Exhausted", "InvalidInput", "KernelError", "NotFound",
                                    "NsnetError", "TeardownError")},
}


def __getattr__(name: str) -> object:  # typing stays unimported: a CNI VERSION is timed from here
    if name not in _HOMES:
        raise AttributeError(f"module 'nsnet' has no attribute {name!r}")
    value = getattr(import_module(_HOMES[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
