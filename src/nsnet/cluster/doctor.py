"""`nsnet doctor` on a host of a cluster (NSNET_CLUSTER set): what would stop its overlay networks.
`diagnose` is pure (facts in, findings out); `facts` reads them from the store and the kernel."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..doctor import Finding
from ..errors import NsnetError


@dataclass(frozen=True)
class ClusterFacts:
    store_error: str | None = None  # why the store did not answer (None: it did, with a leader)
    underlay_error: str | None = None  # why no underlay towards the store was found
    underlay: str = ""  # its interface
    underlay_mtu: int = 0
    networks_mtu: dict[str, int] = field(default_factory=dict)  # the cluster's overlay networks, their MTU
    vxlan_missing: str | None = None  # the kernel's refusal to make a VXLAN device


def facts() -> ClusterFacts:
    from ..kernel.observe import vxlan_missing
    from . import endpoints
    from .etcd import open_store
    from .host import underlay
    from .records import PREFIX
    from .view import parse

    found: dict = {"vxlan_missing": vxlan_missing()}
    try:
        here = underlay(endpoints())
        found.update(underlay=here.device, underlay_mtu=here.mtu)
    except NsnetError as exc:
        found["underlay_error"] = str(exc)
    try:
        store = open_store()
        try:
            values, _ = store.range(PREFIX)
        finally:
            store.close()
        view = parse({kv.key: kv.value for kv in values})
        found["networks_mtu"] = {name: config.mtu for name, config in view.configs.items()}
    except NsnetError as exc:
        found["store_error"] = str(exc)
    return ClusterFacts(**found)


def diagnose(cluster: ClusterFacts) -> list[Finding]:
    from .host import VXLAN_OVERHEAD

    findings = []
    if cluster.store_error is not None:
        findings.append(Finding("cluster-store", "problem", cluster.store_error,
                                "start etcd (a majority of its members), or set NSNET_CLUSTER and its NSNET_CLUSTER_*"
                                " TLS and user settings right"))
    if cluster.underlay_error is not None:
        findings.append(Finding("cluster-underlay", "problem", cluster.underlay_error,
                                "give this host a route to the cluster store, or name the interface in"
                                " NSNET_CLUSTER_IFACE"))
    if cluster.vxlan_missing is not None:
        findings.append(Finding("kernel-vxlan", "problem", f"the kernel makes no VXLAN device: {cluster.vxlan_missing}",
                                "load the vxlan module (CONFIG_VXLAN)"))
    carried = cluster.underlay_mtu - VXLAN_OVERHEAD
    too_big = sorted(f"{name} (MTU {mtu})" for name, mtu in cluster.networks_mtu.items() if cluster.underlay_mtu
                     and mtu > carried)
    if too_big:
        needed = max(cluster.networks_mtu.values()) + VXLAN_OVERHEAD
        findings.append(Finding("overlay-mtu", "problem",
                                f"the underlay {cluster.underlay} (MTU {cluster.underlay_mtu}) carries at most {carried}"
                                " inside VXLAN: this host cannot join these networks",
                                f"raise {cluster.underlay}'s MTU to {needed} or more", tuple(too_big)))
    return findings
