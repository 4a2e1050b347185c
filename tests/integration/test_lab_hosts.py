"""`nsnet lab --hosts N`: hosts that are isolated hosts of their own, joined only by the underlay,
with etcd inside; `lab exec` passes exit codes through; nothing is left when the lab ends."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import NSNET

SCRIPT = r"""
set -u
N="$1"
$N lab exec h1 -- hostname
$N lab exec h2 -- sh -c 'ip -4 -o addr show eth0 | tr -s " " | cut -d" " -f4'
$N lab exec h1 -- ip netns add only-h1
echo "h2 sees: $($N lab exec h2 -- ls /run/netns)"
echo "h1 sees: $($N lab exec h1 -- ls /run/netns)"
$N lab exec h1 -- python3 -c "import urllib.request; print(urllib.request.urlopen('http://10.99.0.10:2379/health', timeout=5).read().decode())"
$N lab exec h1 -- sh -c 'exit 7'; echo "exit $?"
$N lab exec h9 -- true; echo "exit $?"
echo "cluster $NSNET_CLUSTER hosts $NSNET_LAB_HOSTS"
"""


def test_hosts_are_isolated_but_for_the_underlay_and_etcd_answers() -> None:
    env = {k: v for k, v in os.environ.items() if k != "NSNET_STATE_DIR"}
    done = subprocess.run([NSNET, "lab", "--hosts", "2", "--", "sh", "-c", SCRIPT, "sh", NSNET], capture_output=True,
                          text=True, env=env, timeout=120)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    assert lines[0] == "h1" and lines[1] == "10.99.1.2/16"
    assert lines[2] == "h2 sees: "  # h2's /run/netns is its own: h1's namespace is not there
    assert lines[3] == "h1 sees: only-h1"
    assert '"health":"true"' in lines[4]
    assert lines[5:7] == ["exit 7", "exit 1"] and "h9" in done.stderr and "is no host" in done.stderr
    assert lines[7] == "cluster etcd://10.99.0.10:2379 hosts h1,h2"


def test_refusals_are_one_line() -> None:
    for argv, reason in ((["--etcd", "1"], "is for a lab of several hosts"), (["--hosts", "0", "--etcd", "2"],
                                                                                "is for a lab of several hosts"),
                         (["--hosts", "501"], "must be between 1 and 500")):
        done = subprocess.run([NSNET, "lab", *argv, "--", "true"], capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and reason in done.stderr and len(done.stderr.strip().splitlines()) == 1, \
            done.stderr
    outside = subprocess.run([sys.executable, "-m", "nsnet", "lab", "exec", "h1", "--", "true"], capture_output=True,
                             text=True, timeout=60)
    assert outside.returncode == 1 and "not inside a multi-host lab" in outside.stderr
