"""The CLI's lifecycle on the real kernel: what each verb makes, and that removal leaves nothing."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess

from nsnet import Engine

from .conftest import NSNET, cli, nsnet_objects, wait_clean
from .net import ip_json


def test_create_makes_the_kernel_objects_of_the_bridge_model(state_dir: str, engine: Engine) -> None:
    assert cli("network", "create", "app", "--subnet", "10.31.0.0/24", "--mtu", "1400").returncode == 0
    assert cli("create", "web", "--network", "app").returncode == 0
    network = engine.network("app")
    endpoint = engine.sandbox("web").endpoint("app")

    bridge = ip_json("addr", "show", "dev", network.bridge)[0]
    assert bridge["mtu"] == 1400
    assert bridge["address"] == "02:4e:0a:1f:00:01"
    assert [(a["local"], a["prefixlen"]) for a in bridge["addr_info"] if a["family"] == "inet"] == [("10.31.0.1", 24)]
    veth = ip_json("-d", "link", "show", "dev", endpoint.host_ifname)[0]
    assert veth["master"] == network.bridge
    assert veth["mtu"] == 1400
    assert "UP" in veth["flags"]
    eth0 = ip_json("addr", "show", "dev", "eth0", ns="web")[0]
    assert eth0["address"] == "02:4e:0a:1f:00:02"
    assert eth0["mtu"] == 1400
    assert [(a["local"], a["prefixlen"]) for a in eth0["addr_info"] if a["family"] == "inet"] == [("10.31.0.2", 24)]
    assert "UP" in ip_json("link", "show", "dev", "lo", ns="web")[0]["flags"]
    assert [(r["dst"], r.get("gateway")) for r in ip_json("route", ns="web")] == [
        ("default", "10.31.0.1"), ("10.31.0.0/24", None)]
    with open("/proc/sys/net/ipv4/ip_forward") as handle:
        assert handle.read().strip() == "1"


def test_full_lifecycle_leaves_nothing_behind(state_dir: str) -> None:
    steps = [
        ("network", "create", "app", "--subnet", "10.31.0.0/24"),
        ("network", "create", "other"),
        ("network", "create", "sealed", "--internal"),
        ("create", "web", "--network", "app"),
        ("create", "x", "--network", "other"),
        ("connect", "app", "x"),
        ("connect", "sealed", "x"),
        ("disconnect", "app", "x"),
        ("rm", "-f", "web", "x"),
        ("network", "rm", "app", "other", "sealed"),
    ]
    for step in steps:
        result = cli(*step)
        assert result.returncode == 0, (step, result.stderr)

    assert wait_clean() == {"links": [], "netns": [], "tables": []}
    db = sqlite3.connect(os.path.join(state_dir, "state.db"))
    assert [db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("networks", "sandboxes", "endpoints")] \
        == [0, 0, 0]
    assert os.listdir("/etc/netns") == []


def test_listings_and_inspect_in_table_and_json(state_dir: str, engine: Engine) -> None:
    cli("network", "create", "app", "--subnet", "10.31.0.0/24", "--label", "team=web")
    cli("create", "web", "--network", "app", "--ip", "10.31.0.50")

    networks = json.loads(cli("network", "ls", "--format", "json").stdout)
    sandboxes = json.loads(cli("ps", "--format", "json").stdout)
    inspected = json.loads(cli("inspect", "web").stdout)
    table = cli("ps").stdout.splitlines()

    assert [(n["Name"], n["Subnet"], n["Gateway"], n["Labels"]) for n in networks] == [
        ("app", "10.31.0.0/24", "10.31.0.1", {"team": "web"})]
    assert [s["Name"] for s in sandboxes] == ["web"]
    assert inspected[0]["Networks"]["app"]["IPAddress"] == "10.31.0.50"
    assert inspected[0]["Networks"]["app"]["MacAddress"] == "02:4e:0a:1f:00:32"
    assert table[0].split() == ["SANDBOX", "ID", "NAME", "NETWORKS", "IP", "ADDRESSES", "STATE"]
    assert table[1].split()[1:] == ["web", "app", "10.31.0.50", "ready"]
    assert cli("inspect", "web", "--format", "{{.Networks.app.IPAddress}}").stdout == "10.31.0.50\n"
    assert json.loads(cli("network", "inspect", "app").stdout)[0]["Bridge"] == engine.network("app").bridge


def test_default_network_is_made_on_first_use(state_dir: str, engine: Engine) -> None:
    assert cli("create", "lone").returncode == 0

    network = engine.network("nsnet")
    assert str(network.subnet) == "10.210.0.0/24"
    assert engine.sandbox("lone").endpoint("nsnet").address.ip in network.subnet


def test_auto_subnets_avoid_host_routes_and_each_other(state_dir: str, engine: Engine, wan: str) -> None:
    subprocess.run(["ip", "route", "add", "10.210.0.0/24", "dev", "wan0"], check=True)

    first = engine.create_network("one")
    second = engine.create_network("two")

    assert (str(first.subnet), str(second.subnet)) == ("10.210.1.0/24", "10.210.2.0/24")


def test_exec_passes_the_exit_code_and_shows_the_sandbox(state_dir: str, engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])

    assert cli("exec", "web", "--", "sh", "-c", "exit 7").returncode == 7
    addresses = cli("exec", "web", "--", "ip", "-brief", "address").stdout
    assert [line.split()[0] for line in addresses.splitlines()] == ["lo", "eth0@if" + str(
        ip_json("link", "show", "dev", engine.sandbox("web").endpoint("app").host_ifname)[0]["ifindex"])]
    assert "10.31.0.2\tweb" in cli("exec", "web", "--", "cat", "/etc/hosts").stdout
    assert os.listdir("/sys/class/net") != sorted(cli("exec", "web", "--", "ls", "/sys/class/net").stdout.split())
    assert cli("exec", "web", "--", "no-such-command-here").returncode == 127
    assert Engine(state_dir=state_dir).exec("web", ["sh", "-c", "exit 5"]) == 5


def test_run_removes_its_sandbox_and_passes_the_exit_code(state_dir: str, engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")

    result = subprocess.run([NSNET, "run", "--rm", "--network", "app", "--", "sh", "-c",
                             "ip -brief address show eth0; exit 3"], capture_output=True, text=True)

    assert result.returncode == 3
    assert "10.31.0.2/24" in result.stdout
    assert engine.sandboxes() == []
    assert nsnet_objects()["netns"] == []


def test_run_without_rm_keeps_the_named_sandbox(state_dir: str, engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")

    assert cli("run", "--name", "keep", "--network", "app", "--", "true").returncode == 0

    assert [s.name for s in engine.sandboxes()] == ["keep"]


def test_rm_refuses_a_sandbox_with_processes_unless_forced(state_dir: str, engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])
    sleeper = engine.popen("web", ["sleep", "60"])
    try:
        refused = cli("rm", "web")
        assert refused.returncode == 1
        assert refused.stderr == "nsnet: error: sandbox 'web' has 1 running process(es); stop them or use -f\n"
        assert os.path.exists("/run/netns/web")

        assert cli("rm", "-f", "web").returncode == 0
        assert sleeper.wait(timeout=5) == -9
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
    assert engine.sandboxes() == []


def test_network_rm_with_sandboxes_needs_force(state_dir: str, engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"])

    refused = cli("network", "rm", "app")
    assert refused.returncode == 1
    assert "has sandboxes attached (web)" in refused.stderr
    assert engine.network("app").state == "ready"

    assert cli("network", "rm", "-f", "app").returncode == 0
    assert engine.networks() == []
    assert engine.sandbox("web").endpoints == ()
    assert [l["ifname"] for l in ip_json("link", ns="web")] == ["lo"]


def test_network_prune_removes_unused_networks(state_dir: str, engine: Engine) -> None:
    engine.create_network("used", subnet="10.31.0.0/24")
    engine.create_network("idle", subnet="10.32.0.0/24")
    engine.create_sandbox("web", networks=["used"])

    assert cli("network", "prune").stdout == "idle\n"
    assert [n.name for n in engine.networks()] == ["used"]
