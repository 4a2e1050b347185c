"""Interception, with real sockets: a proxy running in the sandbox as the excluded user gets the
sandbox's outbound and inbound TCP, finds where each connection was going with SO_ORIGINAL_DST,
and relays it there; exclusions flow directly; `intercept rm` restores direct traffic at once."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from nsnet import Engine
from nsnet.intercept import spec

from .conftest import cli
from .net import Server, connect, exchange, serve

PROXY_UID = 1337
# A transparent proxy: for each connection, the original destination (SO_ORIGINAL_DST, both
# families), a connection there (as PROXY_UID, which the rules leave alone), and the answer back
# prefixed with what it saw. It prints each original destination.
_PROXY = r"""
import json, select, socket, struct, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
SO_ORIGINAL_DST = 80
listeners = []
for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    s = socket.socket(family)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((address, port))
    s.listen(8)
    listeners.append(s)
print("ready", flush=True)
handled = 0
while handled < count:
    ready, _, _ = select.select(listeners, [], [], 10)
    if not ready:
        break
    for s in ready:
        conn, _ = s.accept()
        if s.family == socket.AF_INET:
            raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            ip = socket.inet_ntop(socket.AF_INET, raw[4:8])
        else:
            raw = conn.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
            ip = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        (original_port,) = struct.unpack("!H", raw[2:4])
        try:
            upstream = socket.create_connection((ip, original_port), timeout=3)
            answer = upstream.recv(100)
            upstream.close()
        except OSError as exc:
            answer = type(exc).__name__.encode()
        conn.sendall(f"proxy {ip} {original_port} | ".encode() + answer)
        conn.close()
        print(json.dumps([ip, original_port]), flush=True)
        handled += 1
"""


def proxy(sandbox: str, port: int, count: int) -> Server:
    """The proxy in the sandbox, as PROXY_UID (setpriv), through iproute2's netns exec."""
    process = subprocess.Popen(["ip", "netns", "exec", sandbox, "setpriv", f"--reuid={PROXY_UID}",
                                f"--regid={PROXY_UID}", "--clear-groups", "/usr/bin/python3", "-c", _PROXY, str(port),
                                str(count)], stdout=subprocess.PIPE, text=True)
    if process.stdout.readline().strip() != "ready":
        process.kill()
        process.wait()
        raise AssertionError(f"the proxy in {sandbox} did not start")
    return Server(process)


@pytest.fixture
def app(engine: Engine) -> Iterator[Engine]:
    engine.create_network("app", subnet=["10.31.0.0/24", "fd00:31::/64"])
    engine.create_sandbox("web", networks=["app"])  # 10.31.0.2
    engine.create_sandbox("client", networks=["app"])  # 10.31.0.3
    engine.create_sandbox("other", networks=["app"])  # 10.31.0.4
    yield engine


def test_outbound_tcp_goes_through_the_proxy_which_finds_the_original_destination(app: Engine) -> None:
    app.intercept("client", spec(outbound_port=15001, exclude_uids=[PROXY_UID], exclude_ports=[81],
                                 exclude_cidrs=["10.31.0.4/32"]))
    web = serve("web", "0.0.0.0", 80, count=2)
    relay = proxy("client", 15001, 2)  # IPv4 and IPv6
    try:
        assert connect("client", "10.31.0.2", 80) == "proxy 10.31.0.2 80 | hello from 0.0.0.0"
        assert exchange("client", "web", "fd00:31::2", 8443)[0] == "proxy fd00:31::2 8443 | hello from fd00:31::2"
        # Excluded: a port, an address; and the sandbox's own loopback.
        for sandbox, address, port in (("web", "10.31.0.2", 81), ("other", "10.31.0.4", 80),
                                       ("client", "127.0.0.1", 82)):
            assert exchange("client", sandbox, address, port)[0] == f"hello from {address}", (address, port)
        assert relay.peers() == [["10.31.0.2", 80], ["fd00:31::2", 8443]]
        app.stop_intercepting("client")  # at once: the next connection is direct
        assert connect("client", "10.31.0.2", 80) == "hello from 0.0.0.0"
        assert web.peers() == ["10.31.0.3", "10.31.0.3"]  # through the proxy, then directly: both from client
    finally:
        relay.stop()
        web.stop()


def test_inbound_tcp_goes_to_the_inbound_port_and_excluded_ports_flow_directly(app: Engine) -> None:
    app.intercept("client", spec(inbound_port=15006, exclude_inbound_ports=[22]))
    service = serve("client", "0.0.0.0", 8080)
    relay = proxy("client", 15006, 1)
    try:
        assert connect("other", "10.31.0.3", 8080) == "proxy 10.31.0.3 8080 | hello from 0.0.0.0"
        assert exchange("other", "client", "10.31.0.3", 22)[0] == "hello from 10.31.0.3"
    finally:
        relay.stop()
        service.stop()


def test_dns_capture_sends_questions_to_the_dns_port(app: Engine) -> None:
    responder = r"""
import socket, sys
import dns.message, dns.rrset
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 15053))
print("ready", flush=True)
s.settimeout(10)
data, peer = s.recvfrom(4096)
query = dns.message.from_wire(data)
reply = dns.message.make_response(query)
reply.answer.append(dns.rrset.from_text(query.question[0].name, 0, "IN", "A", "192.0.2.99"))
s.sendto(reply.to_wire(), peer)
"""
    from .net import start

    app.intercept("client", spec(dns_port=15053))
    captured = start("client", responder)
    try:
        assert cli("exec", "client", "--", "getent", "ahostsv4", "web").stdout.split()[:1] == ["192.0.2.99"]
    finally:
        captured.stop()
    app.stop_intercepting("client")
    assert cli("exec", "client", "--", "getent", "ahostsv4", "web").stdout.split()[:1] == ["10.31.0.2"]


def test_check_finds_a_damaged_table_and_gc_makes_it_again(app: Engine) -> None:
    app.intercept("client", spec(outbound_port=15001, exclude_uids=[PROXY_UID]))
    subprocess.run(["ip", "netns", "exec", "client", "nft", "delete", "table", "inet", app.owner.table], check=True)
    drift = json.loads(cli("check", "--format", "json").stdout)
    assert [(d["kind"], d["subject"]) for d in drift] == [("wrong", "interception of client")]
    assert "made the interception of client again" in cli("gc").stdout
    assert cli("check").stdout == ""
    web = serve("web", "0.0.0.0", 80)
    # No proxy listening: the connection is refused (fails closed), it never goes past it.
    assert connect("client", "10.31.0.2", 80, timeout=1.0) is None
    relay = proxy("client", 15001, 1)
    try:
        assert connect("client", "10.31.0.2", 80) == "proxy 10.31.0.2 80 | hello from 0.0.0.0"
    finally:
        relay.stop()
        web.stop()


def test_bad_input_is_one_line_and_changes_nothing(app: Engine) -> None:
    for args, message in (
            (["client", "--outbound-port", "99999", "--exclude-uid", "1"],
             "nsnet: error: invalid --outbound-port '99999': must be a port from 1 to 65535"),
            (["client", "--outbound-port", "15001"],
             "nsnet: error: invalid --exclude-uid: is needed with --outbound-port"),
            (["ghost", "--inbound-port", "15006"], "nsnet: error: no such sandbox: 'ghost'"),
            (["client", "--exclude-cidr", "300.1.1.1", "--inbound-port", "1"],
             "nsnet: error: invalid --exclude-cidr '300.1.1.1': is not an address or CIDR block")):
        done = cli("intercept", "add", *args)
        assert done.returncode == 1 and done.stderr.startswith(message) and done.stderr.count("\n") == 1, done.stderr
    assert cli("intercept", "ls", "--format", "json").stdout.strip() == "[]"
    assert subprocess.run(["ip", "netns", "exec", "client", "nft", "list", "ruleset"], capture_output=True,
                          text=True).stdout == ""
    assert cli("intercept", "add", "client", "--inbound-port", "15006").returncode == 0
    assert cli("intercept", "add", "client", "--inbound-port", "15007").returncode == 0  # replaces it
    listed = json.loads(cli("intercept", "ls", "--format", "json").stdout)
    assert [(i["Sandbox"], i["InboundPort"]) for i in listed] == [("client", 15007)]
    assert cli("intercept", "rm", "client").returncode == 0
    assert cli("intercept", "ls", "--format", "json").stdout.strip() == "[]"
