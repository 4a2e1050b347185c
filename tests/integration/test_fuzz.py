"""Random sequences of operations, valid and invalid, against the real kernel.

After every step `check` must find no difference between the ledger and the kernel, and an
operation that was refused must have left the ledger exactly as it was. NSNET_FUZZ_EXAMPLES sets
the campaign's size (CI runs a short one).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from nsnet import Engine, NsnetError

from .conftest import wait_clean

# Mostly valid values, so that sequences build real state; some invalid, so refusals happen too.
NETWORKS = st.sampled_from(["a", "a", "b", "b", "c", "../x"])
SANDBOXES = st.sampled_from(["s1", "s2", "s2", "s3", "s3", "s4", "bad/name"])
SUBNETS = st.sampled_from([None, None, None, "10.41.0.0/24", "10.40.0.0/16", "10.41.0.1/24", "10.42.0.0/31"])
PORTS = st.one_of(st.just([]), st.just([]), st.lists(st.sampled_from(
    ["8080:80", "8081:81/udp", "127.0.0.1::90", "9000-9002:9000-9002", "80", "0:1", "[::1]:80:80"]), max_size=2))
IPS = st.sampled_from([None, None, None, None, "10.40.0.9", "10.41.0.9", "10.99.0.1", "not-an-ip"])


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="nsnet-fuzz-")
        self.engine = Engine(state_dir=self.directory)

    def ledger(self) -> list[str]:
        db = sqlite3.connect(os.path.join(self.directory, "state.db"))
        try:
            return list(db.iterdump())
        finally:
            db.close()

    def attempt(self, action, *args, **kwargs) -> None:
        """Run one operation; a refusal must be nsnet's own error and change nothing."""
        before = self.ledger()
        try:
            action(*args, **kwargs)
        except NsnetError:
            assert self.ledger() == before

    @initialize()
    def start_from_a_working_network(self) -> None:
        self.engine.create_network("a", subnet="10.40.0.0/24")
        self.engine.create_sandbox("s1", networks=["a"], publish=["8080:80"])

    @rule(name=NETWORKS, subnet=SUBNETS, internal=st.booleans(), icc=st.booleans())
    def create_network(self, name, subnet, internal, icc) -> None:
        self.attempt(self.engine.create_network, name, subnet=subnet, internal=internal, icc=icc)

    @rule(name=NETWORKS, force=st.booleans())
    def remove_network(self, name, force) -> None:
        self.attempt(self.engine.remove_network, name, force=force)

    @rule(name=SANDBOXES, networks=st.lists(NETWORKS, max_size=2, unique=True), ip=IPS, ports=PORTS)
    def create_sandbox(self, name, networks, ip, ports) -> None:
        self.attempt(self.engine.create_sandbox, name, networks=networks or ["a"], ip=ip, publish=ports)

    @rule(network=NETWORKS, sandbox=SANDBOXES, ip=IPS, ports=PORTS)
    def connect(self, network, sandbox, ip, ports) -> None:
        self.attempt(self.engine.connect, network, sandbox, ip=ip, publish=ports)

    @rule(network=NETWORKS, sandbox=SANDBOXES)
    def disconnect(self, network, sandbox) -> None:
        self.attempt(self.engine.disconnect, network, sandbox)

    @rule(name=SANDBOXES, force=st.booleans())
    def remove_sandbox(self, name, force) -> None:
        self.attempt(self.engine.remove_sandbox, name, force=force)

    @precondition(lambda self: bool(self.engine.sandboxes()))
    @rule()
    def exec_in_a_sandbox(self) -> None:
        name = self.engine.sandboxes()[0].name
        assert self.engine.exec(name, ["sh", "-c", "exit 3"]) == 3

    @invariant()
    def ledger_and_kernel_agree(self) -> None:
        assert self.engine.check() == []

    def teardown(self) -> None:
        for sandbox in self.engine.sandboxes():
            self.engine.remove_sandbox(sandbox.name, force=True)
        for network in self.engine.networks():
            self.engine.remove_network(network.name, force=True)
        self.engine.close()
        shutil.rmtree(self.directory)
        assert wait_clean() == {"links": [], "netns": [], "tables": []}


Lifecycle.TestCase.settings = settings(
    max_examples=int(os.environ.get("NSNET_FUZZ_EXAMPLES", "12")),
    stateful_step_count=int(os.environ.get("NSNET_FUZZ_STEPS", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_random_operations_keep_ledger_and_kernel_in_agreement(state_dir: str) -> None:
    Lifecycle.TestCase("runTest").runTest()
