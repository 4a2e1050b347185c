"""Hand-made Ethernet frames, sent and captured with raw AF_PACKET sockets inside namespaces: what
an attacker with root in a sandbox can put on the wire, and what a neighbour actually receives.

Every frame carries a marker in its payload; a capture reports the markers it saw, so a test
asserts on exactly which frames crossed. Senders and captures are bounded in time.
"""

from __future__ import annotations

import subprocess
import sys

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


def capture(ns: str | None, ifname: str, seconds: float, *markers: str) -> Server:
    """Start capturing on ifname in ns; .seen() lists the markers received."""
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
