"""The cluster's logic without a kernel or an etcd: records, the agent's view, block leasing by
compare-and-swap (racing threads included), network creation, leave and eviction, and the agent's
reconciling against MemoryStore with a recording engine."""

import random
import threading
from ipaddress import IPv4Network

import pytest

from nsnet.cluster import blocks, endpoints, membership, records
from nsnet.cluster.agent import Agent
from nsnet.cluster.host import Underlay, vtep_mac
from nsnet.cluster.records import Block, HostRecord, NetworkConfig
from nsnet.cluster.store import MemoryStore
from nsnet.cluster.view import parse
from nsnet.errors import Conflict, InvalidInput, NotFound

HERE = Underlay("10.99.1.1", "eth0", 1500)
MESH = NetworkConfig(name="mesh", subnet="10.80.0.0/16", block_prefix=24, vni=4096, mtu=1450)


def test_endpoints_parse_the_url():
    assert endpoints({"NSNET_CLUSTER": "etcd://10.99.0.10:2379,10.99.0.11:2380"}) == [("10.99.0.10", 2379),
                                                                                      ("10.99.0.11", 2380)]
    assert endpoints({}) == []


def test_vtep_mac_is_stable_unicast_and_local():
    mac = vtep_mac("h1", 4096)
    assert mac == vtep_mac("h1", 4096) != vtep_mac("h2", 4096) != vtep_mac("h1", 4097)
    assert int(mac.split(":")[0], 16) & 0x03 == 0x02  # locally administered, unicast


def test_records_round_trip_and_ignore_foreign_values():
    block = Block("h1", "10.99.1.1", vtep_mac("h1", 1), 1450)
    assert records.decode(Block, records.encode(block)) == block
    assert records.decode(Block, b"not json") is None
    assert records.decode(NetworkConfig, b'{"name": "x"}') is None
    assert records.block_of(records.block_name(IPv4Network("10.80.3.0/24"))) == IPv4Network("10.80.3.0/24")


def test_view_parses_every_kind_of_key():
    values = {
        records.config_key("mesh"): records.encode(MESH),
        records.block_key("mesh", IPv4Network("10.80.3.0/24")): records.encode(Block("h1", "10.99.1.1", "02:00:00:00:00:01", 1450)),
        records.endpoint_key("mesh", "h1", "a"): records.encode(records.Endpoint(("10.80.3.2",), ("www",))),
        records.host_key("h1"): records.encode(HostRecord("h1", "10.99.1.1", 1500)),
        records.suspect_key("h2"): b"{}",
        records.key("networks", "mesh", "blocks", "garbage"): b"{}",
        "/elsewhere/x": b"1",
    }
    view = parse(values)
    assert view.configs == {"mesh": MESH}
    assert list(view.blocks["mesh"]) == [IPv4Network("10.80.3.0/24")]
    assert view.endpoints["mesh"][("h1", "a")].aliases == ("www",)
    assert view.state("h1") == "alive" and view.state("h2") == "suspect" and view.state("h3") == "gone"


def test_choose_skips_taken_blocks_and_says_when_none_is_left():
    supernet = IPv4Network("10.80.0.0/22")
    taken = {IPv4Network("10.80.0.0/24"), IPv4Network("10.80.2.0/24")}
    picks = {blocks.choose(supernet, 24, taken, random.Random(seed)) for seed in range(50)}
    assert picks == {IPv4Network("10.80.1.0/24"), IPv4Network("10.80.3.0/24")}
    assert blocks.choose(supernet, 23, {IPv4Network("10.80.0.0/23"), IPv4Network("10.80.2.0/23")}, random.Random()) is None


def _created(store):
    return membership.create_network(store, "mesh", subnet="10.80.0.0/16", here=HERE)


def test_create_network_defaults_and_refusals():
    store = MemoryStore()
    config = _created(store)
    assert (config.block_prefix, config.vni, config.mtu, config.port) == (24, 4096, 1450, 4789)
    with pytest.raises(Conflict, match="already exists in the cluster"):
        _created(store)
    with pytest.raises(Conflict, match="overlaps overlay network 'mesh'"):
        membership.create_network(store, "other", subnet="10.80.5.0/24", here=HERE)
    assert membership.create_network(store, "two", subnet="10.81.0.0/16", here=HERE).vni == 4097
    with pytest.raises(Conflict, match="VNI 4096 is another"):
        membership.create_network(store, "three", subnet="10.82.0.0/16", vni=4096, here=HERE)
    for kwargs, field in [({"subnet": None}, "--subnet"), ({"subnet": "fd00::/64"}, "--subnet"),
                          ({"subnet": "10.90.0.0/16", "block_prefix": 16}, "--block-size"),
                          ({"subnet": "10.90.0.0/16", "vni": 0}, "--vni"),
                          ({"subnet": "10.90.0.0/16", "mtu": 1451}, "--mtu")]:
        with pytest.raises(InvalidInput, match=f"invalid {field}"):
            membership.create_network(store, "bad", here=HERE, **kwargs)
    assert membership.network_config(store, "bad") is None


def test_leasing_races_never_give_one_block_twice():
    store = MemoryStore()
    config = NetworkConfig(name="mesh", subnet="10.80.0.0/20", block_prefix=24, vni=1, mtu=1450)
    got: dict[str, IPv4Network] = {}
    barrier = threading.Barrier(12)

    def join(host: str) -> None:
        barrier.wait()
        got[host] = blocks.lease(store, "mesh", config, Block(host, "10.99.1.1", vtep_mac(host, 1), 1450),
                                 random.Random(0))  # the same pick everywhere: every race is lost but one

    threads = [threading.Thread(target=join, args=(f"h{i}",)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 12 and len(set(got.values())) == 12
    held, _ = store.range(records.blocks_prefix("mesh"))
    assert sorted(records.decode(Block, kv.value).host for kv in held) == sorted(got)


def test_a_host_takes_its_own_block_back_and_evicted_blocks_rest():
    store = MemoryStore()
    block = Block("h1", "10.99.1.1", vtep_mac("h1", 1), 1450)
    first = blocks.lease(store, "mesh", MESH, block)
    assert blocks.lease(store, "mesh", MESH, block) == first
    moved = blocks.lease(store, "mesh", MESH, Block("h1", "10.99.1.9", block.vtep_mac, 1450))
    assert moved == first and records.decode(Block, store.get(records.block_key("mesh", first)).value).vtep_ip == "10.99.1.9"
    assert membership.evict(store, "h1") == [f"mesh:{first}"]
    assert store.get(records.tombstone_key("mesh", first)) is not None
    assert store.get(records.key("fenced", "h1", "mesh")) is not None
    small = NetworkConfig(name="mesh", subnet=str(first.supernet(new_prefix=23)), block_prefix=24, vni=1, mtu=1450)
    other = blocks.lease(store, "mesh", small, Block("h2", "10.99.1.2", vtep_mac("h2", 1), 1450))
    assert other != first  # the tombstone keeps the evicted block from being handed out


def test_evict_refuses_a_live_host_and_an_unknown_one():
    store = MemoryStore()
    lease = store.grant(10)
    store.put(records.host_key("h2"), records.encode(HostRecord("h2", "10.99.1.2", 1500)), lease)
    blocks.lease(store, "mesh", MESH, Block("h2", "10.99.1.2", vtep_mac("h2", 1), 1450))
    with pytest.raises(Conflict, match="is alive"):
        membership.evict(store, "h2")
    with pytest.raises(NotFound):
        membership.evict(store, "h9")
    assert len(membership.evict(store, "h2", force=True)) == 1


def test_leave_deletes_the_network_with_its_last_host():
    store = MemoryStore()
    _created(store)
    for host in ("h1", "h2"):
        blocks.lease(store, "mesh", MESH, Block(host, "10.99.1.1", vtep_mac(host, 4096), 1450))
    assert membership.leave(store, "h1", "mesh") is False
    assert membership.network_config(store, "mesh") is not None
    assert membership.leave(store, "h2", "mesh") is True
    assert store.range(records.key("networks"))[0] == [] and store.get(records.vni_key(4096)) is None


class RecordingEngine:
    """What the agent asks of the engine, recorded; one overlay network `mesh` on block `mine`."""

    def __init__(self, mine: IPv4Network) -> None:
        from nsnet.model import Network, Subnet

        self.network_row = Network(id="n1", name="mesh", bridge="nsbr-n1", driver="overlay",
                                   subnets=(Subnet(mine, mine[1]),))
        self.peers: list = []
        self.programmings = 0
        self.names: list = []
        self.fenced = False
        self.local = {"a": (("10.80.1.2",), ())}

    def overlay_networks(self):
        return [self.network_row]

    def network(self, name):
        return self.network_row

    def set_overlay_peers(self, name, peers):
        self.peers = list(peers)
        self.programmings += 1

    def overlay_names(self, name):
        return dict(self.local)

    def set_remote_names(self, name, rows):
        self.names = list(rows)

    def fence_overlay(self, name):
        self.fenced = True


def _agent(store, monkeypatch, evict_after="300"):
    monkeypatch.setenv("NSNET_HOST_ID", "h1")
    monkeypatch.setenv("NSNET_CLUSTER_EVICT_AFTER", evict_after)
    mine = IPv4Network("10.80.1.0/24")
    store.put(records.block_key("mesh", mine), records.encode(Block("h1", "10.99.1.1", vtep_mac("h1", 4096), 1450)))
    engine = RecordingEngine(mine)
    agent = Agent("/nonexistent", lambda: store, engine)
    return agent, engine


def _peer(store, host: str, third: int) -> None:
    store.put(records.block_key("mesh", IPv4Network(f"10.80.{third}.0/24")),
              records.encode(Block(host, f"10.99.1.{third}", vtep_mac(host, 4096), 1450)))


def test_agent_programs_peers_publishes_names_and_reads_others(monkeypatch):
    store = MemoryStore()
    agent, engine = _agent(store, monkeypatch)
    _peer(store, "h2", 2)
    store.put(records.endpoint_key("mesh", "h2", "b"), records.encode(records.Endpoint(("10.80.2.2",), ("db",))))
    agent.relist(store)
    assert [(p.host, str(p.block), str(p.vtep_ip)) for p in engine.peers] == [("h2", "10.80.2.0/24", "10.99.1.2")]
    assert engine.names == [("h2", "b", ("10.80.2.2",), ("db",))]
    published = records.decode(records.Endpoint, store.get(records.endpoint_key("mesh", "h1", "a")).value)
    assert published.addresses == ("10.80.1.2",)
    engine.local = {}
    agent.relist(store)  # as the watch would have brought the name's own put
    assert store.get(records.endpoint_key("mesh", "h1", "a")) is None


def test_agent_answers_a_publish_with_names_only_and_a_verify_from_the_store(monkeypatch):
    store = MemoryStore()
    agent, engine = _agent(store, monkeypatch)
    _peer(store, "h2", 2)
    assert agent.answer("publish mesh other", store) == "ok"  # a network not joined here is skipped
    published = records.decode(records.Endpoint, store.get(records.endpoint_key("mesh", "h1", "a")).value)
    assert published.addresses == ("10.80.1.2",)
    assert engine.peers == []  # peers are the watch's business, not a publish's
    assert agent.answer("verify mesh 10.80.1.0/24", store) == "ok mine"
    assert agent.answer("verify mesh 10.80.2.0/24", store) == "ok lost"  # h2's
    assert agent.answer("verify mesh 10.80.9.0/24", store) == "ok lost"  # nobody's: evicted
    store.fail(True)
    assert agent.answer("verify mesh 10.80.1.0/24", store) == "ok unavailable"
    assert agent.answer("publish mesh", store).startswith("error cluster store unavailable")
    assert agent.answer("verify mesh", store) == "error unknown request"
    assert agent.answer("", store) == "error unknown request"


def test_a_watch_event_that_changes_no_peer_does_not_reprogram_but_a_resync_does(monkeypatch):
    store = MemoryStore()
    agent, engine = _agent(store, monkeypatch)
    _peer(store, "h2", 2)
    agent.relist(store)
    assert engine.programmings == 1
    store.put(records.endpoint_key("mesh", "h2", "b"), records.encode(records.Endpoint(("10.80.2.2",), ())))
    agent.values = {kv.key: kv.value for kv in store.range(records.PREFIX)[0]}
    agent.reconcile(store, full=False)  # a name published on h2: names change, peers do not
    assert engine.programmings == 1 and engine.names == [("h2", "b", ("10.80.2.2",), ())]
    _peer(store, "h3", 3)
    agent.values = {kv.key: kv.value for kv in store.range(records.PREFIX)[0]}
    agent.reconcile(store, full=False)
    assert engine.programmings == 2 and [p.host for p in engine.peers] == ["h2", "h3"]
    agent.reconcile(store)  # the periodic resync reads the kernel back whatever changed
    assert engine.programmings == 3


def test_agent_marks_a_silent_owner_suspect_then_evicts_it_when_the_mark_ends(monkeypatch):
    store = MemoryStore()
    agent, engine = _agent(store, monkeypatch)
    _peer(store, "h2", 2)
    agent.relist(store)
    suspect = store.get(records.suspect_key("h2"))
    assert suspect is not None and suspect.lease != 0
    assert len(engine.peers) == 1  # a suspect keeps its routes: its traffic may still flow
    store.expire(suspect.lease)  # what the watch then brings: the mark's deletion
    agent.values = {kv.key: kv.value for kv in store.range(records.PREFIX)[0]}
    agent.reconcile(store, expired=["h2"])
    assert store.get(records.block_key("mesh", IPv4Network("10.80.2.0/24"))) is None
    agent.relist(store)
    assert engine.peers == []


def test_agent_with_no_delay_evicts_at_once_but_never_a_live_host(monkeypatch):
    store = MemoryStore()
    agent, engine = _agent(store, monkeypatch, evict_after="0")
    _peer(store, "h2", 2)
    _peer(store, "h3", 3)
    store.put(records.host_key("h3"), records.encode(HostRecord("h3", "10.99.1.3", 1500)), store.grant(10))
    agent.relist(store)
    agent.relist(store)
    assert [p.host for p in engine.peers] == ["h3"]


def test_agent_fences_a_network_whose_block_was_evicted(monkeypatch):
    store = MemoryStore()
    agent, engine = _agent(store, monkeypatch)
    store.put(records.config_key("mesh"), records.encode(MESH))
    assert membership.evict(store, "h1") == ["mesh:10.80.1.0/24"]
    _peer(store, "h2", 1)  # another host took the block meanwhile (after the tombstone, say)
    agent.relist(store)
    assert engine.fenced and engine.peers == []
    with pytest.raises(Conflict, match="evicted"):
        membership.lease_block(store, "h1", "mesh", HERE)


def _until(probe, what: str, seconds: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not probe():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_memory_watch_resumes_from_a_revision_and_says_when_it_was_compacted():
    store = MemoryStore()
    first = store.put("/nsnet/v1/a", b"1")
    store.put("/nsnet/v1/b", b"2")
    store.delete("/nsnet/v1/a")
    watch = store.watch("/nsnet/v1/", first + 1)
    batches = iter(watch)
    assert [(e.type, e.kv.key) for e in next(batches).events] == [("put", "/nsnet/v1/b")]
    assert [(e.type, e.kv.key) for e in next(batches).events] == [("delete", "/nsnet/v1/a")]
    watch.close()
    assert list(batches) == []
    store.compact(first + 1)
    with pytest.raises(Exception, match="compacted"):
        next(iter(store.watch("/nsnet/v1/", first)))


def test_agent_watch_survives_outages_and_compaction(monkeypatch, capsys):
    store = MemoryStore()
    agent, engine = _agent(store, monkeypatch)
    agent.relist(store)

    def watching() -> list[threading.Thread]:
        agent.stopping.clear()
        threads = [threading.Thread(target=loop, daemon=True) for loop in (agent.watch_loop, agent.reconcile_loop)]
        for thread in threads:
            thread.start()
        return threads

    def stop(threads: list[threading.Thread]) -> None:
        agent.stopping.set()
        agent.dirty.set()
        agent.watch.close()
        for thread in threads:
            thread.join(5)
            assert not thread.is_alive()

    thread = watching()
    _peer(store, "h2", 2)
    _until(lambda: [p.host for p in engine.peers] == ["h2"], "the watch brings h2")
    store.fail(True)  # the stream breaks; nothing is removed meanwhile
    _until(lambda: "watch_broken" in capsys.readouterr().err, "the agent sees the stream break")
    assert [p.host for p in engine.peers] == ["h2"]
    store.fail(False)
    _peer(store, "h3", 3)
    _until(lambda: [p.host for p in engine.peers] == ["h2", "h3"], "the resumed watch brings h3")
    stop(thread)  # a frozen agent misses changes, and the history it would resume from is compacted
    store.delete(records.block_key("mesh", IPv4Network("10.80.2.0/24")))
    _peer(store, "h4", 4)
    store.compact(store.range("")[1])
    thread = watching()
    _until(lambda: [p.host for p in engine.peers] == ["h3", "h4"], "the re-list after compaction")
    assert "watch_compacted" in capsys.readouterr().err
    stop(thread)


def test_doctor_names_a_silent_store_a_missing_vxlan_and_networks_the_underlay_cannot_carry():
    from nsnet.cluster.doctor import ClusterFacts, diagnose

    assert diagnose(ClusterFacts(underlay="eth0", underlay_mtu=1500, networks_mtu={"mesh": 1450})) == []
    small = diagnose(ClusterFacts(underlay="eth0", underlay_mtu=1400, networks_mtu={"mesh": 1450, "low": 1300,
                                                                                    "big": 1450}))
    assert [(f.check, f.severity, f.details) for f in small] == [
        ("overlay-mtu", "problem", ("big (MTU 1450)", "mesh (MTU 1450)"))]
    assert "carries at most 1350" in small[0].reason and "to 1500 or more" in small[0].fix
    broken = diagnose(ClusterFacts(store_error="cluster store unavailable: connection refused",
                                   underlay_error="cluster store unavailable: no route to 10.99.0.10",
                                   vxlan_missing="Operation not supported"))
    assert [(f.check, f.severity) for f in broken] == [("cluster-store", "problem"), ("cluster-underlay", "problem"),
                                                      ("kernel-vxlan", "problem")]
    assert broken[0].reason == "cluster store unavailable: connection refused"


def test_gcs_cluster_half_finishes_a_dead_leave_gives_back_a_dead_joins_block_and_survives_a_silent_store(
        monkeypatch):
    from dataclasses import replace

    from nsnet.cluster import local
    from nsnet.record import replace as changed

    class GcEngine:
        state_dir = "/nonexistent"
        notes: list = []

    monkeypatch.setenv("NSNET_HOST_ID", "h1")
    store = MemoryStore()
    monkeypatch.setattr(local, "store_or_refuse", lambda field="--driver": store)
    store.put(records.config_key("mesh"), records.encode(MESH))
    _peer(store, "h1", 1)
    _peer(store, "h2", 2)
    store.put(records.config_key("other"), records.encode(replace(MESH, name="other", vni=4097)))
    store.put(records.block_key("other", IPv4Network("10.80.1.0/24")),
              records.encode(Block("h1", "10.99.1.1", vtep_mac("h1", 4097), 1450)))
    leaving = RecordingEngine(IPv4Network("10.80.1.0/24")).network_row
    joining = changed(leaving, name="other", state="creating")
    done = local.finish_interrupted(GcEngine(), [changed(leaving, state="removing"), joining])
    assert done == ["took this host out of overlay network mesh in the cluster",
                    "gave back block 10.80.1.0/24 of overlay network other"]
    assert store.get(records.block_key("mesh", IPv4Network("10.80.1.0/24"))) is None
    assert store.get(records.block_key("mesh", IPv4Network("10.80.2.0/24"))) is not None  # h2's stays
    assert store.get(records.block_key("other", IPv4Network("10.80.1.0/24"))) is None
    store.fail(True)
    assert local.finish_interrupted(GcEngine(), [joining]) == []
    assert GcEngine.notes[0].startswith("the cluster keeps this host's keys of a network gc finished here: cluster"
                                        " store unavailable")
