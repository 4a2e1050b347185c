"""What commands ask of the cluster agent (nsnet.cluster.agent) over its control socket. Free of
the store client on purpose: a create or connect on a network this host has joined pays two
socket round trips to the agent, whose store connection is open already, and neither imports
nor connects an etcd client of its own nor waits for a whole reconcile (together ~65 ms of such a
create when it did, benchmarks/RESULTS.md).

Requests: `status`; `sync` (reconcile everything now); `publish NET...` (this host's names in
those networks, nothing else); `verify NET CIDR` (is the block still this host's, read from the
store now); `stop`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..dns import supervise
from ..dns.supervise import Resident
from ..errors import NsnetError

if TYPE_CHECKING:
    from ..engine import Engine
    from ..model import Network

AGENT = Resident("nsnet's cluster agent", "nsnet.cluster.agent", "cluster.sock", "cluster.log", "nsnet-cluster-")
LOCK = "cluster.lock"
MINE, LOST, UNAVAILABLE = "mine", "lost", "unavailable"


def ask(state_dir: str, request: str) -> str | None:
    return supervise.ask(state_dir, request, AGENT)


def status(state_dir: str) -> str | None:
    return ask(state_dir, "status")


def ensure(state_dir: str) -> None:
    if status(state_dir) is None and not supervise.start(state_dir, AGENT):
        _await_starting(state_dir)


def _await_starting(state_dir: str) -> None:
    """Another command started the agent, which holds its lock but may not answer yet (it
    registers and lists first): wait for it, bounded."""
    deadline = time.monotonic() + supervise.REPLY_TIMEOUT_S
    while status(state_dir) is None and time.monotonic() < deadline:
        time.sleep(0.02)


def sync(state_dir: str, wanted: bool = True) -> None:
    """Ask the agent to reconcile now (a network joined or left, gc); start it when it is down and
    `wanted` (this host is in some overlay network)."""
    _request(state_dir, "sync", wanted)


def publish(state_dir: str, networks: list[str]) -> None:
    """This host's names in `networks` published now (after a create, connect or removal). An
    agent that was down is started, and publishes everything as it lists."""
    _request(state_dir, "publish " + " ".join(networks), True)


def _request(state_dir: str, request: str, wanted: bool) -> None:
    for _ in range(3):
        answer = ask(state_dir, request)
        if answer is not None and answer.startswith("ok"):
            return
        if answer == "error unknown request" and request != "sync":  # an agent older than this command
            request = "sync"
            continue
        if answer is not None:
            raise NsnetError(answer.removeprefix("error "))
        if not wanted:
            return
        if supervise.start(state_dir, AGENT):
            continue
        _await_starting(state_dir)  # another command's agent holds the lock, still starting
    raise NsnetError("nsnet's cluster agent neither answers nor starts (another one holds its lock)")


def verify_block(engine: Engine, network: Network) -> None:
    """Before a sandbox joins overlay network `network` here: its block still this host's in the
    cluster. A host evicted while it was cut off learns it here, not from its agent seconds
    later, and fences the network before a sandbox lands on a block it no longer holds. The agent
    reads the block from the store (its connection is open); with no agent, this command does.
    When the store does not answer, the block is taken as this host's (sandboxes' addresses are
    local)."""
    if engine.fence_reason(network.name):
        return  # the engine's own check refuses it, naming why
    block = network.subnets[0].subnet
    answer = ask(engine.state_dir, f"verify {network.name} {block}")
    if answer is not None and answer.startswith("ok "):
        said = answer.split()[1]
    else:
        from .local import block_state

        said = block_state(engine, network.name, block)
    if said == LOST:
        engine.fence_overlay(network.name)
