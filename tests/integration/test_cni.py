"""nsnet as a CNI plugin, driven the way the spec says a runtime drives it: the executable
`nsnet cni install` writes, run with CNI_* variables and the configuration on stdin, in
namespaces made as a runtime makes them (`ip netns add`), with real traffic."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nsnet.cni.spec import SUPPORTED_VERSIONS

from .conftest import NSNET, WAN_HOST, WAN_PEER, cli, wait_clean
from .frames import arp_reply, capture, ethernet, seen, send, udp
from .net import connect, exchange, ip_json, reboot, run, serve

BROADCAST = "ff:ff:ff:ff:ff:ff"
TUNING = "/usr/lib/cni/tuning"  # a reference plugin, to run after nsnet in a chain


def conflist_plugin(name: str = "app", version: str = "1.0.0", **extra: object) -> dict:
    """A plugin entry as a conflist written for the reference chain would have it, type changed."""
    return {"cniVersion": version, "name": name, "type": "nsnet", "bridge": f"cni-{name}", "isGateway": True,
            "ipMasq": True, "hairpinMode": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]},
            **extra}


@dataclass
class Reply:
    code: int
    out: dict
    err: str


@dataclass
class Runtime:
    """What a container runtime does: namespaces of its own, and plugin runs."""

    plugin: str
    state_dir: str

    def netns(self, name: str) -> str:
        run("ip", "netns", "add", name)
        run("ip", "-n", name, "link", "set", "lo", "up")
        return f"/run/netns/{name}"

    def call(self, command: str, conf: dict | bytes, container: str = "", netns: str = "", ifname: str = "eth0",
             args: str = "", plugin: str | None = None) -> Reply:
        env = {"PATH": os.environ["PATH"], "NSNET_STATE_DIR": self.state_dir, "CNI_COMMAND": command,
               "CNI_PATH": os.path.dirname(TUNING)}
        for key, value in (("CNI_CONTAINERID", container), ("CNI_NETNS", netns), ("CNI_IFNAME", ifname),
                           ("CNI_ARGS", args)):
            if value:
                env[key] = value
        stdin = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
        done = subprocess.run([plugin or self.plugin], input=stdin, env=env, capture_output=True, timeout=60)
        return Reply(done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}, done.stderr.decode())

    def add(self, conf: dict, container: str, netns: str, ifname: str = "eth0", args: str = "") -> dict:
        reply = self.call("ADD", conf, container, netns, ifname, args)
        assert reply.code == 0, reply
        return reply.out


@pytest.fixture
def runtime(tmp_path: Path, state_dir: str) -> Iterator[Runtime]:
    done = subprocess.run([NSNET, "cni", "install", "--bin-dir", str(tmp_path / "bin")], capture_output=True,
                          text=True, check=True)
    made = Runtime(done.stdout.strip(), state_dir)
    try:
        yield made
    finally:
        for name in os.listdir("/run/netns") if os.path.isdir("/run/netns") else ():
            if name.startswith("ctr"):
                run("ip", "netns", "del", name, check=False)
        subprocess.run([NSNET, "gc"], capture_output=True)  # what the runtime's namespaces took with them
        for network in json.loads(cli("network", "ls", "--format", "json").stdout or "[]"):
            cli("network", "rm", "-f", network["Name"])
    assert wait_clean() == {"links": [], "netns": [], "tables": []}


def ns_of(path: str) -> str:
    return os.path.basename(path)


def test_version_lists_every_version_and_add_answers_in_each(runtime: Runtime) -> None:
    reply = runtime.call("VERSION", {"cniVersion": "0.4.0"})
    assert (reply.code, reply.out) == (0, {"cniVersion": "0.4.0", "supportedVersions": list(SUPPORTED_VERSIONS)})
    assert SUPPORTED_VERSIONS == ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
    for i, version in enumerate(SUPPORTED_VERSIONS):
        netns = runtime.netns(f"ctr{i}")
        result = runtime.add(conflist_plugin(version=version), f"c{i}", netns)
        address = f"10.88.0.{i + 2}/16"
        ip = {"address": address, "gateway": "10.88.0.1", "interface": 2}
        if version < "1.0.0":
            ip = {"version": "4", **ip}
        assert result["cniVersion"] == version
        assert result["ips"] == [ip]
        bridge, host, container = result["interfaces"]
        assert bridge["name"] == "cni-app" and host["name"].startswith("nsv")
        assert host["mac"] == ip_json("link", "show", host["name"])[0]["address"]
        assert container == {"name": "eth0", "mac": f"02:4e:0a:58:00:{i + 2:02x}", "sandbox": netns}
        assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}]
        addresses = ip_json("-4", "address", "show", "eth0", ns=ns_of(netns))[0]["addr_info"]
        assert [f"{a['local']}/{a['prefixlen']}" for a in addresses] == [address]


def test_containers_talk_reach_the_outside_and_publish_a_port(runtime: Runtime, wan: str) -> None:
    conf = conflist_plugin(capabilities={"portMappings": True},
                           runtimeConfig={"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
    web_ns, client_ns = runtime.netns("ctrweb"), runtime.netns("ctrclient")
    web = runtime.add(conf, "web", web_ns, args="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web")
    runtime.add(conflist_plugin(), "client", client_ns)
    assert web["ips"][0]["address"] == "10.88.0.2/16"
    # Two containers on one network talk, with their own addresses.
    assert exchange("ctrclient", "ctrweb", "10.88.0.2", 8000) == ("hello from 10.88.0.2", ["10.88.0.3"])
    # The outside answers, seeing the host's address (masquerade).
    assert exchange("ctrclient", wan, WAN_PEER, 9000) == (f"hello from {WAN_PEER}", [WAN_HOST])
    # The published port answers from outside, the host itself and the other container.
    server = serve("ctrweb", "0.0.0.0", 80, count=3)
    try:
        assert connect(wan, WAN_HOST, 8080) == "hello from 0.0.0.0"
        assert connect(None, WAN_HOST, 8080) == "hello from 0.0.0.0"
        assert connect("ctrclient", WAN_HOST, 8080) == "hello from 0.0.0.0"
        assert server.peers() == [WAN_PEER, WAN_HOST, "10.88.0.1"]
    finally:
        server.stop()
    # A second ADD asking for the same host port is refused while the first holds it ...
    third_ns = runtime.netns("ctrthird")
    refused = runtime.call("ADD", conf, "third", third_ns)
    assert (refused.code, refused.out["code"]) == (1, 100) and "8080" in refused.out["msg"]
    # ... and served at once after the first's DEL.
    assert runtime.call("DEL", conf, "web", web_ns).code == 0
    assert runtime.add(conf, "third", third_ns)["ips"][0]["address"] == "10.88.0.4/16"  # round robin
    assert connect(wan, WAN_HOST, 8080, timeout=1.0) is None  # nothing listens on 80 in it yet
    server = serve("ctrthird", "0.0.0.0", 80)
    try:
        assert connect(wan, WAN_HOST, 8080) == "hello from 0.0.0.0"
        assert server.peers() == [WAN_PEER]
    finally:
        server.stop()


def test_it_works_as_the_first_plugin_of_a_chain(runtime: Runtime) -> None:
    """tuning (a reference plugin) runs after nsnet with nsnet's result as prevResult, changes
    the container's interface, and passes the result on."""
    netns = runtime.netns("ctrchain")
    first = runtime.add(conflist_plugin(), "chained", netns)
    tuning = {"cniVersion": "1.0.0", "name": "app", "type": "tuning", "mtu": 1400,
              "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}, "prevResult": first}
    reply = runtime.call("ADD", tuning, "chained", netns, plugin=TUNING)
    assert reply.code == 0, reply
    assert reply.out["ips"] == first["ips"] and reply.out["interfaces"][2]["name"] == "eth0"
    (link,) = ip_json("link", "show", "eth0", ns="ctrchain")
    assert link["mtu"] == 1400
    assert run("ip", "netns", "exec", "ctrchain", "sysctl", "-n", "net.ipv4.conf.eth0.arp_notify").stdout.strip() == "1"
    # DEL in reverse order, each with the ADD's result.
    assert runtime.call("DEL", {**tuning, "prevResult": reply.out}, "chained", netns, plugin=TUNING).code == 0
    assert runtime.call("DEL", {**conflist_plugin(), "prevResult": reply.out}, "chained", netns).code == 0
    assert json.loads(cli("ps", "--format", "json").stdout) == []


def test_check_passes_then_fails_on_drift(runtime: Runtime) -> None:
    netns = runtime.netns("ctrcheck")
    conf = conflist_plugin()
    result = runtime.add(conf, "checked", netns)
    with_result = {**conf, "prevResult": result}
    assert runtime.call("CHECK", with_result, "checked", netns).code == 0
    run("ip", "-n", "ctrcheck", "address", "del", "10.88.0.2/16", "dev", "eth0")
    failed = runtime.call("CHECK", with_result, "checked", netns)
    assert (failed.code, failed.out["code"]) == (1, 102)
    assert "eth0 lacks its address 10.88.0.2/16" in failed.out["msg"]
    assert cli("gc").returncode == 0
    assert runtime.call("CHECK", with_result, "checked", netns).code == 0
    run("ip", "-n", "ctrcheck", "link", "del", "eth0")
    gone = runtime.call("CHECK", with_result, "checked", netns)
    assert gone.out["code"] == 102 and "is gone" in gone.out["msg"]
    unknown = runtime.call("CHECK", with_result, "stranger", netns)
    assert unknown.out["code"] == 3
    assert runtime.call("CHECK", {**with_result, "cniVersion": "0.3.1"}, "checked", netns).out["code"] == 1


def test_del_is_idempotent(runtime: Runtime) -> None:
    conf = conflist_plugin()
    netns = runtime.netns("ctrdel")
    runtime.add(conf, "deleted", netns)
    # Without prevResult, twice; for a container never seen; on a network never made.
    assert runtime.call("DEL", conf, "deleted", netns).code == 0
    assert runtime.call("DEL", conf, "deleted", netns).code == 0
    assert runtime.call("DEL", conf, "never-seen", netns).code == 0
    assert runtime.call("DEL", conflist_plugin(name="nowhere"), "deleted", netns).code == 0
    # After the runtime deleted the namespace, and with no CNI_NETNS at all.
    runtime.add(conf, "deleted", netns)
    run("ip", "netns", "del", "ctrdel")
    assert runtime.call("DEL", conf, "deleted").code == 0
    assert json.loads(cli("ps", "--format", "json").stdout) == []
    assert cli("check").stdout == ""


def test_gc_removes_every_attachment_the_runtime_no_longer_lists(runtime: Runtime) -> None:
    conf = {**conflist_plugin(), "cniVersion": "1.1.0"}
    for name in ("ctrkeep", "ctrstale1", "ctrstale2"):
        runtime.add(conf, name, runtime.netns(name))
    reply = runtime.call("GC", {**conf, "cni.dev/valid-attachments": [{"containerID": "ctrkeep", "ifname": "eth0"}]})
    assert (reply.code, reply.out) == (0, {})
    assert [s["ContainerID"] for s in json.loads(cli("ps", "--format", "json").stdout)] == ["ctrkeep"]
    assert [l["ifname"] for l in ip_json("link", ns="ctrstale1")] == ["lo"]
    assert cli("check").stdout == ""
    assert runtime.call("GC", {**conf, "cniVersion": "1.0.0"}).out["code"] == 1  # GC came with 1.1.0
    assert runtime.call("STATUS", conf).code == 0


def test_every_error_is_cni_json_with_the_specs_code(runtime: Runtime) -> None:
    netns = runtime.netns("ctrerr")
    cases = [
        (runtime.call("ADD", b"{not json", "e", netns), 6),
        (runtime.call("ADD", conflist_plugin(version="0.2.0"), "e", netns), 1),
        (runtime.call("ADD", conflist_plugin(), "", netns), 4),  # no CNI_CONTAINERID
        (runtime.call("ADD", conflist_plugin(), "e", ""), 4),  # no CNI_NETNS
        (runtime.call("ADD", {**conflist_plugin(), "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/33"}]]}},
                      "e", netns), 7),
        (runtime.call("ADD", {**conflist_plugin(), "ipam": {"type": "dhcp"}}, "e", netns), 2),
        (runtime.call("ADD", {**conflist_plugin(), "vlan": 7}, "e", netns), 2),
        (runtime.call("ADD", conflist_plugin(), "e", "/run/netns/missing"), 4),
        (runtime.call("ADD", {**conflist_plugin(), "runtimeConfig": {"mac": "01:00:5e:00:00:01"}}, "e", netns), 7),
    ]
    for reply, code in cases:
        assert reply.code == 1 and reply.out["code"] == code, reply
        assert reply.out["msg"] and "Traceback" not in reply.err
    assert json.loads(cli("ps", "--format", "json").stdout) == []
    # A later ADD whose definition conflicts with the network the first one made.
    runtime.add(conflist_plugin(), "e", netns)
    other = runtime.call("ADD", {**conflist_plugin(), "ipam": {"type": "host-local",
                                                                "ranges": [[{"subnet": "10.89.0.0/16"}]]}},
                         "f", runtime.netns("ctrerr2"))
    assert other.out["code"] == 7 and "subnet 10.88.0.0/16 in the ledger, 10.89.0.0/16 configured" in other.out["msg"]


def test_static_address_mac_and_range_are_honoured(runtime: Runtime) -> None:
    conf = conflist_plugin(ipam={"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16", "rangeStart": "10.88.1.0",
                                                                     "rangeEnd": "10.88.1.255"}]]},
                           runtimeConfig={"ips": ["10.88.1.77/16"], "mac": "0a:58:0a:58:01:4d"})
    netns = runtime.netns("ctrstatic")
    result = runtime.add(conf, "static", netns)
    assert result["ips"][0]["address"] == "10.88.1.77/16"
    assert result["interfaces"][2]["mac"] == "0a:58:0a:58:01:4d"
    assert ip_json("link", "show", "eth0", ns="ctrstatic")[0]["address"] == "0a:58:0a:58:01:4d"
    assert "routes" not in result  # no default route asked for
    plain = runtime.add({k: v for k, v in conf.items() if k != "runtimeConfig"}, "ranged", runtime.netns("ctrrange"))
    assert plain["ips"][0]["address"] == "10.88.1.78/16"  # round robin, within the range


def test_concurrent_adds_wait_for_the_ledger(runtime: Runtime) -> None:
    conf = conflist_plugin()
    spaces = {f"ctrpar{i}": runtime.netns(f"ctrpar{i}") for i in range(8)}
    replies: dict[str, Reply] = {}

    def add(name: str) -> None:
        replies[name] = runtime.call("ADD", conf, name, spaces[name])

    threads = [threading.Thread(target=add, args=(name,)) for name in spaces]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.code for r in replies.values()] == [0] * 8, replies
    addresses = sorted(r.out["ips"][0]["address"] for r in replies.values())
    assert addresses == sorted(f"10.88.0.{i}/16" for i in range(2, 10))
    assert cli("check").stdout == ""


def test_nsnet_shows_an_attachment_and_leaves_it_to_the_runtime(runtime: Runtime) -> None:
    netns = runtime.netns("ctrshown")
    runtime.add(conflist_plugin(), "0123456789abcdef", netns, ifname="net1")
    (item,) = json.loads(cli("ps", "--format", "json").stdout)
    assert (item["Name"], item["ContainerID"], item["NetNS"]) == ("cni-0123456789ab", "0123456789abcdef", netns)
    assert item["Networks"]["app"]["Interface"] == "net1"
    for argv in (["rm", "cni-0123456789ab"], ["rm", "-f", "cni-0123456789ab"], ["exec", "cni-0123456789ab", "true"]):
        refused = cli(*argv)
        assert refused.returncode == 1 and "its runtime owns it" in refused.stderr, refused
    assert ip_json("link", "show", "net1", ns="ctrshown")


def test_a_restarted_container_in_a_new_namespace_replaces_its_stale_attachment(runtime: Runtime) -> None:
    """Podman restarts a container in a new namespace; its cleanup (DEL) of the old one runs apart
    and may not have reached nsnet. An old namespace that is gone means a stale attachment; one
    that still exists means two namespaces for one container, refused."""
    conf = conflist_plugin()
    runtime.add(conf, "restarted", runtime.netns("ctrold"))
    live = runtime.call("ADD", conf, "restarted", runtime.netns("ctrother"))
    assert live.out["code"] == 100 and "is attached in namespace /run/netns/ctrold" in live.out["msg"]
    run("ip", "netns", "del", "ctrold")
    result = runtime.add(conf, "restarted", "/run/netns/ctrother")
    assert result["interfaces"][2]["sandbox"] == "/run/netns/ctrother"
    (item,) = json.loads(cli("ps", "--format", "json").stdout)
    assert item["NetNS"] == "/run/netns/ctrother" and cli("check").stdout == ""


def test_after_a_reboot_the_next_add_restores_the_network(runtime: Runtime, wan: str) -> None:
    """A reboot leaves the ledger and takes the bridge, the rules, the forwarding sysctl and the
    runtime's namespaces; the runtime's next ADD must work without anyone running `nsnet gc`."""
    conf = conflist_plugin()
    runtime.add(conf, "before", runtime.netns("ctrbefore"))
    (table,) = [line.split()[-1] for line in run("nft", "list", "tables", "inet").stdout.splitlines()
                if "nsnet" in line]
    reboot(table, ["ctrbefore"], ["cni-app"], "net.ipv4.ip_forward")
    reply = runtime.call("ADD", conf, "after", runtime.netns("ctrafter"))
    assert reply.code == 0 and "had no bridge cni-app (a reboot?); restoring it" in reply.err, reply
    assert reply.out["ips"][0]["address"] == "10.88.0.3/16"  # round robin goes on past the forgotten .2
    assert [item["ContainerID"] for item in json.loads(cli("ps", "--format", "json").stdout)] == ["after"]
    assert exchange("ctrafter", wan, WAN_PEER, 9000) == (f"hello from {WAN_PEER}", [WAN_HOST])
    assert cli("check").stdout == ""


def test_a_container_sends_nothing_but_its_own_addresses(runtime: Runtime) -> None:
    """The runtime's container gets the anti-spoofing nsnet's own sandboxes get: root in it forges
    frames from another address or MAC, and they go nowhere; its honest frame arrives."""
    conf = conflist_plugin()
    receiver = runtime.add(conf, "receiver", runtime.netns("ctrrecv"))["interfaces"][2]["mac"]
    attacker = runtime.add(conf, "attacker", runtime.netns("ctrattack"))["interfaces"][2]["mac"]
    frames = {
        "GOOD": ethernet(receiver, attacker, 0x0800, udp("10.88.0.3", "10.88.0.2", 5000, 5000, b"GOOD")),
        "FORGED-IP": ethernet(receiver, attacker, 0x0800, udp("10.88.0.99", "10.88.0.2", 5000, 5000, b"FORGED-IP")),
        "FORGED-MAC": ethernet(receiver, "02:4e:0a:58:00:63", 0x0800,
                               udp("10.88.0.3", "10.88.0.2", 5000, 5000, b"FORGED-MAC")),
        "FORGED-ARP": ethernet(BROADCAST, attacker, 0x0806, arp_reply(attacker, "10.88.0.1", receiver, "10.88.0.2")
                               + b"FORGED-ARP"),
    }
    at_receiver = capture("ctrrecv", "eth0", 2.0, *frames)
    send("ctrattack", "eth0", list(frames.values()), repeat=3, gap=0.05)
    assert sorted(set(seen(at_receiver))) == ["GOOD"]


def test_adds_and_dels_racing_gc_lose_nothing(runtime: Runtime) -> None:
    """`nsnet gc` and `nsnet check` loop while a runtime ADDs, then DELs, ten containers at once:
    gc leaves work in flight alone, every ADD gets its own address, every DEL leaves nothing."""
    conf = conflist_plugin()
    spaces = {f"ctrrace{i}": runtime.netns(f"ctrrace{i}") for i in range(10)}
    for command in ("ADD", "DEL"):
        replies: dict[str, Reply] = {}
        threads = [threading.Thread(target=lambda n=name: replies.__setitem__(n, runtime.call(command, conf, n,
                                                                                               spaces[n])))
                   for name in spaces]
        for thread in threads:
            thread.start()
        repairs = 0
        while any(thread.is_alive() for thread in threads) or repairs < 2:
            gc = cli("gc")
            assert gc.returncode == 0 and gc.stderr == "", gc
            repairs += 1
        for thread in threads:
            thread.join()
        assert [r.code for r in replies.values()] == [0] * 10, replies
        if command == "ADD":
            assert len({r.out["ips"][0]["address"] for r in replies.values()}) == 10
            assert len(json.loads(cli("ps", "--format", "json").stdout)) == 10
        else:
            assert json.loads(cli("ps", "--format", "json").stdout) == []
            assert all([l["ifname"] for l in ip_json("link", ns=ns)] == ["lo"] for ns in spaces)
        assert cli("check").stdout == ""
