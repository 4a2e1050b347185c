"""`nsnet cni install`: the executable a runtime runs, named `nsnet` (a CNI plugin's type is its
file name), in the runtime's plugin directory.

It starts this interpreter with -IS (isolated, and no site: its .pth scanning is a tenth of the start-up)
and the import path of this installation written in, so a runtime's environment cannot change
which nsnet it runs.
"""

from __future__ import annotations

import os
import sys

from ..errors import NsnetError

PLUGIN_NAME = "nsnet"


def script() -> str:
    # sys.path[0] is the running script's directory (or the working one): not nsnet's.
    paths = [p for p in sys.path[1:] if p and os.path.isdir(p)]
    return (f"#!{sys.executable} -IS\n"
            "# nsnet's CNI plugin, written by `nsnet cni install`; run again after moving nsnet.\n"
            "import sys\n"
            f"sys.path[:0] = {paths!r}\n"
            "from nsnet.cni.plugin import main\n"
            "sys.exit(main())\n")


def install(bin_dir: str) -> str:
    """Write the plugin into bin_dir (made if missing), atomically; return its path."""
    if not os.path.isabs(bin_dir):
        raise NsnetError(f"invalid --bin-dir {bin_dir!r}: must be an absolute path")
    os.makedirs(bin_dir, mode=0o755, exist_ok=True)
    path = os.path.join(bin_dir, PLUGIN_NAME)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as out:
        out.write(script())
    os.chmod(temporary, 0o755)
    os.replace(temporary, path)
    return path
