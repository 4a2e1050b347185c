"""`nsnet cni install`: the executable a runtime runs, named `nsnet` (a CNI plugin's type is its
file name), in the runtime's plugin directory.

It starts this interpreter with -IS (isolated, and no site: its .pth scanning is a tenth of the
start-up) with the import path of this installation and its ledger (the state directory) written
in: a runtime's environment decides neither which nsnet runs nor which ledger it serves (Podman
runs DEL from a cleanup process whose environment is not the one `podman run` had).
"""

from __future__ import annotations

import os
import sys

from ..errors import NsnetError

PLUGIN_NAME = "nsnet"


def script(state_dir: str) -> str:
    # sys.path[0] is the running script's directory (or the working one): not nsnet's.
    paths = [p for p in sys.path[1:] if p and os.path.isdir(p)]
    return (f"#!{sys.executable} -IS\n"
            "# nsnet's CNI plugin, written by `nsnet cni install`; run again after moving nsnet.\n"
            "import sys\n"
            f"sys.path[:0] = {paths!r}\n"
            "from nsnet.cni.plugin import run\n"
            f"run(state_dir={state_dir!r})\n")


def install(bin_dir: str, state_dir: str) -> str:
    """Write the plugin serving the ledger in state_dir into bin_dir (made if missing),
    atomically; return its path."""
    if not os.path.isabs(bin_dir):
        raise NsnetError(f"invalid --bin-dir {bin_dir!r}: must be an absolute path")
    os.makedirs(bin_dir, mode=0o755, exist_ok=True)
    path = os.path.join(bin_dir, PLUGIN_NAME)
    temporary = f"{path}.{os.getpid()}.tmp"
    # Made new (never through a link planted there), then renamed over the plugin: a link at its
    # name is replaced, not followed.
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o755)
    except FileExistsError:
        raise NsnetError(f"cannot install the plugin: {temporary} exists (nsnet makes it new); remove it") from None
    with os.fdopen(fd, "w") as out:
        out.write(script(os.path.abspath(state_dir)))
    os.replace(temporary, path)
    return path
