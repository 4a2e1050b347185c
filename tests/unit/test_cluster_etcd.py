"""The etcd gateway client's encoding and settings, without an etcd: base64 keys and values,
int64 as strings, prefix ranges, compare targets, and one-line refusals of bad settings."""

import base64

import pytest

from nsnet.cluster.etcd import Settings, compare_json, key_value, op_json, open_store, prefix_end
from nsnet.cluster.store import Compare, Delete, Put
from nsnet.errors import InvalidInput


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_prefix_end_is_the_prefix_with_its_last_byte_plus_one():
    assert prefix_end("/nsnet/v1/") == b"/nsnet/v10"
    assert prefix_end("a") == b"b"
    assert prefix_end("") == b"\0"


def test_compares_and_operations_are_etcds_json():
    assert compare_json(Compare("/k", "create", "=", 0)) == {"key": b64("/k"), "target": "CREATE", "result": "EQUAL",
                                                             "create_revision": "0"}
    assert compare_json(Compare("/k", "mod", "!=", 12)) == {"key": b64("/k"), "target": "MOD", "result": "NOT_EQUAL",
                                                            "mod_revision": "12"}
    assert compare_json(Compare("/k", "value", "=", b"x"))["value"] == b64("x")
    assert op_json(Put("/k", b"v", 7)) == {"request_put": {"key": b64("/k"), "value": b64("v"), "lease": "7"}}
    assert op_json(Put("/k", b"v")) == {"request_put": {"key": b64("/k"), "value": b64("v")}}
    assert op_json(Delete("/p/", prefix=True)) == {"request_delete_range": {"key": b64("/p/"), "range_end": b64("/p0")}}


def test_absent_fields_mean_zero():
    kv = key_value({"key": b64("/k"), "create_revision": "5", "mod_revision": "6"})
    assert (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) == ("/k", b"", 5, 6, 0, 0)


def test_settings_from_the_environment(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not read until a connection")
    settings = Settings("etcd://10.99.0.10:2379,[fd00::1]:2380", {"NSNET_CLUSTER_USER": "nsnet:secret"})
    assert settings.endpoints == [("10.99.0.10", 2379), ("fd00::1", 2380)] and not settings.tls
    assert (settings.user, settings.password) == ("nsnet", "secret")
    assert open_store("", {}) is None


@pytest.mark.parametrize("url, env, field, reason", [
    ("http://10.99.0.10:2379", {}, "NSNET_CLUSTER", "must be etcd://"),
    ("etcd://10.99.0.10", {}, "NSNET_CLUSTER", "is not HOST:PORT"),
    ("etcd://10.99.0.10:99999", {}, "NSNET_CLUSTER", "is not HOST:PORT"),
    ("etcd://10.99.0.10:2379", {"NSNET_CLUSTER_CACERT": "/nonexistent"}, "NSNET_CLUSTER", "use etcds://"),
    ("etcds://10.99.0.10:2379", {"NSNET_CLUSTER_CACERT": "/nonexistent"}, "NSNET_CLUSTER_CACERT", "no such file"),
    ("etcds://10.99.0.10:2379", {"NSNET_CLUSTER_CERT": "/etc/hostname"}, "NSNET_CLUSTER_KEY", "needs both"),
])
def test_bad_settings_are_refused_in_one_line(url, env, field, reason):
    with pytest.raises(InvalidInput) as caught:
        Settings(url, env)
    assert caught.value.field == field and reason in str(caught.value) and "\n" not in str(caught.value)
