"""`nsnet lab`: an isolated host that starts empty and leaves nothing running behind it."""

from __future__ import annotations

import subprocess

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
