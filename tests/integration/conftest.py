"""Integration tests: the real kernel, inside an isolated host made by `nsnet lab`.

They refuse to run on the real host. Each test gets a fresh state directory, and after each test
the host must hold nothing of nsnet's: no namespace, no nsbr-/nsv link, no nsnet table.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nsnet import Engine
from nsnet.lab import isolation_problem

from .net import ip_json, run

NSNET = str(Path(sys.executable).with_name("nsnet"))
WAN_HOST, WAN_PEER = "198.51.100.1", "198.51.100.2"
WAN6_HOST, WAN6_PEER = "2001:db8:100::1", "2001:db8:100::2"


@pytest.fixture(autouse=True, scope="session")
def isolated_host() -> None:
    problem = isolation_problem()
    if problem is not None:
        pytest.fail(f"integration tests run only inside an isolated host ({problem}):"
                    " .venv/bin/nsnet lab -- .venv/bin/python -m pytest", False)


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = str(tmp_path / "state")
    monkeypatch.setenv("NSNET_STATE_DIR", path)
    return path


def nsnet_objects() -> dict[str, list[str]]:
    links = [l["ifname"] for l in ip_json("link") if l["ifname"].startswith(("nsbr-", "nsv", "nst", "cni-"))]
    netns = sorted(n for n in os.listdir("/run/netns") if n != "wan") if os.path.isdir("/run/netns") else []
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    left = {"links": links, "netns": netns, "tables": [t for t in tables.splitlines() if "nsnet" in t]}
    resolvers = resolver_processes()
    return {**left, "resolvers": resolvers} if resolvers else left


def resolver_processes() -> list[str]:
    """nsnet's resolvers still running in the lab (one exits with its ledger's last DNS network)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"nsnet.dns.server" in argv:
            found.append(" ".join(a.decode(errors="replace") for a in argv if a))
    return found


def wait_clean(timeout: float = 3.0) -> dict[str, list[str]]:
    """What nsnet left; veths of a deleted namespace go a moment later, in the kernel's cleanup work."""
    deadline = time.monotonic() + timeout
    while True:
        left = nsnet_objects()
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@pytest.fixture
def engine(state_dir: str) -> Iterator[Engine]:
    with Engine(state_dir=state_dir) as eng:
        yield eng
        for sandbox in eng.sandboxes():
            eng.remove_sandbox(sandbox.name, force=True)
        for network in eng.networks():
            eng.remove_network(network.name, force=True)
    assert wait_clean() == {"links": [], "netns": [], "tables": []}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([NSNET, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def wan() -> Iterator[str]:
    """Another machine: namespace `wan` at 198.51.100.2 and 2001:db8:100::2, linked to the host's
    wan0 at .1 and ::1.

    It has no route back to any sandbox subnet, so only masquerade lets it answer a sandbox.
    """
    run("ip", "netns", "add", "wan")
    try:
        run("ip", "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", "wan")
        # No duplicate address detection on this link: a tentative link-local address delays the
        # first neighbour solicitation by a second.
        run("sysctl", "-qw", "net.ipv6.conf.wan0.accept_dad=0")
        run("ip", "netns", "exec", "wan", "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
        run("ip", "addr", "add", f"{WAN_HOST}/24", "dev", "wan0")
        run("ip", "addr", "add", f"{WAN6_HOST}/64", "dev", "wan0", "nodad")
        run("ip", "link", "set", "wan0", "up")
        run("ip", "-n", "wan", "addr", "add", f"{WAN_PEER}/24", "dev", "eth0")
        run("ip", "-n", "wan", "addr", "add", f"{WAN6_PEER}/64", "dev", "eth0", "nodad")
        run("ip", "-n", "wan", "link", "set", "eth0", "up")
        run("ip", "-n", "wan", "link", "set", "lo", "up")
        yield "wan"
    finally:
        run("ip", "link", "del", "wan0", check=False)
        run("ip", "netns", "del", "wan", check=False)


# macvlan networks (nsnet.drivers) on a parent made inside the isolated host: the veth `lanp`,
# whose other end is the LAN's machine `lanpeer` (192.168.77.100, fd77::100, and 203.0.113.9 beyond
# it as a router would have); the host itself is on that LAN too (192.168.77.50 on lanp).
LAN_PEER, LAN6_PEER, BEYOND, HOST_ON_LAN = "192.168.77.100", "fd77::100", "203.0.113.9", "192.168.77.50"


@pytest.fixture
def lan() -> Iterator[str]:
    run("ip", "netns", "add", "lanpeer")
    try:
        run("ip", "link", "add", "lanp", "type", "veth", "peer", "name", "eth0", "netns", "lanpeer")
        run("ip", "addr", "add", f"{HOST_ON_LAN}/24", "dev", "lanp")
        run("ip", "link", "set", "lanp", "up")
        run("ip", "-n", "lanpeer", "addr", "add", f"{LAN_PEER}/24", "dev", "eth0")
        run("ip", "-n", "lanpeer", "addr", "add", f"{LAN6_PEER}/64", "dev", "eth0", "nodad")
        run("ip", "-n", "lanpeer", "addr", "add", f"{BEYOND}/32", "dev", "lo")
        run("ip", "-n", "lanpeer", "link", "set", "eth0", "up")
        run("ip", "-n", "lanpeer", "link", "set", "lo", "up")
        yield "lanp"
    finally:
        run("ip", "link", "del", "lanp", check=False)
        run("ip", "netns", "del", "lanpeer", check=False)
