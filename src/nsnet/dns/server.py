"""nsnet's resolver: one process per ledger, in the host's network namespace, answering on the
gateway addresses of every DNS network (UDP and TCP 53).

It keeps no state of its own: the ledger is the truth. It reads it (read-only) into a Table on
start, on `reload` from the control socket (the engine's, after a change, which waits for the
answer so that a command returns only once its names resolve), and when the ledger's
data_version moves (a safety net, polled every second). It forwards what is not nsnet's to the
network's servers or the host's (read from the host's resolv.conf, from this namespace, so a local
stub such as 127.0.0.53 works), within a time budget, never for a sandbox whose networks are all
internal. It exits when the ledger has no DNS network left. kill -9 loses nothing: the next nsnet
command starts it again (nsnet.dns.supervise).

Run by supervise.start: `python -m nsnet.dns.server STATE_DIR READY_FD`.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import random
import socket
import sqlite3
import struct
import sys
from ipaddress import ip_address

from . import LOCK, SOCKET, codec, listen, resolvconf
from .codec import A, AAAA, PTR, FormatError
from .ledger import LedgerReader
from .table import ZONE, Scope, Table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .table import Address, Listener

HOST_RESOLV_CONF = "/etc/resolv.conf"
FORWARD_BUDGET_S = 4.0  # all upstream tries of one question: inside glibc's 5 s per attempt
MAX_FORWARDS = 256  # questions forwarded at once; more are REFUSED
MAX_TCP_CLIENTS = 64
TCP_IDLE_S = 3.0
POLL_S = 1.0
SWEEP_TICKS = 60  # polls between full garbage collections


class Resolver:
    def __init__(self, state_dir: str, resolv_conf: str = HOST_RESOLV_CONF) -> None:
        self.state_dir = state_dir
        self.resolv_conf = resolv_conf
        self.db = sqlite3.connect(f"file:{os.path.join(state_dir, 'state.db')}?mode=ro", uri=True,
                                  isolation_level=None, check_same_thread=False)
        self.reader = LedgerReader(self.db)
        self.namespace = os.readlink("/proc/self/ns/net")  # told to every command, which checks it is its own
        self.table = Table([], [])
        self.generation = 0
        self.udp: dict[Listener, socket.socket] = {}
        self.tcp: dict[Listener, asyncio.base_events.Server] = {}
        self.forwarding = 0
        self.tcp_clients = 0
        self._host_servers: tuple[tuple[int, int, float] | None, tuple[str, ...]] = (None, ())
        self._data_version = -1
        self.done = asyncio.Event()
        # One reload at a time: a second one, arriving while the first awaited a new listener,
        # used to read the old table (the data_version was already the new one's) and stop the
        # listener the first had just opened (tests/integration/test_races.py caught it).
        self._reloading = asyncio.Lock()

    # The ledger

    def _read(self) -> Table:
        """The ledger's table: the one served while the ledger has not changed since. A table is
        thousands of objects without a cycle: the collector, walking them on the way, was a third
        of a reload; they are made with it off, and frozen out of its sight."""
        if self.db.execute("PRAGMA data_version").fetchone()[0] == self._data_version:
            return self.table
        gc.disable()
        try:
            table, self._data_version = self.reader.read()
        finally:
            gc.enable()
        gc.freeze()
        return table

    async def reload(self) -> int:
        """Serve the ledger as it is now; the new generation. Listeners follow the gateways."""
        async with self._reloading:
            return await self._reload()

    async def _reload(self) -> int:
        table = self._read()
        wanted = set(table.listeners())
        for listener in set(self.udp) - wanted:
            self._stop_listening(listener)
        for listener in sorted(wanted - set(self.udp), key=_order):
            await self._listen(listener)
        self.table = table
        self.generation += 1
        if not wanted:
            self.done.set()
        return self.generation

    # Listening

    async def _listen(self, listener: Listener) -> None:
        address, port = str(listener[0]), listener[1]
        try:
            udp = listen.bind(address, port, socket.SOCK_DGRAM)
        except OSError as exc:
            print(f"nsnet-dns: cannot listen on {address} port {port}: {exc}", file=sys.stderr, flush=True)
            return
        try:
            tcp = listen.bind(address, port, socket.SOCK_STREAM)
        except OSError as exc:
            udp.close()
            print(f"nsnet-dns: cannot listen on {address} TCP port {port}: {exc}", file=sys.stderr, flush=True)
            return
        tcp.listen(64)
        self.udp[listener] = udp
        asyncio.get_running_loop().add_reader(udp.fileno(), self._datagrams, udp)
        self.tcp[listener] = await asyncio.start_server(self._stream, sock=tcp, limit=codec.MAX_MESSAGE + 2)

    def _stop_listening(self, listener: Listener) -> None:
        udp = self.udp.pop(listener)
        asyncio.get_running_loop().remove_reader(udp.fileno())
        udp.close()
        server = self.tcp.pop(listener, None)
        if server is not None:
            server.close()

    # Answering

    def _datagrams(self, sock: socket.socket) -> None:
        """Every datagram waiting, answered in turn (one wake-up, many questions)."""
        while True:
            try:
                packet, peer = sock.recvfrom(codec.MAX_MESSAGE)
            except OSError:  # nothing more waiting (EAGAIN), or the socket went with a reload
                return
            reply = self.respond(packet, peer[0], udp=True)
            if isinstance(reply, bytes):
                _send(sock, reply, peer)
            elif reply is not None:
                asyncio.get_running_loop().create_task(self._send_later(sock, reply, peer))

    async def _send_later(self, sock: socket.socket, pending: asyncio.Future, peer: tuple) -> None:
        reply = await pending
        if reply is not None:
            _send(sock, reply, peer)

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.tcp_clients >= MAX_TCP_CLIENTS:
            writer.close()
            return
        self.tcp_clients += 1
        source = writer.get_extra_info("peername")[0]
        try:
            while True:
                size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_S))[0]
                if size == 0:
                    return
                packet = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE_S)
                reply = self.respond(packet, source, udp=False)
                if not isinstance(reply, bytes) and reply is not None:
                    reply = await reply
                if reply is None:
                    return
                writer.write(struct.pack("!H", len(reply)) + reply)
                await asyncio.wait_for(writer.drain(), TCP_IDLE_S)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            return
        finally:
            self.tcp_clients -= 1
            writer.close()

    def respond(self, packet: bytes, source: str | None, *, udp: bool) -> bytes | asyncio.Task | None:
        """The answer to a question from `source` (its address as text), or a task that will have
        it (a forwarded question), or None to stay silent (a message without even a header)."""
        try:
            query = codec.parse_query(packet)
        except FormatError:
            ident = codec.query_id(packet)
            return codec.format_error(ident) if ident is not None else None
        table = self.table
        scope = table.scope(source)
        forwarding = scope.forwards
        if query.flags & codec.OPCODE_MASK:
            return codec.error_answer(query, codec.NOTIMP, recursion_available=forwarding)
        if query.qclass != codec.CLASS_IN:
            return codec.error_answer(query, codec.REFUSED, recursion_available=forwarding)
        limit = query.udp_limit() if udp else codec.MAX_MESSAGE
        if query.qtype == PTR:
            address = codec.reverse_address(query.name)
            if address is not None:
                target = table.pointer(address, scope)
                if target is not None:
                    return codec.pointer_answer(query, target, recursion_available=forwarding)
                if table.owns_reverse(address, scope):
                    return codec.negative_answer(query, codec.NXDOMAIN, query.name, recursion_available=forwarding)
        else:
            found = table.lookup(query.name, scope)
            if found.known:
                version = {A: 4, AAAA: 6}.get(query.qtype)
                addresses = [a for a in found.addresses if a.version == version]
                if not addresses:
                    return codec.negative_answer(query, codec.NOERROR, ZONE, recursion_available=forwarding)
                if len(addresses) > 1:
                    random.shuffle(addresses)
                return codec.addresses_answer(query, addresses, recursion_available=forwarding, limit=limit)
            if found.in_zone:
                return codec.negative_answer(query, codec.NXDOMAIN, ZONE, recursion_available=forwarding)
        servers = self._upstreams(scope)
        if not servers:
            # An internal-only sandbox's question goes nowhere (and says so at once).
            rcode = codec.NXDOMAIN if not forwarding else codec.SERVFAIL
            return codec.error_answer(query, rcode, recursion_available=forwarding)
        if self.forwarding >= MAX_FORWARDS:
            return codec.error_answer(query, codec.REFUSED, recursion_available=True)
        return asyncio.get_running_loop().create_task(self._forward(query, packet, servers, udp))

    # Forwarding

    def _upstreams(self, scope: Scope) -> tuple[str, ...]:
        servers = scope.servers or self._host_resolvers()
        if not scope.forwards:
            # Only to a server inside one of its own (internal) networks, never past them.
            servers = tuple(s for s in servers if any(_address(s) in net for net in scope.subnets))
        listening = {str(address) for address, _ in self.udp}
        return tuple(s for s in servers if s.split("%", 1)[0] not in listening)

    def _host_resolvers(self) -> tuple[str, ...]:
        """The host's nameservers, read again whenever its resolv.conf changes (even by a link
        swap: the key is the file's identity and mtime)."""
        try:
            st = os.stat(self.resolv_conf)
            key: tuple[int, int, float] | None = (st.st_dev, st.st_ino, st.st_mtime)
        except OSError:
            key = None
        if key != self._host_servers[0]:
            try:
                with open(self.resolv_conf, encoding="utf-8", errors="replace") as f:
                    servers = resolvconf.parse(f.read(65536)).servers
            except OSError:
                servers = ()
            self._host_servers = (key, servers)
        return self._host_servers[1]

    async def _forward(self, query: codec.Query, packet: bytes, servers: tuple[str, ...], udp: bool) -> bytes:
        self.forwarding += 1
        try:
            each = FORWARD_BUDGET_S / len(servers)
            for server in servers:
                try:
                    reply = await asyncio.wait_for(self._ask(server, packet, query.question, udp), each)
                except (asyncio.TimeoutError, OSError):
                    continue
                if codec.response_rcode(reply) in (codec.SERVFAIL, codec.REFUSED):
                    continue
                return codec.with_id(reply, query.id)
            return codec.error_answer(query, codec.SERVFAIL, recursion_available=True)
        finally:
            self.forwarding -= 1

    async def _ask(self, server: str, packet: bytes, question: bytes, udp: bool) -> bytes:
        loop = asyncio.get_running_loop()
        ident = random.getrandbits(16)
        message = codec.with_id(packet, ident)
        info = socket.getaddrinfo(server, listen.PORT, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST)[0]
        if udp:
            with socket.socket(info[0], socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC) as sock:
                await loop.sock_connect(sock, info[4])
                await loop.sock_sendall(sock, message)
                while True:
                    reply = await loop.sock_recv(sock, codec.MAX_MESSAGE)
                    if codec.response_matches(reply, ident, question):
                        break
            if not codec.truncated(reply):
                return reply
        reader, writer = await asyncio.open_connection(info[4][0], listen.PORT)
        try:
            writer.write(struct.pack("!H", len(message)) + message)
            await writer.drain()
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            reply = await reader.readexactly(size)
        finally:
            writer.close()
        if not codec.response_matches(reply, ident, question):
            raise OSError(errno.EPROTO, "an upstream answer to another question")
        return reply

    # Control

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await asyncio.wait_for(reader.readline(), 5.0)).decode("ascii", "replace").split()
            if line[:1] == ["reload"]:
                generation = await self.reload()
                writer.write(f"ok {generation} {os.getpid()} {self.namespace}\n".encode())
            elif line[:1] == ["status"]:
                listening = " ".join(listen.text(a, port) for a, port in sorted(self.udp, key=_order))
                writer.write(f"ok {self.generation} {os.getpid()} {self.namespace} {listening}\n".encode())
            else:
                writer.write(b"error unknown request\n")
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, OSError, sqlite3.Error) as exc:
            print(f"nsnet-dns: control request failed: {exc}", file=sys.stderr, flush=True)
        finally:
            writer.close()

    async def _poll(self) -> None:
        ticks = 0
        while True:  # cancelled when the resolver stops
            await asyncio.sleep(POLL_S)
            ticks += 1
            if ticks % SWEEP_TICKS == 0:
                # What reloads froze is collected now and then, off any command's path, in case
                # a cycle (an exception's traceback, say) was frozen with it.
                gc.unfreeze()
                gc.collect()
                gc.freeze()
            try:
                if self.db.execute("PRAGMA data_version").fetchone()[0] != self._data_version:
                    await self.reload()
            except sqlite3.Error as exc:
                print(f"nsnet-dns: reading the ledger failed, serving what was read before: {exc}",
                      file=sys.stderr, flush=True)

    async def serve(self, ready: int | None) -> None:
        control_path = os.path.join(self.state_dir, SOCKET)
        try:
            os.unlink(control_path)  # a dead resolver's: the lock says none is alive
        except FileNotFoundError:
            pass
        old = os.umask(0o177)
        try:
            control = await asyncio.start_unix_server(self._control, path=control_path)
        finally:
            os.umask(old)
        await self.reload()
        if ready is not None:
            os.write(ready, f"ready {os.getpid()}\n".encode())
            os.close(ready)
        poll = asyncio.get_running_loop().create_task(self._poll())
        while True:
            await self.done.wait()
            self.done.clear()
            await self.reload()  # the last word: a DNS network made meanwhile keeps it serving
            if not self.udp:
                break
        poll.cancel()
        control.close()
        for listener in list(self.udp):
            self._stop_listening(listener)
        try:
            os.unlink(control_path)
        except FileNotFoundError:
            pass


def _order(listener: Listener) -> tuple:
    return listener[0].version, listener[0], listener[1]


def _address(text: str) -> Address:
    return ip_address(text.split("%", 1)[0])


def _send(sock: socket.socket, reply: bytes, peer: tuple) -> None:
    try:
        sock.sendto(reply, peer)
    except OSError:
        pass  # a full buffer or a vanished peer: the client asks again


def main(argv: list[str]) -> int:
    from .supervise import run_resident

    state_dir, ready = argv[0], int(argv[1]) if len(argv) > 1 else None
    return run_resident(state_dir, ready, LOCK, "nsnet-dns",
                        lambda fd: asyncio.run(Resolver(state_dir).serve(fd)))


if __name__ == "__main__":
    if len(sys.argv) > 2 and os.fork():  # the starter waits for this parent, not for the resolver
        os._exit(0)
    sys.exit(main(sys.argv[1:]))
