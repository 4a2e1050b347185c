"""Real sockets in real namespaces: one-shot TCP servers and clients run with `ip netns exec`.

iproute2 (not nsnet) enters the namespaces here, so the tests check nsnet's work with an
independent tool. Every server and client is bounded by a timeout and exits on its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

TIMEOUT = 3.0

_SERVER = r"""
import json, socket, sys
ip, port, count, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
server = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((ip, port))
server.listen(16)
server.settimeout(timeout)
print("ready", flush=True)
for _ in range(count):
    try:
        conn, peer = server.accept()
    except socket.timeout:
        break
    conn.sendall(b"hello from " + ip.encode())
    conn.close()
    print(json.dumps(peer[0]), flush=True)
"""

_CLIENT = r"""
import socket, sys
try:
    conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    print(conn.recv(100).decode())
except OSError as exc:
    print(f"{type(exc).__name__}: {exc}")
    sys.exit(1)
"""


def in_ns(ns: str | None, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv] if ns else argv


@dataclass
class Server:
    process: subprocess.Popen

    def peers(self) -> list[str]:
        """The source addresses the server saw, once it has exited."""
        out, _ = self.process.communicate(timeout=TIMEOUT * 4)
        return [json.loads(line) for line in out.splitlines()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start(ns: str | None, script: str, *args: object) -> Server:
    """Run a server script in ns and wait for it to say it is listening."""
    process = subprocess.Popen(in_ns(ns, [sys.executable, "-c", script, *map(str, args)]),
                               stdout=subprocess.PIPE, text=True)
    if process.stdout.readline().strip() != "ready":
        process.kill()
        process.wait()
        raise AssertionError(f"server in {ns or 'the host'} {args} did not start")
    return Server(process)


def serve(ns: str | None, ip: str, port: int, count: int = 1, timeout: float = TIMEOUT) -> Server:
    """A TCP server in ns that greets `count` clients and records their source addresses."""
    return start(ns, _SERVER, ip, port, count, timeout)


def connect(ns: str | None, ip: str, port: int, timeout: float = TIMEOUT) -> str | None:
    """Connect from ns; the server's greeting, or None when the connection failed."""
    result = subprocess.run(
        in_ns(ns, [sys.executable, "-c", _CLIENT, ip, str(port), str(timeout)]),
        capture_output=True, text=True, timeout=timeout + 5,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def exchange(client_ns: str | None, server_ns: str | None, ip: str, port: int) -> tuple[str | None, list[str]]:
    """One connection from client_ns to a server in server_ns: (greeting, peers the server saw)."""
    server = serve(server_ns, ip, port)
    try:
        greeting = connect(client_ns, ip, port)
        return greeting, server.peers() if greeting else []
    finally:
        server.stop()


def blocked(client_ns: str | None, server_ns: str | None, ip: str, port: int) -> bool:
    """True when a server is listening but the client cannot reach it."""
    server = serve(server_ns, ip, port, timeout=2.0)
    try:
        return connect(client_ns, ip, port, timeout=1.0) is None
    finally:
        server.stop()


def ip_json(*args: str, ns: str | None = None) -> list[dict]:
    argv = ["ip", "-j"] + (["-n", ns] if ns else []) + list(args)
    return json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout or "[]")


def eventually(predicate: Callable[[], bool], timeout: float = 2.0, interval: float = 0.05) -> bool:
    """Whether predicate comes true within timeout (the kernel and runtimes finish some work apart)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def reboot(table: str, sandboxes: list[str], bridges: list[str], sysctl: str) -> None:
    """What a reboot leaves: the ledger, and none of the kernel objects (the sysctl back to 0)."""
    for name in sandboxes:
        run("ip", "netns", "del", name)
    for name in bridges:
        run("ip", "link", "del", name)
    run("nft", "delete", "table", "inet", table)
    run("nft", "delete", "table", "bridge", table)
    run("sysctl", "-qw", f"{sysctl}=0")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check)


_UDP_SENDER = r"""
import socket, sys
six = ":" in sys.argv[1]
sender = socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_DGRAM)
if len(sys.argv) > 3:
    sender.bind(("::" if six else "0.0.0.0", int(sys.argv[3])))
sender.sendto(b"x", (sys.argv[1], int(sys.argv[2])))
"""


def datagram_arrives(client_ns: str | None, server_ns: str | None, ip: str, port: int,
                     source_port: int | None = None) -> bool:
    """One UDP datagram, no reply needed: proves whether packets get *out*, not just back."""
    receiver = start(server_ns, _UDP_ECHO, ip, port, 1.5)
    sender = [sys.executable, "-c", _UDP_SENDER, ip, str(port), *([str(source_port)] if source_port else [])]
    try:
        subprocess.run(in_ns(client_ns, sender), check=True, timeout=10)
        out, _ = receiver.process.communicate(timeout=10)
        return bool(out.strip())
    finally:
        receiver.stop()


_MULTI_SERVER = r"""
import json, selectors, socket, sys
ip, ports, timeout = sys.argv[1], [int(p) for p in sys.argv[2].split(",")], float(sys.argv[3])
selector = selectors.DefaultSelector()
for port in ports:
    server = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((ip, port))
    server.listen(4)
    server.setblocking(False)
    selector.register(server, selectors.EVENT_READ, port)
print("ready", flush=True)
pending = set(ports)
while pending:
    events = selector.select(timeout)
    if not events:
        break
    for key, _ in events:
        conn, peer = key.fileobj.accept()
        conn.sendall(b"hello from " + ip.encode() + b":" + str(key.data).encode())
        conn.close()
        pending.discard(key.data)
        print(json.dumps([key.data, peer[0]]), flush=True)
"""


def serve_ports(ns: str | None, ip: str, ports: list[int], timeout: float = TIMEOUT) -> Server:
    """One server listening on many ports; peers() then lists [port, source address] pairs."""
    return start(ns, _MULTI_SERVER, ip, ",".join(map(str, ports)), timeout)


_UDP_ECHO = r"""
import json, socket, sys
sock = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], int(sys.argv[2])))
sock.settimeout(float(sys.argv[3]))
print("ready", flush=True)
try:
    data, peer = sock.recvfrom(100)
    sock.sendto(b"echo " + data, peer)
    print(json.dumps(peer[0]), flush=True)
except socket.timeout:
    pass
"""

_UDP_CLIENT = r"""
import socket, sys
sock = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(float(sys.argv[3]))
sock.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
try:
    print(sock.recvfrom(100)[0].decode())
except socket.timeout:
    sys.exit(1)
"""


def udp_exchange(client_ns: str | None, server_ns: str | None, server_ip: str, ip: str, port: int,
                 server_port: int | None = None) -> tuple[str | None, list[str]]:
    """A UDP datagram from client_ns to ip:port and its echo, served in server_ns on
    server_ip:server_port: (the echo, the source addresses the server saw)."""
    server = start(server_ns, _UDP_ECHO, server_ip, server_port or port, TIMEOUT)
    try:
        result = subprocess.run(in_ns(client_ns, [sys.executable, "-c", _UDP_CLIENT, ip, str(port), "2"]),
                                capture_output=True, text=True, timeout=10)
        echo = result.stdout.strip() if result.returncode == 0 else None
        return echo, server.peers() if echo else []
    finally:
        server.stop()
