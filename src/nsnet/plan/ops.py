"""Kernel operations as data. `run` performs one against a Kernel; `undo` returns the operation
that reverses it, or None when there is nothing of nsnet's to reverse (an idempotent ensure, or a
removal, which teardown never reverses).
"""

from __future__ import annotations


from ..errors import KernelError
from ..kernel import Kernel
from ..record import record

TYPE_CHECKING = False  # typing's import is 5 ms of a CNI plugin's start-up
if TYPE_CHECKING:
    from typing import Any

    from ..model import IPAddress, IPInterface, IPNetwork
    from ..shaping import Qdisc


class Operation:
    def run(self, kernel: Kernel) -> None:
        raise NotImplementedError

    def undo(self) -> Operation | None:
        return None

    def apply(self, kernel: Kernel) -> Operation | None:
        """Run, and return what reverses what this run did (an operation whose undo depends on
        what it found overrides this)."""
        self.run(kernel)
        return self.undo()


@record
class EnsureSysctl(Operation):
    """A setting others may rely on (ip_forward): left in place on removal, as Docker does, but a
    failed command puts back the value it found."""

    key: str
    value: str
    sandbox: str | None = None  # inside this sandbox's namespace (nsnet.routes' forwarding)

    def run(self, kernel: Kernel) -> None:
        kernel.ensure_sysctl(self.key, self.value, self.sandbox)

    def apply(self, kernel: Kernel) -> Operation | None:
        previous = kernel.ensure_sysctl(self.key, self.value, self.sandbox)
        if previous is None:
            return None
        if self.sandbox is None:
            return WriteSysctl(self.key, previous)
        return EnsureSysctl(self.key, previous, self.sandbox)


@record
class WriteSysctl(Operation):
    key: str
    value: str

    def run(self, kernel: Kernel) -> None:
        kernel.write_sysctl(self.key, self.value)


@record
class CreateBridge(Operation):
    name: str
    mtu: int
    mac: str
    group: int

    def run(self, kernel: Kernel) -> None:
        kernel.create_bridge(self.name, self.mtu, self.mac, self.group)

    def undo(self) -> Operation:
        return DeleteLink(self.name)


@record
class DeleteLink(Operation):
    name: str
    sandbox: str | None = None

    def run(self, kernel: Kernel) -> None:
        kernel.delete_link(self.name, self.sandbox)


@record
class AttachToBridge(Operation):
    """A veth whose bridge was re-made (gc) goes back on it; SetPortFlags follows."""

    name: str
    bridge: str

    def run(self, kernel: Kernel) -> None:
        kernel.attach_to_bridge(self.name, self.bridge)


@record
class SetPortFlags(Operation):
    """Hairpin, no learning, locked, and isolation on a --no-icc network (see rtnl.set_port_flags);
    set while the sandbox end is still down, so no frame crosses the port before. What it changes
    goes with the veth (CreateVeth's undo)."""

    name: str
    isolated: bool = False

    def run(self, kernel: Kernel) -> None:
        kernel.set_port_flags(self.name, self.isolated)


@record
class AddFdbEntry(Operation):
    """The sandbox's MAC, static and sticky on its port: with learning off, the bridge knows where
    to send its frames, and no other port can take the MAC. Goes with the veth."""

    port: str
    mac: str

    def run(self, kernel: Kernel) -> None:
        kernel.add_fdb_entry(self.port, self.mac)


@record
class DisableIPv6(Operation):
    """On the host end of a veth: no duplicate address detection, router solicitations or MLD
    reports flooding the bridge. Goes with the veth."""

    ifname: str

    def run(self, kernel: Kernel) -> None:
        kernel.disable_ipv6(self.ifname)


@record
class EnableIPv6(Operation):
    """On a sandbox's end of a veth on a network with IPv6 (a sandbox's interfaces start without
    it): its link-local address (EUI-64 of its MAC, which the bridge filter expects) and its
    addresses usable at once, without duplicate address detection, and no router advertisements
    taken. Done while the interface is still down. Goes with the veth."""

    ifname: str
    sandbox: str

    def run(self, kernel: Kernel) -> None:
        kernel.enable_ipv6(self.ifname, self.sandbox)


@record
class SetLinkUp(Operation):
    name: str
    sandbox: str | None = None

    def run(self, kernel: Kernel) -> None:
        kernel.set_link_up(self.name, self.sandbox)


@record
class SetMtu(Operation):
    name: str
    mtu: int
    sandbox: str | None = None

    def run(self, kernel: Kernel) -> None:
        kernel.set_mtu(self.name, self.mtu, self.sandbox)


@record
class SetGroup(Operation):
    """Marks a host link as the ledger's (model.Owner): for links an older nsnet made."""

    name: str
    group: int

    def run(self, kernel: Kernel) -> None:
        kernel.set_group(self.name, self.group)


@record
class SetMac(Operation):
    name: str
    mac: str
    sandbox: str | None = None

    def run(self, kernel: Kernel) -> None:
        kernel.set_mac(self.name, self.mac, self.sandbox)


@record
class AddAddress(Operation):
    ifname: str
    address: IPInterface
    sandbox: str | None = None

    def run(self, kernel: Kernel) -> None:
        kernel.add_address(self.ifname, self.address, self.sandbox)

    def undo(self) -> Operation:
        return DeleteAddress(self.ifname, self.address, self.sandbox)


@record
class DeleteAddress(Operation):
    ifname: str
    address: IPInterface
    sandbox: str | None = None

    def run(self, kernel: Kernel) -> None:
        kernel.delete_address(self.ifname, self.address, self.sandbox)


@record
class ApplyFirewall(Operation):
    """One atomic nftables transaction; its undo is the transaction that reverses it."""

    commands: tuple[Any, ...]
    reverse: tuple[Any, ...] = ()
    description: str = ""

    def run(self, kernel: Kernel) -> None:
        kernel.nft(list(self.commands))

    def undo(self) -> Operation | None:
        return ApplyFirewall(self.reverse, description=f"undo {self.description}") if self.reverse else None


@record
class ApplySandboxFirewall(Operation):
    """One atomic nftables transaction inside a sandbox's namespace; undone by its reverse."""

    sandbox: str
    commands: tuple[Any, ...]
    reverse: tuple[Any, ...] = ()
    description: str = ""

    def run(self, kernel: Kernel) -> None:
        kernel.sandbox_nft(self.sandbox, list(self.commands))

    def undo(self) -> Operation | None:
        if not self.reverse:
            return None
        return ApplySandboxFirewall(self.sandbox, self.reverse, description=f"undo {self.description}")


@record
class RemoveFirewallElements(Operation):
    """Element deletes for teardown. nft aborts a whole transaction when one element is already
    gone (libnftables 1.0.6 has no `destroy`), so on that error each delete is retried alone and
    the missing ones are skipped."""

    commands: tuple[Any, ...]
    description: str = ""

    def run(self, kernel: Kernel) -> None:
        try:
            kernel.nft(list(self.commands))
        except KernelError as exc:
            if not exc.gone:
                raise
            for command in self.commands:
                try:
                    kernel.nft([command])
                except KernelError as single:
                    if not single.gone:
                        raise


@record
class CreateNetns(Operation):
    sandbox: str

    def run(self, kernel: Kernel) -> None:
        kernel.create_netns(self.sandbox)

    def undo(self) -> Operation:
        return DeleteNetns(self.sandbox)


@record
class DeleteNetns(Operation):
    """Unpinning the namespace lets the kernel destroy it with every veth end inside: 0.07 ms,
    where deleting each veth explicitly costs ~30 ms (it waits for RCU grace periods)."""

    sandbox: str

    def run(self, kernel: Kernel) -> None:
        kernel.delete_netns(self.sandbox)


@record
class KillProcesses(Operation):
    """`rm -f`: end what still runs in the sandbox, so its namespace (and veths) can go."""

    sandbox: str

    def run(self, kernel: Kernel) -> None:
        kernel.kill(kernel.pids_in_netns(self.sandbox))


@record
class WriteEtcFiles(Operation):
    """Files under /etc/netns/NAME, bound over /etc by `nsnet exec` (as `ip netns exec` does)."""

    sandbox: str
    files: tuple[tuple[str, str], ...]

    def run(self, kernel: Kernel) -> None:
        kernel.write_etc_files(self.sandbox, dict(self.files))

    def undo(self) -> Operation:
        return RemoveEtcFiles(self.sandbox)


@record
class ReplaceEtcFile(Operation):
    """One file under /etc/netns/NAME rewritten (or removed: None) as the sandbox's networks
    change; undone by putting back what was there."""

    sandbox: str
    filename: str
    text: str | None
    previous: str | None

    def run(self, kernel: Kernel) -> None:
        kernel.replace_etc_file(self.sandbox, self.filename, self.text)

    def undo(self) -> Operation:
        return ReplaceEtcFile(self.sandbox, self.filename, self.previous, self.text)


@record
class RemoveEtcFiles(Operation):
    sandbox: str

    def run(self, kernel: Kernel) -> None:
        kernel.remove_etc_files(self.sandbox)


@record
class CreateVeth(Operation):
    """The pair, in one message: its host end up on the bridge, its peer (down) in the sandbox."""

    name: str
    bridge: str
    sandbox: str
    peer: str
    mtu: int
    mac: str
    group: int

    def run(self, kernel: Kernel) -> None:
        kernel.create_veth(self.name, self.bridge, self.sandbox, self.peer, self.mtu, self.mac, self.group)

    def undo(self) -> Operation:
        return DeleteLink(self.name)


@record
class CreateMacvlan(Operation):
    """A macvlan child of the host's interface `parent`, in one message, born (down) inside the
    sandbox as `name` (nsnet.drivers); undone by deleting it there. The parent is never changed."""

    name: str
    parent: str
    sandbox: str
    mode: str
    mtu: int
    mac: str
    group: int

    def run(self, kernel: Kernel) -> None:
        kernel.create_macvlan(self.name, self.parent, self.sandbox, self.mode, self.mtu, self.mac, self.group)

    def undo(self) -> Operation:
        return DeleteLink(self.name, self.sandbox)


@record
class CreateTap(Operation):
    """A persistent tap device owned by uid/gid (None: only root may open it), with no process
    attached: down, on no bridge, until the operations after it (nsnet.taps)."""

    name: str
    uid: int | None
    gid: int | None

    def run(self, kernel: Kernel) -> None:
        kernel.create_tap(self.name, self.uid, self.gid)

    def undo(self) -> Operation:
        return DeleteLink(self.name)


@record
class CreatePair(Operation):
    """A link's veth pair, in one message from the first sandbox's namespace, its peer born in
    the second's (nsnet.links)."""

    sandbox: str
    ifname: str
    peer_sandbox: str
    peer: str
    mtu: int

    def run(self, kernel: Kernel) -> None:
        kernel.create_pair(self.sandbox, self.ifname, self.peer_sandbox, self.peer, self.mtu)

    def undo(self) -> Operation:
        return DeleteLink(self.ifname, self.sandbox)


@record
class AddRoute(Operation):
    sandbox: str
    dst: IPNetwork
    via: IPAddress

    def run(self, kernel: Kernel) -> None:
        kernel.add_route(self.sandbox, self.dst, self.via)

    def undo(self) -> Operation:
        return DeleteRoute(self.sandbox, self.dst, self.via)


@record
class DeleteRoute(Operation):
    sandbox: str
    dst: IPNetwork
    via: IPAddress

    def run(self, kernel: Kernel) -> None:
        kernel.delete_route(self.sandbox, self.dst, self.via)


@record
class SetDefaultRoute(Operation):
    sandbox: str
    gateway: IPAddress
    ifname: str

    def run(self, kernel: Kernel) -> None:
        kernel.replace_default_route(self.gateway, self.ifname, self.sandbox)

    def undo(self) -> Operation:
        return DeleteDefaultRoute(self.sandbox, self.gateway.version)


@record
class DeleteDefaultRoute(Operation):
    sandbox: str
    version: int = 4

    def run(self, kernel: Kernel) -> None:
        kernel.delete_default_route(self.sandbox, self.version)


@record
class SetQdisc(Operation):
    """A device's root qdisc replaced by a shaping's (nsnet.shaping); undone by putting back the
    one nsnet had set there, or by clearing it."""

    sandbox: str | None
    ifname: str
    qdisc: Qdisc
    previous: Qdisc | None = None

    def run(self, kernel: Kernel) -> None:
        kernel.set_qdisc(self.sandbox, self.ifname, self.qdisc)

    def undo(self) -> Operation:
        if self.previous is not None:
            return SetQdisc(self.sandbox, self.ifname, self.previous)
        return ClearQdisc(self.sandbox, self.ifname)


@record
class ClearQdisc(Operation):
    """A device back to its default root qdisc; undone by setting what it had (when known)."""

    sandbox: str | None
    ifname: str
    previous: Qdisc | None = None

    def run(self, kernel: Kernel) -> None:
        kernel.clear_qdisc(self.sandbox, self.ifname)

    def undo(self) -> Operation | None:
        return SetQdisc(self.sandbox, self.ifname, self.previous) if self.previous is not None else None


# Overlay networks (nsnet.cluster): the VXLAN device and, per peer host, its three entries

@record
class CreateVxlan(Operation):
    name: str
    vni: int
    port: int
    local: str
    underlay: str
    mtu: int
    mac: str
    group: int

    def run(self, kernel: Kernel) -> None:
        kernel.create_vxlan(self.name, self.vni, self.port, self.local, self.underlay, self.mtu, self.mac, self.group)

    def undo(self) -> Operation:
        return DeleteLink(self.name)


@record
class ReplaceNeighbour(Operation):
    device: str
    address: str
    mac: str

    def run(self, kernel: Kernel) -> None:
        kernel.replace_neighbour(self.device, self.address, self.mac)

    def undo(self) -> Operation:
        return DeleteNeighbour(self.device, self.address, self.mac)


@record
class DeleteNeighbour(Operation):
    device: str
    address: str
    mac: str

    def run(self, kernel: Kernel) -> None:
        kernel.delete_neighbour(self.device, self.address, self.mac)

    def undo(self) -> Operation:
        """A peer's entry put back when the change that removed it fails later on."""
        return ReplaceNeighbour(self.device, self.address, self.mac)


@record
class ReplaceFdb(Operation):
    device: str
    mac: str
    destination: str

    def run(self, kernel: Kernel) -> None:
        kernel.replace_fdb(self.device, self.mac, self.destination)

    def undo(self) -> Operation:
        return DeleteFdb(self.device, self.mac, self.destination)


@record
class DeleteFdb(Operation):
    device: str
    mac: str
    destination: str

    def run(self, kernel: Kernel) -> None:
        kernel.delete_fdb(self.device, self.mac, self.destination)

    def undo(self) -> Operation:
        """A peer's entry put back when the change that removed it fails later on."""
        return ReplaceFdb(self.device, self.mac, self.destination)


@record
class ReplaceOnlinkRoute(Operation):
    destination: str
    via: str
    device: str

    def run(self, kernel: Kernel) -> None:
        kernel.replace_onlink_route(self.destination, self.via, self.device)

    def undo(self) -> Operation:
        return DeleteOnlinkRoute(self.destination, self.via, self.device)


@record
class DeleteOnlinkRoute(Operation):
    destination: str
    via: str
    device: str

    def run(self, kernel: Kernel) -> None:
        kernel.delete_onlink_route(self.destination, self.via, self.device)

    def undo(self) -> Operation:
        """A peer's entry put back when the change that removed it fails later on."""
        return ReplaceOnlinkRoute(self.destination, self.via, self.device)


@record
class AddUnreachableRoute(Operation):
    """The overlay's whole subnet unreachable but for the blocks routed: an address no host holds
    fails at once (EHOSTUNREACH) and never leaks to the default route."""

    destination: str

    def run(self, kernel: Kernel) -> None:
        kernel.replace_unreachable(self.destination)

    def undo(self) -> Operation:
        return DeleteUnreachableRoute(self.destination)


@record
class DeleteUnreachableRoute(Operation):
    destination: str

    def run(self, kernel: Kernel) -> None:
        kernel.delete_unreachable(self.destination)
