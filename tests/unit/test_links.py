"""Links: what a user may ask (one-line errors naming the field), how ends are named, and the
engine's ledger, rollback, check and gc around them (on a FakeKernel)."""

from __future__ import annotations

from ipaddress import ip_interface

import pytest

from nsnet import links
from nsnet.engine import Engine
from nsnet.errors import Conflict, InvalidInput, KernelError, NotFound


def test_addresses_are_parsed_per_end_and_checked_against_each_other() -> None:
    assert links.addresses(["a=10.9.0.1/30", "b=10.9.0.2/30", "a=fd09::1/64"], "a", "b") == {
        "a": (ip_interface("10.9.0.1/30"), ip_interface("fd09::1/64")), "b": (ip_interface("10.9.0.2/30"),)}
    assert links.addresses([], "a", "b") == {"a": (), "b": ()}
    for items, reason in ((["c=10.9.0.1/30"], "must be a=CIDR or b=CIDR"), (["a10.9.0.1/30"], "must be a=CIDR"),
                          (["a=10.9.0.1"], None), (["a=nope/30"], "CIDR"),
                          (["a=10.9.0.0/30"], "network or broadcast"), (["a=127.0.0.2/8"], "loopback"),
                          (["a=fe80::1/64"], "link-local"),
                          (["a=10.9.0.1/30", "a=10.9.0.5/30"], "second IPv4 address for a"),
                          (["a=10.9.0.1/30", "b=10.9.0.1/30"], "is a's address too"),
                          (["a=10.9.0.1/30", "b=10.9.0.6/30"], "not in a's subnet 10.9.0.0/30")):
        if reason is None:  # a /32 alone is fine: routes can reach it
            assert links.addresses(items, "a", "b")["a"] == (ip_interface("10.9.0.1/32"),)
            continue
        with pytest.raises(InvalidInput) as caught:
            links.addresses(items, "a", "b")
        assert caught.value.field == "--ip" and reason in caught.value.reason, items
    with pytest.raises(InvalidInput, match="--mtu"):
        links.mtu(67)
    assert links.mtu(9000) == 9000


def test_ends_are_named_after_the_other_sandbox_unless_that_cannot_be_an_interface() -> None:
    assert links.ifname("db", {"eth0"}) == "db"
    assert links.ifname("eth1", {"eth0"}) == "link0"  # a network's endpoint would take it
    assert links.ifname("lo", set()) == "link0"
    assert links.ifname("a-very-long-sandbox-name", {"link0"}) == "link1"
    assert links.ifname("db", {"db", "link0"}) == "link1"


def test_a_link_is_made_checked_repaired_and_removed(engine: Engine, kernel) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    for name in ("a", "b"):
        engine.create_sandbox(name, networks=["app"])
    made = engine.link("a", "b", ips=["a=10.9.0.1/30", "b=10.9.0.2/30", "b=fd09::2/64", "a=fd09::1/64"], mtu=9000)
    assert [(e.sandbox, e.ifname, [str(x) for x in e.addresses]) for e in made.ends] == [
        ("a", "b", ["10.9.0.1/30", "fd09::1/64"]), ("b", "a", ["10.9.0.2/30", "fd09::2/64"])]
    assert kernel.links[("a", "b")]["mtu"] == 9000 and kernel.links[("b", "a")]["up"] is True
    assert [lk.state for lk in engine.links()] == ["ready"] and engine.check() == []
    with pytest.raises(Conflict, match="linked already"):
        engine.link("b", "a")
    kernel.delete_link("a", "b")  # the kernel loses it: check says so, gc makes it again
    assert [(d.kind, d.subject) for d in engine.check()] == [("missing", "link a-b")]
    assert "made link a-b again" in engine.gc() and engine.check() == []
    engine.unlink("b", "a")
    assert engine.links() == [] and ("a", "b") not in kernel.links and engine.check() == []
    with pytest.raises(Conflict, match="not linked"):
        engine.unlink("a", "b")


def test_bad_links_change_nothing_and_a_failure_is_rolled_back(engine: Engine, kernel, kernel_state) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    for name in ("a", "b"):
        engine.create_sandbox(name, networks=["app"])
    before = kernel_state(kernel)
    with pytest.raises(InvalidInput, match="a link joins two sandboxes"):
        engine.link("a", "a")
    with pytest.raises(NotFound):
        engine.link("a", "ghost")
    for step in range(1, 20):  # a failure at each step: nothing is left
        kernel.fail_at = len(kernel.calls) + step
        try:
            engine.link("a", "b", ips=["a=10.9.0.1/30", "b=10.9.0.2/30", "a=fd09::1/64", "b=fd09::2/64"])
        except KernelError:
            kernel.fail_at = None
            assert kernel_state(kernel) == before and engine.links() == [] and engine.check() == []
            continue
        kernel.fail_at = None
        break
    assert len(engine.links()) == 1
    engine.remove_sandbox("b")  # its links go with it
    assert engine.links() == [] and ("a", "b") not in kernel.links and engine.check() == []


def test_gc_undoes_a_link_left_half_way(engine: Engine, kernel) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    for name in ("a", "b"):
        engine.create_sandbox(name, networks=["app"])
    made = engine.link("a", "b")
    with engine._store.transaction():
        engine._store.set_link_state(made.id, "creating")  # a `link` killed before it was recorded ready
    assert ("half-done", "link a-b") in [(d.kind, d.subject) for d in engine.check()]
    assert "forgot link a-b, left creating" in engine.gc()
    assert engine.links() == [] and ("a", "b") not in kernel.links and engine.check() == []

