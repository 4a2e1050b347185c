"""--network host and container:NAME (nsnet.modes) on the fake kernel: validation, ledger rows,
refusals that change nothing, rm of a donor, check/gc."""

import pytest

from nsnet import faults
from nsnet.engine import Engine
from nsnet.errors import Conflict, InvalidInput, NotFound


@pytest.fixture
def snapshot(engine, kernel, kernel_state):
    def take():
        return kernel_state(kernel), engine.networks(), engine.sandboxes()

    return take


def test_host_mode_makes_no_namespace_and_gives_nothing_of_its_own(engine: Engine, kernel, snapshot) -> None:
    before = snapshot()
    made = engine.create_sandbox("h", networks=["host"], labels=["tier=edge"])
    assert (made.network_mode, made.endpoints, made.netns, made.state) == ("host", (), "", "ready")
    assert snapshot()[0] == before[0]  # no kernel object, no default network
    assert engine.networks() == [] and "h" not in kernel.netns
    assert made.to_dict()["NetworkMode"] == "host" and made.to_dict()["NetNS"] == ""
    assert engine.check() == []
    assert engine.gc() == [] and engine.sandbox("h").network_mode == "host"  # not a missing namespace
    engine.remove_sandbox("h", force=True)
    assert snapshot() == before


@pytest.mark.parametrize("kwargs, reason", [
    ({"networks": ["host", "app"]}, "cannot be joined with other networks"),
    ({"networks": ["app", "container:a"]}, "cannot be joined with other networks"),
    ({"networks": ["host"], "publish": ["80"]}, "-p cannot be given"),
    ({"networks": ["host"], "ip": "10.31.0.9"}, "--ip cannot be given"),
    ({"networks": ["host"], "aliases": ["web"]}, "--alias cannot be given"),
    ({"networks": ["container:a"], "publish": ["8080:80"], "ip6": "fd00::9"}, "--ip6, -p cannot be given"),
    ({"networks": ["container:b"]}, "a sandbox cannot join itself"),
    ({"networks": ["container:bad name"]}, "network"),
])
def test_mode_refusals_are_one_line_and_change_nothing(engine: Engine, snapshot, kwargs, reason) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("a", networks=["app"])
    before = snapshot()
    with pytest.raises(InvalidInput) as caught:
        engine.create_sandbox("b", **kwargs)
    assert caught.value.field == "network" and reason in str(caught.value) and "\n" not in str(caught.value)
    assert snapshot() == before


def test_host_is_a_reserved_network_name(engine: Engine) -> None:
    with pytest.raises(InvalidInput, match="is reserved .--network host"):
        engine.create_network("host")


def test_a_joiner_shares_its_donor_and_chains_resolve_to_the_donor(engine: Engine, kernel, snapshot) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    before = snapshot()
    side = engine.create_sandbox("side", networks=["container:web"])
    assert (side.network_mode, side.donor, side.handle, side.netns) == ("container:web", "web", "web",
                                                                        "/run/netns/web")
    third = engine.create_sandbox("third", networks=["container:side"])  # joins web, not side
    assert third.network_mode == "container:web"
    assert snapshot()[0] == before[0] and "side" not in kernel.netns
    assert engine.check() == [] and not [d for d in engine.gc() if "forgot" in d]
    assert [s.name for s in engine.sandboxes()] == ["web", "side", "third"]
    with pytest.raises(NotFound):
        engine.create_sandbox("x", networks=["container:nobody"])


def test_a_joiners_networks_are_its_donors(engine: Engine, snapshot) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("db", subnet="10.32.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    engine.create_sandbox("side", networks=["container:web"])
    engine.create_sandbox("h", networks=["host"])
    before = snapshot()
    for call, message in ((lambda: engine.connect("db", "side"), "shares sandbox 'web''s namespace"),
                          (lambda: engine.disconnect("app", "side"), "change them there"),
                          (lambda: engine.connect("db", "h"), "is on the host's network"),
                          (lambda: engine.link("side", "h"), "namespace")):
        with pytest.raises(Conflict, match=message):
            call()
    assert snapshot() == before


def test_rm_of_a_donor_is_refused_while_joined_and_rm_f_takes_the_joiners(engine: Engine, kernel, snapshot) -> None:
    before = snapshot()
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    engine.create_sandbox("side", networks=["container:web"])
    engine.create_sandbox("more", networks=["container:web"])
    during = snapshot()
    with pytest.raises(Conflict) as caught:
        engine.remove_sandbox("web")
    assert str(caught.value) == ("sandbox 'web' has sandboxes in its namespace (more, side, --network container:);"
                                 " remove them or use -f, which removes them too")
    assert snapshot() == during
    engine.remove_sandbox("side")  # a joiner's rm leaves the donor's namespace alone
    assert "web" in kernel.netns and [s.name for s in engine.sandboxes()] == ["web", "more"]
    engine.remove_sandbox("web", force=True)
    assert engine.sandboxes() == []
    engine.remove_network("app")
    assert snapshot()[0]["netns"] == set() and snapshot()[0]["links"] == {} and snapshot()[1:] == before[1:]


def test_a_donor_that_is_not_ready_cannot_be_joined(engine: Engine, monkeypatch) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    monkeypatch.setattr(faults, "point", lambda where: (_ for _ in ()).throw(KeyboardInterrupt) if where == "applied"
                        else None)
    with pytest.raises(KeyboardInterrupt):
        engine.create_sandbox("web", networks=["app"])
    monkeypatch.undo()
    assert engine.sandbox("web").state == "creating"
    with pytest.raises(Conflict, match="left creating"):
        engine.create_sandbox("side", networks=["container:web"])


def test_gc_forgets_a_mode_sandbox_left_creating_and_joiners_of_a_lost_namespace(engine: Engine, kernel,
                                                                                  monkeypatch) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    engine.create_sandbox("side", networks=["container:web"])
    monkeypatch.setattr(faults, "point", lambda where: (_ for _ in ()).throw(KeyboardInterrupt) if where == "applied"
                        else None)
    with pytest.raises(KeyboardInterrupt):
        engine.create_sandbox("h", networks=["host"])
    monkeypatch.undo()
    assert any(d.kind == "half-done" and d.subject == "sandbox h" for d in engine.check())
    assert "forgot sandbox h (--network host), left creating" in engine.gc()
    kernel.delete_netns("web")  # behind nsnet's back
    done = engine.gc()
    assert "forgot sandbox side: the namespace it joined (web's) is gone" in done
    assert engine.sandboxes() == []
