"""The planner's seam between networks and how their sandboxes attach (nsnet.drivers): each
driver plans a network's creation, removal and repair, and an endpoint's attachment, detachment
and repair. The bridge driver is nsnet's original plans (plan.network, plan.sandbox); macvlan
has no network-wide kernel object at all; overlay is a bridge with a VXLAN device beside it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..model import Endpoint, Network, Owner
from . import network as bridge_network
from .ops import AddAddress, CreateMacvlan, DeleteLink, EnableIPv6, Operation, SetDefaultRoute, SetLinkUp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..kernel.state import LinkState


class Driver:
    name = ""
    # nsnet's firewall (the host's nftables tables) sees its traffic: its rules are rendered.
    firewalled = True

    def create_network(self, network: Network, others: int, owner: Owner,
                       ra_takers: Sequence[str] = ()) -> list[Operation]:
        raise NotImplementedError

    def remove_network(self, network: Network, others: int, owner: Owner) -> list[Operation]:
        raise NotImplementedError

    def repair_network(self, network: Network, link: LinkState | None, sysctls: Mapping[str, str],
                       owner: Owner) -> list[Operation]:
        raise NotImplementedError

    def attach(self, endpoint: Endpoint, network: Network, owner: Owner) -> list[Operation]:
        raise NotImplementedError

    def detach(self, endpoint: Endpoint, network: Network) -> list[Operation]:
        raise NotImplementedError

    def repair_endpoint(self, endpoint: Endpoint, network: Network, host_end: LinkState | None,
                        inside: LinkState | None, default_routes: Mapping[int, tuple[str, str]],
                        owner: Owner) -> list[Operation]:
        raise NotImplementedError


class Bridge(Driver):
    name = "bridge"

    def create_network(self, network, others, owner, ra_takers=()):
        return bridge_network.plan_create_network(network, others, owner, ra_takers)

    def remove_network(self, network, others, owner):
        return bridge_network.plan_remove_network(network, others, owner)

    def repair_network(self, network, link, sysctls, owner):
        return bridge_network.plan_repair_network(network, link, sysctls, owner)

    def attach(self, endpoint, network, owner):
        from .sandbox import bridge_attach

        return bridge_attach(endpoint, network, owner)

    def detach(self, endpoint, network):
        return [DeleteLink(endpoint.host_ifname)]  # the pair goes with its host end

    def repair_endpoint(self, endpoint, network, host_end, inside, default_routes, owner):
        from .sandbox import plan_repair_bridge_endpoint

        return plan_repair_bridge_endpoint(endpoint, network, host_end, inside, default_routes, owner)


class Macvlan(Driver):
    """Nothing network-wide: the parent is the host's (never touched), each sandbox's child is born
    in its namespace and dies with it."""

    name = "macvlan"
    firewalled = False

    def create_network(self, network, others, owner, ra_takers=()):
        return []

    def remove_network(self, network, others, owner):
        return []

    def repair_network(self, network, link, sysctls, owner):
        return []

    def attach(self, endpoint, network, owner):
        where = endpoint.where
        ops: list[Operation] = [CreateMacvlan(endpoint.ifname, network.parent or "", where, network.driver_mode or "bridge",
                                              network.mtu, endpoint.mac, owner.group)]
        if endpoint.family(6):
            ops.append(EnableIPv6(endpoint.ifname, where))
        ops.append(SetLinkUp(endpoint.ifname, where))
        ops += [AddAddress(endpoint.ifname, address, where) for address in endpoint.addresses]
        if endpoint.default_route:
            ops += [SetDefaultRoute(where, gateway, endpoint.ifname) for gateway in endpoint.gateways]
        return ops

    def detach(self, endpoint, network):
        return [DeleteLink(endpoint.ifname, endpoint.where)]

    def repair_endpoint(self, endpoint, network, host_end, inside, default_routes, owner):
        if inside is None:
            return self.attach(endpoint, network, owner)
        from .sandbox import plan_repair_inside

        return plan_repair_inside(endpoint, network, inside, default_routes)


class Overlay(Bridge):
    """A bridge network whose subnet is this host's block of a network across hosts (nsnet.cluster):
    sandboxes attach as to any bridge; the VXLAN device and the peers beside it are planned by
    plan.overlay, from the overlay's own ledger rows, when the host joins, leaves or its peers
    change."""

    name = "overlay"


DRIVERS: dict[str, Driver] = {d.name: d for d in (Bridge(), Macvlan(), Overlay())}


def driver(network: Network) -> Driver:
    return DRIVERS[network.driver]


def firewalled(networks: Sequence[Network]) -> list[Network]:
    """The networks whose traffic nsnet's firewall sees (their rules are rendered)."""
    return [n for n in networks if driver(n).firewalled]
