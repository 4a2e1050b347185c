"""Topology files: the format and its line-numbered errors, the mapping onto engine calls, and the
plans `up` and `down` make and carry out (on a FakeKernel engine)."""

from __future__ import annotations

import textwrap

import pytest

from nsnet import topology
from nsnet.engine import Engine
from nsnet.errors import KernelError, NsnetError
from nsnet.topology import State, TopologyError, plan_down, plan_up
from nsnet.topology.spec import NETWORK_KEYS, SANDBOX_KEYS, SHAPE_KEYS, parse, parse_target

LAB = """\
name: lab
networks:
  front: {subnet: 10.50.0.0/24}
  back:  {subnet: 10.51.0.0/24, internal: true, label: {tier: back}}
sandboxes:
  www: {networks: [front, back], publish: ["8080:80"], alias: [web]}
  db:  {networks: [back], ip: 10.51.0.9}
  r:   {networks: [front]}
links:
  - {a: www, b: r, ip: {www: 10.60.0.1/30, r: 10.60.0.2/30}}
routes:
  - {sandbox: www, dst: 10.70.0.0/24, via: 10.60.0.2}
expect:
  - {from: www, reach: "db:5432/tcp"}
  - {from: www, not_reach: "10.51.0.99"}
"""


def write(tmp_path, text: str, name: str = "lab.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def lines(steps) -> list[str]:
    return [s.line for s in steps]


def up(engine: Engine, path: str) -> list[str]:
    return lines(topology.up(engine, path, out=lambda _: None))


def test_the_file_maps_onto_engine_keyword_arguments() -> None:
    t = parse(LAB, "lab.yaml")
    assert t.name == "lab"
    assert t.networks["back"].kwargs == {"subnet": "10.51.0.0/24", "internal": True, "labels": ["tier=back"]}
    assert t.sandboxes["www"].kwargs == {"networks": ["front", "back"], "publish": ["8080:80"], "aliases": ["web"]}
    assert t.sandboxes["db"].kwargs == {"networks": ["back"], "ip": "10.51.0.9"}
    assert [(lk.a, lk.b, lk.ips, lk.mtu) for lk in t.links] == [("www", "r", ("www=10.60.0.1/30", "r=10.60.0.2/30"),
                                                                   1500)]
    assert [(e.source, e.host, e.port, e.protocol, e.reach, e.line) for e in t.expectations] == [
        ("www", "db", 5432, "tcp", True, 14), ("www", "10.51.0.99", None, "icmp", False, 15)]
    # The other helpers' engine features are one line each of the tables.
    assert {k: NETWORK_KEYS[k][0] for k in ("driver", "parent", "mode")} == {
        "driver": "driver", "parent": "parent", "mode": "mode"}
    assert {k: SANDBOX_KEYS[k][0] for k in ("kind", "owner", "group", "mac", "alias", "label")} == {
        "kind": "kind", "owner": "owner", "group": "group", "mac": "mac", "alias": "aliases", "label": "labels"}
    assert set(SHAPE_KEYS) == {"sandbox", "network", "link", "rate", "delay", "jitter", "loss", "reorder", "limit",
                               "direction"}


def test_the_name_defaults_to_the_file_stem() -> None:
    assert parse("networks: {a: {}}\n", "/x/my-lab.yaml").name == "my-lab"


def test_every_error_of_a_wrong_file_at_once_with_its_line() -> None:
    bad = textwrap.dedent("""\
        networks:
          front: {subnet: 10.50.0.0/33}
          back: {subnet: 10.51.0.0/24, internl: true}
          mid: {mtu: "big"}
          front: {}
        sandboxes:
          www: {networks: [front, bak], publish: ["99999:80"]}
          db: {networks: back, ip: 10.99.0.5}
          db2: {networks: [back], colour: red}
        links:
          - {a: www, b: ghost, ip: {www: 10.60.0.1/30}}
          - {a: www, b: db, ip: {www: 10.60.0.1/30, db: 10.61.0.2/30}}
        routes:
          - {sandbox: db, dst: 10.70.0.1/24, via: 10.51.0.1}
          - {sandbox: db, dst: 10.71.0.0/24, via: 10.52.0.1}
        expect:
          - {from: nobody, reach: "db:80"}
          - {from: db, reach: "db:http"}
          - {from: db, reach: "ghost"}
        extra: 1
        """)
    with pytest.raises(TopologyError) as caught:
        parse(bad, "bad.yaml")
    assert caught.value.lines == [
        "bad.yaml:2: network 'front': invalid subnet '10.50.0.0/33': prefix length must be between 0 and 32 for IPv4",
        "bad.yaml:3: network 'back': unknown key 'internl' (known: " + ", ".join(NETWORK_KEYS) + ")",
        "bad.yaml:4: network 'mid': mtu must be an integer",
        "bad.yaml:5: networks: 'front' is given twice (first on line 2)",
        "bad.yaml:7: sandbox 'www': network 'bak' is not in the file's networks",
        "bad.yaml:7: sandbox 'www': invalid publish '99999:80': host port 99999 is outside 1-65535",
        "bad.yaml:8: sandbox 'db': ip 10.99.0.5 is outside the subnet 10.51.0.0/24 of network 'back'",
        "bad.yaml:9: sandbox 'db2': unknown key 'colour' (known: " + ", ".join(SANDBOX_KEYS) + ")",
        "bad.yaml:11: link: sandbox 'ghost' is not in the file's sandboxes",
        "bad.yaml:12: link www-db: invalid --ip 'db=10.61.0.2/30': is not in www's subnet 10.60.0.0/30",
        "bad.yaml:14: route: invalid DST '10.70.0.1/24': has host bits set",
        "bad.yaml:17: expect: sandbox 'nobody' is not in the file's sandboxes",
        "bad.yaml:18: expect: reach 'db:http': port 'http' is not from 1 to 65535",
        "bad.yaml:19: expect: sandbox 'ghost' is not in the file's sandboxes",
        "bad.yaml:20: unknown key 'extra' (known: name, networks, sandboxes, links, routes, shape, expect)",
    ]
    assert str(caught.value).count("\n") == 14
    with pytest.raises(TopologyError) as caught:
        parse(LAB.replace("via: 10.60.0.2", "via: 10.52.0.1"), "lab.yaml")
    assert caught.value.lines == ["lab.yaml:12: route: gateway 10.52.0.1 is on none of www's networks or links"]


def test_yaml_that_does_not_parse_names_its_line() -> None:
    with pytest.raises(TopologyError) as caught:
        parse("networks:\n  a: {subnet: 10.0.0.0/24\nsandboxes: {}\n", "x.yaml")
    assert caught.value.lines[0].startswith("x.yaml:3: not YAML: ")
    with pytest.raises(TopologyError) as caught:
        parse("", "x.yaml")
    assert caught.value.lines == ["x.yaml:1: the file is empty"]
    with pytest.raises(TopologyError) as caught:
        parse("- a\n", "x.yaml")
    assert caught.value.lines == ["x.yaml:1: the file must be a mapping"]


def test_features_this_engine_lacks_are_refused_with_their_line() -> None:
    class Bare:  # an engine without macvlan, taps or shaping
        def create_network(self, name: str) -> None: ...

        def create_sandbox(self, name: str) -> None: ...

    text = textwrap.dedent("""\
        networks:
          lan: {driver: macvlan, parent: eth9, mode: bridge}
          br: {mode: private}
        sandboxes:
          vm: {networks: [br], kind: tap, owner: 1000}
          x: {networks: [br], owner: 5}
        shape:
          - {sandbox: x, network: br, rate: 10mbit}
        """)
    with pytest.raises(TopologyError) as caught:
        parse(text, "f.yaml", engine_type=Bare)
    assert caught.value.lines == [
        "f.yaml:2: network 'lan': driver 'macvlan' needs macvlan networks, which this nsnet lacks",
        "f.yaml:3: network 'br': mode is for driver macvlan only",
        "f.yaml:5: sandbox 'vm': kind needs tap endpoints, which this nsnet lacks",
        "f.yaml:5: sandbox 'vm': owner needs tap endpoints, which this nsnet lacks",
        "f.yaml:6: sandbox 'x': owner is for kind tap only",
        "f.yaml:8: shape: this nsnet has no shaping (nsnet shape)",
    ]


def test_targets() -> None:
    assert parse_target("db:5432/tcp") == ("db", 5432, "tcp")
    assert parse_target("db:53/udp") == ("db", 53, "udp")
    assert parse_target("db") == ("db", None, "icmp")
    assert parse_target("10.0.0.5:80") == ("10.0.0.5", 80, "tcp")
    assert parse_target("[fd00::5]:80/udp") == ("fd00::5", 80, "udp")
    assert parse_target("fd00::5") == ("fd00::5", None, "icmp")
    for bad in ("db/tcp", "db:0", "db:80/sctp", ":80", "[fd00::5"):
        with pytest.raises(ValueError):
            parse_target(bad)


def test_up_makes_the_file_then_has_nothing_to_do_and_down_removes_it(engine: Engine, tmp_path) -> None:
    path = write(tmp_path, LAB)
    assert lines(topology.up(engine, path, dry_run=True, out=lambda _: None)) == [
        "+ create network front", "+ create network back", "+ create sandbox www", "+ create sandbox db",
        "+ create sandbox r", "+ link www r", "+ route www 10.70.0.0/24 via 10.60.0.2"]
    assert engine.topology_objects() == [] and engine.sandboxes() == []  # a dry run changes nothing
    printed: list[str] = []
    topology.up(engine, path, out=printed.append)
    assert printed[-1] == "+ route www 10.70.0.0/24 via 10.60.0.2"
    assert [s.name for s in engine.sandboxes()] == ["www", "db", "r"]
    assert str(engine.sandbox("db").endpoints[0].addresses[0].ip) == "10.51.0.9"
    assert [(t, k, key) for t, k, key, _ in engine.topology_objects()] == [
        ("lab", "link", "r|www"), ("lab", "network", "back"), ("lab", "network", "front"),
        ("lab", "route", "www|10.70.0.0/24"), ("lab", "sandbox", "db"), ("lab", "sandbox", "r"),
        ("lab", "sandbox", "www")]
    printed.clear()
    assert up(engine, path) == []
    topology.up(engine, path, out=printed.append)
    assert printed == ["topology lab: up to date"]
    # The route and the link go with their sandboxes' namespaces: no step of their own.
    assert lines(topology.down(engine, path, out=lambda _: None)) == [
        "- remove sandbox db", "- remove sandbox r", "- remove sandbox www", "- remove network back",
        "- remove network front"]
    assert engine.sandboxes() == [] and engine.networks() == [] and engine.topology_objects() == []
    assert lines(topology.down(engine, path, out=lambda _: None)) == []  # nothing left: nothing to do


def test_an_edited_file_converges_exactly(engine: Engine, tmp_path) -> None:
    path = write(tmp_path, LAB)
    up(engine, path)
    edited = LAB.replace("  r:   {networks: [front]}\n",
                         "  r:   {networks: [front, back]}\n  cache: {networks: [back]}\n")
    edited = edited.replace("  db:  {networks: [back], ip: 10.51.0.9}\n", "")
    edited = edited.replace('reach: "db:5432/tcp"', 'reach: "r:80/tcp"')
    write(tmp_path, edited)
    assert up(engine, path) == ["- remove sandbox db", "+ create sandbox cache", "~ connect r to back"]
    assert sorted(s.name for s in engine.sandboxes()) == ["cache", "r", "www"]
    assert [e.network for e in engine.sandbox("r").endpoints] == ["front", "back"]
    assert up(engine, path) == []
    # The router leaves back again; www's publish changes: made again, with its link and route.
    edited = edited.replace("  r:   {networks: [front, back]}\n", "  r:   {networks: [front]}\n")
    edited = edited.replace('publish: ["8080:80"]', 'publish: ["8081:80"]')
    write(tmp_path, edited)
    assert up(engine, path) == ["- remove route www 10.70.0.0/24 via 10.60.0.2", "- unlink r www",
                                "~ disconnect r from back", "- remove sandbox www",
                                "+ create sandbox www", "+ link www r", "+ route www 10.70.0.0/24 via 10.60.0.2"]
    assert [p.host_port for p in engine.ports("www")] == [8081]
    assert up(engine, path) == []


def test_a_network_whose_options_change_is_made_again_around_its_sandboxes(engine: Engine, tmp_path) -> None:
    path = write(tmp_path, LAB)
    up(engine, path)
    write(tmp_path, LAB.replace("back:  {subnet: 10.51.0.0/24, internal: true", "back:  {subnet: 10.51.0.0/24"))
    # www is on back (not first): disconnected and connected again; db's first network: made again.
    assert up(engine, path) == ["~ disconnect www from back", "- remove sandbox db", "- remove network back",
                                "+ create network back", "+ create sandbox db", "~ connect www to back"]
    assert not engine.network("back").internal
    assert up(engine, path) == []


def test_a_route_over_a_cut_link_is_removed_first_and_made_again(engine: Engine, tmp_path) -> None:
    path = write(tmp_path, LAB)
    up(engine, path)
    write(tmp_path, LAB.replace("  - {a: www, b: r, ip: {www: 10.60.0.1/30, r: 10.60.0.2/30}}",
                                "  - {a: www, b: r, ip: {www: 10.60.0.1/30, r: 10.60.0.2/30}, mtu: 1400}"))
    assert up(engine, path) == ["- remove route www 10.70.0.0/24 via 10.60.0.2", "- unlink r www", "+ link www r",
                                "+ route www 10.70.0.0/24 via 10.60.0.2"]
    assert engine.links()[0].mtu == 1400


def test_objects_it_did_not_make_are_not_taken_over(engine: Engine, tmp_path) -> None:
    engine.create_network("front", subnet="10.50.0.0/24")
    engine.create_sandbox("db", networks=["front"])
    path = write(tmp_path, LAB)
    with pytest.raises(TopologyError) as caught:
        up(engine, path)
    assert caught.value.lines == [
        f"{path}:3: network 'front' exists and was not made by topology 'lab': it is not taken over (remove it, or"
        " rename it in the file)",
        f"{path}:7: sandbox 'db' exists and was not made by topology 'lab': it is not taken over (remove it, or"
        " rename it in the file)"]
    assert engine.topology_objects() == [] and [s.name for s in engine.sandboxes()] == ["db"]


def test_two_topologies_keep_to_their_own(engine: Engine, tmp_path) -> None:
    one = write(tmp_path, LAB)
    other = write(tmp_path, """\
        networks:
          side: {subnet: 10.80.0.0/24}
        sandboxes:
          s1: {networks: [side]}
        """, "other.yaml")
    up(engine, one)
    assert up(engine, other) == ["+ create network side", "+ create sandbox s1"]
    clash = write(tmp_path, "networks:\n  front: {subnet: 10.50.0.0/24}\n", "clash.yaml")
    with pytest.raises(TopologyError, match=r"clash.yaml:2: network 'front' belongs to topology 'lab'"):
        up(engine, clash)
    assert up(engine, one) == [] and up(engine, other) == []
    topology.down(engine, one, out=lambda _: None)
    assert [s.name for s in engine.sandboxes()] == ["s1"] and [n.name for n in engine.networks()] == ["side"]
    assert {t for t, *_ in engine.topology_objects()} == {"other"}


def test_a_failure_half_way_keeps_what_was_made_recorded(engine: Engine, tmp_path, monkeypatch) -> None:
    path = write(tmp_path, LAB)
    real = Engine.link

    def broken(self, *args, **kwargs):
        raise KernelError("veth pair creation", 12)

    monkeypatch.setattr(Engine, "link", broken)
    with pytest.raises(NsnetError, match=r"^link www r failed: kernel refused veth pair creation: .* run up again"):
        up(engine, path)
    assert sorted(s.name for s in engine.sandboxes()) == ["db", "r", "www"]
    assert ("lab", "link", "r|www") in [(t, k, key) for t, k, key, _ in engine.topology_objects()]
    monkeypatch.setattr(Engine, "link", real)
    assert up(engine, path) == ["+ link www r", "+ route www 10.70.0.0/24 via 10.60.0.2"]
    assert up(engine, path) == []


def test_down_tolerates_objects_already_gone(engine: Engine, tmp_path) -> None:
    path = write(tmp_path, LAB)
    up(engine, path)
    engine.remove_route("www", "10.70.0.0/24")
    engine.unlink("www", "r")
    engine.remove_sandbox("db")
    assert len(topology.down(engine, path, out=lambda _: None)) == 5
    assert engine.sandboxes() == [] and engine.networks() == [] and engine.topology_objects() == []


def test_a_pure_plan_from_an_empty_state() -> None:
    t = parse(LAB, "lab.yaml")
    assert lines(plan_up(t, State())) == [
        "+ create network front", "+ create network back", "+ create sandbox www", "+ create sandbox db",
        "+ create sandbox r", "+ link www r", "+ route www 10.70.0.0/24 via 10.60.0.2"]
    assert plan_down("lab", State()) == []


def test_shaping_entries_are_planned_and_removed(engine: Engine, tmp_path) -> None:
    path = write(tmp_path, LAB + "shape:\n  - {sandbox: db, network: back, rate: 10mbit}\n")
    assert up(engine, path)[-1] == "+ shape db network back rate=10mbit"
    assert up(engine, path) == []
    write(tmp_path, LAB + "shape:\n  - {sandbox: db, network: back, rate: 20mbit}\n")
    assert up(engine, path) == ["- clear shaping db network back", "+ shape db network back rate=20mbit"]
    write(tmp_path, LAB)
    assert up(engine, path) == ["- clear shaping db network back"]


def test_an_object_made_again_by_another_hand_is_neither_taken_over_nor_removed(engine: Engine, tmp_path) -> None:
    path = write(tmp_path, LAB)
    up(engine, path)
    engine.remove_sandbox("db")
    engine.create_sandbox("db", networks=["back"])  # same name, not the topology's any more
    with pytest.raises(TopologyError) as caught:
        up(engine, path)
    assert caught.value.lines == [f"{path}:7: sandbox 'db' was removed and made again by another hand since topology"
                                  " 'lab' made it: it is not taken over (remove it)"]
    printed: list[str] = []
    with pytest.raises(NsnetError, match=r"^down of topology 'lab' left 1 object\(s\): remove network back: network"
                                         r" 'back' has sandboxes attached \(db\)"):
        topology.down(engine, path, out=printed.append)
    assert printed == ["- forget sandbox db (made again by another hand: left as it is)", "- remove sandbox r",
                       "- remove sandbox www", "- remove network front"]
    assert [s.name for s in engine.sandboxes()] == ["db"] and [n.name for n in engine.networks()] == ["back"]
    assert [(k, key) for _, k, key, _ in engine.topology_objects()] == [("network", "back")]
    engine.remove_sandbox("db")
    assert lines(topology.down(engine, path, out=lambda _: None)) == ["- remove network back"]
    assert engine.networks() == [] and engine.topology_objects() == []


def test_the_progress_bar_draws_on_a_terminal_only() -> None:
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    shown = Terminal()
    bar = topology.Progress(4, shown)
    bar.show("create network a")
    bar.step()
    bar.show("create sandbox b")
    bar.clear()
    assert shown.getvalue() == ("\r\x1b[K[" + "." * 30 + "] 0/4 create network a"
                                "\r\x1b[K[" + "#" * 7 + "." * 23 + "] 1/4 create sandbox b\r\x1b[K")
    quiet = io.StringIO()
    topology.Progress(4, quiet).show("x")
    assert quiet.getvalue() == ""


def test_down_reads_only_the_name_so_a_broken_file_still_comes_down(engine: Engine, tmp_path) -> None:
    path = write(tmp_path, LAB)
    up(engine, path)
    write(tmp_path, LAB + "bogus: [\n")  # not YAML: its name cannot be known
    with pytest.raises(TopologyError):
        topology.down(engine, path, out=lambda _: None)
    write(tmp_path, "name: [not, a, name]\nnetworks: 5\n")
    with pytest.raises(TopologyError):
        topology.down(engine, path, out=lambda _: None)
    assert len(engine.sandboxes()) == 3
    write(tmp_path, LAB.replace("subnet: 10.50.0.0/24", "subnet: nonsense") + "bogus: 1\n")
    assert len(topology.down(engine, path, out=lambda _: None)) == 5
    assert engine.sandboxes() == [] and engine.topology_objects() == []


def test_values_yaml_cannot_make_are_errors_and_a_sandbox_without_networks_has_loopback_only() -> None:
    with pytest.raises(TopologyError) as caught:
        parse("name: !!python/str x\nnetworks: {n: {mtu: !!int big}}\n", "f.yaml")
    assert caught.value.lines == [
        "f.yaml:1: cannot read this value: could not determine a constructor for the tag"
        " 'tag:yaml.org,2002:python/str'",
        "f.yaml:2: cannot read this value: invalid literal for int() with base 10: 'big'"]
    t = parse("sandboxes: {a: {}, b: {}}\nlinks:\n  - {a: a, b: b, ip: {a: 10.9.0.1/30, b: 10.9.0.2/30}}\n", "f.yaml")
    assert t.sandboxes["a"].kwargs == {"networks": ["none"]}


TOKENS = ["networks:", "sandboxes:", "links:", "routes:", "shape:", "expect:", "name:", " a:", " b:", "{", "}", "[",
          "]", "- ", ",", "\n", "  ", "subnet: 10.1.0.0/24", "networks: [a]", "ip:", "10.1.0.5", "via:", "dst:",
          "from: a", "reach: b:80", "not_reach:", "!!int", "&x", "*x", "'q'", "mtu: 9", "true", "null", "x"]


def test_no_file_makes_the_reader_fail_otherwise_than_with_line_numbered_errors() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from(TOKENS), max_size=40))
    def check(tokens: list[str]) -> None:
        try:
            parse("".join(tokens), "f.yaml")
        except TopologyError as exc:
            assert exc.lines and all(line.startswith("f.yaml:") for line in exc.lines)

    check()


def test_a_lab_of_links_alone(engine: Engine, tmp_path) -> None:
    path = write(tmp_path, "sandboxes: {a: {}, b: {}}\nlinks:\n  - {a: a, b: b, ip: {a: 10.9.0.1/30, b: 10.9.0.2/30}}\n")
    assert up(engine, path) == ["+ create sandbox a", "+ create sandbox b", "+ link a b"]
    assert [s.endpoints for s in engine.sandboxes()] == [(), ()] and engine.networks() == []
    assert up(engine, path) == []
    topology.down(engine, path, out=lambda _: None)
    assert engine.sandboxes() == [] and engine.topology_objects() == []


def test_a_network_dropped_from_the_file_goes_after_its_sandboxes_leave_it(engine: Engine, tmp_path) -> None:
    path = write(tmp_path, LAB)
    up(engine, path)
    edited = LAB.replace("  back:  {subnet: 10.51.0.0/24, internal: true, label: {tier: back}}\n", "")
    edited = edited.replace("{networks: [front, back]", "{networks: [front]").replace(
        "  db:  {networks: [back], ip: 10.51.0.9}\n", "")
    edited = edited.replace('  - {from: www, reach: "db:5432/tcp"}\n', "")
    write(tmp_path, edited)
    assert up(engine, path) == ["~ disconnect www from back", "- remove sandbox db", "- remove network back"]
    assert [n.name for n in engine.networks()] == ["front"] and up(engine, path) == []
    engine.create_sandbox("stranger", networks=["front"])
    write(tmp_path, "name: lab\nsandboxes:\n  r: {}\n")
    with pytest.raises(TopologyError) as caught:
        up(engine, path)
    assert caught.value.lines == [f"{path}:1: network 'front' is no longer in the file, but sandboxes topology 'lab'"
                                  " did not make are attached (stranger)"]


SHAPED = """\
name: s
networks:
  app: {subnet: 10.45.0.0/24}
sandboxes:
  a: {networks: [app]}
  b: {networks: [app]}
shape:
  - {sandbox: a, network: app, rate: fast}
  - {sandbox: b, network: app, loss: 101%, direction: sideways}
"""


def test_shaping_values_are_judged_as_nsnet_shape_judges_them_before_anything_is_made(engine: Engine, kernel,
                                                                                     tmp_path) -> None:
    path = write(tmp_path, SHAPED)
    with pytest.raises(TopologyError) as caught:
        up(engine, path)
    assert caught.value.lines == [
        f"{path}:8: shape: invalid --rate 'fast': must be a number with a unit: bit, kbit, mbit, gbit (bits per"
        " second) or bps, kbps, mbps, gbps (bytes per second), e.g. 10mbit",
        f"{path}:9: shape: invalid --loss '101%': must be more than 0% (in steps of 0.01%) and at most 100%"]
    assert engine.networks() == [] and engine.sandboxes() == []
    # A knob this kernel cannot serve (no sch_netem) is refused before any step too, with its line.
    kernel.qdisc_kinds = frozenset({"sch_tbf"})
    write(tmp_path, SHAPED.replace("rate: fast", "delay: 20ms").replace(", loss: 101%, direction: sideways",
                                                                            ", rate: 1mbit"))
    with pytest.raises(TopologyError) as caught:
        up(engine, path)
    assert caught.value.lines == [f"{path}:8: shape: invalid --delay '20ms': needs the kernel module sch_netem, which"
                                  " this kernel lacks"]
    assert engine.networks() == [] and engine.sandboxes() == [] and engine.topology_objects() == []


def test_tap_values_and_a_missing_macvlan_parent_are_refused_with_their_lines_before_anything_is_made(
        engine: Engine, tmp_path) -> None:
    path = write(tmp_path, """\
        name: t
        networks:
          app: {subnet: 10.46.0.0/24}
          lan: {driver: macvlan, parent: nope0, subnet: 10.47.0.0/24}
        sandboxes:
          vm:  {networks: [app], kind: tap, owner: -1}
          vm2: {networks: [app], kind: tap, mac: "fe:00:00:00:00:01"}
        """)
    with pytest.raises(TopologyError) as caught:
        up(engine, path)
    assert caught.value.lines == [
        f"{path}:6: sandbox 'vm': invalid owner '-1': is not a number from 0 to 4294967294",
        f"{path}:7: sandbox 'vm2': invalid mac 'fe:00:00:00:00:01': starts with fe, which the tap's own MAC takes"
        " (tap MAC = guest MAC with fe)"]
    write(tmp_path, "name: t\nnetworks:\n  app: {subnet: 10.46.0.0/24}\n"
                    "  lan: {driver: macvlan, parent: nope0, subnet: 10.47.0.0/24}\n")
    with pytest.raises(TopologyError) as caught:
        up(engine, path)
    assert caught.value.lines == [f"{path}:4: network 'lan': invalid --parent 'nope0': no such interface in this"
                                  " namespace"]
    assert engine.networks() == [] and engine.sandboxes() == [] and engine.topology_objects() == []
