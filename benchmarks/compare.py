"""Side-by-side control-plane benchmark: nsnet (API and CLI), the CNI reference plugins and netavark,
each doing the same work: N sandboxes on one network, each publishing ONE TCP port, then removal of all.

Run it from the repository root, inside a throwaway isolated host (it refuses to run anywhere else):

    .venv/bin/nsnet lab -- .venv/bin/python benchmarks/compare.py
    .venv/bin/nsnet lab -- .venv/bin/python benchmarks/compare.py --quick

The contenders, per sandbox i (name sbNNNN, host port 10000+i to sandbox port 80/tcp):
- api: one in-process nsnet `Engine`: create_sandbox(name, networks=[net], publish=["HP:80"]), then
  remove_sandbox(name, force=True). Network 10.40.0.0/16, made before timing starts.
- cli: one `nsnet create NAME --network NET -p HP:80` process per attach, one `nsnet rm -f NAME` per
  detach, wall time of the process (Python startup included). Same network, made by the CLI.
- cni: the CNI reference plugins 1.1.1, run as a runtime runs them: `ip netns add NAME`, then
  /usr/lib/cni/bridge ADD (isGateway, ipMasq, hairpinMode, host-local IPAM on 10.41.0.0/16 with its
  dataDir in a private temporary directory), then /usr/lib/cni/portmap ADD with the bridge's result
  as prevResult and runtimeConfig.portMappings; detach is portmap DEL, bridge DEL, `ip netns delete`.
- plugin: nsnet's CNI plugin (`nsnet cni install`), run as a runtime runs it in place of the cni
  chain below: `ip netns add NAME`, one ADD (the reference bridge keys, host-local's format on
  10.43.0.0/16, runtimeConfig.portMappings), then DEL and `ip netns delete`. Its first ADD makes the
  network, as the bridge plugin's first ADD makes its bridge.
- netavark: netavark 1.4.0 (iptables driver, as 1.4 has no other on a host without firewalld):
  `ip netns add NAME`, then `netavark --config DIR setup /run/netns/NAME` with the network options
  JSON on stdin (network 10.42.0.0/16 on bridge nvbr0, a static IP allocated here, one port
  mapping, DNS off); detach is `netavark teardown` with the same JSON, then `ip netns delete`.
The netns is part of every contender's attach and detach (nsnet's attach makes its netns too).
Neither CNI nor netavark brings `lo` up in the sandbox (a runtime does that separately); nsnet does,
so nsnet does slightly more work.

Fairness on a noisy 2-core VM: every (contender, N, round) runs in a fresh isolated host of its own
(a new network namespace and mount namespace nested in the lab, with private tmpfs on /run,
/var/lib, /run/netns, /etc/netns and nsnet's state directory), so each starts from an empty firewall
and no contender's leftovers lengthen another's iptables chains. The contenders run phase by
phase (all N attaches, then all N detaches, then the host is discarded), interleaved per round:
round r runs them in an order rotated by r, so none is always first or last; samples are pooled
over the rounds. Sandboxes are not alternated one by one between contenders, because all four
would then share one firewall and slow each other down.

nsnet's CLI runs with its bytecode cached (in a private PYTHONPYCACHEPREFIX tree, filled before timing),
as it does after `pip install`; this repository's editable install under PYTHONDONTWRITEBYTECODE=1
would recompile nsnet in every process (`--cli-bytecode as-is` measures that). The whole run uses a
snapshot of the nsnet package and its console script (see run_from_snapshot).

Reported per contender and N: attach and detach p50/p95 (ms), growth (median of the last N/10
attaches over the first N/10), settle (from the last detach until the kernel has destroyed every
sandbox veth: nsnet deletes the namespace and the kernel removes its veth afterwards, CNI deletes the
veth first), firewall objects per sandbox (nft rules + set/map elements in the whole ruleset after
all N attaches minus before the first, over N; iptables here is iptables-nft, so its rules are in that
count too, and `iptables-save` -A lines are shown apart), and processes per operation (from strace on
a separate sample of 3 attaches and 3 detaches per contender, see count_processes), plus the new
kernel tasks per operation (processes and threads, from /proc/loadavg's last PID, every operation).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import nsnet
from nsnet.store import state_dir

from harness import (
    host, in_fresh_host, nsnet_executable, percentile, refuse_outside_lab, remove_snapshot, run_from_snapshot, save_json,
    source_state,
)

LAB_COMMAND = ".venv/bin/nsnet lab -- .venv/bin/python benchmarks/compare.py"
CONTENDERS = ("api", "cli", "plugin", "cni", "netavark")
DEFAULT_COUNTS = "1,100,250"
DEFAULT_API_COUNTS = "1000"  # nsnet's API only: the others would take minutes per phase
QUICK_COUNTS = "1,20"
QUICK_API_COUNTS = "100"
SANDBOX_PORT = 80
FIRST_HOST_PORT = 10000
PYCACHE_ENV = "NSNET_BENCH_PYCACHE"  # the CLI contender's private bytecode cache, set by main
TRACE_OPS = 3  # attaches and detaches traced with strace per contender
COMMAND_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 120.0

CNI_DIR = "/usr/lib/cni"
NETAVARK = "/usr/lib/podman/netavark"
NSNET_NET, NSNET_SUBNET = "bench", "10.40.0.0/16"
CNI_NET, CNI_SUBNET, CNI_BRIDGE = "cnibench", "10.41.0.0/16", "cnibr0"
NETAVARK_NET, NETAVARK_SUBNET, NETAVARK_BRIDGE = "nvbench", "10.42.0.0/16", "nvbr0"
PLUGIN_NET, PLUGIN_SUBNET, PLUGIN_BRIDGE = "plbench", "10.43.0.0/16", "plbr0"

# Reference figures (DESIGN.md "Measured anchors" and issue 5, this VM, measured earlier), at N=100.
REFERENCE = {
    "cni": {"attach": 120.0, "detach": 238.0, "first": 107.0, "last": 272.0},
    "netavark": {"attach": 59.0, "detach": 104.0, "first": 44.0, "last": 107.0},
}

# Private tmpfs mounted over these in every phase's host, before nsnet's lab mounts its own: state
# that a plugin might keep outside the directories it is given lands there and dies with the phase.


def sandbox_name(index: int) -> str:
    return f"sb{index:04d}"


def host_port(index: int) -> int:
    return FIRST_HOST_PORT + index


# Contenders: the same three calls each; every external command is run through Runner

class Runner:
    """Runs the external commands of one operation, times each one (`steps`), fails on non-zero."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env
        self.steps: list[tuple[str, float]] = []

    def __call__(self, label: str, argv: Sequence[str], stdin: str | None = None,
                 env: dict[str, str] | None = None) -> str:
        start = time.perf_counter()
        done = subprocess.run(list(argv), input=stdin, env=env or self.env, capture_output=True, text=True,
                              check=False, timeout=COMMAND_TIMEOUT_S)
        self.steps.append((label, (time.perf_counter() - start) * 1000.0))
        if done.returncode != 0:
            output = (done.stderr or done.stdout).strip()[-2000:]
            raise RuntimeError(f"`{' '.join(argv)}` exited {done.returncode}: {output}")
        return done.stdout


class Contender:
    name = ""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.run = Runner()

    def setup(self) -> None:
        """What exists before the first sandbox (not timed)."""

    def attach(self, index: int) -> None:
        raise NotImplementedError

    def detach(self, index: int) -> None:
        raise NotImplementedError

    def teardown(self) -> None:
        """Remove what setup and the first attach made (not timed)."""


class Api(Contender):
    name = "api"

    def __init__(self, workdir: str) -> None:
        super().__init__(workdir)
        from nsnet import Engine

        self._engine = Engine(state_dir=workdir)

    def setup(self) -> None:
        self._engine.create_network(NSNET_NET, subnet=NSNET_SUBNET)

    def attach(self, index: int) -> None:
        self._engine.create_sandbox(sandbox_name(index), networks=[NSNET_NET],
                                    publish=[f"{host_port(index)}:{SANDBOX_PORT}"])

    def detach(self, index: int) -> None:
        self._engine.remove_sandbox(sandbox_name(index), force=True)

    def teardown(self) -> None:
        self._engine.remove_network(NSNET_NET, force=True)
        self._engine.close()


class Cli(Contender):
    name = "cli"

    def __init__(self, workdir: str) -> None:
        super().__init__(workdir)
        self._nsnet = nsnet_executable()
        self.run.env = cli_environment(dict(os.environ, NSNET_STATE_DIR=workdir))

    def setup(self) -> None:
        self.run("network create", [self._nsnet, "network", "create", NSNET_NET, "--subnet", NSNET_SUBNET])

    def attach(self, index: int) -> None:
        self.run("nsnet create", [self._nsnet, "create", sandbox_name(index), "--network", NSNET_NET,
                                  "-p", f"{host_port(index)}:{SANDBOX_PORT}"])

    def detach(self, index: int) -> None:
        self.run("nsnet rm -f", [self._nsnet, "rm", "-f", sandbox_name(index)])

    def teardown(self) -> None:
        self.run("network rm", [self._nsnet, "network", "rm", NSNET_NET])


class Cni(Contender):
    """The CNI reference plugins chained bridge -> portmap, with the runtime's part done here."""

    name = "cni"

    def __init__(self, workdir: str) -> None:
        super().__init__(workdir)
        self._ip = tool("ip")
        self._ids: dict[int, str] = {}
        self._portmap_conf: dict[int, str] = {}
        self._bridge_conf = json.dumps({
            "cniVersion": "1.0.0", "name": CNI_NET, "type": "bridge", "bridge": CNI_BRIDGE,
            "isGateway": True, "ipMasq": True, "hairpinMode": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": CNI_SUBNET}]], "routes": [{"dst": "0.0.0.0/0"}],
                     "dataDir": os.path.join(workdir, "cni-ipam")},
        })

    def _env(self, command: str, index: int) -> dict[str, str]:
        return dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID=self._ids[index],
                    CNI_NETNS=f"/run/netns/{sandbox_name(index)}", CNI_IFNAME="eth0", CNI_PATH=CNI_DIR)

    def _portmap(self, index: int, prev_result: dict[str, Any]) -> str:
        return json.dumps({
            "cniVersion": "1.0.0", "name": CNI_NET, "type": "portmap", "capabilities": {"portMappings": True},
            "snat": True, "prevResult": prev_result,
            "runtimeConfig": {"portMappings": [{"hostPort": host_port(index), "containerPort": SANDBOX_PORT,
                                                "protocol": "tcp"}]},
        })

    def attach(self, index: int) -> None:
        self._ids[index] = os.urandom(32).hex()
        self.run("ip netns add", [self._ip, "netns", "add", sandbox_name(index)])
        result = json.loads(self.run("bridge ADD", [f"{CNI_DIR}/bridge"], self._bridge_conf, self._env("ADD", index)))
        self._portmap_conf[index] = self._portmap(index, result)
        self.run("portmap ADD", [f"{CNI_DIR}/portmap"], self._portmap_conf[index], self._env("ADD", index))

    def detach(self, index: int) -> None:
        self.run("portmap DEL", [f"{CNI_DIR}/portmap"], self._portmap_conf.pop(index), self._env("DEL", index))
        self.run("bridge DEL", [f"{CNI_DIR}/bridge"], self._bridge_conf, self._env("DEL", index))
        self.run("ip netns delete", [self._ip, "netns", "delete", sandbox_name(index)])
        del self._ids[index]


class Plugin(Contender):
    """nsnet's CNI plugin (`nsnet cni install`) in place of the bridge -> portmap chain: one ADD
    with runtimeConfig.portMappings, one DEL, the runtime's part (the netns) done here as for cni."""

    name = "plugin"

    def __init__(self, workdir: str) -> None:
        super().__init__(workdir)
        from nsnet.cni.install import install

        self._ip = tool("ip")
        self._plugin = install(os.path.join(workdir, "cni-bin"), workdir)
        self._ids: dict[int, str] = {}
        self._conf = {"cniVersion": "1.0.0", "name": PLUGIN_NET, "type": "nsnet", "bridge": PLUGIN_BRIDGE,
                      "isGateway": True, "ipMasq": True, "hairpinMode": True,
                      "ipam": {"type": "host-local", "ranges": [[{"subnet": PLUGIN_SUBNET}]],
                               "routes": [{"dst": "0.0.0.0/0"}]},
                      "capabilities": {"portMappings": True}}

    def _call(self, command: str, index: int) -> str:
        env = dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID=self._ids[index],
                   CNI_NETNS=f"/run/netns/{sandbox_name(index)}", CNI_IFNAME="eth0", CNI_PATH=CNI_DIR)
        conf = {**self._conf, "runtimeConfig": {"portMappings": [
            {"hostPort": host_port(index), "containerPort": SANDBOX_PORT, "protocol": "tcp"}]}}
        return self.run(f"nsnet {command}", [self._plugin], json.dumps(conf), env)

    def attach(self, index: int) -> None:
        self._ids[index] = os.urandom(32).hex()
        self.run("ip netns add", [self._ip, "netns", "add", sandbox_name(index)])
        self._call("ADD", index)

    def detach(self, index: int) -> None:
        self._call("DEL", index)
        self.run("ip netns delete", [self._ip, "netns", "delete", sandbox_name(index)])
        del self._ids[index]

    def teardown(self) -> None:
        from nsnet import Engine

        with Engine(state_dir=self.workdir) as engine:
            engine.remove_network(PLUGIN_NET, force=True)


class Netavark(Contender):
    """netavark 1.4: the caller (Podman) allocates the address and passes it as static_ips."""

    name = "netavark"

    def __init__(self, workdir: str) -> None:
        super().__init__(workdir)
        self._ip = tool("ip")
        self._config = os.path.join(workdir, "netavark")
        os.makedirs(self._config)
        self._subnet = ipaddress.IPv4Network(NETAVARK_SUBNET)
        self._network_id = os.urandom(32).hex()
        self._options: dict[int, str] = {}
        self.run.env = dict(os.environ, NETAVARK_FW="iptables")

    def _network_options(self, index: int) -> str:
        return json.dumps({
            "container_id": os.urandom(32).hex(),
            "container_name": sandbox_name(index),
            "port_mappings": [{"host_ip": "", "container_port": SANDBOX_PORT, "host_port": host_port(index),
                               "range": 1, "protocol": "tcp"}],
            "networks": {NETAVARK_NET: {"interface_name": "eth0",
                                        "static_ips": [str(self._subnet[index + 2])]}},
            "network_info": {NETAVARK_NET: {
                "name": NETAVARK_NET, "id": self._network_id, "driver": "bridge",
                "network_interface": NETAVARK_BRIDGE, "subnets": [{"subnet": NETAVARK_SUBNET,
                                                                   "gateway": str(self._subnet[1])}],
                "ipv6_enabled": False, "internal": False, "dns_enabled": False,
            }},
        })

    def attach(self, index: int) -> None:
        name = sandbox_name(index)
        self._options[index] = self._network_options(index)
        self.run("ip netns add", [self._ip, "netns", "add", name])
        self.run("netavark setup", [NETAVARK, "--config", self._config, "setup", f"/run/netns/{name}"],
                 self._options[index])

    def detach(self, index: int) -> None:
        name = sandbox_name(index)
        self.run("netavark teardown", [NETAVARK, "--config", self._config, "teardown", f"/run/netns/{name}"],
                 self._options.pop(index))
        self.run("ip netns delete", [self._ip, "netns", "delete", name])


DRIVERS: dict[str, Callable[[str], Contender]] = {"api": Api, "cli": Cli, "plugin": Plugin, "cni": Cni,
                                                  "netavark": Netavark}


def cli_environment(env: dict[str, str]) -> dict[str, str]:
    """With a bytecode cache (PYCACHE_ENV names it), nsnet's CLI runs as it does after `pip install`,
    which compiles every module once; this repository's editable install under an environment that
    sets PYTHONDONTWRITEBYTECODE recompiles nsnet's sources in every process (~15 ms)."""
    cache = env.get(PYCACHE_ENV)
    if cache:
        env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = cache  # a private tree: nothing is written into src/
    return env


def warm_cli_cache() -> None:
    """Fill the bytecode cache with every module a CLI attach and detach import (in a fresh host)."""
    workdir = tempfile.mkdtemp(prefix="warm-cli-", dir=state_dir())
    driver = Cli(workdir)
    try:
        driver.setup()
        for _ in range(2):
            driver.attach(0)
            driver.run("ps", [nsnet_executable(), "ps"])
            driver.detach(0)
        wait_until_settled()
        driver.teardown()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def tool(name: str) -> str:
    """Absolute paths everywhere, so no exec walks PATH (a failed execve per PATH entry)."""
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"compare.py: {name} not found")
    return found


def missing_tools(contenders: Sequence[str]) -> list[str]:
    needed = {"cni": [f"{CNI_DIR}/bridge", f"{CNI_DIR}/portmap", f"{CNI_DIR}/host-local"], "netavark": [NETAVARK]}
    wanted = [path for c in contenders for path in needed.get(c, [])]
    wanted += [t for t in ("nft", "iptables-save", "ip", "strace") if shutil.which(t) is None]
    return [path for path in wanted if not os.access(path, os.X_OK) and shutil.which(path) is None]


# Observation inside a phase's host

def last_pid() -> int:
    """The last PID the kernel handed out (processes and threads alike), from /proc/loadavg."""
    with open("/proc/loadavg") as handle:
        return int(handle.read().split()[-1])


def firewall_objects() -> dict[str, int]:
    """nft rules, set/map elements and chains of the whole ruleset; iptables-save -A lines."""
    ruleset = json.loads(subprocess.run(["nft", "-j", "list", "ruleset"], check=True, capture_output=True,
                                        text=True).stdout or '{"nftables": []}')["nftables"]
    rules = sum(1 for item in ruleset if "rule" in item)
    elements = sum(len(item[kind].get("elem", [])) for item in ruleset for kind in ("set", "map") if kind in item)
    chains = sum(1 for item in ruleset if "chain" in item)
    saved = subprocess.run(["iptables-save"], check=True, capture_output=True, text=True).stdout
    return {"nft_rules": rules, "nft_elements": elements, "nft_chains": chains,
            "iptables_rules": sum(1 for line in saved.splitlines() if line.startswith("-A "))}


def sandbox_links() -> list[str]:
    """Interfaces of this host other than lo and bridges: the host ends of sandbox veths."""
    return [name for name in os.listdir("/sys/class/net")
            if name != "lo" and not os.path.isdir(f"/sys/class/net/{name}/bridge")]


def wait_until_settled(timeout_s: float = SETTLE_TIMEOUT_S) -> float:
    start = time.perf_counter()
    while sandbox_links():
        if time.perf_counter() - start > timeout_s:
            raise RuntimeError(f"veths still there {timeout_s:.0f} s after the last detach: {sandbox_links()[:10]}")
        time.sleep(0.002)
    return (time.perf_counter() - start) * 1000.0


# One phase: N attaches then N detaches, in a fresh host

def timed(action: Callable[[int], None], index: int) -> tuple[float, int]:
    pid = last_pid()
    start = time.perf_counter()
    action(index)
    elapsed = (time.perf_counter() - start) * 1000.0
    tasks = last_pid() - pid
    return elapsed, tasks if tasks >= 0 else -1  # -1: the PID counter wrapped


def run_phase(contender: str, n: int) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix=f"compare-{contender}-", dir=state_dir())
    driver = DRIVERS[contender](workdir)
    phase: dict[str, Any] = {"attach_ms": [], "detach_ms": [], "attach_tasks": [], "detach_tasks": [],
                             "attach_steps": [], "detach_steps": []}
    try:
        driver.setup()
        phase["fw_before"] = firewall_objects()
        for kind, action in (("attach", driver.attach), ("detach", driver.detach)):
            for index in range(n):
                driver.run.steps = []
                elapsed, tasks = timed(action, index)
                phase[f"{kind}_ms"].append(elapsed)
                phase[f"{kind}_tasks"].append(tasks)
                phase[f"{kind}_steps"].append(driver.run.steps)
            if kind == "attach":
                phase["fw_after"] = firewall_objects()
        phase["settle_ms"] = wait_until_settled()
        phase["fw_left"] = firewall_objects()
        driver.run.steps = []  # teardown's commands belong to no operation
        driver.teardown()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    left = sorted(os.listdir("/run/netns"))
    if left:
        raise RuntimeError(f"{contender}: namespaces left after the phase: {left[:10]}")
    return phase


# Fresh isolated hosts: a forked child per phase

# Processes per operation: strace on a sample

MARKER = 2_100_000_000  # getsid(MARKER + k): no such process; marks where operation k starts in the trace
STRACE_SYSCALLS = "execve,clone,clone3,fork,vfork,getsid"


def trace_sample(contender: str) -> dict[str, Any]:
    """Run `compare.py --trace-sample CONTENDER` under `strace -f` (in this fresh host) and count, per
    operation: processes created (clone/clone3 without CLONE_THREAD, fork, vfork, by anyone: the
    runtime's own fork of a plugin counts), successful execve calls (and of what), threads created."""
    log = os.path.join(state_dir(), f"strace-{contender}.log")
    try:
        subprocess.run([tool("strace"), "-f", "-qq", "-o", log, "-e", f"trace={STRACE_SYSCALLS}", "--",
                        sys.executable, os.path.abspath(__file__), "--trace-sample", contender],
                       check=True, timeout=600, stdout=subprocess.DEVNULL)
        with open(log) as handle:
            return count_processes(handle.read().splitlines())
    finally:
        if os.path.exists(log):
            os.unlink(log)


def trace_sample_child(contender: str) -> None:
    """Inside strace: setup, TRACE_OPS attaches, TRACE_OPS detaches, each preceded by its marker."""
    workdir = tempfile.mkdtemp(prefix=f"trace-{contender}-", dir=state_dir())
    driver = DRIVERS[contender](workdir)
    try:
        driver.setup()
        for offset, action in ((0, driver.attach), (TRACE_OPS, driver.detach)):
            for index in range(TRACE_OPS):
                mark(offset + index)
                action(index)
        mark(2 * TRACE_OPS)
        wait_until_settled()
        driver.teardown()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def mark(k: int) -> None:
    try:
        os.getsid(MARKER + k)
    except OSError:
        pass


CLONE_CALL = re.compile(r"\b(clone3?|v?fork)\(")
RESUMED = re.compile(r"<\.\.\. (clone3?|v?fork|execve) resumed>")
RESULT = re.compile(r"= (-?\d+)")
EXECVE = re.compile(r'\bexecve\("([^"]*)"')


def count_processes(lines: list[str]) -> dict[str, Any]:
    """Per marked operation: {"processes", "threads", "execs", "programs"}; then medians per kind."""
    ops: dict[int, dict[str, Any]] = {}
    current: int | None = None
    pending: dict[str, tuple[str, str]] = {}  # pid -> (syscall, text before <unfinished ...>)

    def bucket() -> dict[str, Any] | None:
        if current is None or current >= 2 * TRACE_OPS:
            return None
        return ops.setdefault(current, {"processes": 0, "threads": 0, "execs": 0, "programs": []})

    for line in lines:
        pid, _, text = line.partition(" ")
        text = text.strip()
        if text.startswith("getsid("):
            value = int(text[len("getsid("):text.index(")")])
            if value >= MARKER:
                current = value - MARKER
            continue
        if text.endswith("<unfinished ...>"):
            call = CLONE_CALL.search(text) or EXECVE.search(text)
            if call:
                pending[pid] = ("execve" if text.startswith("execve(") else call.group(1), text)
            continue
        resumed = RESUMED.search(text)
        if resumed:
            name, head = pending.pop(pid, (resumed.group(1), ""))
            full = head + text
        elif text.startswith("execve("):
            name, full = "execve", text
        else:
            call = CLONE_CALL.match(text)
            if not call:
                continue
            name, full = call.group(1), text
        result = RESULT.findall(full)
        if not result or int(result[-1]) < 0:
            continue
        target = bucket()
        if target is None:
            continue
        if name == "execve":
            target["execs"] += 1
            program = EXECVE.search(full)
            target["programs"].append(os.path.basename(program.group(1)) if program else "?")
        elif "CLONE_THREAD" in full:
            target["threads"] += 1
        else:
            target["processes"] += 1
    summary: dict[str, Any] = {"ops": {str(k): v for k, v in sorted(ops.items())}}
    for kind, first in (("attach", 0), ("detach", TRACE_OPS)):
        sample = [ops.get(k, {"processes": 0, "threads": 0, "execs": 0, "programs": []})
                  for k in range(first, first + TRACE_OPS)]
        for key in ("processes", "threads", "execs"):
            summary[f"{kind}_{key}"] = statistics.median(op[key] for op in sample)
        summary[f"{kind}_programs"] = sample[-1]["programs"]
    return summary


# Aggregation over rounds

@dataclass
class Result:
    contender: str
    n: int
    phases: list[dict[str, Any]] = field(default_factory=list)

    def pooled(self, key: str) -> list[float]:
        return [value for phase in self.phases for value in phase[key]]


def growth_window(n: int) -> int:
    return n // 10


def window_medians(result: Result, key: str) -> tuple[float, float] | None:
    """Medians of the first and last N/10 operations, pooled over the rounds."""
    window = growth_window(result.n)
    if window < 1:
        return None
    first = [v for phase in result.phases for v in phase[key][:window]]
    last = [v for phase in result.phases for v in phase[key][-window:]]
    return statistics.median(first), statistics.median(last)


def per_sandbox(result: Result, key: str) -> float:
    values = [(phase["fw_after"][key] - phase["fw_before"][key]) / result.n for phase in result.phases]
    return statistics.median(values)


def step_medians(result: Result, kind: str) -> dict[str, float]:
    steps: dict[str, list[float]] = {}
    for phase in result.phases:
        for op in phase[f"{kind}_steps"]:
            for label, ms in op:
                steps.setdefault(label, []).append(ms)
    return {label: statistics.median(values) for label, values in steps.items()}


def summary(result: Result, traced: dict[str, Any] | None) -> dict[str, Any]:
    attach, detach = result.pooled("attach_ms"), result.pooled("detach_ms")
    s: dict[str, Any] = {
        "rounds": len(result.phases),
        "attach_p50_ms": percentile(attach, 0.50), "attach_p95_ms": percentile(attach, 0.95),
        "detach_p50_ms": percentile(detach, 0.50), "detach_p95_ms": percentile(detach, 0.95),
        "attach_first_last_ms": window_medians(result, "attach_ms"),
        "detach_first_last_ms": window_medians(result, "detach_ms"),
        "settle_ms": statistics.median(phase["settle_ms"] for phase in result.phases),
        "nft_per_sandbox": per_sandbox(result, "nft_rules") + per_sandbox(result, "nft_elements"),
        "nft_rules_per_sandbox": per_sandbox(result, "nft_rules"),
        "nft_elements_per_sandbox": per_sandbox(result, "nft_elements"),
        "nft_chains_per_sandbox": per_sandbox(result, "nft_chains"),
        "iptables_per_sandbox": per_sandbox(result, "iptables_rules"),
        "fw_left_minus_before": [{k: phase["fw_left"][k] - phase["fw_before"][k] for k in phase["fw_left"]}
                                 for phase in result.phases],
        "attach_tasks_p50": _median_valid(result.pooled("attach_tasks")),
        "detach_tasks_p50": _median_valid(result.pooled("detach_tasks")),
        "attach_steps_p50_ms": step_medians(result, "attach"),
        "detach_steps_p50_ms": step_medians(result, "detach"),
    }
    for kind in ("attach", "detach"):
        pair = s[f"{kind}_first_last_ms"]
        s[f"{kind}_growth"] = pair[1] / pair[0] if pair else None
        s[f"{kind}_processes"] = traced[f"{kind}_processes"] if traced else None
    return s


def _median_valid(values: list[int]) -> float | None:
    valid = [v for v in values if v >= 0]
    return statistics.median(valid) if valid else None


# Output

HEADERS = ("contender", "N", "runs", "attach p50", "p95", "detach p50", "p95", "growth a", "growth d",
           "settle", "nft/sb", "ipt/sb", "procs a|d", "tasks a|d")


def fmt_ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def fmt_num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def table_row(result: Result, s: dict[str, Any]) -> tuple[str, ...]:
    def ratio(key: str) -> str:
        return f"{s[key]:.2f}x" if s[key] is not None else "-"

    return (result.contender, str(result.n), str(s["rounds"]),
            *(fmt_ms(s[k]) for k in ("attach_p50_ms", "attach_p95_ms", "detach_p50_ms", "detach_p95_ms")),
            ratio("attach_growth"), ratio("detach_growth"), f"{s['settle_ms']:.0f}",
            f"{s['nft_per_sandbox']:.1f}", f"{s['iptables_per_sandbox']:.1f}",
            f"{fmt_num(s['attach_processes'])}|{fmt_num(s['detach_processes'])}",
            f"{fmt_num(s['attach_tasks_p50'])}|{fmt_num(s['detach_tasks_p50'])}")


def print_table(results: Sequence[Result], summaries: dict[tuple[str, int], dict[str, Any]]) -> None:
    rows = [HEADERS] + [table_row(r, summaries[(r.contender, r.n)]) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    for row in rows:
        print("  ".join(cell.ljust(w) if i < 1 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    print("times in ms, p50/p95 pooled over the runs (rounds); growth = median of the last N/10 operations "
          "/ the first N/10;\nsettle = ms from the last detach until every sandbox veth is gone; nft/sb = nft "
          "rules + set/map elements per sandbox (iptables-nft rules included), ipt/sb = iptables-save -A lines "
          "per sandbox;\nprocs = processes created per attach|detach (strace, sample of "
          f"{TRACE_OPS}); tasks = new PIDs per attach|detach (threads included, /proc/loadavg, median)")


def print_details(results: Sequence[Result], summaries: dict[tuple[str, int], dict[str, Any]],
                  traces: dict[str, dict[str, Any]]) -> None:
    print("\nWhere the time goes (median ms per step, largest N of each contender):")
    largest: dict[str, Result] = {}
    for r in results:
        if r.contender not in largest or r.n > largest[r.contender].n:
            largest[r.contender] = r
    for name, r in largest.items():
        s = summaries[(name, r.n)]
        for kind in ("attach", "detach"):
            steps = " + ".join(f"{label} {ms:.1f}" for label, ms in s[f"{kind}_steps_p50_ms"].items())
            if steps:
                print(f"  {name} N={r.n} {kind}: {steps}")
        first_last = s["attach_first_last_ms"]
        if first_last:
            print(f"  {name} N={r.n} attach first N/10 -> last N/10: {first_last[0]:.1f} -> {first_last[1]:.1f} ms")
    if traces:
        print(f"\nProcesses per operation (strace -f on {TRACE_OPS} attaches and {TRACE_OPS} detaches, fresh host; "
              "median; programs of the last sample):")
        for name, t in traces.items():
            for kind in ("attach", "detach"):
                programs = ", ".join(_counted(t[f"{kind}_programs"])) or "none"
                print(f"  {name} {kind}: {fmt_num(t[f'{kind}_processes'])} processes, {fmt_num(t[f'{kind}_execs'])} "
                      f"execs ({programs}), {fmt_num(t[f'{kind}_threads'])} threads")
    print("\nFirewall after all N attaches (whole ruleset, minus before the first; median over runs):")
    for r in results:
        s = summaries[(r.contender, r.n)]
        left = s["fw_left_minus_before"][0]
        print(f"  {r.contender} N={r.n}: per sandbox {s['nft_rules_per_sandbox']:.2f} nft rules, "
              f"{s['nft_elements_per_sandbox']:.2f} set/map elements, {s['nft_chains_per_sandbox']:.2f} chains, "
              f"{s['iptables_per_sandbox']:.2f} iptables rules; left after removing all: "
              f"{', '.join(f'{k} {v:+d}' for k, v in left.items())}")


def _counted(programs: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    for program in programs:
        seen[program] = seen.get(program, 0) + 1
    return [f"{p} x{c}" if c > 1 else p for p, c in seen.items()]


def print_references(summaries: dict[tuple[str, int], dict[str, Any]]) -> None:
    print("\nReference figures (DESIGN.md / issue 5, this VM, measured earlier, attach = netns + one published port):")
    for name, ref in REFERENCE.items():
        print(f"  {name}: attach p50 {ref['attach']:.0f} ms, detach p50 {ref['detach']:.0f} ms at N=100; "
              f"attach growing {ref['first']:.0f} -> {ref['last']:.0f} ms over 250")
        for (contender, n), s in sorted(summaries.items()):
            if contender == name and n >= 100:
                pair = s["attach_first_last_ms"]
                print(f"    measured now at N={n}: attach p50 {s['attach_p50_ms']:.1f} ms "
                      f"({s['attach_p50_ms'] / ref['attach']:.2f}x the reference), detach p50 "
                      f"{s['detach_p50_ms']:.1f} ms; attach {pair[0]:.1f} -> {pair[1]:.1f} ms over {n}")
    print("\nnsnet against the others, same run, same N (p50 ratio; < 1 means nsnet is faster):")
    for (contender, n), s in sorted(summaries.items()):
        if contender not in ("api", "cli", "plugin"):
            continue
        for other in ("netavark", "cni"):
            o = summaries.get((other, n))
            if o is None:
                continue
            a = s["attach_p50_ms"] / o["attach_p50_ms"]
            d = s["detach_p50_ms"] / o["detach_p50_ms"]
            verdict = "BEATS" if a < 1 else "does NOT beat"
            print(f"  {contender} N={n}: attach {s['attach_p50_ms']:.1f} vs {other} {o['attach_p50_ms']:.1f} ms "
                  f"({a:.2f}x, {verdict} {other}); detach {s['detach_p50_ms']:.1f} vs {o['detach_p50_ms']:.1f} ms "
                  f"({d:.2f}x)")


def write_json(path: str, results: Sequence[Result], summaries: dict[tuple[str, int], dict[str, Any]],
               traces: dict[str, dict[str, Any]], started: str, args: argparse.Namespace) -> None:
    document = {
        "benchmark": "nsnet compare: N sandboxes with one published port each, then removal",
        "started": started,
        "options": {k: v for k, v in vars(args).items() if k != "trace_sample"},
        "nsnet": {"version": nsnet.__version__, "path": os.path.dirname(nsnet.__file__)},
        "versions": versions(),
        "host": host(),
        "results": [{"contender": r.contender, "n": r.n, "summary": summaries[(r.contender, r.n)],
                     "phases": r.phases} for r in results],
        "traces": traces,
    }
    save_json(path, document)


def versions() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (done.stdout or done.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "unavailable"

    return {"nsnet_git": source_state(),
            "netavark": first_line([NETAVARK, "--version"]),
            "cni": first_line(["dpkg-query", "-W", "-f", "${Version}", "containernetworking-plugins"]),
            "iptables": first_line(["iptables", "-V"]), "nft": first_line(["nft", "-v"])}


# Command line

def counts(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give positive counts")
    return values


def contenders(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [value for value in values if value not in CONTENDERS]
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: contenders are {', '.join(CONTENDERS)}")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=f"run it as: {LAB_COMMAND}")
    parser.add_argument("--n", type=counts, metavar="N,...", help=f"sandbox counts, every contender (default "
                        f"{DEFAULT_COUNTS}; --quick {QUICK_COUNTS})")
    parser.add_argument("--api-n", type=counts, metavar="N,...", help=f"extra counts for nsnet's API only "
                        f"(default {DEFAULT_API_COUNTS}; --quick {QUICK_API_COUNTS}; '' for none)")
    parser.add_argument("--contenders", type=contenders, default=list(CONTENDERS),
                        metavar="api,cli,plugin,cni,netavark")
    parser.add_argument("--rounds", type=int, metavar="R",
                        help="runs per contender and N (default: 5 at N=1, 2 up to N=100, 1 above)")
    parser.add_argument("--cli-bytecode", choices=("cached", "as-is"), default="cached",
                        help="run nsnet's CLI with a (private, pre-filled) bytecode cache, as installed, or with the "
                        "environment as it is (default cached)")
    parser.add_argument("--no-trace", action="store_true", help="skip the strace sample of processes per operation")
    parser.add_argument("--json", metavar="PATH", help="write every sample and the summaries as JSON")
    parser.add_argument("--quick", action="store_true", help=f"N={QUICK_COUNTS}, API also {QUICK_API_COUNTS}, "
                        "fewer rounds: to debug, about 25 s")
    parser.add_argument("--trace-sample", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.n = args.n if args.n is not None else counts(QUICK_COUNTS if args.quick else DEFAULT_COUNTS)
    if args.api_n is None:
        args.api_n = counts(QUICK_API_COUNTS if args.quick else DEFAULT_API_COUNTS)
    return args


def rounds_for(n: int, args: argparse.Namespace) -> int:
    if args.rounds:
        return args.rounds
    if n == 1:
        return 3 if args.quick else 5
    return 1 if args.quick or n > 100 else 2


def plan(args: argparse.Namespace) -> list[tuple[int, list[str]]]:
    """(N, contenders at that N), smallest N first."""
    steps = [(n, list(args.contenders)) for n in sorted(set(args.n))]
    if "api" in args.contenders:
        steps += [(n, ["api"]) for n in sorted(set(args.api_n) - set(args.n))]
    return steps


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    refuse_outside_lab()
    if args.trace_sample:
        trace_sample_child(args.trace_sample)
        return 0
    run_from_snapshot(sys.argv[1:] if argv is None else argv)
    try:
        return measure_all(args)
    finally:
        remove_snapshot()


def measure_all(args: argparse.Namespace) -> int:
    missing = missing_tools(args.contenders)
    if missing:
        sys.stderr.write(f"compare.py: missing {', '.join(missing)} (apt-get install -y containernetworking-plugins "
                         "netavark iptables nftables strace)\n")
        return 1
    print(f"nsnet {nsnet.__version__} from {os.path.dirname(nsnet.__file__)}; "
          + "; ".join(f"{k} {v}" for k, v in versions().items()))
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    begin = time.monotonic()
    cache = None
    if "cli" in args.contenders and args.cli_bytecode == "cached":
        cache = tempfile.mkdtemp(prefix="nsnet-compare-pycache-")  # outside /run and /var/lib: phases share it
        os.environ[PYCACHE_ENV] = cache
        in_fresh_host(warm_cli_cache)
    print(f"nsnet CLI bytecode: {describe_bytecode(cache)}")
    try:
        return run_all(args, started, begin)
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)


def describe_bytecode(cache: str | None) -> str:
    unwritable = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    if cache:
        return (f"cached in a private PYTHONPYCACHEPREFIX ({cache}), as after pip install"
                + ("; this environment sets PYTHONDONTWRITEBYTECODE, see --cli-bytecode as-is" if unwritable else ""))
    return "environment as is" + (" (PYTHONDONTWRITEBYTECODE is set: nsnet is compiled from source in every "
                                  "process)" if unwritable else "")


def run_all(args: argparse.Namespace, started: str, begin: float) -> int:
    results: dict[tuple[str, int], Result] = {}
    for n, names in plan(args):
        for round_index in range(rounds_for(n, args)):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                print(f"[{time.monotonic() - begin:5.0f} s] {name} N={n} round {round_index + 1} ...", flush=True)
                results.setdefault((name, n), Result(name, n)).phases.append(in_fresh_host(run_phase, name, n))
    traces: dict[str, dict[str, Any]] = {}
    if not args.no_trace:
        for name in args.contenders:
            print(f"[{time.monotonic() - begin:5.0f} s] {name}: strace sample ...", flush=True)
            traces[name] = in_fresh_host(trace_sample, name)
    ordered = sorted(results.values(), key=lambda r: (r.n, CONTENDERS.index(r.contender)))
    summaries = {(r.contender, r.n): summary(r, traces.get(r.contender)) for r in ordered}
    print(f"\ndone in {time.monotonic() - begin:.0f} s\n")
    print_table(ordered, summaries)
    print_details(ordered, summaries, traces)
    print_references(summaries)
    if args.json:
        write_json(args.json, ordered, summaries, traces, started, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
