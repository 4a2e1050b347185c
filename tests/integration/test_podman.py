"""Podman (Debian 12's 4.3, its CNI backend) runs containers through nsnet: the real client of
the CNI plugin, inside the isolated host, with an image made from busybox (no registry here)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import NSNET, WAN6_HOST, WAN_HOST, WAN_PEER, cli, wait_clean
from .net import eventually, in_ns, ip_json, serve

BUSYBOX = "/usr/bin/busybox"  # Debian's busybox-static
PODMAN_CGROUPS = "/sys/fs/cgroup/*/libpod_parent"  # cgroupfs manager: conmon's and containers' cgroups
IMAGE = "localhost/nsnet-test-busybox"
CONFLIST = {"cniVersion": "1.0.0", "name": "app", "plugins": [
    {"type": "nsnet", "bridge": "cni-app", "isGateway": True, "ipMasq": True, "hairpinMode": True,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]},
     "capabilities": {"portMappings": True}}]}
DUAL_CONFLIST = {"cniVersion": "1.0.0", "name": "dual", "plugins": [
    {"type": "nsnet", "bridge": "cni-dual", "isGateway": True, "ipMasq": True,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.0.0/24"}], [{"subnet": "fd00:89::/64"}]],
              "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]},
     "capabilities": {"portMappings": True}}]}

Podman = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def podman(tmp_path: Path, state_dir: str) -> Iterator[Podman]:
    if not shutil.which("podman") or not shutil.which("runc"):
        pytest.fail("podman and runc are needed (install.sh installs them)")
    plugins, net_d, rootfs = tmp_path / "plugins", tmp_path / "net.d", tmp_path / "rootfs"
    subprocess.run([NSNET, "cni", "install", "--bin-dir", str(plugins)], check=True, capture_output=True)
    net_d.mkdir()
    (net_d / "20-app.conflist").write_text(json.dumps(CONFLIST))
    (net_d / "30-dual.conflist").write_text(json.dumps(DUAL_CONFLIST))
    conf = tmp_path / "containers.conf"
    # cgroupfs and a file event log: no systemd in the lab; runc: crun refuses this machine's
    # hybrid cgroups.
    conf.write_text(f'[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nruntime = "runc"\n'
                    f'[network]\nnetwork_backend = "cni"\ncni_plugin_dirs = ["{plugins}", "/usr/lib/cni"]\n'
                    f'network_config_dir = "{net_d}"\n')
    runroot = tempfile.mkdtemp(prefix="nsnet-podman-")  # Podman takes at most 50 characters
    base = ["podman", "--root", str(tmp_path / "root"), "--runroot", runroot, "--storage-driver", "vfs"]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CONTAINERS_CONF": str(conf), "NSNET_STATE_DIR": state_dir,
           "HOME": str(tmp_path)}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([*base, *args], capture_output=True, text=True, env=env, timeout=120)
        assert not check or done.returncode == 0, done
        return done

    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "www").mkdir()
    shutil.copy(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in ("sh", "httpd", "wget", "nc", "sleep"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "www" / "index.html").write_text("hello from a podman container\n")
    with tarfile.open(tmp_path / "rootfs.tar", "w") as tar:
        tar.add(rootfs, arcname=".")
    cgroups_before = set(glob.glob(PODMAN_CGROUPS))
    run("import", str(tmp_path / "rootfs.tar"), IMAGE)
    try:
        yield run
    finally:
        run("rm", "--all", "--force", check=False)
        run("system", "reset", "--force", check=False)
        shutil.rmtree(runroot, ignore_errors=True)
        cli("network", "rm", "-f", "app")
        cli("network", "rm", "-f", "dual")
        # Podman's cgroups live in the machine's hierarchies (the lab shares them): the empty
        # ones it made here go, deepest first; what was there before is left alone.
        for made in set(glob.glob(PODMAN_CGROUPS)) - cgroups_before:
            for directory, _, _ in sorted(os.walk(made), key=lambda entry: -entry[0].count("/")):
                try:
                    os.rmdir(directory)
                except OSError:
                    pass
    assert wait_clean() == {"links": [], "netns": [], "tables": []}


def sandboxes() -> list[dict]:
    return json.loads(cli("ps", "--format", "json").stdout)


def settles(predicate: Callable[[], bool]) -> bool:
    """Podman's network cleanup (DEL) runs in a process of its own after a container stops."""
    return eventually(predicate, timeout=10.0, interval=0.1)


def http_from(ns: str | None, url: str) -> str | None:
    """GET url from ns: the body, or None when it failed."""
    script = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=2).read().decode(), end='')"
    done = subprocess.run(in_ns(ns, [sys.executable, "-c", script]), capture_output=True, text=True, timeout=30)
    return done.stdout if done.returncode == 0 else None


def test_podman_runs_containers_through_nsnet(podman: Podman, wan: str) -> None:
    cid = podman("run", "-d", "--name", "web", "--network", "app", "-p", "8080:80", IMAGE,
                 "httpd", "-f", "-p", "80", "-h", "/www").stdout.strip()
    (web,) = sandboxes()
    assert (web["Name"], web["ContainerID"]) == (f"cni-{cid[:12]}", cid)
    assert web["Networks"]["app"]["IPAddress"] == "10.88.0.2"
    assert [l["ifname"] for l in ip_json("link", "show", "master", "cni-app")] == [
        web["Networks"]["app"]["HostInterface"]]
    # The published port answers from outside (the wan peer, through the host's address) ...
    assert settles(lambda: http_from(wan, f"http://{WAN_HOST}:8080/") == "hello from a podman container\n")
    assert http_from(None, "http://127.0.0.1:8080/") == "hello from a podman container\n"
    # ... another container reaches it on the network ...
    assert podman("run", "--rm", "--network", "app", IMAGE, "wget", "-qO-", "http://10.88.0.2/").stdout == \
        "hello from a podman container\n"
    # ... a service selects it by the name Podman passes (CNI_ARGS K8S_POD_NAME) ...
    made = cli("service", "create", "site", "--network", "app", "-p", "80", "--selector", "K8S_POD_NAME=web")
    assert made.returncode == 0, made.stderr
    vip = made.stdout.strip()
    assert [b["Sandbox"] for b in json.loads(cli("service", "inspect", "site").stdout)[0]["Backends"]] == [web["Name"]]
    assert podman("run", "--rm", "--network", "app", IMAGE, "wget", "-qO-", f"http://{vip}/").stdout == \
        "hello from a podman container\n"
    # ... and the lab's outside answers a container, seeing the host's address (masquerade).
    server = serve(wan, WAN_PEER, 9000)
    try:
        greeting = podman("run", "--rm", "--network", "app", IMAGE, "nc", WAN_PEER, "9000").stdout.strip()
        assert greeting == f"hello from {WAN_PEER}"
        assert server.peers() == [WAN_HOST]
    finally:
        server.stop()
    assert settles(lambda: len(sandboxes()) == 1), [(s["Name"], s["NetNS"], list(s["Networks"])) for s in sandboxes()]  # the --rm containers' DEL came

    # Stop and start: DEL, then ADD in a new namespace; the port works again.
    podman("stop", "-t", "0", "web")
    assert settles(lambda: sandboxes() == [])
    assert json.loads(cli("service", "inspect", "site").stdout)[0]["Backends"] == []  # left with its DEL
    podman("start", "web")
    (again,) = sandboxes()
    assert again["ContainerID"] == cid and again["NetNS"] != web["NetNS"]
    assert settles(lambda: http_from(wan, f"http://{WAN_HOST}:8080/") == "hello from a podman container\n")
    assert podman("run", "--rm", "--network", "app", IMAGE, "wget", "-qO-", f"http://{vip}/").stdout == \
        "hello from a podman container\n"  # and back with its ADD
    assert cli("service", "rm", "site").returncode == 0

    podman("rm", "-f", "web")
    assert settles(lambda: sandboxes() == [])
    assert cli("check").stdout == ""
    assert ip_json("link", "show", "master", "cni-app") == []


def test_podman_runs_a_dual_stack_container_through_nsnet(podman: Podman, wan: str) -> None:
    podman("run", "-d", "--name", "web6", "--network", "dual", "-p", "8086:80", IMAGE,
           "httpd", "-f", "-p", "80", "-h", "/www")
    (web,) = sandboxes()
    assert (web["Networks"]["dual"]["IPAddress"], web["Networks"]["dual"]["GlobalIPv6Address"]) == \
        ("10.89.0.2", "fd00:89::2")
    # Podman read both families from nsnet's result.
    seen = podman("inspect", "web6", "--format",
                  "{{.NetworkSettings.Networks.dual.IPAddress}} {{.NetworkSettings.Networks.dual.GlobalIPv6Address}}")
    assert seen.stdout.split() == ["10.89.0.2", "fd00:89::2"]
    # The published port answers from outside on both of the host's families ...
    assert settles(lambda: http_from(wan, f"http://[{WAN6_HOST}]:8086/") == "hello from a podman container\n")
    assert http_from(wan, f"http://{WAN_HOST}:8086/") == "hello from a podman container\n"
    # ... and another container reaches it over IPv6.
    assert podman("run", "--rm", "--network", "dual", IMAGE, "wget", "-qO-", "http://[fd00:89::2]/").stdout == \
        "hello from a podman container\n"
    podman("rm", "-f", "web6")
    assert settles(lambda: sandboxes() == [])
    assert cli("check").stdout == ""
