"""What nsnet keeps in the cluster store: the key layout under /nsnet/v1/ and the JSON records.

    cluster                                 {"schema": 1}
    vnis/<vni>                              {"network": NAME}              unique VNIs, CAS-created
    networks/<name>/config                  NetworkConfig                  CAS-created once
    networks/<name>/blocks/<a.b.c.d-len>    Block                          a host's share: no lease
    networks/<name>/endpoints/<host>/<sb>   Endpoint                       names across hosts
    hosts/<host>                            HostRecord                     under the host's liveness lease
    suspects/<host>                         {}                             under a lease of --evict-after
    evicted/<name>/<a.b.c.d-len>            {"host": H}                    a tombstone, under a 24 h lease

A block is a reservation, not liveness (flannel's model): peers keep routing to a host whose agent
or etcd is gone, and only an eviction (by timer or by hand) deletes its blocks.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Network, ip_network
from typing import Any

PREFIX = "/nsnet/v1/"
SCHEMA = 1
VXLAN_PORT = 4789  # IANA's, set explicitly: Linux's default is 8472 (brief §4.9)
FIRST_VNI = 4096


@dataclass(frozen=True)
class NetworkConfig:
    name: str
    subnet: str  # the supernet all hosts' blocks come from
    block_prefix: int
    vni: int
    mtu: int
    port: int = VXLAN_PORT
    internal: bool = False

    @property
    def supernet(self) -> IPv4Network:
        return ip_network(self.subnet)  # type: ignore[return-value]


@dataclass(frozen=True)
class Block:
    host: str
    vtep_ip: str
    vtep_mac: str
    mtu: int


@dataclass(frozen=True)
class HostRecord:
    host: str
    vtep_ip: str
    underlay_mtu: int
    boot_id: str = ""


@dataclass(frozen=True)
class Endpoint:
    addresses: tuple[str, ...]
    aliases: tuple[str, ...] = field(default=())


def key(*parts: str) -> str:
    return PREFIX + "/".join(parts)


def block_name(block: IPv4Network) -> str:
    return f"{block.network_address}-{block.prefixlen}"


def block_of(name: str) -> IPv4Network:
    address, _, length = name.partition("-")
    return ip_network(f"{address}/{length}")  # type: ignore[return-value]


def config_key(network: str) -> str:
    return key("networks", network, "config")


def blocks_prefix(network: str) -> str:
    return key("networks", network, "blocks") + "/"


def block_key(network: str, block: IPv4Network) -> str:
    return blocks_prefix(network) + block_name(block)


def endpoints_prefix(network: str, host: str | None = None) -> str:
    return key("networks", network, "endpoints") + "/" + (f"{host}/" if host else "")


def endpoint_key(network: str, host: str, sandbox: str) -> str:
    return endpoints_prefix(network, host) + sandbox


def host_key(host: str) -> str:
    return key("hosts", host)


def suspect_key(host: str) -> str:
    return key("suspects", host)


def tombstone_key(network: str, block: IPv4Network) -> str:
    return key("evicted", network, block_name(block))


def vni_key(vni: int) -> str:
    return key("vnis", str(vni))


def encode(record: Any) -> bytes:
    return json.dumps(asdict(record) if hasattr(record, "__dataclass_fields__") else record,
                      sort_keys=True, separators=(",", ":")).encode()


def decode(kind: type, value: bytes) -> Any:
    """A record of `kind` from its JSON; None when the value is not one (written by something else)."""
    try:
        data = json.loads(value)
        if kind is Endpoint:
            return Endpoint(tuple(data["addresses"]), tuple(data.get("aliases", ())))
        return kind(**{name: data[name] for name in kind.__dataclass_fields__ if name in data})
    except (ValueError, TypeError, KeyError):
        return None
