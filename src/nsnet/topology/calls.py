"""The engine calls a topology's steps make (plan.Step.run), one each: given the engine, they do
one change. Removals tolerate an object already gone (removed by hand, or never made by an `up`
that failed half-way)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import NotFound


def create_network(name: str, kwargs: dict) -> Callable[[Any], Any]:
    return lambda engine: engine.create_network(name, **kwargs)


def remove_network(name: str) -> Callable[[Any], Any]:
    def run(engine: Any) -> None:
        if any(n.name == name for n in engine.networks()):
            engine.remove_network(name)
    return run


def create_sandbox(name: str, kwargs: dict) -> Callable[[Any], Any]:
    return lambda engine: engine.create_sandbox(name, **kwargs)


def remove_sandbox(name: str) -> Callable[[Any], Any]:
    return lambda engine: engine.remove_sandbox(name, force=True)  # a lab's processes go with it


def connect(network: str, sandbox: str) -> Callable[[Any], Any]:
    return lambda engine: engine.connect(network, sandbox)


def disconnect(network: str, sandbox: str) -> Callable[[Any], Any]:
    def run(engine: Any) -> None:
        if any(s.name == sandbox and s.endpoint(network) is not None for s in engine.sandboxes()):
            engine.disconnect(network, sandbox)
    return run


def link(a: str, b: str, ips: list[str], mtu: int) -> Callable[[Any], Any]:
    return lambda engine: engine.link(a, b, ips=ips, mtu=mtu)


def unlink(a: str, b: str) -> Callable[[Any], Any]:
    def run(engine: Any) -> None:
        if any({lk.a.sandbox, lk.b.sandbox} == {a, b} for lk in engine.links()):
            engine.unlink(a, b)
    return run


def add_route(sandbox: str, dst: str, via: str) -> Callable[[Any], Any]:
    return lambda engine: engine.add_route(sandbox, dst, via)


def remove_route(sandbox: str, dst: str) -> Callable[[Any], Any]:
    def run(engine: Any) -> None:
        if any(r.sandbox == sandbox and str(r.dst) == dst for r in engine.routes()):
            engine.remove_route(sandbox, dst)
    return run


def shape(sandbox: str, network: str | None, link: str | None, knobs: dict) -> Callable[[Any], Any]:
    return lambda engine: engine.shape(sandbox, network=network, link=link, **knobs)


def clear_shape(sandbox: str, network: str | None, link: str | None) -> Callable[[Any], Any]:
    def run(engine: Any) -> None:
        if not any(s.name == sandbox for s in engine.sandboxes()):
            return  # its shaping went with it
        try:
            engine.clear_shape(sandbox, network=network, link=link)
        except NotFound:
            pass
    return run
