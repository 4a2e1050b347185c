"""An isolated host: a throwaway network namespace and mount namespace to run nsnet in.

Inside, nsnet sees an empty host (only `lo`), and /run/netns, /etc/netns and its state directory
are private tmpfs mounts, so nothing it makes can touch or outlive the real machine: when the last
process of the lab exits, the kernel reclaims every namespace, link and rule made inside it.
Tests, benchmarks and the demo all run in one (`nsnet lab -- CMD`).
"""

from __future__ import annotations

import os

from .kernel.netns import CLONE_NEWNET, CLONE_NEWNS, MS_PRIVATE, MS_REC, mount, umount, unshare
from .kernel.rtnl import RtnlSocket
from .naming import ETC_NETNS_DIR, NETNS_DIR
from .store import state_dir

LAB_ENV = "NSNET_LAB"


def enter() -> None:
    """Move this (single-threaded) process into a new isolated host. Call before starting threads."""
    unshare(CLONE_NEWNET | CLONE_NEWNS)
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    for directory in (NETNS_DIR, ETC_NETNS_DIR, state_dir()):
        os.makedirs(directory, mode=0o755, exist_ok=True)
        mount("tmpfs", directory, "tmpfs", 0, "mode=0755")
    # sysfs shows the interfaces of the namespace that mounted it; remount it for this one.
    umount("/sys")
    mount("sysfs", "/sys", "sysfs", 0)
    lo = RtnlSocket()
    lo.set_up(1, "lo")
    lo.close()
    os.environ[LAB_ENV] = str(os.getpid())


def run(argv: list[str]) -> None:
    """Enter a new isolated host and replace this process with argv (a shell when empty)."""
    enter()
    argv = argv or [os.environ.get("SHELL", "/bin/sh")]
    os.execvp(argv[0], argv)
