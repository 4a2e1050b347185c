"""An overlay network's share on one host through the engine, on the fake kernel: the VXLAN device
beside the bridge, peers as neighbour/FDB/route (strays removed, a lost device made again), the
VTEP allow-list, check and gc agreeing, a failure at any step rolled back, and leaving clean."""

from ipaddress import IPv4Address, IPv4Network, ip_interface

import pytest

from nsnet.engine import Engine
from nsnet.errors import KernelError
from nsnet.model import Overlay, Peer
from nsnet.naming import vxlan_name

from conftest import nft_state

BLOCK = IPv4Network("10.80.1.0/24")
OVERLAY = Overlay(network="mesh", supernet=IPv4Network("10.80.0.0/16"), vni=4096, port=4789,
                  vtep_ip=IPv4Address("10.99.1.1"), underlay="eth0", vtep_mac="02:00:00:00:01:01", device="", host="h1")


def peer(i: int) -> Peer:
    return Peer(f"h{i}", IPv4Network(f"10.80.{i}.0/24"), IPv4Address(f"10.99.1.{i}"), f"02:00:00:00:01:0{i}")


def vteps(kernel) -> set[str]:
    state = nft_state(kernel.nft_log)
    return {e for table in state.values() for name, elements in table.items() if name == "overlay_vteps"
            for e in elements}


def host_check(engine: Engine) -> list:
    """check's findings but the cluster agent's (none runs beside the fake kernel)."""
    return [d for d in engine.check() if d.subject != "cluster agent"]


def test_join_peers_repair_and_leave(engine: Engine, kernel, kernel_state) -> None:
    engine.create_network("plain", subnet="10.31.0.0/24")
    before = kernel_state(kernel)
    network = engine.join_overlay("mesh", OVERLAY, BLOCK, 1450)
    device = vxlan_name(network.id)
    link = kernel.links[(None, device)]
    assert (link["kind"], link["vni"], link["mtu"], link["mac"]) == ("vxlan", 4096, 1450, "02:00:00:00:01:01")
    assert (None, device, ip_interface("10.80.1.0/32")) in kernel.addresses
    assert kernel.unreachable == {"10.80.0.0/16"} and host_check(engine) == []
    engine.set_overlay_peers("mesh", [peer(2), peer(3)])
    assert kernel.overlay_entries(device) == {
        "neighbours": {("10.80.2.0", "02:00:00:00:01:02"), ("10.80.3.0", "02:00:00:00:01:03")},
        "fdb": {("02:00:00:00:01:02", "10.99.1.2"), ("02:00:00:00:01:03", "10.99.1.3")},
        "routes": {("10.80.2.0/24", "10.80.2.0"), ("10.80.3.0/24", "10.80.3.0")}}
    assert len(vteps(kernel)) == 2 and host_check(engine) == []
    calls = len(kernel.calls)
    engine.set_overlay_peers("mesh", [peer(3), peer(2)])  # the same peers: nothing to do
    assert len(kernel.calls) == calls
    kernel.replace_onlink_route("10.80.9.0/24", "10.80.9.0", device)  # a stray, and a lost entry
    kernel.delete_fdb(device, "02:00:00:00:01:02", "10.99.1.2")
    assert [d.kind for d in host_check(engine)] == ["wrong"]
    assert "DeleteOnlinkRoute" in engine.overlay_drift("mesh") and "ReplaceFdb" in engine.overlay_drift("mesh")
    engine.set_overlay_peers("mesh", [peer(3)])
    assert kernel.overlay_entries(device)["routes"] == {("10.80.3.0/24", "10.80.3.0")}
    assert kernel.overlay_entries(device)["fdb"] == {("02:00:00:00:01:03", "10.99.1.3")}
    assert len(vteps(kernel)) == 1 and engine.overlay_drift("mesh") == ""
    kernel.delete_link(device)  # the device deleted under nsnet: made again with its entries
    engine.set_overlay_peers("mesh", [peer(3)])
    assert kernel.overlay_entries(device)["neighbours"] == {("10.80.3.0", "02:00:00:00:01:03")}
    engine.leave_overlay("mesh")
    assert kernel_state(kernel) == before and kernel.unreachable == set() and engine.networks()[0].name == "plain"


def test_a_failure_at_any_step_is_rolled_back(engine: Engine, kernel, kernel_state) -> None:
    engine.create_network("plain", subnet="10.31.0.0/24")  # forwarding on already
    before = kernel_state(kernel)
    for step in range(1, 30):
        kernel.fail_at = len(kernel.calls) + step
        try:
            engine.join_overlay("mesh", OVERLAY, BLOCK, 1450)
        except KernelError:
            kernel.fail_at = None
            assert kernel_state(kernel) == before and kernel.unreachable == set()
            assert [n.name for n in engine.networks()] == ["plain"]
            continue
        kernel.fail_at = None
        break
    network = engine.network("mesh")
    engine.set_overlay_peers("mesh", [peer(2)])
    joined = kernel_state(kernel)
    for step in range(1, 30):
        kernel.fail_at = len(kernel.calls) + step
        try:
            engine.set_overlay_peers("mesh", [peer(3), peer(4)])
        except KernelError:
            kernel.fail_at = None
            assert kernel_state(kernel) == joined
            assert [p.host for p in engine._store.overlay_peers(network.id)] == ["h2"]
            continue
        kernel.fail_at = None
        break
    assert [p.host for p in engine._store.overlay_peers(network.id)] == ["h3", "h4"]


def test_a_sandbox_on_an_overlay_is_a_bridge_endpoint(engine: Engine, kernel) -> None:
    engine.join_overlay("mesh", OVERLAY, BLOCK, 1450)
    made = engine.create_sandbox("a", networks=["mesh"])
    endpoint = made.endpoints[0]
    assert str(endpoint.addresses[0]) == "10.80.1.2/24" and kernel.links[(None, endpoint.host_ifname)]["mtu"] == 1450
    assert engine.overlay_names("mesh") == {"a": (("10.80.1.2",), ())}
    with pytest.raises(Exception, match="has sandboxes attached"):
        engine.leave_overlay("mesh")
    engine.leave_overlay("mesh", force=True)
    assert engine.networks() == [] and engine.sandbox("a").endpoints == ()


def test_a_device_set_down_behind_nsnets_back_is_set_up_before_its_entries_come_back():
    from ipaddress import IPv4Network, ip_address

    from nsnet.model import Overlay, Owner, Peer
    from nsnet.plan.ops import SetLinkUp
    from nsnet.plan.overlay import plan_peers

    overlay = Overlay("mesh", IPv4Network("10.80.0.0/16"), 4096, 4789, ip_address("10.99.1.1"), "eth0",
                      "02:00:00:00:00:01", "nsvx-1", "h1")
    peer = Peer("h2", IPv4Network("10.80.2.0/24"), ip_address("10.99.1.2"), "02:00:00:00:00:02")
    down = {"neighbours": set(), "fdb": {("02:00:00:00:00:02", "10.99.1.2")}, "routes": set(), "down": {("nsvx-1",)}}
    ops = plan_peers(overlay, [peer], [peer], down, Owner())
    assert [type(op).__name__ for op in ops] == ["SetLinkUp", "ReplaceNeighbour", "ReplaceOnlinkRoute"]
    assert ops[0] == SetLinkUp("nsvx-1")
    assert plan_peers(overlay, [peer], [peer], {**down, "down": set(), "neighbours": {("10.80.2.0", "02:00:00:00:00:02")},
                                                 "routes": {("10.80.2.0/24", "10.80.2.0")}}, Owner()) == []
