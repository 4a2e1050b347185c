"""Random sequences of operations, valid and invalid, against the real kernel.

After every step `check` must find no difference between the ledger and the kernel, an
operation that was refused must have left the ledger exactly as it was, and one that succeeded
must have made what was asked (names, networks, addresses, ports) and nothing else. NSNET_FUZZ_EXAMPLES sets
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

from ipaddress import ip_address, ip_network

from nsnet import Engine, NsnetError
from nsnet.portspec import parse

from .conftest import wait_clean

# Mostly valid values, so that sequences build real state; some invalid, so refusals happen too.
NETWORKS = st.sampled_from(["a", "a", "b", "b", "c", "../x"])
SANDBOXES = st.sampled_from(["s1", "s2", "s2", "s3", "s3", "s4", "bad/name"])
# A list is one subnet per family; an IPv6 one alone makes a dual-stack network (IPv4 from the pool).
SUBNETS = st.sampled_from([None, None, None, "10.41.0.0/24", "10.40.0.0/16", "10.41.0.1/24", "10.42.0.0/31",
                           "127.0.0.0/24", "fd00::/64", ("10.43.0.0/24", "fd00:43::/64"), "fe80::/64",
                           ("fd00:44::/64", "fd00:45::/64")])
NEVER_ACCEPTED = {"10.41.0.1/24", "10.42.0.0/31", "127.0.0.0/24", "fe80::/64", ("fd00:44::/64", "fd00:45::/64")}
PORTS = st.one_of(st.just([]), st.just([]), st.lists(st.sampled_from(
    ["8080:80", "8081:81/udp", "127.0.0.1::90", "9000-9002:9000-9002", "80", "0:1", "[::1]:80:80"]), max_size=2))
IPS = st.sampled_from([None, None, None, None, "10.40.0.9", "10.41.0.9", "10.99.0.1", "not-an-ip", "fd00::9",
                       "fd00:43::9"])


def by_family(ip: str | None) -> dict[str, str | None]:
    """--ip for IPv4 (and nonsense), --ip6 for what looks like IPv6."""
    return {"ip6": ip} if ip and ":" in ip else {"ip": ip}


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

    def attempt(self, action, *args, **kwargs):
        """Run one operation; a refusal must be nsnet's own error and change nothing. Returns
        (True, result) on success, (False, None) on a refusal."""
        before = self.ledger()
        try:
            return True, action(*args, **kwargs)
        except NsnetError:
            assert self.ledger() == before
            return False, None

    def names(self) -> tuple[list[str], list[str]]:
        return [n.name for n in self.engine.networks()], [s.name for s in self.engine.sandboxes()]

    @initialize()
    def start_from_a_working_network(self) -> None:
        self.engine.create_network("a", subnet="10.40.0.0/24")
        self.engine.create_sandbox("s1", networks=["a"], publish=["8080:80"])

    @rule(name=NETWORKS, subnet=SUBNETS, internal=st.booleans(), icc=st.booleans())
    def create_network(self, name, subnet, internal, icc) -> None:
        networks_before = self.names()[0]
        ok, network = self.attempt(self.engine.create_network, name, subnet=subnet, internal=internal, icc=icc)
        if not ok:
            return
        assert subnet not in NEVER_ACCEPTED and name not in networks_before
        assert (network.name, network.internal, network.icc, network.state) == (name, internal, icc, "ready")
        asked = [ip_network(s) for s in ((subnet,) if isinstance(subnet, str) else subnet or ())]
        assert [s.version for s in network.subnets] == [4] + [6] * any(a.version == 6 for a in asked)
        assert all(a in [s.subnet for s in network.subnets] for a in asked)
        assert all(s.gateway == s.subnet.network_address + 1 for s in network.subnets)
        assert self.engine.network(name) == network
        assert self.names()[0] == networks_before + [name]

    @rule(name=NETWORKS, force=st.booleans())
    def remove_network(self, name, force) -> None:
        networks_before = self.names()[0]
        ok, _ = self.attempt(self.engine.remove_network, name, force=force)
        if ok:
            assert self.names()[0] == [n for n in networks_before if n != name]

    @rule(name=SANDBOXES, networks=st.lists(NETWORKS, max_size=2, unique=True), ip=IPS, ports=PORTS)
    def create_sandbox(self, name, networks, ip, ports) -> None:
        networks = networks or ["a"]
        ok, sandbox = self.attempt(self.engine.create_sandbox, name, networks=networks, publish=ports, **by_family(ip))
        if not ok:
            return
        assert [e.network for e in sandbox.endpoints] == networks
        assert [e.ifname for e in sandbox.endpoints] == [f"eth{i}" for i in range(len(networks))]
        self.assert_endpoint_as_asked(sandbox.endpoints[0], ip, ports)
        assert all(not e.ports for e in sandbox.endpoints[1:])
        assert self.engine.sandbox(name).endpoints == sandbox.endpoints

    def assert_endpoint_as_asked(self, endpoint, ip, ports) -> None:
        network = self.engine.network(endpoint.network)
        assert [a.version for a in endpoint.addresses] == [s.version for s in network.subnets]
        for address, s in zip(endpoint.addresses, network.subnets):
            assert address.ip in s.subnet and address.network == s.subnet
            assert address.ip not in (s.gateway, s.subnet.network_address, s.subnet.broadcast_address)
        if ip is not None:
            assert ip_address(ip) in [a.ip for a in endpoint.addresses]
        pairs = [(r, port) for r in (parse(spec) for spec in ports) for port in r.sandbox_ports]
        assert [(m.sandbox_port, m.protocol, m.host_ip) for m in endpoint.ports] == [
            (port, r.protocol, r.host_ip) for r, port in pairs]
        for (request, port), mapping in zip(pairs, endpoint.ports):
            if request.pick_one:
                assert mapping.host_port in request.host_ports
            elif request.host_ports is not None:
                assert mapping.host_port == request.host_ports[port - request.sandbox_ports.start]
            else:
                assert mapping.host_port in self.engine.kernel.ephemeral_ports()

    @rule(network=NETWORKS, sandbox=SANDBOXES, ip=IPS, ports=PORTS)
    def connect(self, network, sandbox, ip, ports) -> None:
        ok, endpoint = self.attempt(self.engine.connect, network, sandbox, publish=ports, **by_family(ip))
        if not ok:
            return
        assert (endpoint.sandbox, endpoint.network) == (sandbox, network)
        self.assert_endpoint_as_asked(endpoint, ip, ports)
        assert self.engine.sandbox(sandbox).endpoint(network) == endpoint

    @rule(network=NETWORKS, sandbox=SANDBOXES)
    def disconnect(self, network, sandbox) -> None:
        before = self.engine.sandbox(sandbox).endpoints if sandbox in self.names()[1] else ()
        ok, _ = self.attempt(self.engine.disconnect, network, sandbox)
        if ok:
            after = self.engine.sandbox(sandbox).endpoints
            assert [e.network for e in after] == [e.network for e in before if e.network != network]
            assert sum(e.default_route for e in after) <= 1

    @rule(name=SANDBOXES, force=st.booleans())
    def remove_sandbox(self, name, force) -> None:
        sandboxes_before = self.names()[1]
        ok, _ = self.attempt(self.engine.remove_sandbox, name, force=force)
        if ok:
            assert self.names()[1] == [s for s in sandboxes_before if s != name]

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
