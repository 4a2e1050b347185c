"""The cluster as one agent sees it: the keys under /nsnet/v1/ parsed into records. Pure: the
agent keeps a key → value map up to date from its list and watch, and reads it through a View."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network

from . import records
from .records import Block, Endpoint, HostRecord, NetworkConfig


@dataclass
class View:
    configs: dict[str, NetworkConfig] = field(default_factory=dict)
    blocks: dict[str, dict[IPv4Network, Block]] = field(default_factory=dict)  # network → block → owner
    endpoints: dict[str, dict[tuple[str, str], Endpoint]] = field(default_factory=dict)  # network → (host, sandbox)
    hosts: dict[str, HostRecord] = field(default_factory=dict)  # alive: their liveness lease holds
    suspects: set[str] = field(default_factory=set)

    def owners(self) -> set[str]:
        """Every host holding a block of some network."""
        return {b.host for blocks in self.blocks.values() for b in blocks.values()}

    def state(self, host: str) -> str:
        if host in self.hosts:
            return "alive"
        return "suspect" if host in self.suspects else "gone"


def parse(values: Mapping[str, bytes]) -> View:
    view = View()
    for key, value in values.items():
        if not key.startswith(records.PREFIX):
            continue
        parts = key[len(records.PREFIX):].split("/")
        if parts[0] == "hosts" and len(parts) == 2:
            host = records.decode(HostRecord, value)
            if host is not None:
                view.hosts[parts[1]] = host
        elif parts[0] == "suspects" and len(parts) == 2:
            view.suspects.add(parts[1])
        elif parts[0] == "networks" and len(parts) >= 3:
            name = parts[1]
            if parts[2] == "config" and len(parts) == 3:
                config = records.decode(NetworkConfig, value)
                if config is not None:
                    view.configs[name] = config
            elif parts[2] == "blocks" and len(parts) == 4:
                block = records.decode(Block, value)
                try:
                    cidr = records.block_of(parts[3])
                except ValueError:
                    continue
                if block is not None:
                    view.blocks.setdefault(name, {})[cidr] = block
            elif parts[2] == "endpoints" and len(parts) == 5:
                endpoint = records.decode(Endpoint, value)
                if endpoint is not None:
                    view.endpoints.setdefault(name, {})[(parts[3], parts[4])] = endpoint
    return view
