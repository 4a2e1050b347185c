"""Golden tests of the nftables JSON nsnet renders.

The expected commands live in tests/golden/*.json, pretty-printed with sorted keys; this test only
reads them. After an intended change to the rules, regenerate them by hand and review the diff:

    .venv/bin/python tests/golden/update.py
"""

import importlib
import json
import sys
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from pathlib import Path

import pytest
from conftest import nft_state

from nsnet.firewall import names, render
from nsnet.model import Subnet, Endpoint, Network, Owner, PortMapping
from nsnet.naming import link_local
from nsnet.record import replace

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
# The default ledger's owner in the golden files; the other tests use another one, so that a name
# or group written into render instead of taken from the owner shows.
DEFAULT = Owner()
OWNER = Owner(table="nsnet-4e123456", group=0x4E123456)

APP = Network(
    id="a" * 64, name="app", bridge="nsbr-aaaaaaaaaa", subnets=(Subnet(IPv4Network("10.31.0.0/24"), IPv4Address("10.31.0.1")),),
)
PRIVATE = Network(
    id="b" * 64, name="private", bridge="nsbr-bbbbbbbbbb", subnets=(Subnet(IPv4Network("10.32.0.0/16"), IPv4Address("10.32.0.1")),), internal=True,
    dns=True,
)

QUIET = Network(
    id="c" * 64, name="quiet", bridge="nsbr-cccccccccc", subnets=(Subnet(IPv4Network("10.33.0.0/24"), IPv4Address("10.33.0.1")),), icc=False,
)


def endpoint(network: Network, letter: str, ports: tuple[PortMapping, ...] = ()) -> Endpoint:
    return Endpoint(
        id=letter * 64, sandbox="web", network=network.name, ifname="eth0", host_ifname="nsv" + letter * 12,
        mac="02:4e:0a:00:00:02", addresses=(IPv4Interface(f"{network.gateway + 1}/{network.subnet.prefixlen}"),),
        gateways=(network.gateway,), ports=ports,
    )


DUAL = Network(
    id="d" * 64, name="dual", bridge="nsbr-dddddddddd", subnets=(
        Subnet(IPv4Network("10.34.0.0/24"), IPv4Address("10.34.0.1")),
        Subnet(IPv6Network("fd00:34::/64"), IPv6Address("fd00:34::1"))),
)
ROUTED = Network(
    id="e" * 64, name="routed", bridge="nsbr-eeeeeeeeee", subnets=(
        Subnet(IPv4Network("10.35.0.0/24"), IPv4Address("10.35.0.1")),
        Subnet(IPv6Network("2001:db8:35::/64"), IPv6Address("2001:db8:35::1"))), ipv6_routed=True,
)


def dual_endpoint(letter: str, ports: tuple[PortMapping, ...] = ()) -> Endpoint:
    return Endpoint(
        id=letter * 64, sandbox="web", network="dual", ifname="eth0", host_ifname="nsv" + letter * 12,
        mac="02:4e:0a:22:00:02", addresses=(IPv4Interface("10.34.0.2/24"), IPv6Interface("fd00:34::2/64")),
        gateways=(IPv4Address("10.34.0.1"), IPv6Address("fd00:34::1")), ports=ports,
    )


# Every address of both families, of one family each, and one address of each.
DUAL_PORTS = (PortMapping(None, 8080, 80), PortMapping(IPv4Address(0), 8081, 81), PortMapping(IPv6Address(0), 8082, 82),
              PortMapping(IPv6Address("2001:db8::5"), 8083, 83), PortMapping(IPv4Address("192.0.2.5"), 8084, 84))
LOOPBACK = IPv4Address("127.0.0.1")
# Two host ports to sandbox port 80 share one published_targets element.
PORTS = (PortMapping(None, 8080, 80), PortMapping(LOOPBACK, 8443, 443), PortMapping(None, 8081, 80),
         PortMapping(None, 5353, 53, "udp"))


def dump(commands: list) -> str:
    return json.dumps(commands, indent=2, sort_keys=True) + "\n"


CASES = {
    "render_add_network": lambda: render.render_add_network(DEFAULT, APP),
    "render_add_network_internal": lambda: render.render_add_network(DEFAULT, PRIVATE),
    "render_remove_network": lambda: render.render_remove_network(DEFAULT, APP),
    "render_remove_network_internal": lambda: render.render_remove_network(DEFAULT, PRIVATE),
    "render_remove_table": lambda: render.render_remove_table(DEFAULT),
    "render_add_endpoint_no_icc": lambda: render.render_add_endpoint(DEFAULT, endpoint(QUIET, "d"), QUIET),
    "render_remove_endpoints": lambda: render.render_remove_endpoints(
        DEFAULT, [(endpoint(QUIET, "d"), QUIET), (endpoint(APP, "e"), APP), (endpoint(QUIET, "f"), QUIET)]),
    "render_add_endpoint_published": lambda: render.render_add_endpoint(DEFAULT, endpoint(APP, "d", PORTS), APP),
    "render_remove_endpoints_published": lambda: render.render_remove_endpoints(
        DEFAULT, [(endpoint(APP, "d", PORTS), APP), (endpoint(QUIET, "e", (PortMapping(None, 9090, 80),)), QUIET)]),
    "render_add_network_dual": lambda: render.render_network_elements(DEFAULT, DUAL),
    "render_add_network_routed": lambda: render.render_network_elements(DEFAULT, ROUTED),
    "render_add_endpoint_dual": lambda: render.render_add_endpoint(DEFAULT, dual_endpoint("f", DUAL_PORTS), DUAL),
    "render_remove_endpoints_dual": lambda: render.render_remove_endpoints(
        DEFAULT, [(dual_endpoint("f", DUAL_PORTS), DUAL)]),
}


@pytest.mark.parametrize("golden", sorted(CASES))
def test_rendering_matches_golden_file(golden):
    assert (GOLDEN / f"{golden}.json").read_text() == dump(CASES[golden]())


def test_every_golden_file_has_its_case():
    assert sorted(p.stem for p in GOLDEN.glob("*.json")) == sorted(CASES)


def test_the_golden_test_reads_and_never_writes(tmp_path, monkeypatch):
    """A golden file that differs fails the test whatever the environment says, and stays as it was.
    The module is re-executed with the old switch set, in case it is read at import."""
    monkeypatch.setenv("NSNET_UPDATE_GOLDEN", "1")
    module = importlib.reload(sys.modules[__name__])
    (tmp_path / "render_remove_table.json").write_text("[]\n")
    monkeypatch.setattr(module, "GOLDEN", tmp_path)
    with pytest.raises(AssertionError):
        module.test_rendering_matches_golden_file("render_remove_table")
    assert (tmp_path / "render_remove_table.json").read_text() == "[]\n"


def test_add_network_is_skeleton_then_add_elements():
    commands = render.render_add_network(OWNER, APP)
    assert commands[: len(render.render_skeleton(OWNER))] == render.render_skeleton(OWNER)
    assert [next(iter(c)) for c in commands[len(render.render_skeleton(OWNER)):]] == ["add"] * 6


def test_remove_network_deletes_exactly_what_add_network_added():
    skeleton = len(render.render_skeleton(OWNER))
    for network in (APP, PRIVATE, QUIET):
        added = [c["add"]["element"] for c in render.render_add_network(OWNER, network)[skeleton:]]
        deleted = [c["delete"]["element"] for c in render.render_remove_network(OWNER, network)]
        verdict_maps = {names.WITHIN_NETWORK, names.TO_BRIDGE, names.FROM_BRIDGE}
        assert [{**body, "elem": [key for key, _ in body["elem"]]} if body["name"] in verdict_maps else body
                for body in added] == deleted


def test_internal_network_is_not_masqueraded():
    elements = render.render_add_network(OWNER, PRIVATE)[len(render.render_skeleton(OWNER)):]
    assert [c["add"]["element"]["name"] for c in elements] == [
        names.BRIDGES, names.WITHIN_NETWORK, names.TO_BRIDGE, names.FROM_BRIDGE, names.INTERNAL_BRIDGES,
        names.DNS_LISTENERS, names.BRIDGE_SUBNETS,
    ]
    verdicts = {c["add"]["element"]["name"]: c["add"]["element"]["elem"][0][1] for c in elements[1:4]}
    assert verdicts == {names.WITHIN_NETWORK: {"accept": None}, names.TO_BRIDGE: {"drop": None},
                        names.FROM_BRIDGE: {"drop": None}}


def test_endpoint_on_an_icc_network_has_its_identity_and_no_icc_rule():
    address = {"family": "inet", "table": OWNER.table, "name": "sandbox_addresses",
               "elem": [{"concat": [APP.bridge, "10.31.0.2"]}]}
    identity = [
        ("port_identity", [{"concat": ["nsvdddddddddddd", "02:4e:0a:00:00:02", "10.31.0.2"]}]),
        ("port_arp_identity", [{"concat": ["nsvdddddddddddd", "02:4e:0a:00:00:02", "02:4e:0a:00:00:02",
                                           "10.31.0.2"]}]),
    ]
    for verb, commands in (("add", render.render_add_endpoint(OWNER, endpoint(APP, "d"), APP)),
                           ("delete", render.render_remove_endpoints(OWNER, [(endpoint(APP, "d"), APP)]))):
        assert commands == [{verb: {"element": address}}] + [
            {verb: {"element": {"family": "bridge", "table": OWNER.table, "name": name, "elem": elem}}}
            for name, elem in identity]


def test_rendering_touches_only_nsnets_tables():
    commands = (render.render_add_network(OWNER, QUIET) + render.render_remove_network(OWNER, QUIET)
                + render.render_add_endpoint(OWNER, endpoint(QUIET, "d"), QUIET)
                + render.render_remove_endpoints(OWNER, [(endpoint(QUIET, "d"), QUIET)])
                + render.render_remove_table(OWNER))
    tables = set()
    for command in commands:
        ((_, body),) = command.items()
        ((kind, obj),) = body.items()
        tables.add((obj["family"], obj["name"] if kind == "table" else obj["table"]))
    assert tables == {("inet", OWNER.table), ("bridge", OWNER.table)}


def test_remove_table_removes_both_families():
    assert render.render_remove_table(OWNER) == [
        {"delete": {"table": {"family": "inet", "name": OWNER.table}}},
        {"delete": {"table": {"family": "bridge", "name": OWNER.table}}},
    ]


def test_chains_have_numeric_priorities():
    chains = [c["add"]["chain"] for c in render.render_skeleton(OWNER) if "chain" in c.get("add", {})]
    assert [(c["family"], c["name"], c.get("hook"), c.get("prio")) for c in chains] == [
        ("inet", "forward", "forward", 0), ("inet", "to_network", None, None),
        ("inet", "internal_input", None, None), ("inet", "input", "input", 0),
        ("inet", "prerouting_guard", "prerouting", -300), ("inet", "published_ports", None, None),
        ("inet", "published_ports6", None, None), ("inet", "service_reject", None, None),
        ("inet", "service_picks", "prerouting", -99), ("inet", "service_picks_output", "output", -99),
        ("inet", "service_replies", "postrouting", 101), ("inet", "service_replies_input", "input", 101),
        ("inet", "prerouting", "prerouting", -100), ("inet", "output", "output", -100),
        ("inet", "postrouting", "postrouting", 100),
        ("bridge", "prerouting", "prerouting", -200),
    ]


def inet_element(verb: str, name: str, elem: list) -> dict:
    return {verb: {"element": {"family": "inet", "table": OWNER.table, "name": name, "elem": elem}}}


def test_published_ports_are_map_elements_after_the_identity():
    commands = render.render_add_endpoint(OWNER, endpoint(APP, "d", PORTS), APP)
    assert commands[3:] == [
        inet_element("add", "published_any_ip", [[{"concat": ["tcp", 8080]}, "10.31.0.2"],
                                                 [{"concat": ["tcp", 8081]}, "10.31.0.2"],
                                                 [{"concat": ["udp", 5353]}, "10.31.0.2"]]),
        inet_element("add", "published_any_port", [[{"concat": ["tcp", 8080]}, 80], [{"concat": ["tcp", 8081]}, 80],
                                                   [{"concat": ["udp", 5353]}, 53]]),
        inet_element("add", "published_targets", [{"concat": ["10.31.0.2", "tcp", 80]},
                                                  {"concat": ["10.31.0.2", "tcp", 443]},
                                                  {"concat": ["10.31.0.2", "udp", 53]}]),
        inet_element("add", "published_addr_ip", [[{"concat": ["127.0.0.1", "tcp", 8443]}, "10.31.0.2"]]),
        inet_element("add", "published_addr_port", [[{"concat": ["127.0.0.1", "tcp", 8443]}, 443]]),
    ]


def test_published_map_elements_are_deleted_by_key_alone():
    commands = render.render_remove_endpoints(OWNER, [(endpoint(APP, "d", PORTS), APP)])
    assert commands[3:] == [
        inet_element("delete", "published_any_ip", [{"concat": ["tcp", 8080]}, {"concat": ["tcp", 8081]},
                                                    {"concat": ["udp", 5353]}]),
        inet_element("delete", "published_any_port", [{"concat": ["tcp", 8080]}, {"concat": ["tcp", 8081]},
                                                      {"concat": ["udp", 5353]}]),
        inet_element("delete", "published_targets", [{"concat": ["10.31.0.2", "tcp", 80]},
                                                     {"concat": ["10.31.0.2", "tcp", 443]},
                                                     {"concat": ["10.31.0.2", "udp", 53]}]),
        inet_element("delete", "published_addr_ip", [{"concat": ["127.0.0.1", "tcp", 8443]}]),
        inet_element("delete", "published_addr_port", [{"concat": ["127.0.0.1", "tcp", 8443]}]),
    ]


def test_remove_endpoints_deletes_exactly_what_add_endpoint_added():
    pairs = [(endpoint(APP, "d", PORTS), APP), (endpoint(QUIET, "e", (PortMapping(LOOPBACK, 9443, 443),)), QUIET),
             (replace(endpoint(APP, "f"), addresses=(IPv4Interface("10.31.0.3/24"),)), APP),
             (dual_endpoint("g", tuple(replace(p, host_port=p.host_port + 1000) for p in DUAL_PORTS)), DUAL)]
    added = [c["add"]["element"] for e, n in pairs for c in render.render_add_endpoint(OWNER, e, n)
             if "element" in c.get("add", {})]
    deleted = [c["delete"]["element"] for c in render.render_remove_endpoints(OWNER, pairs)
               if "element" in c["delete"]]
    maps = {names.in_family(m, v) for v in (4, 6) for m in (names.PUBLISHED_ANY_IP, names.PUBLISHED_ANY_PORT,
                                                            names.PUBLISHED_ADDR_IP, names.PUBLISHED_ADDR_PORT)}
    by_key = [{**body, "elem": [key for key, _ in body["elem"]]} if body["name"] in maps else body for body in added]
    assert by_key == deleted
    with_elements = [render.render_add_network(OWNER, APP), render.render_add_network(OWNER, QUIET),
                     render.render_add_network(OWNER, DUAL)]
    assert nft_state([*with_elements, [c for e, n in pairs for c in render.render_add_endpoint(OWNER, e, n)],
                      render.render_remove_endpoints(OWNER, pairs)]) == nft_state(with_elements)


def test_within_network_is_a_drop_on_a_no_icc_network_and_an_accept_otherwise():
    def within(network: Network) -> list:
        return [c["add"]["element"]["elem"] for c in render.render_add_network(OWNER, network)
                if c.get("add", {}).get("element", {}).get("name") == names.WITHIN_NETWORK]

    assert within(QUIET) == [[[{"concat": [QUIET.bridge, QUIET.bridge]}, {"drop": None}]]]
    assert within(APP) == [[[{"concat": [APP.bridge, APP.bridge]}, {"accept": None}]]]
    within_quiet = {"family": "inet", "table": OWNER.table, "name": names.WITHIN_NETWORK,
                    "elem": [{"concat": [QUIET.bridge, QUIET.bridge]}]}
    assert {"delete": {"element": within_quiet}} in render.render_remove_network(OWNER, QUIET)


def test_a_regular_network_is_entered_through_to_network_and_left_by_an_accept():
    elements = {c["add"]["element"]["name"]: c["add"]["element"]["elem"] for c in render.render_add_network(OWNER, APP)
                if "element" in c.get("add", {})}
    assert elements[names.TO_BRIDGE] == [[APP.bridge, {"jump": {"target": names.TO_NETWORK}}]]
    assert elements[names.FROM_BRIDGE] == [[APP.bridge, {"accept": None}]]


def rules(owner: Owner, family: str, chain: str) -> list[dict]:
    found = [c["add"]["rule"] for c in render.render_skeleton(owner) if "rule" in c.get("add", {})]
    return [rule for rule in found if (rule["family"], rule["chain"]) == (family, chain)]


def meta(key: str) -> dict:
    return {"meta": {"key": key}}


def payload(protocol: str, field: str) -> dict:
    return {"payload": {"protocol": protocol, "field": field}}


def test_a_port_passes_only_its_own_ipv4_and_arp_and_drops_every_other_frame_of_the_ledgers_ports():
    """The Ethernet source counts in both accepts (the bridge learns from it), the type is the
    frame's own (ether type sees a VLAN tag, meta protocol would not), and the drop is by the
    ledger's interface group, so it covers IPv6 and any other ethertype, whatever disable_ipv6
    says and whatever the port is named."""
    ipv4, arp, *ipv6, drop = rules(OWNER, "bridge", "prerouting")
    assert ipv4["expr"] == [
        {"match": {"op": "==", "left": payload("ether", "type"), "right": "ip"}},
        {"match": {"op": "==", "left": {"concat": [meta("iifname"), payload("ether", "saddr"), payload("ip", "saddr")]},
                   "right": "@port_identity"}},
        {"accept": None},
    ]
    assert arp["expr"] == [
        {"match": {"op": "==", "left": payload("ether", "type"), "right": "arp"}},
        {"match": {"op": "==", "left": {"concat": [meta("iifname"), payload("ether", "saddr"),
                                                   payload("arp", "saddr ether"), payload("arp", "saddr ip")]},
                   "right": "@port_arp_identity"}},
        {"accept": None},
    ]
    assert drop["expr"] == [{"match": {"op": "==", "left": meta("iifgroup"), "right": OWNER.group}}, {"drop": None}]
    assert rules(DEFAULT, "bridge", "prerouting")[-1]["expr"][0]["match"]["right"] == 0x4E000001


def test_a_port_passes_ipv6_only_from_its_own_addresses_and_never_as_a_router_or_dhcp_server():
    _, _, ra, dhcp_server, dhcp_client, mld, nd, ipv6, _ = rules(OWNER, "bridge", "prerouting")
    group = {"match": {"op": "==", "left": meta("iifgroup"), "right": OWNER.group}}
    ip6 = {"match": {"op": "==", "left": payload("ether", "type"), "right": "ip6"}}
    assert ra["expr"] == [group, ip6, {"match": {"op": "==", "left": payload("icmpv6", "type"),
                                                 "right": {"set": ["nd-router-advert", "nd-redirect"]}}}, {"drop": None}]
    assert dhcp_server["expr"] == [group, ip6, {"match": {"op": "==", "left": payload("udp", "sport"), "right": 547}},
                                   {"drop": None}]
    assert dhcp_client["expr"] == [group, ip6, {"match": {"op": "==", "left": payload("udp", "dport"), "right": 546}},
                                   {"drop": None}]
    assert mld["expr"] == [group, ip6, {"match": {"op": "==", "left": payload("icmpv6", "type"), "right": {"set": [
        "mld-listener-query", "mld-listener-report", "mld-listener-done", "mld2-listener-report"]}}}, {"drop": None}]
    target = {"payload": {"base": "th", "offset": 64, "len": 128}}
    assert nd["expr"] == [group, ip6,
                          {"match": {"op": "==", "left": payload("icmpv6", "type"), "right": "nd-neighbor-advert"}},
                          {"match": {"op": "!=", "left": {"concat": [meta("iifname"), target]}, "right": "@nd_claims"}},
                          {"drop": None}]
    assert ipv6["expr"] == [ip6, {"match": {"op": "==", "left": {"concat": [
        meta("iifname"), payload("ether", "saddr"), payload("ip6", "saddr")]}, "right": "@port_identity6"}},
        {"accept": None}]


def test_an_ipv6_port_may_advertise_its_own_address_and_link_local_only():
    commands = render.render_add_endpoint(OWNER, dual_endpoint("f"), DUAL)
    claims = [c["add"]["element"]["elem"] for c in commands
              if c.get("add", {}).get("element", {}).get("name") == "nd_claims"]
    assert claims == [[{"concat": ["nsvffffffffffff", "0xfd000034000000000000000000000002"]},
                       {"concat": ["nsvffffffffffff", "0xfe80000000000000004e0afffe220002"]}]]
    assert not [c for c in commands if "rule" in c.get("add", {}) or "chain" in c.get("add", {})]
    assert render.nd_target("64:ff9b::1") == "0x64ff9b000000000000000000000001"  # as nft lists it back
    assert render.nd_target("::1") == 1
    assert str(link_local("02:4e:0a:22:00:02")) == "fe80::4e:aff:fe22:2"
    identity = [c["add"]["element"]["elem"] for c in commands
                if c.get("add", {}).get("element", {}).get("name") == "port_identity6"]
    assert identity == [[{"concat": ["nsvffffffffffff", "02:4e:0a:22:00:02", "fd00:34::2"]},
                         {"concat": ["nsvffffffffffff", "02:4e:0a:22:00:02", "fe80::4e:aff:fe22:2"]}]]


def test_a_routed_network_is_not_masqueraded_in_ipv6_and_still_in_ipv4():
    names_of = [c["add"]["element"]["name"] for c in render.render_network_elements(OWNER, ROUTED)]
    assert names.MASQ_SUBNETS in names_of and "masq_subnets6" not in names_of
    assert "masq_subnets6" in [c["add"]["element"]["name"] for c in render.render_network_elements(OWNER, DUAL)]


def test_an_ipv4_only_endpoint_gets_no_ipv6_element():
    commands = render.render_add_endpoint(OWNER, endpoint(APP, "d", PORTS), APP)
    assert [c for c in commands if c["add"].get("element", {}).get("name", "").endswith("6")
            or "chain" in c["add"]] == []


def test_an_internal_networks_sandboxes_reach_nothing_on_the_host_but_replies():
    chains = {c["add"]["chain"]["name"]: c["add"]["chain"] for c in render.render_skeleton(OWNER)
              if "chain" in c.get("add", {}) and c["add"]["chain"]["family"] == "inet"}
    assert chains["input"] == {"family": "inet", "table": OWNER.table, "name": "input", "type": "filter",
                               "hook": "input", "prio": 0, "policy": "accept"}
    assert [r["expr"] for r in rules(OWNER, "inet", "input")] == [[
        {"match": {"op": "==", "left": meta("iifname"), "right": "@internal_bridges"}},
        {"jump": {"target": "internal_input"}},
    ], [  # and VXLAN only from overlay peers (nsnet.cluster)
        {"match": {"op": "==", "left": payload("udp", "dport"), "right": "@overlay_ports"}},
        {"match": {"op": "!=", "left": {"concat": [payload("ip", "saddr"), payload("udp", "dport")]},
                   "right": "@overlay_vteps"}},
        {"drop": None},
    ]]
    assert [r["expr"] for r in rules(OWNER, "inet", "internal_input")] == [
        [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": {"set": ["established", "related"]}}},
         {"accept": None}],
        # Neighbour discovery is untracked: without it the host could not reach in either.
        [{"match": {"op": "==", "left": payload("icmpv6", "type"),
                    "right": {"set": ["nd-neighbor-solicit", "nd-neighbor-advert"]}}}, {"accept": None}],
        # DNS to the resolver on the gateway of the bridge it came in on, and nothing else.
        *([{"match": {"op": "==", "left": meta("l4proto"), "right": {"set": ["tcp", "udp"]}}},
           {"match": {"op": "==", "left": {"concat": [meta("iifname"), payload(ip, "daddr"), payload("th", "dport")]},
                      "right": f"@{listeners}"}},
           {"accept": None}] for ip, listeners in (("ip", "dns_listeners"), ("ip6", "dns_listeners6"))),
        [{"drop": None}],
    ]


def test_a_gateway_whose_port_53_is_taken_gets_its_questions_redirected_to_the_resolvers_port():
    moved = replace(PRIVATE, dns_port=10053)
    elements = {c["add"]["element"]["name"]: c["add"]["element"]["elem"]
                for c in render.render_add_network(OWNER, moved)[len(render.render_skeleton(OWNER)):]}
    assert elements[names.DNS_PORTS] == [[{"concat": [PRIVATE.bridge, "10.32.0.1"]}, 10053]]
    assert elements[names.DNS_LISTENERS] == [{"concat": [PRIVATE.bridge, "10.32.0.1", 10053]}]
    assert names.DNS_PORTS not in {c["add"]["element"]["name"]
                                   for c in render.render_add_network(OWNER, PRIVATE)[len(render.render_skeleton(OWNER)):]}
    deleted = {c["delete"]["element"]["name"]: c["delete"]["element"]["elem"]
               for c in render.render_remove_network(OWNER, moved)}
    assert deleted[names.DNS_PORTS] == [{"concat": [PRIVATE.bridge, "10.32.0.1"]}]
    # Before the published ports' jump: a port 53 published on every address must not take it.
    redirect, redirect6, *_services, published, published6 = rules(OWNER, "inet", "prerouting")
    published = [published, published6]
    assert redirect["expr"] == [
        {"match": {"op": "==", "left": meta("nfproto"), "right": "ipv4"}},
        {"match": {"op": "==", "left": meta("l4proto"), "right": {"set": ["tcp", "udp"]}}},
        {"match": {"op": "==", "left": payload("th", "dport"), "right": 53}},
        {"redirect": {"port": {"map": {"key": {"concat": [meta("iifname"), payload("ip", "daddr")]},
                                       "data": "@dns_ports"}}}},
    ]
    assert redirect6["expr"][-1]["redirect"]["port"]["map"]["data"] == "@dns_ports6"
    assert [r["expr"][-1] for r in published] == [{"jump": {"target": "published_ports"}},
                                                  {"jump": {"target": "published_ports6"}}]


def test_prerouting_never_translates_loopback_destinations_and_output_does():
    """A packet to 127.0.0.0/8 arriving from outside is a neighbour routing loopback to the host;
    the host's own connections to 127.0.0.1 go through output."""
    not_loopback = {"match": {"op": "!=", "left": payload("ip", "daddr"),
                              "right": {"prefix": {"addr": "127.0.0.0", "len": 8}}}}
    *_, prerouting, prerouting6 = rules(OWNER, "inet", "prerouting")
    *_, output, output6 = rules(OWNER, "inet", "output")
    assert prerouting["expr"][1] == not_loopback
    assert output["expr"] == [e for e in prerouting["expr"] if e != not_loopback]
    assert output["expr"][-1] == {"jump": {"target": "published_ports"}}
    # IPv6: the kernel drops an arriving ::1 before any hook; the host's own [::1] is never translated
    # (it cannot leave lo), so that its connection is refused rather than lost.
    not_loopback6 = {"match": {"op": "!=", "left": payload("ip6", "daddr"), "right": "::1"}}
    assert not_loopback6 not in prerouting6["expr"] and output6["expr"][1] == not_loopback6
    assert output6["expr"][-1] == {"jump": {"target": "published_ports6"}}
