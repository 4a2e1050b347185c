"""A VM guest's side of a tap, for tests: a userspace responder that opens the tap as its owner
(what QEMU does) and answers ARP and ICMP echo for the guest's address from the guest's MAC,
exactly what a guest's NIC and stack would put on the wire (tuntap.rst: "TAP works with Ethernet
frames"); it also writes frames it is given, to test the port's anti-spoofing.
"""

from __future__ import annotations

import os
import subprocess
import sys

# argv: FD TAP GUEST_MAC GUEST_IP SECONDS (FD: an open /dev/net/tun). Prints "ready" once attached
# (or "refused ERRNO"), then
# "sent N" after each line of hex frames read on stdin; at the end "echoes N" (requests answered).
_RESPONDER = r"""
import fcntl, os, select, struct, sys, time
fd, name, mac, ip, seconds = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
try:
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", name.encode(), 0x0002 | 0x1000))  # TUNSETIFF, TAP|NO_PI
except OSError as exc:
    print(f"refused {exc.errno}", flush=True)
    sys.exit(0)
print("ready", flush=True)
own_mac, own_ip = bytes.fromhex(mac.replace(":", "")), bytes(map(int, ip.split(".")))

def checksum(data):
    data += b"\0" * (len(data) % 2)
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

echoes, deadline, stdin_open = 0, time.monotonic() + seconds, True
while time.monotonic() < deadline:
    ready, _, _ = select.select([fd] + ([sys.stdin] if stdin_open else []), [], [], 0.1)
    if sys.stdin in ready:
        line = sys.stdin.readline()
        if not line:
            stdin_open = False
            continue
        frames = line.split()
        for frame in frames:
            os.write(fd, bytes.fromhex(frame))
        print(f"sent {len(frames)}", flush=True)
    if fd not in ready:
        continue
    frame = os.read(fd, 65536)
    kind = frame[12:14]
    if kind == b"\x08\x06" and frame[20:22] == b"\x00\x01" and frame[38:42] == own_ip:  # ARP request for us
        sender_mac, sender_ip = frame[22:28], frame[28:32]
        arp = b"\x00\x01\x08\x00\x06\x04\x00\x02" + own_mac + own_ip + sender_mac + sender_ip
        os.write(fd, (sender_mac + own_mac + b"\x08\x06" + arp).ljust(60, b"\0"))
    elif kind == b"\x08\x00" and frame[0:6] == own_mac and frame[23] == 1 and frame[30:34] == own_ip:
        header_length = (frame[14] & 0x0F) * 4
        header = bytearray(frame[14:14 + header_length])
        header[12:16], header[16:20] = frame[30:34], frame[26:30]  # swapped: the checksum stays right
        icmp = bytearray(frame[14 + header_length:14 + int.from_bytes(frame[16:18], "big")])
        if icmp[0] != 8:
            continue
        icmp[0], icmp[2:4] = 0, b"\0\0"
        icmp[2:4] = checksum(bytes(icmp)).to_bytes(2, "big")
        os.write(fd, frame[6:12] + own_mac + b"\x08\x00" + bytes(header) + bytes(icmp))
        echoes += 1
print(f"echoes {echoes}", flush=True)
"""


class Responder:
    """The responder, run as `uid`/`gid` with no capability. /dev/net/tun may be root's alone
    (0600 on some hosts, this one included): root opens it and hands the descriptor over, as
    libvirt hands QEMU its descriptors. Attaching is what the owner check guards: TUNSETIFF on an
    existing tap compares the caller's uid/gid with the tap's (tun_not_capable)."""

    def __init__(self, tap: str, mac: str, ip: str, seconds: float, uid: int, gid: int) -> None:
        fd = os.open("/dev/net/tun", os.O_RDWR)
        try:
            self.process = subprocess.Popen([sys.executable, "-c", _RESPONDER, str(fd), tap, mac, ip, str(seconds)],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, pass_fds=(fd,),
                                            user=uid, group=gid, extra_groups=[])
        finally:
            os.close(fd)
        self.first = self.process.stdout.readline().strip()

    def send(self, frames: list[bytes]) -> str:
        self.process.stdin.write(" ".join(f.hex() for f in frames) + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def finish(self) -> str:
        """The last line ("echoes N"), once the responder has run out its time."""
        out, _ = self.process.communicate(timeout=30)
        return out.strip().splitlines()[-1] if out.strip() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# argv: IP COUNT -> echo requests one by one (each waits up to 2 s for its reply); prints the replies.
_PING = r"""
import os, socket, sys, time
ip, count = sys.argv[1], int(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)

def checksum(data):
    data += b"\0" * (len(data) % 2)
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

ident, replies = os.getpid() & 0xFFFF, 0
for seq in range(count):
    body = ident.to_bytes(2, "big") + seq.to_bytes(2, "big") + b"nsnet-ping"
    sock.sendto(b"\x08\x00" + checksum(b"\x08\x00\x00\x00" + body).to_bytes(2, "big") + body, (ip, 0))
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            packet, peer = sock.recvfrom(2048)
        except socket.timeout:
            break
        icmp = packet[(packet[0] & 0x0F) * 4:]
        if peer[0] == ip and icmp[0] == 0 and icmp[4:8] == body[:4]:
            replies += 1
            break
print(replies)
"""


def ping(ns: str, ip: str, count: int) -> int:
    """How many of `count` ICMP echo requests from ns to ip were answered (no ping binary needed)."""
    done = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", _PING, ip, str(count)],
                          capture_output=True, text=True, timeout=count * 2 + 10, check=True)
    return int(done.stdout)
