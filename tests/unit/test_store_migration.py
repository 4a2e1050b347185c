"""The ledger's schema migrations, on ledgers written the way earlier releases wrote them."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from ipaddress import IPv4Address, ip_address

import pytest

from nsnet.kernel.fake import FakeKernel
from nsnet.engine import Engine
from nsnet.errors import Conflict
from nsnet.model import PortMapping, ServicePort
from nsnet.store import SCHEMA_VERSION, Store

# Release 4's schema, as it stood (src/nsnet/store.py at ced4c70); releases 1 to 3 lacked `ports`
# and `meta`.
SCHEMA_4 = """
CREATE TABLE IF NOT EXISTS networks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    bridge TEXT NOT NULL UNIQUE,
    subnet TEXT NOT NULL,
    gateway TEXT NOT NULL,
    ip_range TEXT,
    internal INTEGER NOT NULL,
    icc INTEGER NOT NULL,
    mtu INTEGER NOT NULL,
    labels TEXT NOT NULL,
    last_ip TEXT,
    state TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sandboxes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS endpoints (
    id TEXT PRIMARY KEY,
    sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
    network_id TEXT NOT NULL REFERENCES networks(id),
    ifname TEXT NOT NULL,
    host_ifname TEXT NOT NULL UNIQUE,
    mac TEXT NOT NULL,
    ip TEXT NOT NULL,
    default_route INTEGER NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    UNIQUE (network_id, ip),
    UNIQUE (sandbox_id, network_id),
    UNIQUE (sandbox_id, ifname)
);
CREATE TABLE IF NOT EXISTS ports (
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    host_ip TEXT NOT NULL,  -- '' for every address of the host
    protocol TEXT NOT NULL,
    host_port INTEGER NOT NULL,
    sandbox_port INTEGER NOT NULL,
    UNIQUE (host_ip, protocol, host_port)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ports_by_endpoint ON ports (endpoint_id);
CREATE INDEX IF NOT EXISTS ports_by_port ON ports (protocol, host_port);
"""


NETWORKS = [("n1", "app", "nsbr-n1", "10.31.0.0/24", "10.31.0.1", None, 0, 1, 1500, "{}", "10.31.0.3", "ready", 1.0),
            ("n2", "back", "nsbr-n2", "10.32.0.0/24", "10.32.0.254", "10.32.0.0/25", 1, 0, 1400, '{"k": "v"}', "10.32.0.2",
             "ready", 2.0)]
SANDBOXES = [("s1", "web", "ready", 3.0), ("s2", "db", "ready", 4.0)]
ENDPOINTS = [("e1", "s1", "n1", "eth0", "nsve1", "02:4e:0a:1f:00:02", "10.31.0.2", 1, "ready", 5.0),
             ("e2", "s1", "n2", "eth1", "nsve2", "02:4e:0a:20:00:02", "10.32.0.2", 0, "ready", 6.0),
             ("e3", "s2", "n1", "eth0", "nsve3", "02:4e:0a:1f:00:03", "10.31.0.3", 1, "ready", 7.0)]
PORTS = [("e1", "", "tcp", 8080, 80), ("e1", "127.0.0.1", "udp", 5353, 53)]


def old_ledger(directory, version: int = 4) -> None:
    """A ledger with two networks, two sandboxes, three endpoints (and, from release 4, ports)."""
    directory.mkdir(mode=0o700)
    with closing(sqlite3.connect(directory / "state.db")) as db:
        statements = [s for s in SCHEMA_4.split(";") if s.strip()]
        if version < 4:
            statements = [s for s in statements if "ports" not in s and "meta" not in s]
        for statement in statements:
            db.execute(statement)
        db.executemany(f"INSERT INTO networks VALUES ({','.join('?' * 13)})", NETWORKS)
        db.executemany("INSERT INTO sandboxes VALUES (?, ?, ?, ?)", SANDBOXES)
        db.executemany(f"INSERT INTO endpoints VALUES ({','.join('?' * 10)})", ENDPOINTS)
        if version >= 4:
            db.executemany("INSERT INTO ports VALUES (?, ?, ?, ?, ?)", PORTS)
        db.execute(f"PRAGMA user_version = {version}")
        db.commit()
    (directory / "state.db").chmod(0o600)


@pytest.mark.parametrize("version", [1, 4])
def test_an_older_ledger_is_migrated_without_losing_anything(tmp_path, version):
    state = tmp_path / "state"
    old_ledger(state, version)
    store = Store(str(state))
    try:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        app, back = store.networks()
        assert [(n.name, n.bridge, [(str(s.subnet), str(s.gateway), str(s.ip_range) if s.ip_range else None)
                                    for s in n.subnets], n.internal, n.icc, n.mtu, n.labels) for n in (app, back)] == [
            ("app", "nsbr-n1", [("10.31.0.0/24", "10.31.0.1", None)], False, True, 1500, ()),
            ("back", "nsbr-n2", [("10.32.0.0/24", "10.32.0.254", "10.32.0.0/25")], True, False, 1400, (("k", "v"),))]
        assert store.last_ips("n1") == {4: IPv4Address("10.31.0.3")}
        web, db = store.sandboxes()
        assert [(e.network, e.ifname, e.host_ifname, e.mac, [str(a) for a in e.addresses], [str(g) for g in e.gateways],
                 e.default_route) for e in web.endpoints] == [
            ("app", "eth0", "nsve1", "02:4e:0a:1f:00:02", ["10.31.0.2/24"], ["10.31.0.1"], True),
            ("back", "eth1", "nsve2", "02:4e:0a:20:00:02", ["10.32.0.2/24"], ["10.32.0.254"], False)]
        assert [str(a) for e in db.endpoints for a in e.addresses] == ["10.31.0.3/24"]
        expected_ports = [PortMapping(None, 8080, 80), PortMapping(ip_address("127.0.0.1"), 5353, 53, "udp")]
        assert list(web.endpoint("app").ports) == (expected_ports if version >= 4 else [])
        assert "10.31.0.2" in store.taken("n1", 4) and len(store.taken("n1", 4)) == 2
        # Foreign keys still cascade: a sandbox takes its endpoints, addresses and ports with it.
        with store.transaction():
            store.delete_sandbox("web")
        assert store.db.execute("SELECT count(*) FROM addresses").fetchone()[0] == 1
        assert store.db.execute("SELECT count(*) FROM ports").fetchone()[0] == 0
        assert store.db.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        store.close()


def test_a_migrated_ledger_goes_on_allocating_where_it_stopped(tmp_path):
    state = tmp_path / "state"
    old_ledger(state)
    with Engine(state_dir=str(state), kernel=FakeKernel()) as engine:
        engine.gc()  # a fake kernel holds none of the old ledger's objects: as after a reboot
        assert str(engine.create_sandbox("next", networks=["app"]).endpoint("app").address) == "10.31.0.4/24"
        engine.create_sandbox("pub", networks=["app"], publish=["8081:81"])
        assert engine.ports("pub") == [PortMapping(None, 8081, 81)]
        with pytest.raises(Conflict, match="overlaps network 'app'"):
            engine.create_network("again", subnet="10.31.0.0/25")


def test_a_second_open_does_not_migrate_again(tmp_path):
    state = tmp_path / "state"
    old_ledger(state)
    Store(str(state)).close()
    store = Store(str(state))
    try:
        assert [n.name for n in store.networks()] == ["app", "back"]
        assert store.db.execute("SELECT count(*) FROM subnets").fetchone()[0] == 2
    finally:
        store.close()


def test_a_release_5_ledger_gains_the_container_columns(tmp_path):
    """Release 5 (IPv6) had sandboxes without a container id or namespace path (CNI), networks
    without an IPv4 routed mode."""
    state = tmp_path / "state"
    with Engine(state_dir=str(state), kernel=FakeKernel()) as engine:
        engine.create_network("app", subnet=["10.31.0.0/24", "fd00:31::/64"])
        engine.create_sandbox("web", networks=["app"], publish=["8080:80"])
    with closing(sqlite3.connect(state / "state.db")) as db:
        db.execute("DROP INDEX sandboxes_by_container")
        db.execute("ALTER TABLE sandboxes DROP COLUMN container_id")
        db.execute("ALTER TABLE sandboxes DROP COLUMN netns")
        db.execute("ALTER TABLE networks DROP COLUMN ipv4_routed")
        db.execute("PRAGMA user_version = 5")
        db.commit()
    store = Store(str(state))
    try:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        (app,) = store.networks()
        assert (app.ipv4_routed, app.ipv6_routed) == (False, False)
        (web,) = store.sandboxes()
        assert (web.name, web.netns, web.container_id, web.handle) == ("web", "/run/netns/web", None, "web")
        assert [str(a) for a in web.endpoint("app").addresses] == ["10.31.0.2/24", "fd00:31::2/64"]
        assert web.endpoint("app").ports == (PortMapping(None, 8080, 80),)
        assert [r[1] for r in store.db.execute("PRAGMA index_list(sandboxes)")].count("sandboxes_by_container") == 1
    finally:
        store.close()


def test_a_release_9_ledgers_services_gain_an_ipv6_vip_and_affinity(tmp_path):
    """Schema 9 had IPv4 services only: no vip6, no affinity, no ports published on the host; its
    recorded range names the IPv4 block alone, and the IPv6 one is added by the next service."""
    state = tmp_path / "state"
    with Engine(state_dir=str(state), kernel=FakeKernel()) as engine:
        engine.create_network("app", subnet="10.31.0.0/24")
        engine.create_sandbox("web", networks=["app"], labels=["app=web"])
        engine.create_service("web", network="app", ports=["80:8080"], selector=["app=web"])
    with closing(sqlite3.connect(state / "state.db")) as db:
        db.execute("DROP INDEX services_by_vip6")
        db.execute("DROP TABLE service_node_ports")
        db.execute("ALTER TABLE services DROP COLUMN vip6")
        db.execute("ALTER TABLE services DROP COLUMN affinity")
        db.execute("UPDATE meta SET value = '10.211.0.0/16' WHERE key = 'service_range'")
        db.execute("PRAGMA user_version = 9")
        db.commit()
    with Engine(state_dir=str(state), kernel=FakeKernel()) as engine:
        assert engine._store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        ((web, backends),) = engine.services()
        assert ([str(v) for v in web.vips], web.affinity, web.ports) == (["10.211.0.1"], None,
                                                                         (ServicePort("tcp", 80, 8080),))
        assert backends == [("web", ("10.31.0.2",))]
        engine.create_network("dual", subnet=["10.33.0.0/24", "fd33::/64"])
        engine.create_sandbox("v", networks=["dual"])
        both = engine.create_service("both", network="dual", ports=["80"], backends=["v"], publish=["30080"])
        assert [str(v) for v in both.vips] == ["10.211.0.2", "fd00:6e73:7663::1"]
        assert engine._store.meta("service_range") == "10.211.0.0/16,fd00:6e73:7663::/112"
