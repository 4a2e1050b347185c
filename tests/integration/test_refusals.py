"""Bad input and failures: one line on stderr, a non-zero exit, and nothing changed."""

from __future__ import annotations

import os
import sqlite3
import subprocess

import pytest

from nsnet import Engine, KernelError

from .conftest import cli, nsnet_objects
from .net import ip_json, run


def links(ns: str | None = None) -> list[tuple]:
    """What nsnet sets on links. Not what the kernel derives by itself: a bridge's carrier and its
    IPv6 link-local address come and go as ports are added and removed."""
    return [
        (link["ifname"], link["mtu"], link["address"], link.get("master"), "UP" in link["flags"],
         [(a["local"], a["prefixlen"]) for a in link["addr_info"] if a["family"] == "inet"])
        for link in ip_json("addr", ns=ns)
    ]


def routes(ns: str | None = None) -> list[tuple]:
    return [(r["dst"], r.get("gateway"), r.get("dev"), r.get("prefsrc")) for r in ip_json("route", ns=ns)]


def snapshot(state_dir: str) -> tuple:
    """Everything a command could change: links, addresses, routes, namespaces, rules, ledger."""
    ruleset = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    db = sqlite3.connect(os.path.join(state_dir, "state.db"))
    ledger = list(db.iterdump())
    db.close()
    namespaces = sorted(os.listdir("/run/netns"))
    in_sandboxes = [(links(n), routes(n)) for n in namespaces if n != "wan"]
    return links(), routes(), namespaces, in_sandboxes, ruleset, ledger


BAD_COMMANDS = [
    (("network", "create", "bad", "--subnet", "10.40.0.1/24"), "invalid subnet '10.40.0.1/24': host bits are set"),
    (("network", "create", "bad", "--subnet", "10.40.0.0/33"), "prefix length must be between 0 and 32"),
    (("network", "create", "bad", "--subnet", "10.40.0/24"), "is not an IP CIDR"),
    (("network", "create", "bad", "--subnet", "fe80::/64"), "overlaps the link-local range fe80::/10"),
    (("network", "create", "bad", "--subnet", "fd00::/64", "--subnet", "fd01::/64"),
     "invalid subnet 'fd01::/64': is a second IPv6 subnet: a network has at most one per family"),
    (("network", "create", "bad", "--subnet", "fd00::/127"), "is too small: a network needs at least a /126"),
    (("network", "create", "bad", "--subnet", "fd00::1/64"), "host bits are set (did you mean fd00::/64?)"),
    (("network", "create", "bad", "--no-ipv4"), "invalid --no-ipv4: a network needs IPv4 or IPv6: add --ipv6"),
    (("network", "create", "bad", "--ipv6-routed"), "invalid --ipv6-routed: needs IPv6"),
    (("network", "create", "bad", "--ipv6", "--mtu", "1200"), "IPv6 needs a link MTU of at least 1280"),
    (("network", "create", "bad", "--ipv6", "--gateway", "fd00::1"), "requires an IPv6 --subnet"),
    (("network", "create", "bad", "--subnet", "0.0.0.0/0"), "overlaps the 'this network' range 0.0.0.0/8"),
    (("network", "create", "bad", "--subnet", "127.0.0.0/24"), "overlaps the loopback range 127.0.0.0/8"),
    (("network", "create", "bad", "--subnet", "169.254.0.0/24"), "overlaps the link-local range"),
    (("network", "create", "bad", "--subnet", "224.0.0.0/24"), "overlaps the multicast range"),
    (("network", "create", "bad", "--subnet", "255.255.255.252/30"), "overlaps the reserved range 240.0.0.0/4"),
    (("network", "create", "bad", "--subnet", "10.40.0.0/24", "--ip-range", "10.40.0.1/32"),
     "invalid ip-range '10.40.0.1/32': leaves no address for sandboxes"),
    (("network", "create", "bad", "--subnet", "10.40.0.0/24", "--gateway", "10.41.0.1"), "outside the subnet"),
    (("network", "create", "bad", "--subnet", "10.31.0.0/16"), "overlaps network 'app'"),
    (("network", "create", "app", "--subnet", "10.42.0.0/24"), "network 'app' already exists"),
    (("network", "create", "../x"), "invalid network name '../x'"),
    (("network", "create", "/"), "invalid network name '/'"),
    (("network", "create", ""), "invalid network name '': must not be empty"),
    (("network", "create", "x" * 64), "is longer than 63 characters"),
    (("network", "create", "bad", "--mtu", "20"), "invalid mtu '20'"),
    (("network", "rm", "nope"), "no such network: 'nope'"),
    (("network", "rm", "app"), "has sandboxes attached (web)"),
    (("create", "web", "--network", "app"), "sandbox 'web' already exists"),
    (("create", "../etc", "--network", "app"), "invalid sandbox name '../etc'"),
    (("create", "s", "--network", "nope"), "no such network: 'nope'"),
    (("create", "s", "--network", "app", "--ip", "10.99.0.5"), "invalid ip '10.99.0.5': is outside the subnet"),
    (("create", "s", "--network", "app", "--ip", "10.31.0.2"), "ip 10.31.0.2 is already in use"),
    (("create", "s", "--network", "app", "--ip", "10.31.0.1"), "is the gateway"),
    (("create", "s", "--network", "app", "--ip", "fd00::5"), "invalid ip 'fd00::5': is an IPv6 address, not an IPv4"),
    (("create", "s", "--network", "app", "--ip6", "fd00::5"), "invalid ip6 'fd00::5': network 'app' has no IPv6"),
    (("create", "s", "--network", "app", "-p", "[::1]:8080:80"), "IPv6 has no route_localnet"),
    (("create", "s", "--network", "app", "-p", "[fd00::1]:8080:80"), "network 'app' has no IPv6"),
    (("create", "foreign", "--network", "app"), "a network namespace named 'foreign' exists and is not nsnet's"),
    (("create", "s", "--network", "app", "-p", "1-65535"),
     "65535 ports to publish on ephemeral host ports of 0.0.0.0/tcp, but the ephemeral range"),
    (("connect", "app", "web"), "already connected"),
    (("connect", "nope", "web"), "no such network: 'nope'"),
    (("disconnect", "app", "nope"), "no such sandbox: 'nope'"),
    (("exec", "nope", "--", "true"), "no such sandbox: 'nope'"),
    (("rm", "nope"), "no such sandbox: 'nope'"),
    (("inspect", "nope"), "no such sandbox: 'nope'"),
]


@pytest.fixture
def populated(state_dir: str, engine: Engine) -> str:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    run("ip", "netns", "add", "foreign")
    yield state_dir
    run("ip", "netns", "del", "foreign")


@pytest.mark.parametrize("argv, message", BAD_COMMANDS, ids=[" ".join(a)[:40] for a, _ in BAD_COMMANDS])
def test_bad_input_is_one_line_and_changes_nothing(populated: str, argv: tuple, message: str) -> None:
    before = snapshot(populated)

    result = cli(*argv)

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("nsnet: error: ")
    assert message in result.stderr
    assert snapshot(populated) == before


def test_usage_errors_are_one_line_with_exit_code_2(populated: str) -> None:
    before = snapshot(populated)

    result = cli("network", "create", "x", "--mtu", "big")

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "argument --mtu: invalid int value: 'big'" in result.stderr
    assert snapshot(populated) == before


def test_a_kernel_refusal_half_way_undoes_every_step(state_dir: str, engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    doomed = engine.create_network("doomed", subnet="10.32.0.0/24")
    # Out-of-band damage: the second network's bridge disappears, so attaching to it fails after
    # the namespace, the first veth, its address and its route were made.
    run("ip", "link", "del", doomed.bridge)
    before = snapshot(state_dir)

    with pytest.raises(KernelError, match=f"lookup of link {doomed.bridge}"):
        engine.create_sandbox("web", networks=["app", "doomed"])

    assert snapshot(state_dir) == before
    assert nsnet_objects()["netns"] == []
    assert [l["ifname"] for l in ip_json("link") if l["ifname"].startswith("nsv")] == []


@pytest.mark.parametrize(
    "program, code, reason",
    [("/etc/passwd", 126, "permission denied"), ("/etc", 126, "is a directory"),
     ("/nonexistent", 127, "command not found"), ("nsnet-no-such-command", 127, "command not found")],
)
def test_a_command_that_cannot_execute_is_one_line_with_the_shells_exit_code(populated: str, program: str, code: int,
                                                                             reason: str) -> None:
    namespaces = sorted(os.listdir("/run/netns"))

    ran = cli("run", "--rm", "--network", "app", "--", program)
    executed = cli("exec", "web", "--", program)

    assert (ran.returncode, ran.stdout, ran.stderr) == (code, "", f"nsnet: error: {program}: {reason}\n")
    assert (executed.returncode, executed.stdout, executed.stderr) == (code, "", f"nsnet: error: {program}: {reason}\n")
    assert cli("ps", "-q").stdout == "web\n"
    assert sorted(os.listdir("/run/netns")) == namespaces
