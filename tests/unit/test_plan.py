from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from nsnet.firewall import render
from nsnet.model import Subnet, Endpoint, Network, Owner
from nsnet.plan.network import plan_create_network, plan_remove_network
from nsnet.plan.ops import (
    AddAddress,
    AddFdbEntry,
    ApplyFirewall,
    CreateBridge,
    CreateNetns,
    CreateVeth,
    DeleteAddress,
    DeleteDefaultRoute,
    DeleteLink,
    DeleteNetns,
    DisableIPv6,
    EnsureSysctl,
    KillProcesses,
    RemoveEtcFiles,
    RemoveFirewallElements,
    SetDefaultRoute,
    SetLinkUp,
    SetPortFlags,
    WriteEtcFiles,
)
from nsnet.plan.sandbox import hosts_file, plan_connect, plan_create_sandbox, plan_disconnect, plan_remove_sandbox
from nsnet.record import replace

APP = Network(
    id="a" * 64, name="app", bridge="nsbr-aaaaaaaaaa", subnets=(Subnet(IPv4Network("10.31.0.0/24"), IPv4Address("10.31.0.1")),), mtu=1400,
)
DB = Network(
    id="b" * 64, name="db", bridge="nsbr-bbbbbbbbbb", subnets=(Subnet(IPv4Network("10.32.0.0/16"), IPv4Address("10.32.0.1")),),
)
QUIET = Network(
    id="e" * 64, name="quiet", bridge="nsbr-eeeeeeeeee", subnets=(Subnet(IPv4Network("10.33.0.0/24"), IPv4Address("10.33.0.1")),), icc=False,
)
WEB_APP = Endpoint(
    id="c" * 64, sandbox="web", network="app", ifname="eth0", host_ifname="nsvcccccccccccc",
    mac="02:4e:0a:1f:00:02", addresses=(IPv4Interface("10.31.0.2/24"),), gateways=(IPv4Address("10.31.0.1"),),
    default_route=True,
)
WEB_DB = Endpoint(
    id="d" * 64, sandbox="web", network="db", ifname="eth1", host_ifname="nsvdddddddddddd",
    mac="02:4e:0a:20:00:07", addresses=(IPv4Interface("10.32.0.7/16"),), gateways=(IPv4Address("10.32.0.1"),),
)
WEB_QUIET = Endpoint(
    id="f" * 64, sandbox="web", network="quiet", ifname="eth2", host_ifname="nsvffffffffffff",
    mac="02:4e:0a:21:00:02", addresses=(IPv4Interface("10.33.0.2/24"),), gateways=(IPv4Address("10.33.0.1"),),
)
# Not the default owner: every plan must name the one it is given.
OWNER = Owner(table="nsnet-4e123456", group=0x4E123456)
GROUP = OWNER.group
HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.31.0.2\tweb\n10.32.0.7\tweb\n"


def test_plan_create_first_network():
    assert plan_create_network(APP, others=0, owner=OWNER) == [
        EnsureSysctl("net.ipv4.ip_forward", "1"),
        CreateBridge("nsbr-aaaaaaaaaa", 1400, "02:4e:0a:1f:00:01", GROUP),
        EnsureSysctl("net.ipv4.conf.nsbr-aaaaaaaaaa.route_localnet", "1"),
        EnsureSysctl("net.ipv6.conf.nsbr-aaaaaaaaaa.disable_ipv6", "1"),
        AddAddress("nsbr-aaaaaaaaaa", IPv4Interface("10.31.0.1/24")),
        ApplyFirewall(tuple(render.render_add_network(OWNER, APP)), tuple(render.render_remove_table(OWNER)),
                      "rules of network app"),
    ]


def test_plan_create_later_network_reverses_only_its_elements():
    firewall = plan_create_network(DB, others=2, owner=OWNER)[-1]
    assert firewall == ApplyFirewall(tuple(render.render_add_network(OWNER, DB)),
                                     tuple(render.render_remove_network(OWNER, DB)),
                                     "rules of network db")


def test_first_network_firewall_undo_removes_the_table():
    assert plan_create_network(APP, others=0, owner=OWNER)[-1].undo() == ApplyFirewall(
        tuple(render.render_remove_table(OWNER)), description="undo rules of network app")


def test_later_network_firewall_undo_removes_elements_only():
    assert plan_create_network(APP, others=1, owner=OWNER)[-1].undo() == ApplyFirewall(
        tuple(render.render_remove_network(OWNER, APP)), description="undo rules of network app")


def test_plan_create_network_undos():
    assert [op.undo() for op in plan_create_network(APP, others=1, owner=OWNER)[:5]] == [
        None,
        DeleteLink("nsbr-aaaaaaaaaa"),
        None,
        None,
        DeleteAddress("nsbr-aaaaaaaaaa", IPv4Interface("10.31.0.1/24")),
    ]


def test_plan_remove_last_network_deletes_the_table_then_the_bridge():
    assert plan_remove_network(APP, others=0, owner=OWNER) == [
        ApplyFirewall(tuple(render.render_remove_table(OWNER)), description="removing nsnet's tables"),
        DeleteLink("nsbr-aaaaaaaaaa"),
    ]


def test_plan_remove_network_with_others_deletes_its_elements_then_the_bridge():
    assert plan_remove_network(APP, others=1, owner=OWNER) == [
        RemoveFirewallElements(tuple(render.render_remove_network(OWNER, APP)), "rules of network app"),
        DeleteLink("nsbr-aaaaaaaaaa"),
    ]


def test_removal_ops_have_no_undo():
    removals = (plan_remove_network(APP, 0, owner=OWNER)
                + plan_remove_sandbox("web", True, [(WEB_QUIET, QUIET)], owner=OWNER)
                + plan_disconnect(WEB_QUIET, QUIET, None, owner=OWNER))
    assert [op.undo() for op in removals] == [None] * len(removals)


# The pair in one kernel change, then, while the sandbox end is still down, the port's flags (not
# isolated: icc), the sandbox's MAC pinned on it, and IPv6 off on it; then the sandbox end up.
ATTACH_WEB_APP = [
    CreateVeth("nsvcccccccccccc", "nsbr-aaaaaaaaaa", "web", "eth0", 1400, "02:4e:0a:1f:00:02", GROUP),
    SetPortFlags("nsvcccccccccccc", isolated=False),
    AddFdbEntry("nsvcccccccccccc", "02:4e:0a:1f:00:02"),
    DisableIPv6("nsvcccccccccccc"),
    SetLinkUp("eth0", "web"),
    AddAddress("eth0", IPv4Interface("10.31.0.2/24"), "web"),
    SetDefaultRoute("web", IPv4Address("10.31.0.1"), "eth0"),
]
ATTACH_WEB_DB = [
    CreateVeth("nsvdddddddddddd", "nsbr-bbbbbbbbbb", "web", "eth1", 1500, "02:4e:0a:20:00:07", GROUP),
    SetPortFlags("nsvdddddddddddd", isolated=False),
    AddFdbEntry("nsvdddddddddddd", "02:4e:0a:20:00:07"),
    DisableIPv6("nsvdddddddddddd"),
    SetLinkUp("eth1", "web"),
    AddAddress("eth1", IPv4Interface("10.32.0.7/16"), "web"),
]


def rules_of(*attachments: tuple[Endpoint, Network]) -> ApplyFirewall:
    """The one transaction of every endpoint's elements, made before any of its veths."""
    added = tuple(c for endpoint, network in attachments for c in render.render_add_endpoint(OWNER, endpoint, network))
    ports = ", ".join(endpoint.host_ifname for endpoint, _ in attachments)
    return ApplyFirewall(added, tuple(render.render_remove_endpoints(OWNER, list(attachments))), f"rules of {ports}")


def test_plan_connect_default_route_endpoint():
    assert plan_connect(WEB_APP, APP, owner=OWNER) == [
        rules_of((WEB_APP, APP)),
        *ATTACH_WEB_APP,
    ]


def test_plan_connect_secondary_endpoint_sets_no_route():
    assert plan_connect(WEB_DB, DB, owner=OWNER) == [
        rules_of((WEB_DB, DB)),
        *ATTACH_WEB_DB,
    ]


def test_plan_create_sandbox_with_two_networks():
    assert plan_create_sandbox("web", [(WEB_APP, APP), (WEB_DB, DB)], owner=OWNER) == [
        CreateNetns("web"),
        WriteEtcFiles("web", (("hosts", HOSTS),)),
        rules_of((WEB_APP, APP), (WEB_DB, DB)),
        *ATTACH_WEB_APP,
        *ATTACH_WEB_DB,
    ]


def test_plan_create_sandbox_undos_are_inverses():
    assert [op.undo() for op in plan_create_sandbox("web", [(WEB_APP, APP), (WEB_DB, DB)], owner=OWNER)] == [
        DeleteNetns("web"),
        RemoveEtcFiles("web"),
        ApplyFirewall(tuple(render.render_remove_endpoints(OWNER, [(WEB_APP, APP), (WEB_DB, DB)])),
                      description="undo rules of nsvcccccccccccc, nsvdddddddddddd"),
        # The port's flags, FDB entry, IPv6 and the peer's state go with the pair (CreateVeth's undo).
        DeleteLink("nsvcccccccccccc"), None, None, None, None,
        DeleteAddress("eth0", IPv4Interface("10.31.0.2/24"), "web"),
        DeleteDefaultRoute("web"),
        DeleteLink("nsvdddddddddddd"), None, None, None, None,
        DeleteAddress("eth1", IPv4Interface("10.32.0.7/16"), "web"),
    ]


def test_hosts_file_names_the_sandbox_on_every_address():
    assert hosts_file("web", [WEB_APP, WEB_DB]) == HOSTS
    assert hosts_file("web", []) == "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def test_plan_disconnect_default_route_endpoint_hands_the_route_over():
    assert plan_disconnect(WEB_APP, APP, WEB_DB, owner=OWNER) == [
        DeleteLink("nsvcccccccccccc"),
        RemoveFirewallElements(tuple(render.render_remove_endpoints(OWNER, [(WEB_APP, APP)])),
                               "rules of nsvcccccccccccc"),
        SetDefaultRoute("web", IPv4Address("10.32.0.1"), "eth1"),
    ]


def test_plan_disconnect_last_endpoint_only_deletes_the_link_and_its_rules():
    assert plan_disconnect(WEB_APP, APP, None, owner=OWNER) == [
        DeleteLink("nsvcccccccccccc"),
        RemoveFirewallElements(tuple(render.render_remove_endpoints(OWNER, [(WEB_APP, APP)])),
                               "rules of nsvcccccccccccc"),
    ]


def test_plan_disconnect_secondary_endpoint_leaves_the_route():
    # The caller names a successor only for the endpoint that carried the route (Engine.disconnect).
    assert plan_disconnect(WEB_DB, DB, None, owner=OWNER) == [
        DeleteLink("nsvdddddddddddd"),
        RemoveFirewallElements(tuple(render.render_remove_endpoints(OWNER, [(WEB_DB, DB)])),
                               "rules of nsvdddddddddddd"),
    ]


@pytest.mark.parametrize("force, killed", [(False, []), (True, [KillProcesses("web")])])
def test_plan_remove_sandbox_cuts_its_ports_off_before_unpinning_its_namespace(force, killed):
    rules = RemoveFirewallElements(tuple(render.render_remove_endpoints(OWNER, [(WEB_APP, APP), (WEB_DB, DB)])),
                                   "rules of sandbox web")
    assert plan_remove_sandbox("web", force, [(WEB_APP, APP), (WEB_DB, DB)], owner=OWNER) == [
        *killed, rules, DeleteNetns("web"), RemoveEtcFiles("web")]


def test_plan_remove_sandbox_without_endpoints_removes_no_rules():
    assert plan_remove_sandbox("web", False, [], owner=OWNER) == [DeleteNetns("web"), RemoveEtcFiles("web")]


def endpoint_elements(verb: str, *sets: tuple[str, list]) -> tuple[dict, ...]:
    """The sandbox's address on its bridge (inet), then its port's sets (bridge)."""
    address = {verb: {"element": {"family": "inet", "table": OWNER.table, "name": "sandbox_addresses",
                                  "elem": [{"concat": ["nsbr-eeeeeeeeee", "10.33.0.2"]}]}}}
    return (address, *({verb: {"element": {"family": "bridge", "table": OWNER.table, "name": name, "elem": elem}}}
                       for name, elem in sets))


QUIET_PORT = "nsvffffffffffff"
QUIET_IDENTITY = (
    ("port_identity", [{"concat": [QUIET_PORT, "02:4e:0a:21:00:02", "10.33.0.2"]}]),
    ("port_arp_identity", [{"concat": [QUIET_PORT, "02:4e:0a:21:00:02", "02:4e:0a:21:00:02", "10.33.0.2"]}]),
)


def test_plan_connect_no_icc_endpoint_filters_its_port_before_it_exists():
    ops = plan_connect(WEB_QUIET, QUIET, owner=OWNER)
    assert ops == [
        ApplyFirewall(tuple(render.render_add_endpoint(OWNER, WEB_QUIET, QUIET)),
                      tuple(render.render_remove_endpoints(OWNER, [(WEB_QUIET, QUIET)])), "rules of nsvffffffffffff"),
        CreateVeth("nsvffffffffffff", "nsbr-eeeeeeeeee", "web", "eth2", 1500, "02:4e:0a:21:00:02", GROUP),
        SetPortFlags("nsvffffffffffff", isolated=True),
        AddFdbEntry("nsvffffffffffff", "02:4e:0a:21:00:02"),
        DisableIPv6("nsvffffffffffff"),
        SetLinkUp("eth2", "web"),
        AddAddress("eth2", IPv4Interface("10.33.0.2/24"), "web"),
    ]
    assert ops[0].commands == endpoint_elements("add", *QUIET_IDENTITY)
    assert ops[0].undo() == ApplyFirewall(tuple(render.render_remove_endpoints(OWNER, [(WEB_QUIET, QUIET)])),
                                          description="undo rules of nsvffffffffffff")


def test_plan_disconnect_no_icc_endpoint_removes_its_port_rules():
    assert plan_disconnect(WEB_QUIET, QUIET, None, owner=OWNER) == [
        DeleteLink("nsvffffffffffff"),
        RemoveFirewallElements(endpoint_elements("delete", *QUIET_IDENTITY),
                               "rules of nsvffffffffffff"),
    ]


def test_plan_remove_sandbox_removes_the_elements_of_every_endpoint():
    (rules, *_) = plan_remove_sandbox("web", False, [(WEB_APP, APP), (WEB_QUIET, QUIET)], owner=OWNER)
    assert rules == RemoveFirewallElements(
        tuple(render.render_remove_endpoints(OWNER, [(WEB_APP, APP), (WEB_QUIET, QUIET)])), "rules of sandbox web")


@pytest.mark.parametrize("mtu, ipv6_off", [(68, False), (1279, False), (1280, True), (9000, True)])
def test_ipv6_is_disabled_only_where_the_kernel_gives_an_interface_ipv6(mtu, ipv6_off):
    """Below 1280 the kernel removes IPv6 from an interface, and its disable_ipv6 file with it."""
    network = replace(DB, mtu=mtu)
    ops = plan_connect(WEB_DB, network, owner=OWNER) + plan_create_network(network, others=0, owner=OWNER)
    assert (DisableIPv6("nsvdddddddddddd") in ops) == ipv6_off
    assert (EnsureSysctl("net.ipv6.conf.nsbr-bbbbbbbbbb.disable_ipv6", "1") in ops) == ipv6_off
    assert EnsureSysctl("net.ipv4.conf.nsbr-bbbbbbbbbb.route_localnet", "1") in ops


def test_plans_name_the_owner_they_are_given():
    """Every table a plan's rules touch is the owner's, and every link it makes carries its group."""
    ops = (plan_create_network(APP, others=0, owner=OWNER) + plan_create_sandbox("web", [(WEB_APP, APP)], owner=OWNER)
           + plan_remove_network(APP, others=1, owner=OWNER) + plan_remove_network(APP, others=0, owner=OWNER))
    tables = set()
    for op in ops:
        for command in getattr(op, "commands", ()) + getattr(op, "reverse", ()):
            ((_, body),) = command.items()
            ((kind, obj),) = body.items()
            tables.add((obj["family"], obj["name"] if kind == "table" else obj["table"]))
    assert tables == {("inet", OWNER.table), ("bridge", OWNER.table)}
    assert {op.group for op in ops if isinstance(op, (CreateBridge, CreateVeth))} == {GROUP}
