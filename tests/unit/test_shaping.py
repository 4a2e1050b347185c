"""Shaping: what a user may type (one-line errors naming the field), the kernel objects each
setting makes (qdiscs, loss rules), the exact plans, and the engine's ledger, refusals, rollback,
replacement, check and gc around them (on a FakeKernel)."""

from __future__ import annotations

import pytest

from nsnet import shaping
from nsnet.engine import Engine
from nsnet.errors import Conflict, InvalidInput, KernelError
from nsnet.plan.ops import ApplySandboxFirewall, ClearQdisc, SetQdisc
from nsnet.plan.shape import Device, Place, drops, plan_shape, qdiscs
from nsnet.shaping import Qdisc, Settings, Shaping
from nsnet.shaping.render import render_removal, render_table, summary


def test_the_units_users_type_are_parsed_and_shown_back() -> None:
    assert shaping.parse_rate("10mbit") == 10_000_000 and shaping.parse_rate("512kbit") == 512_000
    assert shaping.parse_rate("1gbit") == 10**9 and shaping.parse_rate("2mbps") == 16_000_000
    assert shaping.parse_rate("1.5Mbit") == 1_500_000
    assert shaping.parse_time("--delay", "20ms") == 20_000 and shaping.parse_time("--delay", "1.5s") == 1_500_000
    assert shaping.parse_time("--jitter", "500us") == 500
    assert shaping.parse_percent("--loss", "1%") == 100 and shaping.parse_percent("--loss", "0.5") == 50
    assert shaping.parse_percent("--loss", "100%") == 10000 and shaping.parse_limit("100") == 100
    made = shaping.settings(rate="10mbit", delay="20ms", jitter="5ms", loss="0.25%", reorder="1%", limit=50)
    assert made.to_dict() == {"Rate": "10mbit", "Delay": "20ms", "Jitter": "5ms", "Loss": "0.25%", "Reorder": "1%",
                              "Limit": 50}
    assert Settings.from_dict(made.to_dict()) == made
    assert str(shaping.settings(rate="1500kbit", loss="30%")) == "rate 1500kbit, loss 30%"


@pytest.mark.parametrize("asked, field, reason", [
    ({"rate": "10"}, "--rate", "must be a number with a unit"),
    ({"rate": "10 furlongs"}, "--rate", "must be a number with a unit"),
    ({"rate": "1kbit"}, "--rate", "must be from 8kbit to 32gbit"),
    ({"rate": "40gbit"}, "--rate", "must be from 8kbit to 32gbit"),
    ({"delay": "20"}, "--delay", "must be a time with a unit"),
    ({"delay": "0ms"}, "--delay", "more than 0"),
    ({"delay": "61s"}, "--delay", "at most 60s"),
    ({"loss": "0%"}, "--loss", "more than 0%"),
    ({"loss": "101%"}, "--loss", "at most 100%"),
    ({"loss": "lots"}, "--loss", "must be a percentage"),
    ({"rate": "1mbit", "limit": "0"}, "--limit", "from 1 to"),
    ({"rate": "1mbit", "limit": "many"}, "--limit", "number of packets"),
    ({"jitter": "5ms"}, "--jitter", "needs --delay"),
    ({"reorder": "5%", "loss": "1%"}, "--reorder", "needs --delay"),
    ({"limit": "10", "loss": "1%"}, "--limit", "needs --rate or --delay"),
    ({}, "--rate", "nothing to shape"),
])
def test_bad_settings_are_refused_with_the_field_and_the_reason(asked: dict, field: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        shaping.settings(**asked)
    assert caught.value.field == field and reason in caught.value.reason
    with pytest.raises(InvalidInput, match="must be out, in or both"):
        shaping.direction("up")


def test_knobs_of_a_missing_module_are_refused_naming_it() -> None:
    asked = {"rate": "10mbit", "delay": "20ms"}
    with pytest.raises(InvalidInput) as caught:
        shaping.refuse(shaping.settings(**asked), asked, frozenset({shaping.TBF}))
    assert str(caught.value) == "invalid --delay '20ms': needs the kernel module sch_netem, which this kernel lacks"
    with pytest.raises(InvalidInput, match="needs the kernel module sch_tbf"):
        shaping.refuse(shaping.settings(rate="1mbit"), {"rate": "1mbit"}, frozenset({shaping.NETEM}))
    shaping.refuse(shaping.settings(rate="1mbit", loss="1%"), {"rate": "1mbit"}, frozenset({shaping.TBF}))


def test_each_setting_makes_the_qdisc_it_needs() -> None:
    assert shaping.qdisc(shaping.settings(loss="1%"), 1500) is None  # loss is nftables' work
    assert shaping.qdisc(shaping.settings(rate="10mbit"), 1500) == Qdisc(rate=1_250_000, burst=12_500,
                                                                          tbf_limit=1_250_000 // 20 + 12_500)
    assert shaping.qdisc(shaping.settings(rate="1mbit"), 1500).burst == 3028  # two full frames at least
    assert shaping.qdisc(shaping.settings(rate="10mbit", limit=10), 9000).tbf_limit == 90_000  # N packets of MTU
    netem = shaping.qdisc(shaping.settings(rate="10mbit", delay="20ms", jitter="5ms", reorder="1%", limit=10), 1500)
    assert (netem.delay, netem.jitter, netem.reorder, netem.netem_limit) == (20_000, 5_000, 100, 10)
    assert netem.summary == "netem/tbf rate 1250000" and netem.tbf_limit == 1_250_000 // 20 + 12_500
    assert shaping.qdisc(shaping.settings(delay="1ms"), 1500).summary == "netem"


OWN, HOST_VETH = Device("a", "eth0", 1500), Device(None, "nsv0", 1500)
PLACE = Place("a", "eth0", OWN, HOST_VETH)


def shaped(direction: str, **asked: str) -> Shaping:
    return Shaping("a", "app", None, direction, shaping.settings(**asked))


def test_directions_put_qdiscs_and_drops_where_the_packets_pass() -> None:
    tbf = shaping.qdisc(shaping.settings(rate="10mbit"), 1500)
    assert qdiscs(shaped("out", rate="10mbit"), PLACE) == {OWN: tbf}
    assert qdiscs(shaped("in", rate="10mbit"), PLACE) == {HOST_VETH: tbf}
    assert qdiscs(shaped("both", rate="10mbit"), PLACE) == {OWN: tbf, HOST_VETH: tbf}
    assert drops(shaped("out", loss="1%"), PLACE) == [("postrouting", "eth0", 100)]
    assert drops(shaped("in", loss="1%"), PLACE) == [("prerouting", "eth0", 100)]
    assert drops(shaped("both", loss="1%", rate="1mbit"), PLACE) == [("prerouting", "eth0", 100),
                                                                     ("postrouting", "eth0", 100)]


def test_plans_set_replace_and_clear_exactly_what_changes() -> None:
    old = shaping.qdisc(shaping.settings(rate="10mbit"), 1500)
    new = shaping.qdisc(shaping.settings(rate="20mbit"), 1500)
    rules = [("postrouting", "eth0", 3000)]
    assert plan_shape({}, {OWN: old}, "a", "t", [], rules, "x") == [
        SetQdisc("a", "eth0", old, None),
        ApplySandboxFirewall("a", tuple(render_table("t", rules)), tuple(render_removal("t")), "loss of x")]
    assert plan_shape({OWN: old}, {OWN: new, HOST_VETH: new}, "a", "t", rules, rules, "x") == [
        SetQdisc(None, "nsv0", new, None), SetQdisc("a", "eth0", new, old)]
    assert plan_shape({OWN: old}, {OWN: old}, "a", "t", rules, rules, "x") == []  # the same again: nothing
    assert plan_shape({OWN: old, HOST_VETH: old}, {}, "a", "t", rules, [], "x") == [
        ClearQdisc(None, "nsv0", old), ClearQdisc("a", "eth0", old),
        ApplySandboxFirewall("a", tuple(render_removal("t")), tuple(render_table("t", rules)), "loss of x")]
    # Each undo puts back what was there: nsnet's previous qdisc, or the kernel's default.
    assert SetQdisc("a", "eth0", new, old).undo() == SetQdisc("a", "eth0", old)
    assert SetQdisc("a", "eth0", new).undo() == ClearQdisc("a", "eth0")
    assert ClearQdisc("a", "eth0", old).undo() == SetQdisc("a", "eth0", old)


def test_the_loss_table_drops_at_random_by_interface_name() -> None:
    commands = render_table("nsnet_shape", [("prerouting", "eth0", 3000)])
    assert commands[0] == {"add": {"table": {"family": "inet", "name": "nsnet_shape"}}}
    chains = [c["add"]["chain"] for c in commands if "chain" in c.get("add", {})]
    assert [(c["name"], c["hook"], c["prio"], c["policy"]) for c in chains] == [
        ("prerouting", "prerouting", -300, "accept"), ("postrouting", "postrouting", 300, "accept")]
    (rule,) = [c["add"]["rule"] for c in commands if "rule" in c.get("add", {})]
    assert rule["expr"] == [
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth0"}},
        {"match": {"op": "<", "left": {"numgen": {"mode": "random", "mod": 10000, "offset": 0}}, "right": 3000}},
        {"drop": None}]
    assert summary(commands) == [("prerouting", "loss 30% into eth0")]


@pytest.fixture
def pair(engine: Engine) -> Engine:
    engine.create_network("app", subnet="10.31.0.0/24")
    for name in ("a", "b"):
        engine.create_sandbox(name, networks=["app"])
    engine.link("a", "b")
    return engine


def qdisc_of(kernel, ns, name):
    return kernel.links[(ns, name)].get("qdisc")


def test_shape_replaces_clears_and_goes_with_its_endpoint_or_link(pair: Engine, kernel) -> None:
    host = pair.sandbox("a").endpoint("app").host_ifname
    made = pair.shape("a", network="app", rate="10mbit", loss="30%", direction="both")
    assert made == Shaping("a", "app", None, "both", shaping.settings(rate="10mbit", loss="30%"))
    assert qdisc_of(kernel, "a", "eth0").rate == qdisc_of(kernel, None, host).rate == 1_250_000
    assert pair.shapings() == [made] and pair.check() == []
    calls = len(kernel.calls)
    assert pair.shape("a", network="app", rate="10mbit", loss="30%", direction="both") == made
    assert len(kernel.calls) == calls  # the same setting again changes nothing
    pair.shape("a", network="app", rate="20mbit")  # replaces: out only now
    assert qdisc_of(kernel, "a", "eth0").rate == 2_500_000 and qdisc_of(kernel, None, host) is None
    assert kernel.sandbox_tables["a"] == {} and pair.check() == []
    pair.shape("a", link="b", rate="1mbit", direction="in", loss="1%")
    assert qdisc_of(kernel, "b", "a").rate == 125_000 and qdisc_of(kernel, "a", "b") is None
    with pytest.raises(Conflict, match="shaped already by `nsnet shape a --link b --direction in`"):
        pair.shape("b", link="a", rate="2mbit")
    pair.shape("b", link="a", rate="2mbit", direction="in")  # b's own end is free
    pair.disconnect("app", "a")
    assert [s.target for s in pair.shapings()] == ["link b", "link a"] and pair.check() == []
    pair.unlink("a", "b")
    assert pair.shapings() == [] and kernel.sandbox_tables.get("a", {}) == {} and pair.check() == []
    with pytest.raises(Conflict, match="is not shaped"):
        pair.clear_shape("b", network="app")


def test_refusals_and_failures_change_nothing(pair: Engine, kernel, kernel_state) -> None:
    pair.shape("a", network="app", rate="10mbit")
    kernel.qdisc_kinds = frozenset({"sch_tbf"})
    before, rows = kernel_state(kernel), pair.shapings()
    for call, message in (
            (lambda: pair.shape("a", network="app", delay="20ms"), "needs the kernel module sch_netem"),
            (lambda: pair.shape("a", network="ghost", rate="1mbit"), "sandbox a has no endpoint on it"),
            (lambda: pair.shape("a", link="ghost", rate="1mbit"), "is not linked to a"),
            (lambda: pair.shape("a", rate="1mbit"), "--link is needed"),
            (lambda: pair.shape("a", network="app", link="b", rate="1mbit"), "--link is needed"),
            (lambda: pair.clear_shape("a", link="b"), "is not shaped")):
        with pytest.raises((InvalidInput, Conflict), match=message):
            call()
        assert kernel_state(kernel) == before and pair.shapings() == rows
    for step in range(1, 10):  # a failure at each step of a replacement: the old setting is back
        kernel.fail_at = len(kernel.calls) + step
        try:
            pair.shape("a", network="app", rate="20mbit", loss="5%", direction="both")
        except KernelError:
            kernel.fail_at = None
            assert kernel_state(kernel) == before and pair.shapings() == rows and pair.check() == []
            continue
        kernel.fail_at = None
        break
    assert pair.shapings()[0].direction == "both" and pair.check() == []


def test_check_and_gc_set_back_what_was_changed_and_undo_what_was_left_half_way(pair: Engine, kernel) -> None:
    pair.shape("a", network="app", rate="10mbit", loss="5%")
    kernel.links[("a", "eth0")].pop("qdisc")
    kernel.sandbox_tables["a"].clear()
    assert [(d.kind, d.subject) for d in pair.check()] == [("missing", "shaping of a's network app"),
                                                          ("missing", "loss table of a")]
    pair.gc()
    assert pair.check() == [] and qdisc_of(kernel, "a", "eth0").rate == 1_250_000
    with pair._store.transaction():  # a shape that died before marking its row ready
        pair._store.update_shaping(Shaping("a", "app", None, "out", shaping.settings(rate="10mbit", loss="5%"),
                                           "creating"), pair.sandbox("a").id)
    assert ("half-done", "shaping of a's network app") in [(d.kind, d.subject) for d in pair.check()]
    pair.gc()
    assert pair.check() == [] and pair.shapings() == [] and qdisc_of(kernel, "a", "eth0") is None
    assert kernel.sandbox_tables["a"] == {}


def test_a_removed_peer_takes_the_drops_for_its_cable_with_it(pair: Engine, kernel) -> None:
    pair.shape("a", link="b", loss="5%")
    assert kernel.sandbox_tables["a"] != {}
    pair.remove_sandbox("b")
    assert pair.shapings() == [] and kernel.sandbox_tables["a"] == {} and pair.check() == []
    pair.create_sandbox("b", networks=["app"])
    pair.link("a", "b")  # the same names again: no drop is waiting for them
    assert kernel.sandbox_tables["a"] == {}


def test_gc_removes_drops_a_dead_disconnect_left_for_an_interface_that_went(pair: Engine, kernel) -> None:
    pair.shape("a", network="app", loss="5%")
    endpoint = pair.sandbox("a").endpoint("app")
    with pair._store.transaction():  # `disconnect` killed before it rewrote the table
        pair._store.set_endpoint_state(endpoint.id, "removing")
    pair.gc()
    assert pair.sandbox("a").endpoints == () and pair.shapings() == [] and kernel.sandbox_tables["a"] == {}
    assert pair.check() == []
