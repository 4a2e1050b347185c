"""Plans for shaping (nsnet.shaping): where a setting's kernel objects go, and the operations that
put them there, replacing what the interface had, each with its undo.

A Device is one interface in one namespace (None: the host). A shaping's `out` device is the
sandbox's own interface, its `in` device the one sending towards it (the host-side veth of an
endpoint, the peer's end of a link); its loss rules go in the sandbox's own table (render).
"""

from __future__ import annotations

from ..errors import Conflict
from ..record import record
from ..shaping import Qdisc, Shaping, qdisc
from ..shaping.render import POSTROUTING, PREROUTING, render
from .ops import ApplySandboxFirewall, ClearQdisc, Operation, SetQdisc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from ..model import Link, Network, Sandbox


@record
class Device:
    sandbox: str | None  # the namespace (a sandbox's handle); None: the host
    ifname: str
    mtu: int


@record
class Place:
    """Where one shaping acts: its sandbox's namespace and interface, and both devices."""

    handle: str
    ifname: str
    out: Device
    into: Device


def place(shaping: Shaping, sandbox: Sandbox, links: Sequence[Link], networks: dict[str, Network]) -> Place | None:
    """The shaping's place; None when its endpoint or link is not in the ledger (any more)."""
    if shaping.network is not None:
        endpoint = sandbox.endpoint(shaping.network)
        network = networks.get(shaping.network)
        if endpoint is None or network is None:
            return None
        return Place(sandbox.handle, endpoint.ifname, Device(sandbox.handle, endpoint.ifname, network.mtu),
                     Device(None, endpoint.host_ifname, network.mtu))
    link = next((lk for lk in links if {lk.a.sandbox, lk.b.sandbox} == {sandbox.name, shaping.link}), None)
    if link is None:
        return None
    own, other = (link.a, link.b) if link.a.sandbox == sandbox.name else (link.b, link.a)
    return Place(sandbox.handle, own.ifname, Device(own.sandbox, own.ifname, link.mtu),
                 Device(other.sandbox, other.ifname, link.mtu))


def qdiscs(shaping: Shaping, where: Place) -> dict[Device, Qdisc]:
    """The root qdisc each of the shaping's devices gets."""
    made = qdisc(shaping.settings, where.out.mtu)
    if made is None:
        return {}
    devices = {"out": [where.out], "in": [where.into], "both": [where.out, where.into]}[shaping.direction]
    return {device: made for device in devices}


def drops(shaping: Shaping, where: Place) -> list[tuple[str, str, int]]:
    """The loss rules (chain, interface, steps) of the shaping, in its sandbox's table."""
    steps = shaping.settings.loss
    if steps is None:
        return []
    chains = {"out": [POSTROUTING], "in": [PREROUTING], "both": [PREROUTING, POSTROUTING]}[shaping.direction]
    return [(chain, where.ifname, steps) for chain in chains]


def refuse_overlap(shaping: Shaping, where: Place, others: Iterable[tuple[Shaping, Place]]) -> None:
    """A device's root qdisc serves one shaping: `shape a --link b --direction in` and
    `shape b --link a` would both own b's end."""
    mine = set(qdiscs(shaping, where))
    for other, other_place in others:
        if mine & set(qdiscs(other, other_place)):
            raise Conflict(f"that interface's traffic is shaped already by `nsnet shape {other.sandbox} "
                           f"--{'network ' + str(other.network) if other.network else 'link ' + str(other.link)}"
                           f" --direction {other.direction}`; clear that first")


def plan_shape(before: dict[Device, Qdisc], after: dict[Device, Qdisc], handle: str, table: str,
               rules_before: Sequence[tuple[str, str, int]], rules_after: Sequence[tuple[str, str, int]],
               what: str) -> list[Operation]:
    """From the devices' qdiscs and the sandbox's drops before to after: each device set,
    replaced or cleared, and the sandbox's loss table rewritten when its rules change."""
    ops: list[Operation] = []
    for device in sorted(set(before) | set(after), key=lambda d: (d.sandbox or "", d.ifname)):
        old, new = before.get(device), after.get(device)
        if new is not None and new != old:
            ops.append(SetQdisc(device.sandbox, device.ifname, new, old))
        elif new is None and old is not None:
            ops.append(ClearQdisc(device.sandbox, device.ifname, old))
    if sorted(rules_before) != sorted(rules_after):
        ops.append(ApplySandboxFirewall(handle, tuple(render(table, rules_after)), tuple(render(table, rules_before)),
                                        f"loss of {what}"))
    return ops
