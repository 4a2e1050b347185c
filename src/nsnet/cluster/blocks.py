"""Leasing a host's block of an overlay network's subnet: a pick at random among the first free
ones (so that hosts joining at once rarely want the same), then a compare-and-swap on the block's
key being absent. A lost race picks again (flannel's allocateSubnet and createSubnet, brief §1)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Collection, Iterable
from ipaddress import IPv4Network

from ..errors import Conflict
from . import records
from .records import Block
from .store import Compare, Put

CANDIDATES = 100
RACE_RETRIES = 10


def choose(supernet: IPv4Network, prefix: int, taken: Collection[IPv4Network], rng: random.Random) -> IPv4Network | None:
    """A free block: random among the first CANDIDATES blocks of `supernet` no one holds."""
    free = list(itertools.islice((b for b in supernet.subnets(new_prefix=prefix) if b not in taken), CANDIDATES))
    return rng.choice(free) if free else None


def lease(store, network: str, config: records.NetworkConfig, block: Block,
          rng: random.Random | None = None) -> IPv4Network:
    """This host's block of `network`: the one it holds already (its restart keeps its addresses),
    else a new one, never one another host holds or one evicted lately (a tombstone)."""
    rng = rng or random.Random()
    for _ in range(RACE_RETRIES):
        held, _ = store.range(records.blocks_prefix(network))
        owned = {records.block_of(kv.key.rsplit("/", 1)[1]): kv for kv in held}
        for cidr, kv in owned.items():
            current = records.decode(Block, kv.value)
            if current is not None and current.host == block.host:
                if current != block:  # a new VTEP address: the same block, updated in place
                    ok, _ = store.txn([Compare(kv.key, "mod", "=", kv.mod_revision)], [Put(kv.key, records.encode(block))])
                    if not ok:
                        continue
                return cidr
        tombstones, _ = store.range(records.key("evicted", network) + "/")
        taken = set(owned) | {records.block_of(kv.key.rsplit("/", 1)[1]) for kv in tombstones}
        cidr = choose(config.supernet, config.block_prefix, taken, rng)
        if cidr is None:
            raise Conflict(f"network {network!r} has no free block left: its {config.subnet} is all leased"
                           f" in /{config.block_prefix} blocks")
        key = records.block_key(network, cidr)
        ok, _ = store.txn([Compare(key, "create", "=", 0)], [Put(key, records.encode(block))])
        if ok:
            return cidr
    raise Conflict(f"network {network!r}: {RACE_RETRIES} blocks were taken by other hosts while this one picked;"
                   " try again")


def blocks_of(owned: Iterable[tuple[IPv4Network, Block]], host: str) -> list[IPv4Network]:
    return sorted(cidr for cidr, block in owned if block.host == host)
