"""A small rtnetlink client for the few messages on nsnet's hot path.

Why not pyroute2 here: importing pyroute2 costs ~80-190 ms of CPU (it loads the whole package),
which a CLI that attaches a sandbox in a few milliseconds cannot afford. The messages nsnet sends
on every attach are few and fixed (new link, new address, new route, link lookup), so they are
built here with `struct`; pyroute2 stays for dumps that are rare (see kernel/observe.py) and for
the tests, which check the kernel through it independently of this module.

A socket belongs to the network namespace it was created in (see kernel/netns.py for how a socket
is opened in a sandbox without moving the calling thread).
"""

from __future__ import annotations

import socket
import struct
from errno import ENODEV

from ..errors import KernelError

TYPE_CHECKING = False  # typing's import is 5 ms of a CNI plugin's start-up
if TYPE_CHECKING:
    from ..model import IPAddress, IPInterface, IPNetwork

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_ACK_TLVS = 0x200
NLMSGERR_ATTR_MSG = 1

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLM_F_DUMP = 0x300
RTM_NEWNEIGH = 28

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO = 1, 3, 4, 10, 18
IFLA_NET_NS_FD, IFLA_GROUP = 28, 27
IFLA_LINK, IFLA_MACVLAN_MODE = 5, 1
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 2, 4, 5
IFLA_BRPORT_MODE, IFLA_BRPORT_LEARNING, IFLA_BRPORT_ISOLATED, IFLA_BRPORT_LOCKED = 4, 8, 33, 39
NDA_LLADDR = 2
NTF_MASTER, NTF_STICKY = 0x04, 0x40
NUD_NOARP = 0x40  # `bridge fdb add ... static`
VETH_INFO_PEER = 1
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST = 1, 2, 4
IFA_F_NODAD = 0x02
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
NLA_F_NESTED = 0x8000

IFF_UP = 0x1
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBi")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NDMSG = struct.Struct("=BxxxiHBB")
AF_BRIDGE = 7


def attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def nested(kind: int, *children: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(children))


def string(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def attributes(payload: bytes, offset: int) -> dict[int, bytes]:
    """A message's attributes from offset on, by type (nested ones left packed)."""
    found = {}
    while offset + 4 <= len(payload):
        length, kind = struct.unpack_from("=HH", payload, offset)
        if length < 4 or offset + length > len(payload):
            break
        found[kind & ~NLA_F_NESTED] = payload[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return found


def ifinfomsg(index: int = 0, up: bool = False) -> bytes:
    flags = IFF_UP if up else 0
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, IFF_UP if up else 0)


class RtnlSocket:
    """One rtnetlink socket: send a request, wait for its answer, raise KernelError on refusal."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        self._sock = sock or socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        # Extended acks carry the kernel's reason as text ("Invalid MTU"); capped acks do not
        # echo our whole request back.
        self._sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        self._sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def request(self, operation: str, msg_type: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one request with NLM_F_ACK and return the messages answered before the ack."""
        self._seq += 1
        seq = self._seq
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, flags | NLM_F_REQUEST | NLM_F_ACK, seq, 0)
        self._sock.send(header + body)
        answers: list[tuple[int, bytes]] = []
        while True:
            data = self._sock.recv(65536)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, mflags, mseq, _ = _NLMSGHDR.unpack_from(data, offset)
                payload = data[offset + _NLMSGHDR.size : offset + length]
                offset += (length + 3) & ~3
                if mseq != seq:
                    continue
                if kind == NLMSG_ERROR:
                    code = struct.unpack_from("=i", payload)[0]
                    if code == 0:
                        return answers
                    raise KernelError(operation, -code, _ext_ack_message(payload, mflags))
                if kind == NLMSG_DONE:
                    return answers
                answers.append((kind, payload))

    # Links

    def link_names(self) -> dict[int, str]:
        """Every link's name, by index (one dump)."""
        names = {}
        for _, payload in self.request("dump of links", RTM_GETLINK, NLM_F_DUMP, ifinfomsg()):
            index = _IFINFOMSG.unpack_from(payload)[2]
            name = attributes(payload, _IFINFOMSG.size).get(IFLA_IFNAME, b"")
            names[index] = name.rstrip(b"\0").decode()
        return names

    def routes(self, family: int) -> list[tuple[int, int, bytes | None, int | None]]:
        """Every route of a family, as (table, prefix length, destination, output interface)."""
        found = []
        body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        for _, payload in self.request("dump of routes", RTM_GETROUTE, NLM_F_DUMP, body):
            _, dst_len, _, _, table, _, _, _, _ = _RTMSG.unpack_from(payload)
            attrs = attributes(payload, _RTMSG.size)
            if RTA_TABLE in attrs:
                table = struct.unpack("=I", attrs[RTA_TABLE])[0]
            oif = struct.unpack("=I", attrs[RTA_OIF])[0] if RTA_OIF in attrs else None
            found.append((table, dst_len, attrs.get(RTA_DST), oif))
        return found

    def link_index(self, name: str) -> int:
        answers = self.request(f"lookup of link {name}", RTM_GETLINK, 0, ifinfomsg() + string(IFLA_IFNAME, name))
        return _IFINFOMSG.unpack_from(answers[0][1])[2]

    def link_mac(self, name: str) -> str | None:
        """A link's hardware address; None when no link has that name."""
        try:
            answers = self.request(f"lookup of link {name}", RTM_GETLINK, 0, ifinfomsg() + string(IFLA_IFNAME, name))
        except KernelError as exc:
            if exc.errno == ENODEV:
                return None
            raise
        return attributes(answers[0][1], _IFINFOMSG.size).get(IFLA_ADDRESS, b"").hex(":")

    def create_bridge(self, name: str, mtu: int, mac: str, group: int) -> None:
        body = ifinfomsg(up=True) + string(IFLA_IFNAME, name) + u32(IFLA_MTU, mtu) + u32(IFLA_GROUP, group)
        body += attr(IFLA_ADDRESS, mac_bytes(mac)) + nested(IFLA_LINKINFO, string(IFLA_INFO_KIND, "bridge"))
        self.request(f"creation of bridge {name}", RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)

    def create_veth(self, name: str, master: int, mtu: int, peer: str, peer_netns_fd: int, peer_mac: str | None,
                    group: int) -> None:
        """One message makes the pair: host end up on its bridge, peer inside the sandbox.

        Creating the peer directly in the sandbox's namespace means its name never meets a host
        interface. The peer cannot be brought up by this message: the kernel configures it before
        the two ends are linked, and veth_open refuses that with ENOTCONN.
        """
        peer_info = ifinfomsg() + string(IFLA_IFNAME, peer) + u32(IFLA_MTU, mtu)
        if peer_mac is not None:
            peer_info += attr(IFLA_ADDRESS, mac_bytes(peer_mac))
        peer_info += u32(IFLA_NET_NS_FD, peer_netns_fd)
        linkinfo = nested(
            IFLA_LINKINFO,
            string(IFLA_INFO_KIND, "veth"),
            nested(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_info)),
        )
        body = ifinfomsg(up=True) + string(IFLA_IFNAME, name) + u32(IFLA_MTU, mtu)
        if master:  # a link between two sandboxes has no bridge and no ledger group (nsnet.links)
            body += u32(IFLA_MASTER, master) + u32(IFLA_GROUP, group)
        self.request(f"creation of veth {name}", RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body + linkinfo)

    def create_child(self, kind: str, name: str, parent: int, mtu: int | None = None, mac: str | None = None,
                     mode: int | None = None, netns_fd: int | None = None, group: int = 0) -> None:
        """A link on a parent interface (macvlan; ipvlan for doctor's probe), in one message; with
        `netns_fd` it is born (down) in that namespace, its parent staying here: its name never
        meets this namespace's interfaces and nothing is left here if the caller dies."""
        body = ifinfomsg() + string(IFLA_IFNAME, name) + u32(IFLA_LINK, parent)
        if mtu is not None:
            body += u32(IFLA_MTU, mtu)
        if mac is not None:
            body += attr(IFLA_ADDRESS, mac_bytes(mac))
        if group:
            body += u32(IFLA_GROUP, group)
        if netns_fd is not None:
            body += u32(IFLA_NET_NS_FD, netns_fd)
        data = [nested(IFLA_INFO_DATA, u32(IFLA_MACVLAN_MODE, mode))] if mode is not None else []
        body += nested(IFLA_LINKINFO, string(IFLA_INFO_KIND, kind), *data)
        self.request(f"creation of {kind} {name}", RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)

    def set_master(self, name: str, master: int) -> None:
        body = ifinfomsg(up=True) + string(IFLA_IFNAME, name) + u32(IFLA_MASTER, master)
        self.request(f"attaching {name} to its bridge", RTM_NEWLINK, 0, body)

    def set_port_flags(self, name: str, isolated: bool) -> None:
        """A sandbox's bridge port, as `bridge link set dev NAME hairpin on learning off locked on
        isolated on|off` sets it. Hairpin: with br_netfilter, a sandbox's connection to its own
        published port is DNAT'ed while still being bridged, and must leave by the port it
        arrived on. Learning off and locked: the bridge neither learns a MAC from the port nor
        forwards a frame whose source is not the port's static FDB entry (add_fdb_entry), so no
        sandbox can move another's MAC to its own port. Isolated: the bridge forwards nothing
        between two isolated ports, which is --no-icc at no cost per frame; frames to the bridge
        itself (the gateway) still pass."""
        slave = nested(IFLA_INFO_SLAVE_DATA, attr(IFLA_BRPORT_MODE, b"\x01"), attr(IFLA_BRPORT_LEARNING, b"\x00"),
                       attr(IFLA_BRPORT_LOCKED, b"\x01"),
                       attr(IFLA_BRPORT_ISOLATED, b"\x01" if isolated else b"\x00"))
        body = ifinfomsg() + string(IFLA_IFNAME, name)
        body += nested(IFLA_LINKINFO, string(IFLA_INFO_SLAVE_KIND, "bridge"), slave)
        self.request(f"bridge port flags of {name}", RTM_NEWLINK, 0, body)

    def set_up(self, index: int, name: str) -> None:
        self.request(f"bringing up {name}", RTM_NEWLINK, 0, ifinfomsg(index, up=True))

    def set_down(self, index: int, name: str) -> None:
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, IFF_UP)  # IFF_UP changed, to off
        self.request(f"bringing down {name}", RTM_NEWLINK, 0, body)

    def set_mtu(self, name: str, mtu: int) -> None:
        body = ifinfomsg() + string(IFLA_IFNAME, name) + u32(IFLA_MTU, mtu)
        self.request(f"setting the MTU of {name}", RTM_NEWLINK, 0, body)

    def set_group(self, name: str, group: int) -> None:
        body = ifinfomsg() + string(IFLA_IFNAME, name) + u32(IFLA_GROUP, group)
        self.request(f"setting the group of {name}", RTM_NEWLINK, 0, body)

    def set_mac(self, name: str, mac: str) -> None:
        body = ifinfomsg() + string(IFLA_IFNAME, name) + attr(IFLA_ADDRESS, mac_bytes(mac))
        self.request(f"setting the MAC of {name}", RTM_NEWLINK, 0, body)

    def add_fdb_entry(self, index: int, mac: str, name: str) -> None:
        """`bridge fdb replace MAC dev NAME master static sticky`: the MAC lives on this port, and
        no frame from another port can move it (sticky)."""
        body = _NDMSG.pack(AF_BRIDGE, index, NUD_NOARP, NTF_MASTER | NTF_STICKY, 0) + attr(NDA_LLADDR, mac_bytes(mac))
        self.request(f"static FDB entry {mac} on {name}", RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body)

    def delete_link(self, name: str) -> None:
        self.request(f"deletion of link {name}", RTM_DELLINK, 0, ifinfomsg() + string(IFLA_IFNAME, name))

    # Addresses and routes

    def _addr_body(self, index: int, iface: IPInterface) -> bytes:
        ip = iface.ip.packed
        if iface.version == 6:
            # No duplicate address detection: the address is usable the moment this returns
            # (nsnet's IPAM is what keeps addresses unique on its bridges).
            header = _IFADDRMSG.pack(socket.AF_INET6, iface.network.prefixlen, IFA_F_NODAD, RT_SCOPE_UNIVERSE, index)
            return header + attr(IFA_ADDRESS, ip)
        return (
            _IFADDRMSG.pack(socket.AF_INET, iface.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index)
            + attr(IFA_LOCAL, ip)
            + attr(IFA_ADDRESS, ip)
            + attr(IFA_BROADCAST, iface.network.broadcast_address.packed)
        )

    def add_address(self, index: int, iface: IPInterface, where: str) -> None:
        body = self._addr_body(index, iface)
        self.request(f"adding {iface} to {where}", RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body)

    def delete_address(self, index: int, iface: IPInterface, where: str) -> None:
        self.request(f"removing {iface} from {where}", RTM_DELADDR, 0, self._addr_body(index, iface))

    def _default_route_body(self, version: int, gateway: IPAddress | None, index: int | None) -> bytes:
        family = socket.AF_INET6 if version == 6 else socket.AF_INET
        body = _RTMSG.pack(family, 0, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
        if gateway is not None:
            body += attr(RTA_GATEWAY, gateway.packed)
        if index is not None:
            body += u32(RTA_OIF, index)
        return body

    def replace_default_route(self, gateway: IPAddress, index: int, where: str) -> None:
        body = self._default_route_body(gateway.version, gateway, index)
        self.request(f"default route via {gateway} in {where}", RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, body)

    def _route_body(self, dst: IPNetwork, via: IPAddress) -> bytes:
        family = socket.AF_INET6 if dst.version == 6 else socket.AF_INET
        body = _RTMSG.pack(family, dst.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
        return body + attr(RTA_DST, dst.network_address.packed) + attr(RTA_GATEWAY, via.packed)

    def add_route(self, dst: IPNetwork, via: IPAddress, where: str) -> None:
        self.request(f"route to {dst} via {via} in {where}", RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL,
                     self._route_body(dst, via))

    def delete_route(self, dst: IPNetwork, via: IPAddress, where: str) -> None:
        self.request(f"removing the route to {dst} in {where}", RTM_DELROUTE, 0, self._route_body(dst, via))

    def delete_default_route(self, version: int, where: str) -> None:
        body = self._default_route_body(version, None, None)
        self.request(f"removing the IPv{version} default route in {where}", RTM_DELROUTE, 0, body)


def _ext_ack_message(payload: bytes, flags: int) -> str:
    """The kernel's text reason, when it sent one (NLMSGERR_ATTR_MSG after the capped header)."""
    if not flags & NLM_F_ACK_TLVS:
        return ""
    offset = 4 + _NLMSGHDR.size
    while offset + 4 <= len(payload):
        length, kind = struct.unpack_from("=HH", payload, offset)
        if length < 4 or offset + length > len(payload):
            break
        if kind & ~NLA_F_NESTED == NLMSGERR_ATTR_MSG:
            return payload[offset + 4 : offset + length].rstrip(b"\0").decode(errors="replace")
        offset += (length + 3) & ~3
    return ""

