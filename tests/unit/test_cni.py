"""The CNI adapter's pure parts: configurations in the reference plugins' keys, results in every
version, and the protocol's answers that need no kernel."""

from __future__ import annotations

import io
import json
import os

import pytest

from nsnet.cni import spec
from nsnet.cni.config import decode, parse
from nsnet.cni.plugin import main
from nsnet.cni.spec import CniError, Result

PODMAN = {  # what Podman 4's CNI backend writes for `podman network create`, type changed
    "cniVersion": "0.4.0", "name": "app", "type": "nsnet", "bridge": "cni-podman1", "isGateway": True,
    "ipMasq": True, "hairpinMode": True,
    "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
             "ranges": [[{"subnet": "10.89.0.0/24", "gateway": "10.89.0.1"}]]},
    "capabilities": {"portMappings": True, "ips": True, "mac": True},
    "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""},
                                       {"hostPort": 5353, "containerPort": 53, "protocol": "UDP",
                                        "hostIP": "2001:db8::5"}],
                      "ips": ["10.89.0.9"], "mac": "0a:58:0a:59:00:09"},
}


def failure(conf: dict, command: str = "ADD", args: str = "") -> CniError:
    with pytest.raises(CniError) as caught:
        parse(conf, command, args)
    return caught.value


def test_a_podman_configuration_reads_as_a_network_and_an_attachment():
    conf = parse(PODMAN, "ADD")
    assert (conf.version, conf.name, conf.bridge, conf.subnets, conf.gateways, conf.ip_ranges) == (
        "0.4.0", "app", "cni-podman1", ("10.89.0.0/24",), ("10.89.0.1",), ())
    assert conf.masquerade and conf.default_route and not conf.internal and conf.icc
    assert conf.ports == ("8080:80/tcp", "[2001:db8::5]:5353:53/udp")
    assert (conf.ips, conf.mac, conf.notes) == (("10.89.0.9",), "0a:58:0a:59:00:09", ())


def test_host_locals_other_spellings_and_dual_stack():
    legacy = parse({**PODMAN, "runtimeConfig": {}, "ipam": {"type": "host-local", "subnet": "10.90.0.0/16",
                                                             "rangeStart": "10.90.4.0", "rangeEnd": "10.90.7.255"}},
                   "ADD", "IgnoreUnknown=1;IP=10.90.4.7;MAC=0a:58:0a:5a:04:07;K8S_POD_NAME=web")
    assert (legacy.subnets, legacy.ip_ranges, legacy.ips, legacy.mac) == (
        ("10.90.0.0/16",), ("10.90.4.0/22",), ("10.90.4.7",), "0a:58:0a:5a:04:07")
    assert not legacy.default_route  # no route asked for, no isDefaultGateway
    dual = parse({**PODMAN, "runtimeConfig": {}, "isDefaultGateway": True,
                  "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.91.0.0/24", "rangeStart": "10.91.0.1",
                                                              "rangeEnd": "10.91.0.254"}],
                                                            [{"subnet": "fd00:91::/64"}]]}}, "ADD")
    assert (dual.subnets, dual.ip_ranges, dual.default_route) == (("10.91.0.0/24", "fd00:91::/64"),
                                                                   ("10.91.0.0/24",), True)
    no_masq = parse({k: v for k, v in PODMAN.items() if k != "ipMasq"}, "ADD")
    assert not no_masq.masquerade  # the bridge plugin's default: routed


def test_keys_nsnet_cannot_honour_are_named():
    cases = [
        ({**PODMAN, "isGateway": False}, spec.UNSUPPORTED_FIELD, "isGateway"),
        ({**PODMAN, "vlan": 100}, spec.UNSUPPORTED_FIELD, "vlan"),
        ({**PODMAN, "ipam": {"type": "dhcp"}}, spec.UNSUPPORTED_FIELD, "ipam.type"),
        ({**PODMAN, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/24"}, {"subnet": "10.9.1.0/24"}]]}},
         spec.UNSUPPORTED_FIELD, "one range per set"),
        ({**PODMAN, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "10.8.0.0/24"}]]}},
         spec.UNSUPPORTED_FIELD, "a second IPv4 subnet"),
        ({**PODMAN, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/24", "rangeStart": "10.9.0.10",
                                                                "rangeEnd": "10.9.0.20"}]]}},
         spec.UNSUPPORTED_FIELD, "is not one CIDR block"),
        ({**PODMAN, "ipam": {**PODMAN["ipam"], "routes": [{"dst": "192.0.2.0/24"}]}}, spec.UNSUPPORTED_FIELD,
         "default routes (0.0.0.0/0, ::/0) only"),
        ({**PODMAN, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/99"}]]}}, spec.INVALID_CONFIG,
         "ipam.ranges[0][0].subnet"),
        ({k: v for k, v in PODMAN.items() if k != "ipam"}, spec.INVALID_CONFIG, "needs an ipam section"),
        ({**PODMAN, "mtu": "1500"}, spec.INVALID_CONFIG, "mtu: must be an integer"),
        ({**PODMAN, "runtimeConfig": {"portMappings": [{"hostPort": "80"}]}}, spec.INVALID_CONFIG, "portMappings[0]"),
        ({**PODMAN, "runtimeConfig": {"ips": ["not-an-ip"]}}, spec.INVALID_CONFIG, "'not-an-ip' is not an IP"),
        ({**PODMAN, "cniVersion": "0.2.0"}, spec.INCOMPATIBLE_VERSION, "incompatible CNI version '0.2.0'"),
        ({**PODMAN, "name": ""}, spec.INVALID_CONFIG, "name"),
    ]
    for conf, code, words in cases:
        error = failure(conf)
        assert error.code == code and words in error.msg, (words, error.code, error.msg)
    assert failure({**PODMAN, "cniVersion": "0.3.1"}, "CHECK").code == spec.INCOMPATIBLE_VERSION
    assert failure({**PODMAN, "cniVersion": "1.0.0"}, "GC").code == spec.INCOMPATIBLE_VERSION
    with pytest.raises(CniError) as caught:
        decode(b"[1, 2]")
    assert caught.value.code == spec.DECODING_FAILURE


def test_a_runtimes_labels_in_args_read_as_label_spellings():
    """CONVENTIONS.md's args.cni.labels; a network's own labels (Podman's args.podman_labels,
    from `podman network create --label`) are not its containers'."""
    labelled = {**PODMAN, "args": {"cni": {"labels": [{"key": "app", "value": "web"},
                                                      {"key": "tier", "value": "front=1"}]},
                                   "podman_labels": {"owner": "ops"}}}
    # The container's name as the runtime passes it in CNI_ARGS (Podman: K8S_POD_NAME) is a label too.
    assert parse(labelled, "ADD", "IgnoreUnknown=1;K8S_POD_NAME=web").labels == (
        "K8S_POD_NAME=web", "app=web", "tier=front=1")
    assert parse(PODMAN, "ADD", "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=db;K8S_POD_UID=x").labels == (
        "K8S_POD_NAME=db", "K8S_POD_NAMESPACE=shop")
    assert parse(PODMAN, "ADD").labels == () and parse(PODMAN, "ADD", "K8S_POD_NAME=").labels == ()
    for labels, where in (({"app": "web"}, "args.cni.labels: must be a list"),
                          (["app=web"], "args.cni.labels[0]: must be"),
                          ([{"key": "app", "value": "web"}, {"key": "app"}], "args.cni.labels[1]: must be"),
                          ([{"key": "app", "value": 1}], "args.cni.labels[0]: must be"),
                          ([{"key": "a=b", "value": "c"}], "args.cni.labels[0]: must be")):
        error = failure({**PODMAN, "args": {"cni": {"labels": labels}}})
        assert error.code == spec.INVALID_CONFIG and where in error.msg and "\n" not in error.msg, error.msg
    assert parse({**PODMAN, "args": {"cni": {"labels": "bad"}}}, "DEL").labels == ()  # DEL never fails on them


def test_harmless_keys_are_noted_not_refused():
    conf = parse({**PODMAN, "hairpinMode": False, "promiscMode": True, "macspoofchk": False,
                  "ipam": {**PODMAN["ipam"], "dataDir": "/var/lib/cni"}}, "ADD")
    assert [n.split(" ")[0] for n in conf.notes] == ["hairpinMode", "promiscMode", "macspoofchk", "ipam.dataDir"]


def test_results_in_each_version_and_after_a_previous_plugin():
    result = Result([{"name": "cni0", "mac": "02:4e:0a:58:00:01"}, {"name": "nsv1"},
                     {"name": "eth0", "mac": "02:4e:0a:58:00:02", "sandbox": "/run/netns/x"}],
                    [{"address": "10.88.0.2/16", "gateway": "10.88.0.1", "interface": 2},
                     {"address": "fd00::2/64", "gateway": "fd00::1", "interface": 2}],
                    [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}], {"nameservers": ["10.88.0.1"]})
    old, new = result.to_json("0.3.1"), result.to_json("1.1.0")
    assert [ip["version"] for ip in old["ips"]] == ["4", "6"] and old["cniVersion"] == "0.3.1"
    assert "version" not in new["ips"][0] and new["cniVersion"] == "1.1.0"
    assert new["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}] and new["dns"] == {"nameservers": ["10.88.0.1"]}
    previous = {"interfaces": [{"name": "lo0"}], "ips": [{"version": "4", "address": "192.0.2.9/32", "interface": 0}],
                "dns": {}}
    merged = result.after(previous).to_json("1.0.0")
    assert [i["name"] for i in merged["interfaces"]] == ["lo0", "cni0", "nsv1", "eth0"]
    assert [(ip["address"], ip["interface"]) for ip in merged["ips"]] == [
        ("192.0.2.9/32", 0), ("10.88.0.2/16", 3), ("fd00::2/64", 3)]


def run_plugin(env: dict[str, str], stdin: bytes) -> tuple[int, dict]:
    out = io.StringIO()
    code = main(env, io.BytesIO(stdin), out, io.StringIO())
    return code, json.loads(out.getvalue())


def test_version_and_environment_errors_need_no_kernel():
    assert run_plugin({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "1.0.0"}') == (
        0, {"cniVersion": "1.0.0", "supportedVersions": list(spec.SUPPORTED_VERSIONS)})
    assert run_plugin({"CNI_COMMAND": "VERSION"}, b"") == (
        0, {"cniVersion": "1.1.0", "supportedVersions": list(spec.SUPPORTED_VERSIONS)})
    code, error = run_plugin({}, b"{}")
    assert (code, error["code"]) == (1, spec.INVALID_ENVIRONMENT)
    code, error = run_plugin({"CNI_COMMAND": "ADD"}, b"\xff\xfe")
    assert (code, error["code"], error["cniVersion"]) == (1, spec.DECODING_FAILURE, "1.1.0")
    code, error = run_plugin({"CNI_COMMAND": "ADD"}, json.dumps({**PODMAN, "vlan": 3}).encode())
    assert (code, error["code"], error["cniVersion"]) == (1, spec.UNSUPPORTED_FIELD, "0.4.0")


def test_the_installed_plugin_serves_the_ledger_it_was_installed_for(tmp_path):
    """Podman runs DEL from a cleanup process with another environment: the ledger is written in."""
    from nsnet.cni.install import install
    from nsnet.errors import NsnetError

    path = install(str(tmp_path / "bin"), str(tmp_path / "state"))
    text = open(path).read()
    assert path == str(tmp_path / "bin" / "nsnet") and os.access(path, os.X_OK)
    assert text.splitlines()[0].endswith(" -IS")
    assert f"run(state_dir={str(tmp_path / 'state')!r})" in text
    with pytest.raises(Exception, match="must be an absolute path"):
        install("relative/bin", str(tmp_path / "state"))
    # A link at the plugin's name is replaced, never written through.
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    os.remove(path)
    os.symlink(victim, path)
    install(str(tmp_path / "bin"), str(tmp_path / "state"))
    assert victim.read_text() == "untouched" and not os.path.islink(path)
    # A link planted at the temporary name stops the install; nothing is written through it.
    os.symlink(victim, f"{path}.{os.getpid()}.tmp")
    with pytest.raises(NsnetError, match=r"\.tmp exists \(nsnet makes it new\); remove it"):
        install(str(tmp_path / "bin"), str(tmp_path / "state"))
    assert victim.read_text() == "untouched"


def test_version_reads_its_one_field_without_a_parser_and_answers_valid_json():
    from nsnet.cni.plugin import version_answer

    for raw, version in ((b'{"cniVersion": "0.3.1"}', "0.3.1"), (b'{\n  "name": "x",\n  "cniVersion" :"1.0.0"}', "1.0.0"),
                         (b'{"cniVersion": "9.9.9"}', "1.1.0"), (b"", "1.1.0"), (b"garbage", "1.1.0"),
                         (b'{"cniVersion": 4}', "1.1.0"), (b'{"cniVersion": "0.4.0', "1.1.0"), (b'{"cniVersion"', "1.1.0")):
        assert json.loads(version_answer(raw)) == {"cniVersion": version,
                                                   "supportedVersions": list(spec.SUPPORTED_VERSIONS)}, raw


def test_a_defect_still_answers_cni_json(monkeypatch):
    import nsnet.cni.plugin as plugin

    def broken(*_args):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(plugin, "_run", broken)
    err = io.StringIO()
    out = io.StringIO()
    code = main({"CNI_COMMAND": "ADD"}, io.BytesIO(json.dumps(PODMAN).encode()), out, err)
    assert (code, json.loads(out.getvalue())) == (1, {"cniVersion": "0.4.0", "code": spec.INTERNAL,
                                                      "msg": "nsnet failed: ZeroDivisionError: boom"})
    assert "Traceback" in err.getvalue()
