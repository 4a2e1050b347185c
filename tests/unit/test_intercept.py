"""Interception: what a user may ask (one-line errors naming the field), the table it makes, and
the engine's ledger, rollback, check and gc around it (on a FakeKernel)."""

from __future__ import annotations

import pytest

from nsnet.engine import Engine
from nsnet.errors import Conflict, InvalidInput, KernelError
from nsnet.intercept import spec
from nsnet.intercept.render import as_listing, render_removal, render_table, summary


def test_a_spec_is_validated_field_by_field() -> None:
    made = spec(outbound_port="15001", inbound_port=15006, exclude_uids=["1337", 1337, 0], exclude_ports=[81, "80"],
                exclude_cidrs=["10.9.0.7", "fd00::/8", "10.8.0.0/16"], dns_port=15053)
    assert (made.exclude_uids, made.exclude_ports, [str(c) for c in made.exclude_cidrs]) == (
        (0, 1337), (80, 81), ["10.8.0.0/16", "10.9.0.7/32", "fd00::/8"])
    for kwargs, field, reason in (
            ({"outbound_port": 0, "exclude_uids": [1]}, "--outbound-port", "must be a port from 1 to 65535"),
            ({"inbound_port": "http"}, "--inbound-port", "is not a port number"),
            ({"inbound_port": 15006, "exclude_ports": [70000]}, "--exclude-port", "must be a port from 1 to 65535"),
            ({"outbound_port": 15001, "exclude_uids": [-1]}, "--exclude-uid", "must be a user id"),
            ({"outbound_port": 15001, "exclude_uids": [1], "exclude_cidrs": ["10.0.0.0/33"]}, "--exclude-cidr",
             "is not an address or CIDR block"),
            ({"outbound_port": 15001}, "--exclude-uid", "the proxy's own user, or it loops"),
            ({}, "--outbound-port", "nothing to capture")):
        with pytest.raises(InvalidInput) as caught:
            spec(**kwargs)
        assert caught.value.field == field and reason in caught.value.reason, kwargs


def test_the_table_excludes_before_it_redirects() -> None:
    made = spec(outbound_port=15001, inbound_port=15006, exclude_uids=[1337], exclude_ports=[81],
                exclude_inbound_ports=[22], exclude_cidrs=["10.9.0.0/16"], dns_port=15053)
    rules, sets = summary(as_listing(render_table("nsnet", made)))
    assert rules == [
        ("prerouting", "loopback is never captured"), ("prerouting", "excluded inbound ports"),
        ("prerouting", "inbound TCP to the proxy"),
        ("output", "the excluded users' own traffic (the proxy's): never captured"),
        ("output", "loopback is never captured"), ("output", "DNS to the proxy's DNS port"),
        ("output", "excluded destinations"), ("output", "excluded destinations"),
        ("output", "excluded destination ports"), ("output", "outbound TCP to the proxy")]
    assert sets == {"excluded_uids": ["1337"], "excluded_ports": ["81"], "excluded_inbound_ports": ["22"],
                    "excluded_cidrs": ["10.9.0.0/16"]}
    inbound_only = summary(as_listing(render_table("nsnet", spec(inbound_port=15006))))[0]
    assert ("prerouting", "inbound TCP to the proxy") in inbound_only
    assert not any(comment == "outbound TCP to the proxy" for _, comment in inbound_only)
    assert render_removal("nsnet") == [{"add": {"table": {"family": "inet", "name": "nsnet"}}},
                                       {"delete": {"table": {"family": "inet", "name": "nsnet"}}}]


def test_intercept_rm_check_gc_and_rollback(engine: Engine, kernel) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("client", networks=["app"])
    made = spec(outbound_port=15001, exclude_uids=[1337])
    engine.intercept("client", made)
    assert engine.interceptions() == [("client", made)]
    table = engine.owner.table
    assert summary(kernel.sandbox_table("client", table)) == summary(as_listing(render_table(table, made)))
    calls = len(kernel.calls)
    engine.intercept("client", made)  # the same again: nothing to do
    assert len(kernel.calls) == calls
    wider = spec(outbound_port=15001, exclude_uids=[1337], exclude_ports=[22])
    engine.intercept("client", wider)  # another: the table is replaced
    assert engine.interceptions() == [("client", wider)]
    assert summary(kernel.sandbox_table("client", table)) == summary(as_listing(render_table(table, wider)))
    kernel.fail_at = len(kernel.calls) + 1  # a replacement that fails leaves the one before, ledger and kernel
    with pytest.raises(KernelError):
        engine.intercept("client", made)
    kernel.fail_at = None
    assert engine.interceptions() == [("client", wider)] and engine.check() == []
    engine.intercept("client", made)
    assert engine.check() == []

    kernel.sandbox_tables["client"].clear()  # someone deleted the table inside the sandbox
    assert [(d.kind, d.subject) for d in engine.check()] == [("wrong", "interception of client")]
    assert "made the interception of client again" in engine.gc()
    assert engine.check() == []

    engine.stop_intercepting("client")
    assert engine.interceptions() == [] and kernel.sandbox_table("client", table) is None
    with pytest.raises(Conflict, match="is not intercepted"):
        engine.stop_intercepting("client")

    kernel.fail_at = len(kernel.calls) + 1  # the table's transaction fails: nothing is left
    with pytest.raises(KernelError):
        engine.intercept("client", made)
    kernel.fail_at = None
    assert engine.interceptions() == [] and kernel.sandbox_table("client", table) is None and engine.check() == []

    engine.intercept("client", made)
    engine.remove_sandbox("client")  # the table goes with the namespace, the row with the sandbox
    assert engine.interceptions() == [] and engine.check() == []


def test_an_interception_left_half_way_by_a_killed_command_is_undone_by_gc(engine: Engine, kernel) -> None:
    from nsnet.intercept.render import render_table

    engine.create_network("app", subnet="10.31.0.0/24")
    client = engine.create_sandbox("client", networks=["app"])
    made = spec(inbound_port=15006)
    for state in ("creating", "removing"):  # killed before, or after, its transaction
        with engine._store.transaction():
            engine._store.add_interception(client.id, made.to_dict(), state)
        kernel.sandbox_nft("client", render_table(engine.owner.table, made))
        assert [(d.kind, d.subject) for d in engine.check()] == [("half-done", "interception of client")]
        assert "undid the interception of client" in engine.gc()
        assert engine.interceptions() == [] and kernel.sandbox_table("client", engine.owner.table) is None
        assert engine.check() == []
