"""Containers whose namespace a runtime owns (CNI): attach, detach, and the ledger's other verbs
around them, against the fake kernel."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from nsnet.errors import Conflict, InvalidInput, KernelError
from nsnet.model import PortMapping

NETNS = "/run/netns/cni-7f3a"  # the runtime's: made and deleted by it, never by nsnet
CID = "7f3a9c2e51d04b8aa1c2d3e4f5061728"
DUAL = ["10.31.0.0/24", "fd00:31::/64"]


@pytest.fixture
def runtime_netns(kernel):
    kernel.netns.add(NETNS)
    return NETNS


def runtime_deletes_its_namespace(kernel, path: str = NETNS) -> None:
    """What `podman rm` does before (or instead of) DEL: the namespace goes, and its veths."""
    calls = len(kernel.calls)
    kernel.delete_netns(path)
    del kernel.calls[calls:]


def test_a_container_attaches_with_the_runtimes_names_in_its_namespace(engine, kernel, runtime_netns):
    engine.create_network("app", subnet=DUAL)
    endpoint = engine.attach_container(CID, NETNS, "net1", "app")
    assert (endpoint.sandbox, endpoint.ifname, endpoint.netns, endpoint.where) == ("cni-7f3a9c2e51d0", "net1",
                                                                                   NETNS, NETNS)
    assert [str(a) for a in endpoint.addresses] == ["10.31.0.2/24", "fd00:31::2/64"]
    assert (NETNS, "net1") in kernel.links
    assert kernel.links[(None, endpoint.host_ifname)]["peer_ns"] == NETNS
    assert kernel.routes[(NETNS, 4)] == (IPv4Address("10.31.0.1"), "net1")
    assert kernel.routes[(NETNS, 6)] == (IPv6Address("fd00:31::1"), "net1")
    assert "cni-7f3a9c2e51d0" not in kernel.netns and not kernel.etc  # nothing of nsnet's own kind
    (sandbox,) = engine.sandboxes()
    assert (sandbox.name, sandbox.container_id, sandbox.netns, sandbox.handle) == ("cni-7f3a9c2e51d0", CID, NETNS,
                                                                                   NETNS)
    assert sandbox.to_dict()["ContainerID"] == CID and sandbox.to_dict()["NetNS"] == NETNS
    assert engine.check() == []


def test_a_second_network_joins_the_same_container_and_names_are_checked(engine, kernel, runtime_netns):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("side", subnet="10.32.0.0/24", internal=True)
    engine.attach_container(CID, NETNS, "eth0", "app")
    side = engine.attach_container(CID, NETNS, "eth1", "side")
    assert not side.default_route  # internal: never the default route
    (sandbox,) = engine.sandboxes()
    assert [(e.network, e.ifname) for e in sandbox.endpoints] == [("app", "eth0"), ("side", "eth1")]
    with pytest.raises(Conflict, match="already attached to network 'app'"):
        engine.attach_container(CID, NETNS, "eth2", "app")
    engine.create_network("third", subnet="10.33.0.0/24")
    with pytest.raises(Conflict, match="already has an interface 'eth1'"):
        engine.attach_container(CID, NETNS, "eth1", "third")
    with pytest.raises(Conflict, match="is attached in namespace"):
        engine.attach_container(CID, "/run/netns/other", "eth2", "third")
    assert engine.check() == []


def test_a_requested_mac_and_address_are_used_and_conflicts_refused(engine, kernel, runtime_netns):
    engine.create_network("app", subnet="10.31.0.0/24")
    endpoint = engine.attach_container(CID, NETNS, "eth0", "app", ip="10.31.0.40", mac="0A:58:0A:1F:00:28")
    assert (str(endpoint.address), endpoint.mac) == ("10.31.0.40/24", "0a:58:0a:1f:00:28")
    assert kernel.links[(NETNS, "eth0")]["mac"] == "0a:58:0a:1f:00:28"
    kernel.netns.add("/run/netns/second")
    with pytest.raises(Conflict, match="MAC address 0a:58:0a:1f:00:28 is taken"):
        engine.attach_container("second", "/run/netns/second", "eth0", "app", mac="0a:58:0a:1f:00:28")
    for bad, field in (("01:00:5e:00:00:01", "mac"), ("zz", "mac")):
        with pytest.raises(InvalidInput, match=f"invalid {field}"):
            engine.attach_container("second", "/run/netns/second", "eth0", "app", mac=bad)
    with pytest.raises(InvalidInput, match="interface name"):
        engine.attach_container("second", "/run/netns/second", "a-name-far-too-long", "app")
    with pytest.raises(InvalidInput, match="netns"):
        engine.attach_container("second", "relative/path", "eth0", "app")
    assert [s.container_id for s in engine.sandboxes()] == [CID]


def test_a_derived_mac_taken_by_a_chosen_one_is_not_reused(engine, kernel, runtime_netns):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.attach_container(CID, NETNS, "eth0", "app", mac="02:4e:0a:1f:00:02")  # 10.31.0.2's own, taken early
    assert engine.sandboxes()[0].endpoints[0].address.ip == IPv4Address("10.31.0.2")
    web = engine.create_sandbox("web", networks=["app"]).endpoint("app")
    assert str(web.address.ip) == "10.31.0.3" and web.mac == "02:4e:0a:1f:00:03"


def test_detach_is_idempotent_and_releases_everything_at_once(engine, kernel, runtime_netns):
    engine.create_network("app", subnet="10.31.0.0/24")
    before = {k: v for k, v in kernel.nft_elements.items()}
    endpoint = engine.attach_container(CID, NETNS, "eth0", "app", publish=["8080:80"])
    assert engine.detach_container("unknown", "app") is False
    assert engine.detach_container(CID, "app", ifname="eth9") is False  # not that interface
    assert engine.detach_container(CID, "app", ifname="eth0") is True
    assert engine.detach_container(CID, "app", ifname="eth0") is False
    assert engine.sandboxes() == [] and kernel.nft_elements == before
    assert (None, endpoint.host_ifname) not in kernel.links and NETNS in kernel.netns  # the runtime's stays
    # The address and the port are free again at once.
    again = engine.attach_container(CID, NETNS, "eth0", "app", ip="10.31.0.2", publish=["8080:80"])
    assert again.ports == (PortMapping(None, 8080, 80),)


def test_detach_after_the_runtime_deleted_the_namespace(engine, kernel, runtime_netns):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.attach_container(CID, NETNS, "eth0", "app", publish=["8080:80"])
    runtime_deletes_its_namespace(kernel)
    assert engine.detach_container(CID, "app") is True
    assert engine.sandboxes() == [] and engine.check() == []


def test_nsnets_own_verbs_leave_a_container_to_its_runtime(engine, kernel, runtime_netns):
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("side", subnet="10.32.0.0/24")
    engine.attach_container(CID, NETNS, "eth0", "app")
    name = engine.sandboxes()[0].name
    for verb in (lambda: engine.remove_sandbox(name), lambda: engine.remove_sandbox(name, force=True),
                 lambda: engine.connect("side", name), lambda: engine.disconnect("app", name),
                 lambda: engine.popen(name, ["true"])):
        with pytest.raises(Conflict, match="its runtime owns it"):
            verb()
    assert NETNS in kernel.netns and len(engine.sandboxes()[0].endpoints) == 1


def test_check_and_gc_cover_a_container(engine, kernel, runtime_netns):
    engine.create_network("app", subnet="10.31.0.0/24")
    endpoint = engine.attach_container(CID, NETNS, "eth0", "app")
    kernel.addresses.discard((NETNS, "eth0", endpoint.address))
    assert [str(d) for d in engine.check()] == [f"missing: sandbox cni-7f3a9c2e51d0: eth0 lacks its address "
                                                f"{endpoint.address}"]
    engine.gc()
    assert engine.check() == [] and (NETNS, "eth0", endpoint.address) in kernel.addresses
    runtime_deletes_its_namespace(kernel)
    assert [str(d) for d in engine.check()] == [f"missing: sandbox cni-7f3a9c2e51d0: its namespace {NETNS} is gone"]
    assert "forgot sandbox cni-7f3a9c2e51d0: its namespace is gone" in engine.gc()
    assert engine.sandboxes() == [] and engine.check() == []
    assert not [c for c in kernel.calls if c[0] in ("delete_netns", "remove_etc_files")]


def test_a_failed_attach_leaves_nothing(engine, kernel, runtime_netns, kernel_state):
    engine.create_network("app", subnet="10.31.0.0/24")
    pristine = kernel_state(kernel)
    kernel.fail_at = len(kernel.calls) + 3
    with pytest.raises(KernelError, match="injected failure"):
        engine.attach_container(CID, NETNS, "eth0", "app", publish=["8080:80"])
    kernel.fail_at = None
    assert engine.sandboxes() == [] and kernel_state(kernel) == pristine
    assert str(engine.attach_container(CID, NETNS, "eth0", "app").address) == "10.31.0.2/24"


def test_a_container_whose_only_attach_died_half_way_is_forgotten(engine, kernel, runtime_netns):
    """kill -9 during a container's first ADD leaves its sandbox row with an endpoint 'creating':
    gc undoes the endpoint and forgets the container."""
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.attach_container(CID, NETNS, "eth0", "app")
    with engine._store.transaction():
        (endpoint,) = engine.sandboxes()[0].endpoints
        engine._store.set_endpoint_state(endpoint.id, "creating")
    assert "forgot container 7f3a9c2e51d0: it has no attachment left" in engine.gc()
    assert engine.sandboxes() == [] and engine.check() == [] and NETNS in kernel.netns


def test_the_runtimes_del_forgets_a_container_left_without_attachments(engine, kernel, runtime_netns):
    engine.create_network("app", subnet="10.31.0.0/24")
    with engine._store.transaction():
        engine._store.add_sandbox("row", "cni-7f3a9c2e51d0", "ready", CID, NETNS)
    assert engine.detach_container(CID, "app", "eth0") is False
    assert engine.sandboxes() == []


def test_two_first_attaches_of_one_container_record_it_once(engine, kernel, runtime_netns, monkeypatch):
    """Two ADDs (two networks) racing for a new container: the second finds the first's record
    under the container's lock instead of failing on the sandbox name."""
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("side", subnet="10.32.0.0/24")
    real = engine._store.sandbox_of_container
    engine.attach_container(CID, NETNS, "eth0", "app")
    stale = [None]  # the second ADD's unlocked read, made before the first ADD committed

    def read(container_id):
        return stale.pop() if stale else real(container_id)

    monkeypatch.setattr(engine._store, "sandbox_of_container", read)
    engine.attach_container(CID, NETNS, "eth1", "side")
    (sandbox,) = engine.sandboxes()
    assert [(e.network, e.ifname) for e in sandbox.endpoints] == [("app", "eth0"), ("side", "eth1")]


def test_a_container_serves_by_its_labels_and_by_name_from_its_add_to_its_del(engine, kernel, runtime_netns):
    """ADD makes a container a service's backend as connect makes a sandbox one; DEL takes it
    away first, and its UDP flows with it. Its labels are its first attachment's."""
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_service("web", network="app", ports=["80:8080", "53/udp"], selector=["app=web"])
    calls = len(kernel.calls)
    with pytest.raises(InvalidInput, match="invalid label 'bad key=x'"):
        engine.attach_container(CID, NETNS, "eth0", "app", labels=["bad key=x"])
    assert engine.sandboxes() == [] and len(kernel.calls) == calls  # refused before any change
    engine.attach_container(CID, NETNS, "eth0", "app", labels=["app=web", "tier=front"])
    engine.create_service("named", network="app", ports=["80"], backends=["cni-7f3a9c2e51d0"])
    assert served(engine) == {"named": ["cni-7f3a9c2e51d0"], "web": ["cni-7f3a9c2e51d0"]}
    assert engine.check() == []  # the kernel holds the container as the ledger does
    engine.create_network("side", subnet="10.32.0.0/24", internal=True)
    engine.attach_container(CID, NETNS, "eth1", "side", labels=["app=other"])
    assert engine.sandboxes()[0].labels == (("app", "web"), ("tier", "front"))
    before = len(kernel.calls)
    assert engine.detach_container(CID, "app", "eth0") is True
    removal = [c[0] for c in kernel.calls[before:]]
    assert removal == ["nft", "delete_link", "nft"]  # the backends first, then the link, then its rules
    assert served(engine) == {"named": [], "web": []} and engine.check() == []
    assert kernel.forgotten_flows == [("10.211.0.1", [53], [])]
    engine.attach_container(CID, NETNS, "eth0", "app")  # back: by name and by its labels again
    assert served(engine) == {"named": ["cni-7f3a9c2e51d0"], "web": ["cni-7f3a9c2e51d0"]}
    assert engine.check() == []


def served(engine) -> dict[str, list[str]]:
    """Each service's backends by sandbox name (check() holds the kernel to their addresses)."""
    return {service.name: [name for name, _ in backends] for service, backends in engine.services()}
