"""A host running the previous release (IPv4 only, ledger schema 4) upgrades: nothing is lost.

The previous release's code is taken from git (the last commit before the ledger changed shape)
and run with this interpreter; then this release opens its ledger, migrates it, and keeps every
network, sandbox, address and published port working.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from nsnet import Engine
from nsnet.store import SCHEMA_VERSION

from .conftest import WAN_HOST, WAN_PEER, cli
from .net import connect, exchange, serve

PREVIOUS_RELEASE = "ced4c70"  # issue 9's hardening, the last schema-4 release
REPO = Path(__file__).resolve().parents[2]


def previous_release(tmp_path: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", PREVIOUS_RELEASE, "src"], capture_output=True)
    assert archive.returncode == 0, archive.stderr.decode()  # CI clones the whole history
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive.stdout, check=True)
    return tmp_path / "src"


def old_nsnet(src: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([sys.executable, "-m", "nsnet", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_a_ledger_of_the_previous_release_is_migrated_and_keeps_working(tmp_path: Path, state_dir: str,
                                                                         wan: str) -> None:
    src = previous_release(tmp_path)
    for args in (("network", "create", "app", "--subnet", "10.31.0.0/24"),
                 ("network", "create", "back", "--subnet", "10.32.0.0/24", "--internal"),
                 ("create", "web", "--network", "app", "-p", "8080:80", "-p", "127.0.0.1:8081:81/udp"),
                 ("create", "db", "--network", "back"),
                 ("connect", "back", "web")):
        assert old_nsnet(src, *args).returncode == 0, args
    with sqlite3.connect(os.path.join(state_dir, "state.db")) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 4
    before = json.loads(old_nsnet(src, "inspect", "web", "db").stdout)

    with Engine(state_dir=state_dir) as engine:
        web, db = engine.sandbox("web"), engine.sandbox("db")
        assert [(e.network, [str(a) for a in e.addresses], e.mac, e.default_route) for e in web.endpoints] == [
            (n["Network"], [f"{n['IPAddress']}/{n['IPPrefixLen']}"], n["MacAddress"], n["DefaultRoute"])
            for n in before[0]["Networks"].values()]
        assert [str(p) for p in web.endpoint("app").ports] == ["80/tcp -> 0.0.0.0:8080", "81/udp -> 127.0.0.1:8081"]
        assert str(db.endpoint("back").address) == before[1]["Networks"]["back"]["IPAddress"] + "/24"
        assert [(n.name, [str(s.subnet) for s in n.subnets], n.internal) for n in engine.networks()] == [
            ("app", ["10.31.0.0/24"], False), ("back", ["10.32.0.0/24"], True)]
        # What this release adds to the ruleset (the IPv6 sets, chains and rules), and web's hosts
        # file naming it on its second network's address too, is all check finds; gc, or the next
        # `network create`, puts it in.
        drift = engine.check()
        assert drift and {d.subject for d in drift} == {"nftables", "/etc/netns/web/hosts"}
        assert "missing: nftables: inet set masq_subnets6" in [str(d) for d in drift]
        engine.gc()
        assert engine.check() == []
        # Round robin goes on where it stopped: the next address is not one handed out before.
        assert str(engine.create_sandbox("next", networks=["app"]).endpoint("app").address) == "10.31.0.3/24"
    with sqlite3.connect(os.path.join(state_dir, "state.db")) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION

    server = serve("web", "0.0.0.0", 80)
    try:
        assert connect(wan, WAN_HOST, 8080) == "hello from 0.0.0.0"
        assert server.peers() == [WAN_PEER]
    finally:
        server.stop()
    assert exchange("web", "db", "10.32.0.2", 5000)[0] == "hello from 10.32.0.2"
    assert cli("rm", "-f", "web", "db", "next").returncode == 0
    assert cli("network", "rm", "app", "back").returncode == 0
