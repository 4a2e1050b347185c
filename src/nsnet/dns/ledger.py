"""The resolver's view of the ledger: one read transaction over every DNS network and its
endpoints, turned into a Table.

A LedgerReader keeps the rows it built last time, by their values: a reload after one `create`
among a thousand sandboxes parses one new endpoint, not a thousand.
"""

from __future__ import annotations

import json

from .table import EndpointRow, NetworkRow, Table

TYPE_CHECKING = False
if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Iterable

SEPARATOR = "\x1f"  # in no address and no DNS label

NETWORKS = ("SELECT n.name, n.internal, n.dns_servers, n.dns_port, group_concat(s.subnet, char(31)),"
            " group_concat(s.gateway, char(31)) FROM networks n JOIN subnets s ON s.network_id = n.id"
            " WHERE n.dns = 1 GROUP BY n.id")
# Plain scans joined here, cheaper than SQLite's grouping over text ids. No order: answers are
# shuffled and listeners sorted anyway.
ENDPOINTS = ("SELECT e.id, s.name, n.name FROM endpoints e JOIN sandboxes s ON s.id = e.sandbox_id"
             " JOIN networks n ON n.id = e.network_id WHERE n.dns = 1")
ADDRESSES = ("SELECT a.endpoint_id, a.ip FROM addresses a JOIN networks n ON n.id = a.network_id"
             " WHERE n.dns = 1")
ALIASES = "SELECT endpoint_id, alias FROM aliases"
# A service answers by its name on its network, with its VIPs (as a sandbox with its addresses would).
SERVICES = ("SELECT v.id, v.name, n.name, v.vip, v.vip6 FROM services v JOIN networks n ON n.id = v.network_id"
            " WHERE n.dns = 1 AND v.state = 'ready'")
# Other hosts' sandboxes on an overlay network (nsnet.cluster): answered, never asking here.
REMOTE = ("SELECT c.sandbox, n.name, c.addresses, c.aliases FROM cluster_names c JOIN networks n"
          " ON n.id = c.network_id WHERE n.dns = 1")


class LedgerReader:
    """Reads tables from one connection, remembering the rows of the last read."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self._networks: dict[tuple, NetworkRow] = {}
        self._endpoints: dict[tuple, EndpointRow] = {}

    def read(self) -> tuple[Table, int]:
        """The table, and the ledger's data_version it was read at (a connection without an open
        transaction, in autocommit mode)."""
        self.db.execute("BEGIN")
        try:
            version = self.db.execute("PRAGMA data_version").fetchone()[0]
            network_rows = self.db.execute(NETWORKS).fetchall()
            endpoint_rows = self.db.execute(ENDPOINTS).fetchall()
            addresses = _grouped(self.db.execute(ADDRESSES))
            aliases = _grouped(self.db.execute(ALIASES))
            services = self.db.execute(SERVICES).fetchall()
            remote = self.db.execute(REMOTE).fetchall()
        finally:
            self.db.execute("COMMIT")
        self._networks = {row: self._networks.get(row) or _network(row) for row in network_rows}
        endpoints = {}
        for eid, sandbox, network in endpoint_rows:
            key = (sandbox, network, addresses.get(eid, ()), aliases.get(eid, ()))
            endpoints[key] = self._endpoints.get(key) or EndpointRow(*key)
        for sid, name, network, vip, vip6 in services:
            key = (name, network, (vip, vip6) if vip6 else (vip,), (), True)
            endpoints[key] = self._endpoints.get(key) or EndpointRow(*key)
        for sandbox, network, addresses_json, aliases_json in remote:
            key = (sandbox, network, tuple(json.loads(addresses_json)), tuple(json.loads(aliases_json)), True)
            endpoints[key] = self._endpoints.get(key) or EndpointRow(*key)
        self._endpoints = endpoints
        return Table(self._networks.values(), self._endpoints.values()), version


def read_table(db: sqlite3.Connection) -> tuple[Table, int]:
    return LedgerReader(db).read()


def _grouped(rows: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    grouped: dict[str, tuple[str, ...]] = {}
    for key, value in rows:
        grouped[key] = grouped.get(key, ()) + (value,)
    return grouped


def _network(row: tuple) -> NetworkRow:
    name, internal, servers, port, subnets, gateways = row
    return NetworkRow(name, gateways.split(SEPARATOR), subnets.split(SEPARATOR), bool(internal), json.loads(servers),
                      port)
