"""`check` and `gc` without root: an Engine on a FakeKernel, damage done by editing what the fake
kernel holds (as out-of-band commands or a reboot would), and the exact drift `check` must report
and `gc` must repair.

Each test damages a ledger built by the engine, asserts check()'s list, runs gc(), and asserts
that check() finds nothing and that the kernel holds again exactly what it held before the damage.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

import pytest

from nsnet import repair
from nsnet.engine import Engine
from nsnet.firewall import render
from nsnet.kernel.fake import FakeKernel
from nsnet.kernel.state import Ruleset
from nsnet.model import Subnet, Endpoint, Network
from nsnet.naming import host_veth_name, mac_for, new_id
from nsnet.reconcile import Drift, default_route_wrong, element_keys, ruleset_drift
from nsnet.record import replace
from nsnet.store import Store

MAC = "02:00:00:00:00:99"  # a MAC nsnet never gives (nsnet's are 02:4e:...)


@pytest.fixture
def kernel() -> FakeKernel:
    return FakeKernel()


@pytest.fixture
def engine(tmp_path, kernel: FakeKernel) -> Iterator[Engine]:
    """Two networks, `web` on both (its default route via app's eth0), `db` on app."""
    with Engine(state_dir=str(tmp_path / "state"), kernel=kernel) as made:
        made.create_network("app", subnet="10.31.0.0/24")
        made.create_network("back", subnet="10.32.0.0/24")
        made.create_sandbox("web", networks=["app", "back"], publish=["8080:80"])
        made.create_sandbox("db", networks=["app"])
        assert made.check() == []
        yield made


def state(kernel: FakeKernel) -> dict[str, Any]:
    """Everything of the kernel's that gc may have to put back."""
    return copy.deepcopy({
        "netns": kernel.netns, "links": kernel.links, "addresses": kernel.addresses, "routes": kernel.routes,
        "etc": kernel.etc, "sysctls": kernel.sysctls, "nft_tables": kernel.nft_tables,
        "nft_elements": kernel.nft_elements, "nft_skeleton": kernel.nft_skeleton,
    })


def drift(engine: Engine) -> list[str]:
    return [str(d) for d in engine.check()]


def repaired(engine: Engine, kernel: FakeKernel, pristine: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Run gc; check it left nothing to report and the kernel as it was; return gc's kernel calls."""
    before = len(kernel.calls)
    engine.gc()
    assert drift(engine) == []
    assert state(kernel) == pristine
    return kernel.calls[before:]


def endpoint(engine: Engine, sandbox: str, network: str) -> Endpoint:
    found = engine.sandbox(sandbox).endpoint(network)
    assert found is not None
    return found


# Links


def test_a_deleted_bridge_is_made_again_with_its_ports_on_it(engine, kernel):
    app = engine.network("app")
    pristine = state(kernel)
    del kernel.links[(None, app.bridge)]
    kernel.addresses.discard((None, app.bridge, app.subnets[0].gateway_interface))
    for key in [k for k in kernel.sysctls if f".{app.bridge}." in k]:
        del kernel.sysctls[key]  # an interface's sysctls go with it
    for link in kernel.links.values():
        if link.get("master") == app.bridge:  # a port that leaves its bridge loses its flags and FDB entries
            for flag in ("master", "isolated", "hairpin", "locked"):
                link.pop(flag)
            link.update(learning=True, static_macs=set())
    web, db = endpoint(engine, "web", "app"), endpoint(engine, "db", "app")
    assert drift(engine) == [
        f"missing: network app: bridge {app.bridge} does not exist",
        f"wrong: sandbox web: veth {web.host_ifname} is not on bridge {app.bridge}",
        f"wrong: sandbox db: veth {db.host_ifname} is not on bridge {app.bridge}",
    ]
    calls = repaired(engine, kernel, pristine)
    assert [c for c in calls if c[0] != "nft"] == [
        ("create_bridge", app.bridge, 1500, "02:4e:0a:1f:00:01"),
        ("ensure_sysctl", f"net.ipv4.conf.{app.bridge}.route_localnet", "1"),
        ("ensure_sysctl", f"net.ipv6.conf.{app.bridge}.disable_ipv6", "1"),
        ("add_address", app.bridge, "10.31.0.1/24", None),
        ("attach_to_bridge", web.host_ifname, app.bridge),
        ("set_port_flags", web.host_ifname),
        ("add_fdb_entry", web.host_ifname, web.mac),
        ("attach_to_bridge", db.host_ifname, app.bridge),
        ("set_port_flags", db.host_ifname),
        ("add_fdb_entry", db.host_ifname, db.mac),
    ]


def test_a_bridge_set_down_is_brought_up(engine, kernel):
    app = engine.network("app")
    pristine = state(kernel)
    kernel.links[(None, app.bridge)]["up"] = False
    assert drift(engine) == [f"wrong: network app: bridge {app.bridge} is down"]
    assert [c for c in repaired(engine, kernel, pristine) if c[0] != "nft"] == [("set_link_up", app.bridge, None)]


def test_a_bridge_whose_mtu_and_mac_changed_gets_them_back(engine, kernel):
    back = engine.network("back")
    pristine = state(kernel)
    kernel.links[(None, back.bridge)].update(mtu=1400, mac=MAC)
    assert drift(engine) == [
        f"wrong: network back: bridge {back.bridge} has MTU 1400, the network's is 1500",
        f"wrong: network back: bridge {back.bridge} has MAC {MAC}, nsnet gave it 02:4e:0a:20:00:01",
    ]
    assert [c for c in repaired(engine, kernel, pristine) if c[0] != "nft"] == [
        ("set_mtu", back.bridge, 1500, None), ("set_mac", back.bridge, "02:4e:0a:20:00:01", None)]


def test_a_host_veth_set_down_is_brought_up(engine, kernel):
    web = endpoint(engine, "web", "back")
    pristine = state(kernel)
    kernel.links[(None, web.host_ifname)]["up"] = False
    assert drift(engine) == [f"wrong: sandbox web: veth {web.host_ifname} is down"]
    assert [c for c in repaired(engine, kernel, pristine) if c[0] != "nft"] == [
        ("set_link_up", web.host_ifname, None)]


def test_a_sandbox_interface_set_down_is_brought_up_before_its_default_route_is_added(engine, kernel):
    """Setting an interface down deletes the routes through it; a route needs its interface up
    (the real kernel refuses with ENETUNREACH), so gc brings it up first."""
    web = endpoint(engine, "web", "app")
    pristine = state(kernel)
    kernel.links[("web", "eth0")]["up"] = False
    del kernel.routes[("web", 4)]
    assert drift(engine) == [
        "wrong: sandbox web: eth0 is down",
        "missing: sandbox web: no default route via 10.31.0.1 on eth0",
    ]
    assert [c for c in repaired(engine, kernel, pristine) if c[0] != "nft"] == [
        ("set_link_up", "eth0", "web"), ("replace_default_route", "10.31.0.1", "eth0", "web")]
    assert web.default_route


@pytest.mark.parametrize("flag, value, detail", [
    ("hairpin", False, "has hairpin mode off"),
    ("learning", True, "learns MAC addresses"),
    ("locked", False, "is not locked to its static FDB entry"),
    ("isolated", True, "is isolated, its network's icc says otherwise"),
])
def test_a_port_flag_changed_is_set_back(engine, kernel, flag, value, detail):
    web = endpoint(engine, "web", "app")
    pristine = state(kernel)
    kernel.links[(None, web.host_ifname)][flag] = value
    assert drift(engine) == [f"wrong: sandbox web: bridge port {web.host_ifname} {detail}"]
    assert [c for c in repaired(engine, kernel, pristine) if c[0] != "nft"] == [("set_port_flags", web.host_ifname)]


def test_isolation_switched_off_on_a_no_icc_network_is_switched_on_again(tmp_path, kernel):
    with Engine(state_dir=str(tmp_path / "state"), kernel=kernel) as engine:
        engine.create_network("quiet", subnet="10.33.0.0/24", icc=False)
        port = engine.create_sandbox("web", networks=["quiet"]).endpoints[0].host_ifname
        pristine = state(kernel)
        kernel.links[(None, port)]["isolated"] = False
        assert drift(engine) == [f"wrong: sandbox web: bridge port {port} is not isolated, "
                                 "its network's icc says otherwise"]
        assert [c for c in repaired(engine, kernel, pristine) if c[0] != "nft"] == [
            ("set_port_flags", port, "isolated")]


def test_a_missing_static_fdb_entry_is_added(engine, kernel):
    db = endpoint(engine, "db", "app")
    pristine = state(kernel)
    kernel.links[(None, db.host_ifname)]["static_macs"].clear()
    assert drift(engine) == [f"missing: sandbox db: bridge port {db.host_ifname} lacks its static FDB entry {db.mac}"]
    assert [c for c in repaired(engine, kernel, pristine) if c[0] != "nft"] == [
        ("add_fdb_entry", db.host_ifname, db.mac)]


def test_a_sandbox_interface_whose_mac_and_mtu_changed_gets_them_back(engine, kernel):
    web = endpoint(engine, "web", "back")
    pristine = state(kernel)
    kernel.links[("web", "eth1")].update(mtu=1280, mac=MAC)
    assert drift(engine) == [
        "wrong: sandbox web: eth1 has MTU 1280, the network's is 1500",
        f"wrong: sandbox web: eth1 has MAC {MAC}, nsnet gave it {web.mac}",
    ]
    assert [c for c in repaired(engine, kernel, pristine) if c[0] != "nft"] == [
        ("set_mtu", "eth1", 1500, "web"), ("set_mac", "eth1", web.mac, "web")]


def test_a_host_veth_whose_mtu_changed_gets_it_back(engine, kernel):
    db = endpoint(engine, "db", "app")
    pristine = state(kernel)
    kernel.links[(None, db.host_ifname)]["mtu"] = 9000
    assert drift(engine) == [f"wrong: sandbox db: veth {db.host_ifname} has MTU 9000, the network's is 1500"]
    assert [c for c in repaired(engine, kernel, pristine) if c[0] != "nft"] == [
        ("set_mtu", db.host_ifname, 1500, None)]


def test_a_removed_address_is_added_again_before_the_route_it_carried(engine, kernel):
    pristine = state(kernel)
    kernel.addresses.discard(("web", "eth0", IPv4Interface("10.31.0.2/24")))
    del kernel.routes[("web", 4)]  # the kernel drops the routes whose gateway is no longer on a subnet
    assert drift(engine) == [
        "missing: sandbox web: eth0 lacks its address 10.31.0.2/24",
        "missing: sandbox web: no default route via 10.31.0.1 on eth0",
    ]
    assert [c for c in repaired(engine, kernel, pristine) if c[0] != "nft"] == [
        ("add_address", "eth0", "10.31.0.2/24", "web"), ("replace_default_route", "10.31.0.1", "eth0", "web")]


def test_a_removed_default_route_is_added_again(engine, kernel):
    pristine = state(kernel)
    del kernel.routes[("web", 4)]
    assert drift(engine) == ["missing: sandbox web: no default route via 10.31.0.1 on eth0"]
    assert [c for c in repaired(engine, kernel, pristine) if c[0] != "nft"] == [
        ("replace_default_route", "10.31.0.1", "eth0", "web")]


def test_a_default_route_through_another_interface_is_put_back(engine, kernel):
    pristine = state(kernel)
    kernel.routes[("web", 4)] = (IPv4Address("10.32.0.1"), "eth1")
    assert drift(engine) == ["missing: sandbox web: no default route via 10.31.0.1 on eth0"]
    assert [c for c in repaired(engine, kernel, pristine) if c[0] != "nft"] == [
        ("replace_default_route", "10.31.0.1", "eth0", "web")]


# nftables


def test_a_deleted_rule_and_a_flushed_chain_are_reported_and_rebuilt(engine, kernel):
    pristine = state(kernel)
    kernel.nft_skeleton[("inet", "inet chain forward")][1].pop()
    kernel.nft_skeleton[("bridge", "bridge chain prerouting")][1].clear()
    assert drift(engine) == [
        "wrong: nftables: bridge chain prerouting differs from nsnet's (its rules)",
        "wrong: nftables: inet chain forward differs from nsnet's (its rules)",
    ]
    calls = repaired(engine, kernel, pristine)
    assert [c[0] for c in calls] == ["nft"]


def test_a_chain_whose_policy_changed_is_reported_and_rebuilt(engine, kernel):
    pristine = state(kernel)
    declaration, rules = kernel.nft_skeleton[("inet", "inet chain input")]
    kernel.nft_skeleton[("inet", "inet chain input")] = ({**declaration, "policy": "drop"}, rules)
    assert drift(engine) == ["wrong: nftables: inet chain input differs from nsnet's"]
    repaired(engine, kernel, pristine)


def test_a_deleted_set_and_a_foreign_chain_in_nsnets_table_are_reported_and_fixed(engine, kernel):
    pristine = state(kernel)
    table = engine.owner.table
    del kernel.nft_skeleton[("inet", "inet set masq_subnets")]
    kernel.nft_skeleton[("inet", "inet chain sneaky")] = ({"family": "inet", "table": table, "name": "sneaky"}, [])
    assert drift(engine) == [
        "missing: nftables: inet set masq_subnets",
        "orphan: nftables: inet chain sneaky is not nsnet's",
    ]
    repaired(engine, kernel, pristine)


def test_a_removed_element_and_an_extra_one_are_reported_and_fixed(engine, kernel):
    pristine = state(kernel)
    web = endpoint(engine, "web", "app")
    table = engine.owner.table
    missing = [k for k in kernel.nft_elements if k[:2] == ("bridge", "port_arp_identity") and web.host_ifname in k[2]]
    assert len(missing) == 1
    del kernel.nft_elements[missing[0]]
    forged = {"concat": ["nsv000000000000", MAC, MAC, "10.31.0.99"]}
    kernel.nft_elements[("bridge", "port_arp_identity", json.dumps(forged, sort_keys=True))] = None
    (lost,) = element_keys([arp_element(table, {"concat": [web.host_ifname, web.mac, web.mac, "10.31.0.2"]})])
    (extra,) = element_keys([arp_element(table, forged)])
    assert drift(engine) == [f"missing: nftables element: {lost}", f"orphan: nftables element: {extra}"]
    repaired(engine, kernel, pristine)


def arp_element(table: str, elem: Any) -> dict[str, Any]:
    return {"add": {"element": {"family": "bridge", "table": table, "name": "port_arp_identity", "elem": [elem]}}}


def test_deleted_tables_are_reported_and_rebuilt(engine, kernel):
    pristine = state(kernel)
    kernel.nft([{"delete": {"table": {"family": f, "name": engine.owner.table}}} for f in ("inet", "bridge")])
    assert drift(engine) == [f"missing: nftables: nsnet's tables ({engine.owner.table}) are gone"]
    repaired(engine, kernel, pristine)


# Ownership


def test_an_orphan_link_of_this_ledgers_group_is_deleted_and_another_groups_is_never_touched(engine, kernel,
                                                                                           monkeypatch):
    monkeypatch.setattr(repair, "SETTLE_SECONDS", 0.0)  # an unknown veth is not waited for as a lingering one
    group = engine.owner.group
    kernel.links[(None, "nsbr-9999999999")] = {"kind": "bridge", "mtu": 1500, "mac": MAC, "group": 0x4E777777,
                                               "up": True}
    kernel.links[(None, "nsv999999999999")] = {"kind": "veth", "mtu": 1500, "mac": MAC, "group": 0x4E777777,
                                               "up": True, "master": "nsbr-9999999999"}
    pristine = state(kernel)
    kernel.links[(None, "stray")] = {"kind": "bridge", "mtu": 1500, "mac": MAC, "group": group, "up": True}
    kernel.links[(None, "strayveth")] = {"kind": "veth", "mtu": 1500, "mac": MAC, "group": group, "up": True}
    assert drift(engine) == [
        "orphan: link stray: of this ledger's interface group, but in no ledger row",
        "orphan: link strayveth: of this ledger's interface group, but in no ledger row",
    ]
    calls = repaired(engine, kernel, pristine)
    assert [c for c in calls if c[0] != "nft"] == [("delete_link", "stray", None), ("delete_link", "strayveth", None)]
    assert (None, "nsbr-9999999999") in kernel.links and (None, "nsv999999999999") in kernel.links


# Half-done commands


def ledger(engine: Engine) -> Store:
    """A second connection to the engine's ledger, as another process would have."""
    return Store(engine._store.directory)


def test_a_sandbox_left_creating_is_undone(engine, kernel):
    """A create killed after its rules and namespace and one veth, before it marked its rows ready."""
    app = engine.network("app")
    pristine = state(kernel)
    half = Endpoint(id=new_id(), sandbox="half", network="app", ifname="eth0", host_ifname="", mac="",
                    addresses=(IPv4Interface("10.31.0.50/24"),), gateways=(app.gateway,), default_route=True, state="creating")
    half = replace(half, host_ifname=host_veth_name(half.id), mac=mac_for(half.address.ip))
    store = ledger(engine)
    with store.transaction():
        sandbox_id = new_id()
        store.add_sandbox(sandbox_id, "half", "creating")
        store.add_endpoint(sandbox_id, app.id, half)
    store.close()
    kernel.create_netns("half")
    kernel.write_etc_files("half", {"hosts": ""})
    kernel.nft(render.render_add_endpoint(engine.owner, half, app))
    kernel.create_veth(half.host_ifname, app.bridge, "half", "eth0", 1500, half.mac, engine.owner.group)
    assert drift(engine) == [
        "half-done: sandbox half: left 'creating' by an interrupted command",
        "half-done: sandbox half on app: endpoint left 'creating' by an interrupted command",
        *(f"orphan: nftables element: {key}"
          for key in sorted(element_keys(render.render_add_endpoint(engine.owner, half, app)))),
    ]
    repaired(engine, kernel, pristine)
    assert [s.name for s in engine.sandboxes()] == ["web", "db"]


def test_a_sandbox_left_removing_is_removed(engine, kernel):
    store = ledger(engine)
    with store.transaction():
        store.set_sandbox_state("db", "removing")
    store.close()
    db = endpoint(engine, "db", "app")
    assert drift(engine) == ["half-done: sandbox db: left 'removing' by an interrupted command"] + [
        f"orphan: nftables element: {key}"
        for key in sorted(element_keys(render.render_add_endpoint(engine.owner, db, engine.network("app"))))]
    engine.gc()
    assert drift(engine) == []
    assert [s.name for s in engine.sandboxes()] == ["web"]
    assert "db" not in kernel.netns and "db" not in kernel.etc
    assert (None, db.host_ifname) not in kernel.links


def test_an_endpoint_left_creating_by_a_connect_is_undone(engine, kernel):
    back = engine.network("back")
    pristine = state(kernel)
    half = Endpoint(id=new_id(), sandbox="db", network="back", ifname="eth1", host_ifname="", mac="",
                    addresses=(IPv4Interface("10.32.0.50/24"),), gateways=(back.gateway,), state="creating")
    half = replace(half, host_ifname=host_veth_name(half.id), mac=mac_for(half.address.ip))
    store = ledger(engine)
    with store.transaction():
        store.add_endpoint(engine.sandbox("db").id, back.id, half)
    store.close()
    kernel.nft(render.render_add_endpoint(engine.owner, half, back))
    kernel.create_veth(half.host_ifname, back.bridge, "db", "eth1", 1500, half.mac, engine.owner.group)
    assert drift(engine)[0] == "half-done: sandbox db on back: endpoint left 'creating' by an interrupted command"
    repaired(engine, kernel, pristine)
    assert [e.network for e in engine.sandbox("db").endpoints] == ["app"]


def test_a_network_left_removing_is_removed(engine, kernel):
    engine.create_network("gone", subnet="10.40.0.0/24")
    gone = engine.network("gone")
    store = ledger(engine)
    with store.transaction():
        store.set_network_state(gone.id, "removing")
    store.close()
    assert drift(engine)[0] == "half-done: network gone: left 'removing' by an interrupted command"
    engine.gc()
    assert drift(engine) == []
    assert [n.name for n in engine.networks()] == ["app", "back"]
    assert (None, gone.bridge) not in kernel.links


def test_a_disconnect_of_the_default_route_endpoint_killed_half_way_ends_with_the_successors_route(engine, kernel):
    """Engine.disconnect moves the flag to the successor and marks the endpoint 'removing' in one
    transaction before any kernel change: a kill right after leaves the old link and route."""
    old, successor = endpoint(engine, "web", "app"), endpoint(engine, "web", "back")
    store = ledger(engine)
    with store.transaction():
        store.set_default_route(old.id, False)
        store.set_default_route(successor.id, True)
        store.set_endpoint_state(old.id, "removing")
    store.close()
    assert kernel.routes[("web", 4)] == (IPv4Address("10.31.0.1"), "eth0")
    stale = element_keys(render.render_add_endpoint(engine.owner, old, engine.network("app")))
    assert drift(engine) == [
        "half-done: sandbox web on app: endpoint left 'removing' by an interrupted command",
        "missing: sandbox web: no default route via 10.32.0.1 on eth1",
        *(f"orphan: nftables element: {key}" for key in sorted(stale)),
    ]
    engine.gc()
    assert drift(engine) == []
    assert [(e.network, e.default_route) for e in engine.sandbox("web").endpoints] == [("back", True)]
    assert kernel.routes[("web", 4)] == (IPv4Address("10.32.0.1"), "eth1")
    assert (None, old.host_ifname) not in kernel.links and ("web", "eth0") not in kernel.links


# The ledger's default route


def test_a_ledger_giving_the_default_route_to_no_endpoint_is_set_right(engine, kernel):
    pristine = state(kernel)
    store = ledger(engine)
    with store.transaction():
        store.set_default_route(endpoint(engine, "web", "app").id, False)
    store.close()
    assert drift(engine) == ["wrong: sandbox web: the ledger does not give the default route to exactly one "
                             "endpoint on a network that is not internal"]
    repaired(engine, kernel, pristine)
    assert endpoint(engine, "web", "app").default_route


def test_a_ledger_giving_the_default_route_to_an_internal_network_is_set_right(tmp_path, kernel):
    """As an older nsnet left it: the route via the internal network that came first."""
    with Engine(state_dir=str(tmp_path / "state"), kernel=kernel) as engine:
        engine.create_network("private", subnet="10.33.0.0/24", internal=True)
        engine.create_network("app", subnet="10.31.0.0/24")
        engine.create_sandbox("web", networks=["private", "app"])
        assert kernel.routes[("web", 4)] == (IPv4Address("10.31.0.1"), "eth1")
        pristine = state(kernel)
        store = ledger(engine)
        with store.transaction():
            store.set_default_route(endpoint(engine, "web", "private").id, True)
            store.set_default_route(endpoint(engine, "web", "app").id, False)
        store.close()
        kernel.routes[("web", 4)] = (IPv4Address("10.33.0.1"), "eth0")
        assert drift(engine) == ["wrong: sandbox web: the ledger does not give the default route to exactly one "
                                 "endpoint on a network that is not internal"]
        assert [c for c in repaired(engine, kernel, pristine) if c[0] != "nft"] == [
            ("replace_default_route", "10.31.0.1", "eth1", "web")]
        assert [(e.network, e.default_route) for e in engine.sandbox("web").endpoints] == [
            ("private", False), ("app", True)]


# Pure: reconcile


def net(name: str, internal: bool = False) -> Network:
    index = {"a": 1, "b": 2, "i": 3, "j": 4}[name]
    return Network(id=name * 64, name=name, bridge=f"nsbr-{name * 10}", subnets=(Subnet(IPv4Network(f"10.{index}.0.0/24"), IPv4Address(f"10.{index}.0.1")),), internal=internal)


NETWORKS = {n.name: n for n in (net("a"), net("b"), net("i", internal=True), net("j", internal=True))}


def ep(network: str, default_route: bool = False) -> Endpoint:
    n = NETWORKS[network]
    return Endpoint(id=network * 64, sandbox="web", network=network, ifname=f"eth-{network}",
                    host_ifname=f"nsv{network * 12}", mac="02:4e:00:00:00:02",
                    addresses=(IPv4Interface(f"{n.gateway + 1}/24"),), gateways=(n.gateway,), default_route=default_route)


@pytest.mark.parametrize("endpoints, wrong", [
    ([], False),
    ([ep("a", True)], False),
    ([ep("a", True), ep("b")], False),
    ([ep("i"), ep("a", True)], False),
    ([ep("i"), ep("j")], False),  # all internal: no default route at all
    ([ep("a")], True),  # none carries it
    ([ep("a", True), ep("b", True)], True),  # two carry it
    ([ep("i", True), ep("a")], True),  # an internal one carries it, a regular one is there
    ([ep("i", True)], True),  # an internal one carries it, and should not
    ([ep("i", True), ep("j")], True),
])
def test_default_route_wrong(endpoints, wrong):
    assert default_route_wrong(endpoints, NETWORKS) is wrong


SETS = {"inet set bridges": {"family": "inet", "name": "bridges", "type": "ifname"},
        "inet map to_bridge": {"family": "inet", "name": "to_bridge", "type": "ifname", "map": "verdict"}}
FORWARD = ({"family": "inet", "name": "forward", "hook": "forward", "prio": 0, "policy": "accept"},
           ('{"rule": 1}', '{"rule": 2}'))
TO_NETWORK = ({"family": "inet", "name": "to_network"}, ('{"rule": 3}',))
EXPECTED = Ruleset(sets=SETS, chains={"inet chain forward": FORWARD, "inet chain to_network": TO_NETWORK})


def test_ruleset_drift_is_empty_for_an_equal_ruleset():
    assert ruleset_drift(EXPECTED, Ruleset(sets=dict(SETS), chains=dict(EXPECTED.chains))) == []


def test_ruleset_drift_reports_every_missing_changed_and_foreign_set_and_chain():
    actual = Ruleset(
        sets={"inet set bridges": {**SETS["inet set bridges"], "type": "ipv4_addr"},
              "inet set foreign": {"family": "inet", "name": "foreign", "type": "ifname"}},
        chains={"inet chain forward": (FORWARD[0], FORWARD[1][:1]),
                "inet chain to_network": ({**TO_NETWORK[0], "hook": "input"}, TO_NETWORK[1]),
                "inet chain sneaky": ({"family": "inet", "name": "sneaky"}, ())},
    )
    assert ruleset_drift(EXPECTED, actual) == [
        Drift("missing", "nftables", "inet map to_bridge"),
        Drift("wrong", "nftables", "inet set bridges differs from nsnet's"),
        Drift("orphan", "nftables", "inet set foreign is not nsnet's"),
        Drift("wrong", "nftables", "inet chain forward differs from nsnet's (its rules)"),
        Drift("wrong", "nftables", "inet chain to_network differs from nsnet's"),
        Drift("orphan", "nftables", "inet chain sneaky is not nsnet's"),
    ]


@pytest.mark.parametrize("rules", [(), ('{"rule": 2}', '{"rule": 1}'), ('{"rule": 1}', '{"rule": 2}', '{"x": 0}')])
def test_ruleset_drift_sees_rules_flushed_reordered_or_added(rules):
    actual = Ruleset(sets=SETS, chains={**EXPECTED.chains, "inet chain forward": (FORWARD[0], rules)})
    assert ruleset_drift(EXPECTED, actual) == [
        Drift("wrong", "nftables", "inet chain forward differs from nsnet's (its rules)")]

