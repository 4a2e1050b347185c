"""Plans for links (nsnet.links): the pair made in one message from one end's namespace into the
other's, each end up with its addresses; undone by deleting one end (the pair goes with it)."""

from __future__ import annotations

from ..model import Link
from .ops import AddAddress, CreatePair, DeleteLink, EnableIPv6, Operation, SetLinkUp


def plan_link(link: Link) -> list[Operation]:
    ops: list[Operation] = [CreatePair(link.a.sandbox, link.a.ifname, link.b.sandbox, link.b.ifname, link.mtu)]
    for end in link.ends:
        if any(a.version == 6 for a in end.addresses):
            ops.append(EnableIPv6(end.ifname, end.sandbox))
        ops.append(SetLinkUp(end.ifname, end.sandbox))
        ops += [AddAddress(end.ifname, address, end.sandbox) for address in end.addresses]
    return ops


def plan_unlink(link: Link) -> list[Operation]:
    return [DeleteLink(link.a.ifname, link.a.sandbox)]
