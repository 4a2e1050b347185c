"""VM guests' endpoints (`nsnet create vm1 --kind tap --network app`): a persistent tap device on
the network's bridge in place of a veth into a namespace. QEMU (or any VMM) opens the tap by name;
the guest inside is the sandbox. nsnet gives it what it gives any sandbox: an address in each
family of the network, a MAC, a name the network's resolver answers, published ports, labels for
services, and the same bridge-port lock (the guest may send only from its MAC and addresses).
It has no namespace: nothing runs "in" it from the host (`exec` refuses), it joins no second
network, and the guest configures its own interface (static: `describe` gives the kernel's `ip=`
argument and the values for any other way).

Parsing and describing here are pure; the plans are nsnet.plan.tap's, the rows the store's.
"""

from __future__ import annotations

from ..errors import InvalidInput
from ..naming import tap_mac

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..model import Sandbox

KINDS = ("netns", "tap")
MAX_ID = 2**32 - 2  # (uid_t)-1 means "no owner" to the kernel


def kind(value: str) -> str:
    if value not in KINDS:
        raise InvalidInput("--kind", value, f"is not one of {', '.join(KINDS)}")
    return value


def identity(field: str, value: str | int | None) -> int | None:
    """A numeric uid or gid (the kernel records numbers; a name would be resolved on this host only)."""
    if value is None:
        return None
    text = str(value).strip()
    if not text.isdigit() or int(text) > MAX_ID:
        raise InvalidInput(field, value, f"is not a number from 0 to {MAX_ID}")
    return int(text)


def guest_mac(field: str, value: str) -> str:
    """A guest's MAC (any unicast), refused when it starts with 0xfe, the byte its tap's own MAC
    takes (libvirt refuses those too)."""
    from ..validate import mac

    text = mac(field, value)
    if text.startswith("fe:"):
        raise InvalidInput(field, value, "starts with fe, which the tap's own MAC takes (tap MAC = guest MAC with fe)")
    return text


def qemu_args(device: str, mac: str) -> list[str]:
    """QEMU's arguments for a virtio NIC on the tap (vhost-net when /dev/vhost-net is usable)."""
    return ["-netdev", f"tap,id=n0,ifname={device},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={mac}"]


def kernel_ip(endpoint: Any, hostname: str, device: str = "eth0") -> str:
    """Linux's `ip=` boot argument (Documentation/admin-guide/nfs/nfsroot.rst) for the IPv4 address:
    ip=CLIENT::GATEWAY:NETMASK:HOSTNAME:DEVICE:off."""
    v4 = endpoint.family(4)
    if v4 is None:
        return ""
    gateway = next(g for g in endpoint.gateways if g.version == 4)
    return f"ip={v4.ip}::{gateway}:{v4.network.netmask}:{hostname}:{device}:off"


def describe(sandbox: Sandbox) -> dict[str, Any]:
    """What `inspect` shows of a tap sandbox: the device, the MAC the bridge accepts from it, the
    guest's addresses and gateways, who may open it, and how to start QEMU on it."""
    tap = sandbox.tap
    endpoint = sandbox.endpoints[0] if sandbox.endpoints else None
    found: dict[str, Any] = {"Owner": tap.uid if tap else None, "Group": tap.gid if tap else None}
    if endpoint is None:
        return found
    return {
        "Device": endpoint.host_ifname,
        "GuestMacAddress": endpoint.mac,
        "TapMacAddress": tap_mac(endpoint.mac),
        **found,
        "Addresses": [str(a) for a in endpoint.addresses],
        "Gateways": [str(g) for g in endpoint.gateways],
        "QemuArgs": qemu_args(endpoint.host_ifname, endpoint.mac),
        "KernelIP": kernel_ip(endpoint, sandbox.name),
    }
