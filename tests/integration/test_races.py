"""Races between nsnet commands run as separate processes (issue 9, items 5 and 6).

gc and check run in a loop against parallel creates, connects and removes; `network rm -f` races
creates on its network and removals of its sandboxes; and every pair of mutating commands that can
run at once on the same objects runs concurrently. Whatever the interleaving: each command either
succeeds or fails with nsnet's one-line error, `nsnet check` finds nothing afterwards, ledger and
kernel agree object by object, and the final state is one that running the successful commands one
after the other could have left.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from nsnet import Engine

from .conftest import NSNET, cli
from .net import ip_json, run

# The pair tests race each pair on this many copies of its objects at once (S0, N0, M0; S1, ...).
COPIES = 4
SUBNETS = {"app": "10.31.0.0/24", "other": "10.32.0.0/24",
           **{f"{n}{k}": f"10.{base}.{k}.0/24" for n, base in (("N", 41), ("M", 42)) for k in range(COPIES)}}
# How long the kernel may take to destroy a removed namespace's veths (deferred work), as in conftest.
SETTLE_SECONDS = 3.0


@pytest.fixture(autouse=True)
def swept() -> Iterator[None]:
    """Set up before, torn down after the engine fixture: whatever a failed race left in the
    kernel is deleted, so that it cannot break the tests that follow."""
    yield
    for name in os.listdir("/run/netns") if os.path.isdir("/run/netns") else []:
        if name != "wan":
            run("ip", "netns", "del", name, check=False)
    for link in ip_json("link"):
        if link["ifname"].startswith(("nsbr-", "nsv")):
            run("ip", "link", "del", link["ifname"], check=False)
    for family in ("inet", "bridge"):
        run("nft", "delete", "table", family, "nsnet", check=False)


# Commands and their outcomes

@dataclass(frozen=True)
class Outcome:
    argv: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    def __str__(self) -> str:
        return f"`nsnet {' '.join(self.argv)}` (exit {self.code}, stderr {self.stderr!r})"


def start(*argv: str) -> tuple[tuple[str, ...], subprocess.Popen]:
    return argv, subprocess.Popen([NSNET, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(started: list[tuple[tuple[str, ...], subprocess.Popen]]) -> list[Outcome]:
    outcomes = []
    for argv, process in started:
        out, err = process.communicate(timeout=60)
        outcomes.append(Outcome(argv, process.returncode, out, err))
    return outcomes


def nsnet(*argv: str) -> Outcome:
    result = cli(*argv)
    return Outcome(argv, result.returncode, result.stdout, result.stderr)


def unclean(outcomes: list[Outcome]) -> list[str]:
    """A command succeeds quietly on stderr, or fails with exit 1 and nsnet's one-line error."""
    problems = []
    for o in outcomes:
        one_line_error = o.stderr.startswith("nsnet: error: ") and o.stderr.count("\n") == 1
        if "Traceback" in o.stderr or (o.ok and o.stderr) or (not o.ok and (o.code != 1 or not one_line_error)):
            problems.append(f"{o} neither succeeded nor failed cleanly")
    return problems


def check_problems() -> list[str]:
    result = nsnet("check")
    return [] if result.ok and not result.stdout else [f"{result} reported {result.stdout!r}"]


# The ledger (`nsnet ps`, `nsnet network ls`) against the kernel, read with iproute2

def ledger() -> tuple[dict[str, dict], dict[str, dict]]:
    sandboxes = json.loads(nsnet("ps", "--format", "json").stdout)
    networks = json.loads(nsnet("network", "ls", "--format", "json").stdout)
    return {s["Name"]: s for s in sandboxes}, {n["Name"]: n for n in networks}


def sandbox_problems(sandbox: dict, networks: dict[str, dict], links: dict[str, dict]) -> list[str]:
    name = sandbox["Name"]
    if sandbox["State"] != "ready":
        return [f"sandbox {name} is {sandbox['State']}"]
    if not os.path.ismount(f"/run/netns/{name}"):
        return [f"sandbox {name} has no pinned namespace"]
    problems = []
    inside = {l["ifname"]: {f"{a['local']}/{a['prefixlen']}" for a in l.get("addr_info", []) if a["family"] == "inet"}
              for l in ip_json("addr", ns=name)}
    for network, endpoint in sandbox["Networks"].items():
        bridge = networks[network]["Bridge"] if network in networks else None
        host = links.get(endpoint["HostInterface"])
        if bridge is None:
            problems.append(f"sandbox {name} has an endpoint on {network}, which is no network")
        elif host is None or host.get("master") != bridge:
            problems.append(f"{name}'s veth {endpoint['HostInterface']} is not on {network}'s bridge {bridge}")
        address = f"{endpoint['IPAddress']}/{endpoint['IPPrefixLen']}"
        if address not in inside.get(endpoint["Interface"], set()):
            problems.append(f"{name}'s {endpoint['Interface']} lacks {address}")
    carriers = [(e["Gateway"], e["Interface"]) for e in sandbox["Networks"].values() if e["DefaultRoute"]]
    routes = [(r.get("gateway"), r.get("dev")) for r in ip_json("route", "show", "default", ns=name)]
    if len(carriers) != min(1, len(sandbox["Networks"])) or routes != carriers:
        problems.append(f"sandbox {name}: the ledger gives the default route to {carriers}, the kernel has {routes}")
    return problems


def kernel_problems() -> list[str]:
    """Everything in `nsnet ps` and `network ls` is ready and exists in the kernel as recorded, and
    the kernel holds no nsnet namespace, bridge or veth that the ledger does not describe."""
    sandboxes, networks = ledger()
    links = {l["ifname"]: l for l in ip_json("link")}
    problems = [f"network {n['Name']} is {n['State']}" for n in networks.values() if n["State"] != "ready"]
    bridges = {n["Bridge"] for n in networks.values()}
    problems += [f"network {n['Name']}'s bridge {n['Bridge']} is missing"
                 for n in networks.values() if n["Bridge"] not in links]
    for sandbox in sandboxes.values():
        problems += sandbox_problems(sandbox, networks, links)
    veths = {e["HostInterface"] for s in sandboxes.values() for e in s["Networks"].values()}
    for name, link in sorted(links.items()):
        if name.startswith("nsv") and (name not in veths or link.get("master") not in bridges):
            problems.append(f"veth {name} is on {link.get('master') or 'no bridge'} and its ledger row says otherwise")
        if name.startswith("nsbr-") and name not in bridges:
            problems.append(f"bridge {name} belongs to no network")
    pinned = set(os.listdir("/run/netns")) - {"wan"} if os.path.isdir("/run/netns") else set()
    problems += [f"namespace {n} belongs to no sandbox" for n in sorted(pinned - set(sandboxes))]
    return problems


def build(networks: tuple[str, ...], sandboxes: dict[str, list[str]]) -> dict[str, str]:
    """Networks and sandboxes (attached in the order given) made by an engine that is closed at
    once, as a CLI process would be: an open engine keeps sockets in the sandboxes it made (see
    test_an_engine_does_not_keep_alive_a_sandbox_another_process_removed). Returns each sandbox's first veth."""
    veths = {}
    with Engine() as builder:
        for network in networks:
            builder.create_network(network, subnet=SUBNETS[network])
        for name, attached in sandboxes.items():
            veths[name] = builder.create_sandbox(name, networks=attached).endpoints[0].host_ifname
    return veths


def reset() -> None:
    with Engine() as cleaner:
        for sandbox in cleaner.sandboxes():
            cleaner.remove_sandbox(sandbox.name, force=True)
        for network in cleaner.networks():
            cleaner.remove_network(network.name, force=True)


def settled(problems: Callable[[], list[str]]) -> list[str]:
    """The problems once the kernel has destroyed removed namespaces' veths (its deferred work)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while (found := problems()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def repairs_while_running(started: list[tuple[tuple[str, ...], subprocess.Popen]], rounds: int = 15) -> list[str]:
    """`nsnet gc` and `nsnet check` one after the other until the commands are done (at least
    twice, at most `rounds` times). Nothing is broken, so gc must succeed and check find nothing."""
    problems = []
    for i in range(rounds):
        if i >= 2 and all(p.poll() is not None for _, p in started):
            break
        gc = nsnet("gc")
        if not gc.ok or gc.stderr:
            problems.append(f"{gc} failed while commands ran")
        problems += [f"while commands ran: {p}" for p in check_problems()]
    return problems


# 5: gc and check against work in flight

def test_gc_looping_against_parallel_creates_loses_no_sandbox(state_dir: str, engine: Engine) -> None:
    build(("app",), {})
    started = [start("create", f"s{i:02}", "--network", "app") for i in range(15)]
    problems = repairs_while_running(started)
    outcomes = finish(started)

    problems += unclean(outcomes)
    sandboxes, _ = ledger()
    problems += [f"{o} reported success but {o.argv[1]} is not in `nsnet ps`"
                 for o in outcomes if o.ok and o.argv[1] not in sandboxes]
    problems += [f"{o} failed: gc must leave a create in flight alone" for o in outcomes if not o.ok]
    problems += settled(kernel_problems)
    problems += check_problems()
    assert problems == [], "\n".join(problems)


def test_gc_looping_against_parallel_backends_of_a_service_loses_none(state_dir: str, engine: Engine) -> None:
    """gc rebuilds the firewall from the ledger while sandboxes join a service's backends: every
    backend that made it into the ledger is in the kernel at the end, and check finds nothing."""
    build(("app",), {})
    assert nsnet("service", "create", "web", "--network", "app", "-p", "80", "--selector", "app=web").ok
    started = [start("create", f"s{i:02}", "--network", "app", "--label", "app=web") for i in range(10)]
    problems = repairs_while_running(started)
    outcomes = finish(started)

    problems += unclean(outcomes)
    problems += [f"{o} failed: gc must leave a create in flight alone" for o in outcomes if not o.ok]
    (served,) = [b for _, b in engine.services()]
    problems += [f"{o.argv[1]} is not a backend of web" for o in outcomes
                 if o.ok and o.argv[1] not in {name for name, _ in served}]
    problems += settled(kernel_problems)
    problems += check_problems()
    assert problems == [], "\n".join(problems)


def test_gc_looping_against_parallel_connects_loses_no_endpoint(state_dir: str, engine: Engine) -> None:
    names = [f"s{i:02}" for i in range(12)]
    build(("app", "other"), {name: ["app"] for name in names})
    started = [start("connect", "other", name) for name in names]
    problems = repairs_while_running(started)
    outcomes = finish(started)

    problems += unclean(outcomes)
    sandboxes, _ = ledger()
    problems += [f"{o} reported success but {o.argv[2]} is not on other in `nsnet ps`"
                 for o in outcomes if o.ok and "other" not in sandboxes.get(o.argv[2], {}).get("Networks", {})]
    problems += [f"{o} failed: gc must leave a connect in flight alone" for o in outcomes if not o.ok]
    problems += settled(kernel_problems)
    problems += check_problems()
    assert problems == [], "\n".join(problems)


def test_gc_looping_against_parallel_removes_leaves_nothing_of_them(state_dir: str, engine: Engine) -> None:
    names = [f"s{i:02}" for i in range(12)]
    veths = build(("app",), {name: ["app"] for name in names})
    started = [start("rm", "-f", name) for name in names]
    problems = repairs_while_running(started)
    outcomes = finish(started)

    problems += unclean(outcomes)
    problems += [f"{o} failed" for o in outcomes if not o.ok]

    def leftovers() -> list[str]:
        sandboxes, _ = ledger()
        links = {l["ifname"] for l in ip_json("link")}
        removed = [o.argv[2] for o in outcomes if o.ok]
        return ([f"{n} is still in `nsnet ps`" for n in removed if n in sandboxes]
                + [f"{n}'s namespace is still pinned" for n in removed if os.path.exists(f"/run/netns/{n}")]
                + [f"{n}'s veth {veths[n]} is still there" for n in removed if veths[n] in links]
                + kernel_problems())

    problems += settled(leftovers)
    problems += check_problems()
    assert problems == [], "\n".join(problems)


# 6: network rm -f against its own users

def test_network_rm_force_racing_creates_and_removes_on_it(state_dir: str, engine: Engine) -> None:
    """In any order, `network rm -f` and every `rm` succeed; a create succeeds only before the
    network goes, and its sandbox is then left attached to nothing, like every other."""
    for attempt in range(2):
        build(("app",), {f"a{i}": ["app"] for i in range(6)})
        started = [start("network", "rm", "-f", "app")]
        for i in range(5):  # staggered, to meet the removal at its different steps
            started.append(start("create", f"x{i}", "--network", "app"))
            if i < 3:
                started.append(start("rm", f"a{i}") if i % 2 else start("rm", "-f", f"a{i}"))
            time.sleep(0.01)
        outcomes = finish(started)

        problems = unclean(outcomes)
        problems += [f"{o} failed: forced or alone on its sandbox, it succeeds in any order"
                     for o in outcomes if o.argv[0] in ("rm", "network") and not o.ok]
        sandboxes, networks = ledger()
        if "app" in networks:
            problems.append(f"app is still in `network ls` after {outcomes[0]}")
        problems += [f"sandbox {s} is still on app" for s, sandbox in sandboxes.items() if sandbox["Networks"]]
        removed = {o.argv[-1] for o in outcomes if o.argv[0] == "rm"}
        created = {o.argv[1] for o in outcomes if o.argv[0] == "create" and o.ok}
        expected = sorted(created | ({f"a{i}" for i in range(6)} - removed))
        if sorted(sandboxes) != expected:
            problems.append(f"`nsnet ps` lists {sorted(sandboxes)}, the commands' outcomes leave {expected}")
        problems += settled(kernel_problems)
        problems += check_problems()
        assert problems == [], f"attempt {attempt}:\n" + "\n".join(problems)
        reset()


# Every pair of mutating commands on the same objects

World = tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]


def world(networks: set[str], sandboxes: dict[str, set[str]]) -> World:
    """What the outcome of a race is judged by: the networks, and each sandbox's networks."""
    return tuple(sorted(networks)), tuple(sorted((s, tuple(sorted(n))) for s, n in sandboxes.items()))


def model(argv: tuple[str, ...], state: World) -> tuple[bool, World]:
    """What argv does when it runs alone: whether it succeeds, and the world it leaves."""
    nets, boxes = set(state[0]), {s: set(n) for s, n in state[1]}
    match argv:
        case ("create", s, "--network", n):
            ok = s not in boxes and n in nets
            boxes.update({s: {n}} if ok else {})
        case ("rm", s):
            ok = boxes.pop(s, None) is not None
        case ("connect", n, s):
            ok = s in boxes and n in nets and n not in boxes[s]
            boxes.get(s, set()).update({n} if ok else set())
        case ("disconnect", n, s):
            ok = s in boxes and n in boxes[s]
            boxes.get(s, set()).discard(n)
        case ("network", "create", n, *_):
            ok = n not in nets
            nets.add(n)
        case ("network", "rm", "-f", n):
            ok = True
            nets.discard(n)
            for attached in boxes.values():
                attached.discard(n)
        case ("network", "rm", n):
            ok = n in nets and not any(n in attached for attached in boxes.values())
            nets.difference_update({n} if ok else set())
        case _:
            raise AssertionError(f"no model of {argv}")
    return ok, world(nets, boxes)


def serial_outcomes(a: tuple[str, ...], b: tuple[str, ...], before: World) -> list[tuple[bool, bool, World]]:
    """(a succeeds, b succeeds, final world) for a then b, and for b then a."""
    a_first, after_a = model(a, before)
    b_second, after_ab = model(b, after_a)
    b_first, after_b = model(b, before)
    a_second, after_ba = model(a, after_b)
    return [(a_first, b_second, after_ab), (a_second, b_first, after_ba)]


def observed_world(copy: int, sandboxes: dict[str, dict], networks: dict[str, dict]) -> World:
    """The ledger's world, restricted to one copy's objects and named as in PAIRS."""
    def mine(names: object) -> set[str]:
        return {n[0] for n in names if n[1:] == str(copy)}

    return world(mine(networks), {s[0]: mine(sandbox["Networks"]) for s, sandbox in sandboxes.items()
                                  if s[1:] == str(copy)})


def copy_of(argv: tuple[str, ...], copy: int) -> tuple[str, ...]:
    return tuple(f"{word}{copy}" if word in ("S", "N", "M") else word for word in argv)


CREATE_S = ("create", "S", "--network", "N")
PAIRS = {
    "create-rm": (("N",), {}, CREATE_S, ("rm", "S")),
    "rm-rm": (("N",), {"S": ["N"]}, ("rm", "S"), ("rm", "S")),
    "connect-rm": (("N", "M"), {"S": ["M"]}, ("connect", "N", "S"), ("rm", "S")),
    "connect-disconnect": (("N", "M"), {"S": ["M"]}, ("connect", "N", "S"), ("disconnect", "N", "S")),
    # N comes first, so the endpoint disconnected carries the default route.
    "disconnect-rm": (("N", "M"), {"S": ["N", "M"]}, ("disconnect", "N", "S"), ("rm", "S")),
    "connect-network-rm-f": (("N", "M"), {"S": ["M"]}, ("connect", "N", "S"), ("network", "rm", "-f", "N")),
    "create-network-rm": (("N",), {}, CREATE_S, ("network", "rm", "N")),
    "network-create-twice": ((), {}, ("network", "create", "N"), ("network", "create", "N")),
    "network-rm-twice": (("N",), {}, ("network", "rm", "N"), ("network", "rm", "N")),
    "create-twice": (("N",), {}, CREATE_S, CREATE_S),
}


@pytest.mark.parametrize("pair", PAIRS.values(), ids=PAIRS.keys())
def test_two_commands_on_the_same_objects_serialise_or_fail_cleanly(state_dir: str, engine: Engine,
                                                                    pair: tuple) -> None:
    """The pair runs on COPIES sets of objects at once, a first in even copies and b in odd ones."""
    networks, sandboxes, a, b = pair
    build(tuple(f"{n}{k}" for k in range(COPIES) for n in networks),
          {f"{s}{k}": [f"{n}{k}" for n in attached] for k in range(COPIES) for s, attached in sandboxes.items()})
    started = [start(*copy_of(argv, k)) for k in range(COPIES) for argv in ((a, b) if k % 2 == 0 else (b, a))]
    outcomes = finish(started)

    problems = unclean(outcomes)
    serial = serial_outcomes(a, b, before=world(set(networks), {s: set(n) for s, n in sandboxes.items()}))
    ledger_now = ledger()
    for k in range(COPIES):
        first, second = outcomes[2 * k], outcomes[2 * k + 1]
        outcome_a, outcome_b = (first, second) if k % 2 == 0 else (second, first)
        result = (outcome_a.ok, outcome_b.ok, observed_world(k, *ledger_now))
        if result not in serial:
            problems.append(f"{outcome_a} and {outcome_b} left {result[2]}: no order of the two gives that")
    problems += settled(kernel_problems)
    problems += check_problems()
    assert problems == [], "\n".join(problems)


# A long-lived engine next to other processes

def test_an_engine_does_not_keep_alive_a_sandbox_another_process_removed(state_dir: str, engine: Engine) -> None:
    engine.create_network("app", subnet=SUBNETS["app"])
    veth = engine.create_sandbox("web", networks=["app"]).endpoints[0].host_ifname
    assert nsnet("rm", "web").ok

    def outlived() -> list[str]:
        return [f"veth {veth} outlived sandbox web" for link in ip_json("link") if link["ifname"] == veth]

    assert settled(outlived) == []
    assert check_problems() == []
