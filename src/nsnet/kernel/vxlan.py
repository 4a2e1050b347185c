"""Overlay networks' kernel objects (nsnet.cluster) through pyroute2, in the host's namespace: the
VXLAN device, and per peer host the three permanent entries flannel programs, in its order: a
neighbour (the peer block's .0 → the peer's VTEP MAC), an FDB entry (that MAC → the peer's
underlay address) and an onlink route to the block via its .0, last, so the kernel never has to
ask for the gateway. Every write is a `replace`: reapplying is harmless. Not a per-sandbox path
(peers change with hosts), so pyroute2's import is paid only here.
"""

from __future__ import annotations

import errno
import socket

from ..errors import KernelError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NTF_SELF = 0x02
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
IFF_UP = 0x1
RTNH_F_ONLINK = 0x04
_GONE = (errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL)


def _ipr() -> Any:
    from pyroute2 import IPRoute

    return IPRoute()


def _index(ipr: Any, name: str, what: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise KernelError(what, errno.ENODEV)
    return found[0]


def _call(what: str, fn, *, missing_ok: bool = False) -> Any:
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        with _ipr() as ipr:
            return fn(ipr)
    except NetlinkError as exc:
        if missing_ok and exc.code in _GONE:
            return None
        raise KernelError(what, exc.code, str(exc)) from None


def create_vxlan(name: str, vni: int, port: int, local: str, underlay: str, mtu: int, mac: str, group: int) -> None:
    """`dev underlay`: the kernel then refuses an MTU the underlay cannot carry (brief §4.8);
    no learning, no miss notifications: peers are programmed, never learnt."""
    what = f"creation of VXLAN device {name}"

    def make(ipr: Any) -> None:
        link = _index(ipr, underlay, what)
        ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_port=port, vxlan_local=local,
                 vxlan_link=link, vxlan_learning=0, address=mac, mtu=mtu, group=group)

    _call(what, make)


def replace_neighbour(device: str, address: str, mac: str) -> None:
    what = f"neighbour {address} on {device}"
    _call(what, lambda ipr: ipr.neigh("replace", ifindex=_index(ipr, device, what), dst=address, lladdr=mac,
                                       state=NUD_PERMANENT))


def delete_neighbour(device: str, address: str, mac: str) -> None:
    what = f"removing neighbour {address} on {device}"
    _call(what, lambda ipr: ipr.neigh("del", ifindex=_index(ipr, device, what), dst=address, lladdr=mac),
          missing_ok=True)


def replace_fdb(device: str, mac: str, destination: str) -> None:
    """pyroute2's `replace` adds none of add's defaults: NTF_SELF and the states are explicit."""
    what = f"FDB entry {mac} on {device}"
    _call(what, lambda ipr: ipr.fdb("replace", ifindex=_index(ipr, device, what), lladdr=mac, dst=destination,
                                     flags=NTF_SELF, state=NUD_PERMANENT | NUD_NOARP))


def delete_fdb(device: str, mac: str, destination: str) -> None:
    what = f"removing FDB entry {mac} on {device}"
    _call(what, lambda ipr: ipr.fdb("del", ifindex=_index(ipr, device, what), lladdr=mac, dst=destination,
                                     flags=NTF_SELF), missing_ok=True)


def replace_onlink_route(destination: str, via: str, device: str) -> None:
    what = f"route to {destination} on {device}"
    _call(what, lambda ipr: ipr.route("replace", dst=destination, gateway=via, oif=_index(ipr, device, what),
                                       flags=RTNH_F_ONLINK))


def delete_onlink_route(destination: str, via: str, device: str) -> None:
    what = f"removing the route to {destination}"
    _call(what, lambda ipr: ipr.route("del", dst=destination, gateway=via), missing_ok=True)


def replace_unreachable(destination: str) -> None:
    _call(f"unreachable route to {destination}", lambda ipr: ipr.route("replace", dst=destination, type="unreachable"))


def delete_unreachable(destination: str) -> None:
    _call(f"removing the unreachable route to {destination}",
          lambda ipr: ipr.route("del", dst=destination, type="unreachable"), missing_ok=True)


def entries(device: str) -> dict[str, set[tuple[str, ...]]] | None:
    """What the device holds: neighbours (address, MAC), FDB entries (MAC, destination), onlink
    routes (destination, via), and `down` (the device, when it is not up); None without it."""

    def read(ipr: Any) -> dict[str, set[tuple[str, ...]]] | None:
        found = ipr.link_lookup(ifname=device)
        if not found:
            return None
        index = found[0]
        up = ipr.get_links(index)[0]["flags"] & IFF_UP
        neighbours = {(n.get_attr("NDA_DST"), n.get_attr("NDA_LLADDR")) for n in ipr.get_neighbours(ifindex=index)
                      if n["family"] == socket.AF_INET and n["state"] & NUD_PERMANENT}
        fdb = {(f.get_attr("NDA_LLADDR"), f.get_attr("NDA_DST")) for f in ipr.fdb("dump", ifindex=index)
               if f.get_attr("NDA_DST") and f["ifindex"] == index}
        routes = {(f"{r.get_attr('RTA_DST')}/{r['dst_len']}", r.get_attr("RTA_GATEWAY"))
                  for r in ipr.get_routes(family=socket.AF_INET, oif=index) if r.get_attr("RTA_GATEWAY")}
        return {"neighbours": neighbours, "fdb": fdb, "routes": routes, "down": set() if up else {(device,)}}

    return _call(f"reading {device}", read)


def unreachable_routes() -> set[str]:
    def read(ipr: Any) -> set[str]:
        return {f"{r.get_attr('RTA_DST')}/{r['dst_len']}" for r in ipr.get_routes(family=socket.AF_INET)
                if r["type"] == 7}  # RTN_UNREACHABLE

    return _call("reading routes", read)
