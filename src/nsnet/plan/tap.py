"""Plans for VM guests' tap endpoints (nsnet.taps): the tap made persistent and owned, marked as
the ledger's, given the bridge's MTU and its 0xfe MAC before it joins the bridge (libvirt's order:
"the bridge will have its MTU adjusted automatically when we add the new interface"), then the
same port settings as a veth's host end: flags (locked, no learning), the guest's MAC as the
port's only static FDB entry, and the firewall's elements of the endpoint made before the port
exists. Removing it deletes the tap (a QEMU still holding it sees its device gone)."""

from __future__ import annotations

from ..model import Endpoint, Network, Owner, Tap
from ..naming import tap_mac
from .network import IPV6_MIN_MTU
from .ops import (AddFdbEntry, AttachToBridge, CreateTap, DeleteLink, DisableIPv6, Operation, SetGroup, SetLinkUp,
                  SetMac, SetMtu, SetPortFlags)
from .sandbox import _add_rules, _remove_rules

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..kernel.state import LinkState


def _make(endpoint: Endpoint, network: Network, tap: Tap, owner: Owner) -> list[Operation]:
    name = endpoint.host_ifname
    ops: list[Operation] = [CreateTap(name, tap.uid, tap.gid), SetGroup(name, owner.group),
                            SetMtu(name, network.mtu), SetMac(name, tap_mac(endpoint.mac))]
    if network.mtu >= IPV6_MIN_MTU:  # the tap itself has no address: no DAD, RS or MLD onto the bridge
        ops.append(DisableIPv6(name))
    return ops + [AttachToBridge(name, network.bridge), SetPortFlags(name, isolated=not network.icc),
                  AddFdbEntry(name, endpoint.mac), SetLinkUp(name)]


def plan_create_tap(endpoint: Endpoint, network: Network, tap: Tap, owner: Owner) -> list[Operation]:
    return [*_add_rules([(endpoint, network)], owner), *_make(endpoint, network, tap, owner)]


def plan_remove_tap(endpoint: Endpoint, network: Network, owner: Owner) -> list[Operation]:
    """Rules first: the guest is cut off at once."""
    return [*_remove_rules([(endpoint, network)], endpoint.host_ifname, owner), DeleteLink(endpoint.host_ifname)]


def tap_problem(endpoint: Endpoint, network: Network, link: LinkState | None) -> tuple[str, str] | None:
    """(drift kind, what) of the first thing wrong with a tap's device; None when nothing is. A
    tap no process holds has no carrier: only its administrative state (up) is judged. Its
    interface group is judged with every link's (reconcile._unmarked)."""
    name = endpoint.host_ifname
    if link is None:
        return "missing", f"tap {name} does not exist"
    if link.master != network.bridge:
        return "wrong", f"tap {name} is not on bridge {network.bridge}"
    if not link.up:
        return "wrong", f"tap {name} is down"
    if link.mtu != network.mtu:
        return "wrong", f"tap {name} has MTU {link.mtu}, the network's is {network.mtu}"
    if link.mac != tap_mac(endpoint.mac):
        return "wrong", f"tap {name} has MAC {link.mac}, nsnet gave it {tap_mac(endpoint.mac)}"
    if (link.hairpin, link.learning, link.locked, link.isolated) != (True, False, True, not network.icc):
        return "wrong", f"bridge port {name}'s flags are not nsnet's (hairpin, no learning, locked, icc)"
    if endpoint.mac not in link.static_macs:
        return "missing", f"bridge port {name} lacks its static FDB entry {endpoint.mac}"
    return None


def plan_repair_tap(endpoint: Endpoint, network: Network, tap: Tap, link: LinkState | None,
                    owner: Owner) -> list[Operation]:
    """A tap gone is made again (its owner as recorded); otherwise each wrong property is set back."""
    if link is None:
        return _make(endpoint, network, tap, owner)
    name = endpoint.host_ifname
    ops: list[Operation] = [] if link.master == network.bridge else [AttachToBridge(name, network.bridge)]
    if ops or (link.hairpin, link.learning, link.locked, link.isolated) != (True, False, True, not network.icc):
        ops.append(SetPortFlags(name, isolated=not network.icc))
    if ops or endpoint.mac not in link.static_macs:
        ops.append(AddFdbEntry(name, endpoint.mac))
    if link.mtu != network.mtu:
        ops.append(SetMtu(name, network.mtu))
    if link.mac != tap_mac(endpoint.mac):
        ops.append(SetMac(name, tap_mac(endpoint.mac)))
    if link.group != owner.group:
        ops.append(SetGroup(name, owner.group))
    if not link.up:
        ops.append(SetLinkUp(name))
    return ops
