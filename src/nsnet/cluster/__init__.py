"""Networks across hosts: overlay networks (VXLAN between hosts, flannel's routed model) whose
shared state lives in an existing etcd cluster, never in a store of nsnet's own.

- store.py, etcd.py: the cluster store interface, its in-memory fake, the etcd v3 gateway client;
- records.py, view.py: the keys under /nsnet/v1/ and the cluster as an agent sees it;
- host.py: this host's id, VTEP and MTU; blocks.py: leasing a block by compare-and-swap;
- membership.py: network create, join, leave, evict; agent.py: the resident process per host
  (liveness, list and watch, peers programmed through the engine, names across hosts, eviction);
  control.py: what commands ask the agent (a create on a joined network talks to it, not to etcd);
- local.py: where engine commands meet the cluster (create, join, leave, gc's cluster half).
"""

from __future__ import annotations

import os

CLUSTER_ENV = "NSNET_CLUSTER"


def endpoints(environ=os.environ) -> list[tuple[str, int]]:
    """The HOST:PORT pairs NSNET_CLUSTER names (etcd://H:P[,H:P...]); [] when unset."""
    url = environ.get(CLUSTER_ENV, "")
    _, _, rest = url.partition("://")
    pairs = []
    for item in filter(None, rest.split(",")):
        host, _, port = item.strip().rstrip("/").rpartition(":")
        pairs.append((host.strip("[]"), int(port) if port.isdigit() else 2379))
    return pairs
