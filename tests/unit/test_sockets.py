"""Host sockets read from /proc/net files written here, in the kernel's own format (lines taken from
a real /proc/net/{tcp,tcp6,udp,udp6}; /proc/net/sctp/eps as net/sctp/proc.c prints it)."""

import socket
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from nsnet.errors import Conflict
from nsnet.kernel import sockets
from nsnet.model import PortMapping
from nsnet.portspec import parse
from nsnet.publish import Listener, resolve

LOOPBACK = IPv4Address("127.0.0.1")

TCP_HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
              "                                                     \n")
TCP6_HEADER = ("  sl  local_address                         remote_address                        st tx_queue "
               "rx_queue tr tm->when retrnsmt   uid  timeout inode\n")
UDP_HEADER = ("   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref "
              "pointer drops            \n")
UDP6_HEADER = ("  sl  local_address                         remote_address                        st tx_queue "
               "rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n")
SCTP_HEADER = " ENDPT     SOCK   STY SST HBKT LPORT   UID INODE LADDRS\n"

ANY6 = "0" * 32
TCP_TAIL = " 00000000:00000000 00:00000000 00000000     0        0 528547 1 00000000c58e050a 100 0 0 10 0\n"
UDP_TAIL = " 00000000:00000000 00:00000000 00000000     0        0 528553 2 0000000064552adf 0\n"


def tcp(local: str, remote: str, state: str) -> str:
    return f"   0: {local} {remote} {state}{TCP_TAIL}"


def udp(local: str, remote: str, state: str = "07") -> str:
    return f" 1796: {local} {remote} {state}{UDP_TAIL}"


def sctp(port: int, *addresses: str) -> str:
    return f"       0        0 2   10  9    {port:<5d}     0 465001933 {' '.join(addresses)} \n"


@pytest.fixture
def proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[Listener]]:
    """Writes the given /proc/net files (name: lines after the header; a missing name is a missing
    file) and returns what sockets.listeners() reads from them."""

    def listeners(tcp: list[str] | None = None, tcp6: list[str] | None = None, udp: list[str] | None = None,
                  udp6: list[str] | None = None, sctp: list[str] | None = None) -> list[Listener]:
        contents = {"tcp": (TCP_HEADER, tcp), "tcp6": (TCP6_HEADER, tcp6), "udp": (UDP_HEADER, udp),
                    "udp6": (UDP6_HEADER, udp6), "sctp_eps": (SCTP_HEADER, sctp)}
        for name, (header, lines) in contents.items():
            if lines is None:
                (tmp_path / name).unlink(missing_ok=True)
            else:
                (tmp_path / name).write_text(header + "".join(lines))
        files = tuple((protocol, str(tmp_path / Path(path).name), family) for protocol, path, family in sockets._FILES)
        monkeypatch.setattr(sockets, "_FILES", files)
        real_open = open

        def fake_open(path, *args, **kwargs):
            if path == "/proc/net/sctp/eps":
                path = tmp_path / "sctp_eps"
            assert str(path).startswith(str(tmp_path)), f"read {path} outside the test's files"
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(sockets, "open", fake_open, raising=False)
        return sockets.listeners()

    return listeners

ANY4 = IPv4Address(0)  # 0.0.0.0: every IPv4 address; None: [::], every address of both families


def test_the_four_files_are_the_ones_read():
    assert sockets._FILES == (("tcp", "/proc/net/tcp", 4), ("tcp", "/proc/net/tcp6", 6),
                              ("udp", "/proc/net/udp", 4), ("udp", "/proc/net/udp6", 6))


def test_tcp_listening_sockets_count_and_established_ones_do_not(proc):
    assert proc(tcp=[
        tcp("0100007F:1F9A", "00000000:0000", "0A"),  # 127.0.0.1:8090, LISTEN
        tcp("00000000:07E8", "00000000:0000", "0A"),  # 0.0.0.0:2024, LISTEN
        tcp("0100007F:1F9A", "0100007F:CDE4", "01"),  # 127.0.0.1:8090 <- 127.0.0.1:52708, ESTABLISHED
        tcp("0100007F:CDE4", "0100007F:1F9A", "01"),  # the client end
        tcp("0100007F:1F9B", "0100007F:CDE5", "06"),  # TIME_WAIT
    ]) == [Listener("tcp", LOOPBACK, 8090), Listener("tcp", ANY4, 2024)]


def test_ipv4_addresses_are_decoded_from_little_endian_hex(proc):
    assert proc(tcp=[tcp("0A01A8C0:0050", "00000000:0000", "0A")]) == [  # 192.168.1.10:80
        Listener("tcp", IPv4Address("192.168.1.10"), 80),
    ]


def test_udp_bound_sockets_count_in_any_state(proc):
    assert proc(udp=[
        udp("00000000:14E9", "00000000:0000"),  # 0.0.0.0:5353
        udp("0100007F:14EA", "00000000:0000"),  # 127.0.0.1:5354
        udp("0100007F:D431", "0100007F:0035", "01"),  # a connected client socket still holds its port
    ]) == [Listener("udp", ANY4, 5353), Listener("udp", LOOPBACK, 5354), Listener("udp", LOOPBACK, 54321)]


def test_ipv6_wildcard_and_v4_mapped_sockets_take_ipv4_ports(proc):
    assert proc(tcp6=[
        tcp(f"{ANY6}:1F9B", f"{ANY6}:0000", "0A"),  # [::]:8091
        tcp("0000000000000000FFFF00000100007F:1F9C", f"{ANY6}:0000", "0A"),  # [::ffff:127.0.0.1]:8092
    ], udp6=[udp(f"{ANY6}:14EB", f"{ANY6}:0000")]) == [  # [::]:5355
        Listener("tcp", None, 8091), Listener("tcp", LOOPBACK, 8092), Listener("udp", None, 5355),
    ]


def test_real_ipv6_addresses_are_kept_as_ipv6(proc):
    assert proc(tcp6=[
        tcp("00000000000000000000000001000000:1F9D", f"{ANY6}:0000", "0A"),  # [::1]:8093
        tcp("000000FD000000000000000001000000:1F9E", f"{ANY6}:0000", "0A"),  # [fd00::1]:8094
    ], udp6=[udp("000000FD000000000000000001000000:14EC", f"{ANY6}:0000")]) == [
        Listener("tcp", IPv6Address("::1"), 8093), Listener("tcp", IPv6Address("fd00::1"), 8094),
        Listener("udp", IPv6Address("fd00::1"), 5356),
    ]


def test_tcp6_established_sockets_do_not_count(proc):
    assert proc(tcp6=[tcp(f"{ANY6}:1F9B", "0000000000000000FFFF00000100007F:CDE4", "01")]) == []


def test_files_are_read_in_order_and_missing_ones_skipped(proc):
    assert proc(tcp=[tcp("00000000:0016", "00000000:0000", "0A")], udp6=[udp(f"{ANY6}:0035", f"{ANY6}:0000")]) == [
        Listener("tcp", ANY4, 22), Listener("udp", None, 53),
    ]
    assert proc() == []


def test_sctp_endpoints_count_each_local_ipv4_address(proc):
    assert proc(sctp=[sctp(3868, "0.0.0.0"), sctp(9899, "127.0.0.1", "10.0.0.2")]) == [
        Listener("sctp", ANY4, 3868), Listener("sctp", LOOPBACK, 9899), Listener("sctp", IPv4Address("10.0.0.2"), 9899),
    ]


def test_sctp_real_ipv6_addresses_are_kept_as_ipv6(proc):
    assert proc(sctp=[sctp(2905, "fd00:0000:0000:0000:0000:0000:0000:0001",
                           "0000:0000:0000:0000:0000:0000:0000:0001")]) == [
        Listener("sctp", IPv6Address("fd00::1"), 2905), Listener("sctp", IPv6Address("::1"), 2905)]


def test_sctp_ipv6_wildcard_takes_every_address_like_tcp6(proc):
    """%pI6 prints the wildcard in full; like [::] in tcp6, it also takes IPv4 unless v6only."""
    assert proc(sctp=[sctp(2905, "0000:0000:0000:0000:0000:0000:0000:0000")]) == [Listener("sctp", None, 2905)]


def test_sctp_comes_after_the_other_files(proc):
    assert proc(tcp=[tcp("00000000:0B55", "00000000:0000", "0A")], sctp=[sctp(2901, "0.0.0.0")]) == [
        Listener("tcp", ANY4, 2901), Listener("sctp", ANY4, 2901),
    ]


@pytest.fixture
def held_on_loopback(request) -> Iterator[tuple[str, int]]:
    """A real socket on 127.0.0.1 and a port the kernel picked as free (no root needed)."""
    protocol = request.param
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM)
    try:
        holder.bind(("127.0.0.1", 0))
        if protocol == "tcp":
            holder.listen()
        yield protocol, holder.getsockname()[1]
    finally:
        holder.close()


@pytest.mark.parametrize("held_on_loopback", ["tcp", "udp"], indirect=True)
def test_bind_probe_names_the_real_listeners_address(held_on_loopback):
    protocol, port = held_on_loopback
    probe = sockets.BindProbe()
    assert probe.holder(PortMapping(None, port, 80, protocol)) == Listener(protocol, LOOPBACK, port)
    assert probe.holder(PortMapping(LOOPBACK, port, 80, protocol)) == Listener(protocol, LOOPBACK, port)
    with pytest.raises(Conflict) as caught:
        resolve([parse(f"{port}:80/{protocol}")], [], probe, range(32768, 61000))
    assert str(caught.value) == (f"host port 0.0.0.0:{port}/{protocol} is in use by a host process"
                                 f" (bound to 127.0.0.1:{port})")


def test_bind_probe_falls_back_to_the_candidate_when_proc_shows_no_listener(monkeypatch):
    """A TCP socket bound without listening refuses our bind but is in no LISTEN line."""
    bound = socket.socket()
    try:
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        assert port not in [l.port for l in sockets.listeners() if l.protocol == "tcp"]
        assert sockets.BindProbe().holder(PortMapping(LOOPBACK, port, 80)) == Listener("tcp", LOOPBACK, port)
    finally:
        bound.close()
