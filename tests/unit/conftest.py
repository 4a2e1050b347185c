"""Shared fixtures: a FakeKernel whose nft keeps nft's state rules (NftKernel), an Engine on it
with a private state directory, and checks that compare what the fake kernel holds with what the
ledger says."""

from __future__ import annotations

import copy
import errno
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from nsnet.engine import Engine
from nsnet.errors import KernelError
from nsnet.firewall import render
from nsnet.kernel.fake import FakeKernel

Elements = set[str] | dict[str, str]


def nft_state(transactions: Iterable[list[dict[str, Any]]]) -> dict[tuple[str, str], dict[str, Elements]]:
    """The tables, sets, maps and elements a sequence of nft transactions leaves, as nft would:
    deleting a table or an element that is not there is an error (KeyError here), and so is adding
    a map key already mapped to another value (ValueError here). A set holds its elements; a map
    holds {key: value}, added as [key, value] and deleted by its key alone."""
    tables: dict[tuple[str, str], dict[str, Elements]] = {}
    for commands in transactions:
        for command in commands:
            ((verb, body),) = command.items()
            ((kind, obj),) = body.items()
            if kind == "table" and verb == "add":
                tables.setdefault((obj["family"], obj["name"]), {})
            elif kind == "table" and verb == "delete":
                del tables[(obj["family"], obj["name"])]
            elif kind == "set" and verb == "add":
                tables[(obj["family"], obj["table"])].setdefault(obj["name"], set())
            elif kind == "map" and verb == "add":
                tables[(obj["family"], obj["table"])].setdefault(obj["name"], {})
            elif kind == "element":
                elements = tables[(obj["family"], obj["table"])][obj["name"]]
                for element in obj["elem"]:
                    if isinstance(elements, dict):
                        _map_element(elements, verb, element)
                    elif verb == "add":
                        elements.add(_key(element))
                    else:
                        elements.remove(_key(element))
    return tables


def _key(element: Any) -> str:
    return json.dumps(element, sort_keys=True)


def _map_element(elements: dict[str, str], verb: str, element: Any) -> None:
    if verb == "delete":
        del elements[_key(element)]
        return
    key, value = element
    if elements.setdefault(_key(key), _key(value)) != _key(value):
        raise ValueError(f"map key {key} is already mapped to {elements[_key(key)]}")


class NftKernel(FakeKernel):
    """A FakeKernel whose nft refuses a transaction as nft does, and then applies none of it:
    ENOENT when it deletes what is not there, EEXIST when it remaps a map key. What it accepts
    goes to FakeKernel's own model too (so check and gc see it)."""

    def nft(self, commands: list[dict[str, Any]]) -> None:
        try:
            nft_state([*self.nft_log, commands])
        except KeyError as exc:
            self._mutating("nft", len(commands))
            raise KernelError("nft transaction", errno.ENOENT, f"no such object {exc}") from None
        except ValueError as exc:
            self._mutating("nft", len(commands))
            raise KernelError("nft transaction", errno.EEXIST, str(exc)) from None
        super().nft(commands)


@pytest.fixture(autouse=True)
def _no_address_pool_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NSNET_ADDRESS_POOL", raising=False)


@pytest.fixture
def kernel() -> NftKernel:
    return NftKernel()


@pytest.fixture
def engine(tmp_path, kernel: FakeKernel) -> Iterator[Engine]:
    with Engine(state_dir=str(tmp_path / "state"), kernel=kernel) as made:
        yield made


def live_sysctls(kernel: FakeKernel) -> dict[str, str]:
    """The sysctls the kernel would still have: an interface's (net.*.conf.NAME.*) go with it, which
    FakeKernel does not model (it keeps what was written to a bridge before its deletion)."""
    host_links = {name for ns, name in kernel.links if ns is None}
    return {key: value for key, value in kernel.sysctls.items()
            if ".conf." not in key or key.split(".")[3] in host_links}


@pytest.fixture
def kernel_state() -> Callable[[FakeKernel], dict[str, Any]]:
    """A deep copy of everything a FakeKernel holds but its call log: a failed command must leave
    every one as it found it, the sysctls it set included."""

    def snapshot(kernel: FakeKernel) -> dict[str, Any]:
        return copy.deepcopy({
            "netns": kernel.netns, "links": kernel.links, "addresses": kernel.addresses, "routes": kernel.routes,
            "nft": nft_state(kernel.nft_log), "etc": kernel.etc, "pids": kernel.pids,
            "sysctls": live_sysctls(kernel),
        })

    return snapshot


@pytest.fixture
def assert_matches_ledger() -> Callable[[Engine, FakeKernel], None]:
    """Check that the kernel holds exactly the objects the ledger describes, and nothing else."""

    def check(engine: Engine, kernel: FakeKernel) -> None:
        networks, sandboxes = engine.networks(), engine.sandboxes()
        by_name = {n.name: n for n in networks}
        endpoints = [e for s in sandboxes for e in s.endpoints]
        assert all(n.state == "ready" for n in networks)
        assert all(s.state == "ready" for s in sandboxes)
        assert all(e.state == "ready" for e in endpoints)
        assert kernel.netns == {s.name for s in sandboxes}
        assert set(kernel.etc) == {s.name for s in sandboxes}
        assert set(kernel.links) == (
            {(None, n.bridge) for n in networks}
            | {(None, e.host_ifname) for e in endpoints}
            | {(e.sandbox, e.ifname) for e in endpoints}
        )
        assert {e.host_ifname: kernel.links[(None, e.host_ifname)]["master"] for e in endpoints} == {
            e.host_ifname: by_name[e.network].bridge for e in endpoints
        }
        group = engine.owner.group
        assert {name: link["group"] for (ns, name), link in kernel.links.items() if ns is None} == {
            name: group for ns, name in kernel.links if ns is None}
        assert {e.host_ifname: port_state(kernel.links[(None, e.host_ifname)]) for e in endpoints} == {
            e.host_ifname: {"up": True, "mtu": by_name[e.network].mtu, "hairpin": True, "learning": False,
                            "locked": True, "isolated": not by_name[e.network].icc, "static_macs": {e.mac}}
            for e in endpoints}
        assert {(e.sandbox, e.ifname): (kernel.links[(e.sandbox, e.ifname)]["up"],
                                        kernel.links[(e.sandbox, e.ifname)]["mac"]) for e in endpoints} == {
            (e.sandbox, e.ifname): (True, e.mac) for e in endpoints}
        assert kernel.addresses == (
            {(None, n.bridge, s.gateway_interface) for n in networks for s in n.subnets}
            | {(e.sandbox, e.ifname, a) for e in endpoints for a in e.addresses}
        )
        assert kernel.routes == {(e.sandbox, g.version): (g, e.ifname) for e in endpoints if e.default_route
                                 for g in e.gateways}
        owner = engine.owner
        from_scratch = [render.render_add_network(owner, n) for n in networks] + [
            render.render_add_endpoint(owner, e, by_name[e.network]) for e in endpoints
        ]
        assert nft_state(kernel.nft_log) == nft_state(from_scratch)
        assert engine.check() == []

    return check


def port_state(link: dict[str, Any]) -> dict[str, Any]:
    """What nsnet sets on a sandbox's bridge port (FakeKernel's view of the host end of a veth)."""
    return {key: link.get(key) for key in ("up", "mtu", "hairpin", "learning", "locked", "isolated", "static_macs")}


@pytest.fixture
def nft_tables(kernel: FakeKernel) -> Callable[[], dict[tuple[str, str], dict[str, Elements]]]:
    """The nft tables, sets, maps and elements the `kernel` fixture holds now."""
    return lambda: nft_state(kernel.nft_log)
