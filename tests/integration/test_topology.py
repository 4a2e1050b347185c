"""Topology files on the real kernel: `up` makes a lab whose cables and routes carry real TCP, `up`
again changes nothing, an edited file converges exactly, `--dry-run` and a bad file change nothing,
`verify` probes every expectation for real (exit 1 naming a miss), `down` leaves nothing, and two
topologies (and a sandbox of no topology) keep to their own."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from nsnet import Engine

from .conftest import NSNET, cli, nsnet_objects, wait_clean
from .net import blocked, exchange, ip_json

LAB = """\
name: lab
networks:
  front: {subnet: 10.50.0.0/24}
  back:  {subnet: 10.51.0.0/24}
sandboxes:
  client: {networks: [front]}
  router: {networks: [front]}
  web:    {networks: [back], ip: 10.51.0.10, publish: ["8080:80"]}
  db:     {networks: [back]}
links:
  - {a: client, b: router, ip: {client: 10.60.1.1/30, router: 10.60.1.2/30}}
  - {a: router, b: web, ip: {router: 10.60.2.1/30, web: 10.60.2.2/30}}
routes:
  - {sandbox: client, dst: 10.60.2.0/30, via: 10.60.1.2}
  - {sandbox: web, dst: 10.60.1.0/30, via: 10.60.2.1}
  - {sandbox: router, dst: 10.51.0.0/24, via: 10.60.2.2}
expect:
  - {from: client, reach: "web:80/tcp"}
  - {from: client, reach: "web"}
  - {from: client, reach: "10.50.0.1:8080/tcp"}
  - {from: db, reach: "web:5432/tcp"}
  - {from: db, reach: "web:53/udp"}
  - {from: client, not_reach: "10.51.0.10:80/tcp"}
"""


def write(tmp_path: Path, text: str, name: str = "lab.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def ledger(state_dir: str) -> list:
    """The ledger's rows of every table that a topology touches, for before/after comparisons."""
    import sqlite3

    db = sqlite3.connect(os.path.join(state_dir, "state.db"))
    try:
        return [db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                for t in ("networks", "sandboxes", "endpoints", "addresses", "ports", "links", "routes",
                          "topology_objects")]
    finally:
        db.close()


def kernel() -> dict:
    """What the kernel holds: links, namespaces and nsnet's nftables elements."""
    ruleset = subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
    return {"links": sorted(l["ifname"] for l in ip_json("link")), "objects": nsnet_objects(),
            "nft": json.loads(ruleset)}


def test_a_lab_comes_up_carries_traffic_converges_verifies_and_goes_down(engine: Engine, state_dir: str,
                                                                           tmp_path: Path) -> None:
    path = write(tmp_path, LAB)
    done = cli("up", "--dry-run", path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "+ create network front", "+ create network back", "+ create sandbox client", "+ create sandbox router",
        "+ create sandbox web", "+ create sandbox db", "+ link client router", "+ link router web",
        "+ route client 10.60.2.0/30 via 10.60.1.2", "+ route web 10.60.1.0/30 via 10.60.2.1",
        "+ route router 10.51.0.0/24 via 10.60.2.2"]
    assert engine.sandboxes() == [] and nsnet_objects()["netns"] == []
    done = cli("up", path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "+ route router 10.51.0.0/24 via 10.60.2.2"
    assert done.stderr == ""  # no bar when stderr is not a terminal

    # Real TCP: over the cable, through the router (the source kept: routed), on a shared network.
    assert exchange("client", "router", "10.60.1.2", 7200) == ("hello from 10.60.1.2", ["10.60.1.1"])
    assert exchange("client", "web", "10.60.2.2", 7201) == ("hello from 10.60.2.2", ["10.60.1.1"])
    assert exchange("db", "web", "10.51.0.10", 7202)[0] == "hello from 10.51.0.10"
    # Networks stay isolated from each other: front's client cannot use back's bridge (with the
    # positive control: db, on back, can).
    assert blocked("client", "web", "10.51.0.10", 7203)

    before = (ledger(state_dir), kernel())
    done = cli("up", path)
    assert (done.returncode, done.stdout) == (0, "topology lab: up to date\n")
    assert (ledger(state_dir), kernel()) == before

    done = cli("verify", path)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = done.stdout.splitlines()
    assert rows[0].split() == ["FROM", "TO", "EXPECT", "RESULT", "DETAIL"]
    assert [r.split()[:4] for r in rows[1:]] == [
        ["client", "web:80/tcp", "reach", "ok"], ["client", "web", "reach", "ok"],
        ["client", "10.50.0.1:8080/tcp", "reach", "ok"], ["db", "web:5432/tcp", "reach", "ok"],
        ["db", "web:53/udp", "reach", "ok"], ["client", "10.51.0.10:80/tcp", "not", "reach"]]
    assert rows[1].endswith("10.60.2.2:80 connected (verify's listener)")  # through the router
    assert rows[6].split()[4] == "ok"
    assert not engine.kernel.pids_in_netns("web")  # verify's listeners are threads of its own: gone

    # A real service on the port: verify connects to it rather than listening itself.
    server = subprocess.Popen(["ip", "netns", "exec", "web", "python3", "-c",
                               "import socket,time; s=socket.create_server(('0.0.0.0', 80)); time.sleep(30)"])
    try:
        from .net import eventually

        assert eventually(lambda: subprocess.run(["ip", "netns", "exec", "web", "ss", "-Hltn", "sport = :80"],
                                                 capture_output=True, text=True).stdout.strip() != "")
        done = cli("verify", path)
        assert done.returncode == 0, done.stdout
        assert done.stdout.splitlines()[1].endswith("10.60.2.2:80 connected (a service's port)")
    finally:
        server.kill()
        server.wait()

    # A failing expectation: exit 1, named in the table.
    failing = write(tmp_path, LAB.replace('  - {from: client, reach: "web"}\n',
                                          '  - {from: client, reach: "db:80/tcp"}\n'), "failing.yaml")
    done = cli("verify", failing)
    assert done.returncode == 1
    miss = [r for r in done.stdout.splitlines() if "MISS" in r]
    assert len(miss) == 1 and miss[0].split()[:4] == ["client", "db:80/tcp", "reach", "MISS"]
    assert done.stderr == "nsnet: 1 of 6 expectation(s) missed\n"

    # Edited: db goes, cache comes, the router joins a new network; --dry-run first changes nothing.
    edited = LAB.replace("  db:     {networks: [back]}\n", "  cache:  {networks: [back]}\n")
    edited = edited.replace("  back:  {subnet: 10.51.0.0/24}\n",
                            "  back:  {subnet: 10.51.0.0/24}\n  side:  {subnet: 10.52.0.0/24}\n")
    edited = edited.replace("  router: {networks: [front]}\n", "  router: {networks: [front, side]}\n")
    edited = edited.replace("from: db,", "from: cache,")
    write(tmp_path, edited)
    before = (ledger(state_dir), kernel())
    done = cli("up", "--dry-run", path)
    plan = ["- remove sandbox db", "+ create network side", "+ create sandbox cache", "~ connect router to side"]
    assert done.stdout.splitlines() == plan
    assert (ledger(state_dir), kernel()) == before
    done = cli("up", path)
    assert done.stdout.splitlines() == plan
    assert sorted(s.name for s in engine.sandboxes()) == ["cache", "client", "router", "web"]
    assert [e.network for e in engine.sandbox("router").endpoints] == ["front", "side"]
    assert [a["ifname"] for a in ip_json("link", ns="router")] == ["lo", "eth0", "client", "web", "eth1"]
    assert not os.path.exists("/run/netns/db")
    assert exchange("cache", "web", "10.51.0.10", 7205)[0] == "hello from 10.51.0.10"
    assert exchange("client", "web", "10.60.2.2", 7206) == ("hello from 10.60.2.2", ["10.60.1.1"])
    assert cli("up", path).stdout == "topology lab: up to date\n"
    done = cli("verify", path)
    assert done.returncode == 0, done.stdout
    assert cli("check").stdout == ""

    done = cli("down", path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-3:] == ["- remove network back", "- remove network front", "- remove network side"]
    assert wait_clean(timeout=15) == {"links": [], "netns": [], "tables": []}
    assert all(rows == [] for rows in ledger(state_dir))
    assert cli("down", path).stdout == "topology lab: nothing to remove\n"


def test_a_bad_file_gets_every_error_with_its_line_and_nothing_is_made(engine: Engine, state_dir: str,
                                                                       tmp_path: Path) -> None:
    path = write(tmp_path, """\
        networks:
          front: {subnet: 10.50.0.0/24, mtu: 10}
        sandboxes:
          a: {networks: [front, nowhere]}
          b: {networks: [front], publish: ["80:80/icmp"]}
        links:
          - {a: a, b: ghost}
        expect:
          - {from: a, reach: "c:80"}
        """)
    before = kernel()
    done = cli("up", path)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"{path}:2: network 'front': invalid mtu '10': must be between 68 and 65535",
        f"{path}:4: sandbox 'a': network 'nowhere' is not in the file's networks",
        f"{path}:5: sandbox 'b': invalid publish '80:80/icmp': protocol 'icmp' is not one of tcp, udp, sctp",
        f"{path}:7: link: sandbox 'ghost' is not in the file's sandboxes",
        f"{path}:9: expect: sandbox 'c' is not in the file's sandboxes"]
    assert kernel() == before
    assert engine.networks() == [] and engine.sandboxes() == [] and engine.topology_objects() == []


def test_two_topologies_side_by_side_and_a_sandbox_of_none_is_not_taken_over(engine: Engine, tmp_path: Path) -> None:
    one = write(tmp_path, """\
        networks:
          n1: {subnet: 10.71.0.0/24}
        sandboxes:
          a1: {networks: [n1]}
          b1: {networks: [n1]}
        """, "one.yaml")
    two = write(tmp_path, """\
        networks:
          n2: {subnet: 10.72.0.0/24}
        sandboxes:
          a2: {networks: [n2]}
        """, "two.yaml")
    assert cli("up", one).returncode == 0 and cli("up", two).returncode == 0
    assert exchange("a1", "b1", str(engine.sandbox("b1").endpoints[0].addresses[0].ip), 7210)[0] is not None
    assert cli("down", one).returncode == 0
    assert sorted(s.name for s in engine.sandboxes()) == ["a2"] and [n.name for n in engine.networks()] == ["n2"]
    assert os.path.exists("/run/netns/a2") and not os.path.exists("/run/netns/a1")

    # A sandbox made by hand with a name the file uses: an error, and it stays as it was.
    engine.create_sandbox("b1", networks=["n2"])
    done = cli("up", one)
    assert done.returncode == 1
    assert done.stderr == (f"{one}:5: sandbox 'b1' exists and was not made by topology 'one': it is not taken over"
                           " (remove it, or rename it in the file)\n")
    assert sorted(s.name for s in engine.sandboxes()) == ["a2", "b1"] and "n1" not in [n.name for n in
                                                                                        engine.networks()]
    assert cli("down", one).stdout == "topology one: nothing to remove\n"
    assert [e.network for e in engine.sandbox("b1").endpoints] == ["n2"]
    assert cli("down", two).returncode == 1  # n2 still has b1, which two did not make: it stays
    assert [n.name for n in engine.networks()] == ["n2"] and os.path.exists("/run/netns/b1")
    engine.remove_sandbox("b1")
    assert cli("down", two).returncode == 0 and engine.networks() == [] and engine.topology_objects() == []


def test_the_example_lab_comes_up_verifies_and_goes_down(engine: Engine) -> None:
    path = str(Path(__file__).parents[2] / "examples" / "lab.yaml")
    assert cli("up", path).returncode == 0
    done = cli("verify", path)
    assert done.returncode == 0, done.stdout
    assert cli("up", path).stdout == "topology lab: up to date\n"
    assert cli("down", path).returncode == 0
    assert engine.sandboxes() == [] and engine.networks() == [] and engine.topology_objects() == []


# An `up` killed (SIGKILL, nsnet.faults) inside its 2nd sandbox, its 1st link, its 2nd route: gc
# repairs the engine's half-made object, the topology's records stand, and `up` again finishes
# exactly the rest; `down` then leaves nothing.
@pytest.mark.parametrize("step", ["CreateNetns#2", "CreatePair", "AddRoute#2"])
def test_an_up_killed_half_way_is_finished_by_up_again(engine: Engine, state_dir: str, tmp_path: Path,
                                                       step: str) -> None:
    path = write(tmp_path, LAB)
    crashed = subprocess.run([NSNET, "up", path], env={**os.environ, "NSNET_FAULT": step}, capture_output=True,
                             timeout=60)
    assert crashed.returncode == -9, crashed.stderr
    assert cli("gc").returncode == 0
    assert cli("check").stdout == ""
    done = cli("up", path)
    assert done.returncode == 0, done.stderr
    assert done.stdout != "" and "topology lab: up to date" not in done.stdout
    assert cli("up", path).stdout == "topology lab: up to date\n"
    assert sorted(s.name for s in engine.sandboxes()) == ["client", "db", "router", "web"]
    assert exchange("client", "web", "10.60.2.2", 7220) == ("hello from 10.60.2.2", ["10.60.1.1"])
    assert cli("down", path).returncode == 0
    assert wait_clean(timeout=15) == {"links": [], "netns": [], "tables": []}
    assert all(rows == [] for rows in ledger(state_dir))


def test_the_progress_bar_shows_on_a_terminal(engine: Engine, tmp_path: Path) -> None:
    import pty

    path = write(tmp_path, LAB)
    leader, follower = pty.openpty()
    try:
        done = subprocess.run([NSNET, "up", path], stderr=follower, stdout=subprocess.PIPE, text=True, timeout=60)
        os.close(follower)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed and all was read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(leader)
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 11
    text = drawn.decode()
    assert "] 0/11 create network front" in text and "] 10/11 route router 10.51.0.0/24 via 10.60.2.2" in text
    assert text.endswith("\r\x1b[K")  # the bar is cleared at the end
    assert cli("down", path).returncode == 0


def test_expectations_may_live_in_a_file_of_their_own(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path, LAB)
    assert cli("up", path).returncode == 0
    expectations = write(tmp_path, """\
        expect:
          - {from: db, reach: "web:8443/tcp"}
          - {from: db, not_reach: "client:22/tcp"}
          - {from: ghost, reach: web}
        """, "expect.yaml")
    done = cli("verify", expectations)
    assert (done.returncode, done.stderr) == (1, f"{expectations}:4: expect: sandbox 'ghost' is not in the file's"
                                                 " sandboxes\n")
    write(tmp_path, "expect:\n  - {from: db, reach: \"web:8443/tcp\"}\n  - {from: db, not_reach: \"client:22/tcp\"}\n",
          "expect.yaml")
    done = cli("verify", expectations)
    assert done.returncode == 0, done.stdout
    rows = done.stdout.splitlines()[1:]
    assert [r.split()[:2] for r in rows] == [["db", "web:8443/tcp"], ["db", "client:22/tcp"]]
    assert [" ok " in r and "MISS" not in r for r in rows] == [True, True]
    done = cli("up", expectations)  # up wants every sandbox the file names in the file
    assert done.returncode == 1 and done.stderr.startswith(f"{expectations}:2: expect: sandbox 'db' is not in")
    assert cli("down", path).returncode == 0


def test_two_ups_of_one_topology_at_once_run_one_after_the_other(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path, LAB)
    both = [subprocess.Popen([NSNET, "up", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in both]
    assert [p.returncode for p in both] == [0, 0], outputs
    assert sorted(len(out.splitlines()) for out, _ in outputs) == [1, 11]  # one made it all, one found it done
    assert "topology lab: up to date\n" in [out for out, _ in outputs]
    assert cli("check").stdout == ""
    assert cli("down", path).returncode == 0


def test_a_file_holds_every_endpoint_kind_and_verify_probes_from_each_that_has_a_namespace(engine: Engine,
                                                                                            tmp_path: Path) -> None:
    """A VM guest's tap, a --network host sandbox and a container: joiner come up from a file;
    verify probes from the host's namespace and from the joined one, finds nothing answering on a
    tap with no guest, and refuses to probe from inside a guest (a miss naming why)."""
    path = write(tmp_path, """\
        name: kinds
        networks:
          app: {subnet: 10.44.0.0/24}
        sandboxes:
          a:  {networks: [app], publish: ["8088:80"]}
          vm: {networks: [app], kind: tap, owner: 4242}
          h:  {networks: [host]}
          j:  {networks: ["container:a"]}
        expect:
          - {from: h, reach: "a:80/tcp"}
          - {from: j, reach: "a:80/tcp"}
          - {from: h, reach: "127.0.0.1:8088/tcp"}
          - {from: a, not_reach: "vm:22/tcp"}
          - {from: vm, reach: "a:80/tcp"}
        """)
    assert cli("up", path).returncode == 0
    vm, joiner = engine.sandbox("vm"), engine.sandbox("j")
    assert vm.tap is not None and vm.tap.uid == 4242 and str(vm.endpoints[0].addresses[0].ip) == "10.44.0.3"
    assert engine.sandbox("h").network_mode == "host" and joiner.network_mode == "container:a"
    done = cli("verify", path)
    header, *lines = done.stdout.splitlines()
    at = header.index("RESULT")  # the table's columns are aligned; "not reach" holds a space
    rows = [(line.split()[0], line.split()[1], line[at:].split()[0]) for line in lines]
    assert rows == [
        ("h", "a:80/tcp", "ok"), ("j", "a:80/tcp", "ok"), ("h", "127.0.0.1:8088/tcp", "ok"),
        ("a", "vm:22/tcp", "ok"), ("vm", "a:80/tcp", "MISS")]
    assert done.returncode == 1 and "sandbox 'vm' is a VM guest's tap: probes run from sandboxes'" in done.stdout
    assert cli("down", path).returncode == 0
    assert engine.sandboxes() == [] and engine.topology_objects() == [] and wait_clean() == {
        "links": [], "netns": [], "tables": []}
