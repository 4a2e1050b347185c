"""Persistent tap devices through /dev/net/tun (Documentation/networking/tuntap.rst).

A tap exists while a file descriptor holds it, unless made persistent (TUNSETPERSIST); owned by a
uid and/or gid (TUNSETOWNER, TUNSETGROUP), it can then be opened by that user without
CAP_NET_ADMIN: "CAP_NET_ADMIN is required for creating network devices or for connecting to
network devices which aren't owned by the user in question". nsnet makes it, configures it by
rtnetlink like any link, and closes its descriptor; QEMU (or any program of that user) attaches
later with TUNSETIFF on the same name.
"""

from __future__ import annotations

import fcntl
import os
import struct

from ..errors import KernelError

TUN_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOWNER = 0x400454CC
TUNSETGROUP = 0x400454CE
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000  # virtio's header: the guest passes GSO frames with partial checksums
IFF_TUN_EXCL = 0x8000  # refuse a name that exists (EBUSY) rather than attach to it


def ifreq(name: str, flags: int) -> bytes:
    """struct ifreq as TUNSETIFF reads it: the name (16 bytes) and the flags, padded to 40 bytes."""
    return struct.pack("16sH22x", name.encode(), flags)


def create_tap(name: str, uid: int | None, gid: int | None) -> None:
    try:
        fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise KernelError(f"opening {TUN_DEVICE} for tap {name}", exc.errno or 0) from exc
    step = f"creation of tap {name}"
    try:
        fcntl.ioctl(fd, TUNSETIFF, ifreq(name, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_TUN_EXCL))
        # From here the device exists; a failure below leaves it to CreateTap's undo (DeleteLink).
        if uid is not None:
            step = f"setting the owner of tap {name}"
            fcntl.ioctl(fd, TUNSETOWNER, uid)
        if gid is not None:
            step = f"setting the group of tap {name}"
            fcntl.ioctl(fd, TUNSETGROUP, gid)
        step = f"making tap {name} persistent"
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    except OSError as exc:
        raise KernelError(step, exc.errno or 0) from exc
    finally:
        os.close(fd)
