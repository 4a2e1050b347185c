"""Several hosts on one machine: `nsnet lab --hosts N [--etcd M]`, for users and for the tests of
overlay networks.

Inside a lab (nsnet.lab), whose own namespace becomes the underlay's switch:
- a bridge `underlay` (10.99.0.1/16), the LAN every host and etcd member is cabled to;
- etcd members e1..eM (Debian's etcd-server), each in a named namespace of the lab with its
  address (e1 = 10.99.0.10), its data on the lab's tmpfs;
- hosts h1..hN, each an isolated host as `nsnet lab` makes one (its own network, mount and UTS
  namespaces: private /run/netns, /etc/netns and state directory, host name hN), kept alive by a
  holder process, `eth0` on the underlay (h1 = 10.99.1.1), no default route.

Everything is in the lab's pid namespace and dies with it. The lab's command gets NSNET_CLUSTER
(the etcd members) and NSNET_LAB_HOSTS; `nsnet lab exec HOST -- CMD` runs a command in a host (or
in a member's namespace), and `nsnet lab cut|heal|kill|etcd` are the failures tests play. What
they need is in LAB_DIR, in the lab's own state directory (a tmpfs of the lab).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

from contextlib import closing
from ipaddress import ip_interface

from .errors import InvalidInput, NsnetError
from .kernel import netns
from .kernel.netns import CLONE_NEWNS, setns, unshare
from .kernel.rtnl import RtnlSocket
from .naming import netns_path
from .store import state_dir

# In the lab's state directory, a private tmpfs already (nsnet.lab): making a directory of its own
# elsewhere would leave an empty one on the real machine. Hosts mount their own state over it.
LAB_DIR = os.path.join(state_dir(), "lab-hosts")
STATE = os.path.join(LAB_DIR, "hosts.json")
SWITCH, SWITCH_ADDRESS, PREFIX = "underlay", "10.99.0.1", 16
SWITCH_MAC = "02:99:00:00:00:01"
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
ETCD_CACHE = "/var/cache/nsnet/etcd/usr/bin"  # install.sh extracts Debian's etcd-server and etcd-client here
READY_TIMEOUT_S = 20.0


def member_address(i: int) -> str:
    return f"10.99.0.{9 + i}"


def host_address(i: int) -> str:
    return f"10.99.{1 + (i - 1) // 250}.{1 + (i - 1) % 250}"


def etcd_binary(program: str = "etcd") -> str:
    """etcd (or etcdctl): on PATH, or where install.sh extracted Debian's packages."""
    cached = os.path.join(ETCD_CACHE, program)
    found = shutil.which(program) or (cached if os.access(cached, os.X_OK) else None)
    if found is None:
        raise NsnetError(f"no {program} here: install Debian's etcd-server and etcd-client (./install.sh fetches"
                         f" them) or put {program} on PATH")
    return found


def build(hosts: int, members: int, mtu: int) -> dict[str, str]:
    """Make the hosts, the members and the switch in this (the lab's init) process's namespaces;
    the environment the lab's command gets."""
    if not 1 <= hosts <= 500:
        raise InvalidInput("--hosts", hosts, "must be between 1 and 500")
    if not 0 <= members <= 7:
        raise InvalidInput("--etcd", members, "must be between 0 and 7")
    binary = etcd_binary() if members else ""
    os.makedirs(LAB_DIR, mode=0o700, exist_ok=True)
    with closing(RtnlSocket()) as sock:
        sock.create_bridge(SWITCH, mtu, SWITCH_MAC, 0)
        sock.add_address(sock.link_index(SWITCH), ip_interface(f"{SWITCH_ADDRESS}/{PREFIX}"), "the lab's switch")
    state: dict = {"hosts": {}, "etcd": {}}
    for i in range(1, hosts + 1):
        name = f"h{i}"
        pid = _holder(name)
        _cable(name, f"/proc/{pid}/ns/net", host_address(i), mtu)
        state["hosts"][name] = {"pid": pid, "address": host_address(i)}
    cluster = [f"e{i}=http://{member_address(i)}:2380" for i in range(1, members + 1)]
    for i in range(1, members + 1):
        name = f"e{i}"
        netns.create(name, lambda: None)
        _cable(name, netns_path(name), member_address(i), mtu)
        address = member_address(i)
        argv = [binary, "--name", name, "--data-dir", os.path.join(LAB_DIR, f"{name}.data"),
                "--listen-client-urls", f"http://{address}:2379", "--advertise-client-urls", f"http://{address}:2379",
                "--listen-peer-urls", f"http://{address}:2380", "--initial-advertise-peer-urls",
                f"http://{address}:2380", "--initial-cluster", ",".join(cluster), "--initial-cluster-state", "new",
                "--heartbeat-interval", "50", "--election-timeout", "500", "--pre-vote",
                "--auto-compaction-retention", "1", "--logger", "zap", "--log-outputs",
                os.path.join(LAB_DIR, f"{name}.log")]
        state["etcd"][name] = {"address": address, "argv": argv, "pid": 0}
    _save(state)
    for name in state["etcd"]:
        start_member(name)
    for name, member in state["etcd"].items():
        _wait_healthy(name, member["address"])
    env = {"NSNET_LAB_HOSTS": ",".join(state["hosts"])}
    if members:
        env["NSNET_CLUSTER"] = "etcd://" + ",".join(f"{member_address(i)}:2379" for i in range(1, members + 1))
    return env


def _holder(name: str) -> int:
    """A process that is host `name`: an isolated host of its own, sleeping until the lab ends."""
    from . import lab

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            unshare(CLONE_NEWUTS)
            socket.sethostname(name)
            lab.enter()
            os.write(write_end, b"ready\n")
            os.close(write_end)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            while True:
                signal.pause()
        except BaseException as exc:  # noqa: BLE001 - the lab must learn why
            os.write(write_end, f"error {exc}\n".encode())
        finally:
            os._exit(1)
    os.close(write_end)
    with os.fdopen(read_end) as answer:
        line = answer.readline().strip()
    if line != "ready":
        raise NsnetError(f"lab host {name} did not start: {line or 'it died'}")
    return pid


def _cable(name: str, path: str, address: str, mtu: int) -> None:
    """A veth from the switch (named after the host or member, up on the switch) to `eth0` in the
    namespace at `path`, addressed and up there."""
    def inside() -> None:
        with closing(RtnlSocket()) as sock:
            eth0 = sock.link_index("eth0")
            sock.add_address(eth0, ip_interface(f"{address}/{PREFIX}"), f"{name}'s eth0")
            sock.set_up(eth0, "eth0")
            sock.set_up(sock.link_index("lo"), "lo")

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with closing(RtnlSocket()) as sock:
            sock.create_veth(name, sock.link_index(SWITCH), mtu, "eth0", fd, None, 0)
        netns.in_netns_of(fd, inside)
    finally:
        os.close(fd)


def _wait_healthy(name: str, address: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{address}:2379/health", timeout=1) as answer:
                if json.loads(answer.read()).get("health") in (True, "true"):
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise NsnetError(f"lab etcd member {name} was not healthy within {READY_TIMEOUT_S:.0f} s"
                     f" (see {os.path.join(LAB_DIR, name + '.log')})")


def _save(state: dict) -> None:
    with open(STATE + ".new", "w") as handle:
        json.dump(state, handle)
    os.replace(STATE + ".new", STATE)


def _load() -> dict:
    try:
        with open(STATE) as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise NsnetError("not inside a multi-host lab (nsnet lab --hosts N -- CMD)") from None


# Control, from any process of the lab

def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def start_member(name: str) -> int:
    state = _load()
    member = state["etcd"].get(name)
    if member is None:
        raise InvalidInput("NAME", name, "is no etcd member of this lab")
    if member["pid"] and _alive(member["pid"]):
        raise NsnetError(f"etcd member {name} runs already (pid {member['pid']})")
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # a grandchild runs etcd, adopted by the lab's init
        os.close(read_end)
        os.setsid()
        grandchild = os.fork()
        if grandchild:
            os.write(write_end, f"{grandchild}\n".encode())
            os._exit(0)
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        setns(fd, CLONE_NEWNET)
        devnull = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(devnull, target)
        os.execv(member["argv"][0], member["argv"])
    os.close(write_end)
    with os.fdopen(read_end) as answer:
        pid = int(answer.readline())
    os.waitpid(child, 0)
    member["pid"] = pid
    _save(state)
    return pid


def stop_member(name: str, sig: int = signal.SIGTERM) -> None:
    state = _load()
    member = state["etcd"].get(name)
    if member is None:
        raise InvalidInput("NAME", name, "is no etcd member of this lab")
    pid = member["pid"]
    if pid and _alive(pid):
        os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    member["pid"] = 0
    _save(state)


def set_link(name: str, up: bool) -> None:
    """The switch side of a host's or member's cable down (cut) or up (heal)."""
    state = _load()
    if name not in state["hosts"] and name not in state["etcd"]:
        raise InvalidInput("NAME", name, "is no host or etcd member of this lab")

    def switch() -> None:
        with closing(RtnlSocket()) as sock:
            (sock.set_up if up else sock.set_down)(sock.link_index(name), name)

    fd = os.open("/proc/1/ns/net", os.O_RDONLY | os.O_CLOEXEC)  # the switch's: the lab's first process's
    try:
        netns.in_netns_of(fd, switch)
    finally:
        os.close(fd)


def kill_host(name: str) -> int:
    """Host death: every process in the host's mount namespace killed (its holder, agents,
    resolvers, sandboxes' processes); its namespaces and links then go with them."""
    state = _load()
    host = state["hosts"].get(name)
    if host is None:
        raise InvalidInput("HOST", name, "is no host of this lab")
    set_link(name, False)
    target = os.readlink(f"/proc/{host['pid']}/ns/mnt") if _alive(host["pid"]) else None
    killed = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if target and os.readlink(f"/proc/{pid}/ns/mnt") == target:
                os.kill(int(pid), signal.SIGKILL)
                killed += 1
        except OSError:
            continue
    return killed


def exec_in(name: str, argv: list[str]) -> int:
    """Run argv in host `name` (or member `name`'s namespace); its exit status."""
    state = _load()
    argv = argv or [os.environ.get("SHELL", "/bin/sh")]
    if name in state["hosts"]:
        pid = state["hosts"][name]["pid"]
        if not _alive(pid):
            raise NsnetError(f"lab host {name} is dead (nsnet lab kill)")
        fds = {kind: os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY) for kind in ("uts", "net", "mnt")}
        cwd = os.getcwd()
        for kind, flag in (("uts", CLONE_NEWUTS), ("net", CLONE_NEWNET), ("mnt", CLONE_NEWNS)):
            setns(fds[kind], flag)
            os.close(fds[kind])
        try:
            os.chdir(cwd)
        except OSError:
            os.chdir("/")
    elif name in state["etcd"]:
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        setns(fd, CLONE_NEWNET)
        os.close(fd)
    else:
        raise InvalidInput("HOST", name, f"is no host or member of this lab ({', '.join([*state['hosts'], *state['etcd']])})")
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        sys.stderr.write(f"nsnet lab exec: {argv[0]}: {exc.strerror}\n")
        return 127 if isinstance(exc, FileNotFoundError) else 126
    return 0  # not reached


@dataclass
class Hosts:
    """The multi-host lab this process is in, for tests and benchmarks."""

    names: list[str]
    etcd_members: list[str]
    addresses: dict[str, str]

    @classmethod
    def current(cls) -> Hosts:
        state = _load()
        addresses = {**{n: h["address"] for n, h in state["hosts"].items()},
                     **{n: m["address"] for n, m in state["etcd"].items()}}
        return cls(list(state["hosts"]), list(state["etcd"]), addresses)

    def address(self, name: str) -> str:
        return self.addresses[name]

    def _argv(self, host: str, argv: list[str]) -> list[str]:
        return [sys.executable, "-m", "nsnet", "lab", "exec", host, "--", *argv]

    def run(self, host: str, argv: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self._argv(host, argv), check=check, **kwargs)

    def popen(self, host: str, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self._argv(host, argv), **kwargs)

    def cut(self, name: str) -> None:
        set_link(name, False)

    def heal(self, name: str) -> None:
        set_link(name, True)

    def kill(self, host: str) -> None:
        kill_host(host)

    def etcd_stop(self, name: str) -> None:
        stop_member(name)

    def etcd_start(self, name: str) -> None:
        start_member(name)
        _wait_healthy(name, self.addresses[name])


def control(words: list[str]) -> int:
    """`nsnet lab exec|cut|heal|kill|etcd ...`: one line on success, the error as one line else."""
    verb, rest = words[0], words[1:]
    if verb == "exec":
        if not rest:
            raise InvalidInput("HOST", None, "nsnet lab exec HOST [-- CMD ARG...]")
        command = rest[1:]
        if command[:1] == ["--"]:
            command = command[1:]
        return exec_in(rest[0], command)
    if verb in ("cut", "heal", "kill") and len(rest) == 1:
        if verb == "kill":
            print(f"killed {kill_host(rest[0])} process(es) of {rest[0]}")
        else:
            set_link(rest[0], verb == "heal")
        return 0
    if verb == "etcd" and len(rest) == 2 and rest[0] in ("start", "stop", "kill"):
        if rest[0] == "start":
            start_member(rest[1])
            _wait_healthy(rest[1], _load()["etcd"][rest[1]]["address"])
        else:
            stop_member(rest[1], signal.SIGKILL if rest[0] == "kill" else signal.SIGTERM)
        return 0
    raise InvalidInput("lab", " ".join(words), "use exec HOST -- CMD, cut|heal|kill NAME or etcd start|stop|kill NAME")

