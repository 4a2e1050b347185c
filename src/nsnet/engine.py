"""The public Python API: `Engine`, the composition root of validation, ledger, planner and kernel.

Every mutating method follows one shape: validate the request (nothing changed yet), reserve it in
the ledger in one transaction (names, addresses, subnets; rows in state 'creating'), apply the
plan to the kernel (rolled back on failure, and the rows with it), then mark the rows 'ready'.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from ipaddress import ip_interface

from . import faults, ipam, portspec, validate
from .apply import apply, teardown
from .catalog import Catalog
from .errors import Conflict, Exhausted, InvalidInput, NotFound, NsnetError
from .firewall import render
from .kernel import Kernel, default_kernel
from .locks import Locks
from .model import (DEFAULT_MTU, DEFAULT_NETWORK, Endpoint, IPAddress, IPNetwork, Link, LinkEnd, Network,
                    NetworkRequest, Overlay, Owner, Peer, PortMapping, Route, Sandbox, Service, Subnet, SubnetRequest,
                    Tap)
from .naming import bridge_name, host_veth_name, mac_for, netns_path, new_id, sandbox_ifname, tap_name, vxlan_name
from .plan import overlay as plan_overlay
from .plan.drivers import driver, firewalled
from .plan.ops import (AddUnreachableRoute, ApplyFirewall, ApplySandboxFirewall, Operation,
                       RemoveFirewallElements)
from .plan.sandbox import (EtcChange, etc_files, plan_connect, plan_create_sandbox, plan_disconnect,
                           plan_remove_sandbox)
from .portspec import PortRequest
from .publish import resolve as resolve_ports
from .record import replace

TYPE_CHECKING = False  # typing's import is 5 ms of a CNI plugin's start-up
if TYPE_CHECKING:  # subprocess, check, gc, doctor and reconcile load these on first use
    import subprocess
    from typing import Any

    from .doctor import Finding
    from .intercept import Interception
    from .reconcile import Drift
    from .shaping import Shaping

DEFAULT_ADDRESS_POOL = "base=10.210.0.0/16,size=24"
SERVICE_RANGE_KEY = "service_range"  # the ledger's meta: the range its services' VIPs are in
NO_NETWORK = "none"  # --network none (validate.RESERVED_NETWORKS)
SKELETON_KEY = "skeleton"  # the ledger's meta: the firewall skeleton's version its tables have
# The kernel numbers bridge ports in 10 bits and refuses more (EXFULL): BR_MAX_PORTS - 1.
BRIDGE_MAX_PORTS = 1023


class Engine(Catalog):
    """nsnet's networks and sandboxes in the network namespace this process runs in.

    >>> with Engine() as engine:
    ...     engine.create_network("app", subnet="10.31.0.0/24")
    ...     web = engine.create_sandbox("web", networks=["app"])
    ...     engine.exec("web", ["ip", "-brief", "address"])
    """

    def __init__(self, state_dir: str | None = None, kernel: Kernel | None = None,
                 address_pool: str | None = None) -> None:
        super().__init__(state_dir)
        self._kernel = kernel
        self._locks = Locks(self._store.directory)
        self._owner: Owner | None = None
        self.notes: list[str] = []  # what a caller should hear of though the call succeeded
        self._flows_to_forget: list[tuple[str, list[int], set[str]]] = []  # (VIP, UDP ports, backends kept)
        self._picks_to_forget: list[tuple[str, set[str] | None]] = []  # (VIP, backends kept: None, none)
        self._pool = validate.address_pool(address_pool or os.environ.get("NSNET_ADDRESS_POOL") or DEFAULT_ADDRESS_POOL)

    @property
    def kernel(self) -> Kernel:
        if self._kernel is None:
            self._kernel = default_kernel()
        return self._kernel

    @property
    def owner(self) -> Owner:
        """What marks this ledger's kernel objects (its tables' name, its links' group)."""
        if self._owner is None:
            self._owner = self._store.owner()
        return self._owner

    def close(self) -> None:
        if self._kernel is not None:
            self._kernel.close()
        self._locks.close()
        super().close()

    # Networks

    def create_network(self, name: str, *, subnet: str | Sequence[str] = (), gateway: str | Sequence[str] = (),
                       ip_range: str | Sequence[str] = (), ipv4: bool = True, ipv6: bool = False,
                       ipv6_routed: bool = False, internal: bool = False, mtu: int | None = None, icc: bool = True,
                       labels: Sequence[str] = (), ipv4_routed: bool = False, bridge: str | None = None,
                       dns: bool = True, dns_servers: Sequence[str] = (), driver: str = "bridge",
                       parent: str | None = None, mode: str | None = None, block_size: int | None = None,
                       vni: int | None = None) -> Network:
        """`subnet`, `gateway` and `ip_range` take one value or one per family (a list). With
        `dns`, nsnet's resolver answers the network's sandboxes by name (nsnet.dns), forwarding
        other names to `dns_servers` or, without them, to the host's resolvers. `driver`
        macvlan hangs sandboxes off the host's interface `parent` in macvlan `mode` (nsnet.drivers).
        `driver` overlay spans the hosts of the cluster NSNET_CLUSTER names (nsnet.cluster): `subnet`
        is the whole network's, each host leasing a block of `block_size` bits of it; `mtu` defaults
        to what the underlay carries inside VXLAN."""
        if driver == "overlay":
            from .cluster import local

            if ipv6 or ip_range or gateway or bridge or parent or mode or not dns or dns_servers or labels:
                raise InvalidInput("--driver", driver, "takes --subnet, --block-size, --vni, --mtu and --internal only")
            return local.create_network(self, name, subnet=next(iter(_listed(subnet)), None), block_prefix=block_size,
                                        vni=vni, mtu=mtu, internal=internal)
        if block_size is not None or vni is not None:
            raise InvalidInput("--block-size" if block_size is not None else "--vni", block_size or vni,
                               "is for --driver overlay only")
        mtu = DEFAULT_MTU if mtu is None else mtu
        if driver == "ipvlan":
            missing = self.kernel.link_kind_missing("ipvlan")
            reason = (f"this kernel has no ipvlan ({missing}); use --driver macvlan" if missing
                      else "nsnet makes no ipvlan networks yet; use --driver macvlan")
            raise InvalidInput("--driver", driver, reason)
        request = validate.network_request(
            name, subnets=_listed(subnet), gateways=_listed(gateway), ip_ranges=_listed(ip_range), ipv4=ipv4,
            ipv6=ipv6, ipv6_routed=ipv6_routed, internal=internal, mtu_value=mtu, icc=icc, label_items=tuple(labels),
            ipv4_routed=ipv4_routed, bridge=bridge, dns=dns, dns_servers=tuple(dns_servers), driver=driver,
            parent=parent, driver_mode=mode,
        )
        return self._create_network(request)

    def _refuse_parent(self, request: NetworkRequest, existing: list[Network]) -> None:
        """A macvlan network's parent: a host interface, not nsnet's, and no other network's."""
        mac = self.kernel.link_mac(request.parent or "")
        if mac is None:
            raise InvalidInput("--parent", request.parent, "no such interface in this namespace")
        if mac == "00:00:00:00:00:00":  # loopback, or a layer-3 device: the kernel makes no child on it
            raise InvalidInput("--parent", request.parent, "is not an Ethernet interface (it has no MAC address)")
        for network in existing:
            if network.parent == request.parent:
                raise Conflict(f"interface {request.parent!r} is network {network.name!r}'s parent already")
            if network.bridge == request.parent:
                raise InvalidInput("--parent", request.parent, f"is network {network.name!r}'s bridge")

    def _create_network(self, request: NetworkRequest) -> Network:
        with self._locks.ledger(exclusive=True):
            if self._store.network(request.name):
                raise Conflict(f"network {request.name!r} already exists")
            host_routes = self.kernel.host_routes()
            has_ipv6 = any(r.version == 6 for r in request.subnets)
            ra_takers = self.kernel.router_advertisement_takers() if has_ipv6 else []
            with self._store.transaction():
                existing = self._store.networks()
                # This ledger's own bridges' routes are its networks; any other route, another
                # ledger's bridges' included, is taken.
                ours = {n.bridge for n in existing}
                if request.driver != "bridge":  # the parent's routes are its LAN: the network's own
                    self._refuse_parent(request, existing)
                    ours.add(request.parent or "")
                routes = [(dst, dev) for dst, dev in host_routes if dev not in ours]
                if any(n.name == request.name for n in existing):
                    raise Conflict(f"network {request.name!r} already exists")
                taken = next((n for n in existing if n.bridge == request.bridge), None)
                if taken is not None:
                    raise Conflict(f"bridge {request.bridge!r} is network {taken.name!r}'s")
                subnets = tuple(self._subnet(r, existing, routes, request.driver == "bridge") for r in request.subnets)
                dns_port = self._dns_port(request.name, subnets) if request.dns else 53
                network_id = new_id()
                network = Network(
                    id=network_id, name=request.name,
                    bridge=(request.bridge or bridge_name(network_id)) if request.driver == "bridge" else "",
                    driver=request.driver, parent=request.parent, driver_mode=request.driver_mode,
                    subnets=subnets, internal=request.internal, mtu=request.mtu, icc=request.icc,
                    labels=request.labels, ipv6_routed=request.ipv6_routed, ipv4_routed=request.ipv4_routed,
                    dns=request.dns, dns_servers=request.dns_servers, dns_port=dns_port, created=time.time(),
                    state="creating",
                )
                self._store.add_network(network)
            self._build(driver(network).create_network(network, len(firewalled(existing)), self.owner, ra_takers),
                        forget=lambda: self._store.delete_network(network.id))
            with self._store.transaction():
                self._store.set_network_state(network.id, "ready")
        if network.dns:
            self._serve_names()
            self._tell_host(network)
        return replace(network, state="ready")

    def _dns_port(self, name: str, subnets: tuple[Subnet, ...]) -> int:
        gateways = [str(s.gateway) for s in subnets]
        port = self.kernel.dns_port(gateways, set())
        if port != 53:
            # A network just removed with the same gateway may still hold port 53 there: its
            # resolver lets go in its next reload, which `network rm` asks for once it has
            # released the ledger. Its own sockets are not another program's.
            status = self.kernel.resolver_status(self._store.directory)
            port = self.kernel.dns_port(gateways, set(status.split()[4:]) if status else set())
        if port is None:
            raise Conflict(f"network {name!r}: port 53 and every alternate port are taken on {', '.join(gateways)}"
                           " by other programs; free one or create the network with --no-dns")
        if port != 53:
            self.notes.append(f"network {name!r}: another program holds port 53 on {', '.join(gateways)}; nsnet's"
                              f" resolver answers on port {port} there and sandboxes' questions are redirected to it")
        return port

    def remove_network(self, name: str, *, force: bool = False) -> None:
        found = self._store.network(name)
        if found is not None and found.driver == "overlay":
            from .cluster import local

            return local.leave(self, name, force)
        with self._locks.ledger(exclusive=True):
            network = self._store.network(name)
            if network is None:
                if force:
                    return
                raise NotFound("network", name)
            endpoints = self._store.endpoints_of_network(network.id)
            if endpoints and not force:
                users = ", ".join(sorted(e.sandbox for e in endpoints))
                raise Conflict(f"network {name!r} has sandboxes attached ({users}); disconnect them or use -f")
            services = self._store.has_services(network.id)
            if services and not force:
                raise Conflict(f"network {name!r} has services ({', '.join(services)}); remove them or use -f")
            for service in services:
                self.remove_service(service)
            subnets = [s.subnet for s in network.subnets]
            for endpoint in endpoints:  # its sandboxes' routes through it go with it (-f)
                for route in self._store.routes(endpoint.sandbox):
                    if any(route.via in s for s in subnets):
                        self.remove_route(endpoint.sandbox, str(route.dst))
                if self.sandbox(endpoint.sandbox).tap is not None:  # a VM guest's tap is on this network only
                    self.remove_sandbox(endpoint.sandbox, force=True)
                else:
                    self.disconnect(name, endpoint.sandbox)
            with self._store.transaction():
                self._store.set_network_state(network.id, "removing")
                others = len([n for n in firewalled(self._store.networks()) if n.id != network.id])
            self._remove(driver(network).remove_network(network, others, self.owner), f"removing network {name!r}")
            with self._store.transaction():
                self._store.delete_network(network.id)
        if network.dns:
            self._serve_names()

    def prune_networks(self) -> list[str]:
        """Remove every network no sandbox is attached to; returns their names."""
        pruned = []
        with self._locks.ledger(exclusive=True):
            for network in self._store.networks():
                if self._store.endpoint_count(network.id) == 0:
                    self.remove_network(network.name)
                    pruned.append(network.name)
        return pruned

    # Sandboxes and endpoints

    def create_sandbox(self, name: str, *, networks: Sequence[str] = (), ip: str | None = None,
                       ip6: str | None = None, publish: Sequence[str] = (), aliases: Sequence[str] = (),
                       labels: Sequence[str] = (), kind: str = "netns", owner: str | int | None = None,
                       group: str | int | None = None, mac: str | None = None) -> Sandbox:
        """A sandbox attached to each network (default: `nsnet`; `none` alone: to no network, its
        loopback only, as Docker's --network none); `ip`, `ip6`, `publish` and `aliases` apply to
        the first network, as Docker applies them to the network a container is created on.
        The default route (of each family the network has) goes via the first network that is not
        internal. `kind="tap"`: a VM guest's endpoint on its one network instead (create_tap;
        `owner`, `group` and `mac` are its alone)."""
        validate.name("sandbox name", name)
        if kind == "tap":
            if len(networks) != 1:
                raise InvalidInput("--network", ",".join(networks) or "(none given)",
                                   "a tap endpoint needs exactly one network (its bridge)")
            return self.create_tap(name, network=networks[0], ip=ip, ip6=ip6, mac=mac, uid=owner, gid=group,
                                   publish=publish, aliases=aliases, labels=labels)
        if kind != "netns":
            raise InvalidInput("--kind", kind, "must be netns or tap")
        for field, value in (("--owner", owner), ("--group", group), ("--mac", mac)):
            if value is not None:
                raise InvalidInput(field, value, "applies to --kind tap only")
        from .modes import requested as mode_requested

        mode = mode_requested(list(networks))
        if mode is not None:  # --network host | container:NAME (nsnet.modes)
            return self._create_in_mode(name, *mode, ip=ip, ip6=ip6, publish=publish, aliases=aliases, labels=labels)
        requested = _requested(ip, ip6)
        port_requests = portspec.parse_all(publish)
        names = validate.aliases(tuple(aliases))
        tags = validate.labels(list(labels))
        wanted = list(networks)
        for net in wanted:
            validate.name("network", net)
            if wanted.count(net) > 1:
                raise InvalidInput("network", net, "is given more than once")
        if NO_NETWORK in wanted:
            if len(wanted) > 1:
                raise InvalidInput("network", NO_NETWORK, "cannot be joined with other networks")
            if requested or port_requests or names:
                raise InvalidInput("network", NO_NETWORK, "has no address, port or alias to give (--ip, --ip6, -p,"
                                   " --alias)")
            wanted = []
        elif not wanted:
            wanted = [DEFAULT_NETWORK]
            # Checked before the default network is made too, so that a refusal changes nothing.
            self._refuse_taken_name(name)
            if port_requests:
                self._resolve_ports(port_requests)
            self._ensure_default_network()
        self._join_overlays(wanted)
        with self._locks.ledger(), self._locks.sandbox(name), self._serving(wanted):
            with self._store.transaction():
                self._refuse_taken_name(name)
                nets = [self._ready_network(n) for n in wanted]
                route_via = next((net.id for net in nets if not net.internal), None)
                pointers = {net.id: self._store.last_ips(net.id) for net in nets}
                sandbox_id = new_id()
                created = self._store.add_sandbox(sandbox_id, name, "creating", labels=tags)
                attachments = [
                    (self._allocate(sandbox_id, name, net, f"eth{i}", net.id == route_via,
                                    requested if i == 0 else {}, port_requests if i == 0 else [],
                                    aliases=names if i == 0 else ()), net)
                    for i, net in enumerate(nets)
                ]
                made = Sandbox(id=sandbox_id, name=name, netns=netns_path(name), labels=tags,
                               endpoints=tuple(replace(e, state="ready") for e, _ in attachments))
                serving = self._backend_changes(wanted, lambda boxes: [*(b for b in boxes if b.id != sandbox_id), made])

            def forget() -> None:
                self._store.delete_sandbox(name)
                self._restore_pointers(pointers)

            files = etc_files(name, [e for e, _ in attachments], {n.name: n for n in nets})
            self._build([*plan_create_sandbox(name, attachments, self.owner, files), *serving], forget)
            with self._store.transaction():
                self._store.set_sandbox_state(name, "ready")
                self._store.set_endpoints_state(sandbox_id, "ready")
        if any(net.dns for net in nets):
            self._serve_names()
        self._tell_cluster(nets)
        return replace(made, created=created)

    def _create_in_mode(self, name: str, mode: str, donor: str | None, *, ip: str | None, ip6: str | None,
                        publish: Sequence[str], aliases: Sequence[str], labels: Sequence[str]) -> Sandbox:
        """A sandbox in the host's namespace or in another sandbox's (nsnet.modes): a ledger row
        and no kernel object. A joiner of a joiner joins its donor."""
        from .modes import refuse_options

        refuse_options(mode, donor, ip=ip, ip6=ip6, publish=publish, aliases=aliases)
        tags = validate.labels(list(labels))
        with self._locks.ledger(), self._locks.sandbox(name):
            with self._store.transaction():
                self._refuse_taken_name(name)
                donor_id = None
                if donor is not None:
                    if donor == name:
                        raise InvalidInput("network", f"container:{donor}", "a sandbox cannot join itself")
                    found = self._store.sandbox(donor)
                    if found is None:
                        raise NotFound("sandbox", donor)
                    if found.donor is not None:  # no chains: join the namespace itself
                        donor = found.donor
                        found = self._store.sandbox(donor)
                    if found.network_mode == "host":
                        raise InvalidInput("network", f"container:{donor}", "is on the host's network: use"
                                           " --network host")
                    if found.container_id:
                        raise InvalidInput("network", f"container:{donor}", "is a container's (CNI): its runtime"
                                           " owns its namespace")
                    if found.state != "ready":
                        raise Conflict(f"sandbox {donor!r} was left {found.state} by a command that did not finish;"
                                       " run nsnet gc")
                    donor_id = found.id
                sandbox_id = new_id()
                self._store.add_sandbox(sandbox_id, name, "creating", labels=tags)
                self._store.add_sandbox_mode(sandbox_id, mode, donor_id)
            # No kernel object: the fault points still bracket the (empty) plan for crash tests.
            self._build([], lambda: self._store.delete_sandbox(name))
            with self._store.transaction():
                self._store.set_sandbox_state(name, "ready")
        return self.sandbox(name)

    def _remove_in_mode(self, sandbox: Sandbox) -> None:
        """A host or container: sandbox goes from the ledger; the namespace it used stays (its
        processes are the host's or the donor's: `rm -f` kills none)."""
        with self._store.transaction():
            self._store.set_sandbox_state(sandbox.name, "removing")
        self._remove([], f"removing sandbox {sandbox.name!r}")
        with self._store.transaction():
            self._store.delete_sandbox(sandbox.name)

    def create_tap(self, name: str, *, network: str, ip: str | None = None, ip6: str | None = None,
                   mac: str | None = None, uid: str | int | None = None, gid: str | int | None = None,
                   publish: Sequence[str] = (), aliases: Sequence[str] = (), labels: Sequence[str] = ()) -> Sandbox:
        """A VM guest's endpoint (nsnet.taps): a persistent tap on `network`'s bridge, owned by
        uid/gid so an unprivileged QEMU can open it; the guest gets an address in each family of
        the network and a MAC (`mac`, or one nsnet derives), which the bridge port is locked to."""
        from . import taps
        from .plan.tap import plan_create_tap

        validate.name("sandbox name", name)
        if network in (NO_NETWORK, "host"):
            raise InvalidInput("network", network, "a tap endpoint sits on a network's bridge; --kind tap needs one")
        validate.name("network", network)
        requested = _requested(ip, ip6)
        wanted_mac = taps.guest_mac("mac", mac) if mac is not None else None
        tap = Tap(taps.identity("owner", uid), taps.identity("group", gid))
        port_requests = portspec.parse_all(publish)
        names = validate.aliases(tuple(aliases))
        tags = validate.labels(list(labels))
        with self._locks.ledger(), self._locks.sandbox(name), self._serving([network]):
            with self._store.transaction():
                self._refuse_taken_name(name)
                net = self._ready_network(network)
                if net.driver != "bridge":
                    raise InvalidInput("network", network, f"is a {net.driver} network: a tap endpoint needs a bridge")
                pointers = {net.id: self._store.last_ips(net.id)}
                sandbox_id = new_id()
                created = self._store.add_sandbox(sandbox_id, name, "creating", labels=tags)
                self._store.add_tap(sandbox_id, tap)
                endpoint = self._allocate(sandbox_id, name, net, "eth0", not net.internal, requested, port_requests,
                                          mac=wanted_mac, aliases=names, tap=True)
                made = Sandbox(id=sandbox_id, name=name, netns="", labels=tags, tap=tap,
                               endpoints=(replace(endpoint, state="ready"),))
                serving = self._backend_changes([network], lambda boxes: [*(b for b in boxes if b.id != sandbox_id),
                                                                          made])

            def forget() -> None:
                self._store.delete_sandbox(name)
                self._restore_pointers(pointers)

            self._build([*plan_create_tap(endpoint, net, tap, self.owner), *serving], forget)
            with self._store.transaction():
                self._store.set_sandbox_state(name, "ready")
                self._store.set_endpoints_state(sandbox_id, "ready")
        if net.dns:
            self._serve_names()
        return replace(made, created=created)

    def remove_sandbox(self, name: str, *, force: bool = False) -> None:
        with self._locks.ledger(), self._locks.sandbox(name):
            if self._store.sandbox_id(name) is None:
                if force:
                    return
                raise NotFound("sandbox", name)
            current = self.own_sandbox(name)
            if current.network_mode is not None:
                return self._remove_in_mode(current)
            joiners = self._store.joiners(current.id)
            if joiners and not force:
                raise Conflict(f"sandbox {name!r} has sandboxes in its namespace ({', '.join(joiners)},"
                               " --network container:); remove them or use -f, which removes them too")
            for joiner in joiners:  # rm -f: the joiners go first, not left in a dead namespace
                self.remove_sandbox(joiner, force=True)
            tapped = current.tap is not None
            if not force and not tapped:
                pids = self.kernel.pids_in_netns(name)
                if pids:
                    raise Conflict(f"sandbox {name!r} has {len(pids)} running process(es); stop them or use -f")
            with self._store.transaction():
                sandbox = self.own_sandbox(name)
                attachments = [(e, self.network(e.network)) for e in sandbox.endpoints]
            with self._serving([e.network for e in sandbox.endpoints]):
                with self._store.transaction():
                    # Backends go first: no new connection goes to a sandbox on its way out.
                    serving = self._backend_changes([e.network for e in sandbox.endpoints],
                                                    lambda boxes: [b for b in boxes if b.name != name])
                    late = self._store.joiners(sandbox.id)  # one that joined since the check above
                    if late:
                        raise Conflict(f"sandbox {name!r} has sandboxes in its namespace ({', '.join(late)})")
                    self._store.set_sandbox_state(name, "removing")
                    # Its links' peers drop nothing more for the cable that goes (nsnet.shaping).
                    unshape = [op for lk in self._store.links(name) for end in lk.ends if end.sandbox != name
                               for op in self._unshape_ops(self.sandbox(end.sandbox), f"link:{name}")]
                plan = (_plan_remove_tap(attachments, self.owner) if tapped
                        else plan_remove_sandbox(name, force, attachments, self.owner))
                self._remove([*serving, *unshape, *plan], f"removing sandbox {name!r}")
            with self._store.transaction():
                self._store.delete_sandbox(name)
        if any(net.dns for _, net in attachments):
            self._serve_names()
        self._tell_cluster([net for _, net in attachments])

    def connect(self, network: str, sandbox: str, *, ip: str | None = None, ip6: str | None = None,
                publish: Sequence[str] = (), aliases: Sequence[str] = ()) -> Endpoint:
        validate.name("network", network)
        validate.name("sandbox name", sandbox)
        requested = _requested(ip, ip6)
        port_requests = portspec.parse_all(publish)
        names = validate.aliases(tuple(aliases))
        self._join_overlays([network])
        with self._locks.ledger(), self._locks.sandbox(sandbox), self._serving([network]):
            with self._store.transaction():
                current = self._ready_sandbox(sandbox)
                net = self._ready_network(network)
                if current.endpoint(network) is not None:
                    raise Conflict(f"sandbox {sandbox!r} is already connected to network {network!r}")
                ifname = sandbox_ifname({e.ifname for e in current.endpoints})
                default_route = not net.internal and not any(e.default_route for e in current.endpoints)
                pointers = {net.id: self._store.last_ips(net.id)}
                endpoint = self._allocate(current.id, sandbox, net, ifname, default_route, requested, port_requests,
                                          aliases=names)
                joined = replace(endpoint, state="ready")
                serving = self._backend_changes([network], lambda boxes: [
                    replace(b, endpoints=(*(e for e in b.endpoints if e.id != joined.id), joined)) if b.name == sandbox
                    else b for b in boxes])

            def forget() -> None:
                self._store.delete_endpoint(endpoint.id)
                self._restore_pointers(pointers)

            self._build([*plan_connect(endpoint, net, self.owner, self._etc_changes(current, endpoint, net, True)),
                         *serving], forget)
            with self._store.transaction():
                self._store.set_endpoint_state(endpoint.id, "ready")
        if net.dns:
            self._serve_names()
        self._tell_cluster([net])
        return replace(endpoint, state="ready")

    def disconnect(self, network: str, sandbox: str) -> None:
        """When the endpoint carried the default route, the first other one on a network that is
        not internal takes it over: the ledger says so before the kernel changes, so a crash
        half-way leaves a state gc completes."""
        with self._locks.ledger(), self._locks.sandbox(sandbox), self._serving([network]):
            with self._store.transaction():
                current = self._ready_sandbox(sandbox)
                endpoint = current.endpoint(network)
                if endpoint is None:
                    self.network(network)
                    raise Conflict(f"sandbox {sandbox!r} is not connected to network {network!r}")
                if endpoint.state != "ready":
                    raise Conflict(f"sandbox {sandbox!r}'s link to {network!r} was left {endpoint.state} by a "
                                   "command that did not finish; run nsnet gc")
                self._refuse_cutting_routes(sandbox, [a.network for a in endpoint.addresses], f"network {network!r}")
                successor = None
                if endpoint.default_route:
                    from .reconcile import default_route_holder

                    nets = {n.name: n for n in self._store.networks()}
                    successor = default_route_holder([e for e in current.endpoints if e.id != endpoint.id], nets)
                    self._store.set_default_route(endpoint.id, False)
                    if successor is not None:
                        self._store.set_default_route(successor.id, True)
                serving = self._backend_changes([network], lambda boxes: [
                    replace(b, endpoints=tuple(e for e in b.endpoints if e.id != endpoint.id)) if b.name == sandbox
                    else b for b in boxes])
                self._store.set_endpoint_state(endpoint.id, "removing")
            net = self.network(network)
            self._remove([*serving, *self._unshape_ops(current, f"network:{network}"),
                          *plan_disconnect(endpoint, net, successor, self.owner,
                                           self._etc_changes(current, endpoint, net, False))],
                         f"disconnecting {sandbox!r} from {network!r}")
            with self._store.transaction():
                self._store.delete_endpoint(endpoint.id)
        if net.dns:
            self._serve_names()
        self._tell_cluster([net])

    # Overlay networks across hosts (nsnet.cluster): the engine's side of the cluster agent

    @property
    def state_dir(self) -> str:
        return self._store.directory

    def find_network(self, name: str) -> Network | None:
        return self._store.network(name)

    def overlay_networks(self) -> list[Network]:
        return [n for n in self._store.networks() if n.driver == "overlay"]

    def overlay_names(self, name: str) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        """This host's sandboxes on overlay network `name`: their addresses and aliases there."""
        network = self.network(name)
        return {e.sandbox: (tuple(str(a.ip) for a in e.addresses), e.aliases)
                for e in self._store.endpoints_of_network(network.id) if e.state == "ready"}

    def set_remote_names(self, name: str, rows: Sequence[tuple[str, str, tuple[str, ...], tuple[str, ...]]]) -> None:
        """Other hosts' sandboxes on overlay network `name`, for the resolver to answer here."""
        network = self.network(name)
        with self._store.transaction():
            self._store.set_cluster_names(network.id, list(rows))
        if network.dns:
            self._serve_names()

    def join_overlay(self, name: str, overlay: Overlay, block: IPNetwork, mtu: int, *, internal: bool = False) -> Network:
        """This host's share of overlay network `name`: a bridge holding `block`'s gateway (its
        sandboxes' addresses come from the block), the VXLAN device beside it, and the rules;
        its peers come with set_overlay_peers."""
        validate.name("network", name)
        validate.mtu(mtu)
        with self._locks.ledger(exclusive=True):
            if self._store.network(name):
                raise Conflict(f"network {name!r} already exists")
            host_routes = self.kernel.host_routes()
            with self._store.transaction():
                existing = self._store.networks()
                ours = {n.bridge for n in existing}
                _refuse_overlap(overlay.supernet, existing, [(d, dev) for d, dev in host_routes if dev not in ours])
                network_id = new_id()
                subnets = (Subnet(block, block[1]),)
                network = Network(id=network_id, name=name, bridge=bridge_name(network_id), subnets=subnets,
                                  internal=internal, mtu=mtu, driver="overlay", dns=True,
                                  dns_port=self._dns_port(name, subnets), created=time.time(), state="creating")
                overlay = replace(overlay, network=name, device=vxlan_name(network_id))
                self._store.add_network(network)
                self._store.add_overlay(network_id, overlay)
            first = not any(n.driver == "overlay" for n in existing)
            plan = [*driver(network).create_network(network, len(firewalled(existing)), self.owner),
                    *plan_overlay.plan_device(overlay, block, mtu, self.owner, first)]
            self._build(plan, forget=lambda: self._store.delete_network(network_id))
            with self._store.transaction():
                self._store.set_network_state(network_id, "ready")
        self._serve_names()
        self._tell_host(network)
        return replace(network, state="ready")

    def set_overlay_peers(self, name: str, peers: Sequence[Peer]) -> None:
        """Overlay network `name`'s peers made exactly these, in the ledger and the kernel: what
        the kernel lacks added (a device gone is made again), what nothing wants removed."""
        with self._locks.ledger():
            with self._store.transaction():
                network = self._ready_network(name)
                overlay = self._store.overlay(network.id)
                recorded = self._store.overlay_peers(network.id)
            if overlay is None:
                raise Conflict(f"network {name!r} is no overlay network")
            held = self.kernel.overlay_entries(overlay.device)
            ops = plan_overlay.plan_peers(overlay, recorded, peers, held, self.owner)
            if held is None:  # the device was deleted under nsnet: made again, its entries with it
                ops = [*plan_overlay.plan_device(overlay, network.subnets[0].subnet, network.mtu, self.owner)[1:-1],
                       *ops]
            if str(overlay.supernet) not in self.kernel.unreachable_routes():
                ops.append(AddUnreachableRoute(str(overlay.supernet)))
            if not ops and recorded == list(peers):
                return
            with self._store.transaction():
                self._store.set_overlay_peers(network.id, sorted(peers, key=lambda p: p.block))
            self._build(ops, forget=lambda: self._store.set_overlay_peers(network.id, recorded))

    def overlay_drift(self, name: str) -> str:
        """What the kernel lacks or holds beyond overlay network `name`'s recorded peers ('' when
        it agrees): the operations gc's repair would run, named."""
        network = self.network(name)
        overlay = self._store.overlay(network.id)
        if overlay is None:
            return ""
        peers = self._store.overlay_peers(network.id)
        held = self.kernel.overlay_entries(overlay.device)
        if held is None:
            return f"{overlay.device} is missing"
        ops = plan_overlay.plan_peers(overlay, peers, peers, held, self.owner)
        return ", ".join(repr(op) for op in ops if not isinstance(op, (ApplyFirewall, RemoveFirewallElements)))

    def leave_overlay(self, name: str, *, force: bool = False) -> None:
        """This host's share of overlay network `name` removed: peers, VXLAN device, bridge, rules."""
        self.refuse_leaving(name, force)
        with self._locks.ledger(exclusive=True):
            network = self.network(name)
            overlay = self._store.overlay(network.id)
            peers = self._store.overlay_peers(network.id)
            with self._store.transaction():
                self._store.set_network_state(network.id, "removing")
                others = [n for n in firewalled(self._store.networks()) if n.id != network.id]
            plan = driver(network).remove_network(network, len(others), self.owner)
            if overlay is not None:
                device = plan_overlay.plan_remove_device(overlay, peers, self.owner)
                if others and not any(n.driver == "overlay" for n in others):  # the last overlay: its port too
                    device.insert(0, RemoveFirewallElements(tuple(render.render_overlay_port(self.owner, overlay.port)),
                                                            "overlay port"))
                plan = [*device, *plan] if others else [*device[-2:], *plan]
            self._remove(plan, f"leaving overlay network {name!r}")
            with self._store.transaction():
                self._store.delete_network(network.id)
        self._serve_names()

    def mark_leaving(self, name: str, leaving: bool) -> None:
        """Overlay network `name` marked 'removing' before its keys leave the cluster store (gc
        finishes a leave that died after it), or back to 'ready' when the store refused."""
        with self._locks.ledger(exclusive=True), self._store.transaction():
            self._store.set_network_state(self.network(name).id, "removing" if leaving else "ready")

    def fence_overlay(self, name: str) -> None:
        """This host's block of `name` was evicted while it was cut off: no new sandbox joins it."""
        with self._store.transaction():
            self._store.fence(self.network(name).id, "this host's block was evicted while it was cut off from the"
                                                     " cluster")

    def fence_reason(self, name: str) -> str | None:
        return self._store.fence_reason(self.network(name).id)

    def refuse_leaving(self, name: str, force: bool) -> None:
        network = self.network(name)
        users = sorted(e.sandbox for e in self._store.endpoints_of_network(network.id))
        if users and not force:
            raise Conflict(f"network {name!r} has sandboxes attached ({', '.join(users)}); disconnect them or use -f")
        for sandbox in users:
            self.disconnect(name, sandbox)

    def _join_overlays(self, names: Sequence[str]) -> None:
        """Overlay networks of the cluster this host is not in yet are joined on first use (as
        Docker's swarm networks appear on a node with its first container)."""
        if not os.environ.get("NSNET_CLUSTER"):
            return
        found = {n: self._store.network(n) for n in names}
        for name, net in found.items():
            if net is None:
                from .cluster import local

                local.join_if_known(self, name)
            elif net.driver == "overlay":
                from .cluster import control

                control.verify_block(self, net)

    def _tell_cluster(self, networks: Sequence[Network]) -> None:
        """After a change here is done: the agent publishes it. An agent that cannot start (the
        cluster store away) does not undo the change; it publishes it once it runs again."""
        overlays = sorted({n.name for n in networks if n.driver == "overlay"})
        if overlays:
            from .cluster import control

            try:
                control.publish(self.state_dir, overlays)
            except NsnetError as exc:
                self.notes.append(f"names not published to the cluster yet: {exc}")

    # Containers: namespaces a runtime owns (CNI)

    def attach_container(self, container_id: str, netns: str, ifname: str, network: str, *,
                         ip: str | None = None, ip6: str | None = None, mac: str | None = None,
                         publish: Sequence[str] = (), default_route: bool = True,
                         labels: Sequence[str] = ()) -> Endpoint:
        """The container's namespace (a path its runtime made and keeps) joins `network` through
        a veth whose peer is born there as `ifname`: everything `connect` does, with the
        runtime's names, services' backends included. The container's first attachment records
        it as a sandbox named `cni-<id>`, with `labels` (a later attachment's are not read);
        nsnet never creates, enters or deletes its namespace."""
        validate.container_id("container id", container_id)
        validate.interface_name("interface name", ifname)
        validate.name("network", network)
        if not netns.startswith("/"):
            raise InvalidInput("netns", netns, "must be an absolute path")
        requested = _requested(ip, ip6)
        wanted_mac = validate.mac("mac", mac) if mac is not None else None
        port_requests = portspec.parse_all(publish)
        tags = validate.labels(list(labels))
        with self._locks.ledger():
            existing = self._store.sandbox_of_container(container_id)
            name = existing.name if existing else self._container_name(container_id)
            with self._locks.sandbox(name), self._serving([network]):
                with self._store.transaction():
                    # Again under the container's lock: a concurrent first ADD (another network)
                    # may have recorded it meanwhile.
                    existing = self._store.sandbox_of_container(container_id)
                    net = self._ready_network(network)
                    if existing is None:
                        sandbox_id = new_id()
                        self._store.add_sandbox(sandbox_id, name, "ready", container_id, netns, labels=tags)
                    else:
                        sandbox_id = existing.id
                        if existing.netns != netns:
                            raise Conflict(f"container {container_id!r} is attached in namespace {existing.netns},"
                                           f" not {netns}")
                        if existing.endpoint(network) is not None:
                            raise Conflict(f"container {container_id!r} is already attached to network {network!r}")
                        if any(e.ifname == ifname for e in existing.endpoints):
                            raise Conflict(f"container {container_id!r} already has an interface {ifname!r}")
                    pointers = {net.id: self._store.last_ips(net.id)}
                    endpoint = self._allocate(sandbox_id, name, net, ifname, default_route and not net.internal,
                                              requested, port_requests, mac=wanted_mac, netns=netns)
                    joined = replace(endpoint, state="ready")
                    serving = self._backend_changes([network], lambda boxes: [
                        replace(b, endpoints=(*(e for e in b.endpoints if e.id != joined.id), joined))
                        if b.name == name else b for b in boxes])

                def forget() -> None:
                    self._store.delete_endpoint(endpoint.id)
                    if existing is None:
                        self._store.delete_sandbox(name)
                    self._restore_pointers(pointers)

                # Its runtime writes its /etc files.
                self._build([*plan_connect(endpoint, net, self.owner), *serving], forget)
                with self._store.transaction():
                    self._store.set_endpoint_state(endpoint.id, "ready")
        if net.dns:
            self._serve_names()
        return replace(endpoint, state="ready")

    def detach_container(self, container_id: str, network: str, ifname: str | None = None) -> bool:
        """The container's attachment to `network` (with that interface name, when given) undone:
        its veth, address, ports and rules released at once; the container is forgotten with its
        last attachment. Idempotent: False when there was nothing to undo (an unknown container,
        a second call), also when the runtime deleted the namespace first (the veth went with it)."""
        with self._locks.ledger():
            existing = self._store.sandbox_of_container(container_id)
            if existing is None:
                return False
            with self._locks.sandbox(existing.name), self._serving([network]):
                with self._store.transaction():
                    current = self._store.sandbox_of_container(container_id)
                    endpoint = current.endpoint(network) if current else None
                    if endpoint is None or (ifname is not None and endpoint.ifname != ifname):
                        if current is not None and not current.endpoints:  # left by an attach that died
                            self._store.delete_sandbox(current.name)
                        return False
                    # Backends go first: no new connection goes to a container on its way out.
                    serving = self._backend_changes([network], lambda boxes: [
                        replace(b, endpoints=tuple(e for e in b.endpoints if e.id != endpoint.id))
                        if b.name == current.name else b for b in boxes])
                    self._store.set_endpoint_state(endpoint.id, "removing")
                plan = [*serving, *plan_disconnect(endpoint, self.network(network), None, self.owner)]
                self._remove(plan, f"detaching container {container_id!r} from {network!r}")
                with self._store.transaction():
                    self._store.delete_endpoint(endpoint.id)
                    if not [e for e in current.endpoints if e.id != endpoint.id]:
                        self._store.delete_sandbox(current.name)
        return True

    def container(self, container_id: str) -> Sandbox | None:
        return self._store.sandbox_of_container(container_id)

    def _container_name(self, container_id: str) -> str:
        """`cni-` and the id's first 12 characters (a runtime's short id), longer when taken."""
        for length in (12, 20, len(container_id)):
            name = f"cni-{container_id[:length]}"[:validate.MAX_NAME]
            if self._store.sandbox_id(name) is None:
                return name
        raise Conflict(f"no free sandbox name for container {container_id!r}")

    # Ledger against kernel

    def check(self) -> list[Drift]:
        """Every difference between the ledger and the live kernel (see nsnet.repair)."""
        from . import repair

        with self._locks.ledger(exclusive=True):
            drift = repair.check(self._store, self.kernel, self.owner)
        if self.overlay_networks():
            from .cluster import local

            drift += local.check(self)
        return drift

    def gc(self) -> list[str]:
        """Bring kernel and ledger back to agreement; returns what was done (see nsnet.repair)."""
        from . import repair

        with self._locks.ledger(exclusive=True):
            interrupted = [n for n in self._store.networks() if n.driver == "overlay" and n.state != "ready"]
            done = []
            if interrupted and os.environ.get("NSNET_CLUSTER"):
                from .cluster import local

                done += local.finish_interrupted(self, interrupted)
            done += repair.gc(self._store, self.kernel, self.owner)
            with self._store.transaction():
                self._store.set_meta(SKELETON_KEY, render.SKELETON_VERSION)  # rebuilt or checked whole
        down = any(n.dns for n in self._store.networks()) and self.kernel.resolver_status(self._store.directory) is None
        self._serve_names()
        for network in self._store.networks():
            if network.dns:
                self._tell_host(network)  # a rebuilt bridge lost what the host's resolver was told
        if down and self.kernel.resolver_status(self._store.directory) is not None:
            done.append("started the resolver")
        if self.overlay_networks():
            from .cluster import control

            was_down = control.status(self.state_dir) is None
            control.sync(self.state_dir)  # the agent reconciles peers, names and fences
            if was_down:
                done.append("started the cluster agent")
        return done

    def doctor(self) -> list[Finding]:
        """What on this host would break nsnet's traffic (see nsnet.doctor)."""
        from .doctor import diagnose

        published = [(s.name, p) for s in self._store.sandboxes() for e in s.endpoints for p in e.ports]
        findings = diagnose(self.kernel.host_facts(), self._store.networks(), published)
        if os.environ.get("NSNET_CLUSTER"):
            from .cluster import doctor

            findings += doctor.diagnose(doctor.facts())
        return findings

    # Services (nsnet.services)

    def create_service(self, name: str, *, network: str, ports: Sequence[str], backends: Sequence[str] = (),
                       selector: Sequence[str] = (), vips: Sequence[str] = (), affinity: str | None = None,
                       publish: Sequence[str] = ()) -> Service:
        """VIPs on `network`, one per family it has, whose ports the kernel spreads over the
        backends: the sandboxes named, and the network's sandboxes whose labels hold the
        selector, followed as they come and go. Each VIP is the next free address of the
        service range unless `vips` names it; `publish` also opens service ports on every address
        of the host (services.publish)."""
        from . import services

        validate.name("service name", name)
        validate.name("--network", network)
        wanted_ports = services.publish(list(publish), services.ports(list(ports)))
        wanted_selector = services.selector(list(selector))
        wanted_affinity = services.affinity(affinity)
        named = tuple(dict.fromkeys(validate.name("--backend", b) for b in backends))
        if not named and not wanted_selector:
            raise InvalidInput("--backend", None, "or --selector is needed: who serves the service")
        with self._locks.ledger(exclusive=True):
            with self._store.transaction():
                if self._store.service(name) is not None:
                    raise Conflict(f"service {name!r} already exists")
                net = self._ready_network(network)
                if not driver(net).firewalled:
                    raise InvalidInput("--network", network, f"is a {net.driver} network: nsnet's firewall, which"
                                       " serves VIPs, does not see its traffic")
                sandboxes = self._store.sandboxes()
                for backend in named:
                    found = next((s for s in sandboxes if s.name == backend), None)
                    if found is None:
                        raise NotFound("sandbox", backend)
                    if found.endpoint(network) is None:
                        raise InvalidInput("--backend", backend, f"is not on network {network!r}")
                self._refuse_taken_node_ports(wanted_ports)
                within, added = self._service_range()
                addresses = self._vips(net, within, list(vips))
                service = Service(id=new_id(), name=name, network=network, vips=addresses, ports=wanted_ports,
                                  backends=named, selector=wanted_selector, affinity=wanted_affinity,
                                  created=time.time(), state="creating")
                self._store.add_service(service, net.id)
                if added:
                    self._store.set_meta(SERVICE_RANGE_KEY, ",".join(str(b) for b in within.values()))
                chosen = services.picks(service, sandboxes)
            counts = sorted({len(a) for a in chosen.values() if a})
            stale = self._stale_skeleton()
            commands = [*stale, *(c for n in counts for c in render.render_dispatch(self.owner, n)),
                        *(render.render_remember(self.owner, wanted_affinity) if wanted_affinity else []),
                        *render.render_service(self.owner, "add", service, chosen),
                        *render.render_service_range(self.owner, "add", added.values())]
            reverse = [*render.render_service(self.owner, "delete", service, chosen),
                       *render.render_service_range(self.owner, "delete", added.values())]

            def forget() -> None:
                self._store.delete_service(service.id)
                if added:
                    recorded = [b for v, b in within.items() if v not in added]
                    if recorded:
                        self._store.set_meta(SERVICE_RANGE_KEY, ",".join(str(b) for b in recorded))
                    else:
                        self._store.delete_meta(SERVICE_RANGE_KEY)

            self._build([ApplyFirewall(tuple(commands), tuple(reverse), f"service {name}")], forget)
            with self._store.transaction():
                self._store.set_service_state(service.id, "ready")
                if stale:
                    self._store.set_meta(SKELETON_KEY, render.SKELETON_VERSION)
        if net.dns:
            self._serve_names()  # its name answers with its VIPs
        return replace(service, state="ready")

    def remove_service(self, name: str) -> None:
        from . import services

        validate.name("service name", name)
        with self._locks.ledger(exclusive=True):
            with self._store.transaction():
                service = self._store.service(name)
                if service is None:
                    raise NotFound("service", name)
                chosen = services.picks(service, self._store.sandboxes())
                last = self._store.service_count() == 1
                within = self._service_range()[0]
                self._store.set_service_state(service.id, "removing")
            commands = [*render.render_service(self.owner, "delete", service, chosen),
                        *(render.render_service_range(self.owner, "delete", within.values()) if last else [])]
            udp = [p.port for p in service.ports if p.protocol == "udp"]
            for address in service.vips:
                if udp:
                    self._flows_to_forget.append((str(address), udp, set()))
                if service.affinity:
                    self._picks_to_forget.append((str(address), None))
            self._remove([RemoveFirewallElements(tuple(commands), f"service {name}")], f"removing service {name!r}")
            with self._store.transaction():
                self._store.delete_service(service.id)
                if last:
                    self._store.delete_meta(SERVICE_RANGE_KEY)
        if self.network(service.network).dns:
            self._serve_names()

    def services(self) -> list[tuple[Service, list[tuple[str, tuple[str, ...]]]]]:
        """Each service with its backends now: (sandbox, its addresses in the VIPs' families)."""
        from . import services

        with self._store.snapshot():
            sandboxes = self._store.sandboxes()
            return [(s, services.backends(s, sandboxes)) for s in self._store.services()]

    def _service_range(self) -> tuple[dict[int, Any], dict[int, Any]]:
        """The service range per family, and the blocks of it chosen now: a family's block is the
        one the ledger recorded when its first service was made, else NSNET_SERVICE_RANGE's or the
        default, which must overlap no network and no route of the host."""
        from . import services

        recorded = self._store.meta(SERVICE_RANGE_KEY)
        within = services.service_ranges(recorded) if recorded else {}
        if len(within) == 2:
            return within, {}
        wanted = services.service_ranges(services.DEFAULT_RANGES)
        wanted.update(services.service_ranges(os.environ["NSNET_SERVICE_RANGE"])
                      if os.environ.get("NSNET_SERVICE_RANGE") else {})
        added = {v: b for v, b in wanted.items() if v not in within}
        ours = {n.bridge for n in self._store.networks()}
        routes = [dst for dst, dev in self.kernel.host_routes() if dev not in ours]
        for block in added.values():
            clash = services.overlaps(block, [s.subnet for n in self._store.networks() for s in n.subnets])
            if clash is not None:
                raise InvalidInput("NSNET_SERVICE_RANGE", str(block), f"overlaps a network's subnet {clash}")
            routed = services.overlaps(block, routes)
            if routed is not None:
                raise InvalidInput("NSNET_SERVICE_RANGE", str(block), f"overlaps the host's route {routed}")
        return {**within, **added}, added

    def _vips(self, network: Network, within: dict[int, Any], requested: list[str]) -> tuple[IPAddress, ...]:
        """One VIP per family of the network: the one `--vip` names, else the family's first free."""
        from . import services

        versions = sorted({s.version for s in network.subnets})
        taken = self._store.vips()
        named: dict[int, IPAddress] = {}
        for text in requested:
            address = services.vip(text, within)
            if address.version not in versions:
                raise InvalidInput("--vip", text, f"is IPv{address.version}; network {network.name!r} has no "
                                   f"IPv{address.version} subnet")
            if address.version in named:
                raise InvalidInput("--vip", text, f"is a second IPv{address.version} VIP")
            if str(address) in taken:
                raise Conflict(f"VIP {address} is another service's")
            named[address.version] = address
        chosen = []
        for version in versions:
            address = named.get(version) or services.free_vip(within[version], taken)
            if address is None:
                raise Exhausted(f"the service range {within[version]} has no free address")
            chosen.append(address)
        return tuple(chosen)

    def _refuse_taken_node_ports(self, ports: Sequence[Any]) -> None:
        """A service port published on the host takes its host port on every address of the host:
        refused when published already (by a sandbox or a service) or held by a host process."""
        from .publish import refuse_taken

        taken, holders = self._store.published_ports(), self.kernel.port_holders()
        for p in ports:
            if p.node_port is None:
                continue
            holder = self._store.node_port_holder(p.protocol, p.node_port)
            if holder is not None:
                raise Conflict(f"host port {p.node_port}/{p.protocol} is published by service {holder!r}")
            refuse_taken(PortMapping(None, p.node_port, p.target, p.protocol), taken, holders)

    @contextmanager
    def _serving(self, networks: Sequence[str]) -> Iterator[None]:
        """The services lock (nsnet.locks) when a service lives on one of these networks."""
        if networks and self._store.serves(networks):
            with self._locks.services():
                yield
        else:
            yield

    def _backend_changes(self, networks: Sequence[str], change: Callable[[list[Sandbox]], list[Sandbox]]
                         ) -> list[Operation]:
        """The firewall change that follows the services of these networks from their backends
        now to those after `change` (the ledger's sandboxes as a command leaves them), with its
        undo; none when no service's backends change. Once the command is done, a backend that
        goes loses its clients' affinity and its UDP flows (`_forget_flows`): a client's socket
        would otherwise keep sending to it for as long as it sends (kube-proxy's #19029, #139629)."""
        from . import services

        affected = [s for s in self._store.services(networks) if s.state == "ready"]
        if not affected:
            return []
        before = self._store.sandboxes()
        after = change(before)
        commands: list[dict[str, Any]] = []
        reverse: list[dict[str, Any]] = []
        for service in affected:
            old, new = services.picks(service, before), services.picks(service, after)
            if old == new:
                continue
            commands += self._move_backends(service, old, new)
            reverse += self._move_backends(service, new, old)
            udp = [p.port for p in service.ports if p.protocol == "udp"]
            for address in service.vips:
                gone = set(old[address.version]) - set(new[address.version])
                if gone and udp:
                    self._flows_to_forget.append((str(address), udp, set(new[address.version])))
                if gone and service.affinity:
                    self._picks_to_forget.append((str(address), set(new[address.version])))
        if not commands:
            return []
        return [ApplyFirewall((*self._stale_skeleton(), *commands), tuple(reverse), "services' backends")]

    def _stale_skeleton(self) -> list[dict[str, Any]]:
        """The skeleton, when the tables may lack what services' elements and chains name (made
        by an older nsnet, whose ledger was migrated since): a service create or gc records that
        they do not."""
        if self._store.meta(SKELETON_KEY) == render.SKELETON_VERSION:
            return []
        return render.render_skeleton(self.owner)

    def _forget_flows(self) -> None:
        """After a command: the affinity and UDP flows of backends it took away (see _backend_changes)."""
        picks, self._picks_to_forget = self._picks_to_forget, []
        for vip, keep in picks:
            try:
                self.kernel.forget_picks(self.owner.table, vip, keep)
            except (NsnetError, OSError) as exc:
                self.notes.append(f"the old backends clients of service {vip} had were not forgotten: {exc}")
        pending, self._flows_to_forget = self._flows_to_forget, []
        for vip, ports, kept in pending:
            try:
                self.kernel.forget_udp_flows(vip, ports, kept)
            except (NsnetError, OSError) as exc:
                self.notes.append(f"UDP flows to service {vip}'s old backends were not forgotten: {exc}")

    def _move_backends(self, service: Service, old: dict[int, list[str]], new: dict[int, list[str]]
                       ) -> list[dict[str, Any]]:
        counts = sorted({len(a) for a in new.values() if a})
        return [*render.render_service(self.owner, "delete", service, old, vip=False),
                *(c for n in counts for c in render.render_dispatch(self.owner, n)),
                *render.render_service(self.owner, "add", service, new, vip=False)]

    # Links (nsnet.links)

    def link(self, a: str, b: str, *, ips: Sequence[str] = (), mtu: int = DEFAULT_MTU) -> Link:
        """A veth pair between sandboxes a and b, each end named after the other sandbox (see
        nsnet.links), with the addresses `ips` gives (SANDBOX=CIDR)."""
        from . import links
        from .plan.link import plan_link

        validate.name("sandbox name", a)
        validate.name("sandbox name", b)
        if a == b:
            raise InvalidInput("sandbox name", b, "is the other end too: a link joins two sandboxes")
        wanted = links.addresses(list(ips), a, b)
        wanted_mtu = links.mtu(mtu)
        with self._locks.ledger(exclusive=True):  # two sandboxes' locks, in no order that can deadlock
            with self._store.transaction():
                ends = [self._ready_sandbox(name) for name in (a, b)]
                # Only the two sandboxes' links: reading every link made a chain of N links O(N^2).
                existing = list({lk.id: lk for name in (a, b) for lk in self._store.links(name)}.values())
                if any({lk.a.sandbox, lk.b.sandbox} == {a, b} for lk in existing):
                    raise Conflict(f"sandboxes {a!r} and {b!r} are linked already")
                taken = {name: {e.ifname for e in box.endpoints}
                         | {end.ifname for lk in existing for end in lk.ends if end.sandbox == name}
                         for name, box in zip((a, b), ends)}
                link = Link(id=new_id(), a=LinkEnd(a, links.ifname(b, taken[a]), wanted[a]),
                            b=LinkEnd(b, links.ifname(a, taken[b]), wanted[b]), mtu=wanted_mtu, created=time.time(),
                            state="creating")
                self._store.add_link(link, ends[0].id, ends[1].id)

            def forget() -> None:
                self._store.delete_link(link.id)

            self._build(plan_link(link), forget)
            with self._store.transaction():
                self._store.set_link_state(link.id, "ready")
        return replace(link, state="ready")

    def unlink(self, a: str, b: str) -> None:
        from .plan.link import plan_unlink

        validate.name("sandbox name", a)
        validate.name("sandbox name", b)
        with self._locks.ledger(exclusive=True):
            with self._store.transaction():
                for name in (a, b):
                    self.sandbox(name)
                found = next((lk for lk in self._store.links(a) if {lk.a.sandbox, lk.b.sandbox} == {a, b}), None)
                if found is None:
                    raise Conflict(f"sandboxes {a!r} and {b!r} are not linked")
                for end in found.ends:
                    self._refuse_cutting_routes(end.sandbox, [x.network for x in end.addresses], "this link")
                self._store.set_link_state(found.id, "removing")
            unshape = [op for x, y in ((a, b), (b, a)) for op in self._unshape_ops(self.sandbox(x), f"link:{y}")]
            self._remove([*unshape, *plan_unlink(found)], f"unlinking {a!r} and {b!r}")
            with self._store.transaction():
                self._store.delete_link(found.id)

    def links(self) -> list[Link]:
        with self._store.snapshot():
            return self._store.links()

    # Routes (nsnet.routes)

    def add_route(self, sandbox: str, dst: str, via: str) -> Route:
        """A static route inside the sandbox, its gateway on one of its networks or links; its first
        of a family switches forwarding on inside it (a lab's router)."""
        from . import routes
        from .plan.route import plan_route

        validate.name("sandbox name", sandbox)
        wanted = routes.destination(dst)
        gateway = routes.gateway(via, wanted)
        with self._locks.ledger(), self._locks.sandbox(sandbox):
            with self._store.transaction():
                current = self._ready_sandbox(sandbox)
                if any(r.dst == wanted for r in self._store.routes(sandbox)):
                    raise Conflict(f"sandbox {sandbox!r} has a route to {wanted} already")
                if not routes.reachable(gateway, routes.connected(current, self._store.links(sandbox))):
                    raise InvalidInput("GW", via, f"is on none of {sandbox}'s networks or links")
                route = Route(sandbox, wanted, gateway, created=time.time(), state="creating")
                self._store.add_route(route, current.id)

            def forget() -> None:
                self._store.delete_route(route)

            self._build(plan_route(route), forget)
            with self._store.transaction():
                self._store.set_route_state(route, "ready")
        return replace(route, state="ready")

    def remove_route(self, sandbox: str, dst: str) -> None:
        from . import routes
        from .plan.route import plan_unroute

        validate.name("sandbox name", sandbox)
        wanted = routes.destination(dst)
        with self._locks.ledger(), self._locks.sandbox(sandbox):
            with self._store.transaction():
                self.sandbox(sandbox)
                own = self._store.routes(sandbox)
                route = next((r for r in own if r.dst == wanted), None)
                if route is None:
                    raise Conflict(f"sandbox {sandbox!r} has no route to {wanted}")
                last = not any(r.dst.version == wanted.version and r.dst != wanted for r in own)
                self._store.set_route_state(route, "removing")
            self._remove(plan_unroute(route, last), f"removing {sandbox!r}'s route to {wanted}")
            with self._store.transaction():
                self._store.delete_route(route)

    def routes(self) -> list[Route]:
        with self._store.snapshot():
            return self._store.routes()

    def _refuse_cutting_routes(self, sandbox: str, subnets: Sequence[IPNetwork], what: str) -> None:
        """A route whose gateway only these subnets reach would be lost with them (the kernel
        deletes it with its device): its owner removes it first."""
        for route in self._store.routes(sandbox):
            if any(route.via in s for s in subnets):
                raise Conflict(f"sandbox {sandbox!r} routes {route.dst} via {route.via} over {what}; remove the route"
                               " first (nsnet route rm)")

    # Topologies (nsnet.topology): which objects each topology file made

    @contextmanager
    def topology_lock(self, topology: str) -> Iterator[None]:
        """Held by `up` and `down` of a topology from planning to the last step: two of them on one
        topology run one after the other, and the second plans from what the first left."""
        with self._locks.sandbox(f"topology:{topology}"):  # ':' is in no sandbox name
            yield

    def topology_objects(self) -> list[tuple[str, str, str, dict]]:
        """(topology, kind, key, spec as last applied) of every object a topology file made."""
        with self._store.snapshot():
            return self._store.topology_objects()

    def own_object(self, topology: str, kind: str, key: str, spec: dict) -> None:
        """Record that the topology makes (or changed) this object: written before the object is made."""
        with self._store.transaction():
            self._store.own_object(topology, kind, key, spec)

    def disown_object(self, topology: str, kind: str, key: str) -> None:
        with self._store.transaction():
            self._store.disown_object(topology, kind, key)
    # Shaping (nsnet.shaping)

    def shape(self, sandbox: str, *, network: str | None = None, link: str | None = None,
              rate: str | int | None = None, delay: str | int | None = None, jitter: str | int | None = None,
              loss: str | int | None = None, reorder: str | int | None = None, limit: str | int | None = None,
              direction: str = "out") -> Shaping:
        """Shape one interface of the sandbox (its endpoint on `network`, or its end of the link to
        sandbox `link`), replacing what was set there: see nsnet.shaping for what each knob makes."""
        from . import shaping
        from .plan.shape import drops, plan_shape, qdiscs, refuse_overlap

        validate.name("sandbox name", sandbox)
        _shaping_target(network, link)
        way = shaping.direction(direction)
        asked = {"rate": rate, "delay": delay, "jitter": jitter, "loss": loss, "reorder": reorder, "limit": limit}
        made = shaping.settings(**asked)
        if made.qdisc:
            shaping.refuse(made, asked, self.kernel.qdisc_modules())
        wanted = shaping.Shaping(sandbox, network, link, way, made)
        with self._locks.ledger(exclusive=True):  # a link's `in` acts in the peer's namespace too
            with self._store.transaction():
                current = self._ready_sandbox(sandbox)
                where, before, rows, anchor = self._shaping_context(current, wanted)
                if before == wanted:
                    return wanted
                refuse_overlap(wanted, where, self._linked_shapings(wanted))
                if before is None:
                    self._store.add_shaping(replace(wanted, state="creating"), current.id, *anchor)
            old_rules = self._drops(rows)
            new_rules = self._drops(rows, but=wanted.key) + drops(wanted, where)
            plan = plan_shape(qdiscs(before, where) if before else {}, qdiscs(wanted, where), current.handle,
                              self._shape_table, old_rules, new_rules, f"{sandbox}'s {wanted.target}")

            def forget() -> None:
                if before is None:
                    self._store.delete_shaping(current.id, wanted.key)

            self._build(plan, forget)
            with self._store.transaction():
                self._store.update_shaping(wanted, current.id)
        return wanted

    def clear_shape(self, sandbox: str, *, network: str | None = None, link: str | None = None) -> None:
        """The interface unshaped: its qdiscs back to the kernel's default, its drops gone."""
        from .shaping import Settings, Shaping

        validate.name("sandbox name", sandbox)
        _shaping_target(network, link)
        with self._locks.ledger(exclusive=True):
            with self._store.transaction():
                current = self._ready_sandbox(sandbox)
                _, before, _, _ = self._shaping_context(current, Shaping(sandbox, network, link, "out", Settings()))
                if before is None:
                    raise Conflict(f"sandbox {sandbox!r}'s {'network ' + network if network else 'link ' + str(link)}"
                                   " is not shaped")
                self._store.update_shaping(replace(before, state="removing"), current.id)
            self._remove(self._unshape_ops(current, before.key), f"unshaping {sandbox!r}'s {before.target}")
            with self._store.transaction():
                self._store.delete_shaping(current.id, before.key)

    @property
    def _shape_table(self) -> str:
        from .shaping.render import table_name

        return table_name(self.owner.table)

    def _place(self, shaping: Shaping) -> Any:
        from .plan.shape import place

        sandbox = self._store.sandbox(shaping.sandbox)
        networks = {n.name: n for n in self._store.networks()}
        return place(shaping, sandbox, self._store.links(shaping.sandbox), networks) if sandbox else None

    def _shaping_context(self, current: Sandbox, wanted: Shaping) -> tuple[Any, Shaping | None, list[Shaping],
                                                                          tuple[str | None, str | None]]:
        """Inside the caller's transaction: the wanted shaping's place, the row it replaces, the
        sandbox's rows, and the endpoint or link the row goes with."""
        from .plan.shape import place

        if wanted.network is not None:
            endpoint = current.endpoint(wanted.network)
            if endpoint is None or endpoint.state != "ready":
                raise InvalidInput("--network", wanted.network, f"sandbox {current.name} has no endpoint on it")
            anchor: tuple[str | None, str | None] = (endpoint.id, None)
        else:
            found = next((lk for lk in self._store.links(current.name)
                          if {lk.a.sandbox, lk.b.sandbox} == {current.name, wanted.link}), None)
            if found is None or found.state != "ready":
                raise InvalidInput("--link", wanted.link, f"is not linked to {current.name}")
            anchor = (None, found.id)
        where = place(wanted, current, self._store.links(current.name), {n.name: n for n in self._store.networks()})
        rows = self._store.shapings(current.name)
        before = next((s for s in rows if s.key == wanted.key), None)
        if before is not None and before.state != "ready":
            raise Conflict(f"sandbox {current.name!r}'s shaping of {before.target} was left {before.state} by a command"
                           " that did not finish; run nsnet gc")
        return where, before, [s for s in rows if s.state == "ready"], anchor

    def _linked_shapings(self, wanted: Shaping) -> list[tuple[Shaping, Any]]:
        """The peer's shaping of the same link, which may own the same device."""
        if wanted.link is None:
            return []
        return [(s, self._place(s)) for s in self._store.shapings(wanted.link)
                if s.link == wanted.sandbox and self._place(s) is not None]

    def _unshape_ops(self, current: Sandbox, key: str) -> list[Operation]:
        """What removes one of the sandbox's shapings (its key): its qdiscs cleared, its drops gone
        from the sandbox's table. [] when it has none. Read inside or outside a transaction."""
        from .plan.shape import plan_shape, qdiscs

        rows = [s for s in self._store.shapings(current.name) if s.state != "creating"]
        gone = next((s for s in rows if s.key == key), None)
        where = self._place(gone) if gone is not None else None
        if where is None:
            return []
        return plan_shape(qdiscs(gone, where), {}, current.handle, self._shape_table, self._drops(rows),
                          self._drops(rows, but=key), f"{current.name}'s {gone.target}")

    def _drops(self, rows: Sequence[Shaping], but: str | None = None) -> list[tuple[str, str, int]]:
        """The loss rules of these shapings (but the one keyed `but`) that have a place."""
        from .plan.shape import drops

        return [r for s in rows if s.key != but for p in [self._place(s)] if p is not None for r in drops(s, p)]

    # Interception (nsnet.intercept)

    def intercept(self, sandbox: str, spec: Interception) -> Interception:
        """Redirect the sandbox's traffic as `spec` says (intercept.spec), through a table of
        nsnet's in its own namespace, made in one transaction. On an intercepted sandbox the
        table is replaced, in one transaction too (as Istio re-runs its setup)."""
        from .intercept import Interception
        from .intercept.render import render_removal, render_table

        validate.name("sandbox name", sandbox)
        table = self.owner.table
        with self._locks.ledger(), self._locks.sandbox(sandbox):
            with self._store.transaction():
                current = self._ready_sandbox(sandbox)
                found = [(state, data) for name, _, state, data in self._store.interceptions() if name == sandbox]
                if found and found[0][0] != "ready":
                    raise Conflict(f"sandbox {sandbox!r}'s interception was left {found[0][0]} by a command that "
                                   "did not finish; run nsnet gc")
                before = Interception.from_dict(found[0][1]) if found else None
                if before == spec:
                    return spec
                if before is None:
                    self._store.add_interception(current.id, spec.to_dict(), "creating")
                else:
                    self._store.update_interception(current.id, spec.to_dict())

            def forget() -> None:
                if before is None:
                    self._store.delete_interception(current.id)
                else:
                    self._store.update_interception(current.id, before.to_dict())

            undo = render_removal(table) if before is None else render_table(table, before)
            self._build([ApplySandboxFirewall(current.handle, tuple(render_table(table, spec)), tuple(undo),
                                              f"interception of {sandbox}")], forget)
            with self._store.transaction():
                self._store.set_interception_state(current.id, "ready")
        return spec

    def stop_intercepting(self, sandbox: str) -> None:
        """Direct traffic again, at once (the table goes in one transaction)."""
        from .intercept.render import render_removal

        validate.name("sandbox name", sandbox)
        with self._locks.ledger(), self._locks.sandbox(sandbox):
            with self._store.transaction():
                current = self._ready_sandbox(sandbox)
                if not any(name == sandbox for name, *_ in self._store.interceptions()):
                    raise Conflict(f"sandbox {sandbox!r} is not intercepted")
                self._store.set_interception_state(current.id, "removing")
            self._remove([ApplySandboxFirewall(current.handle, tuple(render_removal(self.owner.table)))],
                         f"removing the interception of {sandbox!r}")
            with self._store.transaction():
                self._store.delete_interception(current.id)

    def interceptions(self) -> list[tuple[str, Interception]]:
        from .intercept import Interception

        return [(name, Interception.from_dict(spec)) for name, _, state, spec in self._store.interceptions()
                if state == "ready"]

    # Processes

    def popen(self, name: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """Start argv inside the sandbox (its network, its /etc/netns files); the caller stays put."""
        import subprocess

        from .kernel.netns import enter_sandbox

        sandbox = self.enterable(name)
        if sandbox.network_mode == "host":  # nsnet.modes: the namespace nsnet runs in
            return subprocess.Popen(list(argv), **kwargs)
        try:
            return subprocess.Popen(list(argv), preexec_fn=lambda: enter_sandbox(sandbox.handle), **kwargs)
        except subprocess.SubprocessError as exc:  # raised in the child by enter_sandbox
            raise NsnetError(f"cannot enter sandbox {name!r}: its namespace is missing or unusable") from exc

    def exec(self, name: str, argv: Sequence[str], **kwargs: Any) -> int:
        """Run argv inside the sandbox to completion and return its exit code."""
        with self.popen(name, argv, **kwargs) as process:
            return process.wait()

    def run(self, argv: Sequence[str], *, name: str | None = None, networks: Sequence[str] = (),
            ip: str | None = None, ip6: str | None = None, publish: Sequence[str] = (), remove: bool = True) -> int:
        """Create a sandbox, run argv in it, and remove the sandbox afterwards unless told not to."""
        name = name or f"run-{os.urandom(4).hex()}"
        self.create_sandbox(name, networks=networks, ip=ip, ip6=ip6, publish=publish)
        try:
            return self.exec(name, argv)
        finally:
            if remove:
                self.remove_sandbox(name, force=True)

    # Helpers

    def _serve_names(self) -> None:
        """After a change to what the resolver answers: it serves the new truth before the
        command returns (nsnet.dns.supervise)."""
        wanted = any(n.dns for n in self._store.networks())
        try:
            self.kernel.sync_resolver(self._store.directory, wanted)
        except NsnetError as exc:
            self.notes.append(f"names are not served: {exc}; the next nsnet command (or nsnet gc) starts it again")

    def _tell_host(self, network: Network) -> None:
        """With NSNET_HOST_DNS=resolved, systemd-resolved sends the host's own questions for names
        under `nsnet` to the network's resolver, through its bridge, and no other question (a
        routing domain; not the default route): a setting of the bridge, gone with it."""
        if os.environ.get("NSNET_HOST_DNS") != "resolved":
            return
        from .dns.listen import text
        from .dns.table import ZONE

        servers = [str(s.gateway) if network.dns_port == 53 else text(s.gateway, network.dns_port)
                   for s in network.subnets]
        try:
            self.kernel.set_link_dns(network.bridge, servers, [f"~{ZONE}"])
        except NsnetError as exc:
            self.notes.append(f"the host's resolver does not know network {network.name!r}'s names: {exc}")

    def _etc_changes(self, sandbox: Sandbox, endpoint: Endpoint, network: Network,
                     joining: bool) -> list[EtcChange]:
        """The sandbox's /etc/netns files (file, before, after) as `endpoint` on `network` joins
        or leaves it: its hosts file names it on its addresses, its resolv.conf the resolver on
        its DNS networks' gateways."""
        others = [e for e in sandbox.endpoints if e.network != network.name]
        networks = {n.name: n for n in [*(self.network(e.network) for e in others), network]}
        without = etc_files(sandbox.name, others, networks)
        joined = etc_files(sandbox.name, [*others, endpoint], networks)
        changes = [(filename, without[filename], joined[filename]) for filename in without]
        return changes if joining else [(filename, after, before) for filename, before, after in changes]

    def _resolve_ports(self, port_requests: Sequence[PortRequest]) -> list[PortMapping]:
        return resolve_ports(port_requests, self._store.published_ports(), self.kernel.port_holders(),
                             self.kernel.ephemeral_ports())

    def _refuse_taken_name(self, name: str) -> None:
        if self._store.sandbox_id(name) is not None:
            raise Conflict(f"sandbox {name!r} already exists")
        if self.kernel.netns_exists(name):
            raise Conflict(f"a network namespace named {name!r} exists and is not nsnet's")
        taken = self.kernel.sandbox_paths_taken(name)
        if taken:
            raise Conflict(f"sandbox {name!r}: {taken[0]} exists and is not nsnet's; remove it or choose another name")

    def _ensure_default_network(self) -> None:
        if self._store.network(DEFAULT_NETWORK) is None:
            try:
                self._create_network(NetworkRequest(name=DEFAULT_NETWORK))
            except Conflict:
                pass  # another process made it first

    # Under the locks a command holds, a row that is not 'ready' was left by a command that died or
    # whose removal failed half-way.

    def _ready_sandbox(self, name: str) -> Sandbox:
        """The sandbox, ready, with a namespace of its own to change (not host or container: mode,
        not a VM guest's tap)."""
        sandbox = self.enterable(name)
        if sandbox.state != "ready":
            raise Conflict(f"sandbox {name!r} was left {sandbox.state} by a command that did not finish; run nsnet gc")
        if sandbox.network_mode == "host":
            raise Conflict(f"sandbox {name!r} is on the host's network (--network host): it has no namespace of its"
                           " own whose networks, links, routes or interception nsnet could change")
        if sandbox.donor is not None:
            raise Conflict(f"sandbox {name!r} shares sandbox {sandbox.donor!r}'s namespace (--network"
                           f" container:{sandbox.donor}): its networks, links, routes and interception are"
                           f" {sandbox.donor!r}'s; change them there")
        return sandbox

    def enterable(self, name: str) -> Sandbox:
        """The sandbox, refused when it has no namespace of nsnet's to enter or change: a
        container's, or a VM guest's tap (nsnet.taps)."""
        sandbox = self.own_sandbox(name)
        if sandbox.tap is not None:
            device = sandbox.endpoints[0].host_ifname if sandbox.endpoints else "tap"
            raise Conflict(f"sandbox {name!r} is a VM guest's tap ({device}):"
                           " it has no network namespace to run commands in, connect, link, route or intercept")
        return sandbox

    def own_sandbox(self, name: str) -> Sandbox:
        """The sandbox, refused when it is a container's (its runtime owns it)."""
        sandbox = self.sandbox(name)
        if sandbox.container_id:
            raise Conflict(f"sandbox {name!r} is container {sandbox.container_id[:12]}'s: its runtime owns it"
                           " (CNI); remove or reconnect it there (podman rm, crictl rmp, ...)")
        return sandbox

    def _ready_network(self, name: str) -> Network:
        network = self.network(name)
        fenced = self._store.fence_reason(network.id) if network.driver == "overlay" else None
        if fenced:
            raise Conflict(f"network {name!r} is fenced: {fenced}; remove it here (nsnet network rm -f {name})"
                           " and join again")
        if network.state != "ready":
            raise Conflict(f"network {name!r} was left {network.state} by a command that did not finish; run nsnet gc")
        return network

    def _allocate(self, sandbox_id: str, sandbox: str, network: Network, ifname: str, default_route: bool,
                  requested: dict[int, IPAddress], port_requests: Sequence[PortRequest], mac: str | None = None,
                  netns: str | None = None, aliases: tuple[str, ...] = (), tap: bool = False) -> Endpoint:
        """Pick (or check) an address in each family of the network, and the host ports, and
        record the endpoint; runs inside the caller's transaction."""
        flood = self.kernel.flood_limit()
        if flood is not None and flood < BRIDGE_MAX_PORTS and self._store.endpoint_count(network.id) >= flood:
            raise Exhausted(f"network {network.name!r} is full: this host floods a broadcast to at most {flood} ports "
                            "of a bridge (net.core.netdev_max_backlog); more sandboxes would not all be reachable; "
                            "create another network")
        if self._store.endpoint_count(network.id) >= BRIDGE_MAX_PORTS:
            raise Exhausted(f"network {network.name!r} is full: a Linux bridge holds at most {BRIDGE_MAX_PORTS} "
                            "sandboxes; create another network")
        if port_requests and not driver(network).firewalled:
            raise Conflict(f"network {network.name!r} is a {network.driver} network: nothing of nsnet's publishes its"
                           " ports; its sandboxes are reached at their own addresses")
        if port_requests and network.internal:
            raise Conflict(f"network {network.name!r} is internal: nothing outside it can reach a published port")
        for version, address in requested.items():
            if network.family(version) is None:
                raise InvalidInput("ip" if version == 4 else "ip6", address,
                                   f"network {network.name!r} has no IPv{version}")
        for request in port_requests:
            if request.host_ip is not None and network.family(request.host_ip.version) is None:
                raise InvalidInput("publish", request.host_ip, f"is an IPv{request.host_ip.version} host address, but "
                                   f"network {network.name!r} has no IPv{request.host_ip.version}")
        last = self._store.last_ips(network.id)
        addresses = []
        for s in network.subnets:
            taken = self._store.taken(network.id, s.version)
            if s.version in requested:
                address = ipam.check_requested(requested[s.version], s.subnet, s.gateway, taken, s.ip_range)
            else:
                address = ipam.allocate(s.subnet, s.gateway, taken, last.get(s.version), s.ip_range)
            addresses.append(ip_interface(f"{address}/{s.subnet.prefixlen}"))
        endpoint_id = new_id()
        if mac is not None:
            if self._store.mac_taken(network.id, mac):
                raise Conflict(f"MAC address {mac} is taken on network {network.name!r}")
        else:
            mac = mac_for(addresses[0].ip)
            # Random for IPv6 (1 in 2**32), or when a container's chosen MAC took the derived one.
            while self._store.mac_taken(network.id, mac):
                mac = mac_for(None)
        endpoint = Endpoint(
            id=endpoint_id, sandbox=sandbox, network=network.name, ifname=ifname,
            host_ifname=(tap_name if tap else host_veth_name)(endpoint_id), mac=mac, addresses=tuple(addresses),
            gateways=tuple(s.gateway for s in network.subnets if s.gateway is not None), default_route=default_route,
            state="creating",
            netns=netns, aliases=aliases,
        )
        self._store.add_endpoint(sandbox_id, network.id, endpoint)
        if port_requests:
            mappings = self._resolve_ports(port_requests)
            self._store.add_ports(endpoint_id, mappings)
            endpoint = replace(endpoint, ports=tuple(mappings))
        return endpoint

    def _subnet(self, request: SubnetRequest, existing: list[Network],
                routes: list[tuple[IPNetwork, str]], default_gateway: bool = True) -> Subnet:
        """The request's subnet, or one IPAM picks from the family's pool, overlapping no network
        and no host route; runs inside the caller's transaction."""
        version = request.version
        subnet = request.subnet
        if subnet is None:
            pool = self._pool if version == 4 else (self._store.ula_prefix(), 64)
            used = [s.subnet for n in existing for s in n.subnets if s.version == version]
            subnet = ipam.pick_subnet(*pool, used + [dst for dst, _ in routes if dst.version == version])
        _refuse_overlap(subnet, existing, routes)
        recorded = self._store.meta(SERVICE_RANGE_KEY)
        if recorded:
            from .services import overlaps, service_ranges

            clash = next((b for b in service_ranges(recorded).values() if overlaps(b, [subnet])), None)
            if clash is not None:
                raise Conflict(f"subnet {subnet} overlaps the service range {clash}")
        # A macvlan network's gateway is a router of the parent's LAN, only when given (nsnet.drivers).
        gateway = request.gateway or (ipam.default_gateway(subnet) if default_gateway else None)
        return Subnet(subnet, gateway, request.ip_range)

    def _build(self, plan: Sequence[Operation], forget: Callable[[], None]) -> None:
        """Apply a plan whose rows the ledger holds already ('creating'); if it fails, it has
        been rolled back and `forget` deletes those rows, in one transaction. The fault points
        bracket the kernel work for crash tests (see nsnet.faults)."""
        faults.point("reserved")
        try:
            apply(plan, self.kernel)
        except BaseException:
            self._flows_to_forget.clear()
            self._picks_to_forget.clear()
            with self._store.transaction():
                forget()
            raise
        finally:
            self.kernel.release_sandboxes()
        self._forget_flows()
        faults.point("applied")

    def _remove(self, plan: Sequence[Operation], what: str) -> None:
        """Tear down what rows marked 'removing' describe; they are deleted only once it is done."""
        faults.point("reserved")
        try:
            teardown(plan, self.kernel, what)
        finally:
            self.kernel.release_sandboxes()
            self._forget_flows()
        faults.point("applied")

    def _restore_pointers(self, pointers: dict[str, dict[int, Any]]) -> None:
        """A rolled-back attach leaves no trace, not even in the round-robin position."""
        for network_id, last in pointers.items():
            for version, address in last.items():
                self._store.set_last_ip(network_id, version, address)


def _shaping_target(network: str | None, link: str | None) -> None:
    if (network is None) == (link is None):
        raise InvalidInput("--network", network, "or --link is needed, one of them: the interface to shape")


def _plan_remove_tap(attachments: list[tuple[Endpoint, Network]], owner: Owner) -> list[Operation]:
    from .plan.tap import plan_remove_tap

    return [op for endpoint, network in attachments for op in plan_remove_tap(endpoint, network, owner)]


def _listed(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _requested(ip: str | None, ip6: str | None) -> dict[int, IPAddress]:
    """`--ip` (IPv4) and `--ip6` (IPv6), by family."""
    requested = {}
    if ip is not None:
        requested[4] = validate.address("ip", ip, 4)
    if ip6 is not None:
        requested[6] = validate.address("ip6", ip6, 6)
    return requested


def _refuse_overlap(subnet: IPNetwork, existing: list[Network], routes: list[tuple[IPNetwork, str]]) -> None:
    for network in existing:
        for s in network.subnets:
            if s.version == subnet.version and subnet.overlaps(s.subnet):
                raise Conflict(f"subnet {subnet} overlaps network {network.name!r} ({s.subnet})")
    for dst, dev in routes:
        if dst.version == subnet.version and subnet.overlaps(dst):
            raise Conflict(f"subnet {subnet} overlaps the host route {dst} on {dev or 'an interface'}")
