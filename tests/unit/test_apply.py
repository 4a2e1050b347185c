import errno
from dataclasses import dataclass
from ipaddress import IPv4Interface

import pytest

from nsnet.apply import apply, teardown
from nsnet.engine import Engine
from nsnet.errors import KernelError, NsnetError, TeardownError
from nsnet.kernel.fake import FakeKernel
from nsnet.plan.ops import (
    AddAddress,
    CreateBridge,
    CreateNetns,
    DeleteLink,
    DeleteNetns,
    EnsureSysctl,
    Operation,
    RemoveEtcFiles,
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
    lambda engine: engine.create_sandbox("web", networks=["front", "back"]),
    lambda engine: engine.create_sandbox("db", networks=["back"]),
    lambda engine: engine.connect("front", "db"),
]
STEP_CALLS = [4, 4, 8, 6, 2]
ADDRESSES = {"web": {"front": "10.1.0.2", "back": "10.2.0.2"}, "db": {"back": "10.2.0.3", "front": "10.1.0.3"}}


def addresses(engine: Engine) -> dict[str, dict[str, str]]:
    return {s.name: {e.network: str(e.address.ip) for e in s.endpoints} for s in engine.sandboxes()}


def failing_step(fail_at: int) -> int:
    total = 0
    for index, calls in enumerate(STEP_CALLS):
        total += calls
        if fail_at <= total:
            return index
    raise AssertionError(f"no step makes mutating call {fail_at}")


def test_scenario_makes_the_counted_mutating_calls(tmp_path, assert_matches_ledger):
    kernel = FakeKernel()
    with Engine(state_dir=str(tmp_path), kernel=kernel) as engine:
        for step, calls in zip(STEPS, STEP_CALLS):
            before = len(kernel.calls)
            step(engine)
            assert len(kernel.calls) - before == calls
        assert_matches_ledger(engine, kernel)
        assert addresses(engine) == ADDRESSES


@pytest.mark.parametrize("fail_at", range(1, sum(STEP_CALLS) + 1))
def test_failure_at_any_call_leaves_kernel_and_ledger_as_before(tmp_path, fail_at, kernel_state,
                                                                assert_matches_ledger):
    kernel = FakeKernel(fail_at=fail_at)
    index = failing_step(fail_at)
    with Engine(state_dir=str(tmp_path), kernel=kernel) as engine:
        for step in STEPS[:index]:
            step(engine)
        before = (kernel_state(kernel), engine.networks(), engine.sandboxes())
        with pytest.raises(KernelError) as caught:
            STEPS[index](engine)
        assert (caught.value.errno, caught.value.detail) == (errno.EPERM, "injected failure")
        assert (kernel_state(kernel), engine.networks(), engine.sandboxes()) == before
        assert_matches_ledger(engine, kernel)

        kernel.fail_at = None
        for step in STEPS[index:]:
            step(engine)
        assert_matches_ledger(engine, kernel)
        assert [n.name for n in engine.networks()] == ["front", "back"]
        assert addresses(engine) == ADDRESSES


def test_apply_runs_every_operation_in_order():
    kernel = FakeKernel()
    apply([CreateBridge("br0", 1500, "02:00:00:00:00:01"), AddAddress("br0", IPv4Interface("10.0.0.1/24"))], kernel)
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
        CreateBridge("br0", 1500, "02:00:00:00:00:01"),
        AddAddress("missing", IPv4Interface("10.0.0.1/24")),
    ]
    with pytest.raises(KernelError) as caught:
        apply(plan, kernel)
    assert caught.value.errno == errno.ENODEV
    assert kernel.calls[5:] == [("delete_link", "br0", None), ("remove_etc_files", "web"), ("delete_netns", "web")]
    assert kernel.empty


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
        apply([CreateBridge("br0", 1500, "02:00:00:00:00:01"), AddAddress("missing", IPv4Interface("10.0.0.1/24"))],
              kernel)
    assert caught.value.errno == errno.ENODEV
    assert caught.value.__notes__ == [
        "rollback also failed: kernel refused delete_link: injected failure (EPERM)"
    ]
    assert (None, "br0") in kernel.links


def test_rollback_ignores_objects_already_gone():
    kernel = FakeKernel()
    plan = [CreateBridge("br0", 1500, "02:00:00:00:00:01"), DeleteLink("br0"),
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

