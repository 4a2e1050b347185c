"""nsnet next to other software's firewall: it never touches what it does not own, and `doctor`
says what on the host stands in its way."""

from __future__ import annotations

import json
import subprocess

from nsnet import Engine

from .conftest import WAN_HOST, WAN_PEER, cli
from .net import connect, exchange, run, serve

FOREIGN_TABLE = """
table inet foreign {
    set blocked { type ipv4_addr; elements = { 192.0.2.7, 192.0.2.8 } }
    chain forward { type filter hook forward priority -5; policy accept; ip saddr @blocked drop; }
    chain prerouting { type nat hook prerouting priority -105; policy accept; tcp dport 2222 dnat ip to 192.0.2.9; }
    chain postrouting { type nat hook postrouting priority 95; policy accept; ip saddr 192.0.2.0/24 masquerade; }
}
"""


def foreign_state() -> tuple[str, str]:
    """The foreign table and everything iptables holds, as text (no counters, so no drift)."""
    table = run("nft", "list", "table", "inet", "foreign").stdout
    iptables = [line for line in run("iptables-save").stdout.splitlines() if not line.startswith("#")]
    return table, "\n".join(iptables)


def test_a_full_lifecycle_leaves_foreign_rules_byte_for_byte_unchanged(state_dir: str, engine: Engine,
                                                                     wan: str) -> None:
    assert run("nft", "list", "tables").stdout == ""
    subprocess.run(["nft", "-f", "-"], input=FOREIGN_TABLE, text=True, check=True)
    run("iptables", "-A", "INPUT", "-s", "192.0.2.7", "-j", "DROP")
    run("iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.0/24", "-o", "wan0", "-j", "MASQUERADE")
    try:
        before = foreign_state()

        engine.create_network("app", subnet="10.31.0.0/24")
        engine.create_network("quiet", subnet="10.32.0.0/24", icc=False, internal=True)
        engine.create_sandbox("web", networks=["app"], publish=["8080:80", "127.0.0.1:8090:90/udp"])
        engine.connect("quiet", "web")
        assert exchange("web", wan, WAN_PEER, 9000) == (f"hello from {WAN_PEER}", [WAN_HOST])
        server = serve("web", "10.31.0.2", 80)
        try:
            assert connect(wan, WAN_HOST, 8080) == "hello from 10.31.0.2"
        finally:
            server.stop()
        engine.disconnect("quiet", "web")
        engine.remove_sandbox("web")
        engine.remove_network("app")
        engine.remove_network("quiet")

        assert foreign_state() == before
        assert "nsnet" not in run("nft", "list", "tables").stdout
    finally:
        # iptables-nft made these tables for the test's two rules (the isolated host had none).
        for family, table in (("inet", "foreign"), ("ip", "filter"), ("ip", "nat")):
            run("nft", "delete", "table", family, table, check=False)


def doctor() -> tuple[int, dict[str, dict]]:
    result = cli("doctor", "--format", "json")
    return result.returncode, {f["check"]: f for f in json.loads(result.stdout)}


def test_doctor_reports_what_breaks_nsnet_and_exits_non_zero(state_dir: str, engine: Engine, wan: str) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_sandbox("web", networks=["app"], publish=["8080:80"])
    code, findings = doctor()
    assert code == 0
    # This kernel has no ipvlan (nsnet.drivers) and no sch_netem (nsnet.shaping): warnings, not problems.
    assert [(c, f["severity"]) for c, f in findings.items()] == [("kernel-drivers", "warning"),
                                                                  ("shaping-modules", "warning"),
                                                                  ("br-netfilter", "warning")]
    assert findings["shaping-modules"]["details"] == ["sch_netem"]
    assert [d.split(":")[0] for d in findings["kernel-drivers"]["details"]] == [
        "ipvlan (network create --driver ipvlan)"]

    subprocess.run(["nft", "-f", "-"], check=True, text=True, input="table ip dockerlike { chain forward "
                   "{ type filter hook forward priority 0; policy drop; }; }")
    run("sysctl", "-qw", "net.ipv4.ip_forward=0")
    run("ip", "route", "add", "10.31.0.128/25", "via", WAN_PEER)
    host_server = serve(None, "0.0.0.0", 8080, timeout=10.0)
    try:
        code, findings = doctor()
    finally:
        host_server.stop()
        run("nft", "delete", "table", "ip", "dockerlike")
        run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        run("ip", "route", "del", "10.31.0.128/25")

    assert code == 1
    assert {c: f["severity"] for c, f in findings.items()} == {
        "kernel-drivers": "warning", "shaping-modules": "warning", "ip-forward": "problem", "forward-policy": "problem", "br-netfilter": "warning",
        "port-taken": "problem", "route-overlap": "problem"}
    assert findings["forward-policy"]["details"] == ["table ip dockerlike, chain forward"]
    assert findings["port-taken"]["details"] == [
        "0.0.0.0:8080/tcp (published by web; a host process is bound to 0.0.0.0:8080)"]
    assert findings["route-overlap"]["details"] == ["network app (10.31.0.0/24) and route 10.31.0.128/25 on wan0"]
    assert all(f["fix"] for f in findings.values())


def test_doctor_is_quiet_without_br_netfilter(state_dir: str, engine: Engine) -> None:
    run("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0")
    try:
        result = cli("doctor")
    finally:
        run("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")

    # Only what this kernel lacks is left: ipvlan (nsnet.drivers) and sch_netem (nsnet.shaping).
    assert result.returncode == 0 and result.stdout.startswith(
        "warning: kernel-drivers: the kernel cannot make the links of some network drivers")
    assert [line for line in result.stdout.splitlines() if not line.startswith("    ")] == [
        "warning: kernel-drivers: the kernel cannot make the links of some network drivers: `network create --driver`"
        " refuses them",
        "warning: shaping-modules: the kernel lacks sch_netem: nsnet shape refuses --delay, --jitter and --reorder"
        " (--loss works without them, through nftables)"]
