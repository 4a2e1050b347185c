"""Services: what a user may ask (one-line errors naming the field), who serves, and the engine's
ledger, firewall elements, rollback and gc around them (on a FakeKernel that keeps nft's state)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from nsnet import services
from nsnet.engine import Engine
from nsnet.errors import Conflict, InvalidInput, KernelError, NotFound
from nsnet.model import ServicePort


def test_ports_selectors_and_vips_are_validated() -> None:
    assert services.ports(["80:8080", "53/udp", "9000/sctp"]) == (
        ServicePort("tcp", 80, 8080), ServicePort("udp", 53, 53), ServicePort("sctp", 9000, 9000))
    for specs, reason in ((["80/icmp"], "must be one of tcp, udp, sctp"), (["0"], "from 1 to 65535"),
                          (["80:70000"], "from 1 to 65535"), (["http"], "PORT[:TARGET_PORT]"),
                          (["80", "80:81"], "repeats port 80/tcp"), ([], "at least one port")):
        with pytest.raises(InvalidInput) as caught:
            services.ports(specs)
        assert caught.value.field == "-p" and reason in caught.value.reason, specs
    assert services.selector(["app=web", "tier=front"]) == (("app", "web"), ("tier", "front"))
    with pytest.raises(InvalidInput, match="--selector"):
        services.selector(["app"])
    within = services.service_ranges(services.DEFAULT_RANGES)
    assert within == {4: IPv4Network("10.211.0.0/16"), 6: IPv6Network("fd00:6e73:7663::/112")}
    assert str(services.vip("10.211.3.4", within)) == "10.211.3.4"
    assert str(services.vip("fd00:6e73:7663::9", within)) == "fd00:6e73:7663::9"
    for text in ("10.211.0.0", "10.211.255.255", "10.9.0.1", "fd00::1", "nope"):
        with pytest.raises(InvalidInput, match="--vip"):
            services.vip(text, within)
    assert str(services.free_vip(IPv4Network("10.211.0.0/30"), {"10.211.0.1", "fd00::1"})) == "10.211.0.2"
    assert services.free_vip(IPv4Network("10.211.0.0/30"), {"10.211.0.1", "10.211.0.2"}) is None
    assert str(services.free_vip(IPv6Network("fd00::/126"), {"fd00::1", "10.211.0.2"})) == "fd00::2"
    assert services.service_ranges("10.0.0.0/8")[4].prefixlen == 8
    for text, reason in (("fd00::/48", "within one /64"), ("10.0.0.0/31", "at least 4 addresses"),
                         ("10.1.0.0/16,10.2.0.0/16", "second IPv4 block"), ("nope", "not a CIDR block")):
        with pytest.raises(InvalidInput, match="NSNET_SERVICE_RANGE") as caught:
            services.service_ranges(text)
        assert reason in caught.value.reason, text
    assert services.affinity(None) is None and services.affinity("none") is None
    assert services.affinity("client-ip") == 10800 and services.affinity("client-ip=600") == 600
    for text in ("client-ip=0", "client-ip=86401", "client-ip=1m", "cookie"):
        with pytest.raises(InvalidInput, match="--affinity"):
            services.affinity(text)
    two = services.ports(["53/udp", "53/tcp", "80"])
    assert [p.node_port for p in services.publish(["30053:53", "30080:80"], two)] == [30053, 30053, 30080]
    assert [p.node_port for p in services.publish(["30080"], services.ports(["80"]))] == [30080]
    for specs, reason in ((["30080"], "must name the service port"), (["30080:81"], "not a port of the service"),
                          (["0:80"], "from 1 to 65535"), (["x"], "HOST_PORT[:PORT]"),
                          (["30080:80", "30081:80"], "a second time"), (["30080:80", "30080:53"], "repeats host port")):
        with pytest.raises(InvalidInput) as caught:
            services.publish(specs, two)
        assert caught.value.field == "--publish" and reason in caught.value.reason, specs


def test_services_follow_their_backends_in_the_ledger_and_the_firewall(engine: Engine, kernel) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web1", networks=["app"], labels=["app=web"])
    engine.create_sandbox("web2", networks=["app"], labels=["app=web"])
    engine.create_sandbox("db", networks=["app"])
    web = engine.create_service("web", network="app", ports=["80:8080"], selector=["app=web"])
    named = engine.create_service("data", network="app", ports=["5432"], backends=["db"])
    assert (web.vips, named.vips) == ((IPv4Address("10.211.0.1"),), (IPv4Address("10.211.0.2"),))
    assert [(s.name, b) for s, b in engine.services()] == [
        ("data", [("db", ("10.31.0.4",))]), ("web", [("web1", ("10.31.0.2",)), ("web2", ("10.31.0.3",))])]
    assert engine.check() == []
    engine.create_sandbox("web3", networks=["app"], labels=["app=web", "extra=1"])
    engine.disconnect("app", "web1")
    engine.remove_sandbox("db")
    assert [(s.name, b) for s, b in engine.services()] == [
        ("data", []), ("web", [("web2", ("10.31.0.3",)), ("web3", ("10.31.0.5",))])]
    assert engine.check() == []  # the kernel followed every change
    engine.connect("app", "web1")
    assert [b for _, b in engine.services()][1][0][0] == "web1" and engine.check() == []

    with pytest.raises(Conflict, match="already exists"):
        engine.create_service("web", network="app", ports=["80"], backends=["web2"])
    with pytest.raises(Conflict, match="another service's"):
        engine.create_service("x", network="app", ports=["80"], backends=["web2"], vips=["10.211.0.1"])
    with pytest.raises(InvalidInput, match="no IPv6 subnet"):
        engine.create_service("x", network="app", ports=["80"], backends=["web2"], vips=["fd00:6e73:7663::5"])
    with pytest.raises(Conflict, match="overlaps the service range 10.211.0.0/16"):
        engine.create_network("clash", subnet="10.211.8.0/24")
    with pytest.raises(NotFound):
        engine.create_service("x", network="app", ports=["80"], backends=["ghost"])
    engine.create_network("other", subnet="10.32.0.0/24")
    with pytest.raises(InvalidInput, match="is not on network"):
        engine.create_service("x", network="other", ports=["80"], backends=["web2"])
    engine.create_service("idle", network="other", ports=["80"], selector=["app=idle"])  # none yet: refused
    with pytest.raises(Conflict, match=r"has services \(idle\)"):
        engine.remove_network("other")
    engine.remove_network("other", force=True)  # takes its services
    assert [s.name for s, _ in engine.services()] == ["data", "web"] and engine.check() == []

    engine.remove_service("web")
    engine.remove_service("data")
    assert engine.services() == [] and engine.check() == []
    with pytest.raises(NotFound):
        engine.remove_service("web")


def test_a_failed_service_or_backend_change_leaves_nothing(engine: Engine, kernel, kernel_state) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web1", networks=["app"], labels=["app=web"])
    before = kernel_state(kernel)
    kernel.fail_at = len(kernel.calls) + 1
    with pytest.raises(KernelError):
        engine.create_service("web", network="app", ports=["80"], selector=["app=web"])
    kernel.fail_at = None
    assert engine.services() == [] and kernel_state(kernel) == before and engine.check() == []
    engine.create_service("web", network="app", ports=["80"], selector=["app=web"])
    before = kernel_state(kernel)
    for step in range(1, 40):  # a sandbox that would serve it fails at every step: all undone
        kernel.fail_at = len(kernel.calls) + step
        try:
            engine.create_sandbox("web2", networks=["app"], labels=["app=web"])
        except KernelError:
            kernel.fail_at = None
            assert kernel_state(kernel) == before and [b for _, b in engine.services()] == [[("web1", ("10.31.0.2",))]]
            continue
        kernel.fail_at = None
        break
    assert [b for _, b in engine.services()] == [[("web1", ("10.31.0.2",)), ("web2", ("10.31.0.3",))]]
    assert engine.check() == []


def test_gc_forgets_a_service_left_half_way(engine: Engine, kernel) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web1", networks=["app"], labels=["app=web"])
    web = engine.create_service("web", network="app", ports=["80"], selector=["app=web"])
    with engine._store.transaction():
        engine._store.set_service_state(web.id, "removing")  # a `service rm` killed half-way
    assert ("half-done", "service web") in [(d.kind, d.subject) for d in engine.check()]
    assert "forgot service web, left removing" in engine.gc()
    assert engine.services() == [] and engine.check() == []


def test_udp_flows_are_forgotten_for_backends_that_go_and_tcp_ones_are_left(engine: Engine, kernel) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    for name in ("a", "b"):
        engine.create_sandbox(name, networks=["app"], labels=["app=dns"])
    engine.create_service("dns", network="app", ports=["53/udp", "53/tcp", "5353/udp"], selector=["app=dns"])
    engine.create_service("web", network="app", ports=["80"], selector=["app=dns"])
    engine.create_sandbox("c", networks=["app"], labels=["app=dns"])  # one more: nothing to forget
    assert kernel.forgotten_flows == []
    engine.disconnect("app", "a")
    assert kernel.forgotten_flows == [("10.211.0.1", [53, 5353], ["10.31.0.3", "10.31.0.4"])]
    engine.remove_service("dns")  # deleted: every flow to its VIP
    assert kernel.forgotten_flows[-1] == ("10.211.0.1", [53, 5353], [])
    assert len(kernel.forgotten_flows) == 2  # never for the TCP-only service


def test_dual_stack_services_get_a_vip_per_family_and_backends_in_both(engine: Engine, kernel) -> None:
    engine.create_network("app", subnet=["10.31.0.0/24", "fd31::/64"], ipv6=True)
    engine.create_sandbox("web1", networks=["app"], labels=["app=web"])
    web = engine.create_service("web", network="app", ports=["80"], selector=["app=web"],
                                vips=["fd00:6e73:7663::80"])
    assert web.vips == (IPv4Address("10.211.0.1"), IPv6Address("fd00:6e73:7663::80"))
    assert engine.services()[0][1] == [("web1", ("10.31.0.2", "fd31::2"))]
    engine.create_network("six", subnet="fd32::/64", ipv4=False, ipv6=True)
    engine.create_sandbox("v6", networks=["six"], labels=["app=web"])
    only = engine.create_service("only6", network="six", ports=["80"], selector=["app=web"])
    assert only.vips == (IPv6Address("fd00:6e73:7663::1"),)
    assert engine.check() == []
    engine.remove_sandbox("web1")
    assert engine.services()[1][1] == [] and engine.check() == []


def test_affinity_and_host_ports_are_kept_and_their_leftovers_forgotten(engine: Engine, kernel) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("a", networks=["app"], labels=["app=web"], publish=["8080:80"])
    engine.create_sandbox("b", networks=["app"], labels=["app=web"])
    web = engine.create_service("web", network="app", ports=["80"], selector=["app=web"], affinity="client-ip=60",
                                publish=["30080"])
    assert web.affinity == 60 and web.ports[0].node_port == 30080
    assert [s for s, _ in engine.services()][0] == web and engine.check() == []
    with pytest.raises(Conflict, match="published by service 'web'"):
        engine.create_service("x", network="app", ports=["80"], selector=["app=web"], publish=["30080"])
    with pytest.raises(Conflict, match="already published"):
        engine.create_service("x", network="app", ports=["80"], selector=["app=web"], publish=["8080"])
    with pytest.raises(Conflict, match="already published"):
        engine.create_sandbox("c", networks=["app"], publish=["30080:80"])
    engine.remove_sandbox("a")
    assert kernel.forgotten_picks == [("10.211.0.1", ["10.31.0.3"])]
    engine.remove_service("web")
    assert kernel.forgotten_picks[-1] == ("10.211.0.1", None) and engine.check() == []
    engine.create_sandbox("c", networks=["app"], publish=["30080:80"])  # free again
