"""What nsnet has made, read from its ledger: the queries, without the machinery to change anything.

`Engine` extends it; the CLI's read-only verbs (`ls`, `ps`, `inspect`, `port`) use it alone, so they
load neither the planner, the firewall renderer nor the kernel layer.
"""

from __future__ import annotations

from .errors import InvalidInput, NotFound
from .model import Network, PortMapping, Sandbox
from .store import Store

TYPE_CHECKING = False  # typing's import is 5 ms of a CNI plugin's start-up
if TYPE_CHECKING:
    from typing import Any, Self

    from .dns.table import Addr
    from .shaping import Shaping


class Catalog:
    def __init__(self, state_dir: str | None = None) -> None:
        self._store = Store(state_dir)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def networks(self) -> list[Network]:
        return self._store.networks()

    def network(self, name: str) -> Network:
        network = self._store.network(name)
        if network is None:
            raise NotFound("network", name)
        return network

    def network_details(self, name: str) -> dict[str, Any]:
        """`network inspect`: the network and, like Docker's "Containers", its attached sandboxes."""
        network = self.network(name)
        attached = {
            e.sandbox: {"EndpointId": e.id, "IPAddress": str(e.family(4) or ""),
                        "IPv6Address": str(e.family(6) or ""), "MacAddress": e.mac, "Interface": e.ifname,
                        "HostInterface": e.host_ifname, "State": e.state}
            for e in self._store.endpoints_of_network(network.id)
        }
        details = {**network.to_dict(), "Sandboxes": attached}
        overlay = self._store.overlay(network.id) if network.driver == "overlay" else None
        if overlay is not None:  # this host's share of it, and the other hosts' (Docker's "Peers")
            details["Overlay"] = {
                "Subnet": str(overlay.supernet), "Block": str(network.subnet), "VNI": overlay.vni,
                "Port": overlay.port, "Device": overlay.device, "Host": overlay.host, "Vtep": str(overlay.vtep_ip),
                "Peers": [{"Host": p.host, "Block": str(p.block), "Vtep": str(p.vtep_ip)}
                          for p in self._store.overlay_peers(network.id)]}
        return details

    def sandboxes(self) -> list[Sandbox]:
        return self._store.sandboxes()

    def sandbox(self, name: str) -> Sandbox:
        sandbox = self._store.sandbox(name)
        if sandbox is None:
            raise NotFound("sandbox", name)
        return sandbox

    def shapings(self, sandbox: str | None = None) -> list[Shaping]:
        """Every shaped interface (nsnet.shaping), or one sandbox's."""
        if sandbox is not None:
            self.sandbox(sandbox)
        return self._store.shapings(sandbox)

    def ports(self, name: str) -> list[PortMapping]:
        """Every port the sandbox publishes, on all its networks."""
        return [port for endpoint in self.sandbox(name).endpoints for port in endpoint.ports]

    def resolve(self, name: str, network: str | None = None) -> list[Addr]:
        """What nsnet's resolver answers the host for `name` (a sandbox or an alias, on `network`
        only when given), read from the ledger: no DNS on the way."""
        from .dns.ledger import read_table

        if network is not None and not self.network(network).dns:
            raise InvalidInput("network", network, "has no DNS (--no-dns): its sandboxes have no names")
        table, _ = read_table(self._store.db)
        asked = name.lower().rstrip(".")
        found = table.lookup(f"{asked}.{network.lower()}" if network else asked, table.everything)
        if not found.known:
            raise NotFound(f"name on network {network!r}" if network else "name", name)
        return sorted(found.addresses, key=lambda a: (a.version, a.packed))
