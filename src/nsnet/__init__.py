"""nsnet: the Docker bridge network model built from the Linux kernel's own parts.

The public surface is `Engine` (engine.py), the data it returns (model.py) and the errors it raises
(errors.py). Everything else is private and may change.
"""

from .engine import Engine
from .errors import Conflict, Exhausted, InvalidInput, KernelError, NotFound, NsnetError, TeardownError
from .model import Endpoint, Network, Sandbox

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
