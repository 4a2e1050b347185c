"""The resolver's reads of a real ledger (an engine on a FakeKernel): what a table holds after
creates, aliases, connects and removals, and that a reread reuses the rows that did not change."""

from __future__ import annotations

import os
import sqlite3

from nsnet.dns.ledger import LedgerReader
from nsnet.engine import Engine


def names(reader: LedgerReader, source: str | None = None) -> dict[str, list[str]]:
    table, _ = reader.read()
    scope = table.scope(source)
    return {name: sorted(a.text for a in table.lookup(name, scope).addresses)
            for name in sorted(table.names) if table.lookup(name, scope).known}


def test_a_reader_follows_the_ledger_and_reuses_unchanged_rows(engine: Engine) -> None:
    engine.create_network("app", subnet=["10.31.0.0/24", "fd00:31::/64"], ipv6=True)
    engine.create_network("back", subnet="10.32.0.0/24", internal=True)
    engine.create_network("quiet", subnet="10.33.0.0/24", dns=False)
    engine.create_sandbox("web", networks=["app"], aliases=["www"])
    engine.create_sandbox("db", networks=["back"])
    engine.create_sandbox("hidden", networks=["quiet"])
    db = sqlite3.connect(f"file:{os.path.join(engine._store.directory, 'state.db')}?mode=ro", uri=True,
                         isolation_level=None)
    reader = LedgerReader(db)
    assert names(reader) == {"db": ["10.32.0.2"], "web": ["10.31.0.2", "fd00:31::2"],
                             "www": ["10.31.0.2", "fd00:31::2"]}
    table, _ = reader.read()
    assert [(str(a), port) for a, port in table.listeners()] == [("10.31.0.1", 53), ("10.32.0.1", 53),
                                                                 ("fd00:31::1", 53)]
    assert table.networks["back"].internal and not table.networks["app"].internal
    web_row = next(row for row in reader._endpoints.values() if row.sandbox == "web")

    engine.connect("back", "web", aliases=["legacy"])
    engine.remove_sandbox("db", force=True)
    assert names(reader) == {"legacy": ["10.32.0.3"], "web": ["10.31.0.2", "10.32.0.3", "fd00:31::2"],
                             "www": ["10.31.0.2", "fd00:31::2"]}
    assert web_row in reader._endpoints.values()  # web on app did not change: not parsed again
    assert {(row.sandbox, row.network) for row in reader._endpoints.values()} == {("web", "app"), ("web", "back")}
    db.close()


def test_check_reports_a_resolver_down_deaf_on_a_gateway_or_in_another_namespace(engine: Engine, kernel) -> None:
    from nsnet.dns import supervise
    from nsnet.kernel.fake import SERVING

    engine.create_network("app", subnet=["10.31.0.0/24", "fd00:31::/64"], ipv6=True)
    kernel.dns_ports_taken = {53}
    engine.create_network("vault", subnet="10.32.0.0/24", internal=True)
    assert engine.check() == []  # the fake resolver serves the ledger as it is
    assert kernel.resolver_status(engine._store.directory).split()[4:] == [
        "10.31.0.1:53", "10.32.0.1:10053", "[fd00:31::1]:53"]

    kernel.resolver = f"ok 1 42 {supervise.namespace()} 10.31.0.1:53"
    assert sorted((d.kind, d.subject) for d in engine.check()) == [
        ("missing", "resolver on 10.32.0.1:10053"), ("missing", "resolver on [fd00:31::1]:53")]
    kernel.resolver = "ok 1 42 net:[1] 10.31.0.1:53 10.32.0.1:10053 [fd00:31::1]:53"
    (drift,) = engine.check()
    assert (drift.kind, drift.subject) == ("wrong", "resolver") and "(pid 42) runs in another network namespace" in \
        drift.detail
    kernel.resolver = None
    assert [(d.kind, d.subject) for d in engine.check()] == [("missing", "resolver")]
    kernel.resolver = SERVING
    assert engine.check() == []


def test_check_reports_etc_files_that_differ_and_gc_writes_them_again(engine: Engine, kernel) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_network("quiet", subnet="10.35.0.0/24", dns=False)
    engine.create_sandbox("web", networks=["app"])
    engine.create_sandbox("lone", networks=["quiet"])
    written = {name: dict(files) for name, files in kernel.etc.items()}
    assert engine.check() == []
    kernel.etc["web"]["resolv.conf"] = "nameserver 192.0.2.1\n"  # someone's edit
    del kernel.etc["web"]["hosts"]
    kernel.etc["lone"]["resolv.conf"] = "nameserver 192.0.2.1\n"  # the user's own: nsnet writes none there
    assert sorted((d.kind, d.subject) for d in engine.check()) == [
        ("missing", "/etc/netns/web/hosts"), ("wrong", "/etc/netns/web/resolv.conf")]
    done = engine.gc()
    assert "rewrote /etc/netns/web/resolv.conf" in done and "rewrote /etc/netns/web/hosts" in done
    assert kernel.etc["web"] == written["web"] and kernel.etc["lone"]["resolv.conf"] == "nameserver 192.0.2.1\n"
    assert engine.check() == []


def test_host_dns_resolved_is_opt_in_and_names_each_dns_bridge_with_a_routing_domain(engine: Engine, kernel,
                                                                                       monkeypatch) -> None:
    engine.create_network("before", subnet="10.30.0.0/24")
    assert kernel.link_dns == {}  # not asked for
    monkeypatch.setenv("NSNET_HOST_DNS", "resolved")
    app = engine.create_network("app", subnet=["10.31.0.0/24", "fd00:31::/64"], ipv6=True)
    kernel.dns_ports_taken = {53}
    moved = engine.create_network("moved", subnet="10.32.0.0/24")
    engine.create_network("quiet", subnet="10.33.0.0/24", dns=False)
    assert kernel.link_dns == {app.bridge: (["10.31.0.1", "fd00:31::1"], ["~nsnet"]),
                               moved.bridge: (["10.32.0.1:10053"], ["~nsnet"])}
    kernel.link_dns.clear()
    engine.gc()  # after a reboot the bridges, and what resolved was told of them, come back
    assert set(kernel.link_dns) == {app.bridge, moved.bridge, engine.network("before").bridge}
