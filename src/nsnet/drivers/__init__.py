"""How a network's sandboxes reach each other: its driver (`network create --driver`).

* `bridge` (the default): a bridge of nsnet's holding the gateways, a veth per sandbox, nsnet's
  firewall (isolation, NAT, published ports, services) and its resolver.
* `macvlan`: no bridge. Each sandbox gets a macvlan child of the host interface `--parent`,
  born in its namespace as its interface, with an address from the network's subnet: it is a
  machine of its own on the parent's LAN. Its traffic never crosses the host's IP stack, so
  nothing of nsnet's firewall applies (no isolation from the LAN, no NAT, no published ports, no
  services, no DNS), and by the kernel's design the host cannot reach its children through the
  parent, nor they the host (Docker documents the same). The default route goes via `--gateway`
  (a router on the parent's LAN); without one the network is internal: no default route.
  `--mode` is macvlan's (bridge: children reach each other through the parent; private: they
  cannot; vepa: only through a switch outside that sends frames back). passthru is refused: it
  hands the parent itself (its MAC, promiscuous mode) to one child, and nsnet never changes a parent.
* `ipvlan` is refused: this kernel lacks it (checked for real; `nsnet doctor` lists it).

The planner dispatches on the driver (nsnet.plan.drivers); the overlay driver comes next.
"""

from __future__ import annotations

DRIVERS = ("bridge", "macvlan")
# IFLA_MACVLAN_MODE's values (linux/if_link.h)
MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8}
