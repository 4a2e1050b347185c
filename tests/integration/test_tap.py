"""VM guests' tap endpoints with real frames: a userspace guest (the responder, run as the tap's
owner) answers a sandbox's ARP and pings and cannot forge its MAC or address; a real Linux guest
booted by QEMU (KVM, or TCG without hardware virtualization) on the tap gets its address and talks
TCP with a sandbox both ways and through a published port; check/gc, removal and bad input as for
any sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile

from nsnet import Engine

from . import guest_kernel
from .conftest import cli
from .frames import capture, ethernet, seen, udp
from .guest import Responder, ping
from .net import connect, eventually, ip_json, serve
from .test_dns import addresses

OWNER, STRANGER = 4242, 4343


def _accelerator() -> str:
    """QEMU's accelerator for the guest: KVM when /dev/kvm is hardware virtualization (kvm_intel or
    kvm_amd), else TCG (emulation), printing why. On this project's test machine (a Firecracker VM,
    AMD EPYC, no svm flag) /dev/kvm comes from kvm_pvm (Pagetable-based VM), which runs PVM-built
    guest kernels only: Debian's kernel creeps through its decompressor (~0.6 MB/s of memory
    writes) and never prints. NSNET_GUEST_ACCEL=kvm|tcg overrides."""
    forced = os.environ.get("NSNET_GUEST_ACCEL")
    if forced:
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        reason = "/dev/kvm is missing or not read-writable"
    elif not any(os.path.isdir(f"/sys/module/{m}") for m in ("kvm_intel", "kvm_amd")):
        reason = ("/dev/kvm is not hardware virtualization (no kvm_intel or kvm_amd module; kvm_pvm runs"
                  " PVM guest kernels only)")
    else:
        return "kvm"
    print(f"test_tap: the QEMU guest runs on TCG: {reason}")
    return "tcg"


def _tap(sandbox: str) -> dict:
    (item,) = json.loads(cli("inspect", sandbox).stdout)
    return item["Tap"]


def test_the_owner_attaches_answers_pings_and_cannot_forge(engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    done = cli("create", "vm1", "--kind", "tap", "--network", "app", "--owner", str(OWNER), "--group", str(OWNER),
               "--label", "app=web")
    assert done.returncode == 0, done.stderr
    tap = _tap("vm1")
    device, guest_mac = tap["Device"], tap["GuestMacAddress"]
    assert (guest_mac, tap["TapMacAddress"], tap["Addresses"], tap["Gateways"]) == (
        "02:4e:0a:1f:00:02", "fe:4e:0a:1f:00:02", ["10.31.0.2/24"], ["10.31.0.1"])
    assert tap["QemuArgs"] == ["-netdev", f"tap,id=n0,ifname={device},script=no,downscript=no",
                               "-device", f"virtio-net-pci,netdev=n0,mac={guest_mac}"]
    (link,) = ip_json("-d", "link", "show", device)
    assert (link["linkinfo"]["info_kind"], link["linkinfo"]["info_data"]) == ("tun", {
        "type": "tap", "pi": False, "vnet_hdr": True, "multi_queue": False, "persist": True,
        "user": OWNER, "group": OWNER})
    assert (link["master"], link["mtu"], link["address"]) == (engine.network("app").bridge, 1500, "fe:4e:0a:1f:00:02")
    box = engine.create_sandbox("b", networks=["app"]).endpoints[0]
    assert addresses("b", "vm1") == ["10.31.0.2"]  # the network's resolver names the guest

    # Another uid may not attach (EPERM); the owner may, without any capability.
    refused = Responder(device, guest_mac, "10.31.0.2", 1.0, STRANGER, STRANGER)
    assert refused.first == "refused 1"
    refused.stop()
    guest = Responder(device, guest_mac, "10.31.0.2", 8.0, OWNER, OWNER)
    try:
        assert guest.first == "ready"
        assert ping("b", "10.31.0.2", 3) == 3

        # The port is locked to the guest's MAC and addresses: the positive control passes, forgeries don't.
        frames = {
            "GOOD": ethernet(box.mac, guest_mac, 0x0800, udp("10.31.0.2", "10.31.0.3", 5000, 5000, b"GOOD")),
            "FORGED-MAC": ethernet(box.mac, "02:4e:0a:1f:00:63", 0x0800,
                                   udp("10.31.0.2", "10.31.0.3", 5000, 5000, b"FORGED-MAC")),
            "FORGED-IP": ethernet(box.mac, guest_mac, 0x0800, udp("10.31.0.99", "10.31.0.3", 5000, 5000, b"FORGED-IP")),
        }
        at_box = capture("b", "eth0", 1.5, *frames)
        assert guest.send(list(frames.values()) * 3) == "sent 9"
        assert sorted(set(seen(at_box))) == ["GOOD"]
        assert guest.finish() == "echoes 3"
    finally:
        guest.stop()

    # Services select it by its labels, like any sandbox.
    assert cli("service", "create", "web", "--network", "app", "--port", "80", "--selector", "app=web").returncode == 0
    (service,) = json.loads(cli("service", "inspect", "web").stdout)
    assert [(b["Sandbox"], b["IPAddress"]) for b in service["Backends"]] == [("vm1", "10.31.0.2")]
    assert cli("service", "rm", "web").returncode == 0
    assert cli("check").stdout == ""
    # The tap outlives its user (persistent) and goes with the sandbox.
    assert [x["ifname"] for x in ip_json("link", "show", device)] == [device]
    assert cli("rm", "vm1").returncode == 0
    assert not os.path.exists(f"/sys/class/net/{device}") and cli("check").stdout == ""


def test_check_and_gc_see_a_tap_like_any_endpoint(engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    vm = engine.create_tap("vm1", network="app", uid=OWNER)
    device, bridge = vm.endpoints[0].host_ifname, engine.network("app").bridge
    for damage, drift in (
            (["ip", "link", "set", device, "down"], f"wrong: sandbox vm1: tap {device} is down"),
            (["ip", "link", "set", device, "nomaster"], f"wrong: sandbox vm1: tap {device} is not on bridge {bridge}"),
            (["ip", "link", "del", device], f"missing: sandbox vm1: tap {device} does not exist")):
        subprocess.run(damage, check=True)
        assert cli("check").stdout == f"{drift} (gc repairs it)\n"
        assert cli("gc").returncode == 0 and cli("check").stdout == ""
    (link,) = ip_json("-d", "link", "show", device)  # made again as recorded: owner, 0xfe MAC, on the bridge
    assert (link["linkinfo"]["info_data"]["user"], link["address"], link["master"]) == (
        OWNER, "fe:4e:0a:1f:00:02", bridge)
    # A tap of this ledger's that no row describes is an orphan gc deletes; the ledger's is kept.
    engine.create_tap("vm2", network="app")
    with engine._store.transaction():
        engine._store.delete_sandbox("vm2")
    assert "orphan: link nst" in cli("check").stdout
    assert cli("gc").returncode == 0 and cli("check").stdout == ""
    assert [s.name for s in engine.sandboxes()] == ["vm1"] and os.path.exists(f"/sys/class/net/{device}")
    # network rm -f takes its taps along.
    assert cli("network", "rm", "-f", "app").returncode == 0 and engine.sandboxes() == []


def test_bad_tap_requests_change_nothing(engine: Engine) -> None:
    engine.create_network("app", subnet="10.31.0.0/24")
    engine.create_tap("vm1", network="app")

    def state() -> tuple:
        return cli("ps", "--format", "json").stdout, sorted(x["ifname"] for x in ip_json("link"))

    before = state()
    for args, message in (
            (["vm2", "--kind", "tap", "--network", "none"],
             "invalid network 'none': a tap endpoint sits on a network's bridge; --kind tap needs one"),
            (["vm2", "--kind", "tap"], "invalid --network '(none given)': a tap endpoint needs exactly one network"
                                       " (its bridge)"),
            (["vm2", "--kind", "tap", "--network", "app", "--owner", "qemu"],
             "invalid owner 'qemu': is not a number from 0 to 4294967294"),
            (["vm2", "--kind", "tap", "--network", "app", "--group", "-1"],
             "invalid group '-1': is not a number from 0 to 4294967294"),
            (["vm2", "--kind", "tap", "--network", "app", "--mac", "fe:54:00:12:34:56"],
             "invalid mac 'fe:54:00:12:34:56': starts with fe, which the tap's own MAC takes (tap MAC = guest MAC"
             " with fe)"),
            (["vm2", "--kind", "tap", "--network", "app", "--mac", "02:4e:0a:1f:00:02"],
             "MAC address 02:4e:0a:1f:00:02 is taken on network 'app'"),
            (["vm2", "--network", "app", "--owner", "1000"], "invalid --owner '1000': applies to --kind tap only"),
            (["vm1", "--kind", "tap", "--network", "app"], "sandbox 'vm1' already exists"),
            (["vm2", "--kind", "tap", "--network", "app", "--ip", "10.31.0.2"],
             "ip 10.31.0.2 is already in use on 10.31.0.0/24"),
    ):
        done = cli("create", *args)
        assert (done.returncode, done.stderr.strip()) == (1, f"nsnet: error: {message}"), args
        assert state() == before
    refusal = ("nsnet: error: sandbox 'vm1' is a VM guest's tap ({}): it has no network namespace to run commands"
               " in, connect, link, route or intercept").format(engine.sandbox("vm1").endpoints[0].host_ifname)
    for args in (["exec", "vm1", "--", "true"], ["connect", "app", "vm1"], ["disconnect", "app", "vm1"]):
        done = cli(*args)
        assert (done.returncode, done.stderr.strip()) == (1, refusal), args
    assert state() == before and cli("check").stdout == ""


def test_a_qemu_guest_gets_its_address_and_talks_to_a_sandbox_both_ways(engine: Engine) -> None:
    """A real Linux (Debian's kernel, virtio-net, busybox) under QEMU on the tap, configured from the
    `ip=` argument nsnet gives: it connects to a sandbox's server and answers the sandbox and the
    host's published port with its own hostname."""
    root = guest_kernel.cached()
    assert root is not None, f"no guest kernel in {guest_kernel.CACHE}: run ./install.sh (it fetches one)"
    engine.create_network("app", subnet="10.31.0.0/24")
    done = cli("create", "vm1", "--kind", "tap", "--network", "app", "--mac", "52:54:00:12:34:56", "-p", "8080:80")
    assert done.returncode == 0, done.stderr
    engine.create_sandbox("b", networks=["app"])
    tap = _tap("vm1")
    assert tap["KernelIP"] == "ip=10.31.0.2::10.31.0.1:255.255.255.0:vm1:eth0:off"
    accel = _accelerator()
    with tempfile.TemporaryDirectory(prefix="nsnet-guest-") as work:
        initrd, console = os.path.join(work, "initrd.gz"), os.path.join(work, "console.log")
        with open(initrd, "wb") as f:
            f.write(guest_kernel.initramfs(root, GUEST_INIT))
        server = serve("b", "10.31.0.3", 7000, timeout=60.0)
        qemu = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", accel,
             "-m", "256", "-smp", "1", "-display", "none", "-no-reboot", "-serial", f"file:{console}",
             "-kernel", str(guest_kernel.vmlinuz(root)), "-initrd", initrd,
             "-append", f"console=ttyS0 panic=-1 quiet {tap['KernelIP']} nsnet.peer=10.31.0.3:7000",
             *tap["QemuArgs"]], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            def log() -> str:
                try:
                    with open(console, errors="replace") as f:
                        return f.read()
                except FileNotFoundError:
                    return ""

            eventually(lambda: "NSNET-GOT" in log() or qemu.poll() is not None, timeout=90.0, interval=0.2)
            assert "NSNET-GOT" in log(), (log(), qemu.poll(), qemu.stderr.read() if qemu.poll() is not None else "")
            assert "NSNET-GUEST-UP vm1 52:54:00:12:34:56" in log()
            assert "NSNET-GOT hello from 10.31.0.3" in log(), log()
            assert server.peers() == ["10.31.0.2"]  # the guest's own address reached the sandbox
            assert connect("b", "10.31.0.2", 80) == "guest vm1"
            assert connect(None, "10.31.0.1", 8080) == "guest vm1"  # the published port
            qemu.wait(timeout=30)  # the guest powers off once it has served both
            assert "NSNET-SERVED" in log(), log()
        finally:
            server.stop()
            if qemu.poll() is None:
                qemu.kill()
            qemu.wait()
    assert cli("check").stdout == ""


# The guest's /init: its virtio modules, its address from nsnet's `ip=` (Debian's kernel has no
# IP_PNP: the initramfs reads it, as initramfs-tools does), then the proofs, then power off.
GUEST_INIT = r"""#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
for m in $(cat /modules); do insmod "$m" || echo "NSNET-INSMOD-FAILED $m"; done
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        ip=*) set -- $(echo "${arg#ip=}" | tr ':' ' '); ADDR=$1; GW=$2; MASK=$3; HOST=$4; DEV=$5 ;;
        nsnet.peer=*) PEER=${arg#nsnet.peer=} ;;
    esac
done
hostname "$HOST"
ifconfig "$DEV" "$ADDR" netmask "$MASK" up
route add default gw "$GW"
echo "NSNET-GUEST-UP $(hostname) $(cat /sys/class/net/$DEV/address)"
( for i in 1 2; do echo "guest $(hostname)" | nc -l -p 80; done; echo NSNET-SERVED ) &
i=0
while [ $i -lt 100 ]; do
    got=$(nc -w 2 "${PEER%:*}" "${PEER#*:}" </dev/null)
    [ -n "$got" ] && break
    i=$((i + 1))
    sleep 0.2
done
echo "NSNET-GOT $got"
wait
sleep 0.2
poweroff -f
"""
