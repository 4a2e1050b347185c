"""What root inside a sandbox, or a neighbour of the host, can do with hand-made frames: each test
is an attack that worked before nsnet was hardened, next to a positive control in the same setup
(the same sender, capture or path carrying a legitimate frame), so a test cannot pass merely
because traffic is broken."""

from __future__ import annotations

import subprocess
import time
from ipaddress import IPv6Address, IPv6Network

from nsnet import Engine
from nsnet.naming import link_local

from .conftest import WAN_HOST, WAN_PEER, cli
from .frames import (ALL_DHCP_AGENTS, DHCPV6_ADVERTISE, DHCPV6_REPLY, arp_reply, capture, dhcpv6, ethernet, icmpv6,
                     ip6_bytes,
                     ipv6_udp, multicast_mac, neighbour_advertisement, receive6, redirect, router_advertisement,
                     seen, send, tcp_syn, udp, udp6)
from .net import blocked, eventually, exchange, ip_json, run

BROADCAST = "ff:ff:ff:ff:ff:ff"
DUAL = ["10.31.0.0/24", "fd00:31::/64"]
ALL_NODES = "ff02::1"
ALL_NODES_MAC = multicast_mac(ALL_NODES)
NOBODY_MAC = "02:4e:0a:1f:00:63"  # no port's


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


# IPv6: the same promises as IPv4's (a port speaks only for its own MAC and addresses), and those
# of neighbour discovery, which carries its claims in the ICMPv6 message rather than the header.

def ll(endpoint) -> str:
    return str(link_local(endpoint.mac))


def ip6(endpoint) -> str:
    return str(endpoint.family(6).ip)


def neighbours(ns: str | None, dev: str) -> dict[str, str]:
    """The IPv6 neighbour table of dev: address -> link-layer address (entries that have one)."""
    return {n["dst"]: n["lladdr"] for n in ip_json("-6", "neigh", "show", "dev", dev, ns=ns) if "lladdr" in n}




def datagrams(ns: str | None, targets: list[tuple[str, bytes]], repeat: int, gap: float = 0.05) -> None:
    """From ns, through its own stack: each (address, payload) to UDP port 7000, `repeat` times."""
    sender = ("import socket, sys, time\ns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
              f"for _ in range({repeat}):\n"
              f"    for ip, data in {targets!r}:\n"
              "        s.sendto(data, (ip, 7000))\n"
              f"    time.sleep({gap})\n")
    argv = ["ip", "netns", "exec", ns, "python3", "-c", sender] if ns else ["python3", "-c", sender]
    subprocess.run(argv, check=True, timeout=20)


def test_a_sandbox_sends_ipv6_only_from_its_own_mac_and_addresses(engine: Engine) -> None:
    """Forged IPv6 sources (a neighbour's address, its link-local one, an address outside the
    subnet, the unspecified one) and a forged Ethernet source reach neither a neighbour nor the
    host; the same datagram from the attacker's own address or link-local one reaches both, and the
    neighbour's socket (so the frame is one its stack takes, checksum included)."""
    app = engine.create_network("app", subnet=DUAL)
    engine.create_sandbox("receiver", networks=["app"])
    attacker = engine.create_sandbox("attacker", networks=["app"]).endpoints[0]
    bystander = engine.create_sandbox("bystander", networks=["app"]).endpoints[0]
    own = attacker.mac
    sources = {
        "GOOD-GLOBAL": (own, ip6(attacker)),
        "GOOD-LL": (own, ll(attacker)),
        "FORGED-NEIGHBOUR-GLOBAL": (own, ip6(bystander)),
        "FORGED-NEIGHBOUR-LL": (own, ll(bystander)),
        "FORGED-OUTSIDE": (own, "2001:db8:dead::1"),
        "FORGED-IN-SUBNET": (own, "fd00:31::99"),
        "FORGED-UNSPECIFIED": (own, "::"),
        "FORGED-MAC-GLOBAL": (NOBODY_MAC, ip6(attacker)),
        "FORGED-MAC-LL": (NOBODY_MAC, ll(attacker)),
        "NEIGHBOURS-MAC": (bystander.mac, ip6(bystander)),
    }
    frames = [ethernet(ALL_NODES_MAC, mac, 0x86DD, udp6(src, ALL_NODES, 4000, 5000, marker.encode()))
              for marker, (mac, src) in sources.items()]
    at_receiver = capture("receiver", "eth0", 2.0, *sources)
    at_host = capture(None, app.bridge, 2.0, *sources)
    socket_at_receiver = receive6("receiver", 5000, 2.0)
    send("attacker", "eth0", frames, repeat=3, gap=0.05)

    expected = ["GOOD-GLOBAL", "GOOD-LL"]
    assert sorted(set(seen(at_receiver))) == expected
    assert sorted(set(seen(at_host))) == expected
    assert sorted(set(seen(socket_at_receiver))) == expected
    # The forged Ethernet source moved no MAC to the attacker's port.
    fdb = [e for e in json_fdb(app.bridge) if e["mac"] == bystander.mac]
    assert attacker.host_ifname not in {e["ifname"] for e in fdb}


def test_a_neighbour_advertisement_for_another_sandboxs_address_poisons_no_one(engine: Engine) -> None:
    """The attack: unsolicited neighbour advertisements (override flag) claiming the victim's
    address for the attacker's MAC, from the attacker's own MAC and link-local address (so only
    the target gives them away), to all nodes, to the client alone, and behind an extension
    header, and one claiming the gateway's address. Through them the client's datagrams for the
    victim, or for the world, would go to the attacker."""
    app = engine.create_network("app", subnet=DUAL)
    victim = engine.create_sandbox("victim", networks=["app"]).endpoints[0]
    attacker = engine.create_sandbox("attacker", networks=["app"]).endpoints[0]
    client = engine.create_sandbox("client", networks=["app"]).endpoints[0]
    # The client and the host know both neighbours first: an advertisement overrides an entry,
    # it creates none.
    gateway, bridge_mac = str(app.family(6).gateway), mac_of(None, app.bridge)
    datagrams("client", [(ip6(victim), b"WARM"), (ip6(attacker), b"WARM"), (gateway, b"WARM")], repeat=1)
    datagrams(None, [(ip6(victim), b"WARM")], repeat=1)
    assert eventually(lambda: neighbours("client", "eth0").get(ip6(victim)) == victim.mac
                      and neighbours("client", "eth0").get(ip6(attacker)) == attacker.mac
                      and neighbours("client", "eth0").get(gateway) == bridge_mac)
    assert eventually(lambda: neighbours(None, app.bridge).get(ip6(victim)) == victim.mac)

    src = ll(attacker)
    forged = [
        ethernet(ALL_NODES_MAC, attacker.mac, 0x86DD,
                 neighbour_advertisement(src, ALL_NODES, ip6(victim), attacker.mac, marker=b"FORGED-NA-MULTICAST")),
        ethernet(client.mac, attacker.mac, 0x86DD,
                 neighbour_advertisement(src, ip6(client), ip6(victim), attacker.mac, marker=b"FORGED-NA-UNICAST")),
        ethernet(ALL_NODES_MAC, attacker.mac, 0x86DD,
                 neighbour_advertisement(ip6(attacker), ALL_NODES, ip6(victim), attacker.mac,
                                         marker=b"FORGED-NA-DSTOPT", destination_options=True)),
        ethernet(ALL_NODES_MAC, attacker.mac, 0x86DD,
                 neighbour_advertisement(src, ALL_NODES, ll(victim), attacker.mac, marker=b"FORGED-NA-LL")),
        # The gateway's address: every packet leaving the network would go through the attacker.
        ethernet(ALL_NODES_MAC, attacker.mac, 0x86DD,
                 neighbour_advertisement(src, ALL_NODES, gateway, attacker.mac, marker=b"FORGED-NA-GATEWAY")),
    ]
    markers = ["FORGED-NA-MULTICAST", "FORGED-NA-UNICAST", "FORGED-NA-DSTOPT", "FORGED-NA-LL", "FORGED-NA-GATEWAY"]
    at_attacker = capture("attacker", "eth0", 3.0, "FOR-VICTIM", "FOR-ATTACKER", "FOR-GATEWAY")
    at_victim = capture("victim", "eth0", 3.0, "FOR-VICTIM")
    at_host = capture(None, app.bridge, 3.0, "FOR-GATEWAY")
    at_client = capture("client", "eth0", 3.0, *markers)
    poisoner = send("attacker", "eth0", forged, repeat=30, gap=0.05, background=True)
    time.sleep(0.3)
    datagrams("client", [(ip6(victim), b"FOR-VICTIM"), (ip6(attacker), b"FOR-ATTACKER"), (gateway, b"FOR-GATEWAY")],
              repeat=20)
    poisoner.wait(timeout=10)

    attacker_saw, victim_saw, host_saw = seen(at_attacker), seen(at_victim), seen(at_host)
    assert attacker_saw.count("FOR-ATTACKER") == 20  # the capture works, and the path too
    assert attacker_saw.count("FOR-VICTIM") == 0
    assert attacker_saw.count("FOR-GATEWAY") == 0
    assert victim_saw.count("FOR-VICTIM") == 20
    assert host_saw.count("FOR-GATEWAY") == 20
    assert seen(at_client) == []
    assert neighbours("client", "eth0").get(ip6(victim)) == victim.mac
    assert neighbours("client", "eth0").get(gateway) == bridge_mac
    assert neighbours("client", "eth0").get(ll(victim), victim.mac) == victim.mac
    assert neighbours(None, app.bridge).get(ip6(victim)) == victim.mac

    # Control: the same advertisement for the attacker's own address passes, and the client takes
    # it (here moving the attacker's address to a MAC nobody has): the client would have taken
    # the forged ones.
    at_client = capture("client", "eth0", 1.5, "OWN-NA")
    send("attacker", "eth0", [ethernet(ALL_NODES_MAC, attacker.mac, 0x86DD,
                                       neighbour_advertisement(src, ALL_NODES, ip6(attacker), NOBODY_MAC,
                                                               marker=b"OWN-NA"))], repeat=3, gap=0.05)
    assert set(seen(at_client)) == {"OWN-NA"}
    assert eventually(lambda: neighbours("client", "eth0").get(ip6(attacker)) == NOBODY_MAC)


def routes6(ns: str) -> list[tuple[str, str]]:
    return [(r["dst"], r.get("gateway", "")) for r in ip_json("-6", "route", "show", ns=ns)]


def addresses6(ns: str) -> list[IPv6Address]:
    return [IPv6Address(a["local"]) for a in ip_json("-6", "address", "show", "eth0", ns=ns)[0]["addr_info"]]


def test_router_advertisements_and_redirects_from_a_sandbox_reach_no_one(engine: Engine) -> None:
    """Rogue RA guard: a sandbox's router advertisement (a default route and the prefix
    2001:db8:bad::/64) and its redirects reach neither a neighbour nor the host, and a victim set
    to take advertisements (as root in it may) takes none; the same victim takes one from the
    host (it would have taken the rogue one), and an ordinary IPv6 frame of the attacker's arrives."""
    app = engine.create_network("app", subnet=DUAL)
    victim = engine.create_sandbox("victim", networks=["app"]).endpoints[0]
    attacker = engine.create_sandbox("attacker", networks=["app"]).endpoints[0]
    run("ip", "netns", "exec", "victim", "sysctl", "-qw", "net.ipv6.conf.eth0.forwarding=0",
        "net.ipv6.conf.eth0.accept_ra=2", "net.ipv6.conf.eth0.autoconf=1", "net.ipv6.conf.eth0.accept_ra_defrtr=1",
        "net.ipv6.conf.eth0.accept_ra_pinfo=1")
    src, mac = ll(attacker), attacker.mac
    rogue = {
        "ROGUE-RA-MULTICAST": ethernet(ALL_NODES_MAC, mac, 0x86DD,
                             router_advertisement(src, ALL_NODES, mac, "2001:db8:bad::/64", marker=b"ROGUE-RA-MULTICAST")),
        "ROGUE-RA-UNICAST": ethernet(victim.mac, mac, 0x86DD,
                                     router_advertisement(src, ll(victim), mac, "2001:db8:bad::/64",
                                                          marker=b"ROGUE-RA-UNICAST")),
        "ROGUE-RA-DSTOPT": ethernet(ALL_NODES_MAC, mac, 0x86DD,
                                    router_advertisement(src, ALL_NODES, mac, "2001:db8:bad::/64",
                                                         marker=b"ROGUE-RA-DSTOPT", destination_options=True)),
        "ROGUE-REDIRECT": ethernet(victim.mac, mac, 0x86DD,
                                   redirect(src, ll(victim), src, "2001:db8:100::2", mac, marker=b"ROGUE-REDIRECT")),
        "ORDINARY": ethernet(ALL_NODES_MAC, mac, 0x86DD, udp6(src, ALL_NODES, 4000, 5000, b"ORDINARY")),
    }
    at_victim = capture("victim", "eth0", 2.0, *rogue)
    at_host = capture(None, app.bridge, 2.0, *rogue)
    send("attacker", "eth0", list(rogue.values()), repeat=3, gap=0.05)

    victim_saw, host_saw = seen(at_victim), seen(at_host)
    routes = routes6("victim")
    assert [r for r in routes if r[0].startswith("2001:db8:bad:") or r[1] == src] == []
    assert ("default", "fd00:31::1") in routes
    assert [a for a in addresses6("victim") if a in IPv6Network("2001:db8:bad::/64")] == []
    assert sorted(set(victim_saw)) == ["ORDINARY"]
    assert sorted(set(host_saw)) == ["ORDINARY"]

    # Control: the victim does take an advertisement, from the host's side of the bridge.
    bridge_mac = mac_of(None, app.bridge)
    host_ra = router_advertisement(str(link_local(bridge_mac)), ALL_NODES, bridge_mac, "2001:db8:900d::/64")
    send(None, app.bridge, [ethernet(ALL_NODES_MAC, bridge_mac, 0x86DD, host_ra)])
    assert eventually(lambda: ("2001:db8:900d::/64", "") in routes6("victim")
                      and ("default", str(link_local(bridge_mac))) in routes6("victim"))
    slaac = IPv6Address(int(IPv6Address("2001:db8:900d::")) | int(link_local(victim.mac)) & (1 << 64) - 1)
    assert eventually(lambda: slaac in addresses6("victim"))


def test_a_sandboxs_multicast_listener_messages_reach_no_one_and_its_groups_still_get_traffic(
        engine: Engine) -> None:
    """A sandbox joining a group sends MLD reports, which the bridge would flood to every port
    (one delivery per sandbox on the network, for every attach too); as root it could also send
    queries, making every neighbour answer. Both stop at its port; the group's traffic still
    reaches a listener, flooded as on a network without snooping."""
    app = engine.create_network("app", subnet=DUAL)
    engine.create_sandbox("listener", networks=["app"])
    engine.create_sandbox("neighbour", networks=["app"])
    sender = engine.create_sandbox("sender", networks=["app"]).endpoints[0]
    group = "ff02::1:2:3"
    # The groups they name spell the markers: "QUER", "REPO" (an MLDv2 report's one record).
    query = icmpv6(ll(sender), ALL_NODES, 130, 0, bytes(4) + ip6_bytes("ff02::5155:4552") + bytes(4))
    report = icmpv6(ll(sender), "ff02::16", 143, 0, bytes(2) + (1).to_bytes(2, "big")
                    + bytes([4, 0, 0, 0]) + ip6_bytes("ff02::5245:504f"))
    at_neighbour = capture("neighbour", "eth0", 2.5, "QUER", "REPO", "TO-GROUP")
    at_host = capture(None, app.bridge, 2.5, "QUER", "REPO", "TO-GROUP")
    server = receive6("listener", 4000, 2.5, group)  # joining sends the listener's own reports
    send("sender", "eth0", [ethernet(ALL_NODES_MAC, sender.mac, 0x86DD, query),
                            ethernet(multicast_mac("ff02::16"), sender.mac, 0x86DD, report)], repeat=2, gap=0.05)
    send("sender", "eth0", [ethernet(multicast_mac(group), sender.mac, 0x86DD,
                                     udp6(ll(sender), group, 4000, 4000, b"TO-GROUP"))], repeat=3, gap=0.05)

    assert seen(server) == ["TO-GROUP"] * 3
    assert seen(at_neighbour) == ["TO-GROUP"] * 3
    assert seen(at_host) == ["TO-GROUP"] * 3


def test_dhcpv6_server_messages_from_a_sandbox_are_dropped(engine: Engine) -> None:
    """Advertise and Reply (UDP 547 -> 546) to all DHCP agents, to the victim, and behind an
    extension header, and anything to a DHCPv6 client's port from another source port, reach
    neither the victim's DHCPv6 client port nor its wire; the attacker's datagrams to another port
    of the same destinations reach both."""
    engine.create_network("app", subnet=DUAL)
    victim = engine.create_sandbox("victim", networks=["app"]).endpoints[0]
    attacker = engine.create_sandbox("attacker", networks=["app"]).endpoints[0]
    src, mac = ll(attacker), attacker.mac
    agents = multicast_mac(ALL_DHCP_AGENTS)

    def message(marker: str, dst: str, dst_mac: str, sport: int = 547, dport: int = 546, kind: int = DHCPV6_REPLY,
                destination_options: bool = False) -> bytes:
        return ethernet(dst_mac, mac, 0x86DD, udp6(src, dst, sport, dport, dhcpv6(kind, mac, marker.encode()),
                                                   destination_options=destination_options))

    frames = {
        "ADVERTISE": message("ADVERTISE", ALL_DHCP_AGENTS, agents, kind=DHCPV6_ADVERTISE),
        "REPLY-MULTICAST": message("REPLY-MULTICAST", ALL_DHCP_AGENTS, agents),
        "REPLY-UNICAST": message("REPLY-UNICAST", ll(victim), victim.mac),
        "REPLY-GLOBAL": message("REPLY-GLOBAL", ip6(victim), victim.mac),
        "REPLY-DSTOPT": message("REPLY-DSTOPT", ll(victim), victim.mac, destination_options=True),
        "OTHER-SOURCE-MULTICAST": message("OTHER-SOURCE-MULTICAST", ALL_DHCP_AGENTS, agents, sport=4000),
        "OTHER-SOURCE-UNICAST": message("OTHER-SOURCE-UNICAST", ll(victim), victim.mac, sport=4000),
        "CONTROL-MULTICAST": message("CONTROL-MULTICAST", ALL_DHCP_AGENTS, agents, sport=4000, dport=5000),
        "CONTROL-UNICAST": message("CONTROL-UNICAST", ll(victim), victim.mac, sport=4000, dport=5000),
    }
    at_victim = capture("victim", "eth0", 2.0, *frames)
    client_port = receive6("victim", 546, 2.0, ALL_DHCP_AGENTS)
    other_port = receive6("victim", 5000, 2.0, ALL_DHCP_AGENTS)
    send("attacker", "eth0", list(frames.values()), repeat=3, gap=0.05)

    assert sorted(set(seen(at_victim))) == ["CONTROL-MULTICAST", "CONTROL-UNICAST"]
    assert seen(client_port) == []
    assert sorted(set(seen(other_port))) == ["CONTROL-MULTICAST", "CONTROL-UNICAST"]


def test_a_port_of_a_network_without_ipv6_passes_no_ipv6(engine: Engine) -> None:
    """A sandbox on an IPv6 network and on one without: on the latter's port, IPv6 goes nowhere,
    not even with the identity its other port may use (its MAC and addresses there), nor as a
    neighbour advertisement for its own link-local address; on the former's, the same frames pass."""
    plain = engine.create_network("plain", subnet="10.32.0.0/24")
    engine.create_network("app", subnet=DUAL)
    receiver = engine.create_sandbox("receiver", networks=["app", "plain"])
    attacker = engine.create_sandbox("attacker", networks=["app", "plain"])
    a6, a4 = attacker.endpoint("app"), attacker.endpoint("plain")
    run("ip", "netns", "exec", "attacker", "sysctl", "-qw", "net.ipv6.conf.eth1.disable_ipv6=0")

    def frames(prefix: str, mac: str) -> list[bytes]:
        return [
            ethernet(ALL_NODES_MAC, mac, 0x86DD, udp6(str(link_local(mac)), ALL_NODES, 4000, 5000,
                                                     f"{prefix}-LL".encode())),
            ethernet(ALL_NODES_MAC, mac, 0x86DD, udp6(ip6(a6), ALL_NODES, 4000, 5000, f"{prefix}-GLOBAL".encode())),
            ethernet(ALL_NODES_MAC, mac, 0x86DD,
                     neighbour_advertisement(str(link_local(mac)), ALL_NODES, str(link_local(mac)), mac,
                                             marker=f"{prefix}-NA".encode())),
        ]

    markers = [f"{p}-{k}" for p in ("PLAIN", "STOLEN", "APP") for k in ("LL", "GLOBAL", "NA")]
    at_plain = capture("receiver", "eth1", 2.0, *markers)
    at_plain_host = capture(None, plain.bridge, 2.0, *markers)
    at_app = capture("receiver", "eth0", 2.0, *markers)
    # On the plain port: its own MAC, then the app port's (the whole identity of the other port).
    send("attacker", "eth1", frames("PLAIN", a4.mac) + frames("STOLEN", a6.mac), repeat=3, gap=0.05)
    send("attacker", "eth0", frames("APP", a6.mac), repeat=3, gap=0.05)

    assert seen(at_plain) == []
    assert seen(at_plain_host) == []
    assert sorted(set(seen(at_app))) == ["APP-GLOBAL", "APP-LL", "APP-NA"]
    assert receiver.endpoint("plain").family(6) is None
