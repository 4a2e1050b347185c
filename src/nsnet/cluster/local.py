"""Where the engine meets the cluster: the few calls engine commands make when a network is an
overlay (create it cluster-wide, join it on first use here, leave it, tell the agent of a change).
Nothing here is imported unless an overlay network is involved."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import faults
from ..errors import Conflict, InvalidInput, NsnetError
from . import control, endpoints, membership
from .host import host_id, underlay

if TYPE_CHECKING:
    from ..engine import Engine
    from ..model import Network


def store_or_refuse(field: str = "--driver"):
    """The cluster store, or a one-line refusal naming `field` (the flag of the command that needs
    it: `--driver overlay`, or NSNET_CLUSTER itself for the cluster verbs)."""
    from .etcd import open_store

    store = open_store()
    if store is None:
        if field == "--driver":
            raise InvalidInput(field, "overlay", "needs a cluster store: set NSNET_CLUSTER=etcd://HOST:PORT[,...]")
        raise InvalidInput(field, None, "is not set: name the cluster store (etcd://HOST:PORT[,...])")
    return store


def create_network(engine: Engine, name: str, *, subnet: str | None, block_prefix: int | None, vni: int | None,
                   mtu: int | None, internal: bool) -> Network:
    """The network in the cluster (config and VNI), then this host's share of it."""
    store = store_or_refuse()
    try:
        if engine.find_network(name) is not None:
            raise Conflict(f"network {name!r} already exists")
        membership.create_network(store, name, subnet=subnet, block_prefix=block_prefix, vni=vni, mtu=mtu,
                                  internal=internal, here=underlay(endpoints()))
        faults.point("configured")
        return join(engine, name, store)
    finally:
        store.close()


def join(engine: Engine, name: str, store=None) -> Network:
    """This host's share of overlay network `name`: the agent running (the host alive in the
    cluster before it holds a block), a block leased, the bridge and VXLAN device built, and the
    peers programmed before this returns."""
    from ..model import Overlay

    own = store is None
    store = store or store_or_refuse()
    try:
        control.ensure(engine.state_dir)
        joining = membership.lease_block(store, host_id(engine.state_dir), name, underlay(endpoints()))
        faults.point("leased")
        config = joining.config
        overlay = Overlay(network=name, supernet=config.supernet, vni=config.vni, port=config.port,
                          vtep_ip=joining.here.vtep_ip, underlay=joining.here.device, vtep_mac=joining.mac,
                          device="", host=joining.host)  # the engine names the device after the network
        try:
            network = engine.join_overlay(name, overlay, joining.block, config.mtu, internal=config.internal)
        except Conflict:
            joined = engine.find_network(name)
            if joined is None or joined.driver != "overlay":
                membership.release_block(store, name, joining)
                raise
            if joined.subnets[0].subnet != joining.block:  # it leased another before this saw it: that one stays
                membership.release_block(store, name, joining)
            network = joined  # another command joined this host meanwhile
        except BaseException:
            membership.release_block(store, name, joining)
            raise
    finally:
        if own:
            store.close()
    control.sync(engine.state_dir)
    return network


def join_if_known(engine: Engine, name: str) -> None:
    """Join `name` when the cluster has such an overlay network; when not, the caller's own
    lookup says there is no such network."""
    store = store_or_refuse()
    try:
        if membership.network_config(store, name) is not None:
            join(engine, name, store)
    finally:
        store.close()


def block_state(engine: Engine, network: str, block: str) -> str:
    """control.MINE, LOST or UNAVAILABLE: `block` of `network` as the store says now, asked by
    this command (when the agent does not answer)."""
    from .store import Unavailable

    store = store_or_refuse()
    try:
        held = membership.holds_block(store, host_id(engine.state_dir), network, block)
        return control.MINE if held else control.LOST
    except Unavailable:
        return control.UNAVAILABLE
    finally:
        store.close()


def leave(engine: Engine, name: str, force: bool) -> None:
    """This host out of `name`: its keys first (peers stop routing to it, and a store that does
    not answer leaves everything as it was), then its kernel half; one that fails to go half-way
    is left 'removing' for gc, the block already free in the cluster."""
    store = store_or_refuse()
    try:
        engine.refuse_leaving(name, force)
        engine.mark_leaving(name, True)  # from here a command that dies is finished by gc
        try:
            last = membership.leave(store, host_id(engine.state_dir), name)
        except BaseException:
            engine.mark_leaving(name, False)  # the store refused or did not answer: nothing changed
            raise
        faults.point("left")
        engine.leave_overlay(name, force=force)
        if last:
            engine.notes.append(f"network {name!r} had no other host: it is gone from the cluster")
    finally:
        store.close()
    control.sync(engine.state_dir, wanted=bool(engine.overlay_networks()))


def hosts(engine: Engine) -> list[dict]:
    """`nsnet cluster hosts`: every host alive, suspect or holding a block, with its VTEP and blocks."""
    from . import records
    from .view import parse

    store = store_or_refuse("NSNET_CLUSTER")
    try:
        values, _ = store.range(records.PREFIX)
    finally:
        store.close()
    view = parse({kv.key: kv.value for kv in values})
    me = host_id(engine.state_dir)
    names = set(view.hosts) | view.suspects | view.owners()
    vteps = {b.host: b.vtep_ip for blocks in view.blocks.values() for b in blocks.values()}
    return [{"Host": name, "Here": name == me, "State": view.state(name),
             "Vtep": view.hosts[name].vtep_ip if name in view.hosts else vteps.get(name, "-"),
             "Blocks": sorted(f"{network}:{cidr}" for network, blocks in view.blocks.items()
                              for cidr, b in blocks.items() if b.host == name)}
            for name in sorted(names)]


def leave_cluster(engine: Engine, force: bool) -> list[str]:
    """`nsnet cluster leave`: out of every overlay network here (refused, changing nothing, while
    one has sandboxes unless forced), then the agent stops and its lease goes."""
    networks = engine.overlay_networks()
    if not force:
        for network in networks:
            engine.refuse_leaving(network.name, False)
    for network in networks:
        engine.remove_network(network.name, force=force)
    control.ask(engine.state_dir, "stop")
    return [n.name for n in networks]


def evict(engine: Engine, host: str, force: bool) -> list[str]:
    store = store_or_refuse("NSNET_CLUSTER")
    try:
        if host == host_id(engine.state_dir):
            raise InvalidInput("HOST", host, "is this host; use nsnet cluster leave")
        return membership.evict(store, host, force=force)
    finally:
        store.close()


def finish_interrupted(engine: Engine, networks: list[Network]) -> list[str]:
    """gc's cluster half, before its kernel half: for overlay networks a command left 'removing'
    (a leave that died) this host's keys go from the store; for those left 'creating' (a join
    that died) the block it leased goes back. A store that does not answer (or settings it
    refuses) leaves the keys, and gc's kernel half goes on: the block stays this host's, taken
    back by its next join."""
    done: list[str] = []
    try:
        store = store_or_refuse("NSNET_CLUSTER")
        try:
            me = host_id(engine.state_dir)
            for network in networks:
                if network.state == "removing":
                    membership.leave(store, me, network.name)
                    done.append(f"took this host out of overlay network {network.name} in the cluster")
                elif membership.release_held(store, me, network.name, network.subnets[0].subnet):
                    done.append(f"gave back block {network.subnets[0].subnet} of overlay network {network.name}")
        finally:
            store.close()
    except NsnetError as exc:
        engine.notes.append(f"the cluster keeps this host's keys of a network gc finished here: {exc}")
    return done


def check(engine: Engine) -> list:
    """What `nsnet check` says of the cluster's side here: the agent down, a network fenced."""
    from ..reconcile import Drift

    drift = []
    if control.status(engine.state_dir) is None:
        drift.append(Drift("down", "cluster agent", "not running: peers are not kept up to date (gc starts it)"))
    for network in engine.overlay_networks():
        reason = engine.fence_reason(network.name)
        if reason:
            drift.append(Drift("fenced", f"network {network.name}", reason))
        wrong = engine.overlay_drift(network.name)
        if wrong:
            drift.append(Drift("wrong", f"network {network.name}", f"its VXLAN device differs from its peers: {wrong}"
                                                                   " (gc repairs it)"))
    return drift
