"""Queueing disciplines (nsnet.shaping) through pyroute2's tc: a device's root qdisc set, cleared,
read back, and which of the shaping modules the kernel has. Imported only by `shape`, `check`,
`gc` and `doctor` (pyroute2 costs ~190 ms to import); every call runs in a helper thread inside
the namespace it acts in (netns.in_netns), the host's in the calling thread.

The root is handle 1:; netem with a rate gets a tbf child 10: under 1:1 (netem is classful with
one class), as `tc qdisc add dev X root handle 1: netem ...; tc qdisc add dev X parent 1:1 tbf`.
A root of another kind cannot be changed into this one in place (EINVAL), so a set deletes the
root first: the device is unshaped for that instant, never shaped wrongly.
"""

from __future__ import annotations

import errno

from ..errors import KernelError
from . import netns

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from ..shaping import Qdisc

    T = TypeVar("T")

ROOT, CHILD = 0x10000, 0x100000
NETEM_CLASS = 0x10001
PROBE_KINDS = {"sch_netem": ("netem", {"delay": 1000}), "sch_tbf": ("tbf", {"rate": 125000, "burst": 3028,
                                                                               "latency": 50000})}
_GONE = (errno.ENOENT, errno.EINVAL, errno.ENODEV)  # no root qdisc of nsnet's to delete / no device


def _run(sandbox: str | None, fn: Callable[[Any], T]) -> T:
    from pyroute2 import IPRoute

    def body() -> T:
        with IPRoute() as ipr:
            return fn(ipr)

    return body() if sandbox is None else netns.in_netns(netns.path_of(sandbox), body)


def _index(ipr: Any, ifname: str, what: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise KernelError(what, errno.ENODEV)
    return found[0]


def _where(ifname: str, sandbox: str | None) -> str:
    return f"{ifname} in sandbox {sandbox}" if sandbox else ifname


def set_qdisc(sandbox: str | None, ifname: str, qdisc: Qdisc) -> None:
    from pyroute2.netlink.exceptions import NetlinkError

    what = f"shaping of {_where(ifname, sandbox)}"

    def tbf(ipr: Any, index: int, **where: Any) -> None:
        ipr.tc("add", "tbf", index, rate=qdisc.rate, burst=qdisc.burst, limit=qdisc.tbf_limit, **where)

    def apply(ipr: Any) -> None:
        index = _index(ipr, ifname, what)
        _delete_root(ipr, index, what)
        try:
            if qdisc.delay is None:
                tbf(ipr, index, handle=ROOT)
                return
            netem: dict[str, Any] = {"delay": qdisc.delay, "jitter": qdisc.jitter or 0}
            if qdisc.netem_limit is not None:
                netem["limit"] = qdisc.netem_limit
            if qdisc.reorder is not None:
                netem["prob_reorder"] = qdisc.reorder / 100
            ipr.tc("add", "netem", index, handle=ROOT, **netem)
            if qdisc.rate is not None:
                tbf(ipr, index, handle=CHILD, parent=NETEM_CLASS)
        except NetlinkError as exc:
            raise KernelError(what, exc.code, str(exc)) from None

    _run(sandbox, apply)


def clear_qdisc(sandbox: str | None, ifname: str) -> None:
    what = f"unshaping of {_where(ifname, sandbox)}"
    _run(sandbox, lambda ipr: _delete_root(ipr, _index(ipr, ifname, what), what))


def _delete_root(ipr: Any, index: int, what: str) -> None:
    """The device's root qdisc gone (the kernel's default back); none there already is no error."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        ipr.tc("del", index=index, handle=ROOT, root=True)
    except NetlinkError as exc:
        if exc.code not in _GONE:
            raise KernelError(what, exc.code, str(exc)) from None


def root_qdisc(sandbox: str | None, ifname: str) -> str | None:
    """The device's root qdisc and its child as Qdisc.summary says them; None when it has the
    kernel's default (noqueue, or none), or when the device is gone."""

    def read(ipr: Any) -> str | None:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return None
        kinds, rate = [], None
        for message in sorted(ipr.get_qdiscs(found[0]), key=lambda m: m["parent"] != 0xFFFFFFFF):
            kind = message.get_attr("TCA_KIND")
            if message["parent"] == 0xFFFFFFFF and kind in ("noqueue", "pfifo_fast", "mq"):
                return None
            kinds.append(kind)
            if kind == "tbf":
                rate = message.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")["rate"]
        if not kinds:
            return None
        text = "/".join(kinds)
        return f"{text} rate {rate}" if rate is not None else text

    return _run(sandbox, read)


def qdisc_modules() -> frozenset[str]:
    """The shaping modules (PROBE_KINDS) the kernel has, tried for real on a veth in a throwaway
    namespace (a helper thread's): a kind the kernel cannot find or load is refused with ENOENT."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    def probe() -> frozenset[str]:
        netns.unshare(netns.CLONE_NEWNET)
        found = set()
        with IPRoute() as ipr:
            ipr.link("add", ifname="probe0", kind="veth", peer="probe1")
            index = ipr.link_lookup(ifname="probe0")[0]
            for module, (kind, options) in PROBE_KINDS.items():
                try:
                    ipr.tc("add", kind, index, handle=ROOT, **options)
                except NetlinkError as exc:
                    if exc.code == errno.ENOENT:
                        continue
                    raise KernelError(f"probing {module}", exc.code, str(exc)) from None
                found.add(module)
                ipr.tc("del", index=index, handle=ROOT, root=True)
        return frozenset(found)

    return netns.in_thread(probe)
