"""Hand-made Ethernet frames, sent and captured with raw AF_PACKET sockets inside namespaces: what
an attacker with root in a sandbox can put on the wire, and what a neighbour actually receives.

Every frame carries a marker in its payload; a capture reports the markers it saw, so a test
asserts on exactly which frames crossed. Senders and captures are bounded in time.
"""

from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv6Address

from .net import Server, in_ns, start

# argv: IFNAME SECONDS MARKER... -> prints each marker seen (once per frame), then exits.
_CAPTURE = r"""
import socket, sys, time
ifname, seconds, markers = sys.argv[1], float(sys.argv[2]), [m.encode() for m in sys.argv[3:]]
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
sock.bind((ifname, 0))
sock.settimeout(0.1)
print("ready", flush=True)
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    try:
        frame, address = sock.recvfrom(65535)
    except socket.timeout:
        continue
    if address[2] == socket.PACKET_OUTGOING:
        continue
    for marker in markers:
        if marker in frame:
            print(marker.decode(), flush=True)
"""

# argv: IFNAME REPEAT GAP HEXFRAME... -> sends each frame REPEAT times, GAP seconds apart.
_SEND = r"""
import socket, sys, time
ifname, repeat, gap, frames = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((ifname, 0))
for _ in range(repeat):
    for frame in frames:
        sock.send(bytes.fromhex(frame))
    time.sleep(gap)
"""


def mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def ip_bytes(ip: str) -> bytes:
    return bytes(int(part) for part in ip.split("."))


def ethernet(dst: str, src: str, ethertype: int, payload: bytes) -> bytes:
    frame = mac_bytes(dst) + mac_bytes(src) + ethertype.to_bytes(2, "big") + payload
    return frame + b"\0" * max(0, 60 - len(frame))


def _checksum(header: bytes) -> int:
    total = sum(int.from_bytes(header[i:i + 2], "big") for i in range(0, len(header), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(src: str, dst: str, protocol: int, payload: bytes) -> bytes:
    header = bytearray(b"\x45\x00" + (20 + len(payload)).to_bytes(2, "big") + b"\x00\x01\x40\x00\x40"
                       + bytes([protocol]) + b"\x00\x00" + ip_bytes(src) + ip_bytes(dst))
    header[10:12] = _checksum(bytes(header)).to_bytes(2, "big")
    return bytes(header) + payload


def udp(src: str, dst: str, sport: int, dport: int, data: bytes) -> bytes:
    """An IPv4 UDP packet (checksum 0: none, which IPv4 allows)."""
    segment = sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + (8 + len(data)).to_bytes(2, "big") + b"\0\0"
    return ipv4(src, dst, 17, segment + data)


def tcp_syn(src: str, dst: str, sport: int, dport: int, data: bytes) -> bytes:
    pseudo = ip_bytes(src) + ip_bytes(dst) + b"\x00\x06" + (20 + len(data)).to_bytes(2, "big")
    segment = bytearray(sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + b"\0\0\0\x01" + b"\0\0\0\0"
                        + b"\x50\x02\xff\xff" + b"\0\0\0\0" + data)
    segment[16:18] = _checksum(pseudo + bytes(segment) + b"\0" * (len(segment) % 2)).to_bytes(2, "big")
    return ipv4(src, dst, 6, bytes(segment))


def arp_reply(sender_mac: str, sender_ip: str, target_mac: str, target_ip: str) -> bytes:
    return (b"\x00\x01\x08\x00\x06\x04\x00\x02" + mac_bytes(sender_mac) + ip_bytes(sender_ip)
            + mac_bytes(target_mac) + ip_bytes(target_ip))


def ipv6_udp(src_mac_suffix: bytes, data: bytes) -> bytes:
    """An IPv6 UDP datagram from a link-local address to all nodes (ff02::1)."""
    src = bytes.fromhex("fe800000000000000000000000000000")[:8] + src_mac_suffix.rjust(8, b"\0")
    dst = bytes.fromhex("ff020000000000000000000000000001")
    segment = (4000).to_bytes(2, "big") + (4000).to_bytes(2, "big") + (8 + len(data)).to_bytes(2, "big") + b"\0\0"
    return (b"\x60\x00\x00\x00" + (len(segment) + len(data)).to_bytes(2, "big") + b"\x11\x40" + src + dst
            + segment + data)


# IPv6. Checksums are computed over the pseudo-header (RFC 8200 8.1): a receiving kernel drops a
# datagram or an ND message whose checksum is wrong, so a frame that passes the filter is one the
# neighbour's stack really takes.

NEXT_ICMPV6, NEXT_UDP, NEXT_DESTINATION_OPTIONS = 58, 17, 60


def ip6_bytes(ip: str) -> bytes:
    return IPv6Address(ip).packed


def multicast_mac(ip: str) -> str:
    """The Ethernet address of an IPv6 multicast group: 33:33 and the group's last 32 bits."""
    return "33:33:" + ":".join(f"{b:02x}" for b in ip6_bytes(ip)[-4:])


def _checksum6(src: str, dst: str, next_header: int, segment: bytes) -> int:
    pseudo = ip6_bytes(src) + ip6_bytes(dst) + len(segment).to_bytes(4, "big") + b"\0\0\0" + bytes([next_header])
    return _checksum(pseudo + segment + b"\0" * (len(segment) % 2))


def ipv6(src: str, dst: str, next_header: int, payload: bytes, hop_limit: int = 64,
         destination_options: bool = False) -> bytes:
    """An IPv6 header and payload; `destination_options` puts an (empty, padded) destination
    options header between them, which a filter reading only the first next-header field misses."""
    if destination_options:
        payload = bytes([next_header, 0]) + b"\x01\x04\0\0\0\0" + payload  # PadN: 8 bytes in all
        next_header = NEXT_DESTINATION_OPTIONS
    return (b"\x60\x00\x00\x00" + len(payload).to_bytes(2, "big") + bytes([next_header, hop_limit])
            + ip6_bytes(src) + ip6_bytes(dst) + payload)


def icmpv6(src: str, dst: str, kind: int, code: int, body: bytes, hop_limit: int = 255,
           destination_options: bool = False) -> bytes:
    """An ICMPv6 message in its IPv6 packet (hop limit 255: what neighbour discovery requires)."""
    message = bytearray(bytes([kind, code]) + b"\0\0" + body)
    message[2:4] = _checksum6(src, dst, NEXT_ICMPV6, bytes(message)).to_bytes(2, "big")
    return ipv6(src, dst, NEXT_ICMPV6, bytes(message), hop_limit, destination_options)


def udp6(src: str, dst: str, sport: int, dport: int, data: bytes, destination_options: bool = False) -> bytes:
    """An IPv6 UDP datagram, with its checksum (mandatory in IPv6)."""
    segment = bytearray(sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + (8 + len(data)).to_bytes(2, "big")
                        + b"\0\0" + data)
    segment[6:8] = (_checksum6(src, dst, NEXT_UDP, bytes(segment)) or 0xFFFF).to_bytes(2, "big")
    return ipv6(src, dst, NEXT_UDP, bytes(segment), destination_options=destination_options)


ND_SOURCE_LLA, ND_TARGET_LLA, ND_PREFIX, ND_REDIRECTED = 1, 2, 3, 4
ND_MARKER = 253  # an option type for experiments (RFC 4727): receivers ignore it, captures find it


def nd_option(kind: int, data: bytes) -> bytes:
    """A neighbour discovery option, padded to a multiple of 8 bytes (its length is in 8s)."""
    size = -(-(2 + len(data)) // 8) * 8
    return bytes([kind, size // 8]) + data + b"\0" * (size - 2 - len(data))


def _marker_option(marker: bytes) -> bytes:
    return nd_option(ND_MARKER, marker) if marker else b""


def neighbour_advertisement(src: str, dst: str, target: str, target_mac: str, override: bool = True,
                            solicited: bool = False, marker: bytes = b"",
                            destination_options: bool = False) -> bytes:
    """ICMPv6 type 136: `target` is the address claimed, `target_mac` (its target link-layer
    address option) where it is said to be."""
    flags = (0x20 if override else 0) | (0x40 if solicited else 0)
    body = (bytes([flags, 0, 0, 0]) + ip6_bytes(target) + nd_option(ND_TARGET_LLA, mac_bytes(target_mac))
            + _marker_option(marker))
    return icmpv6(src, dst, 136, 0, body, destination_options=destination_options)


def router_advertisement(src: str, dst: str, source_mac: str, prefix: str, router_lifetime: int = 1800,
                         marker: bytes = b"", destination_options: bool = False) -> bytes:
    """ICMPv6 type 134: a default router (lifetime in seconds) and an on-link, autonomous prefix
    (prefix information option: L and A flags, a day's lifetimes), so a host taking it gets a
    default route, a route to the prefix and an address in it."""
    network, length = prefix.split("/")
    prefix_info = (bytes([int(length), 0xC0]) + (86400).to_bytes(4, "big") + (86400).to_bytes(4, "big")
                   + b"\0" * 4 + ip6_bytes(network))
    body = (bytes([64, 0]) + router_lifetime.to_bytes(2, "big") + b"\0" * 8
            + nd_option(ND_SOURCE_LLA, mac_bytes(source_mac)) + nd_option(ND_PREFIX, prefix_info)
            + _marker_option(marker))
    return icmpv6(src, dst, 134, 0, body, destination_options=destination_options)


def redirect(src: str, dst: str, target: str, destination: str, target_mac: str, marker: bytes = b"") -> bytes:
    """ICMPv6 type 137: `destination` is better reached through `target` (at `target_mac`)."""
    body = (b"\0" * 4 + ip6_bytes(target) + ip6_bytes(destination)
            + nd_option(ND_TARGET_LLA, mac_bytes(target_mac)) + _marker_option(marker))
    return icmpv6(src, dst, 137, 0, body)


DHCPV6_ADVERTISE, DHCPV6_REPLY = 2, 7
ALL_DHCP_AGENTS = "ff02::1:2"


def dhcpv6(message_type: int, server_mac: str, marker: bytes) -> bytes:
    """A DHCPv6 server message (RFC 8415): transaction id, server identifier (a DUID-LL) and a
    status code option whose text is the marker."""
    server_id = b"\x00\x03\x00\x01" + mac_bytes(server_mac)
    return (bytes([message_type]) + b"\x12\x34\x56"
            + (2).to_bytes(2, "big") + len(server_id).to_bytes(2, "big") + server_id
            + (13).to_bytes(2, "big") + (2 + len(marker)).to_bytes(2, "big") + b"\0\0" + marker)


def capture(ns: str | None, ifname: str, seconds: float, *markers: str) -> Server:
    """Start capturing on ifname in ns; .seen() lists the markers received."""
    # A marker found inside another would be reported for the other's frames too.
    assert not [(a, b) for a in markers for b in markers if a != b and a in b], markers
    return start(ns, _CAPTURE, ifname, seconds, *markers)


def seen(server: Server) -> list[str]:
    out, _ = server.process.communicate(timeout=15)
    return out.split()


def send(ns: str | None, ifname: str, frames: list[bytes], repeat: int = 1, gap: float = 0.0,
         background: bool = False) -> subprocess.Popen | None:
    argv = in_ns(ns, [sys.executable, "-c", _SEND, ifname, str(repeat), str(gap), *(f.hex() for f in frames)])
    if background:
        return subprocess.Popen(argv)
    subprocess.run(argv, check=True, timeout=30)
    return None


# argv: PORT SECONDS IFNAME GROUP... -> a UDP socket on [::]:PORT (in the GROUPs, on IFNAME)
# prints each datagram it receives: what the neighbour's stack accepted, checksum included.
_RECEIVE6 = r"""
import socket, struct, sys, time
port, seconds, ifname, groups = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4:]
sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("::", port))
for group in groups:
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                    socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", socket.if_nametoindex(ifname)))
sock.settimeout(0.1)
print("ready", flush=True)
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    try:
        data, peer = sock.recvfrom(65535)
    except socket.timeout:
        continue
    print(data.decode(errors="replace").split("\x00")[-1].strip() or "?", flush=True)
"""


def receive6(ns: str, port: int, seconds: float, *groups: str, ifname: str = "eth0") -> Server:
    """A UDP socket on [::]:port in ns; seen() lists the text at the end of each datagram received."""
    return start(ns, _RECEIVE6, port, seconds, ifname, *groups)
