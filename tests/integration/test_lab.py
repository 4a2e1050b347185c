"""`nsnet lab`: an isolated host that starts empty and leaves nothing running behind it."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys

import pytest

from .conftest import NSNET


def lab(script: str) -> subprocess.CompletedProcess:
    return subprocess.run([NSNET, "lab", "--", "sh", "-c", script], capture_output=True, text=True, timeout=60)


def test_a_lab_starts_with_only_loopback_and_passes_the_exit_code_through() -> None:
    result = lab("ip -o link | cut -d: -f2; ls -A /run/netns /etc/netns | grep -v :; exit 7")

    assert result.returncode == 7
    assert result.stdout.split() == ["lo"]


def test_nothing_a_lab_started_outlives_it() -> None:
    marker = "31337"
    result = lab(f"{NSNET} create a >/dev/null && ip netns exec a sleep {marker}1 & "
                 f"ip netns add b && ip netns exec b sleep {marker}2 & sleep {marker}3 & sleep 0.5")

    assert result.returncode == 0
    left = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True).stdout
    assert left == ""


def processes_with_argv(argv: list[str]) -> list[int]:
    """pids (as this process sees them) whose command line is exactly argv."""
    wanted = "\0".join(argv).encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if entry.isdigit() and handle.read() == wanted:
                    found.append(int(entry))
        except OSError:
            continue
    return found


def wait_until_running(argv: list[str]) -> str:
    """Shell: wait (bounded) until $! has exec'd argv, then say whether it has."""
    runs = f"[ \"$(tr '\\0' ' ' < /proc/$!/cmdline 2>/dev/null)\" = '{' '.join(argv)} ' ]"
    return f"i=0; until {runs} || [ $i -ge 100 ]; do sleep 0.05; i=$((i+1)); done; {runs} && echo running"


@pytest.mark.parametrize("how", ["unshare -n", "nsnet exec, then the pin removed"])
def test_nothing_outlives_the_lab_in_a_namespace_the_lab_did_not_pin(how: str) -> None:
    argv = ["sleep", f"299.{os.getpid()}{len(how)}"]
    sleeper = f"{' '.join(argv)} >/dev/null 2>&1"  # a survivor must not hold the lab's output open
    if how == "unshare -n":
        script = f"unshare -n {sleeper} & {wait_until_running(argv)}"
    else:
        script = (f"{NSNET} create a >/dev/null && {{ {NSNET} exec a {sleeper} & "
                  f"{wait_until_running(argv)}; }} && ip netns del a && ! test -e /run/netns/a")
    try:
        result = lab(script)

        assert (result.returncode, result.stdout, result.stderr) == (0, "running\n", "")
        assert processes_with_argv(argv) == []
    finally:
        for pid in processes_with_argv(argv):
            os.kill(pid, signal.SIGKILL)


def test_isolation_is_proven_by_the_labs_pid_namespace_not_by_the_variable_alone() -> None:
    check = shlex.join([sys.executable, "-c", "from nsnet.lab import isolation_problem; print(isolation_problem())"])
    result = lab(f"{check}; NSNET_LAB=1 {check}; env -u NSNET_LAB {check}")

    assert result.stdout.splitlines() == [
        "None",
        "NSNET_LAB=1 does not name this process's pid namespace",
        "NSNET_LAB is not set",
    ]


def test_the_lab_has_a_resolv_conf_of_its_own_naming_no_reachable_server() -> None:
    from nsnet.dns import resolvconf

    with open("/etc/resolv.conf") as f:
        text = f.read()
    assert text.startswith("# nsnet lab: no upstream resolver") and resolvconf.parse(text).servers == ("192.0.2.53",)
    # A lookup fails at once rather than waiting on a server (glibc's 5 s per try).
    done = subprocess.run(["unshare", "-n", "getent", "hosts", "no-such-name.example"], capture_output=True, timeout=4)
    assert done.returncode == 2
