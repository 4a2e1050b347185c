"""`nsnet check` and `nsnet gc`: the ledger against the live kernel, and the repair.

check observes the kernel and lists every difference (nsnet.reconcile does the comparing). gc
brings the two back to agreement: half-done operations are undone (rows 'creating') or finished
('removing'); sandboxes whose namespace is gone are forgotten, which releases their addresses and
ports; missing bridges, addresses, routes and veths are made again; nsnet-named links that no row
describes are deleted; and nsnet's tables are rebuilt from the ledger in one transaction. Nothing
that is not nsnet's is touched. Every step runs even when one fails; the failures are raised at
the end. The caller holds the network lock.
"""

from __future__ import annotations

import time

from .apply import teardown
from .errors import TeardownError
from .kernel import Kernel
from .naming import VETH_PREFIX
from .plan.network import plan_repair_network, plan_replace_firewall
from .plan.ops import DeleteLink, Operation, RemoveEtcFiles
from .plan.sandbox import plan_disconnect, plan_remove_sandbox, plan_repair_endpoint
from .reconcile import NSNET_LINK, Drift, Observed, desired_firewall, find_drift
from .store import Store

# How long a removed sandbox's veth may linger (see observe).
SETTLE_SECONDS = 2.0


def observe(store: Store, kernel: Kernel) -> Observed:
    """The kernel's state, once the namespaces of removed sandboxes are gone.

    The kernel destroys an unpinned namespace, and its veths, in deferred work: right after `rm`
    a veth can linger for some milliseconds, and would look like an orphan."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        sandboxes = store.sandboxes()
        observed = kernel.observe({s.name: [e.ifname for e in s.endpoints] for s in sandboxes})
        known = {e.host_ifname for s in sandboxes for e in s.endpoints}
        lingering = [n for n in observed.links if n.startswith(VETH_PREFIX) and NSNET_LINK.match(n) and n not in known]
        if not lingering or time.monotonic() > deadline:
            return observed
        time.sleep(0.02)


def check(store: Store, kernel: Kernel) -> list[Drift]:
    return find_drift(store.networks(), store.sandboxes(), observe(store, kernel))


class _Repair:
    """One gc run: performs plans, never stopping at a failure, and remembers what it did."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.done: list[str] = []
        self.failures: list[Exception] = []

    def run(self, plan: list[Operation], what: str) -> None:
        try:
            teardown(plan, self.kernel, what)
        except TeardownError as exc:
            self.failures.extend(exc.errors)
        self.done.append(what)


def gc(store: Store, kernel: Kernel) -> list[str]:
    repair = _Repair(kernel)
    networks = {n.name: n for n in store.networks()}
    _finish_interrupted(store, networks, repair)
    observed = observe(store, kernel)
    for sandbox in store.sandboxes():
        if sandbox.name not in observed.netns:
            with store.transaction():
                store.delete_sandbox(sandbox.name)
            repair.done.append(f"forgot sandbox {sandbox.name}: its namespace is gone")
            repair.run([RemoveEtcFiles(sandbox.name)], f"removed /etc/netns/{sandbox.name}")
    for network in networks.values():
        ops = plan_repair_network(network, observed.links.get(network.bridge), observed.ip_forward, observed.sysctls)
        if ops:
            repair.run(ops, f"repaired network {network.name}")
    for sandbox in store.sandboxes():
        inside = observed.sandbox_links.get(sandbox.name, {})
        for endpoint in sandbox.endpoints:
            network = networks[endpoint.network]
            ops = plan_repair_endpoint(endpoint, network, observed.links.get(endpoint.host_ifname),
                                       inside.get(endpoint.ifname), observed.sandbox_routes.get(sandbox.name))
            if ops:
                repair.run(ops, f"repaired {sandbox.name}'s link to {network.name}")
    known = {n.bridge for n in networks.values()} | {e.host_ifname for s in store.sandboxes() for e in s.endpoints}
    for name in sorted(observed.links):
        if NSNET_LINK.match(name) and name not in known:
            repair.run([DeleteLink(name)], f"deleted orphan link {name}")
    firewall = desired_firewall(store.networks(), store.sandboxes())
    if firewall or observed.nft is not None:
        repair.run(plan_replace_firewall(firewall), "rebuilt nsnet's nftables tables from the ledger")
    if repair.failures:
        raise TeardownError("gc", repair.failures)
    return repair.done


def _finish_interrupted(store: Store, networks: dict, repair: _Repair) -> None:
    """Rows left 'creating' or 'removing' by a command that died: undo or finish its work."""
    for sandbox in store.sandboxes():
        attachments = [(e, networks[e.network]) for e in sandbox.endpoints]
        if sandbox.state != "ready":
            repair.run(plan_remove_sandbox(sandbox.name, True, attachments),
                       f"finished removing sandbox {sandbox.name}")
            with store.transaction():
                store.delete_sandbox(sandbox.name)
            continue
        for endpoint, network in attachments:
            if endpoint.state != "ready":
                repair.run(plan_disconnect(endpoint, network, None),
                           f"finished disconnecting {sandbox.name} from {network.name}")
                with store.transaction():
                    store.delete_endpoint(endpoint.id)
    for network in list(networks.values()):
        if network.state != "ready" and not store.endpoint_count(network.id):
            repair.run([DeleteLink(network.bridge)], f"finished removing network {network.name}")
            with store.transaction():
                store.delete_network(network.id)
            del networks[network.name]
