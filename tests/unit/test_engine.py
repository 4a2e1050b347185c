import os
import stat
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest
from conftest import NftKernel, live_sysctls

from nsnet.engine import Engine
from nsnet.errors import Conflict, Exhausted, InvalidInput, KernelError, NotFound, NsnetError, TeardownError
from nsnet.firewall import render
from nsnet.kernel.fake import FakeKernel
from nsnet.record import replace


@pytest.fixture
def snapshot(engine, kernel, kernel_state):
    def take():
        return kernel_state(kernel), engine.networks(), engine.sandboxes()

    return take


def make_engine(tmp_path, kernel: FakeKernel, **kwargs) -> Engine:
    return Engine(state_dir=str(tmp_path / "state"), kernel=kernel, **kwargs)


def addresses(engine: Engine, sandbox: str) -> dict[str, str]:
    return {e.network: str(e.address.ip) for e in engine.sandbox(sandbox).endpoints}


def test_create_network_builds_what_it_records(engine, kernel, assert_matches_ledger):
    network = engine.create_network("app", subnet="10.31.0.0/16", labels=["tier=web"], mtu=1400)
    assert network == engine.network("app")
    assert network.bridge == "nsbr-" + network.id[:10]
    assert (network.subnet, network.gateway, network.mtu, network.labels, network.state) == (
        IPv4Network("10.31.0.0/16"), IPv4Address("10.31.0.1"), 1400, (("tier", "web"),), "ready",
    )
    assert kernel.links[(None, network.bridge)] == {"kind": "bridge", "mtu": 1400, "mac": "02:4e:0a:1f:00:01",
                                                    "group": engine.owner.group, "up": True}
    assert kernel.nft_log == [render.render_add_network(engine.owner, network)]
    assert kernel.sysctls == {"net.ipv4.ip_forward": "1", f"net.ipv4.conf.{network.bridge}.route_localnet": "1",
                              f"net.ipv6.conf.{network.bridge}.disable_ipv6": "1"}
    assert_matches_ledger(engine, kernel)


def test_duplicate_network_name_conflicts_and_changes_nothing(engine, snapshot):
    engine.create_network("app", subnet="10.31.0.0/24")
    before = snapshot()
    with pytest.raises(Conflict) as caught:
        engine.create_network("app", subnet="10.32.0.0/24")
    assert str(caught.value) == "network 'app' already exists"
    assert snapshot() == before


def test_overlapping_subnet_conflict_names_the_other_network(engine, snapshot):
    engine.create_network("app", subnet="10.31.0.0/16")
    before = snapshot()
    with pytest.raises(Conflict) as caught:
        engine.create_network("db", subnet="10.31.1.0/24")
    assert type(caught.value) is Conflict
    assert str(caught.value) == "subnet 10.31.1.0/24 overlaps network 'app' (10.31.0.0/16)"
    assert snapshot() == before


def test_subnet_overlapping_a_host_route_conflicts(tmp_path, kernel_state):
    kernel = FakeKernel(routes=[(IPv4Network("10.31.0.0/16"), "eth0")])
    with make_engine(tmp_path, kernel) as engine:
        with pytest.raises(Conflict) as caught:
            engine.create_network("app", subnet="10.31.1.0/24")
        assert str(caught.value) == "subnet 10.31.1.0/24 overlaps the host route 10.31.0.0/16 on eth0"
        assert engine.networks() == []
        assert kernel.calls == []


def test_auto_subnets_avoid_host_routes_and_each_other(tmp_path):
    routes = [(IPv4Network("10.210.0.0/24"), "eth0"), (IPv4Network("10.210.2.0/23"), "eth1")]
    with make_engine(tmp_path, FakeKernel(routes=routes)) as engine:
        subnets = [engine.create_network(name).subnet for name in ("a", "b", "c")]
    assert subnets == [IPv4Network("10.210.1.0/24"), IPv4Network("10.210.4.0/24"), IPv4Network("10.210.5.0/24")]


def test_routes_of_this_ledgers_bridges_are_not_host_routes_and_another_ledgers_are(tmp_path):
    """Which bridge is this ledger's comes from the ledger, never from the shape of a name."""
    kernel = FakeKernel()
    with make_engine(tmp_path, kernel) as engine:
        app = engine.create_network("app")
        assert app.subnet == IPv4Network("10.210.0.0/24")
        kernel.host_route_table = [(IPv4Network("10.210.0.0/24"), app.bridge),
                                   (IPv4Network("10.210.5.0/24"), app.bridge),  # e.g. a route via a sandbox
                                   (IPv4Network("10.210.1.0/24"), "nsbr-0123456789")]  # another ledger's
        assert engine.create_network("db").subnet == IPv4Network("10.210.2.0/24")
        assert engine.create_network("via", subnet="10.210.5.0/24").subnet == IPv4Network("10.210.5.0/24")
        with pytest.raises(Conflict) as caught:
            engine.create_network("other", subnet="10.210.1.0/24")
        assert str(caught.value) == "subnet 10.210.1.0/24 overlaps the host route 10.210.1.0/24 on nsbr-0123456789"


def test_auto_subnet_is_exhausted_by_a_route_covering_the_pool(tmp_path):
    kernel = FakeKernel(routes=[(IPv4Network("10.0.0.0/8"), "eth0")])
    with make_engine(tmp_path, kernel) as engine:
        with pytest.raises(Exhausted):
            engine.create_network("app")
        assert engine.networks() == []
        assert kernel.calls == []


def test_address_pool_option_sets_auto_subnets(tmp_path, kernel):
    with make_engine(tmp_path, kernel, address_pool="base=172.30.0.0/16,size=28") as engine:
        assert [engine.create_network(n).subnet for n in ("a", "b")] == [
            IPv4Network("172.30.0.0/28"), IPv4Network("172.30.0.16/28"),
        ]


def test_address_pool_from_environment(tmp_path, kernel, monkeypatch):
    monkeypatch.setenv("NSNET_ADDRESS_POOL", "base=192.168.64.0/20,size=26")
    with make_engine(tmp_path, kernel) as engine:
        assert engine.create_network("a").subnet == IPv4Network("192.168.64.0/26")


def test_invalid_request_touches_nothing(engine, kernel):
    with pytest.raises(InvalidInput) as caught:
        engine.create_network("app", subnet="10.31.0.1/24")
    assert caught.value.field == "subnet"
    assert engine.networks() == []
    assert kernel.calls == []


def test_ledger_survives_a_new_engine(tmp_path, kernel):
    with make_engine(tmp_path, kernel) as first:
        created = first.create_network("app", subnet="10.31.0.0/24")
        first.create_sandbox("web", networks=["app"])
    with make_engine(tmp_path, kernel) as second:
        assert second.networks() == [created]
        assert addresses(second, "web") == {"app": "10.31.0.2"}


def test_first_sandbox_without_networks_creates_default_network(engine, kernel, assert_matches_ledger):
    web = engine.create_sandbox("web")
    engine.create_sandbox("db")
    (default,) = engine.networks()
    assert (default.name, default.subnet, default.gateway) == (
        "nsnet", IPv4Network("10.210.0.0/24"), IPv4Address("10.210.0.1"),
    )
    assert [(e.network, e.ifname, str(e.address), e.default_route) for e in web.endpoints] == [
        ("nsnet", "eth0", "10.210.0.2/24", True),
    ]
    assert addresses(engine, "db") == {"nsnet": "10.210.0.3"}
    assert web.netns == "/run/netns/web"
    assert_matches_ledger(engine, kernel)


def test_create_sandbox_on_two_networks(engine, kernel, assert_matches_ledger):
    engine.create_network("front", subnet="10.1.0.0/24")
    engine.create_network("back", subnet="10.2.0.0/24")
    web = engine.create_sandbox("web", networks=["front", "back"], ip="10.1.0.50")
    assert replace(web, created=0.0) == replace(engine.sandbox("web"), created=0.0)
    assert [(e.network, e.ifname, str(e.address), e.default_route, e.mac) for e in web.endpoints] == [
        ("front", "eth0", "10.1.0.50/24", True, "02:4e:0a:01:00:32"),
        ("back", "eth1", "10.2.0.2/24", False, "02:4e:0a:02:00:02"),
    ]
    assert kernel.routes == {("web", 4): (IPv4Address("10.1.0.1"), "eth0")}
    assert kernel.etc["web"]["hosts"].endswith("10.1.0.50\tweb\n10.2.0.2\tweb\n")
    assert_matches_ledger(engine, kernel)


def test_requested_ip_taken_conflicts_and_changes_nothing(engine, snapshot):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"], ip="10.31.0.9")
    before = snapshot()
    with pytest.raises(Conflict) as caught:
        engine.create_sandbox("db", networks=["app"], ip="10.31.0.9")
    assert str(caught.value) == "ip 10.31.0.9 is already in use on 10.31.0.0/24"
    assert snapshot() == before


def test_requested_ip_outside_subnet_is_invalid(engine, snapshot):
    engine.create_network("app", subnet="10.31.0.0/24")
    before = snapshot()
    with pytest.raises(InvalidInput) as caught:
        engine.create_sandbox("web", networks=["app"], ip="10.32.0.9")
    assert caught.value.field == "ip"
    assert snapshot() == before


def test_ip_range_bounds_allocation(engine):
    engine.create_network("app", subnet="10.31.0.0/24", ip_range="10.31.0.128/25")
    engine.create_sandbox("web", networks=["app"])
    assert addresses(engine, "web") == {"app": "10.31.0.128"}


def test_full_network_is_exhausted_and_changes_nothing(engine, snapshot):
    engine.create_network("tiny", subnet="10.31.0.0/30")
    engine.create_sandbox("web", networks=["tiny"])
    before = snapshot()
    with pytest.raises(Exhausted):
        engine.create_sandbox("db", networks=["tiny"])
    assert snapshot() == before


@pytest.mark.parametrize(
    "kwargs, error, field",
    [
        ({"networks": ["app", "app"]}, InvalidInput, "network"),
        ({"networks": ["../app"]}, InvalidInput, "network"),
        ({"networks": ["app"], "ip": "fd00::1"}, InvalidInput, "ip"),
    ],
)
def test_create_sandbox_refuses_bad_input(engine, snapshot, kwargs, error, field):
    engine.create_network("app", subnet="10.31.0.0/24")
    before = snapshot()
    with pytest.raises(error) as caught:
        engine.create_sandbox("web", **kwargs)
    assert caught.value.field == field
    assert snapshot() == before


def test_create_sandbox_on_unknown_network_is_not_found(engine, snapshot):
    engine.create_network("app", subnet="10.31.0.0/24")
    before = snapshot()
    with pytest.raises(NotFound) as caught:
        engine.create_sandbox("web", networks=["app", "nope"])
    assert str(caught.value) == "no such network: 'nope'"
    assert snapshot() == before


def test_duplicate_sandbox_name_conflicts_and_changes_nothing(engine, snapshot):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    before = snapshot()
    with pytest.raises(Conflict) as caught:
        engine.create_sandbox("web", networks=["app"])
    assert str(caught.value) == "sandbox 'web' already exists"
    assert snapshot() == before


def test_duplicate_sandbox_name_without_networks_changes_nothing(engine, snapshot):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    before = snapshot()
    with pytest.raises(Conflict):
        engine.create_sandbox("web")
    assert snapshot() == before


def test_foreign_netns_with_the_same_name_conflicts(engine, kernel, snapshot):
    engine.create_network("app", subnet="10.31.0.0/24")
    kernel.netns.add("foo")
    before = snapshot()
    with pytest.raises(Conflict) as caught:
        engine.create_sandbox("foo", networks=["app"])
    assert str(caught.value) == "a network namespace named 'foo' exists and is not nsnet's"
    assert snapshot() == before
    assert kernel.netns == {"foo"}


def test_remove_network_with_sandboxes_conflicts(engine, snapshot):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    engine.create_sandbox("db", networks=["app"])
    before = snapshot()
    with pytest.raises(Conflict) as caught:
        engine.remove_network("app")
    assert str(caught.value) == "network 'app' has sandboxes attached (db, web); disconnect them or use -f"
    assert snapshot() == before


def test_force_remove_network_disconnects_its_sandboxes(engine, kernel, assert_matches_ledger):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("back", subnet="10.32.0.0/24")
    engine.create_sandbox("web", networks=["app", "back"])
    engine.create_sandbox("db", networks=["app"])
    engine.remove_network("app", force=True)
    assert [n.name for n in engine.networks()] == ["back"]
    assert {s.name: [(e.network, e.ifname, e.default_route) for e in s.endpoints] for s in engine.sandboxes()} == {
        "web": [("back", "eth1", True)], "db": [],
    }
    assert kernel.routes == {("web", 4): (IPv4Address("10.32.0.1"), "eth1")}
    assert_matches_ledger(engine, kernel)


def test_remove_network_keeps_the_table_while_others_exist(engine, kernel):
    app = engine.create_network("app", subnet="10.31.0.0/24")
    db = engine.create_network("db", subnet="10.32.0.0/24")
    engine.remove_network("app")
    assert kernel.nft_log[-1] == render.render_remove_network(engine.owner, app)
    engine.remove_network("db")
    assert kernel.nft_log[-1] == render.render_remove_table(engine.owner)
    assert (None, db.bridge) not in kernel.links
    assert kernel.empty
    assert engine.networks() == []


def test_remove_unknown_network(engine, kernel):
    with pytest.raises(NotFound) as caught:
        engine.remove_network("nope")
    assert str(caught.value) == "no such network: 'nope'"
    assert engine.remove_network("nope", force=True) is None
    assert kernel.calls == []


def test_prune_removes_only_unused_networks(engine):
    engine.create_network("used", subnet="10.31.0.0/24")
    engine.create_network("idle", subnet="10.32.0.0/24")
    engine.create_sandbox("web", networks=["used"])
    assert engine.prune_networks() == ["idle"]
    assert [n.name for n in engine.networks()] == ["used"]


def test_connect_and_disconnect_bookkeeping(engine, kernel, assert_matches_ledger):
    for index, name in enumerate(("a", "b", "c"), start=1):
        engine.create_network(name, subnet=f"10.{index}.0.0/24")
    engine.create_sandbox("web", networks=["a"])
    connected = engine.connect("b", "web", ip="10.2.0.7")
    assert (connected.ifname, str(connected.address), connected.default_route, connected.state) == (
        "eth1", "10.2.0.7/24", False, "ready",
    )
    engine.connect("c", "web")

    def layout():
        return [(e.network, e.ifname, e.default_route) for e in engine.sandbox("web").endpoints]

    assert layout() == [("a", "eth0", True), ("b", "eth1", False), ("c", "eth2", False)]
    assert_matches_ledger(engine, kernel)

    engine.disconnect("a", "web")
    assert layout() == [("b", "eth1", True), ("c", "eth2", False)]
    assert kernel.routes == {("web", 4): (IPv4Address("10.2.0.1"), "eth1")}
    assert_matches_ledger(engine, kernel)

    engine.connect("a", "web")
    assert layout() == [("b", "eth1", True), ("c", "eth2", False), ("a", "eth0", False)]
    assert kernel.routes == {("web", 4): (IPv4Address("10.2.0.1"), "eth1")}
    assert_matches_ledger(engine, kernel)

    engine.disconnect("c", "web")
    assert layout() == [("b", "eth1", True), ("a", "eth0", False)]
    assert_matches_ledger(engine, kernel)


def test_disconnect_last_endpoint_leaves_no_route(engine, kernel, assert_matches_ledger):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    engine.disconnect("app", "web")
    assert engine.sandbox("web").endpoints == ()
    assert kernel.routes == {}
    assert_matches_ledger(engine, kernel)


def test_connect_and_disconnect_errors(engine, snapshot):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("db", subnet="10.32.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    before = snapshot()
    with pytest.raises(Conflict) as caught:
        engine.connect("app", "web")
    assert str(caught.value) == "sandbox 'web' is already connected to network 'app'"
    with pytest.raises(Conflict) as caught:
        engine.disconnect("db", "web")
    assert str(caught.value) == "sandbox 'web' is not connected to network 'db'"
    with pytest.raises(NotFound) as caught:
        engine.disconnect("nope", "web")
    assert str(caught.value) == "no such network: 'nope'"
    with pytest.raises(NotFound) as caught:
        engine.connect("app", "nope")
    assert str(caught.value) == "no such sandbox: 'nope'"
    with pytest.raises(Conflict) as caught:
        engine.connect("db", "web", ip="10.32.0.1")
    assert str(caught.value) == "ip 10.32.0.1 is the gateway of 10.32.0.0/24"
    assert snapshot() == before


def test_addresses_are_round_robin_across_remove_and_create(engine):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("s1", networks=["app"])
    engine.create_sandbox("s2", networks=["app"])
    engine.remove_sandbox("s1")
    engine.create_sandbox("s3", networks=["app"])
    assert {s.name: addresses(engine, s.name)["app"] for s in engine.sandboxes()} == {
        "s2": "10.31.0.3", "s3": "10.31.0.4",
    }


def test_remove_sandbox_with_processes_conflicts_without_force(engine, kernel, snapshot):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    kernel.pids["web"] = [123]
    before = snapshot()
    with pytest.raises(Conflict) as caught:
        engine.remove_sandbox("web")
    assert str(caught.value) == "sandbox 'web' has 1 running process(es); stop them or use -f"
    assert snapshot() == before


def test_force_remove_sandbox_kills_its_processes(engine, kernel, assert_matches_ledger):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    kernel.pids["web"] = [123, 456]
    engine.remove_sandbox("web", force=True)
    assert ("kill", (123, 456)) in kernel.calls
    assert kernel.pids == {"web": []}
    assert engine.sandboxes() == []
    assert kernel.netns == set()
    assert_matches_ledger(engine, kernel)


def test_remove_unknown_sandbox(engine, kernel):
    with pytest.raises(NotFound) as caught:
        engine.remove_sandbox("nope")
    assert str(caught.value) == "no such sandbox: 'nope'"
    assert engine.remove_sandbox("nope", force=True) is None
    assert kernel.calls == []


def test_state_dir_is_private(tmp_path, kernel):
    with make_engine(tmp_path, kernel):
        pass
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "state" / "state.db").st_mode) == 0o600


def test_existing_state_dir_is_made_private(tmp_path, kernel):
    (tmp_path / "state").mkdir(mode=0o755)
    with make_engine(tmp_path, kernel):
        pass
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700


def test_sandbox_to_dict(engine):
    engine.create_network("app", subnet="10.31.0.0/24")
    web = engine.create_sandbox("web", networks=["app"])
    (endpoint,) = web.endpoints
    assert web.to_dict() == {
        "Id": web.id, "Name": "web", "NetNS": "/run/netns/web", "NetworkMode": "default", "Created": web.created, "State": "ready", "Labels": {},
        "Networks": {"app": {
            "EndpointId": endpoint.id, "Network": "app", "Interface": "eth0", "HostInterface": endpoint.host_ifname,
            "MacAddress": "02:4e:0a:1f:00:02", "IPAddress": "10.31.0.2", "IPPrefixLen": 24, "Gateway": "10.31.0.1",
            "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPv6Gateway": "",
            "DefaultRoute": True, "Aliases": [], "Ports": [],
        }},
    }
    assert endpoint.address == IPv4Interface("10.31.0.2/24")


def isolated_ports(kernel) -> set[str]:
    return {name for (ns, name), link in kernel.links.items() if ns is None and link.get("isolated")}


def test_no_icc_ports_follow_the_endpoints(engine, kernel, assert_matches_ledger):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("quiet", subnet="10.33.0.0/24", icc=False)

    def ports():
        return isolated_ports(kernel)

    web = engine.create_sandbox("web", networks=["quiet", "app"])
    engine.create_sandbox("db", networks=["app"])
    assert ports() == {web.endpoint("quiet").host_ifname}
    joined = engine.connect("quiet", "db")
    assert ports() == {web.endpoint("quiet").host_ifname, joined.host_ifname}
    assert_matches_ledger(engine, kernel)
    engine.disconnect("quiet", "web")
    assert ports() == {joined.host_ifname}
    engine.remove_sandbox("db")
    assert ports() == set()
    assert_matches_ledger(engine, kernel)


def test_force_remove_of_a_no_icc_network_removes_its_ports(engine, kernel, nft_tables, assert_matches_ledger):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("quiet", subnet="10.33.0.0/24", icc=False)
    engine.create_sandbox("web", networks=["app", "quiet"])
    assert isolated_ports(kernel) == {engine.sandbox("web").endpoint("quiet").host_ifname}
    engine.remove_network("quiet", force=True)
    assert isolated_ports(kernel) == set()
    assert_matches_ledger(engine, kernel)
    engine.remove_sandbox("web")
    engine.remove_network("app")
    assert nft_tables() == {}
    assert kernel.empty


def test_rolled_back_attach_does_not_move_the_round_robin_pointer(engine, kernel, assert_matches_ledger):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("db", subnet="10.32.0.0/24")
    engine.create_sandbox("web", networks=["db"])
    kernel.fail_at = len(kernel.calls) + 3
    with pytest.raises(KernelError):
        engine.create_sandbox("api", networks=["app"])
    kernel.fail_at = len(kernel.calls) + 1
    with pytest.raises(KernelError):
        engine.connect("app", "web")
    kernel.fail_at = None
    engine.create_sandbox("api", networks=["app"])
    assert addresses(engine, "api") == {"app": "10.31.0.2"}
    assert engine.connect("app", "web").address == IPv4Interface("10.31.0.3/24")
    assert_matches_ledger(engine, kernel)


def test_failed_sandbox_removal_keeps_the_row_until_a_retry(engine, kernel, assert_matches_ledger):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    kernel.fail_at = len(kernel.calls) + 2  # the rules go first, then the namespace fails
    with pytest.raises(TeardownError) as caught:
        engine.remove_sandbox("web")
    assert str(caught.value) == (
        "removing sandbox 'web' finished with 1 error(s): kernel refused delete_netns: injected failure (EPERM)"
    )
    assert engine.sandbox("web").state == "removing"
    assert "web" not in kernel.etc
    engine.remove_sandbox("web")
    assert engine.sandboxes() == []
    assert_matches_ledger(engine, kernel)


def test_network_left_removing_refuses_sandboxes_and_can_be_removed_again(engine, kernel, assert_matches_ledger):
    engine.create_network("app", subnet="10.31.0.0/24")
    kernel.fail_at = len(kernel.calls) + 1
    with pytest.raises(TeardownError):
        engine.remove_network("app")
    assert engine.network("app").state == "removing"
    with pytest.raises(Conflict) as caught:
        engine.create_sandbox("web", networks=["app"])
    assert str(caught.value) == "network 'app' was left removing by a command that did not finish; run nsnet gc"
    engine.remove_network("app")
    assert engine.networks() == []
    assert kernel.empty
    assert_matches_ledger(engine, kernel)


def test_unusable_state_dir_is_one_nsnet_error(tmp_path, kernel):
    (tmp_path / "file").write_text("")
    directory = str(tmp_path / "file" / "state")
    with pytest.raises(NsnetError) as caught:
        Engine(state_dir=directory, kernel=kernel)
    assert type(caught.value) is NsnetError
    assert str(caught.value).startswith(f"cannot open the state in {directory}: ")
    assert "\n" not in str(caught.value)


def test_a_network_is_full_at_the_bridge_port_limit(engine, kernel, monkeypatch):
    import nsnet.engine

    monkeypatch.setattr(nsnet.engine, "BRIDGE_MAX_PORTS", 2)
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("a", networks=["app"])
    engine.create_sandbox("b", networks=["app"])
    calls = len(kernel.calls)

    with pytest.raises(Exhausted, match="network 'app' is full: a Linux bridge holds at most 2 sandboxes"):
        engine.create_sandbox("c", networks=["app"])
    assert len(kernel.calls) == calls
    assert [s.name for s in engine.sandboxes()] == ["a", "b"]


def test_a_network_is_full_at_the_hosts_broadcast_limit(engine, kernel, monkeypatch):
    monkeypatch.setattr(kernel, "flood_limit", lambda: 2)
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("a", networks=["app"])
    engine.create_sandbox("b", networks=["app"])

    with pytest.raises(Exhausted, match="network 'app' is full: this host floods a broadcast to at most 2 ports"):
        engine.create_sandbox("c", networks=["app"])
    assert [s.name for s in engine.sandboxes()] == ["a", "b"]


@pytest.mark.parametrize("fail_at", range(2, 7))
@pytest.mark.parametrize("forwarding", ["0", "1"])
def test_a_failed_network_create_leaves_ip_forward_as_it_found_it(tmp_path, fail_at, forwarding):
    """Issue 9, 14: a failure must leave no trace, ip_forward=1 included (Docker leaves it on only
    once a network exists)."""
    kernel = NftKernel(fail_at=fail_at)
    kernel.sysctls["net.ipv4.ip_forward"] = forwarding
    with make_engine(tmp_path, kernel) as engine:
        with pytest.raises(KernelError):
            engine.create_network("app", subnet="10.31.0.0/24")
        assert engine.networks() == []
    assert kernel.calls[0] == ("ensure_sysctl", "net.ipv4.ip_forward", "1")
    assert kernel.sysctls["net.ipv4.ip_forward"] == forwarding
    assert live_sysctls(kernel) == {"net.ipv4.ip_forward": forwarding}
    assert kernel.empty


def test_a_sandbox_on_no_network_has_its_loopback_only_and_can_join_one_later(engine: Engine, kernel) -> None:
    made = engine.create_sandbox("alone", networks=["none"])
    assert made.endpoints == () and "alone" in kernel.netns and engine.networks() == []  # no default network made
    assert [key for key in kernel.links if key[0] == "alone"] == [] and engine.check() == []
    for kwargs, reason in (({"networks": ["none", "app"]}, "cannot be joined with other networks"),
                           ({"networks": ["none"], "publish": ["80"]}, "has no address, port or alias"),
                           ({"networks": ["none"], "ip": "10.31.0.9"}, "has no address, port or alias")):
        with pytest.raises(InvalidInput) as caught:
            engine.create_sandbox("other", **kwargs)
        assert caught.value.field == "network" and reason in caught.value.reason
    with pytest.raises(InvalidInput, match="is reserved"):
        engine.create_network("none")
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.connect("app", "alone")
    assert [e.network for e in engine.sandbox("alone").endpoints] == ["app"] and engine.check() == []
