"""`nsnet check` and `nsnet gc`: the ledger against the live kernel, and the repair.

check observes the kernel and lists every difference (nsnet.reconcile does the comparing). gc
brings the two back to agreement: half-done operations are undone (rows 'creating') or finished
('removing'); sandboxes whose namespace is gone are forgotten, which releases their addresses and
ports; missing or damaged bridges, ports, addresses and routes are made again or set back; links
of this ledger's interface group that no row describes are deleted; and the ledger's tables are
rebuilt from it in one transaction. Nothing that is not this ledger's is touched. Every step runs
even when one fails; the failures are raised at the end.

The caller holds the ledger lock exclusively (nsnet.locks): no other command is half-way, so a
row that is not 'ready' was left by a process that died.
"""

from __future__ import annotations

import time

from .apply import teardown
from .errors import TeardownError
from .firewall import render
from .kernel import Kernel
from .model import Endpoint, Link, Network, Owner, Route, Tap
from .plan.drivers import driver
from .plan.network import FORWARDING, bridge_sysctls, plan_replace_firewall
from .plan.ops import (ApplySandboxFirewall, DeleteLink, DeleteRoute, DeleteUnreachableRoute, Operation, RemoveEtcFiles,
                       ReplaceEtcFile)
from .plan.sandbox import etc_files, plan_disconnect, plan_remove_sandbox, plan_repair_endpoint
from .plan.tap import plan_remove_tap, plan_repair_tap
from .reconcile import (Drift, Observed, default_route_holder, default_route_wrong, desired_firewall, find_drift,
                        known_links)
from .store import Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .intercept import Interception
    from .model import Service

# How long a removed sandbox's veth may linger (see observe).
SETTLE_SECONDS = 2.0


def observe(store: Store, kernel: Kernel, owner: Owner) -> Observed:
    """The kernel's state, once the namespaces of removed sandboxes are gone.

    The kernel destroys an unpinned namespace, and its veths, in deferred work: right after `rm`
    a veth can linger for some milliseconds, and would look like an orphan."""
    deadline = time.monotonic() + SETTLE_SECONDS
    keys = [*FORWARDING.values(), *(key for n in store.networks() if n.bridge for key in bridge_sysctls(n))]
    while True:
        sandboxes = store.sandboxes()
        cables: dict[str, list[str]] = {}
        for link in store.links():
            for end in link.ends:
                cables.setdefault(end.sandbox, []).append(end.ifname)
        observed = kernel.observe({s.handle: [e.ifname for e in s.endpoints] + cables.get(s.name, [])
                                   for s in sandboxes if s.network_mode is None and s.tap is None}, owner, keys)
        known = {e.host_ifname for s in sandboxes for e in s.endpoints}
        lingering = [n for n, link in observed.links.items()
                     if link.group == owner.group and link.kind == "veth" and n not in known]
        if not lingering or time.monotonic() > deadline:
            return observed
        time.sleep(0.02)


def check(store: Store, kernel: Kernel, owner: Owner) -> list[Drift]:
    observed = observe(store, kernel, owner)
    services, within = store.services(), _service_range(store)
    expected = None
    if observed.ruleset is not None:
        expected = kernel.expected_ruleset([*render.render_skeleton(owner),
                                            *_dispatch_chains(owner, store, services, observed)], owner)
    drift = find_drift(store.networks(), store.sandboxes(), observed, owner, expected, services, within,
                       overlay_vteps(store))
    return (drift + _etc_drift(store, kernel, observed) + _interception_drift(store, kernel, observed, owner)
            + _link_drift(store, observed) + _route_drift(store, observed) + _resolver_drift(store, kernel)
            + _shaping_drift(store, kernel, observed, owner))


def _shaping_drift(store: Store, kernel: Kernel, observed: Observed, owner: Owner) -> list[Drift]:
    if not store.shapings():
        return []
    from .shaping import check as shaping_check

    return shaping_check.drift(store, kernel, observed, owner)


def _route_missing(route: Route, observed: Observed) -> bool:
    """A ready route the sandbox's namespace lacks (none when the namespace is gone: its own drift)."""
    return route.sandbox in observed.netns and \
        (str(route.dst), str(route.via)) not in observed.sandbox_statics.get(route.sandbox, frozenset())


def _stranded(store: Store, route: Route) -> bool:
    """A route whose gateway none of its sandbox's networks or links reaches any more: the sandbox
    at the other end of the link it went over was removed (which `unlink` would have refused)."""
    from .routes import connected, reachable

    return not reachable(route.via, connected(store.sandbox(route.sandbox), store.links(route.sandbox)))


def _route_drift(store: Store, observed: Observed) -> list[Drift]:
    drift = []
    for route in store.routes():
        subject = f"route of {route.sandbox}"
        if route.state != "ready":
            drift.append(Drift("half-done", subject, f"{route} left {route.state} by a command that did not finish"
                               " (gc undoes it)"))
        elif _stranded(store, route):
            drift.append(Drift("wrong", subject, f"{route}: its gateway is on none of {route.sandbox}'s networks or"
                               " links any more (gc forgets it)"))
        elif _route_missing(route, observed):
            drift.append(Drift("missing", subject, f"{route} (gc adds it again)"))
    return drift


def _repair_routes(store: Store, observed: Observed, repair: _Repair) -> None:
    from .plan.route import plan_route

    for route in store.routes():
        present = (str(route.dst), str(route.via)) in observed.sandbox_statics.get(route.sandbox, frozenset())
        if route.state != "ready":
            if present:
                repair.run([DeleteRoute(route.sandbox, route.dst, route.via)], f"undid {route.sandbox}'s route {route}")
            with store.transaction():
                store.delete_route(route)
            repair.done.append(f"forgot {route.sandbox}'s route {route}, left {route.state}")
        elif _stranded(store, route):
            with store.transaction():
                store.delete_route(route)
            repair.done.append(f"forgot {route.sandbox}'s route {route}: its gateway is on none of its networks or"
                               " links any more")
        elif _route_missing(route, observed):
            repair.run(plan_route(route), f"added {route.sandbox}'s route {route} again")


def _link_problem(link: Link, observed: Observed) -> tuple[str, str] | None:
    """(drift kind, what) of the first thing wrong with a ready link's ends; None when nothing is,
    or when a sandbox's namespace is gone (that sandbox's drift, and its links go with it)."""
    if any(end.sandbox not in observed.netns for end in link.ends):
        return None
    for end in link.ends:
        state = observed.sandbox_links.get(end.sandbox, {}).get(end.ifname)
        if state is None:
            return "missing", f"{end.sandbox} has no interface {end.ifname}"
        where = f"{end.sandbox}'s {end.ifname}"
        if not state.up:
            return "wrong", f"{where} is down"
        if state.mtu != link.mtu:
            return "wrong", f"{where} has MTU {state.mtu}, not {link.mtu}"
        missing = [str(a) for a in end.addresses if str(a) not in state.addresses]
        if missing:
            return "wrong", f"{where} lacks {', '.join(missing)}"
    return None


def _link_drift(store: Store, observed: Observed) -> list[Drift]:
    drift = []
    for link in store.links():
        subject = f"link {link.a.sandbox}-{link.b.sandbox}"
        if link.state != "ready":
            drift.append(Drift("half-done", subject, f"left {link.state} by a command that did not finish (gc undoes it)"))
        elif (problem := _link_problem(link, observed)) is not None:
            drift.append(Drift(problem[0], subject, f"{problem[1]} (gc makes it again)"))
    return drift


def _repair_links(store: Store, observed: Observed, repair: _Repair) -> None:
    """A link left half-way is undone; one whose ends differ from the ledger is made again (one
    end deleted takes the pair with it)."""
    from .plan.link import plan_link

    for link in store.links():
        present = [end for end in link.ends if end.ifname in observed.sandbox_links.get(end.sandbox, {})]
        remove = [DeleteLink(present[0].ifname, present[0].sandbox)] if present else []
        name = f"{link.a.sandbox}-{link.b.sandbox}"
        if link.state != "ready":
            if remove:
                repair.run(remove, f"undid link {name}")
            with store.transaction():
                store.delete_link(link.id)
            repair.done.append(f"forgot link {name}, left {link.state}")
        elif _link_problem(link, observed) is not None:
            repair.run([*remove, *plan_link(link)], f"made link {name} again")


def _interceptions(store: Store, kernel: Kernel, observed: Observed,
                   owner: Owner) -> list[tuple[str, str, str, Interception, str | None]]:
    """(sandbox, handle, state, spec, what is wrong: None when its table is as rendered) of each
    interception whose sandbox's namespace is there (the others go with their sandbox)."""
    from .intercept import Interception
    from .intercept.render import as_listing, render_table, summary

    found = []
    for name, handle, state, data in store.interceptions():
        if handle not in observed.netns:
            continue
        spec = Interception.from_dict(data)
        listing = kernel.sandbox_table(handle, owner.table) if state == "ready" else None
        if state != "ready":
            wrong: str | None = f"left {state} by a command that did not finish"
        elif listing is None:
            wrong = "its table is gone: the sandbox's traffic flows directly"
        elif summary(listing) != summary(as_listing(render_table(owner.table, spec))):
            wrong = "its table's rules or sets are not what nsnet made"
        else:
            wrong = None
        found.append((name, handle, state, spec, wrong))
    return found


def _interception_drift(store: Store, kernel: Kernel, observed: Observed, owner: Owner) -> list[Drift]:
    return [Drift("half-done" if state != "ready" else "wrong", f"interception of {name}", f"{wrong} (gc repairs it)")
            for name, _, state, _, wrong in _interceptions(store, kernel, observed, owner) if wrong]


def _repair_interceptions(store: Store, kernel: Kernel, observed: Observed, owner: Owner, repair: _Repair) -> None:
    """An interception left half-way is undone (its table and row go); a damaged table is made
    again from the ledger."""
    from .intercept.render import render_removal, render_table

    for name, handle, state, spec, wrong in _interceptions(store, kernel, observed, owner):
        if wrong is None:
            continue
        if state != "ready":
            repair.run([ApplySandboxFirewall(handle, tuple(render_removal(owner.table)))],
                       f"undid the interception of {name}")
            with store.transaction():
                store.delete_interception(store.sandbox(name).id)
        else:
            repair.run([ApplySandboxFirewall(handle, tuple(render_table(owner.table, spec)))],
                       f"made the interception of {name} again")


def _service_range(store: Store) -> Any:
    from .engine import SERVICE_RANGE_KEY
    from .services import service_ranges

    recorded = store.meta(SERVICE_RANGE_KEY)
    return list(service_ranges(recorded).values()) if recorded else None


def _dispatch_chains(owner: Owner, store: Store, services: list[Service], observed: Observed) -> list[dict]:
    """The chains made on demand that the skeleton holds now: a dispatch chain per number of
    backends a service has, and a remember chain per affinity timeout a service has, and any made
    for a number or timeout no service has any more (left until the next gc rebuild)."""
    from .firewall.names import DISPATCH_PREFIX, REMEMBER_PREFIX
    from .services import picks

    sandboxes = store.sandboxes()
    ready = [s for s in services if s.state == "ready"]
    counts = {len(a) for s in ready for a in picks(s, sandboxes).values()} - {0}
    timeouts = {s.affinity for s in ready if s.affinity}
    present = [name for key in (observed.ruleset.chains if observed.ruleset else ())
               for family, _, name in [key.split(" ", 2)] if family == "inet"]

    def numbered(prefix: str) -> set[int]:
        return {int(n) for name in present for n in [name.removeprefix(prefix)] if name.startswith(prefix) and n.isdigit()}

    return [*(c for n in sorted(counts | numbered(DISPATCH_PREFIX)) for c in render.render_dispatch(owner, n)),
            *(c for t in sorted(timeouts | numbered(REMEMBER_PREFIX)) for c in render.render_remember(owner, t))]


def _etc_rewrites(store: Store, kernel: Kernel, observed: Observed) -> list[tuple[str, str, str | None, str | None]]:
    """(sandbox, file, now, wanted) of each /etc/netns file nsnet writes for its sandboxes that is
    not what it writes for their networks now (a runtime's container has none of nsnet's; a file
    nsnet would not write, such as a resolv.conf of the user's own without a DNS network, is the
    user's). The host's search domains and options are part of a resolv.conf: a sandbox made
    before they changed is told so too."""
    networks = {n.name: n for n in store.networks()}
    found = []
    for sandbox in store.sandboxes():
        if (sandbox.container_id or sandbox.network_mode or sandbox.handle not in observed.netns
                or sandbox.state != "ready"):
            continue
        for filename, wanted in etc_files(sandbox.name, sandbox.endpoints, networks).items():
            now = kernel.read_etc_file(sandbox.name, filename)
            if wanted is not None and now != wanted:
                found.append((sandbox.name, filename, now, wanted))
    return found


def _etc_drift(store: Store, kernel: Kernel, observed: Observed) -> list[Drift]:
    return [Drift("missing" if now is None else "wrong", f"/etc/netns/{name}/{filename}",
                  "not what nsnet writes for the sandbox's networks (gc writes it again)")
            for name, filename, now, wanted in _etc_rewrites(store, kernel, observed)]


def _resolver_drift(store: Store, kernel: Kernel) -> list[Drift]:
    """The resolver runs, in this namespace, and listens where each DNS network's sandboxes ask."""
    from .dns import listen, supervise

    served = [n for n in store.networks() if n.dns and n.state == "ready"]
    if not served:
        return []
    status = kernel.resolver_status(store.directory)
    if status is None:
        return [Drift("missing", "resolver", f"nothing answers names on {', '.join(n.name for n in served)}; the next"
                                             " nsnet command or nsnet gc starts it")]
    stranger = supervise.foreign(status)
    if stranger:
        return [Drift("wrong", "resolver", f"the one answering {stranger}")]
    listening = set(status.split()[4:])
    return [Drift("missing", f"resolver on {where}", f"network {n.name}'s questions go unanswered: another program "
                                                     "may hold the port (see nsnet doctor and dns.log)")
            for n in served for s in n.subnets for where in [listen.text(s.gateway, n.dns_port)]
            if where not in listening]


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


def gc(store: Store, kernel: Kernel, owner: Owner) -> list[str]:
    repair = _Repair(kernel)
    networks = {n.name: n for n in store.networks()}
    _finish_interrupted(store, networks, repair, owner)
    observed = observe(store, kernel, owner)
    for sandbox in store.sandboxes():
        if sandbox.network_mode is None and sandbox.tap is None and sandbox.handle not in observed.netns:
            for joiner in store.joiners(sandbox.id):  # --network container: sandboxes go with the namespace
                with store.transaction():
                    store.delete_sandbox(joiner)
                repair.done.append(f"forgot sandbox {joiner}: the namespace it joined ({sandbox.name}'s) is gone")
            with store.transaction():
                store.delete_sandbox(sandbox.name)
            repair.done.append(f"forgot sandbox {sandbox.name}: its namespace is gone")
            if not sandbox.container_id:  # a runtime's container has no /etc/netns files of nsnet's
                repair.run([RemoveEtcFiles(sandbox.name)], f"removed /etc/netns/{sandbox.name}")
    _repair_default_routes(store, networks, repair)
    for name, filename, now, wanted in _etc_rewrites(store, kernel, observed):
        repair.run([ReplaceEtcFile(name, filename, wanted, now)], f"rewrote /etc/netns/{name}/{filename}")
    _repair_interceptions(store, kernel, observed, owner, repair)
    _repair_links(store, observed, repair)
    if store.routes():
        _repair_routes(store, observe(store, kernel, owner), repair)  # after the links they go over
    for network in networks.values():
        ops = driver(network).repair_network(network, observed.links.get(network.bridge), observed.sysctls, owner)
        if ops:
            repair.run(ops, f"repaired network {network.name}")
    for sandbox in store.sandboxes():
        inside = observed.sandbox_links.get(sandbox.handle, {})
        for endpoint in sandbox.endpoints:
            network = networks[endpoint.network]
            if sandbox.tap is not None:
                _repair_tap(sandbox.name, endpoint, network, sandbox.tap, observed, owner, repair)
                continue
            ops = plan_repair_endpoint(endpoint, network, observed.links.get(endpoint.host_ifname),
                                       inside.get(endpoint.ifname), observed.sandbox_routes.get(sandbox.handle, {}), owner)
            if ops:
                repair.run(ops, f"repaired {sandbox.name}'s link to {network.name}")
    if store.sandboxes():  # after the links and endpoints whose devices they shape
        from .shaping import check as shaping_check

        shaping_check.repair(store, kernel, observe(store, kernel, owner), owner, repair.run)
    known = known_links(networks.values(), store.sandboxes())
    for name, link in sorted(observed.links.items()):
        if link.group == owner.group and name not in known:
            repair.run([DeleteLink(name)], f"deleted orphan link {name}")
    for service in store.services():
        if service.state != "ready":  # its elements go with the rebuild below
            with store.transaction():
                store.delete_service(service.id)
            repair.done.append(f"forgot service {service.name}, left {service.state}")
    if not store.vips():
        from .engine import SERVICE_RANGE_KEY

        with store.transaction():
            store.delete_meta(SERVICE_RANGE_KEY)
    firewall = desired_firewall(store.networks(), store.sandboxes(), owner, services=store.services(),
                                service_range=_service_range(store), overlay_vteps=overlay_vteps(store))
    if firewall or observed.nft is not None:
        repair.run(plan_replace_firewall(firewall, owner, observed.ruleset), "rebuilt nsnet's nftables tables from the ledger")
    if repair.failures:
        raise TeardownError("gc", repair.failures)
    return repair.done


def _repair_default_routes(store: Store, networks: dict[str, Network], repair: _Repair) -> None:
    """A ledger that does not give the default route to exactly one endpoint on a regular network
    (an older nsnet's, or one edited by hand) is set right; the kernel follows in repair."""
    for sandbox in store.sandboxes():
        if default_route_wrong(list(sandbox.endpoints), networks):
            holder = default_route_holder(sandbox.endpoints, networks)
            with store.transaction():
                for endpoint in sandbox.endpoints:
                    store.set_default_route(endpoint.id, endpoint is holder)
            repair.done.append(f"gave {sandbox.name}'s default route to "
                               f"{holder.network if holder else 'no network (all are internal)'}")


def _repair_tap(name: str, endpoint: Endpoint, network: Network, tap: Tap, observed: Observed, owner: Owner,
                repair: _Repair) -> None:
    """A VM guest's tap gone is made again (as recorded: its owner, MAC, bridge); a wrong one set back."""
    link = observed.links.get(endpoint.host_ifname)
    ops = plan_repair_tap(endpoint, network, tap, link, owner)
    if ops:
        repair.run(ops, f"{'made' if link is None else 'repaired'} {name}'s tap {endpoint.host_ifname}"
                        f"{' again' if link is None else ''}")


def _finish_interrupted(store: Store, networks: dict, repair: _Repair, owner: Owner) -> None:
    """Rows left 'creating' or 'removing' by a command that died: undo or finish its work. A
    disconnect marks the endpoint taking over the default route before it starts, so finishing
    it here only needs the link gone; repair then gives the route to that endpoint."""
    for sandbox in store.sandboxes():
        attachments = [(e, networks[e.network]) for e in sandbox.endpoints]
        if sandbox.state != "ready" and sandbox.network_mode is not None:  # a ledger row, no kernel object
            with store.transaction():
                store.delete_sandbox(sandbox.name)
            repair.done.append(f"forgot sandbox {sandbox.name} (--network {sandbox.network_mode}), left {sandbox.state}")
            continue
        if sandbox.state != "ready" and not sandbox.container_id:  # a runtime's stays 'ready': never deleted here
            plan = (plan_remove_sandbox(sandbox.name, True, attachments, owner) if sandbox.tap is None
                    else [op for e, n in attachments for op in plan_remove_tap(e, n, owner)])
            repair.run(plan, f"finished removing sandbox {sandbox.name}")
            with store.transaction():
                store.delete_sandbox(sandbox.name)
            continue
        for endpoint, network in attachments:
            if endpoint.state != "ready":
                repair.run(plan_disconnect(endpoint, network, None, owner),
                           f"finished disconnecting {sandbox.name} from {network.name}")
                with store.transaction():
                    store.delete_endpoint(endpoint.id)
    for sandbox in store.sandboxes():
        if sandbox.container_id and not sandbox.endpoints:  # its last attach died half-way
            with store.transaction():
                store.delete_sandbox(sandbox.name)
            repair.done.append(f"forgot container {sandbox.container_id[:12]}: it has no attachment left")
    for network in list(networks.values()):
        if network.state != "ready" and not store.endpoint_count(network.id):
            ops: list[Operation] = [DeleteLink(network.bridge)] if network.bridge else []
            overlay = store.overlay(network.id) if network.driver == "overlay" else None
            if overlay is not None:  # its VTEPs' elements go with the firewall's rebuild below
                ops = [DeleteUnreachableRoute(str(overlay.supernet)), DeleteLink(overlay.device), *ops]
            repair.run(ops, f"finished removing network {network.name}")
            with store.transaction():
                store.delete_network(network.id)
            del networks[network.name]


def overlay_vteps(store: Store) -> list[tuple[int, list[str]]]:
    """Each overlay network's VXLAN port and its peers' VTEPs, as the firewall's allow-list holds them."""
    found = []
    for network in store.networks():
        overlay = store.overlay(network.id) if network.driver == "overlay" else None
        if overlay is not None:
            found.append((overlay.port, [str(p.vtep_ip) for p in store.overlay_peers(network.id)]))
    return found
