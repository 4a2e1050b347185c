"""Static routes: what a user may ask (one-line errors naming the field) and the engine's ledger,
forwarding, rollback, check and gc around them (on a FakeKernel)."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from nsnet import routes
from nsnet.engine import Engine
from nsnet.errors import Conflict, InvalidInput, KernelError


def test_destinations_and_gateways_are_checked() -> None:
    assert routes.destination("10.3.0.0/30") == ip_network("10.3.0.0/30")
    assert routes.gateway("10.1.0.2", ip_network("10.3.0.0/30")) == ip_address("10.1.0.2")
    for text, reason in (("10.3.0.1/30", "has host bits set"), ("0.0.0.0/0", "default route"), ("::/0", "default"),
                         ("nope", "not a CIDR block"), ("127.0.0.0/8", "loopback"), ("fe80::/64", "link-local")):
        with pytest.raises(InvalidInput) as caught:
            routes.destination(text)
        assert caught.value.field == "DST" and reason in caught.value.reason, text
    for text, reason in (("fd01::2", "is IPv6"), ("10.3.0.1", "cannot lead"), ("x", "not an IP address"),
                         ("127.0.0.1", "cannot lead")):
        with pytest.raises(InvalidInput) as caught:
            routes.gateway(text, ip_network("10.3.0.0/30"))
        assert caught.value.field == "GW" and reason in caught.value.reason, text
    assert routes.reachable(ip_address("10.1.0.2"), [ip_network("10.1.0.0/30")])
    assert not routes.reachable(ip_address("10.1.0.6"), [ip_network("10.1.0.0/30"), ip_network("fd01::/64")])


def test_a_route_switches_forwarding_and_is_checked_repaired_and_removed(engine: Engine, kernel) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    for name in ("a", "r"):
        engine.create_sandbox(name, networks=["app"])
    engine.link("a", "r", ips=["a=10.1.0.1/30", "r=10.1.0.2/30"])
    with pytest.raises(InvalidInput, match="is on none of a's networks or links"):
        engine.add_route("a", "10.3.0.0/24", "10.9.0.1")
    made = engine.add_route("a", "10.3.0.0/24", "10.1.0.2")
    on_app = engine.add_route("a", "10.4.0.0/24", "10.31.0.3")  # via the network too
    assert (str(made), made.state, str(on_app)) == ("10.3.0.0/24 via 10.1.0.2", "ready", "10.4.0.0/24 via 10.31.0.3")
    assert kernel.sandbox_sysctls[("a", "net.ipv4.ip_forward")] == "1"
    assert ("a", "10.3.0.0/24", "10.1.0.2") in kernel.static_routes
    with pytest.raises(Conflict, match="has a route to 10.3.0.0/24 already"):
        engine.add_route("a", "10.3.0.0/24", "10.1.0.2")
    assert engine.check() == []
    kernel.static_routes.discard(("a", "10.3.0.0/24", "10.1.0.2"))
    assert [(d.kind, d.subject) for d in engine.check()] == [("missing", "route of a")]
    assert "added a's route 10.3.0.0/24 via 10.1.0.2 again" in engine.gc() and engine.check() == []
    with pytest.raises(Conflict, match="routes 10.3.0.0/24 via 10.1.0.2 over this link"):
        engine.unlink("a", "r")
    with pytest.raises(Conflict, match="routes 10.4.0.0/24 via 10.31.0.3 over network 'app'"):
        engine.disconnect("app", "a")
    engine.remove_route("a", "10.3.0.0/24")
    assert kernel.sandbox_sysctls[("a", "net.ipv4.ip_forward")] == "1"  # one IPv4 route left
    engine.remove_route("a", "10.4.0.0/24")
    assert kernel.sandbox_sysctls[("a", "net.ipv4.ip_forward")] == "0" and kernel.static_routes == set()
    assert engine.routes() == [] and engine.check() == []


def test_a_failed_route_is_rolled_back_and_a_half_done_one_undone(engine: Engine, kernel, kernel_state) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("a", networks=["app"])
    before = kernel_state(kernel)
    kernel.fail_at = len(kernel.calls) + 2  # forwarding on, then the route fails: forwarding back off
    with pytest.raises(KernelError):
        engine.add_route("a", "10.3.0.0/24", "10.31.0.3")
    kernel.fail_at = None
    assert kernel_state(kernel) == before and kernel.static_routes == set()
    assert kernel.sandbox_sysctls.get(("a", "net.ipv4.ip_forward"), "0") == "0"
    assert engine.routes() == [] and engine.check() == []
    made = engine.add_route("a", "10.3.0.0/24", "10.31.0.3")
    with engine._store.transaction():
        engine._store.set_route_state(made, "removing")  # a `route rm` killed half-way
    assert [(d.kind, d.subject) for d in engine.check()] == [("half-done", "route of a")]
    assert "forgot a's route 10.3.0.0/24 via 10.31.0.3, left removing" in engine.gc()
    assert engine.routes() == [] and kernel.static_routes == set() and engine.check() == []
    engine.add_route("a", "10.3.0.0/24", "10.31.0.3")
    engine.remove_sandbox("a")  # its routes go with it
    assert engine.routes() == []


def test_a_route_over_a_removed_sandboxs_link_is_reported_and_forgotten(engine: Engine, kernel) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    for name in ("a", "r"):
        engine.create_sandbox(name, networks=["app"])
    engine.link("a", "r", ips=["a=10.1.0.1/30", "r=10.1.0.2/30"])
    engine.add_route("a", "10.3.0.0/24", "10.1.0.2")
    engine.remove_sandbox("r")  # the link goes with it, and the kernel drops the route over it
    kernel.static_routes.discard(("a", "10.3.0.0/24", "10.1.0.2"))
    assert [(d.kind, d.subject, d.detail) for d in engine.check()] == [
        ("wrong", "route of a", "10.3.0.0/24 via 10.1.0.2: its gateway is on none of a's networks or links any more"
                                " (gc forgets it)")]
    assert "forgot a's route 10.3.0.0/24 via 10.1.0.2: its gateway is on none of its networks or links any more" \
        in engine.gc()
    assert engine.routes() == [] and engine.check() == []
