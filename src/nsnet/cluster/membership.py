"""The cluster-wide half of overlay networks: creating one (its config and VNI, by compare-and-swap),
a host joining it (a block leased, then the local half built by the engine), leaving it, and
evicting a host. Every write is an etcd transaction; a refusal or a store that does not answer
changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, ip_network
from typing import Any

from .. import validate
from ..errors import Conflict, InvalidInput, NotFound
from . import blocks, records
from .host import VXLAN_OVERHEAD, Underlay, vtep_mac
from .records import Block, HostRecord, NetworkConfig
from .store import Compare, Delete, Put

MAX_VNI = (1 << 24) - 1
TOMBSTONE_TTL = 24 * 3600  # an evicted block is not handed out again for a day (brief §5.2)


def network_config(store, name: str) -> NetworkConfig | None:
    kv = store.get(records.config_key(name))
    return records.decode(NetworkConfig, kv.value) if kv else None


def create_network(store, name: str, *, subnet: str | None, block_prefix: int | None = None, vni: int | None = None,
                   mtu: int | None = None, internal: bool = False, here: Underlay) -> NetworkConfig:
    validate.name("network", name)
    if not subnet:
        raise InvalidInput("--subnet", None, "an overlay network needs its whole subnet (e.g. 10.80.0.0/16)")
    try:
        supernet = ip_network(subnet)
    except ValueError as exc:
        raise InvalidInput("--subnet", subnet, str(exc)) from None
    if not isinstance(supernet, IPv4Network):
        raise InvalidInput("--subnet", subnet, "overlay networks are IPv4 (an IPv6 overlay is not built yet)")
    prefix = block_prefix if block_prefix is not None else max(24, min(supernet.prefixlen + 4, 28))
    if not supernet.prefixlen < prefix <= 29:
        raise InvalidInput("--block-size", prefix, f"must be longer than the subnet's /{supernet.prefixlen} and at most 29")
    if vni is not None and not 1 <= vni <= MAX_VNI:
        raise InvalidInput("--vni", vni, f"must be between 1 and {MAX_VNI}")
    most = here.overlay_mtu
    if mtu is None:
        mtu = most
    validate.mtu(mtu)
    if mtu > most:
        raise InvalidInput("--mtu", mtu, f"the underlay {here.device} (MTU {here.mtu}) carries at most {most}"
                           f" inside VXLAN ({VXLAN_OVERHEAD} bytes of headers)")
    values, _ = store.range(records.key("networks") + "/")
    for kv in values:
        if kv.key.endswith("/config"):
            other = records.decode(NetworkConfig, kv.value)
            if other is None:
                continue
            if other.name == name:
                raise Conflict(f"network {name!r} already exists in the cluster")
            if other.supernet.overlaps(supernet):
                raise Conflict(f"subnet {supernet} overlaps overlay network {other.name!r}'s {other.subnet}")
    store.txn([Compare(records.key("cluster"), "create", "=", 0)], [Put(records.key("cluster"),
                                                                      records.encode({"schema": records.SCHEMA}))])
    for candidate in ([vni] if vni is not None else _free_vnis(store)):
        config = NetworkConfig(name=name, subnet=str(supernet), block_prefix=prefix, vni=candidate, mtu=mtu,
                               internal=internal)
        ok, _ = store.txn([Compare(records.config_key(name), "create", "=", 0),
                           Compare(records.vni_key(candidate), "create", "=", 0)],
                          [Put(records.config_key(name), records.encode(config)),
                           Put(records.vni_key(candidate), records.encode({"network": name}))])
        if ok:
            return config
        if store.get(records.config_key(name)) is not None:
            raise Conflict(f"network {name!r} already exists in the cluster")
        if vni is not None:
            raise Conflict(f"VNI {vni} is another overlay network's")
    raise Conflict("no free VNI left")


def _free_vnis(store):
    held, _ = store.range(records.key("vnis") + "/")
    taken = {int(kv.key.rsplit("/", 1)[1]) for kv in held if kv.key.rsplit("/", 1)[1].isdigit()}
    candidate = records.FIRST_VNI
    for _ in range(64):  # a few rounds of races at most
        while candidate in taken:
            candidate += 1
        if candidate > MAX_VNI:
            return
        yield candidate
        taken.add(candidate)


@dataclass(frozen=True)
class Joining:
    """What a host needs to build its half of a network: the config, its block, its VTEP."""

    config: NetworkConfig
    block: IPv4Network
    host: str
    here: Underlay

    @property
    def mac(self) -> str:
        return vtep_mac(self.host, self.config.vni)


def lease_block(store, me: str, name: str, here: Underlay) -> Joining:
    """Host `me`'s block of `name` (taken back when it holds one), after checking it can carry it."""
    config = network_config(store, name)
    if config is None:
        raise NotFound("network", name)
    if here.overlay_mtu < config.mtu:
        raise InvalidInput("underlay MTU", here.mtu, f"{here.device} carries at most {here.overlay_mtu} inside VXLAN"
                           f" and network {name!r} needs {config.mtu}: this host cannot join it")
    alive = store.get(records.host_key(me))
    record = records.decode(HostRecord, alive.value) if alive else None
    if record is not None and record.vtep_ip != here.vtep_ip:
        raise Conflict(f"host id {me!r} is already {record.vtep_ip}'s in the cluster; give this host another"
                       " (NSNET_HOST_ID)")
    fence = store.get(records.key("fenced", me, name))
    if fence is not None:
        raise Conflict(f"this host was evicted from network {name!r} while it was cut off; run `nsnet network rm"
                       f" {name}` here before it joins again")
    block = blocks.lease(store, name, config, Block(me, here.vtep_ip, vtep_mac(me, config.vni), config.mtu))
    return Joining(config, block, me, here)


def holds_block(store, me: str, name: str, block: IPv4Network | str) -> bool:
    """Whether `block` of network `name` is host `me`'s in the cluster, read from the store now."""
    return _held(store, me, name, block) is not None


def release_held(store, me: str, name: str, block: IPv4Network | str) -> bool:
    """`block` of `name` deleted if host `me` holds it (by compare-and-swap: never one another
    host took meanwhile); True when it was."""
    current = _held(store, me, name, block)
    if current is None:
        return False
    ok, _ = store.txn([Compare(current.key, "mod", "=", current.mod_revision)], [Delete(current.key)])
    return ok


def _held(store, me: str, name: str, block: IPv4Network | str):
    """The block's key-value when host `me` holds it, else None."""
    current = store.get(records.block_key(name, ip_network(block)))
    owner = records.decode(Block, current.value) if current is not None else None
    return current if owner is not None and owner.host == me else None


def release_block(store, name: str, joining: Joining) -> None:
    """Undo lease_block (a join that failed after it, or lost a race on its own host)."""
    store.txn([], [Delete(records.block_key(name, joining.block))])


def leave(store, me: str, name: str) -> bool:
    """Drop host `me`'s blocks and names of `name`; True when no host is left in it (the network
    is then gone from the cluster too, and its VNI free)."""
    held, _ = store.range(records.blocks_prefix(name))
    mine = [kv for kv in held if records.decode(Block, kv.value) and records.decode(Block, kv.value).host == me]
    last = len(mine) == len(held)
    ops: list[Any] = [Delete(kv.key) for kv in mine] + [Delete(records.endpoints_prefix(name, me), prefix=True),
                                                        Delete(records.key("fenced", me, name))]
    compares = [Compare(kv.key, "mod", "=", kv.mod_revision) for kv in held]
    config = network_config(store, name)
    if last and config is not None:
        ops += [Delete(records.config_key(name)), Delete(records.vni_key(config.vni)),
                Delete(records.key("networks", name) + "/", prefix=True),
                Delete(records.key("evicted", name) + "/", prefix=True)]
    ok, _ = store.txn(compares, ops)
    if not ok:
        raise Conflict(f"network {name!r} changed in the cluster meanwhile; try again")
    return last


def evict(store, host: str, *, force: bool = False, lease: int | None = None) -> list[str]:
    """Delete `host`'s blocks and names (its peers then forget it), tombstone the blocks; refused
    while the host is alive unless forced. Returns the blocks evicted, as NETWORK:CIDR."""
    alive = store.get(records.host_key(host))
    if alive is not None and not force:
        raise Conflict(f"host {host!r} is alive (its lease holds); use -f to evict it anyway: it will fence itself")
    networks, _ = store.range(records.key("networks") + "/")
    compares, ops, evicted = [], [], []
    if not force:
        compares.append(Compare(records.host_key(host), "create", "=", 0))
    tombstone_lease = lease if lease is not None else store.grant(TOMBSTONE_TTL)
    for kv in networks:
        parts = kv.key[len(records.PREFIX):].split("/")
        if len(parts) == 4 and parts[2] == "blocks":
            block = records.decode(Block, kv.value)
            if block is not None and block.host == host:
                network, cidr = parts[1], records.block_of(parts[3])
                compares.append(Compare(kv.key, "mod", "=", kv.mod_revision))
                ops += [Delete(kv.key), Delete(records.endpoints_prefix(network, host), prefix=True),
                        Put(records.tombstone_key(network, cidr), records.encode({"host": host}), tombstone_lease),
                        Put(records.key("fenced", host, network), records.encode({"block": str(cidr)}))]
                evicted.append(f"{network}:{cidr}")
    if not evicted:
        if alive is None and store.get(records.suspect_key(host)) is None:
            raise NotFound("host", host)
        store.txn([], [Delete(records.suspect_key(host))])
        return []
    ops.append(Delete(records.suspect_key(host)))
    ok, _ = store.txn(compares, ops)
    if not ok:
        raise Conflict(f"host {host!r} changed meanwhile (it came back, or another host evicted it); try again")
    return evicted
