"""The resolver's view of the ledger: one read transaction over every DNS network and its
endpoints, turned into a Table."""

from __future__ import annotations

import json

from .table import EndpointRow, NetworkRow, Table

TYPE_CHECKING = False
if TYPE_CHECKING:
    import sqlite3


def read_table(db: sqlite3.Connection) -> tuple[Table, int]:
    """The table, and the ledger's data_version it was read at (a connection without an open
    transaction, in autocommit mode)."""
    db.execute("BEGIN")
    try:
        version = db.execute("PRAGMA data_version").fetchone()[0]
        networks: dict[str, dict] = {}
        for nid, name, internal, servers, subnet, gateway in db.execute(
                "SELECT n.id, n.name, n.internal, n.dns_servers, s.subnet, s.gateway FROM networks n"
                " JOIN subnets s ON s.network_id = n.id WHERE n.dns = 1 ORDER BY s.version"):
            row = networks.setdefault(nid, {"name": name, "internal": bool(internal), "servers": json.loads(servers),
                                            "subnets": [], "gateways": []})
            row["subnets"].append(subnet)
            row["gateways"].append(gateway)
        endpoints: dict[str, dict] = {}
        for eid, sandbox, network, ip in db.execute(
                "SELECT e.id, s.name, n.name, a.ip FROM endpoints e JOIN sandboxes s ON s.id = e.sandbox_id"
                " JOIN networks n ON n.id = e.network_id LEFT JOIN addresses a ON a.endpoint_id = e.id"
                " WHERE n.dns = 1 ORDER BY a.version"):
            row = endpoints.setdefault(eid, {"sandbox": sandbox, "network": network, "addresses": [], "aliases": []})
            if ip is not None:
                row["addresses"].append(ip)
        for eid, alias in db.execute("SELECT a.endpoint_id, a.alias FROM aliases a JOIN endpoints e"
                                     " ON e.id = a.endpoint_id JOIN networks n ON n.id = e.network_id"
                                     " WHERE n.dns = 1 ORDER BY a.rowid"):
            if eid in endpoints:
                endpoints[eid]["aliases"].append(alias)
    finally:
        db.execute("COMMIT")
    table = Table([NetworkRow(n["name"], n["gateways"], n["subnets"], n["internal"], n["servers"])
                   for n in networks.values()],
                  [EndpointRow(e["sandbox"], e["network"], e["addresses"], e["aliases"]) for e in endpoints.values()])
    return table, version
