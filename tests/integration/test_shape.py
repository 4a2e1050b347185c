"""Shaping with real traffic: a rate cap measured by a bulk TCP transfer, loss by counting UDP
datagrams, each direction proven on an endpoint and on a link side; the refusal of what this
kernel lacks (sch_netem), the netem path where it exists; inspect, check and gc.

Bounds are generous (the kernel's shaping is measured, never nsnet's own speed): a 10mbit cap
must measure 4-13 Mbit/s and unshaped traffic over 25 Mbit/s; 30% loss must lose 15-45% of 400
datagrams, and no loss must lose none.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nsnet import Engine
from nsnet.kernel.linux import LinuxKernel

from .conftest import cli
from .net import in_ns, start

TRANSFER = 1_500_000  # bytes: 1.2 s at 10 Mbit/s
DATAGRAMS = 400
FAST = 25  # Mbit/s: unshaped traffic, twice the cap's upper bound at least (veth does Gbit/s when idle)

_SINK = r"""
import socket, sys, time
ip, port, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((ip, port))
server.listen(1)
server.settimeout(10)
print("ready", flush=True)
conn, _ = server.accept()
conn.settimeout(10)
received, first, last = 0, None, None
while received < limit:
    chunk = conn.recv(65536)
    if not chunk:
        break
    now = time.monotonic()
    first = first or now
    received += len(chunk)
    last = now
print(received, (last - first) if first else 0, flush=True)
"""

_SOURCE = r"""
import socket, sys
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
conn.sendall(b"x" * int(sys.argv[3]))
conn.close()
"""

_COUNTER = r"""
import socket, sys
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
server.bind((sys.argv[1], int(sys.argv[2])))
server.settimeout(1.5)
print("ready", flush=True)
seen = set()
try:
    while True:
        seen.add(server.recv(64))
except socket.timeout:
    pass
print(len(seen), flush=True)
"""

_SENDER = r"""
import socket, sys, time
sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[3])):
    try:
        sender.sendto(str(i).encode(), (sys.argv[1], int(sys.argv[2])))
    except PermissionError:  # dropped on its way out of this namespace (nftables says so: EPERM)
        pass
    time.sleep(0.001)
"""


def mbits(client: str, server: str, ip: str, port: int) -> float:
    """Mbit/s of a bulk TCP transfer of TRANSFER bytes from client to server, as received."""
    sink = start(server, _SINK, ip, port, TRANSFER)
    try:
        subprocess.run(in_ns(client, [sys.executable, "-c", _SOURCE, ip, str(port), str(TRANSFER)]), check=True,
                       timeout=30)
        out, _ = sink.process.communicate(timeout=30)
    finally:
        sink.stop()
    received, seconds = out.split()
    assert int(received) == TRANSFER
    return int(received) * 8 / max(float(seconds), 1e-6) / 1e6


def lost(client: str, server: str, ip: str, port: int) -> int:
    """How many of DATAGRAMS UDP datagrams from client never reached server."""
    counter = start(server, _COUNTER, ip, port)
    try:
        subprocess.run(in_ns(client, [sys.executable, "-c", _SENDER, ip, str(port), str(DATAGRAMS)]), check=True,
                       timeout=30)
        out, _ = counter.process.communicate(timeout=30)
    finally:
        counter.stop()
    return DATAGRAMS - int(out)


def capped(rate: float) -> bool:
    return 4 <= rate <= 13


def lossy(count: int) -> bool:
    return DATAGRAMS * 0.15 <= count <= DATAGRAMS * 0.45


@pytest.fixture
def pair(engine: Engine) -> Engine:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("a", networks=["app"], ip="10.31.0.2")
    engine.create_sandbox("b", networks=["app"], ip="10.31.0.3")
    return engine


def test_a_rate_cap_on_an_endpoint_caps_the_direction_asked(pair: Engine) -> None:
    assert mbits("a", "b", "10.31.0.3", 7300) > FAST  # the positive control: unshaped is much faster
    done = cli("shape", "a", "--network", "app", "--rate", "10mbit")
    assert done.returncode == 0 and done.stdout == "a network app out: rate 10mbit\n", done.stderr
    out, back = mbits("a", "b", "10.31.0.3", 7301), mbits("b", "a", "10.31.0.2", 7302)
    assert capped(out) and back > FAST, (out, back)
    assert cli("check").stdout == ""
    assert cli("shape", "a", "--network", "app", "--rate", "10mbit", "--direction", "in").returncode == 0
    out, back = mbits("a", "b", "10.31.0.3", 7303), mbits("b", "a", "10.31.0.2", 7304)
    assert out > FAST and capped(back), (out, back)
    shown = json.loads(cli("inspect", "a").stdout)[0]["Shaping"]
    assert shown == [{"Sandbox": "a", "Network": "app", "Link": None, "Direction": "in", "Rate": "10mbit",
                      "Delay": None, "Jitter": None, "Loss": None, "Reorder": None, "Limit": None, "State": "ready"}]
    assert cli("shape", "a", "--network", "app", "--clear").returncode == 0
    assert mbits("b", "a", "10.31.0.2", 7305) > FAST
    assert "Shaping" not in json.loads(cli("inspect", "a").stdout)[0] and cli("shapes", "-q").stdout == ""
    assert cli("check").stdout == ""


def test_loss_on_an_endpoint_drops_at_random_in_the_direction_asked(pair: Engine) -> None:
    assert lost("a", "b", "10.31.0.3", 7310) == 0
    assert cli("shape", "a", "--network", "app", "--loss", "30%").returncode == 0
    out, back = lost("a", "b", "10.31.0.3", 7311), lost("b", "a", "10.31.0.2", 7312)
    assert lossy(out) and back == 0, (out, back)
    assert cli("shape", "a", "--network", "app", "--loss", "30%", "--direction", "both").returncode == 0
    out, back = lost("a", "b", "10.31.0.3", 7313), lost("b", "a", "10.31.0.2", 7314)
    assert lossy(out) and lossy(back), (out, back)
    assert cli("shape", "a", "--network", "app", "--clear").returncode == 0
    assert lost("a", "b", "10.31.0.3", 7315) == 0 and lost("b", "a", "10.31.0.2", 7316) == 0
    assert cli("check").stdout == ""


def test_a_link_side_is_shaped_out_and_in_and_both_sides_cannot_own_one_device(pair: Engine) -> None:
    assert cli("link", "a", "b", "--ip", "a=10.9.0.1/30", "--ip", "b=10.9.0.2/30").returncode == 0
    assert cli("shape", "a", "--link", "b", "--rate", "10mbit", "--direction", "in").returncode == 0
    out, back = mbits("a", "b", "10.9.0.2", 7320), mbits("b", "a", "10.9.0.1", 7321)
    assert out > FAST and capped(back), (out, back)
    assert mbits("b", "a", "10.31.0.2", 7322) > FAST  # their network is not the link
    refused = cli("shape", "b", "--link", "a", "--rate", "1mbit")
    assert refused.returncode != 0 and refused.stderr.count("\n") == 1 and "shaped already by `nsnet shape a --link b" \
        in refused.stderr
    assert cli("shape", "b", "--link", "a", "--rate", "10mbit", "--direction", "in").returncode == 0
    assert capped(mbits("a", "b", "10.9.0.2", 7323))
    assert cli("shape", "a", "--link", "b", "--loss", "30%", "--direction", "in").returncode == 0  # replaces
    out, back = lost("a", "b", "10.9.0.2", 7324), lost("b", "a", "10.9.0.1", 7325)
    assert out == 0 and lossy(back), (out, back)
    assert mbits("b", "a", "10.31.0.2", 7326) > FAST  # the rate went with the replaced setting
    assert cli("check").stdout == ""
    assert cli("unlink", "a", "b").returncode == 0  # the shapings go with the link, drops and all
    assert cli("shapes", "-q").stdout == "" and cli("check").stdout == ""
    assert run_nft("a") == "" and run_nft("b") == ""


def run_nft(ns: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"], capture_output=True, text=True,
                          check=True).stdout


def test_check_reports_a_removed_qdisc_and_drop_table_and_gc_sets_them_again(pair: Engine) -> None:
    assert cli("link", "a", "b", "--ip", "a=10.9.0.1/30", "--ip", "b=10.9.0.2/30").returncode == 0
    assert cli("shape", "a", "--network", "app", "--rate", "10mbit", "--direction", "both").returncode == 0
    assert cli("shape", "a", "--link", "b", "--loss", "30%").returncode == 0
    host_veth = pair.sandbox("a").endpoints[0].host_ifname
    table = f"{pair.owner.table}_shape"
    subprocess.run(["tc", "qdisc", "del", "dev", host_veth, "root"], check=True)
    subprocess.run(["ip", "netns", "exec", "a", "nft", "flush", "chain", "inet", table, "postrouting"], check=True)
    assert cli("check").stdout.splitlines() == [
        f"missing: shaping of a's network app: host veth {host_veth} has no qdisc of nsnet, not tbf rate 1250000"
        " (gc sets it again)",
        f"wrong: loss table of a: {table} differs from what nsnet made (gc makes it again)"]
    subprocess.run(["ip", "netns", "exec", "a", "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate",
                    "1mbit", "burst", "3000", "latency", "50ms"], check=True)
    subprocess.run(["ip", "netns", "exec", "a", "nft", "delete", "table", "inet", table], check=True)
    assert sorted(cli("check").stdout.splitlines()) == [
        f"missing: loss table of a: {table} is gone (gc makes it again)",
        f"missing: shaping of a's network app: host veth {host_veth} has no qdisc of nsnet, not tbf rate 1250000"
        " (gc sets it again)",
        "wrong: shaping of a's network app: a's eth0 has tbf rate 125000, not tbf rate 1250000 (gc sets it again)"]
    assert cli("gc").returncode == 0 and cli("check").stdout == ""
    assert capped(mbits("b", "a", "10.31.0.2", 7330)) and capped(mbits("a", "b", "10.31.0.3", 7331))
    assert lossy(lost("a", "b", "10.9.0.2", 7332))


def test_bad_settings_and_knobs_this_kernel_lacks_are_refused_and_change_nothing(pair: Engine) -> None:
    assert cli("shape", "a", "--network", "app", "--rate", "10mbit").returncode == 0
    before = (cli("shapes", "--format", "json").stdout, subprocess.run(
        ["ip", "netns", "exec", "a", "tc", "qdisc", "show"], capture_output=True, text=True).stdout, run_nft("a"))
    netem = "sch_netem" in LinuxKernel().qdisc_modules()
    cases = [(["--rate", "10"], "invalid --rate '10': must be a number with a unit"),
             (["--rate", "1kbit"], "invalid --rate '1kbit': must be from 8kbit to 32gbit"),
             (["--loss", "0%"], "invalid --loss '0%': must be more than 0%"),
             (["--loss", "150%"], "invalid --loss '150%'"),
             (["--jitter", "5ms"], "invalid --jitter '5ms': needs --delay"),
             (["--limit", "10"], "invalid --limit '10': needs --rate or --delay"),
             (["--rate", "1mbit", "--direction", "up"], "invalid --direction 'up': must be out, in or both"),
             ([], "invalid --rate: is needed"),
             (["--rate", "1mbit", "--clear"], "invalid --rate '1mbit': cannot go with --clear")]
    if not netem:
        cases.append((["--delay", "20ms"], "invalid --delay '20ms': needs the kernel module sch_netem, which this"
                                           " kernel lacks"))
    for args, message in cases:
        done = cli("shape", "a", "--network", "app", *args)
        assert done.returncode != 0 and message in done.stderr and done.stderr.count("\n") == 1, (args, done.stderr)
    for args, message in ((["--network", "ghost", "--rate", "1mbit"], "invalid --network 'ghost': sandbox a has no"
                                                                        " endpoint on it"),
                          (["--link", "b", "--rate", "1mbit"], "invalid --link 'b': is not linked to a")):
        done = cli("shape", "a", *args)
        assert done.returncode != 0 and message in done.stderr, done.stderr
    assert before == (cli("shapes", "--format", "json").stdout, subprocess.run(
        ["ip", "netns", "exec", "a", "tc", "qdisc", "show"], capture_output=True, text=True).stdout, run_nft("a"))
    if not netem:
        doctor = cli("doctor")
        assert "the kernel lacks sch_netem: nsnet shape refuses --delay, --jitter and --reorder" in doctor.stdout


def test_delay_jitter_and_a_rate_through_netem_where_the_kernel_has_it(pair: Engine) -> None:
    if "sch_netem" not in LinuxKernel().qdisc_modules():
        pytest.skip("this kernel lacks sch_netem: delay, jitter and reorder are refused (tested above)")
    assert cli("shape", "a", "--network", "app", "--delay", "100ms", "--jitter", "10ms", "--reorder", "5%",
               "--limit", "50", "--rate", "10mbit").returncode == 0
    shown = subprocess.run(["ip", "netns", "exec", "a", "tc", "qdisc", "show", "dev", "eth0"], capture_output=True,
                           text=True, check=True).stdout
    assert "netem 1: root" in shown and "limit 50 delay 100ms  10ms reorder 5%" in shown and "tbf 10: parent 1:1" \
        in shown, shown
    assert capped(mbits("a", "b", "10.31.0.3", 7340))
    assert cli("check").stdout == ""
    assert cli("shape", "a", "--network", "app", "--clear").returncode == 0
    assert "netem" not in subprocess.run(["ip", "netns", "exec", "a", "tc", "qdisc", "show", "dev", "eth0"],
                                         capture_output=True, text=True, check=True).stdout
