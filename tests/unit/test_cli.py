import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nsnet import cli, output
from nsnet.catalog import Catalog
from nsnet.engine import Engine
from nsnet.errors import InvalidInput
from nsnet.kernel.fake import FakeKernel
from nsnet.model import Subnet, Endpoint, Network, PortMapping
from nsnet.store import Store

NETWORK_FIELDS = {"Id", "Name", "Driver", "Bridge", "Subnet", "Gateway", "IPRange", "Internal", "ICC", "MTU", "Labels",
                  "Created", "State", "EnableIPv4", "EnableIPv6", "IPv4Routed", "IPv6Routed", "IPAM", "DNS", "DNSServers",
                  "DNSPort"}


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Cli:
    run: Callable[..., Result]
    kernel: FakeKernel
    engine: Callable[[], Engine]


@pytest.fixture
def nsnet(tmp_path, monkeypatch, capsys) -> Cli:
    kernel = FakeKernel()
    monkeypatch.setenv("NSNET_STATE_DIR", str(tmp_path))

    def engine() -> Engine:
        return Engine(state_dir=str(tmp_path), kernel=kernel)

    monkeypatch.setattr(cli, "_engine", engine)

    def run(*argv: str) -> Result:
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return Cli(run, kernel, engine)


def assert_one_error_line(result: Result, code: int = 1) -> None:
    assert result.code == code
    assert result.err.startswith("nsnet: error: ")
    assert result.err.count("\n") == 1
    assert result.err.endswith("\n")
    assert "Traceback" not in result.err


def test_network_create_prints_the_id(nsnet):
    result = nsnet.run("network", "create", "app", "--subnet", "10.31.0.0/24", "--label", "tier=web")
    assert (result.code, result.err) == (0, "")
    with nsnet.engine() as engine:
        network = engine.network("app")
    assert result.out == network.id + "\n"
    assert network.labels == (("tier", "web"),)


def test_network_create_flags_reach_the_engine(nsnet):
    assert nsnet.run("network", "create", "app", "--subnet", "10.31.0.0/16", "--gateway", "10.31.0.254",
                     "--ip-range", "10.31.1.0/24", "--internal", "--mtu", "9000", "--no-icc").code == 0
    with nsnet.engine() as engine:
        network = engine.network("app").to_dict()
    assert {k: network[k] for k in ("Subnet", "Gateway", "IPRange", "Internal", "MTU", "ICC")} == {
        "Subnet": "10.31.0.0/16", "Gateway": "10.31.0.254", "IPRange": "10.31.1.0/24", "Internal": True,
        "MTU": 9000, "ICC": False,
    }


@pytest.mark.parametrize(
    "argv, message",
    [
        (["network", "create", "../x"], "nsnet: error: invalid network name '../x': must start with a letter"),
        (["network", "create", "app", "--subnet", "10.0.0.1/24"],
         "nsnet: error: invalid subnet '10.0.0.1/24': host bits are set (did you mean 10.0.0.0/24?)"),
        (["network", "create", "app", "--mtu", "10"], "nsnet: error: invalid mtu '10': must be between 68 and 65535"),
        (["network", "create", "app", "--gateway", "10.0.0.1"], "nsnet: error: invalid gateway '10.0.0.1': requires"),
        (["network", "create", "app", "--subnet", "fe80::/64"],
         "nsnet: error: invalid subnet 'fe80::/64': overlaps the link-local range fe80::/10\n"),
        (["network", "create", "app", "--no-ipv4"],
         "nsnet: error: invalid --no-ipv4: a network needs IPv4 or IPv6: add --ipv6\n"),
        (["network", "create", "app", "--subnet", "127.0.0.0/24"],
         "nsnet: error: invalid subnet '127.0.0.0/24': overlaps the loopback range 127.0.0.0/8\n"),
        (["network", "create", "app", "--subnet", "10.0.0.0/24", "--ip-range", "10.0.0.1/32"],
         "nsnet: error: invalid ip-range '10.0.0.1/32': leaves no address for sandboxes\n"),
        (["create", "web", "--ip", "fd00::5"], "nsnet: error: invalid ip 'fd00::5': is an IPv6 address, not an IPv4 one\n"),
        (["create", "web", "--ip6", "10.0.0.5"], "nsnet: error: invalid ip6 '10.0.0.5': is an IPv4 address, not an IPv6 one\n"),
        (["network", "inspect", "nope"], "nsnet: error: no such network: 'nope'"),
        (["create", "web", "--network", "nope"], "nsnet: error: no such network: 'nope'"),
        (["create", "web", "--ip", "10.0.0"], "nsnet: error: invalid ip '10.0.0': is not an IPv4 address"),
        (["inspect", "nope"], "nsnet: error: no such sandbox: 'nope'"),
        (["rm", "nope"], "nsnet: error: no such sandbox: 'nope'"),
        (["connect", "nope", "web"], "nsnet: error: no such sandbox: 'web'"),
        (["disconnect", "nope", "web"], "nsnet: error: no such sandbox: 'web'"),
        (["exec", "web"], "nsnet: error: no command given"),
        (["run", "--"], "nsnet: error: no command given"),
        (["create", "web", "-p", "0"], "nsnet: error: invalid publish '0': sandbox port 0 is outside 1-65535"),
        (["port", "nope"], "nsnet: error: no such sandbox: 'nope'"),
    ],
)
def test_errors_are_one_line_and_exit_1(nsnet, argv, message):
    result = nsnet.run(*argv)
    assert_one_error_line(result)
    assert result.err.startswith(message)
    assert result.out == ""


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["network"],
        ["network", "create"],
        ["network", "create", "app", "--mtu", "x"],
        ["create", "web", "--bogus"],
    ],
)
def test_usage_errors_are_one_line_and_exit_2(nsnet, argv):
    result = nsnet.run(*argv)
    assert_one_error_line(result, code=2)
    assert result.out == ""


def test_mtu_usage_error_names_the_option(nsnet):
    result = nsnet.run("network", "create", "app", "--mtu", "x")
    assert result.err == (
        "nsnet: error: argument --mtu: invalid int value: 'x' (see 'nsnet network create --help')\n"
    )


def test_kernel_refusal_is_one_line(nsnet):
    nsnet.kernel.fail_at = 2
    result = nsnet.run("network", "create", "app")
    assert_one_error_line(result)
    assert result.err == "nsnet: error: kernel refused create_bridge: injected failure (EPERM)\n"
    assert nsnet.run("network", "ls", "-q").out.split() == []


def test_network_ls_json(nsnet):
    nsnet.run("network", "create", "app", "--subnet", "10.31.0.0/24")
    nsnet.run("network", "create", "db", "--subnet", "10.32.0.0/24", "--internal")
    result = nsnet.run("network", "ls", "--format", "json")
    assert result.code == 0
    items = json.loads(result.out)
    assert [set(i) for i in items] == [NETWORK_FIELDS, NETWORK_FIELDS]
    assert [(i["Name"], i["Subnet"], i["Gateway"], i["Internal"], i["Driver"], i["State"]) for i in items] == [
        ("app", "10.31.0.0/24", "10.31.0.1", False, "bridge", "ready"),
        ("db", "10.32.0.0/24", "10.32.0.1", True, "bridge", "ready"),
    ]


def test_network_ls_table(nsnet):
    nsnet.run("network", "create", "app", "--subnet", "10.31.0.0/24")
    with nsnet.engine() as engine:
        network = engine.network("app")
    assert nsnet.run("network", "ls").out == (
        "NETWORK ID     NAME   SUBNET         GATEWAY     BRIDGE            INTERNAL   STATE\n"
        f"{network.id[:12]}   app    10.31.0.0/24   10.31.0.1   {network.bridge}   false      ready\n"
    )


def test_network_ls_table_shows_each_networks_state(nsnet):
    nsnet.run("network", "create", "app", "--subnet", "10.31.0.0/24")
    nsnet.run("network", "create", "db", "--subnet", "10.32.0.0/24")
    with nsnet.engine() as engine, engine._store.transaction():
        engine._store.set_network_state(engine.network("db").id, "removing")
    rows = nsnet.run("network", "ls").out.splitlines()
    assert rows[0].split()[-1] == "STATE"
    assert [(row.split()[1], row.split()[-1]) for row in rows[1:]] == [("app", "ready"), ("db", "removing")]


def test_network_ls_quiet_and_template(nsnet):
    nsnet.run("network", "create", "app", "--subnet", "10.31.0.0/24")
    nsnet.run("network", "create", "db", "--subnet", "10.32.0.0/24")
    assert nsnet.run("network", "ls", "-q").out == "app\ndb\n"
    assert nsnet.run("network", "ls", "--format", "{{.Name}}={{.Subnet}}").out == "app=10.31.0.0/24\ndb=10.32.0.0/24\n"


def test_network_inspect_json(nsnet):
    nsnet.run("network", "create", "app", "--subnet", "10.31.0.0/24")
    with nsnet.engine() as engine:
        expected = engine.network("app").to_dict()
    result = nsnet.run("network", "inspect", "app")
    assert result.code == 0
    assert json.loads(result.out) == [expected | {"Sandboxes": {}}]


def test_network_inspect_lists_the_attached_sandboxes(nsnet):
    nsnet.run("network", "create", "app", "--subnet", "10.31.0.0/24")
    nsnet.run("network", "create", "db", "--subnet", "10.32.0.0/24")
    nsnet.run("create", "web", "--network", "app", "--network", "db")
    nsnet.run("create", "cache", "--network", "db", "--ip", "10.32.0.9")
    with nsnet.engine() as engine:
        web, cache = engine.sandbox("web"), engine.sandbox("cache")
    (network,) = json.loads(nsnet.run("network", "inspect", "db").out)
    web_db, cache_db = web.endpoint("db"), cache.endpoint("db")
    assert network["Sandboxes"] == {
        "web": {"EndpointId": web_db.id, "IPAddress": "10.32.0.2/24", "IPv6Address": "", "MacAddress": web_db.mac, "Interface": "eth1",
                "HostInterface": web_db.host_ifname, "State": "ready"},
        "cache": {"EndpointId": cache_db.id, "IPAddress": "10.32.0.9/24", "IPv6Address": "", "MacAddress": cache_db.mac,
                  "Interface": "eth0", "HostInterface": cache_db.host_ifname, "State": "ready"},
    }
    assert nsnet.run("network", "inspect", "-f", "{{.Sandboxes.web.IPAddress}} {{json .Sandboxes.web.Interface}}",
                     "app", "db").out == '10.31.0.2/24 "eth0"\n10.32.0.2/24 "eth1"\n'


@pytest.fixture
def web(nsnet) -> Cli:
    assert nsnet.run("network", "create", "app", "--subnet", "10.31.0.0/24").code == 0
    assert nsnet.run("create", "web", "--network", "app").code == 0
    return nsnet


def test_create_prints_the_sandbox_id(nsnet):
    nsnet.run("network", "create", "app", "--subnet", "10.31.0.0/24")
    result = nsnet.run("create", "web", "--network", "app", "--ip", "10.31.0.9")
    with nsnet.engine() as engine:
        sandbox = engine.sandbox("web")
    assert result.out == sandbox.id + "\n"
    assert str(sandbox.endpoints[0].address.ip) == "10.31.0.9"


def test_ps_table_json_and_quiet(web):
    with web.engine() as engine:
        sandbox = engine.sandbox("web")
    assert web.run("ps").out == (
        "SANDBOX ID     NAME   NETWORKS   IP ADDRESSES   STATE\n"
        f"{sandbox.id[:12]}   web    app        10.31.0.2      ready\n"
    )
    assert json.loads(web.run("ps", "--format", "json").out) == [sandbox.to_dict()]
    assert web.run("ps", "-q").out == "web\n"


def test_ps_shows_a_dash_for_a_sandbox_without_networks(web):
    web.run("disconnect", "app", "web")
    assert web.run("ps", "--format", "table").out.splitlines()[1].split()[1:] == ["web", "-", "-", "ready"]


def test_inspect_json(web):
    with web.engine() as engine:
        expected = engine.sandbox("web").to_dict()
    result = web.run("inspect", "web")
    assert (result.code, result.err) == (0, "")
    assert json.loads(result.out) == [expected]


def test_inspect_template_reads_nested_fields(web):
    result = web.run("inspect", "--format", "{{.Networks.app.IPAddress}}", "web")
    assert (result.code, result.out, result.err) == (0, "10.31.0.2\n", "")


def test_inspect_reports_unknown_names_and_shows_the_rest(web):
    result = web.run("inspect", "web", "nope")
    assert_one_error_line(result)
    assert result.err == "nsnet: error: no such sandbox: 'nope'\n"
    assert [s["Name"] for s in json.loads(result.out)] == ["web"]


def test_network_rm_continues_past_an_unknown_name(nsnet):
    nsnet.run("network", "create", "app", "--subnet", "10.31.0.0/24")
    result = nsnet.run("network", "rm", "nope", "app")
    assert_one_error_line(result)
    assert result.err == "nsnet: error: no such network: 'nope'\n"
    assert result.out == "app\n"
    assert nsnet.run("network", "ls", "-q").out.split() == []
    assert nsnet.kernel.empty


def test_network_rm_in_use_needs_force(web):
    result = web.run("network", "rm", "app")
    assert_one_error_line(result)
    assert result.err == "nsnet: error: network 'app' has sandboxes attached (web); disconnect them or use -f\n"
    assert web.run("network", "rm", "-f", "app").out == "app\n"
    assert web.run("ps", "--format", "{{.Name}}:{{.Networks}}").out == "web:{}\n"


def test_rm_sandbox(web):
    web.kernel.pids["web"] = [42]
    assert_one_error_line(web.run("rm", "web"))
    result = web.run("rm", "-f", "web")
    assert (result.code, result.out, result.err) == (0, "web\n", "")
    assert web.kernel.pids == {"web": []}
    assert web.run("ps", "-q").out.split() == []


def test_connect_and_disconnect(web):
    web.run("network", "create", "db", "--subnet", "10.32.0.0/24")
    result = web.run("connect", "db", "web", "--ip", "10.32.0.5")
    assert (result.code, result.out, result.err) == (0, "", "")
    assert web.run("inspect", "-f", "{{.Networks.db.Interface}} {{.Networks.db.IPAddress}}", "web").out == (
        "eth1 10.32.0.5\n"
    )
    result = web.run("disconnect", "app", "web")
    assert (result.code, result.out, result.err) == (0, "", "")
    (sandbox,) = json.loads(web.run("inspect", "web").out)
    assert list(sandbox["Networks"]) == ["db"]
    assert sandbox["Networks"]["db"]["DefaultRoute"] is True


def test_network_prune_prints_removed_names(web):
    web.run("network", "create", "idle", "--subnet", "10.32.0.0/24")
    assert web.run("network", "prune").out == "idle\n"
    assert web.run("network", "ls", "-q").out == "app\n"


DATA = {"Name": "web", "Id": 7, "Networks": {"app": {"IPAddress": "10.31.0.2", "Aliases": ["a", "b"]}},
        "Labels": {}, "Gone": None}


@pytest.mark.parametrize(
    "fmt, expected",
    [
        ("{{.Name}}", "web"),
        ("{{ .Name }}", "web"),
        ("{{.Id}}", "7"),
        ("{{.Networks.app.IPAddress}}", "10.31.0.2"),
        ("{{.Networks.app.Aliases}}", '["a", "b"]'),
        ("{{.Networks.app}}", '{"IPAddress": "10.31.0.2", "Aliases": ["a", "b"]}'),
        ("{{.Labels}}", "{}"),
        ("{{.Gone}}", ""),
        ("{{.Name}} on {{.Networks.app.IPAddress}}", "web on 10.31.0.2"),
        ("{{json .Name}}", '"web"'),
        ("{{ json  .Gone }}", "null"),
        ("{{json .Networks.app.Aliases}}", '["a", "b"]'),
        ("plain text", "plain text"),
        ("} { }{", "} { }{"),
        ("", ""),
    ],
)
def test_template_fills_nested_fields(fmt, expected):
    assert output.template(fmt, DATA) == expected


def test_template_dot_is_the_whole_object():
    assert json.loads(output.template("{{.}}", DATA)) == DATA
    assert json.loads(output.template("{{json .}}", DATA)) == DATA


@pytest.mark.parametrize(
    "fmt, reason",
    [
        ("{{.Nmae}}", "no field .Nmae"),
        ("{{.Missing.Deeper}}", "no field .Missing"),
        ("{{.Name.Deeper}}", "no field .Name.Deeper"),
        ("{{.Gone.Deeper}}", "no field .Gone.Deeper"),
        ("{{.Networks.db.IPAddress}}", "no field .Networks.db"),
        ("{{.Networks.app.Aliases.0}}", "no field .Networks.app.Aliases.0"),
        ("{{json .Nmae}}", "no field .Nmae"),
        ("ok {{.Name}} {{.Labels.x}}", "no field .Labels.x"),
    ],
)
def test_template_fields_the_object_lacks_are_errors_naming_the_field(fmt, reason):
    with pytest.raises(InvalidInput) as caught:
        output.template(fmt, DATA)
    assert (caught.value.field, caught.value.reason) == ("format", reason)
    assert str(caught.value) == f"invalid format {fmt!r}: {reason}"


@pytest.mark.parametrize(
    "fmt, reason",
    [
        ("plain {{Name}} text", "unsupported template syntax '{{Name}}'"),
        ("{{range .Networks}}{{.IPAddress}}{{end}}", "unsupported template syntax '{{range .Networks}}'"),
        ("{{if .Gone}}x{{end}}", "unsupported template syntax '{{if .Gone}}'"),
        ('{{index .Labels "a"}}', "unsupported template syntax '{{index .Labels \"a\"}}'"),
        ("{{- .Name}}", "unsupported template syntax '{{- .Name}}'"),
        ("{{}}", "unsupported template syntax '{{}}'"),
        ("{{.Name | upper}}", "unsupported template syntax '{{.Name | upper}}'"),
        ("{{json}}", "unsupported template syntax '{{json}}'"),
        ("{{.Name..Id}}", "unsupported template syntax '{{.Name..Id}}'"),
        ("{{{.Name}}", "unsupported template syntax '{{{.Name}}'"),
        ("{{.Name", "'{{' is not closed by '}}'"),
        ("{{.Name}} {{.Id", "'{{' is not closed by '}}'"),
        ("x }}", "'}}' closes no '{{'"),
        ("{{.Name}}}}", "'}}' closes no '{{'"),
    ],
)
def test_template_syntax_beyond_fields_and_json_is_refused(fmt, reason):
    with pytest.raises(InvalidInput) as caught:
        output.Template(fmt)
    assert caught.value.field == "format"
    assert caught.value.reason.startswith(reason)
    assert "\n" not in str(caught.value)


def test_table_aligns_columns_and_trims_trailing_space():
    assert output.table(("A", "BB", "C"), [("xxx", "y", ""), ("z", "", "w")]) == "A     BB   C\nxxx   y\nz          w"


def test_as_json_is_indented():
    assert output.as_json([{"a": 1}]) == '[\n  {\n    "a": 1\n  }\n]'


def _ledger_with_a_network_and_a_sandbox(directory: str) -> None:
    """Rows written straight into the ledger, as a create would have left them: no engine, no root."""
    network = Network(id="a" * 64, name="app", bridge="nsbr-aaaaaaaaaa", subnets=(Subnet(IPv4Network("10.31.0.0/24"), IPv4Address("10.31.0.1")),), created=1.0)
    endpoint = Endpoint(id="e" * 64, sandbox="web", network="app", ifname="eth0", host_ifname="nsv0123456789a",
                        mac="02:42:0a:1f:00:02", addresses=(IPv4Interface("10.31.0.2/24"),),
                        gateways=(IPv4Address("10.31.0.1"),), default_route=True)
    store = Store(directory)
    try:
        with store.transaction():
            store.add_network(network)
            store.add_sandbox("5" * 64, "web", "ready")
            store.add_endpoint("5" * 64, network.id, endpoint)
            store.add_ports(endpoint.id, [PortMapping(None, 8080, 80), PortMapping(IPv4Address("127.0.0.1"), 5353,
                                                                                   53, "udp")])
    finally:
        store.close()


READ_ONLY = [
    (["network", "ls"], ["NETWORK ID     NAME   SUBNET         GATEWAY     BRIDGE            INTERNAL   STATE",
                         "aaaaaaaaaaaa   app    10.31.0.0/24   10.31.0.1   nsbr-aaaaaaaaaa   false      ready"]),
    (["network", "ls", "--format", "json"], None),
    (["network", "inspect", "app", "-f", "{{.Name}} {{.Sandboxes.web.IPAddress}} {{.Sandboxes.web.HostInterface}}"],
     ["app 10.31.0.2/24 nsv0123456789a"]),
    (["ps"], ["SANDBOX ID     NAME   NETWORKS   IP ADDRESSES   STATE",
              "555555555555   web    app        10.31.0.2      ready"]),
    (["ps", "--format", "{{.Name}} {{json .Networks.app.DefaultRoute}}"], ["web true"]),
    (["inspect", "web", "-f", "{{.Networks.app.MacAddress}}"], ["02:42:0a:1f:00:02"]),
    (["inspect", "web"], None),
    (["port", "web"], ["80/tcp -> 0.0.0.0:8080", "53/udp -> 127.0.0.1:5353"]),
    (["shapes"], ["SANDBOX   INTERFACE   DIRECTION   RATE   DELAY   JITTER   LOSS   REORDER   LIMIT"]),
]


@pytest.mark.parametrize("argv, expected", READ_ONLY, ids=[" ".join(a) for a, _ in READ_ONLY])
def test_read_only_verbs_load_neither_the_engine_nor_netlink(tmp_path, argv, expected):
    state = str(tmp_path / "state")
    _ledger_with_a_network_and_a_sandbox(state)
    forbidden = ("nsnet.engine", "nsnet.kernel", "nsnet.plan", "nsnet.firewall", "pyroute2", "nftables")
    program = ("import sys; from nsnet import cli; code = cli.main(sys.argv[1:]); sys.stdout.flush(); "
               f"print('LOADED', code, sorted(m for m in {forbidden!r} if m in sys.modules))")
    env = {**os.environ, "NSNET_STATE_DIR": state}
    result = subprocess.run([sys.executable, "-c", program, *argv], capture_output=True, text=True, env=env,
                            timeout=60)
    *printed, loaded = result.stdout.splitlines()
    note = "nsnet: network app has no IPv6: its ports are not published on the host's IPv6 addresses\n"
    assert (loaded, result.stderr) == ("LOADED 0 []", note if argv[0] == "port" else "")
    if expected is None:  # JSON: the ledger's rows, whole
        store = Store(state)
        rows = store.networks() if argv[0] == "network" else store.sandboxes()
        store.close()
        assert json.loads("\n".join(printed)) == [row.to_dict() for row in rows]
        assert [row.name for row in rows] == (["app"] if argv[0] == "network" else ["web"])
    else:
        assert printed == expected


def test_unusable_state_dir_is_one_error_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(cli, "_catalog", lambda: Catalog(state_dir=str(tmp_path / "file")))
    assert cli.main(["network", "ls"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"nsnet: error: cannot open the state in {tmp_path / 'file'}: ")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "spec, message",
    [
        ("8080:80/icmp",
         "nsnet: error: invalid publish '8080:80/icmp': protocol 'icmp' is not one of tcp, udp, sctp\n"),
        ("[::1]:80:80", "nsnet: error: invalid publish '[::1]:80:80': the kernel cannot forward IPv6 loopback ([::1]) "
                        "traffic to a sandbox (IPv6 has no route_localnet); publish on 127.0.0.1 or on another address\n"),
        ("10.0.0:80:80", "nsnet: error: invalid publish host address '10.0.0': is not an IPv4 address\n"),
        ("８０", "nsnet: error: invalid publish '８０': sandbox port '８０' is not a port or a range of ports\n"),
    ],
)
def test_bad_publish_is_one_error_line_and_changes_nothing(nsnet, spec, message):
    result = nsnet.run("create", "web", "-p", "8080:80", "-p", spec)
    assert_one_error_line(result)
    assert (result.out, result.err) == ("", message)
    assert nsnet.kernel.calls == []
    assert nsnet.run("network", "ls", "-q").out == ""


@pytest.fixture
def published(nsnet) -> Cli:
    assert nsnet.run("network", "create", "app", "--subnet", "10.31.0.0/24").code == 0
    result = nsnet.run("create", "web", "--network", "app", "-p", "8080:80", "--publish", "127.0.0.1::90/udp")
    assert (result.code, result.err) == (0, "")
    return nsnet


def test_port_lists_mappings_as_docker_does(published):
    result = published.run("port", "web")
    assert (result.code, result.err) == (0, "nsnet: network app has no IPv6: its ports are not published on the host's IPv6 addresses\n")
    assert result.out == "80/tcp -> 0.0.0.0:8080\n90/udp -> 127.0.0.1:32768\n"


def test_port_json(published):
    result = published.run("port", "web", "--format", "json")
    assert (result.code, result.err) == (0, "")
    assert json.loads(result.out) == [
        {"HostIp": "0.0.0.0", "HostPort": 8080, "SandboxPort": 80, "Protocol": "tcp"},
        {"HostIp": "127.0.0.1", "HostPort": 32768, "SandboxPort": 90, "Protocol": "udp"},
    ]


def test_port_of_a_sandbox_without_ports_prints_nothing(web):
    assert (web.run("port", "web").out, web.run("port", "web", "--format", "json").out) == ("", "[]\n")


def test_connect_publishes_on_the_new_network(published):
    published.run("network", "create", "db", "--subnet", "10.32.0.0/24")
    result = published.run("connect", "db", "web", "-p", "5432:5432")
    assert (result.code, result.out, result.err) == (0, "", "")
    assert published.run("port", "web").out.splitlines()[-1] == "5432/tcp -> 0.0.0.0:5432"
    assert published.run("inspect", "-f", "{{.Networks.db.Ports}}", "web").out == (
        '[{"HostIp": "0.0.0.0", "HostPort": 5432, "SandboxPort": 5432, "Protocol": "tcp"}]\n'
    )


def test_a_published_port_conflict_is_one_error_line(published):
    result = published.run("create", "db", "--network", "app", "-p", "127.0.0.1:8080:80")
    assert_one_error_line(result)
    assert result.err == "nsnet: error: host port 127.0.0.1:8080/tcp is already published\n"
    assert published.run("ps", "-q").out == "web\n"


def test_publish_is_repeatable_on_create_run_and_connect():
    parser = cli.build_parser()
    assert parser.parse_args(["create", "web", "-p", "80", "--publish", "53/udp"]).publish == ["80", "53/udp"]
    assert parser.parse_args(["run", "-p", "8080:80", "--", "true"]).publish == ["8080:80"]
    assert parser.parse_args(["connect", "app", "web", "-p", "80"]).publish == ["80"]
    assert parser.parse_args(["create", "web"]).publish == []


VERBS = ["network", "create", "ls", "rm", "run", "exec", "connect", "disconnect", "ps", "inspect", "port", "check",
         "gc", "doctor", "--", "-p", "--ip", "--mtu", "--network", "--format", "-f", "--subnet", "x", "1", ""]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=st.lists(st.sampled_from(VERBS) | st.text(max_size=8), max_size=6))
def test_any_argv_parses_or_is_refused_in_one_line(argv, capsys):
    from nsnet.cli import build_parser

    capsys.readouterr()
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        assert exc.code in (0, 2)
        if exc.code == 2:
            assert capsys.readouterr().err.count("\n") == 1


@pytest.fixture
def runs_here(nsnet, monkeypatch) -> Cli:
    """`run` with the fake kernel: the command runs in this namespace (entering a sandbox needs root)."""

    def popen(self, name, argv, **kwargs):
        self.sandbox(name)
        return subprocess.Popen(list(argv), **kwargs)

    monkeypatch.setattr(Engine, "popen", popen)
    assert nsnet.run("network", "create", "app", "--subnet", "10.31.0.0/24").code == 0
    return nsnet


@pytest.mark.parametrize(
    "program, code, reason",
    [
        ("/etc/passwd", 126, "permission denied"),
        ("/etc", 126, "is a directory"),
        ("/nonexistent/nsnet-test", 127, "command not found"),
        ("nsnet-no-such-command", 127, "command not found"),
        ("/etc/passwd/x", 127, "command not found"),
    ],
)
@pytest.mark.parametrize("verb", [["run", "--rm"], ["run", "--name", "kept"]])
def test_run_of_what_cannot_execute_is_one_line_and_the_shells_exit_code(runs_here, verb, program, code, reason):
    result = runs_here.run(*verb, "--network", "app", "--", program, "arg")
    assert result.code == code
    kept = "" if "--rm" in verb else "nsnet: sandbox kept\n"
    assert (result.out, result.err) == ("", f"{kept}nsnet: error: {program}: {reason}\n")
    assert runs_here.run("ps", "-q").out == ("" if "--rm" in verb else "kept\n")


def test_run_of_a_file_that_is_not_an_executable_format(runs_here, tmp_path):
    script = tmp_path / "not-a-program"
    script.write_bytes(b"\x00\x01 no shebang, no ELF")
    script.chmod(0o755)
    result = runs_here.run("run", "--rm", "--network", "app", "--", str(script))
    assert (result.code, result.err) == (126, f"nsnet: error: {script}: exec format error\n")
    assert runs_here.run("ps", "-q").out == ""


def test_run_without_rm_names_the_sandbox_it_keeps_on_stderr(runs_here):
    result = runs_here.run("run", "--network", "app", "--", sys.executable, "-c", "raise SystemExit(3)")
    (name,) = runs_here.run("ps", "-q").out.split()
    assert name.startswith("run-") and len(name) == len("run-") + 8
    assert result.code == 3
    assert result.err == f"nsnet: sandbox {name}\n"


def test_run_with_rm_prints_nothing_of_its_own(runs_here):
    result = runs_here.run("run", "--rm", "--network", "app", "--", sys.executable, "-c", "raise SystemExit(4)")
    assert (result.code, result.out, result.err) == (4, "", "")
    assert runs_here.run("ps", "-q").out == ""


@pytest.mark.parametrize(
    "argv, message",
    [
        (["network", "ls", "--format", "xml"],
         "argument --format: invalid format 'xml': must be table or json or a template such as '{{.Name}}'"),
        (["ps", "--format", "Name"], "argument --format: invalid format 'Name': must be table or json or a template"),
        (["ps", "--format", "{{.Name"], "argument --format: invalid format '{{.Name': '{{' is not closed by '}}'"),
        (["ps", "--format", "{{range .}}"],
         "argument --format: invalid format '{{range .}}': unsupported template syntax '{{range .}}'"),
        (["inspect", "-f", "table", "web"],
         "argument --format/-f: invalid format 'table': must be json or a template such as '{{.Name}}'"),
        (["network", "inspect", "--format", "{{.Name}} }}", "app"],
         "argument --format/-f: invalid format '{{.Name}} }}': '}}' closes no '{{'"),
        (["check", "--format", "xml"], "argument --format: invalid choice: 'xml' (choose from 'json')"),
        (["doctor", "--format", "table"], "argument --format: invalid choice: 'table' (choose from 'json')"),
        (["port", "web", "--format", "{{.HostPort}}"],
         "argument --format: invalid choice: '{{.HostPort}}' (choose from 'json')"),
    ],
)
def test_a_format_that_cannot_work_is_a_usage_error(web, argv, message):
    result = web.run(*argv)
    assert_one_error_line(result, code=2)
    assert result.err.startswith(f"nsnet: error: {message}")
    assert result.out == ""


@pytest.mark.parametrize(
    "argv, fmt, field",
    [
        (["ps", "--format"], "{{.Nmae}}", ".Nmae"),
        (["network", "ls", "--format"], "{{.Name}} {{.Subnet.Bits}}", ".Subnet.Bits"),
        (["inspect", "web", "db", "-f"], "{{.Networks.app.IPAddress}}", ".Networks.app"),
        (["network", "inspect", "app", "idle", "-f"], "{{.Sandboxes.web.IPAddress}}", ".Sandboxes.web"),
    ],
)
def test_a_field_missing_from_any_item_fails_before_anything_is_printed(web, argv, fmt, field):
    web.run("network", "create", "idle", "--subnet", "10.32.0.0/24")
    web.run("create", "db", "--network", "idle")
    result = web.run(*argv, fmt)
    assert (result.code, result.out) == (1, "")
    assert result.err == f"nsnet: error: invalid format {fmt!r}: no field {field}\n"


def test_json_in_a_template_prints_json(web):
    result = web.run("ps", "--format", "{{.Name}} {{json .Networks.app.Ports}} {{json .State}}")
    assert (result.code, result.out, result.err) == (0, 'web [] "ready"\n', "")


def _options_without_help(parser: argparse.ArgumentParser, prog: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += _options_without_help(sub, f"{prog} {name}")
        elif not action.help:
            missing.append(f"{prog} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_option_and_argument_has_help_text():
    assert _options_without_help(cli.build_parser(), "nsnet") == []


def test_shape_prints_the_setting_lists_it_and_inspect_shows_it(web):
    result = web.run("shape", "web", "--network", "app", "--rate", "10mbit", "--loss", "1%", "--direction", "both")
    assert (result.code, result.out, result.err) == (0, "web network app both: rate 10mbit, loss 1%\n", "")
    assert web.run("shapes").out == (
        "SANDBOX   INTERFACE     DIRECTION   RATE     DELAY   JITTER   LOSS   REORDER   LIMIT\n"
        "web       network app   both        10mbit   -       -        1%     -         -\n")
    assert web.run("shapes", "-q").out == "web network app\n"
    assert json.loads(web.run("inspect", "web").out)[0]["Shaping"] == [
        {"Sandbox": "web", "Network": "app", "Link": None, "Direction": "both", "Rate": "10mbit", "Delay": None,
         "Jitter": None, "Loss": "1%", "Reorder": None, "Limit": None, "State": "ready"}]
    refused = web.run("shape", "web", "--network", "app", "--clear", "--loss", "1%")
    assert (refused.code, refused.err) == (1, "nsnet: error: invalid --loss '1%': cannot go with --clear\n")
    assert web.run("shape", "web", "--network", "app", "--clear").code == 0
    assert web.run("shapes", "-q").out == "" and "Shaping" not in json.loads(web.run("inspect", "web").out)[0]
