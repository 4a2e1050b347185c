"""macvlan networks (nsnet.drivers) on the fake kernel: validation, the plans the driver seam
gives, rollback, check/gc; ipvlan refused."""

from ipaddress import ip_address, ip_interface

import pytest

from nsnet import faults
from nsnet.engine import Engine
from nsnet.errors import Conflict, InvalidInput, KernelError
from nsnet.model import Network, Subnet
from nsnet.plan.drivers import driver
from nsnet.plan.ops import AddAddress, CreateMacvlan, DeleteLink, EnableIPv6, SetDefaultRoute, SetLinkUp

PARENT = "lan0"


@pytest.fixture
def parent(kernel):
    kernel.links[(None, PARENT)] = {"kind": "veth", "mtu": 1500, "up": True, "mac": "02:00:00:00:99:01"}
    kernel.links[(None, "lo")] = {"kind": "loopback", "mtu": 65536, "up": True, "mac": "00:00:00:00:00:00"}
    return PARENT


@pytest.fixture
def snapshot(engine, kernel, kernel_state):
    def take():
        return kernel_state(kernel), engine.networks(), engine.sandboxes()

    return take


def test_a_macvlan_network_makes_nothing_in_the_kernel_and_says_what_it_is(engine: Engine, kernel, parent,
                                                                          snapshot) -> None:
    before = snapshot()[0]
    lan = engine.create_network("lan", driver="macvlan", parent=parent, subnet=["192.168.77.0/24", "fd77::/64"],
                                gateway=["192.168.77.1"])
    assert snapshot()[0] == before  # no bridge, no rules, no sysctl: the parent untouched
    assert (lan.driver, lan.parent, lan.driver_mode, lan.bridge, lan.dns, lan.internal) == (
        "macvlan", PARENT, "bridge", "", False, False)
    assert [(str(s.subnet), s.gateway) for s in lan.subnets] == [("192.168.77.0/24", ip_address("192.168.77.1")),
                                                                  ("fd77::/64", None)]
    shown = engine.network_details("lan")
    assert (shown["Driver"], shown["Parent"], shown["MacvlanMode"], shown["Gateway"]) == (
        "macvlan", PARENT, "bridge", "192.168.77.1")
    assert shown["IPAM"]["Config"][1]["Gateway"] is None
    assert engine.network("lan") == lan and engine.check() == []
    engine.remove_network("lan")
    assert snapshot()[0] == before


def test_without_a_gateway_a_macvlan_network_is_internal_no_default_route(engine: Engine, kernel, parent) -> None:
    lan = engine.create_network("lan", driver="macvlan", parent=parent, subnet="192.168.77.0/24", mode="private")
    assert (lan.internal, lan.driver_mode, lan.subnets[0].gateway) == (True, "private", None)
    box = engine.create_sandbox("a", networks=["lan"])
    (endpoint,) = box.endpoints
    assert (endpoint.gateways, str(endpoint.address)) == ((), "192.168.77.1/24")  # the first address is a sandbox's
    assert kernel.links[("a", "eth0")]["mode"] == "private" and not [k for k in kernel.routes if k[0] == "a"]
    assert box.to_dict()["Networks"]["lan"]["Gateway"] == ""
    assert engine.check() == []


def test_the_macvlan_driver_plans_a_child_born_in_the_sandbox(engine: Engine, kernel, parent) -> None:
    lan = engine.create_network("lan", driver="macvlan", parent=parent, subnet=["192.168.77.0/24", "fd77::/64"],
                                gateway=["192.168.77.254", "fd77::fe"], mode="vepa")
    box = engine.create_sandbox("a", networks=["lan"])
    (e,) = box.endpoints
    assert driver(lan).attach(e, lan, engine.owner) == [
        CreateMacvlan("eth0", PARENT, "a", "vepa", 1500, e.mac, engine.owner.group), EnableIPv6("eth0", "a"),
        SetLinkUp("eth0", "a"), AddAddress("eth0", ip_interface("192.168.77.1/24"), "a"),
        AddAddress("eth0", ip_interface("fd77::1/64"), "a"),
        SetDefaultRoute("a", ip_address("192.168.77.254"), "eth0"), SetDefaultRoute("a", ip_address("fd77::fe"), "eth0")]
    assert driver(lan).detach(e, lan) == [DeleteLink("eth0", "a")]
    assert kernel.links[("a", "eth0")] == {"kind": "macvlan", "parent": PARENT, "mode": "vepa", "mac": e.mac,
                                           "mtu": 1500, "up": True, "ipv6": True}
    assert kernel.routes[("a", 4)] == (ip_address("192.168.77.254"), "eth0")
    assert not any(c[0] == "nft" for c in kernel.calls)  # no rule of nsnet's for it
    assert engine.check() == []


def test_a_sandbox_on_a_bridge_and_a_macvlan_network_gets_rules_for_the_bridge_only(engine: Engine, kernel,
                                                                                    parent) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("lan", driver="macvlan", parent=parent, subnet="192.168.77.0/24", gateway="192.168.77.1")
    engine.create_sandbox("a", networks=["lan", "app"])
    assert [e.default_route for e in engine.sandbox("a").endpoints] == [True, False]
    assert engine.check() == []
    engine.disconnect("lan", "a")
    assert ("a", "eth0") not in kernel.links and engine.check() == []
    engine.connect("lan", "a")
    assert kernel.links[("a", "eth0")]["kind"] == "macvlan" and engine.check() == []


@pytest.mark.parametrize("kwargs, field, reason", [
    ({"driver": "ipvlan"}, "--driver", "this kernel has no ipvlan (creation of ipvlan probe-child: Operation not"
                                       " supported); use --driver macvlan"),
    ({"driver": "overlay"}, "--driver", "needs a cluster store: set NSNET_CLUSTER"),
    ({"driver": "vxlan"}, "--driver", "must be one of bridge, macvlan"),
    ({"driver": "macvlan"}, "--parent", "is needed by --driver macvlan"),
    ({"driver": "macvlan", "parent": "nope0"}, "--parent", "no such interface in this namespace"),
    ({"driver": "macvlan", "parent": "a/b"}, "--parent", "may not be"),
    ({"driver": "macvlan", "parent": "lo"}, "--parent", "is not an Ethernet interface (it has no MAC address)"),
    ({"driver": "macvlan", "parent": PARENT, "mode": "l2"}, "--mode", "must be one of private, vepa, bridge"),
    ({"driver": "macvlan", "parent": PARENT, "mode": "passthru"}, "--mode", "nsnet never changes a parent"),
    ({"driver": "macvlan", "parent": PARENT, "icc": False}, "--no-icc", "has no meaning on a macvlan network"),
    ({"driver": "macvlan", "parent": PARENT, "dns_servers": ["198.51.100.53"]}, "--dns", "no resolver"),
    ({"parent": PARENT}, "--parent", "is for --driver macvlan"),
])
def test_bad_driver_options_are_refused_in_one_line_and_change_nothing(engine: Engine, parent, snapshot, kwargs,
                                                                       field, reason) -> None:
    before = snapshot()
    with pytest.raises(InvalidInput) as caught:
        engine.create_network("lan", subnet="192.168.77.0/24", **kwargs)
    assert caught.value.field == field and reason in str(caught.value) and "\n" not in str(caught.value)
    assert snapshot() == before


def test_ipvlan_where_the_kernel_has_it_is_still_refused(engine: Engine, kernel) -> None:
    kernel.link_kinds.add("ipvlan")
    with pytest.raises(InvalidInput, match="nsnet makes no ipvlan networks yet"):
        engine.create_network("lan", driver="ipvlan", parent=PARENT)


def test_what_a_macvlan_network_cannot_do_is_refused(engine: Engine, parent, snapshot) -> None:
    engine.create_network("lan", driver="macvlan", parent=parent, subnet="192.168.77.0/24", gateway="192.168.77.1")
    engine.create_sandbox("a", networks=["lan"])
    before = snapshot()
    with pytest.raises(Conflict, match="is network 'lan''s parent already"):
        engine.create_network("lan2", driver="macvlan", parent=parent, subnet="192.168.78.0/24")
    with pytest.raises(Conflict, match="is a macvlan network: nothing of nsnet's publishes its ports"):
        engine.create_sandbox("b", networks=["lan"], publish=["8080:80"])
    with pytest.raises(InvalidInput, match="nsnet's firewall, which serves VIPs, does not see its traffic"):
        engine.create_service("s", network="lan", ports=["80"], backends=["a"])
    assert snapshot() == before


def test_a_failed_child_is_rolled_back_and_nothing_is_left(engine: Engine, kernel, parent, snapshot,
                                                           monkeypatch) -> None:
    engine.create_network("lan", driver="macvlan", parent=parent, subnet="192.168.77.0/24", gateway="192.168.77.1")
    before = snapshot()

    def refuse(*args):
        raise KernelError("creation of macvlan eth0", 16)

    monkeypatch.setattr(kernel, "add_address", refuse)  # after the child exists
    with pytest.raises(KernelError):
        engine.create_sandbox("a", networks=["lan"])
    assert snapshot() == before


def test_check_and_gc_repair_a_lost_child_and_remove_one_left_by_a_kill(engine: Engine, kernel, parent,
                                                                        monkeypatch) -> None:
    engine.create_network("lan", driver="macvlan", parent=parent, subnet="192.168.77.0/24", gateway="192.168.77.1")
    engine.create_sandbox("a", networks=["lan"])
    kernel.delete_link("eth0", "a")  # behind nsnet's back
    assert [(d.kind, d.detail) for d in engine.check()] == [
        ("missing", "macvlan eth0 on lan0 to lan is gone")]
    assert "repaired a's link to lan" in engine.gc()
    assert engine.check() == [] and kernel.links[("a", "eth0")]["kind"] == "macvlan"
    engine.create_sandbox("b", networks=["none"])
    monkeypatch.setattr(faults, "point", lambda where: (_ for _ in ()).throw(KeyboardInterrupt) if where == "applied"
                        else None)
    with pytest.raises(KeyboardInterrupt):
        engine.connect("lan", "b")
    monkeypatch.undo()
    assert kernel.links[("b", "eth0")]["kind"] == "macvlan"
    assert any(d.kind == "half-done" for d in engine.check())
    assert "finished disconnecting b from lan" in engine.gc()
    assert ("b", "eth0") not in kernel.links and engine.check() == []
    assert kernel.links[(None, PARENT)] == {"kind": "veth", "mtu": 1500, "up": True, "mac": "02:00:00:00:99:01"}


def test_a_lost_parent_is_reported_and_never_made_by_gc(engine: Engine, kernel, parent) -> None:
    engine.create_network("lan", driver="macvlan", parent=parent, subnet="192.168.77.0/24")
    del kernel.links[(None, PARENT)]
    assert [(d.subject, d.detail) for d in engine.check()] == [
        ("network lan", "its parent interface lan0 is gone (nsnet never makes or changes a parent: make it again)")]
    engine.gc()
    assert (None, PARENT) not in kernel.links


def test_the_bridge_driver_plans_what_it_always_did(engine: Engine) -> None:
    from nsnet.plan.network import plan_create_network

    net = Network(id="1" * 64, name="n", bridge="nsbr-1", subnets=(Subnet(*map(__import__("ipaddress").ip_network,
                                                                              ["10.9.0.0/24"]), ip_address("10.9.0.1")),))
    assert driver(net).create_network(net, 0, engine.owner) == plan_create_network(net, 0, engine.owner)
