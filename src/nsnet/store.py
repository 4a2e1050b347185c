"""The ledger: every network, sandbox and endpoint nsnet made, in SQLite.

Rows are written before the kernel objects they describe are made (state 'creating') and marked
'ready' after, so a crash at any point leaves a row that names what may exist in the kernel.
Each operation is one transaction; `BEGIN IMMEDIATE` takes SQLite's write lock at once, which is
the cross-process lock that serialises allocations (addresses, subnets, names). WAL lets readers
(`ls`, `inspect`) run while a writer works.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import stat
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from ipaddress import IPv6Network, ip_address, ip_interface, ip_network

from .errors import NsnetError
from .ipam import ula_prefix
from .model import (Endpoint, IPAddress, Link, LinkEnd, Network, Overlay, Owner, Peer, PortMapping, Route, Sandbox,
                    Service, ServicePort, Subnet, Tap)
from .publish import published_clash
from .record import replace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .shaping import Shaping

DEFAULT_STATE_DIR = "/var/lib/nsnet"
# Interface groups of nsnet's ledgers: 0x4e ('N') and 24 random bits.
OWNER_GROUP_BASE = 0x4E000000

# The tables as this release writes them. A network has one row of `subnets` per family, an
# endpoint one row of `addresses` per family of its network.
SCHEMA = """
CREATE TABLE IF NOT EXISTS networks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    bridge TEXT NOT NULL UNIQUE,
    internal INTEGER NOT NULL,
    icc INTEGER NOT NULL,
    mtu INTEGER NOT NULL,
    labels TEXT NOT NULL,
    ipv6_routed INTEGER NOT NULL DEFAULT 0,
    ipv4_routed INTEGER NOT NULL DEFAULT 0,
    dns INTEGER NOT NULL DEFAULT 0,
    dns_servers TEXT NOT NULL DEFAULT '[]',
    dns_port INTEGER NOT NULL DEFAULT 53,
    state TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS subnets (
    network_id TEXT NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    subnet TEXT NOT NULL,
    gateway TEXT NOT NULL,
    ip_range TEXT,
    last_ip TEXT,
    PRIMARY KEY (network_id, version)
);
CREATE TABLE IF NOT EXISTS sandboxes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    container_id TEXT,  -- a container runtime's (CNI), whose namespace nsnet does not own
    netns TEXT,  -- that namespace's path (NULL for nsnet's own, /run/netns/NAME)
    labels TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS endpoints (
    id TEXT PRIMARY KEY,
    sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
    network_id TEXT NOT NULL REFERENCES networks(id),
    ifname TEXT NOT NULL,
    host_ifname TEXT NOT NULL UNIQUE,
    mac TEXT NOT NULL,
    default_route INTEGER NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    UNIQUE (sandbox_id, network_id),
    UNIQUE (sandbox_id, ifname)
);
CREATE TABLE IF NOT EXISTS addresses (
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    network_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    ip TEXT NOT NULL,
    PRIMARY KEY (endpoint_id, version),
    UNIQUE (network_id, ip)
);
CREATE TABLE IF NOT EXISTS ports (
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    host_ip TEXT NOT NULL,  -- '' for every address of the host
    protocol TEXT NOT NULL,
    host_port INTEGER NOT NULL,
    sandbox_port INTEGER NOT NULL,
    UNIQUE (host_ip, protocol, host_port)
);
CREATE TABLE IF NOT EXISTS aliases (
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    alias TEXT NOT NULL,
    PRIMARY KEY (endpoint_id, alias)
);
-- A service (nsnet.services): its VIPs on a network (vip: the IPv4 one, or the IPv6 one of an
-- IPv6-only network, and vip6: the IPv6 one of a dual-stack network), its ports, named backends and
-- label selector as JSON, and its client-IP affinity in seconds.
CREATE TABLE IF NOT EXISTS services (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    network_id TEXT NOT NULL REFERENCES networks(id),
    vip TEXT NOT NULL UNIQUE,
    ports TEXT NOT NULL,
    backends TEXT NOT NULL,
    selector TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    vip6 TEXT,
    affinity INTEGER
);
-- A service port published on every address of the host (--publish, Kubernetes' NodePort).
CREATE TABLE IF NOT EXISTS service_node_ports (
    service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    protocol TEXT NOT NULL,
    host_port INTEGER NOT NULL,
    target_port INTEGER NOT NULL,
    UNIQUE (protocol, host_port)
);
-- A link (nsnet.links): a veth pair between two sandboxes, each end's interface and addresses (JSON).
CREATE TABLE IF NOT EXISTS links (
    id TEXT PRIMARY KEY,
    a_sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
    a_ifname TEXT NOT NULL,
    a_addresses TEXT NOT NULL,
    b_sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
    b_ifname TEXT NOT NULL,
    b_addresses TEXT NOT NULL,
    mtu INTEGER NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    UNIQUE (a_sandbox_id, a_ifname),
    UNIQUE (b_sandbox_id, b_ifname)
);
-- A static route inside a sandbox (nsnet.routes).
CREATE TABLE IF NOT EXISTS routes (
    sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
    dst TEXT NOT NULL,
    via TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (sandbox_id, dst)
);
-- A sandbox's interception (nsnet.intercept): its spec as JSON, and whether its table is made.
CREATE TABLE IF NOT EXISTS interceptions (
    sandbox_id TEXT PRIMARY KEY REFERENCES sandboxes(id) ON DELETE CASCADE,
    spec TEXT NOT NULL,
    state TEXT NOT NULL
);
-- What each topology file (nsnet.topology) made: its objects by kind (network, sandbox, link, route,
-- shape) and key (a name, SANDBOX|PEER for a link, SANDBOX|DST for a route, SANDBOX|network:NET or
-- SANDBOX|link:PEER for a shaping), with the file's entry as last applied (JSON). An object has one
-- owner at most: `up` never takes over what it did not make, `down` removes only what it made.
CREATE TABLE IF NOT EXISTS topology_objects (
    topology TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    spec TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
-- A sandbox in another network mode (nsnet.modes): 'host' (no namespace of its own) or 'container'
-- (the namespace of donor_id, which cannot be removed while it has joiners).
CREATE TABLE IF NOT EXISTS sandbox_modes (
    sandbox_id TEXT PRIMARY KEY REFERENCES sandboxes(id) ON DELETE CASCADE,
    mode TEXT NOT NULL,
    donor_id TEXT REFERENCES sandboxes(id)
);
-- A network whose driver is not the bridge (nsnet.drivers): macvlan children of a parent interface.
CREATE TABLE IF NOT EXISTS network_drivers (
    network_id TEXT PRIMARY KEY REFERENCES networks(id) ON DELETE CASCADE,
    driver TEXT NOT NULL,
    parent TEXT NOT NULL,
    mode TEXT NOT NULL
);
-- A sandbox's shaping of one interface (nsnet.shaping): its endpoint's or its link's (the row goes
-- with either), target network:NAME or link:PEER, direction, settings as JSON.
CREATE TABLE IF NOT EXISTS shapings (
    sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
    endpoint_id TEXT REFERENCES endpoints(id) ON DELETE CASCADE,
    link_id TEXT REFERENCES links(id) ON DELETE CASCADE,
    target TEXT NOT NULL,
    direction TEXT NOT NULL,
    settings TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (sandbox_id, target)
);
-- A VM guest's tap endpoint (nsnet.taps): the sandbox has no namespace, its endpoint's host_ifname
-- is the tap device, owned by uid/gid (NULL: root only).
CREATE TABLE IF NOT EXISTS taps (
    sandbox_id TEXT PRIMARY KEY REFERENCES sandboxes(id) ON DELETE CASCADE,
    uid INTEGER,
    gid INTEGER
);
-- This host's share of an overlay network (nsnet.cluster): the network row holds its block (subnet),
-- bridge and gateway, this row the VXLAN device and the cluster-wide facts. Its peers: the other hosts'
-- blocks this host routes to, each a neighbour, an FDB entry and a route on the device.
CREATE TABLE IF NOT EXISTS overlays (
    network_id TEXT PRIMARY KEY REFERENCES networks(id) ON DELETE CASCADE,
    supernet TEXT NOT NULL,
    vni INTEGER NOT NULL,
    port INTEGER NOT NULL,
    vtep_ip TEXT NOT NULL,
    underlay TEXT NOT NULL,
    vtep_mac TEXT NOT NULL,
    device TEXT NOT NULL,
    host TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS overlay_peers (
    network_id TEXT NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    host TEXT NOT NULL,
    block TEXT NOT NULL,
    vtep_ip TEXT NOT NULL,
    vtep_mac TEXT NOT NULL,
    PRIMARY KEY (network_id, block)
);
-- Other hosts' sandboxes on an overlay network (nsnet.cluster), as the cluster agent last saw them,
-- for the resolver to answer their names here too. A cache of etcd's endpoints/ keys, no object.
CREATE TABLE IF NOT EXISTS cluster_names (
    network_id TEXT NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    host TEXT NOT NULL,
    sandbox TEXT NOT NULL,
    addresses TEXT NOT NULL,
    aliases TEXT NOT NULL,
    PRIMARY KEY (network_id, host, sandbox)
);
-- An overlay network whose block of this host was evicted while the host was cut off from the
-- cluster: no sandbox joins it here until it is removed and joined again (nsnet.cluster).
CREATE TABLE IF NOT EXISTS cluster_fences (
    network_id TEXT PRIMARY KEY REFERENCES networks(id) ON DELETE CASCADE,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS sandboxes_by_container ON sandboxes (container_id);
CREATE INDEX IF NOT EXISTS ports_by_endpoint ON ports (endpoint_id);
CREATE INDEX IF NOT EXISTS ports_by_port ON ports (protocol, host_port);
CREATE INDEX IF NOT EXISTS services_by_network ON services (network_id);
CREATE UNIQUE INDEX IF NOT EXISTS services_by_vip6 ON services (vip6);
"""
SCHEMA_VERSION = 18  # 13 sandbox_modes, network_drivers; 14 taps; 15 shapings; 16 topology_objects; 17 overlays,
# overlay_peers; 18 cluster_names, cluster_fences (new tables)

def _table_sql(name: str) -> str:
    start = SCHEMA.index(f"CREATE TABLE IF NOT EXISTS {name} (")
    return SCHEMA[start:SCHEMA.index(");", start) + 2]


def _migrate_to_5(db: sqlite3.Connection) -> None:
    """Subnets and addresses move to rows per family; networks and endpoints are rebuilt without
    their IPv4 columns (SQLite's documented way: make the new table, copy, drop, rename), with
    foreign keys off meanwhile so that dropping a table deletes nothing that refers to it."""
    for name in ("subnets", "addresses"):
        db.execute(_table_sql(name))
    db.execute("INSERT INTO subnets (network_id, version, subnet, gateway, ip_range, last_ip)"
               " SELECT id, 4, subnet, gateway, ip_range, last_ip FROM networks")
    db.execute("INSERT INTO addresses (endpoint_id, network_id, version, ip) SELECT id, network_id, 4, ip FROM endpoints")
    # (Made with today's columns: what later releases added takes its default.)
    for name, targets, columns in (
            ("networks", "id, name, bridge, internal, icc, mtu, labels, ipv6_routed, state, created",
             "id, name, bridge, internal, icc, mtu, labels, 0, state, created"),
            ("endpoints", "id, sandbox_id, network_id, ifname, host_ifname, mac, default_route, state, created",
             "id, sandbox_id, network_id, ifname, host_ifname, mac, default_route, state, created")):
        db.execute(_table_sql(name).replace(f"EXISTS {name} (", f"EXISTS {name}_v5 ("))
        db.execute(f"INSERT INTO {name}_v5 ({targets}) SELECT {columns} FROM {name}")
        db.execute(f"DROP TABLE {name}")
        db.execute(f"ALTER TABLE {name}_v5 RENAME TO {name}")
    broken = db.execute("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise sqlite3.IntegrityError(f"the migrated ledger has {len(broken)} dangling reference(s)")


def _migrate_to_6(db: sqlite3.Connection) -> None:
    """Sandboxes gain the container and namespace path of a runtime's (CNI) attachments; networks
    an IPv4 routed mode."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(sandboxes)")}
    for column in ("container_id", "netns"):
        if columns and column not in columns:
            db.execute(f"ALTER TABLE sandboxes ADD COLUMN {column} TEXT")
    columns = {row[1] for row in db.execute("PRAGMA table_info(networks)")}
    if columns and "ipv4_routed" not in columns:
        db.execute("ALTER TABLE networks ADD COLUMN ipv4_routed INTEGER NOT NULL DEFAULT 0")


def _migrate_to_7(db: sqlite3.Connection) -> None:
    """Networks gain DNS (off for the ones made before it: their sandboxes have no resolv.conf
    naming the resolver) and their own upstream servers; endpoints aliases (a table of its own)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(networks)")}
    if columns and "dns" not in columns:
        db.execute("ALTER TABLE networks ADD COLUMN dns INTEGER NOT NULL DEFAULT 0")
    if columns and "dns_servers" not in columns:
        db.execute("ALTER TABLE networks ADD COLUMN dns_servers TEXT NOT NULL DEFAULT '[]'")


def _migrate_to_8(db: sqlite3.Connection) -> None:
    """Networks gain the port their resolver listens on."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(networks)")}
    if columns and "dns_port" not in columns:
        db.execute("ALTER TABLE networks ADD COLUMN dns_port INTEGER NOT NULL DEFAULT 53")


def _migrate_to_9(db: sqlite3.Connection) -> None:
    """Sandboxes gain labels (services select them by their labels)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(sandboxes)")}
    if columns and "labels" not in columns:
        db.execute("ALTER TABLE sandboxes ADD COLUMN labels TEXT NOT NULL DEFAULT '{}'")


def _migrate_to_10(db: sqlite3.Connection) -> None:
    """Services gain an IPv6 VIP and client-IP affinity."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(services)")}
    if columns and "vip6" not in columns:
        db.execute("ALTER TABLE services ADD COLUMN vip6 TEXT")
        db.execute("ALTER TABLE services ADD COLUMN affinity INTEGER")


def _settings_json(shaping: Shaping) -> str:
    from .record import values

    return json.dumps(values(shaping.settings))


def state_dir() -> str:
    return os.environ.get("NSNET_STATE_DIR") or DEFAULT_STATE_DIR


class TakenAddresses:
    """The addresses of one family allocated on one network, as a Collection answered by indexed
    queries."""

    def __init__(self, db: sqlite3.Connection, network_id: str, version: int) -> None:
        self._db = db
        self._network_id = network_id
        self._version = version

    def __contains__(self, address: object) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM addresses WHERE network_id = ? AND ip = ?", (self._network_id, str(address))
        ).fetchone()
        return row is not None

    def __len__(self) -> int:
        query = "SELECT count(*) FROM addresses WHERE network_id = ? AND version = ?"
        return self._db.execute(query, (self._network_id, self._version)).fetchone()[0]

    def __iter__(self) -> Iterator[IPAddress]:
        rows = self._db.execute("SELECT ip FROM addresses WHERE network_id = ? AND version = ?",
                                (self._network_id, self._version))
        return (ip_address(ip) for (ip,) in rows)


class StoredPorts:
    """The published ports, asked one (protocol, port) at a time through an index, plus the ones
    an operation resolves before it records them (publish.PortLookup)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._pending: list[PortMapping] = []

    def clash(self, candidate: PortMapping) -> PortMapping | None:
        pending = published_clash(candidate, self._pending)
        if pending is not None:
            return pending
        node_port = self._db.execute(
            "SELECT host_port, target_port, protocol FROM service_node_ports WHERE protocol = ? AND host_port = ?",
            (candidate.protocol, candidate.host_port)).fetchone()
        if node_port is not None:  # on every address
            return PortMapping(None, *node_port)
        rows = self._db.execute(
            "SELECT host_ip, host_port, sandbox_port, protocol FROM ports WHERE protocol = ? AND host_port = ?",
            (candidate.protocol, candidate.host_port),
        )
        return published_clash(candidate, (PortMapping(ip_address(ip) if ip else None, host_port, sandbox_port, proto)
                                           for ip, host_port, sandbox_port, proto in rows))

    def append(self, mapping: PortMapping) -> None:
        self._pending.append(mapping)


def _private_directory(directory: str) -> None:
    """Make directory (mode 0700) or check the one there: a real directory, ours, that no one
    else can enter. An existing one is never loosened or taken over: only an empty one of ours
    may be tightened to 0700 (nsnet's own, made under a wider umask, or a fresh mount point)."""
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    refuse = f"cannot use {directory} as the state directory: "
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP) and os.path.islink(directory):
            raise NsnetError(refuse + "it is a symbolic link, and nsnet follows no link it did not make") from None
        raise
    try:
        status = os.fstat(fd)
        mode = stat.S_IMODE(status.st_mode)
        if status.st_uid != os.geteuid():
            raise NsnetError(refuse + f"it is owned by uid {status.st_uid}, not by this user ({os.geteuid()})")
        if mode & 0o077:
            if os.listdir(fd):
                raise NsnetError(refuse + f"its mode {mode:04o} lets others in; nsnet keeps its state private"
                                 " (0700): choose a new or an empty directory")
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


class Store:
    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory or state_dir()
        try:
            self._open()
        except (OSError, sqlite3.Error) as exc:
            hint = "" if os.geteuid() == 0 else " (nsnet needs root)"
            raise NsnetError(f"cannot open the state in {self.directory}: {exc}{hint}") from None

    def _open(self) -> None:
        _private_directory(self.directory)
        path = os.path.join(self.directory, "state.db")
        # Made here when new, private from its first byte. An existing one is only looked at:
        # closing a descriptor of it would drop the POSIX locks another connection of this
        # process holds on it, and SQLite's locking with them (it corrupts the database).
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        except FileExistsError:
            if stat.S_ISLNK(os.lstat(path).st_mode):  # sqlite would follow it
                raise NsnetError(f"cannot open the state in {self.directory}: {path} is a symbolic link,"
                                 " and nsnet follows no link it did not make") from None
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable across process crashes in WAL mode and skips an fsync per commit.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        if self.db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            self._upgrade()

    def _upgrade(self) -> None:
        """Bring a new or older ledger to SCHEMA_VERSION, once, whoever else opens it meanwhile."""
        self.db.execute("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction: set before
        try:
            with self.transaction():
                version = self.db.execute("PRAGMA user_version").fetchone()[0]
                if version >= SCHEMA_VERSION:
                    return
                # Releases 1 to 4 (IPv4 only) had the same networks and endpoints tables; 1 to 3
                # lacked tables that SCHEMA makes below when they are missing.
                if version < 5 and self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'networks'").fetchone():
                    _migrate_to_5(self.db)
                if version < 6:
                    _migrate_to_6(self.db)
                if version < 7:
                    _migrate_to_7(self.db)
                if version < 8:
                    _migrate_to_8(self.db)
                if version < 9:
                    _migrate_to_9(self.db)
                if version < 10:
                    _migrate_to_10(self.db)
                for statement in SCHEMA.split(";"):  # what is missing (all of it, for a new ledger)
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        finally:
            self.db.execute("PRAGMA foreign_keys=ON")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One consistent view for a read made of several statements: without it a writer can
        commit between them (a network read with its subnets missing, an endpoint without its ports).
        Inside a transaction the transaction is the view."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN DEFERRED")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    def owner(self) -> Owner:
        """What marks this ledger's kernel objects (model.Owner), chosen when the ledger is new: a
        random interface group, and tables named `nsnet` for the default state directory or after
        the group for any other, so two ledgers on one host never share a table."""
        rows = dict(self.db.execute("SELECT key, value FROM meta WHERE key IN ('table', 'group')").fetchall())
        if len(rows) < 2:
            with self.transaction():
                rows = dict(self.db.execute("SELECT key, value FROM meta WHERE key IN ('table', 'group')").fetchall())
                if len(rows) < 2:
                    group = OWNER_GROUP_BASE | int.from_bytes(os.urandom(3), "big")
                    default = os.path.realpath(self.directory) == os.path.realpath(DEFAULT_STATE_DIR)
                    rows = {"table": "nsnet" if default else f"nsnet-{group:08x}", "group": str(group)}
                    self.db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", rows.items())
        return Owner(table=rows["table"], group=int(rows["group"]))

    def ula_prefix(self) -> IPv6Network:
        """This ledger's RFC 4193 /48 (ipam.ula_prefix), chosen at random the first time it is
        needed; runs inside the caller's transaction."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'ula'").fetchone()
        if row:
            return IPv6Network(row[0])
        prefix = ula_prefix(os.urandom(5))
        self.db.execute("INSERT INTO meta (key, value) VALUES ('ula', ?)", (str(prefix),))
        return prefix

    # Networks

    def networks(self) -> list[Network]:
        return self._networks("1 = 1", ())

    def network(self, name: str) -> Network | None:
        found = self._networks("n.name = ?", (name,))
        return found[0] if found else None

    def network_by_id(self, network_id: str) -> Network | None:
        found = self._networks("n.id = ?", (network_id,))
        return found[0] if found else None

    def _networks(self, where: str, args: tuple) -> list[Network]:
        with self.snapshot():
            return self._networks_in_snapshot(where, args)

    def _networks_in_snapshot(self, where: str, args: tuple) -> list[Network]:
        subnets: dict[str, list[Subnet]] = {}
        for network_id, subnet, gateway, ip_range in self.db.execute(
                "SELECT s.network_id, s.subnet, s.gateway, s.ip_range FROM subnets s JOIN networks n"
                f" ON n.id = s.network_id WHERE {where} ORDER BY s.version", args):
            subnets.setdefault(network_id, []).append(
                Subnet(ip_network(subnet), ip_address(gateway) if gateway else None,
                       ip_network(ip_range) if ip_range else None))
        drivers = {nid: (driver, parent or None, mode or None) for nid, driver, parent, mode in self.db.execute(
            "SELECT d.network_id, d.driver, d.parent, d.mode FROM network_drivers d JOIN networks n"
            f" ON n.id = d.network_id WHERE {where}", args)}
        rows = self.db.execute("SELECT n.id, n.name, n.bridge, n.internal, n.icc, n.mtu, n.labels, n.ipv6_routed,"
                               f" n.state, n.created, n.ipv4_routed, n.dns, n.dns_servers, n.dns_port FROM networks n"
                               f" WHERE {where}"
                               " ORDER BY n.created, n.name", args)
        return [
            Network(id=nid, name=name, bridge="" if drivers.get(nid, ("bridge",))[0] == "macvlan" else bridge, subnets=tuple(subnets.get(nid, ())),
                    internal=bool(internal),
                    mtu=mtu, icc=bool(icc), labels=tuple(sorted(json.loads(labels).items())),
                    ipv6_routed=bool(routed), created=created, state=state, ipv4_routed=bool(routed4), dns=bool(dns),
                    dns_servers=tuple(json.loads(servers)), dns_port=dns_port,
                    **(dict(zip(("driver", "parent", "driver_mode"), drivers[nid])) if nid in drivers else {}))
            for (nid, name, bridge, internal, icc, mtu, labels, routed, state, created, routed4, dns, servers,
                 dns_port) in rows
        ]

    def add_network(self, network: Network) -> None:
        self.db.execute(
            "INSERT INTO networks (id, name, bridge, internal, icc, mtu, labels, ipv6_routed, state, created,"
            " ipv4_routed, dns, dns_servers, dns_port) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                # A network without a bridge (nsnet.drivers) holds the column, which is unique, with a
                # name no interface can have (':' is not allowed in one).
                network.id, network.name, network.bridge or f"{network.driver}:{network.id}", int(network.internal), int(network.icc), network.mtu,
                json.dumps(dict(network.labels)), int(network.ipv6_routed), network.state, network.created,
                int(network.ipv4_routed), int(network.dns), json.dumps(list(network.dns_servers)), network.dns_port,
            ),
        )
        self.db.executemany(
            "INSERT INTO subnets (network_id, version, subnet, gateway, ip_range) VALUES (?, ?, ?, ?, ?)",
            [(network.id, s.version, str(s.subnet), str(s.gateway) if s.gateway else "",
              str(s.ip_range) if s.ip_range else None) for s in network.subnets],
        )
        if network.driver != "bridge":
            self.db.execute("INSERT INTO network_drivers (network_id, driver, parent, mode) VALUES (?, ?, ?, ?)",
                            (network.id, network.driver, network.parent or "", network.driver_mode or ""))

    def set_network_state(self, network_id: str, state: str) -> None:
        self.db.execute("UPDATE networks SET state = ? WHERE id = ?", (state, network_id))

    def delete_network(self, network_id: str) -> None:
        self.db.execute("DELETE FROM networks WHERE id = ?", (network_id,))

    def last_ips(self, network_id: str) -> dict[int, IPAddress | None]:
        """Where each family's round-robin allocation stopped."""
        rows = self.db.execute("SELECT version, last_ip FROM subnets WHERE network_id = ?", (network_id,))
        return {version: ip_address(last) if last else None for version, last in rows}

    def set_last_ip(self, network_id: str, version: int, address: IPAddress | None) -> None:
        self.db.execute("UPDATE subnets SET last_ip = ? WHERE network_id = ? AND version = ?",
                        (str(address) if address else None, network_id, version))

    def taken(self, network_id: str, version: int) -> TakenAddresses:
        return TakenAddresses(self.db, network_id, version)

    def mac_taken(self, network_id: str, mac: str) -> bool:
        query = "SELECT 1 FROM endpoints WHERE network_id = ? AND mac = ?"
        return self.db.execute(query, (network_id, mac)).fetchone() is not None

    def endpoint_count(self, network_id: str) -> int:
        return self.db.execute("SELECT count(*) FROM endpoints WHERE network_id = ?", (network_id,)).fetchone()[0]

    # Sandboxes and endpoints

    _SANDBOX_COLUMNS = "id, name, state, created, container_id, netns, labels"

    def sandbox(self, name: str) -> Sandbox | None:
        with self.snapshot():
            row = self.db.execute(f"SELECT {self._SANDBOX_COLUMNS} FROM sandboxes WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            return self._tapped([self._moded(self._sandbox(row, self._endpoints("e.sandbox_id = ?", (row[0],))))])[0]

    def _modes(self) -> dict[str, tuple[str, str | None, str | None]]:
        """Each sandbox in another network mode: its mode, and its donor's name and netns path."""
        return {sid: (mode, donor, netns) for sid, mode, donor, netns in self.db.execute(
            "SELECT m.sandbox_id, m.mode, d.name, d.netns FROM sandbox_modes m"
            " LEFT JOIN sandboxes d ON d.id = m.donor_id")}

    def _moded(self, sandbox: Sandbox, modes: dict | None = None) -> Sandbox:
        found = (self._modes() if modes is None else modes).get(sandbox.id)
        if found is None:
            return sandbox
        mode, donor, _ = found
        if mode == "host":
            return replace(sandbox, network_mode="host", netns="")
        return replace(sandbox, network_mode=f"container:{donor}", netns=f"/run/netns/{donor}")

    def add_sandbox_mode(self, sandbox_id: str, mode: str, donor_id: str | None = None) -> None:
        self.db.execute("INSERT INTO sandbox_modes (sandbox_id, mode, donor_id) VALUES (?, ?, ?)",
                        (sandbox_id, mode, donor_id))

    def joiners(self, sandbox_id: str) -> list[str]:
        """The sandboxes that joined this one's namespace (--network container:NAME), by name."""
        return [name for (name,) in self.db.execute(
            "SELECT s.name FROM sandbox_modes m JOIN sandboxes s ON s.id = m.sandbox_id WHERE m.donor_id = ?"
            " ORDER BY s.name", (sandbox_id,))]

    def sandbox_of_container(self, container_id: str) -> Sandbox | None:
        with self.snapshot():
            row = self.db.execute(f"SELECT {self._SANDBOX_COLUMNS} FROM sandboxes WHERE container_id = ?",
                                  (container_id,)).fetchone()
            return self._sandbox(row, self._endpoints("e.sandbox_id = ?", (row[0],))) if row else None

    def sandboxes(self) -> list[Sandbox]:
        with self.snapshot():
            rows = self.db.execute(f"SELECT {self._SANDBOX_COLUMNS} FROM sandboxes ORDER BY created, name").fetchall()
            endpoints = self._endpoints("1 = 1", ())
            modes = self._modes()
            return self._tapped([self._moded(self._sandbox(row, [e for e in endpoints if e.sandbox == row[1]]), modes)
                                 for row in rows])

    def _tapped(self, sandboxes: list[Sandbox]) -> list[Sandbox]:
        """Tap sandboxes (nsnet.taps) with their Tap, and no namespace path."""
        taps = {i: Tap(uid, gid) for i, uid, gid in self.db.execute("SELECT sandbox_id, uid, gid FROM taps")}
        return [replace(s, tap=taps[s.id], netns="") if s.id in taps else s for s in sandboxes]

    def add_tap(self, sandbox_id: str, tap: Tap) -> None:
        self.db.execute("INSERT INTO taps (sandbox_id, uid, gid) VALUES (?, ?, ?)", (sandbox_id, tap.uid, tap.gid))

    @staticmethod
    def _sandbox(row: tuple, endpoints: list[Endpoint]) -> Sandbox:
        sandbox_id, name, state, created, container_id, netns, labels = row
        return Sandbox(id=sandbox_id, name=name, netns=netns or f"/run/netns/{name}", endpoints=tuple(endpoints),
                       created=created, state=state, container_id=container_id,
                       labels=tuple(sorted(json.loads(labels).items())))

    def _endpoints(self, where: str, args: tuple) -> list[Endpoint]:
        with self.snapshot():
            return self._endpoints_in_snapshot(where, args)

    def _endpoints_in_snapshot(self, where: str, args: tuple) -> list[Endpoint]:
        joins = ("FROM endpoints e JOIN sandboxes s ON s.id = e.sandbox_id JOIN networks n ON n.id = e.network_id")
        addresses: dict[str, list[tuple]] = {}
        for endpoint_id, ip, subnet, gateway in self.db.execute(
                f"SELECT a.endpoint_id, a.ip, sub.subnet, sub.gateway {joins} JOIN addresses a ON a.endpoint_id = e.id"
                " JOIN subnets sub ON sub.network_id = e.network_id AND sub.version = a.version"
                f" WHERE {where} ORDER BY a.version", args):
            addresses.setdefault(endpoint_id, []).append(
                (ip_interface(f"{ip}/{ip_network(subnet).prefixlen}"), ip_address(gateway) if gateway else None))
        rows = self.db.execute(
            f"SELECT e.id, s.name, n.name, e.ifname, e.host_ifname, e.mac, e.default_route, e.state, s.netns {joins}"
            f" WHERE {where} ORDER BY e.created, e.ifname",
            args,
        )
        endpoints = [
            Endpoint(id=i, sandbox=s, network=n, ifname=ifn, host_ifname=h, mac=m,
                     addresses=tuple(a for a, _ in addresses.get(i, ())),
                     gateways=tuple(g for _, g in addresses.get(i, ()) if g is not None), default_route=bool(d), state=st, netns=ns)
            for i, s, n, ifn, h, m, d, st, ns in rows
        ]
        ports = self._ports([e.id for e in endpoints])
        aliases = self._aliases([e.id for e in endpoints])
        return [replace(e, ports=tuple(ports.get(e.id, ())), aliases=tuple(aliases.get(e.id, ())))
                if e.id in ports or e.id in aliases else e for e in endpoints]

    def _aliases(self, endpoint_ids: list[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        if not endpoint_ids:
            return found
        marks = ",".join("?" * len(endpoint_ids))
        for endpoint_id, alias in self.db.execute(
                f"SELECT endpoint_id, alias FROM aliases WHERE endpoint_id IN ({marks}) ORDER BY rowid", endpoint_ids):
            found.setdefault(endpoint_id, []).append(alias)
        return found

    def _ports(self, endpoint_ids: list[str]) -> dict[str, list[PortMapping]]:
        found: dict[str, list[PortMapping]] = {}
        if not endpoint_ids:
            return found
        marks = ",".join("?" * len(endpoint_ids))
        rows = self.db.execute(
            "SELECT endpoint_id, host_ip, protocol, host_port, sandbox_port FROM ports"
            f" WHERE endpoint_id IN ({marks}) ORDER BY rowid", endpoint_ids,
        )
        for endpoint_id, host_ip, protocol, host_port, sandbox_port in rows:
            found.setdefault(endpoint_id, []).append(
                PortMapping(ip_address(host_ip) if host_ip else None, host_port, sandbox_port, protocol))
        return found

    def published_ports(self) -> StoredPorts:
        return StoredPorts(self.db)

    def add_ports(self, endpoint_id: str, mappings: list[PortMapping]) -> None:
        self.db.executemany(
            "INSERT INTO ports (endpoint_id, host_ip, protocol, host_port, sandbox_port) VALUES (?, ?, ?, ?, ?)",
            [(endpoint_id, str(m.host_ip) if m.host_ip else "", m.protocol, m.host_port, m.sandbox_port)
             for m in mappings],
        )

    def endpoints_of_network(self, network_id: str) -> list[Endpoint]:
        return self._endpoints("e.network_id = ?", (network_id,))

    def add_overlay(self, network_id: str, overlay: Overlay) -> None:
        o = overlay
        self.db.execute("INSERT INTO overlays (network_id, supernet, vni, port, vtep_ip, underlay, vtep_mac, device, host)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (network_id, str(o.supernet), o.vni, o.port,
                                                                 str(o.vtep_ip), o.underlay, o.vtep_mac, o.device, o.host))

    def overlay(self, network_id: str) -> Overlay | None:
        from ipaddress import ip_address, ip_network

        row = self.db.execute("SELECT n.name, o.supernet, o.vni, o.port, o.vtep_ip, o.underlay, o.vtep_mac, o.device,"
                              " o.host FROM overlays o JOIN networks n ON n.id = o.network_id WHERE o.network_id = ?",
                              (network_id,)).fetchone()
        if row is None:
            return None
        name, supernet, vni, port, vtep_ip, underlay, vtep_mac, device, host = row
        return Overlay(name, ip_network(supernet), vni, port, ip_address(vtep_ip), underlay, vtep_mac, device, host)

    def overlay_peers(self, network_id: str) -> list[Peer]:
        from ipaddress import ip_address, ip_network

        return [Peer(host, ip_network(block), ip_address(vtep_ip), vtep_mac) for host, block, vtep_ip, vtep_mac in
                self.db.execute("SELECT host, block, vtep_ip, vtep_mac FROM overlay_peers WHERE network_id = ?"
                                " ORDER BY block", (network_id,))]

    def set_overlay_peers(self, network_id: str, peers: list[Peer]) -> None:
        self.db.execute("DELETE FROM overlay_peers WHERE network_id = ?", (network_id,))
        self.db.executemany("INSERT INTO overlay_peers (network_id, host, block, vtep_ip, vtep_mac) VALUES (?, ?, ?, ?, ?)",
                            [(network_id, p.host, str(p.block), str(p.vtep_ip), p.vtep_mac) for p in peers])

    def fence(self, network_id: str, reason: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO cluster_fences (network_id, reason) VALUES (?, ?)", (network_id, reason))

    def fence_reason(self, network_id: str) -> str | None:
        row = self.db.execute("SELECT reason FROM cluster_fences WHERE network_id = ?", (network_id,)).fetchone()
        return row[0] if row else None

    def set_cluster_names(self, network_id: str, rows: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]]) -> None:
        """Other hosts' sandboxes on an overlay network: (host, sandbox, addresses, aliases)."""
        self.db.execute("DELETE FROM cluster_names WHERE network_id = ?", (network_id,))
        self.db.executemany("INSERT INTO cluster_names (network_id, host, sandbox, addresses, aliases)"
                            " VALUES (?, ?, ?, ?, ?)",
                            [(network_id, host, sandbox, json.dumps(list(addresses)), json.dumps(list(aliases)))
                             for host, sandbox, addresses, aliases in rows])

    def add_sandbox(self, sandbox_id: str, name: str, state: str, container_id: str | None = None,
                    netns: str | None = None, labels: tuple[tuple[str, str], ...] = ()) -> float:
        created = time.time()
        self.db.execute("INSERT INTO sandboxes (id, name, state, created, container_id, netns, labels)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (sandbox_id, name, state, created, container_id, netns, json.dumps(dict(labels))))
        return created

    def sandbox_id(self, name: str) -> str | None:
        row = self.db.execute("SELECT id FROM sandboxes WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_sandbox_state(self, name: str, state: str) -> None:
        self.db.execute("UPDATE sandboxes SET state = ? WHERE name = ?", (state, name))

    # Services (the table `services` is made by SCHEMA when missing)

    _SERVICE_COLUMNS = ("SELECT v.id, v.name, n.name, v.vip, v.vip6, v.ports, v.backends, v.selector, v.affinity,"
                        " v.created, v.state FROM services v JOIN networks n ON n.id = v.network_id")

    def services(self, networks: Sequence[str] | None = None, name: str | None = None) -> list[Service]:
        """Every service; or those of these networks (by name); or the one named."""
        if name is not None:
            where, args = " WHERE v.name = ?", (name,)
        elif networks is not None:
            where, args = f" WHERE n.name IN ({', '.join('?' for _ in networks)})", tuple(networks)
        else:
            where, args = "", ()
        rows = self.db.execute(f"{self._SERVICE_COLUMNS}{where} ORDER BY v.name", args).fetchall()
        return [Service(id=sid, name=name, network=network,
                        vips=(ip_address(vip), *((ip_address(vip6),) if vip6 else ())),
                        ports=tuple(ServicePort(*p) for p in json.loads(ports)), backends=tuple(json.loads(backends)),
                        selector=tuple(tuple(kv) for kv in json.loads(selector)), affinity=affinity,
                        created=created, state=state)
                for sid, name, network, vip, vip6, ports, backends, selector, affinity, created, state in rows]

    def service(self, name: str) -> Service | None:
        found = self.services(name=name)
        return found[0] if found else None

    def serves(self, networks: Sequence[str]) -> bool:
        """Whether any service lives on these networks (one indexed look)."""
        return self.db.execute("SELECT 1 FROM services v JOIN networks n ON n.id = v.network_id WHERE n.name IN"
                               f" ({', '.join('?' for _ in networks)}) LIMIT 1", tuple(networks)).fetchone() is not None

    def has_services(self, network_id: str) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT name FROM services WHERE network_id = ? ORDER BY name",
                                                  (network_id,))]

    def add_service(self, service: Service, network_id: str) -> None:
        self.db.execute("INSERT INTO services (id, name, network_id, vip, vip6, ports, backends, selector, affinity,"
                        " state, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (service.id, service.name, network_id, str(service.vips[0]),
                         str(service.vips[1]) if len(service.vips) > 1 else None,
                         json.dumps([[p.protocol, p.port, p.target, *((p.node_port,) if p.node_port else ())]
                                     for p in service.ports]),
                         json.dumps(list(service.backends)), json.dumps([list(kv) for kv in service.selector]),
                         service.affinity, service.state, service.created))
        self.db.executemany("INSERT INTO service_node_ports (service_id, protocol, host_port, target_port)"
                            " VALUES (?, ?, ?, ?)",
                            [(service.id, p.protocol, p.node_port, p.target) for p in service.ports if p.node_port])

    def set_service_state(self, service_id: str, state: str) -> None:
        self.db.execute("UPDATE services SET state = ? WHERE id = ?", (state, service_id))

    def delete_service(self, service_id: str) -> None:
        self.db.execute("DELETE FROM services WHERE id = ?", (service_id,))

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def delete_meta(self, key: str) -> None:
        self.db.execute("DELETE FROM meta WHERE key = ?", (key,))

    def service_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM services").fetchone()[0]

    def vips(self) -> set[str]:
        return {v for row in self.db.execute("SELECT vip, vip6 FROM services") for v in row if v}

    def node_port_holder(self, protocol: str, host_port: int) -> str | None:
        """The service that publishes this host port, if one does."""
        row = self.db.execute("SELECT s.name FROM service_node_ports p JOIN services s ON s.id = p.service_id"
                              " WHERE p.protocol = ? AND p.host_port = ?", (protocol, host_port)).fetchone()
        return row[0] if row else None

    # Links (the table `links` is made by SCHEMA when missing)

    def links(self, sandbox: str | None = None) -> list[Link]:
        """Every link, or those with an end in this sandbox, in the order they were made."""
        rows = self.db.execute(
            "SELECT l.id, a.name, l.a_ifname, l.a_addresses, b.name, l.b_ifname, l.b_addresses, l.mtu, l.created,"
            " l.state FROM links l JOIN sandboxes a ON a.id = l.a_sandbox_id JOIN sandboxes b ON b.id = l.b_sandbox_id"
            + (" WHERE a.name = ? OR b.name = ?" if sandbox is not None else "") + " ORDER BY l.created",
            (sandbox, sandbox) if sandbox is not None else ()).fetchall()
        return [Link(id=lid, a=LinkEnd(a, a_if, tuple(ip_interface(x) for x in json.loads(a_ips))),
                     b=LinkEnd(b, b_if, tuple(ip_interface(x) for x in json.loads(b_ips))), mtu=mtu, created=created,
                     state=state)
                for lid, a, a_if, a_ips, b, b_if, b_ips, mtu, created, state in rows]

    def add_link(self, link: Link, a_sandbox_id: str, b_sandbox_id: str) -> None:
        self.db.execute("INSERT INTO links (id, a_sandbox_id, a_ifname, a_addresses, b_sandbox_id, b_ifname,"
                        " b_addresses, mtu, state, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (link.id, a_sandbox_id, link.a.ifname, json.dumps([str(x) for x in link.a.addresses]),
                         b_sandbox_id, link.b.ifname, json.dumps([str(x) for x in link.b.addresses]), link.mtu,
                         link.state, link.created))

    def set_link_state(self, link_id: str, state: str) -> None:
        self.db.execute("UPDATE links SET state = ? WHERE id = ?", (state, link_id))

    def delete_link(self, link_id: str) -> None:
        self.db.execute("DELETE FROM links WHERE id = ?", (link_id,))

    # Routes (the table `routes` is made by SCHEMA when missing)

    def routes(self, sandbox: str | None = None) -> list[Route]:
        """Every static route, or one sandbox's, by sandbox and destination."""
        rows = self.db.execute(
            "SELECT s.name, r.dst, r.via, r.created, r.state FROM routes r JOIN sandboxes s ON s.id = r.sandbox_id"
            + (" WHERE s.name = ?" if sandbox is not None else "") + " ORDER BY s.name, r.created",
            (sandbox,) if sandbox is not None else ()).fetchall()
        return [Route(name, ip_network(dst), ip_address(via), created, state)
                for name, dst, via, created, state in rows]

    def add_route(self, route: Route, sandbox_id: str) -> None:
        self.db.execute("INSERT INTO routes (sandbox_id, dst, via, state, created) VALUES (?, ?, ?, ?, ?)",
                        (sandbox_id, str(route.dst), str(route.via), route.state, route.created))

    def set_route_state(self, route: Route, state: str) -> None:
        self.db.execute("UPDATE routes SET state = ? WHERE dst = ? AND sandbox_id = (SELECT id FROM sandboxes"
                        " WHERE name = ?)", (state, str(route.dst), route.sandbox))

    def delete_route(self, route: Route) -> None:
        self.db.execute("DELETE FROM routes WHERE dst = ? AND sandbox_id = (SELECT id FROM sandboxes WHERE name = ?)",
                        (str(route.dst), route.sandbox))

    # Shapings (the table `shapings` is made by SCHEMA when missing)

    def shapings(self, sandbox: str | None = None) -> list[Shaping]:
        """Every shaping, or one sandbox's, by sandbox and target."""
        from .shaping import Settings, Shaping

        rows = self.db.execute(
            "SELECT s.name, h.target, h.direction, h.settings, h.state FROM shapings h JOIN sandboxes s"
            " ON s.id = h.sandbox_id" + (" WHERE s.name = ?" if sandbox is not None else "") + " ORDER BY s.name, h.target",
            (sandbox,) if sandbox is not None else ()).fetchall()
        found = []
        for name, target, direction, settings, state in rows:
            kind, _, value = target.partition(":")
            found.append(Shaping(name, value if kind == "network" else None, value if kind == "link" else None,
                                 direction, Settings(**json.loads(settings)), state))
        return found

    def add_shaping(self, shaping: Shaping, sandbox_id: str, endpoint_id: str | None, link_id: str | None) -> None:
        self.db.execute("INSERT INTO shapings (sandbox_id, endpoint_id, link_id, target, direction, settings, state)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (sandbox_id, endpoint_id, link_id, shaping.key, shaping.direction,
                         _settings_json(shaping), shaping.state))

    def update_shaping(self, shaping: Shaping, sandbox_id: str) -> None:
        self.db.execute("UPDATE shapings SET direction = ?, settings = ?, state = ? WHERE sandbox_id = ? AND target = ?",
                        (shaping.direction, _settings_json(shaping), shaping.state, sandbox_id, shaping.key))

    def delete_shaping(self, sandbox_id: str, key: str) -> None:
        self.db.execute("DELETE FROM shapings WHERE sandbox_id = ? AND target = ?", (sandbox_id, key))

    # Interceptions (the table `interceptions` is made by SCHEMA when missing)

    def interceptions(self) -> list[tuple[str, str, str, dict]]:
        """(sandbox name, its handle, state, spec as JSON) of every interception."""
        rows = self.db.execute("SELECT s.name, s.netns, i.state, i.spec FROM interceptions i JOIN sandboxes s"
                               " ON s.id = i.sandbox_id ORDER BY s.name").fetchall()
        return [(name, netns or name, state, json.loads(spec)) for name, netns, state, spec in rows]

    def add_interception(self, sandbox_id: str, spec: dict, state: str) -> None:
        self.db.execute("INSERT INTO interceptions (sandbox_id, spec, state) VALUES (?, ?, ?)",
                        (sandbox_id, json.dumps(spec), state))

    def update_interception(self, sandbox_id: str, spec: dict) -> None:
        self.db.execute("UPDATE interceptions SET spec = ? WHERE sandbox_id = ?", (json.dumps(spec), sandbox_id))

    def set_interception_state(self, sandbox_id: str, state: str) -> None:
        self.db.execute("UPDATE interceptions SET state = ? WHERE sandbox_id = ?", (state, sandbox_id))

    def delete_interception(self, sandbox_id: str) -> None:
        self.db.execute("DELETE FROM interceptions WHERE sandbox_id = ?", (sandbox_id,))

    # Topologies' objects (the table `topology_objects` is made by SCHEMA when missing)

    def topology_objects(self) -> list[tuple[str, str, str, dict]]:
        """(topology, kind, key, spec) of every object a topology file made."""
        rows = self.db.execute("SELECT topology, kind, key, spec FROM topology_objects ORDER BY topology, kind, key")
        return [(topology, kind, key, json.loads(spec)) for topology, kind, key, spec in rows.fetchall()]

    def own_object(self, topology: str, kind: str, key: str, spec: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO topology_objects (topology, kind, key, spec) VALUES (?, ?, ?, ?)",
                        (topology, kind, key, json.dumps(spec, sort_keys=True)))

    def disown_object(self, topology: str, kind: str, key: str) -> None:
        self.db.execute("DELETE FROM topology_objects WHERE topology = ? AND kind = ? AND key = ?",
                        (topology, kind, key))

    def delete_sandbox(self, name: str) -> None:
        self.db.execute("DELETE FROM sandboxes WHERE name = ?", (name,))

    def add_endpoint(self, sandbox_id: str, network_id: str, endpoint: Endpoint) -> None:
        self.db.execute(
            "INSERT INTO endpoints (id, sandbox_id, network_id, ifname, host_ifname, mac, default_route, state,"
            " created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (endpoint.id, sandbox_id, network_id, endpoint.ifname, endpoint.host_ifname, endpoint.mac,
             int(endpoint.default_route), endpoint.state, time.time()),
        )
        self.db.executemany("INSERT INTO aliases (endpoint_id, alias) VALUES (?, ?)",
                            [(endpoint.id, alias) for alias in endpoint.aliases])
        for address in endpoint.addresses:
            self.db.execute("INSERT INTO addresses (endpoint_id, network_id, version, ip) VALUES (?, ?, ?, ?)",
                            (endpoint.id, network_id, address.version, str(address.ip)))
            self.set_last_ip(network_id, address.version, address.ip)

    def set_endpoints_state(self, sandbox_id: str, state: str) -> None:
        self.db.execute("UPDATE endpoints SET state = ? WHERE sandbox_id = ?", (state, sandbox_id))

    def set_endpoint_state(self, endpoint_id: str, state: str) -> None:
        self.db.execute("UPDATE endpoints SET state = ? WHERE id = ?", (state, endpoint_id))

    def set_default_route(self, endpoint_id: str, carries: bool) -> None:
        self.db.execute("UPDATE endpoints SET default_route = ? WHERE id = ?", (int(carries), endpoint_id))

    def delete_endpoint(self, endpoint_id: str) -> None:
        self.db.execute("DELETE FROM endpoints WHERE id = ?", (endpoint_id,))
