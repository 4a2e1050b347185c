"""VM guests' taps: what a user may ask (one-line errors naming the field), the plan (port lock,
0xfe MAC, firewall first), and the engine's ledger, rollback, check and gc around them (on a
FakeKernel)."""

from __future__ import annotations

import pytest

from nsnet import taps
from nsnet.engine import Engine
from nsnet.errors import Conflict, InvalidInput, KernelError
from nsnet.model import Tap
from nsnet.naming import tap_mac, tap_name
from nsnet.plan.ops import (AddFdbEntry, ApplyFirewall, AttachToBridge, CreateTap, DisableIPv6, SetGroup, SetLinkUp,
                            SetMac, SetMtu, SetPortFlags)
from nsnet.plan.tap import plan_create_tap, plan_repair_tap
from nsnet.record import replace


def test_owners_and_macs_are_checked() -> None:
    assert (taps.identity("owner", "1000"), taps.identity("owner", None), taps.identity("group", 0)) == (1000, None, 0)
    for value in ("qemu", "-1", "1.5", "", "4294967295"):
        with pytest.raises(InvalidInput) as caught:
            taps.identity("owner", value)
        assert caught.value.field == "owner" and "is not a number" in caught.value.reason
    assert taps.guest_mac("mac", "52-54-00-12-34-56") == "52:54:00:12:34:56"
    for value, reason in (("fe:54:00:12:34:56", "starts with fe"), ("01:00:5e:00:00:01", "multicast"),
                          ("nope", "not a MAC")):
        with pytest.raises(InvalidInput, match=reason):
            taps.guest_mac("mac", value)
    assert tap_name("0123456789abcdef") == "nst0123456789ab" and tap_mac("02:4e:0a:1f:00:02") == "fe:4e:0a:1f:00:02"


def test_the_plan_makes_the_rules_first_and_the_port_as_a_veths(engine: Engine) -> None:
    net = engine.create_network("app", subnet="10.31.0.0/24", mtu=9000, icc=False)
    vm = engine.create_tap("vm1", network="app", uid=1000, gid=100)
    endpoint = vm.endpoints[0]
    plan = plan_create_tap(endpoint, net, Tap(1000, 100), engine.owner)
    name = endpoint.host_ifname
    assert isinstance(plan[0], ApplyFirewall) and plan[1:] == [
        CreateTap(name, 1000, 100), SetGroup(name, engine.owner.group), SetMtu(name, 9000),
        SetMac(name, "fe:4e:0a:1f:00:02"), DisableIPv6(name), AttachToBridge(name, net.bridge),
        SetPortFlags(name, isolated=True), AddFdbEntry(name, "02:4e:0a:1f:00:02"), SetLinkUp(name)]


def test_a_tap_is_made_described_checked_repaired_and_removed(engine: Engine, kernel) -> None:
    engine.create_network("app", subnet=["10.31.0.0/24", "fd00:31::/64"], ipv6=True)
    vm = engine.create_tap("vm1", network="app", uid="1000", mac="52:54:00:00:00:07", publish=["8080:80"],
                           labels=["app=web"], aliases=["guest"])
    endpoint = vm.endpoints[0]
    device = endpoint.host_ifname
    assert (vm.tap, vm.netns, endpoint.mac, [str(a) for a in endpoint.addresses]) == (
        Tap(1000, None), "", "52:54:00:00:00:07", ["10.31.0.2/24", "fd00:31::2/64"])
    link = kernel.links[(None, device)]
    assert (link["owner"], link["mac"], link["master"], link["static_macs"], link["locked"], link["up"]) == (
        (1000, None), "fe:54:00:00:00:07", engine.network("app").bridge, {"52:54:00:00:00:07"}, True, True)
    described = engine.sandbox("vm1").to_dict()
    assert described["NetNS"] == "" and described["Tap"] == {
        "Device": device, "GuestMacAddress": "52:54:00:00:00:07", "TapMacAddress": "fe:54:00:00:00:07",
        "Owner": 1000, "Group": None, "Addresses": ["10.31.0.2/24", "fd00:31::2/64"],
        "Gateways": ["10.31.0.1", "fd00:31::1"],
        "QemuArgs": ["-netdev", f"tap,id=n0,ifname={device},script=no,downscript=no",
                     "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:07"],
        "KernelIP": "ip=10.31.0.2::10.31.0.1:255.255.255.0:vm1:eth0:off"}
    assert engine.check() == []
    engine.create_sandbox("box", networks=["app"])
    for refused in (lambda: engine.exec("vm1", ["true"]), lambda: engine.connect("app", "vm1"),
                    lambda: engine.disconnect("app", "vm1"), lambda: engine.link("vm1", "box"),
                    lambda: engine.add_route("vm1", "10.9.0.0/24", "10.31.0.9")):
        with pytest.raises(Conflict, match="is a VM guest's tap"):
            refused()

    kernel.set_link_up(device)
    link["up"] = False
    assert [str(d) for d in engine.check()] == [f"wrong: sandbox vm1: tap {device} is down (gc repairs it)"]
    kernel.delete_link(device)
    assert [str(d) for d in engine.check()] == [f"missing: sandbox vm1: tap {device} does not exist (gc repairs it)"]
    assert f"made vm1's tap {device} again" in engine.gc() and engine.check() == []
    assert kernel.links[(None, device)]["owner"] == (1000, None)
    engine.remove_sandbox("vm1")
    assert (None, device) not in kernel.links and [s.name for s in engine.sandboxes()] == ["box"]
    assert engine.check() == []


def test_repair_sets_back_only_what_is_wrong(engine: Engine, kernel) -> None:
    net = engine.create_network("app", subnet="10.31.0.0/24")
    endpoint = engine.create_tap("vm1", network="app").endpoints[0]
    observed = kernel.observe({}, engine.owner, []).links[endpoint.host_ifname]
    assert plan_repair_tap(endpoint, net, Tap(), observed, engine.owner) == []
    moved = replace(observed, master=None, static_macs=frozenset(), mtu=1400)
    assert plan_repair_tap(endpoint, net, Tap(), moved, engine.owner) == [
        AttachToBridge(endpoint.host_ifname, net.bridge), SetPortFlags(endpoint.host_ifname, isolated=False),
        AddFdbEntry(endpoint.host_ifname, endpoint.mac), SetMtu(endpoint.host_ifname, 1500)]


def test_bad_taps_change_nothing_and_a_failure_is_rolled_back(engine: Engine, kernel, kernel_state) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    before = kernel_state(kernel)
    for kwargs, error in (({"network": "none"}, "invalid network 'none'"), ({"network": "host"}, "invalid network"),
                          ({"network": "app", "uid": "root"}, "invalid owner 'root'"),
                          ({"network": "app", "mac": "fe:00:00:00:00:01"}, "starts with fe"),
                          ({"network": "app", "ip": "10.32.0.5"}, "is outside the subnet")):
        with pytest.raises(InvalidInput, match=error):
            engine.create_tap("vm1", **kwargs)
        assert kernel_state(kernel) == before and engine.sandboxes() == []
    kernel.links[(None, "lanp")] = {"kind": "veth", "mtu": 1500, "up": True, "mac": "02:00:00:00:99:01"}
    engine.create_network("lan", driver="macvlan", parent="lanp", subnet="192.168.77.0/24")
    before = kernel_state(kernel)
    with pytest.raises(InvalidInput, match="invalid network 'lan': is a macvlan network: a tap endpoint needs a bridge"):
        engine.create_tap("vm1", network="lan")
    assert kernel_state(kernel) == before and engine.sandboxes() == []
    for step in range(1, 20):  # a failure at each step: nothing is left
        kernel.fail_at = len(kernel.calls) + step
        try:
            engine.create_tap("vm1", network="app", uid=1000, publish=["8080:80"])
        except KernelError:
            kernel.fail_at = None
            assert kernel_state(kernel) == before and engine.sandboxes() == [] and engine.check() == []
            continue
        kernel.fail_at = None
        break
    assert [s.name for s in engine.sandboxes()] == ["vm1"] and engine.check() == []


def test_gc_finishes_a_tap_left_half_way_and_network_rm_f_takes_it(engine: Engine, kernel) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    device = engine.create_tap("vm1", network="app").endpoints[0].host_ifname
    with engine._store.transaction():
        engine._store.set_sandbox_state("vm1", "creating")  # a create killed before it was recorded ready
    assert ("half-done", "sandbox vm1") in [(d.kind, d.subject) for d in engine.check()]
    assert "finished removing sandbox vm1" in engine.gc()
    assert engine.sandboxes() == [] and (None, device) not in kernel.links and engine.check() == []
    engine.create_tap("vm2", network="app")
    engine.remove_network("app", force=True)
    assert engine.sandboxes() == [] and engine.networks() == [] and engine.check() == []


def test_create_sandbox_makes_a_tap_for_kind_tap_and_refuses_tap_options_elsewhere(engine: Engine, kernel,
                                                                                   kernel_state) -> None:
    """The Python API's and topology files' spelling: create_sandbox(kind="tap", owner=...)."""
    engine.create_network("app", subnet="10.31.0.0/24")
    before = kernel_state(kernel)
    for kwargs, error in (({"networks": ["app"], "kind": "vm"}, "invalid --kind 'vm': must be netns or tap"),
                          ({"networks": ["app"], "owner": 1000}, "invalid --owner '1000': applies to --kind tap only"),
                          ({"networks": ["app"], "mac": "02:00:00:00:00:09"}, "invalid --mac '02:00:00:00:00:09'"),
                          ({"networks": [], "kind": "tap"}, "a tap endpoint needs exactly one network"),
                          ({"networks": ["app", "app"], "kind": "tap"}, "a tap endpoint needs exactly one network")):
        with pytest.raises(InvalidInput, match=error):
            engine.create_sandbox("vm1", **kwargs)
        assert kernel_state(kernel) == before and engine.sandboxes() == []
    made = engine.create_sandbox("vm1", networks=["app"], kind="tap", owner=1000, group=1000)
    assert made.tap is not None and (made.tap.uid, made.tap.gid) == (1000, 1000) and made.netns == ""
    assert engine.check() == []
