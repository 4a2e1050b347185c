import errno
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest
from conftest import NftKernel, nft_state

from nsnet.apply import apply, teardown
from nsnet.engine import Engine
from nsnet.errors import KernelError, NsnetError, TeardownError
from nsnet.kernel.fake import FakeKernel
from nsnet.model import Owner
from nsnet.plan.ops import (
    AddAddress,
    AddFdbEntry,
    CreateBridge,
    CreateNetns,
    CreateVeth,
    DisableIPv6,
    DeleteLink,
    DeleteNetns,
    EnsureSysctl,
    Operation,
    RemoveEtcFiles,
    RemoveFirewallElements,
    SetDefaultRoute,
    SetLinkUp,
    SetPortFlags,
    WriteEtcFiles,
)


@dataclass(frozen=True)
class Raise(Operation):
    error: BaseException

    def run(self, kernel: FakeKernel) -> None:
        raise self.error


STEPS = [
    lambda engine: engine.create_network("front", subnet="10.1.0.0/24"),
    lambda engine: engine.create_network("back", subnet="10.2.0.0/24", icc=False),
    lambda engine: engine.create_sandbox("web", networks=["front", "back"], publish=["8080:80", "127.0.0.1::90/udp"]),
    lambda engine: engine.create_sandbox("db", networks=["back"]),
    lambda engine: engine.connect("front", "db", publish=["8081:81"]),
]
# A network: ip_forward, bridge, its two sysctls, gateway address, rules. A sandbox: netns, /etc
# files, rules (published ports are elements of that one transaction: they add no call), then per
# endpoint veth, port flags, FDB entry, IPv6 off, peer up, address, and the default route once. A
# connect rewrites the sandbox's hosts file (its name on the new address too) and, to a DNS
# network, its resolv.conf, which then names both gateways.
STEP_CALLS = [6, 6, 3 + 6 + 1 + 6, 3 + 6 + 1, 1 + 6 + 1 + 1]
ADDRESSES = {"web": {"front": "10.1.0.2", "back": "10.2.0.2"}, "db": {"back": "10.2.0.3", "front": "10.1.0.3"}}
PORTS = {"web": ["80/tcp -> 0.0.0.0:8080", "90/udp -> 127.0.0.1:32768"], "db": ["81/tcp -> 0.0.0.0:8081"]}


def addresses(engine: Engine) -> dict[str, dict[str, str]]:
    return {s.name: {e.network: str(e.address.ip) for e in s.endpoints} for s in engine.sandboxes()}


def ports(engine: Engine) -> dict[str, list[str]]:
    return {s.name: [str(p) for p in engine.ports(s.name)] for s in engine.sandboxes()}


def ports_table(state_dir: Path) -> list[tuple]:
    """The ledger's ports table itself, rows without an endpoint included."""
    with closing(sqlite3.connect(state_dir / "state.db")) as db:
        return db.execute("SELECT * FROM ports ORDER BY rowid").fetchall()


def failing_step(fail_at: int) -> int:
    total = 0
    for index, calls in enumerate(STEP_CALLS):
        total += calls
        if fail_at <= total:
            return index
    raise AssertionError(f"no step makes mutating call {fail_at}")


def fresh_kernel(fail_at: int | None = None) -> NftKernel:
    """A host with forwarding off, as it boots."""
    kernel = NftKernel(fail_at=fail_at)
    kernel.sysctls["net.ipv4.ip_forward"] = "0"
    return kernel


def test_scenario_makes_the_counted_mutating_calls(tmp_path, assert_matches_ledger):
    kernel = fresh_kernel()
    with Engine(state_dir=str(tmp_path), kernel=kernel) as engine:
        for step, calls in zip(STEPS, STEP_CALLS):
            before = len(kernel.calls)
            step(engine)
            assert len(kernel.calls) - before == calls
        assert_matches_ledger(engine, kernel)
        assert addresses(engine) == ADDRESSES
        assert ports(engine) == PORTS
        assert len(ports_table(tmp_path)) == 3


@pytest.mark.parametrize("fail_at", range(1, sum(STEP_CALLS) + 1))
def test_failure_at_any_call_leaves_kernel_and_ledger_as_before(tmp_path, fail_at, kernel_state,
                                                                assert_matches_ledger):
    kernel = fresh_kernel(fail_at)
    index = failing_step(fail_at)
    with Engine(state_dir=str(tmp_path), kernel=kernel) as engine:
        for step in STEPS[:index]:
            step(engine)
        before = (kernel_state(kernel), engine.networks(), engine.sandboxes(), ports_table(tmp_path))
        with pytest.raises(KernelError) as caught:
            STEPS[index](engine)
        assert (caught.value.errno, caught.value.detail) == (errno.EPERM, "injected failure")
        assert (kernel_state(kernel), engine.networks(), engine.sandboxes(), ports_table(tmp_path)) == before
        assert kernel.sysctls["net.ipv4.ip_forward"] == ("0" if index == 0 else "1")
        assert_matches_ledger(engine, kernel)

        kernel.fail_at = None
        for step in STEPS[index:]:
            step(engine)
        assert_matches_ledger(engine, kernel)
        assert [n.name for n in engine.networks()] == ["front", "back"]
        assert addresses(engine) == ADDRESSES
        assert ports(engine) == PORTS


GROUP = Owner().group


def test_apply_runs_every_operation_in_order():
    kernel = FakeKernel()
    apply([CreateBridge("br0", 1500, "02:00:00:00:00:01", GROUP), AddAddress("br0", IPv4Interface("10.0.0.1/24"))],
          kernel)
    assert kernel.calls == [
        ("create_bridge", "br0", 1500, "02:00:00:00:00:01"),
        ("add_address", "br0", "10.0.0.1/24", None),
    ]


def test_apply_undoes_completed_operations_in_reverse():
    kernel = FakeKernel()
    plan = [
        EnsureSysctl("net.ipv4.ip_forward", "1"),
        CreateNetns("web"),
        WriteEtcFiles("web", (("hosts", "x"),)),
        CreateBridge("br0", 1500, "02:00:00:00:00:01", GROUP),
        AddAddress("missing", IPv4Interface("10.0.0.1/24")),
    ]
    kernel.sysctls["net.ipv4.ip_forward"] = "0"
    with pytest.raises(KernelError) as caught:
        apply(plan, kernel)
    assert caught.value.errno == errno.ENODEV
    assert kernel.calls[5:] == [("delete_link", "br0", None), ("remove_etc_files", "web"), ("delete_netns", "web"),
                                ("write_sysctl", "net.ipv4.ip_forward", "0")]
    assert kernel.empty
    assert kernel.sysctls == {"net.ipv4.ip_forward": "0"}


def test_a_sysctl_that_had_the_value_already_is_left_alone_by_rollback():
    kernel = FakeKernel()
    kernel.sysctls["net.ipv4.ip_forward"] = "1"
    with pytest.raises(KernelError):
        apply([EnsureSysctl("net.ipv4.ip_forward", "1"), AddAddress("missing", IPv4Interface("10.0.0.1/24"))], kernel)
    assert kernel.calls == [("ensure_sysctl", "net.ipv4.ip_forward", "1"),
                            ("add_address", "missing", "10.0.0.1/24", None)]
    assert kernel.sysctls == {"net.ipv4.ip_forward": "1"}


VETH = CreateVeth("nsv0", "br0", "web", "eth0", 1500, "02:4e:0a:00:00:02", GROUP)
AFTER_VETH = [SetPortFlags("nsv0", isolated=True), AddFdbEntry("nsv0", "02:4e:0a:00:00:02"), DisableIPv6("nsv0"),
              SetLinkUp("eth0", "web"), AddAddress("eth0", IPv4Interface("10.0.0.2/24"), "web"),
              SetDefaultRoute("web", IPv4Address("10.0.0.1"), "eth0")]


@pytest.mark.parametrize("failing", range(len(AFTER_VETH)))
def test_a_failure_after_the_veth_exists_deletes_the_pair(failing):
    """CreateVeth is one kernel change and the port's flags, FDB entry, IPv6, link state, address and
    route each their own: whichever fails, the pair goes (and the peer's address and route with it)."""
    kernel = FakeKernel()
    kernel.netns.add("web")
    kernel.links[(None, "br0")] = {"kind": "bridge", "mtu": 1500, "mac": "02:4e:0a:00:00:01", "group": GROUP,
                                   "up": True}
    before = {"links": dict(kernel.links), "addresses": set(kernel.addresses), "routes": dict(kernel.routes)}
    kernel.fail_at = 2 + failing
    with pytest.raises(KernelError) as caught:
        apply([VETH, *AFTER_VETH, Raise(AssertionError("not reached"))], kernel)
    assert caught.value.detail == "injected failure"
    assert kernel.calls[-1] == ("delete_link", "nsv0", None)
    assert {"links": kernel.links, "addresses": kernel.addresses, "routes": kernel.routes} == before


def test_apply_rolls_back_and_reraises_keyboard_interrupt():
    kernel = FakeKernel()
    with pytest.raises(KeyboardInterrupt):
        apply([CreateNetns("web"), Raise(KeyboardInterrupt())], kernel)
    assert kernel.empty


def test_apply_wraps_foreign_exceptions_in_nsnet_error():
    kernel = FakeKernel()
    boom = RuntimeError("boom")
    with pytest.raises(NsnetError) as caught:
        apply([CreateNetns("web"), Raise(boom)], kernel)
    assert type(caught.value) is NsnetError
    assert str(caught.value) == "RuntimeError: boom"
    assert caught.value.__cause__ is boom
    assert kernel.empty


def test_apply_notes_a_failed_rollback_and_raises_the_original_error():
    kernel = FakeKernel(fail_at=3)
    with pytest.raises(KernelError) as caught:
        apply([CreateBridge("br0", 1500, "02:00:00:00:00:01", GROUP),
               AddAddress("missing", IPv4Interface("10.0.0.1/24"))], kernel)
    assert caught.value.errno == errno.ENODEV
    assert caught.value.__notes__ == [
        "rollback also failed: kernel refused delete_link: injected failure (EPERM)"
    ]
    assert (None, "br0") in kernel.links


def test_rollback_ignores_objects_already_gone():
    kernel = FakeKernel()
    plan = [CreateBridge("br0", 1500, "02:00:00:00:00:01", GROUP), DeleteLink("br0"),
            AddAddress("br0", IPv4Interface("10.0.0.1/24"))]
    with pytest.raises(KernelError) as caught:
        apply(plan, kernel)
    assert not hasattr(caught.value, "__notes__")
    assert kernel.calls[-1] == ("delete_link", "br0", None)
    assert kernel.empty


def test_teardown_ignores_objects_already_gone():
    kernel = FakeKernel()
    teardown([DeleteLink("nsv000000000000"), DeleteNetns("web"), RemoveEtcFiles("web")], kernel, "removing web")
    assert [call[0] for call in kernel.calls] == ["delete_link", "delete_netns", "remove_etc_files"]


def test_teardown_continues_past_errors_and_lists_them_all():
    kernel = FakeKernel(fail_at=1)
    kernel.netns.add("web")
    kernel.etc["web"] = {"hosts": ""}
    with pytest.raises(TeardownError) as caught:
        teardown([RemoveEtcFiles("web"), Raise(OSError("disk on fire")), DeleteLink("gone"), DeleteNetns("web")],
                 kernel, "removing sandbox 'web'")
    errors = caught.value.errors
    assert [type(e) for e in errors] == [KernelError, OSError]
    assert str(caught.value) == (
        "removing sandbox 'web' finished with 2 error(s): "
        "kernel refused remove_etc_files: injected failure (EPERM); disk on fire"
    )
    assert kernel.netns == set()


@pytest.mark.parametrize("code", [errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL])
def test_kernel_error_gone_codes(code):
    assert KernelError("deletion", code).gone


@pytest.mark.parametrize("code", [errno.EPERM, errno.EEXIST, errno.EBUSY])
def test_kernel_error_other_codes_are_not_gone(code):
    assert not KernelError("deletion", code).gone


def test_kernel_error_message_names_operation_and_errno():
    assert str(KernelError("creation of bridge br0", errno.EEXIST)) == (
        "kernel refused creation of bridge br0: File exists (EEXIST)"
    )
    assert str(KernelError("adding 10.0.0.1/24", errno.EINVAL, "bad prefix")) == (
        "kernel refused adding 10.0.0.1/24: bad prefix (EINVAL)"
    )



def element(verb: str, name: str, *elem: object) -> dict:
    return {verb: {"element": {"family": "inet", "table": "nsnet", "name": name, "elem": list(elem)}}}


SKELETON = [
    {"add": {"table": {"family": "inet", "name": "nsnet"}}},
    {"add": {"set": {"family": "inet", "table": "nsnet", "name": "bridges", "type": "ifname"}}},
    {"add": {"map": {"family": "inet", "table": "nsnet", "name": "ports", "type": "inet_service",
                     "map": "inet_service"}}},
    element("add", "bridges", "br0", "br1"),
    element("add", "ports", [8080, 80], [8081, 81]),
]


class ScriptedNft(FakeKernel):
    """nft raises the given errors in turn (None: succeeds) and records each transaction."""

    def __init__(self, *errors: KernelError | None) -> None:
        super().__init__()
        self.errors = list(errors)

    def nft(self, commands: list) -> None:
        self.nft_log.append(commands)
        error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise error


def test_remove_firewall_elements_is_one_transaction_when_all_are_there():
    kernel = NftKernel()
    kernel.nft(SKELETON)
    deletes = (element("delete", "bridges", "br0"), element("delete", "ports", 8080))
    RemoveFirewallElements(deletes, "rules of br0").run(kernel)
    assert kernel.nft_log[1:] == [list(deletes)]
    assert nft_state(kernel.nft_log)[("inet", "nsnet")] == {"bridges": {'"br1"'}, "ports": {"8081": "81"}}


def test_remove_firewall_elements_retries_one_by_one_when_some_are_gone():
    kernel = NftKernel()
    kernel.nft(SKELETON)
    deletes = (element("delete", "bridges", "br0"), element("delete", "bridges", "gone"),
               element("delete", "ports", 8080), element("delete", "ports", 9999))
    RemoveFirewallElements(deletes, "rules of br0").run(kernel)
    assert kernel.calls[1:] == [("nft", 4), ("nft", 1), ("nft", 1), ("nft", 1), ("nft", 1)]
    assert kernel.nft_log[1:] == [[deletes[0]], [deletes[2]]]
    assert nft_state(kernel.nft_log)[("inet", "nsnet")] == {"bridges": {'"br1"'}, "ports": {"8081": "81"}}


def test_remove_firewall_elements_raises_other_errors_without_retrying():
    refused = KernelError("nft transaction", errno.EPERM)
    kernel = ScriptedNft(refused)
    deletes = (element("delete", "bridges", "br0"), element("delete", "bridges", "br1"))
    with pytest.raises(KernelError) as caught:
        RemoveFirewallElements(deletes).run(kernel)
    assert caught.value is refused
    assert kernel.nft_log == [list(deletes)]


def test_remove_firewall_elements_raises_an_other_error_met_while_retrying():
    refused = KernelError("nft transaction", errno.EBUSY)
    kernel = ScriptedNft(KernelError("nft transaction", errno.ENOENT), KernelError("nft transaction", errno.ENOENT),
                         refused)
    deletes = (element("delete", "bridges", "br0"), element("delete", "bridges", "br1"),
               element("delete", "bridges", "br2"))
    with pytest.raises(KernelError) as caught:
        RemoveFirewallElements(deletes).run(kernel)
    assert caught.value is refused
    assert kernel.nft_log == [list(deletes), [deletes[0]], [deletes[1]]]


def test_teardown_lists_a_refused_element_removal_and_goes_on():
    kernel = ScriptedNft(KernelError("nft transaction", errno.EPERM))
    kernel.netns.add("web")
    with pytest.raises(TeardownError) as caught:
        teardown([RemoveFirewallElements((element("delete", "bridges", "br0"),)), DeleteNetns("web")], kernel,
                 "removing sandbox 'web'")
    assert [e.errno for e in caught.value.errors] == [errno.EPERM]
    assert kernel.netns == set()


def test_the_nft_model_refuses_what_nft_refuses_and_then_applies_nothing():
    kernel = NftKernel()
    kernel.nft(SKELETON)
    for commands, code in (
        ([element("delete", "bridges", "br0"), element("delete", "bridges", "gone")], errno.ENOENT),
        ([element("delete", "ports", 8080), element("add", "ports", [8081, 82])], errno.EEXIST),
        ([element("add", "nosuchset", "x")], errno.ENOENT),
        ([{"delete": {"table": {"family": "bridge", "name": "nsnet"}}}], errno.ENOENT),
    ):
        with pytest.raises(KernelError) as caught:
            kernel.nft(commands)
        assert caught.value.errno == code
    assert kernel.nft_log == [SKELETON]
    kernel.nft([element("add", "ports", [8081, 81]), element("add", "bridges", "br0")])  # already there: no error
    assert nft_state(kernel.nft_log)[("inet", "nsnet")] == {"bridges": {'"br0"', '"br1"'},
                                                            "ports": {"8080": "80", "8081": "81"}}
