"""Overlay networks across hosts, end to end: each scenario of cluster_scenarios.py runs in a
multi-host lab of its own (`nsnet lab --hosts N --etcd M`) made inside this test's lab, with
etcd, agents, sandboxes and traffic all inside it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import NSNET

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = {  # name -> (hosts, etcd members)
    "basic": (3, 1),
    "edges": (2, 1),
    "rogue_vxlan": (2, 1),
    "compaction": (3, 1),
    "joins_at_once": (2, 1),
    "agent_crash": (3, 1),
    "host_death": (3, 1),
    "evict_now": (2, 1),
    "etcd_down": (2, 1),
    "mtu_refusal": (2, 1),
    "fencing": (2, 1),
    "partition": (2, 3),
    "crash_create": (2, 1),
    "crash_leave": (3, 1),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scenario(scenario: str) -> None:
    hosts, members = SCENARIOS[scenario]
    env = {k: v for k, v in os.environ.items() if k != "NSNET_STATE_DIR"}
    done = subprocess.run([NSNET, "lab", "--hosts", str(hosts), "--etcd", str(members), "--", sys.executable, "-m",
                           "tests.integration.cluster_scenarios", scenario], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert done.stdout.strip().endswith(f"scenario {scenario}: ok")
