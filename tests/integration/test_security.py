"""What root inside a sandbox, or a neighbour of the host, can do with hand-made frames: each test
is an attack that worked before nsnet was hardened, next to a positive control in the same setup
(the same sender, capture or path carrying a legitimate frame), so a test cannot pass merely
because traffic is broken."""

from __future__ import annotations

import subprocess
import time

from nsnet import Engine

from .conftest import WAN_HOST, WAN_PEER, cli
from .frames import arp_reply, capture, ethernet, ipv6_udp, seen, send, tcp_syn, udp
from .net import blocked, exchange, ip_json, run

BROADCAST = "ff:ff:ff:ff:ff:ff"


def mac_of(ns: str | None, ifname: str) -> str:
    return ip_json("link", "show", ifname, ns=ns)[0]["address"]


def test_arp_from_a_neighbours_mac_steals_nothing(engine: Engine) -> None:
    """The attack: ARP replies naming the attacker honestly, sent from the victim's MAC, made the
    bridge learn the victim's MAC on the attacker's port, and the victim's traffic went there."""
    app = engine.create_network("app", subnet="10.31.0.0/24")
    victim = engine.create_sandbox("victim", networks=["app"]).endpoints[0]
    attacker = engine.create_sandbox("attacker", networks=["app"]).endpoints[0]
    engine.create_sandbox("client", networks=["app"])
    spoof = ethernet(BROADCAST, victim.mac, 0x0806, arp_reply(attacker.mac, "10.31.0.3", BROADCAST, "10.31.0.3"))

    at_attacker = capture("attacker", "eth0", 3.0, "FOR-VICTIM", "FOR-ATTACKER")
    at_victim = capture("victim", "eth0", 3.0, "FOR-VICTIM")
    poisoner = send("attacker", "eth0", [spoof], repeat=40, gap=0.05, background=True)
    time.sleep(0.3)
    sender = ("import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
              "for _ in range(20):\n"
              "    s.sendto(b'FOR-VICTIM', ('10.31.0.2', 7000)); s.sendto(b'FOR-ATTACKER', ('10.31.0.3', 7000))\n"
              "    time.sleep(0.05)\n")
    subprocess.run(["ip", "netns", "exec", "client", "python3", "-c", sender], check=True, timeout=20)
    poisoner.wait(timeout=10)

    attacker_saw, victim_saw = seen(at_attacker), seen(at_victim)
    assert attacker_saw.count("FOR-ATTACKER") == 20  # the capture works, and the path too
    assert attacker_saw.count("FOR-VICTIM") == 0
    assert victim_saw.count("FOR-VICTIM") == 20
    fdb = [e for e in json_fdb(app.bridge) if e["mac"] == victim.mac]
    assert {e["ifname"] for e in fdb} == {victim.host_ifname}
    assert attacker.host_ifname not in {e["ifname"] for e in fdb}


def json_fdb(bridge: str) -> list[dict]:
    import json

    return json.loads(run("bridge", "-j", "fdb", "show", "br", bridge).stdout)


def test_a_published_port_of_a_no_icc_network_is_not_stolen_by_arp(engine: Engine, wan: str) -> None:
    engine.create_network("quiet", subnet="10.31.0.0/24", icc=False)
    victim = engine.create_sandbox("victim", networks=["quiet"], publish=["7100:7100/udp"]).endpoints[0]
    engine.create_sandbox("attacker", networks=["quiet"])
    attacker_mac = mac_of("attacker", "eth0")
    spoof = ethernet(BROADCAST, victim.mac, 0x0806, arp_reply(attacker_mac, "10.31.0.3", BROADCAST, "10.31.0.3"))

    at_attacker = capture("attacker", "eth0", 3.0, "OUTSIDE")
    at_victim = capture("victim", "eth0", 3.0, "OUTSIDE")
    poisoner = send("attacker", "eth0", [spoof], repeat=40, gap=0.05, background=True)
    time.sleep(0.3)
    sender = ("import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
              "for _ in range(20):\n"
              f"    s.sendto(b'OUTSIDE', ('{WAN_HOST}', 7100)); time.sleep(0.05)\n")
    subprocess.run(["ip", "netns", "exec", wan, "python3", "-c", sender], check=True, timeout=20)
    poisoner.wait(timeout=10)

    assert seen(at_attacker) == []
    assert seen(at_victim).count("OUTSIDE") == 20


def test_a_sandbox_sends_nothing_but_its_own_ipv4_and_arp(engine: Engine) -> None:
    """Forged sources, and any frame that is neither IPv4 nor ARP, whatever its source (IPv6
    included, which root in the sandbox can switch back on), go nowhere."""
    engine.create_network("app", subnet="10.31.0.0/24")
    receiver = engine.create_sandbox("receiver", networks=["app"]).endpoints[0]
    attacker = engine.create_sandbox("attacker", networks=["app"]).endpoints[0]
    run("ip", "netns", "exec", "attacker", "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0")
    own, other = attacker.mac, "02:4e:0a:1f:00:63"
    frames = {
        "GOOD": ethernet(receiver.mac, own, 0x0800, udp("10.31.0.3", "10.31.0.2", 5000, 5000, b"GOOD")),
        "FORGED-MAC": ethernet(receiver.mac, other, 0x0800, udp("10.31.0.3", "10.31.0.2", 5000, 5000, b"FORGED-MAC")),
        "FORGED-IP": ethernet(receiver.mac, own, 0x0800, udp("10.31.0.99", "10.31.0.2", 5000, 5000, b"FORGED-IP")),
        "IPV6": ethernet("33:33:00:00:00:01", own, 0x86DD, ipv6_udp(bytes.fromhex(own.replace(":", "")), b"IPV6")),
        "OTHER-TYPE": ethernet(BROADCAST, own, 0x88B5, b"OTHER-TYPE"),
        "VLAN": ethernet(receiver.mac, own, 0x8100,
                         b"\x00\x05\x08\x00" + udp("10.31.0.3", "10.31.0.2", 5000, 5000, b"VLAN")),
    }
    app_bridge = engine.network("app").bridge
    at_receiver = capture("receiver", "eth0", 2.0, *frames)
    at_host = capture(None, app_bridge, 2.0, *frames)
    send("attacker", "eth0", list(frames.values()), repeat=3, gap=0.05)

    assert sorted(set(seen(at_receiver))) == ["GOOD"]
    assert sorted(set(seen(at_host))) == []  # GOOD went to the receiver's MAC, not the bridge's
    # On a broadcast, the positive control reaches the host's bridge too.
    at_host = capture(None, app_bridge, 1.5, "GOOD-BROADCAST", "IPV6-AGAIN")
    send("attacker", "eth0", [ethernet(BROADCAST, own, 0x0800, udp("10.31.0.3", "10.31.0.255", 5000, 5000,
                                                                     b"GOOD-BROADCAST")),
                              ethernet("33:33:00:00:00:01", own, 0x86DD, ipv6_udp(b"\x01", b"IPV6-AGAIN"))],
         repeat=3, gap=0.05)
    assert sorted(set(seen(at_host))) == ["GOOD-BROADCAST"]


def test_ports_published_on_loopback_are_the_hosts_alone(engine: Engine, wan: str) -> None:
    """A neighbour that sends packets for 127.0.0.1 to the host (its routing is its own) reached
    `-p 127.0.0.1:...`: DNAT in prerouting ran before the kernel's martian check."""
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"],
                          publish=["127.0.0.1:8090:90", "127.0.0.1:8091:91/udp", "8092:92/udp"])
    host_mac, wan_mac = mac_of(None, "wan0"), mac_of(wan, "eth0")
    frames = [
        ethernet(host_mac, wan_mac, 0x0800, tcp_syn(WAN_PEER, "127.0.0.1", 40000, 8090, b"LOOPBACK-TCP")),
        ethernet(host_mac, wan_mac, 0x0800, udp(WAN_PEER, "127.0.0.1", 40001, 8091, b"LOOPBACK-UDP")),
        ethernet(host_mac, wan_mac, 0x0800, udp(WAN_PEER, WAN_HOST, 40002, 8092, b"EVERY-ADDRESS")),
    ]
    at_web = capture("web", "eth0", 2.0, "LOOPBACK-TCP", "LOOPBACK-UDP", "EVERY-ADDRESS")
    send(wan, "eth0", frames, repeat=3, gap=0.05)
    assert sorted(set(seen(at_web))) == ["EVERY-ADDRESS"]

    # The host itself still reaches them.
    assert exchange(None, "web", "10.31.0.2", 90)[0] is not None  # the server works
    at_web = capture("web", "eth0", 1.5, "FROM-HOST")
    subprocess.run(["python3", "-c", "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                    ".sendto(b'FROM-HOST', ('127.0.0.1', 8091))"], check=True, timeout=10)
    assert seen(at_web) == ["FROM-HOST"]


def default_route(ns: str) -> list[tuple[str, str]]:
    return [(r.get("gateway", ""), r["dev"]) for r in ip_json("route", ns=ns) if r["dst"] == "default"]


def test_an_internal_network_never_carries_the_default_route(engine: Engine) -> None:
    engine.create_network("sealed", subnet="10.33.0.0/24", internal=True)
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("lone", networks=["sealed"])
    engine.create_sandbox("both", networks=["sealed", "app"])
    engine.create_sandbox("later", networks=["sealed"])
    engine.connect("app", "later")

    assert default_route("lone") == []
    assert default_route("both") == [("10.31.0.1", "eth1")]
    assert default_route("later") == [("10.31.0.1", "eth1")]
    engine.disconnect("app", "later")
    assert default_route("later") == []
    assert [e.default_route for e in engine.sandbox("both").endpoints] == [False, True]
    assert cli("check").returncode == 0


def test_an_internal_network_cannot_reach_the_host(engine: Engine, wan: str) -> None:
    engine.create_network("sealed", subnet="10.33.0.0/24", internal=True)
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("vault", networks=["sealed"])
    engine.create_sandbox("web", networks=["app"])
    # Root in the sandbox adds the route nsnet did not give.
    run("ip", "-n", "vault", "route", "add", "default", "via", "10.33.0.1")

    assert exchange("web", None, "10.31.0.1", 8300)[0] is not None  # a regular network reaches the host
    assert blocked("vault", None, "10.33.0.1", 8301)
    assert blocked("vault", None, WAN_HOST, 8302)
    assert exchange("vault", "vault", "10.33.0.2", 8303)[0] is not None  # vault itself works
    # The host still reaches the internal sandbox, and gets its replies.
    assert exchange(None, "vault", "10.33.0.2", 8304) == ("hello from 10.33.0.2", ["10.33.0.1"])
