"""Names: nsnet's resolver answers sandboxes through glibc (`getent` inside them), forwards what is
not nsnet's to an upstream stand-in in the lab's `wan` namespace (never past an internal network),
follows every change before the command returns, and survives kill -9 and bad input."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from nsnet import Engine
from nsnet.dns import supervise
from nsnet.kernel.netns import MS_BIND, mount, umount

from .conftest import WAN_HOST, WAN_PEER, cli
from .net import Server, eventually, start

# A stand-in for the outside's DNS: answers example.org (and www.example.org) with 192.0.2.80,
# NXDOMAIN for the rest, and prints every question's name and source.
_UPSTREAM = r"""
import json, socket, sys
import dns.message, dns.rrset, dns.rcode
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], 53))
sock.settimeout(30)
print("ready", flush=True)
while True:
    try:
        data, peer = sock.recvfrom(4096)
    except socket.timeout:
        break
    query = dns.message.from_wire(data)
    name = query.question[0].name.to_text().lower()
    print(json.dumps([name, peer[0]]), flush=True)
    reply = dns.message.make_response(query)
    if name in ("example.org.", "www.example.org."):
        reply.answer.append(dns.rrset.from_text(name, 300, "IN", "A", "192.0.2.80"))
    else:
        reply.set_rcode(dns.rcode.NXDOMAIN)
    sock.sendto(reply.to_wire(), peer)
"""


def getent(sandbox: str, *args: str) -> list[list[str]]:
    """`getent ARGS` inside the sandbox (glibc, its resolv.conf): the lines, split; [] on failure."""
    done = cli("exec", sandbox, "--", "getent", *args)
    return [line.split() for line in done.stdout.splitlines()] if done.returncode == 0 else []


def addresses(sandbox: str, name: str) -> list[str]:
    return sorted({line[0] for line in getent(sandbox, "ahosts", name)})


def resolver_pid(state_dir: str) -> int | None:
    words = (supervise.ask(state_dir, "status") or "").split()
    return int(words[2]) if words[:1] == ["ok"] else None


def query(server: str, name: str, rdtype: str = "A", *, tcp: bool = False, edns: int = -1) -> dns.message.Message:
    message = dns.message.make_query(name, rdtype, use_edns=edns)
    return (dns.query.tcp if tcp else dns.query.udp)(message, server, timeout=3)


@pytest.fixture
def upstream(wan: str) -> Iterator[Server]:
    """The stand-in, named by the lab's resolv.conf (bound over /etc/resolv.conf in the lab's own
    mount namespace, never the machine's)."""
    server = start(wan, _UPSTREAM, WAN_PEER)
    with tempfile.NamedTemporaryFile("w", suffix=".resolv.conf", delete=False) as conf:
        conf.write(f"nameserver {WAN_PEER}\nsearch corp.example\noptions edns0\n")
    mount(conf.name, "/etc/resolv.conf", None, MS_BIND)
    try:
        yield server
    finally:
        umount("/etc/resolv.conf")
        os.unlink(conf.name)
        server.stop()


def questions(server: Server) -> list[list[str]]:
    server.stop()
    return [json.loads(line) for line in server.process.stdout.read().splitlines()]


def test_sandboxes_resolve_names_aliases_and_network_names_in_both_families(engine: Engine) -> None:
    engine.create_network("app", subnet=["10.31.0.0/24", "fd00:31::/64"])
    engine.create_sandbox("web", networks=["app"], aliases=["www", "API"])
    engine.create_sandbox("client", networks=["app"])
    both = ["10.31.0.2", "fd00:31::2"]
    for name in ("web", "WEB", "www", "api", "web.app", "api.app", "web.nsnet", "web.app.nsnet"):
        assert addresses("client", name) == both, name
    assert getent("client", "ahostsv4", "web")[0][0] == "10.31.0.2"
    assert getent("client", "hosts", "10.31.0.2") == [["10.31.0.2", "web.app.nsnet"]]  # PTR
    assert getent("client", "hosts", "nobody") == [] and getent("client", "hosts", "nobody.app") == []
    with open("/etc/netns/client/resolv.conf") as f:
        assert [line for line in f.read().splitlines() if line.startswith("nameserver")] == [
            "nameserver 10.31.0.1", "nameserver fd00:31::1"]
    # Straight to the resolver: authoritative, TTL 0, NODATA for another type of a known name,
    # NXDOMAIN with the zone's SOA for an unknown one in it.
    answer = query("10.31.0.1", "web.app.nsnet", "A")
    assert answer.flags & dns.flags.AA and answer.answer[0].ttl == 0
    assert [r.address for r in answer.answer[0]] == ["10.31.0.2"]
    nodata = query("fd00:31::1", "web", "MX")
    assert (nodata.rcode(), nodata.answer, nodata.authority[0].name.to_text()) == (dns.rcode.NOERROR, [], "nsnet.")
    assert query("10.31.0.1", "nobody.nsnet").rcode() == dns.rcode.NXDOMAIN


def test_a_sandbox_sees_only_names_on_networks_it_shares(engine: Engine) -> None:
    engine.create_network("front", subnet="10.31.0.0/24")
    engine.create_network("back", subnet="10.32.0.0/24", internal=True)
    engine.create_sandbox("web", networks=["front", "back"])
    engine.create_sandbox("client", networks=["front"])
    engine.create_sandbox("db", networks=["back"], aliases=["store"])
    assert addresses("client", "web") == ["10.31.0.2"]
    assert addresses("client", "db") == [] and addresses("client", "store.back") == []
    # db is on an internal network: its questions still reach the resolver on its gateway.
    assert addresses("db", "web") == ["10.32.0.2"]
    assert addresses("web", "store") == ["10.32.0.3"] and addresses("web", "db.back") == ["10.32.0.3"]
    # The host sees every network.
    assert [r.address for r in query("10.31.0.1", "store").answer[0]] == ["10.32.0.3"]


def test_names_follow_every_change_before_the_command_returns(engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("side", subnet="10.33.0.0/24")
    engine.create_sandbox("client", networks=["app"])
    for i in range(10):
        assert cli("create", f"sb{i}", "--network", "app").returncode == 0
        assert addresses("client", f"sb{i}") == [f"10.31.0.{i + 3}"], i
        assert cli("rm", f"sb{i}").returncode == 0
        assert addresses("client", f"sb{i}") == [], i
    engine.create_sandbox("late", networks=["side"])
    assert addresses("client", "late") == []
    assert cli("connect", "app", "late", "--alias", "legacy").returncode == 0
    assert addresses("client", "late") == addresses("client", "legacy") == ["10.31.0.13"]
    assert cli("disconnect", "app", "late").returncode == 0
    assert addresses("client", "legacy") == []


def test_forwarding_from_the_host_and_never_past_an_internal_network(engine: Engine, upstream: Server) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("vault", subnet="10.34.0.0/24", internal=True)
    engine.create_sandbox("client", networks=["app"])
    engine.create_sandbox("safe", networks=["vault"])
    engine.create_sandbox("peer", networks=["vault"])
    with open("/etc/netns/client/resolv.conf") as f:
        assert "search nsnet corp.example\noptions edns0\n" in f.read()
    assert addresses("client", "example.org") == ["192.0.2.80"]
    assert addresses("safe", "peer") == ["10.34.0.3"]  # its own names resolve ...
    assert addresses("safe", "www.example.org") == []  # ... the outside's never leave
    asked = questions(upstream)
    # Every forwarded question left from the host's own address; none for the internal sandbox.
    assert {source for _, source in asked} == {WAN_HOST}
    assert "example.org." in [name for name, _ in asked]
    assert not [name for name, _ in asked if name.startswith("www.example.org")]


def test_an_upstream_that_does_not_answer_gives_servfail_in_bounded_time(engine: Engine, wan: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".resolv.conf", delete=False) as conf:
        conf.write(f"nameserver {WAN_PEER}\n")  # nothing listens there
    mount(conf.name, "/etc/resolv.conf", None, MS_BIND)
    try:
        engine.create_network("app", subnet="10.31.0.0/24")
        started = time.monotonic()
        answer = query("10.31.0.1", "example.org")
        assert answer.rcode() == dns.rcode.SERVFAIL and time.monotonic() - started < 8
    finally:
        umount("/etc/resolv.conf")
        os.unlink(conf.name)


def test_kill_9_loses_nothing_and_check_reports_the_resolver_down(engine: Engine, state_dir: str) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    engine.create_sandbox("client", networks=["app"])
    pid = resolver_pid(state_dir)
    assert pid is not None
    os.kill(pid, 9)
    assert eventually(lambda: resolver_pid(state_dir) is None)
    drift = json.loads(cli("check", "--format", "json").stdout)
    assert [(d["kind"], d["subject"]) for d in drift] == [("missing", "resolver")]
    assert addresses("client", "web") == []
    assert cli("create", "more", "--network", "app").returncode == 0  # the next command starts it again
    assert resolver_pid(state_dir) not in (None, pid)
    assert addresses("client", "web") == ["10.31.0.2"] and addresses("client", "more") == ["10.31.0.4"]
    os.kill(resolver_pid(state_dir), 9)
    assert eventually(lambda: resolver_pid(state_dir) is None)
    assert "started the resolver" in cli("gc").stdout
    assert cli("check").stdout == "" and addresses("client", "web") == ["10.31.0.2"]


def test_the_resolver_exits_with_the_last_dns_network(engine: Engine, state_dir: str) -> None:
    engine.create_network("quiet", subnet="10.35.0.0/24", dns=False)
    engine.create_sandbox("alone", networks=["quiet"])
    assert resolver_pid(state_dir) is None and not os.path.exists("/etc/netns/alone/resolv.conf")
    engine.create_network("app", subnet="10.31.0.0/24")
    assert resolver_pid(state_dir) is not None
    engine.remove_network("app")
    assert eventually(lambda: resolver_pid(state_dir) is None)


def test_bad_input_never_stops_it(engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for junk in (b"", b"\x00", b"\x12\x34" + b"\xff" * 10, b"\x00\x01\x01\x00\x00\x01" + b"\x00" * 6 + b"\xc0\x0c",
                 os.urandom(512), b"\x00\x01" + b"\x00" * 4000):
        udp.sendto(junk, ("10.31.0.1", 53))
    udp.settimeout(2)
    udp.sendto(b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6 + b"\xc0\x0c\x00\x01\x00\x01", ("10.31.0.1", 53))
    reply = udp.recv(4096)
    while reply[:2] != b"\x12\x34":  # answers to earlier junk with a header come first
        reply = udp.recv(4096)
    assert reply[3] & 0x0F == dns.rcode.FORMERR
    udp.close()
    # TCP: a zero length, a length with nothing after it, a slow client holding a connection open.
    for junk in (b"\x00\x00", b"\xff\xff", b"\x00\x10abc"):
        with socket.create_connection(("10.31.0.1", 53), timeout=5) as conn:
            conn.sendall(junk)
    slow = [socket.create_connection(("10.31.0.1", 53), timeout=5) for _ in range(70)]
    try:
        assert [r.address for r in query("10.31.0.1", "web").answer[0]] == ["10.31.0.2"]
    finally:
        for conn in slow:
            conn.close()
    assert [r.address for r in query("10.31.0.1", "web", tcp=True).answer[0]] == ["10.31.0.2"]


def test_an_answer_too_large_for_udp_is_truncated_and_whole_over_tcp(engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    for i in range(40):
        engine.create_sandbox(f"pool{i}", networks=["app"], aliases=["pool"])
    small = query("10.31.0.1", "pool")
    assert small.flags & dns.flags.TC and small.answer == []
    whole = query("10.31.0.1", "pool", tcp=True)
    assert sorted(r.address for r in whole.answer[0]) == sorted(f"10.31.0.{i + 2}" for i in range(40))
    assert len(query("10.31.0.1", "pool", edns=0).answer[0]) == 40  # 1232 bytes of EDNS hold them


def test_the_host_resolves_from_the_ledger_and_bad_names_are_refused(engine: Engine, state_dir: str) -> None:
    engine.create_network("app", subnet=["10.31.0.0/24", "fd00:31::/64"])
    engine.create_network("back", subnet="10.32.0.0/24")
    engine.create_sandbox("web", networks=["app", "back"], aliases=["www"])
    assert cli("resolve", "web").stdout.split() == ["10.31.0.2", "10.32.0.2", "fd00:31::2"]
    assert cli("resolve", "WWW", "--network", "app").stdout.split() == ["10.31.0.2", "fd00:31::2"]
    missing = cli("resolve", "www", "--network", "back")
    assert (missing.returncode, missing.stderr) == (1, "nsnet: error: no such name on network 'back': 'www'\n")
    refused = {
        ("create", "x", "--network", "app", "--alias", "bad_name"):
            "nsnet: error: invalid alias 'bad_name': must be a DNS label: letters, digits and inner '-', 1 to 63 of them\n",
        ("network", "create", "n", "--dns", "nope"): "nsnet: error: invalid dns 'nope': is not an IP address\n",
        ("network", "create", "n", "--no-dns", "--dns", "10.0.0.53"):
            "nsnet: error: invalid dns '10.0.0.53': names an upstream server, but the network has no DNS (--no-dns)\n",
        ("connect", "back", "web", "--alias", "x" * 64):
            f"nsnet: error: invalid alias '{'x' * 64}': must be a DNS label: letters, digits and inner '-', 1 to 63"
            " of them\n",
    }
    for argv, message in refused.items():
        done = cli(*argv)
        assert (done.returncode, done.stderr) == (1, message), argv
    assert [s.name for s in engine.sandboxes()] == ["web"] and [n.name for n in engine.networks()] == ["app", "back"]
    assert [e.aliases for e in engine.sandbox("web").endpoints] == [("www",), ()]


def test_an_internal_network_forwards_to_its_own_dns_server_only(engine: Engine, upstream: Server) -> None:
    """--dns inside the internal network's own subnet is on-net (moby/moby#47822); the host's
    servers stay out of reach."""
    engine.create_network("vault", subnet="10.34.0.0/24", internal=True, dns_servers=["10.34.0.53"])
    engine.create_sandbox("ns1", networks=["vault"], ip="10.34.0.53")
    engine.create_sandbox("safe", networks=["vault"])
    inside = start_in_sandbox("ns1", "10.34.0.53")
    try:
        assert addresses("safe", "example.org") == ["192.0.2.80"]  # answered by ns1, on the network
        assert json.loads(inside.process.stdout.readline()) == ["example.org.", "10.34.0.1"]
    finally:
        inside.stop()
    assert questions(upstream) == []  # and nothing reached the outside


def start_in_sandbox(sandbox: str, address: str) -> Server:
    process = subprocess.Popen(["ip", "netns", "exec", sandbox, sys.executable, "-c", _UPSTREAM, address],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    return Server(process)


def test_resolv_conf_and_hosts_follow_connect_and_disconnect(engine: Engine) -> None:
    engine.create_network("quiet", subnet="10.35.0.0/24", dns=False)
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("back", subnet="10.32.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    engine.create_sandbox("lone", networks=["quiet"])
    conf = "/etc/netns/lone/resolv.conf"

    def nameservers() -> list[str] | None:
        if not os.path.exists(conf):
            return None
        with open(conf) as f:
            return [line.split()[1] for line in f if line.startswith("nameserver")]

    def own() -> list[str]:  # its own name's addresses, from its hosts file through glibc
        return sorted({line[0] for line in getent("lone", "ahostsv4", "lone")})

    assert nameservers() is None and addresses("lone", "web") == [] and own() == ["10.35.0.2"]
    engine.connect("app", "lone")
    assert nameservers() == ["10.31.0.1"] and addresses("lone", "web") == ["10.31.0.2"]
    engine.connect("back", "lone")
    assert nameservers() == ["10.31.0.1", "10.32.0.1"]
    with open("/etc/netns/lone/hosts") as f:
        assert f.read().splitlines()[2:] == ["10.35.0.2\tlone", "10.31.0.3\tlone", "10.32.0.2\tlone"]
    engine.disconnect("app", "lone")
    assert nameservers() == ["10.32.0.1"] and addresses("lone", "web") == []
    assert own() == ["10.32.0.2", "10.35.0.2"]
    engine.disconnect("back", "lone")
    assert nameservers() is None and own() == ["10.35.0.2"]


def test_a_network_made_while_the_resolver_exits_is_served(engine: Engine, state_dir: str) -> None:
    """Two admins: one removes the last DNS network (the resolver exits), the other makes one."""
    import threading

    for i in range(5):
        assert cli("network", "create", "old", "--subnet", "10.31.0.0/24").returncode == 0
        removed = threading.Thread(target=cli, args=("network", "rm", "old"))
        removed.start()
        assert cli("network", "create", f"new{i}", "--subnet", "10.36.0.0/24").returncode == 0
        assert cli("create", f"sb{i}", "--network", f"new{i}").returncode == 0
        removed.join()
        assert [r.address for r in query("10.36.0.1", f"sb{i}").answer[0]] == ["10.36.0.2"], i
        assert cli("rm", f"sb{i}").returncode == 0 and cli("network", "rm", f"new{i}").returncode == 0
        assert eventually(lambda: resolver_pid(state_dir) is None)


def test_a_sandbox_cannot_ask_in_another_ones_name(engine: Engine) -> None:
    """The resolver scopes answers by the asker's address; a sandbox forging a neighbour's (to see
    the names of a network only the neighbour is on) sends nothing: anti-spoofing drops it."""
    from nsnet.naming import bridge_mac

    from .frames import capture, ethernet, seen, send, udp

    front = engine.create_network("front", subnet="10.31.0.0/24")
    engine.create_network("back", subnet="10.32.0.0/24")
    web = engine.create_sandbox("web", networks=["front", "back"])
    client = engine.create_sandbox("client", networks=["front"])
    gateway, mine = bridge_mac(front), client.endpoints[0].mac

    def question(name: str, source: str) -> bytes:
        wire = dns.message.make_query(name, "A").to_wire()
        return ethernet(gateway, mine, 0x0800, udp(source, "10.31.0.1", 5353, 53, wire))

    honest = capture("client", "eth0", 2.0, "honestprobe")
    forged = capture("web", "eth0", 2.0, "forgedprobe")
    send("client", "eth0", [question("honestprobe.nsnet", "10.31.0.3"),
                            question("forgedprobe.nsnet", str(web.endpoints[0].address.ip))], repeat=3, gap=0.05)
    assert set(seen(honest)) == {"honestprobe"}  # the resolver answers a question from its asker ...
    assert seen(forged) == []  # ... and never got the forged one


# Another DNS server of the host, bound to port 53 on every address (UDP and TCP, both families):
# it answers every question with 192.0.2.66 and prints each asker. (It waits for the resolver of
# the test before, which exits once its networks are gone, to free its sockets.)
_HOST_DNS = r"""
import json, select, socket, sys, time
import dns.message, dns.rrset
socks = []
for family, any_address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    udp = socket.socket(family, socket.SOCK_DGRAM)
    tcp = socket.socket(family, socket.SOCK_STREAM)
    for s in (udp, tcp):
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        for attempt in range(100):
            try:
                s.bind((any_address, 53))
                break
            except OSError:
                time.sleep(0.05)
    tcp.listen(8)
    socks.append(udp)
print("ready", flush=True)
while select.select(socks, [], [], 30)[0]:
    for sock in select.select(socks, [], [], 0)[0]:
        data, peer = sock.recvfrom(4096)
        query = dns.message.from_wire(data)
        print(json.dumps(peer[0]), flush=True)
        reply = dns.message.make_response(query)
        reply.answer.append(dns.rrset.from_text(query.question[0].name, 0, "IN", "A", "192.0.2.66"))
        sock.sendto(reply.to_wire(), peer)
"""


def test_port_53_held_by_another_program_moves_the_resolver_and_redirects_questions(engine: Engine,
                                                                                      state_dir: str) -> None:
    """podman#15452's case: a host DNS server on *:53. nsnet listens on an alternate port of its
    gateways and redirects its sandboxes' questions there, internal networks included; the other
    server keeps port 53 and never hears a sandbox."""
    other = start(None, _HOST_DNS)
    try:
        app = engine.create_network("app", subnet=["10.31.0.0/24", "fd00:31::/64"])
        vault = engine.create_network("vault", subnet="10.32.0.0/24", internal=True)
        assert (app.dns_port, vault.dns_port) == (10053, 10053)
        assert any("another program holds port 53" in note for note in engine.notes)
        engine.create_sandbox("web", networks=["app"], aliases=["www"])
        engine.create_sandbox("client", networks=["app"])
        engine.create_sandbox("safe", networks=["vault"])
        engine.create_sandbox("box", networks=["vault"])
        assert addresses("client", "www") == ["10.31.0.2", "fd00:31::2"]
        assert [line[0] for line in getent("client", "ahostsv6", "web")][:1] == ["fd00:31::2"]
        assert cli("exec", "client", "--", "getent", "hosts", "10.31.0.2").stdout.split() == ["10.31.0.2",
                                                                                            "web.app.nsnet"]
        assert addresses("box", "safe") == ["10.32.0.2"]
        for how, server, rdtype, expected in (("udp", "fd00:31::1", "AAAA", "fd00:31::2"),
                                              ("tcp", "10.31.0.1", "A", "10.31.0.2"),
                                              ("tcp", "fd00:31::1", "A", "10.31.0.2")):
            asked = cli("exec", "client", "--", sys.executable, "-c",
                        f"import dns.message, dns.query; print(dns.query.{how}(dns.message.make_query('web',"
                        f" '{rdtype}'), '{server}', timeout=3).answer[0][0].address)")
            assert asked.stdout.strip() == expected, (how, server, asked.stderr)
        status = (supervise.ask(state_dir, "status") or "").split()[4:]
        assert status == ["10.31.0.1:10053", "10.32.0.1:10053", "[fd00:31::1]:10053"]
        doctor = cli("doctor")
        assert "answers on port 10053" in doctor.stdout and "app" in doctor.stdout, doctor.stdout
    finally:
        other.stop()
    assert questions(other) == []  # no sandbox's question reached the other server


def test_doctor_finds_another_tables_input_drop_and_its_fix_lets_questions_through(engine: Engine) -> None:
    """nftables runs every base chain: an accept in nsnet's table cannot undo another table's drop
    (the lab's own, removed at the end). doctor names it and prints the rule that fixes it."""
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    engine.create_sandbox("client", networks=["app"])
    subprocess.run(["nft", "add table inet hostfw; add chain inet hostfw input { type filter hook input priority 0;"
                    " policy accept; }; add rule inet hostfw input ct state established accept;"
                    " add rule inet hostfw input counter reject"], check=True)
    try:
        assert addresses("client", "web") == []  # rejected by the other table
        doctor = json.loads(cli("doctor", "--format", "json").stdout)
        (finding,) = [f for f in doctor if f["check"] == "dns-input"]
        (fix,) = finding["details"]
        assert fix.startswith("nft insert rule inet hostfw input iifname")
        subprocess.run(["nft", fix.removeprefix("nft ")], check=True)
        assert addresses("client", "web") == ["10.31.0.2"]
    finally:
        subprocess.run(["nft", "delete table inet hostfw"], check=True)


def test_a_resolver_of_another_namespace_on_the_same_state_is_reported_not_trusted(engine: Engine,
                                                                                   state_dir: str) -> None:
    """One state directory used from two network namespaces (podman#20396's wrong-netns resolver):
    the resolver answering its control socket serves the other namespace's gateways, so a command
    here says so instead of taking its `ok`, and check reports it."""
    engine.create_network("app", subnet="10.31.0.0/24")
    os.kill(resolver_pid(state_dir), 9)
    assert eventually(lambda: resolver_pid(state_dir) is None)
    stranger = subprocess.Popen(["unshare", "--net", sys.executable, "-m", "nsnet.dns.server", state_dir],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert eventually(lambda: resolver_pid(state_dir) == stranger.pid, timeout=10)
        engine.notes.clear()
        engine.create_sandbox("web", networks=["app"])
        assert any(f"(pid {stranger.pid}) runs in another network namespace" in note for note in engine.notes)
        drift = json.loads(cli("check", "--format", "json").stdout)
        assert [(d["kind"], d["subject"]) for d in drift] == [("wrong", "resolver")]
    finally:
        stranger.kill()
        stranger.wait()
    assert cli("create", "client", "--network", "app").returncode == 0  # starts this namespace's own
    assert addresses("client", "web") == ["10.31.0.2"] and cli("check").stdout == ""


# systemd-run as far as nsnet uses it: records its arguments, then starts the command with the
# environment given, in a session of its own, and returns (systemd runs no machine here).
_SYSTEMD_RUN = r"""#!{python}
import json, os, subprocess, sys
args = sys.argv[1:]
with open({record!r}, "a") as f:
    f.write(json.dumps(args) + "\n")
env = dict(os.environ)
while args[0].startswith("-"):
    option = args.pop(0)
    if option == "--unit":
        args.pop(0)
    elif option.startswith("--setenv="):
        key, value = option.removeprefix("--setenv=").split("=", 1)
        env[key] = value
subprocess.Popen(args, env=env, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)
"""


def test_under_systemd_the_resolver_is_a_transient_unit_that_systemd_restarts(engine: Engine, state_dir: str,
                                                                              tmp_path, monkeypatch) -> None:
    record = tmp_path / "systemd-run.json"
    tool = tmp_path / "systemd-run"
    tool.write_text(_SYSTEMD_RUN.format(python=sys.executable, record=str(record)))
    tool.chmod(0o755)
    monkeypatch.setattr(supervise, "systemd_run", lambda: str(tool))
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    engine.create_sandbox("client", networks=["app"])
    assert addresses("client", "web") == ["10.31.0.2"]
    (args,) = [json.loads(line) for line in record.read_text().splitlines()]
    assert args[:6] == ["--unit", supervise.unit_name(state_dir), "--collect", "--quiet",
                        "--property=Restart=on-failure", "--property=RestartSec=200ms"]
    assert args[-3:] == ["-m", "nsnet.dns.server", state_dir]
    assert supervise.unit_name(state_dir) != supervise.unit_name(state_dir + "-other")


def test_host_dns_resolved_tells_resolvectl_of_each_dns_bridge(engine: Engine, tmp_path, monkeypatch) -> None:
    """NSNET_HOST_DNS=resolved: per-link DNS through resolvectl (a stand-in here, which records
    its arguments: no systemd-resolved runs in a lab, and the machine's must not be touched)."""
    record = tmp_path / "resolvectl.txt"
    tool = tmp_path / "resolvectl"
    tool.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("NSNET_HOST_DNS", "resolved")
    app = engine.create_network("app", subnet=["10.31.0.0/24", "fd00:31::/64"])
    assert record.read_text().splitlines() == [f"dns {app.bridge} 10.31.0.1 fd00:31::1", f"domain {app.bridge} ~nsnet",
                                               f"default-route {app.bridge} false"]
    tool.write_text("#!/bin/sh\necho 'Failed to set DNS configuration: Link nsbr is not managed.' >&2\nexit 1\n")
    engine.notes.clear()
    engine.create_network("back", subnet="10.32.0.0/24")
    assert engine.notes == ["the host's resolver does not know network 'back''s names: `resolvectl dns "
                            f"{engine.network('back').bridge} 10.32.0.1` failed: Failed to set DNS configuration: "
                            "Link nsbr is not managed."]


def test_the_resolvers_own_sockets_are_not_another_programs(engine: Engine) -> None:
    """A network removed and another made on its gateway before the resolver let go: the probe
    must not take nsnet's own socket for another program's (and move the new network's port)."""
    from nsnet.dns import listen

    held = [listen.bind("10.31.0.1", 53, kind) for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM)]
    held[1].listen(1)
    try:
        assert listen.port_for(["10.31.0.1"]) == 10053
        assert listen.port_for(["10.31.0.1"], {"10.31.0.1:53"}) == 53
    finally:
        for sock in held:
            sock.close()
    assert listen.port_for(["10.31.0.1"]) == 53
