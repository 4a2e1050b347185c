"""The etcd client against a real etcd (Debian's etcd-server) in a namespace of this lab: TLS with
a CA made here, etcd's users with a role limited to /nsnet/, and what a client sees when etcd is
away or its history compacted."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from nsnet.cluster.etcd import open_store
from nsnet.cluster.store import Compacted, Compare, Put, Unavailable
from nsnet.errors import NsnetError
from nsnet.labhosts import etcd_binary

from .conftest import NSNET

ADDRESS = "10.98.0.10"


def sh(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


@pytest.fixture
def member(tmp_path: Path):
    """An etcd member in netns `etcd`, reachable from this lab's namespace at ADDRESS."""
    sh("ip", "netns", "add", "etcd")
    sh("ip", "link", "add", "etcd0", "type", "veth", "peer", "name", "eth0", "netns", "etcd")
    sh("ip", "addr", "add", "10.98.0.1/24", "dev", "etcd0")
    sh("ip", "link", "set", "etcd0", "up")
    for args in (("addr", "add", f"{ADDRESS}/24", "dev", "eth0"), ("link", "set", "eth0", "up"),
                 ("link", "set", "lo", "up")):
        sh("ip", "-n", "etcd", *args)
    started: list[subprocess.Popen] = []

    def start(*extra: str, scheme: str = "http") -> subprocess.Popen:
        url = f"{scheme}://{ADDRESS}:2379"
        process = subprocess.Popen(["ip", "netns", "exec", "etcd", etcd_binary(), "--data-dir", str(tmp_path / "data"),
                                    "--listen-client-urls", url, "--advertise-client-urls", url,
                                    "--listen-peer-urls", f"http://{ADDRESS}:2380",
                                    "--initial-advertise-peer-urls", f"http://{ADDRESS}:2380",
                                    "--initial-cluster", f"default=http://{ADDRESS}:2380", *extra],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(process)
        return process

    def stop(process: subprocess.Popen) -> None:
        process.terminate()
        process.wait(10)

    yield start, stop
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()
    subprocess.run(["ip", "netns", "del", "etcd"], check=False)
    subprocess.run(["ip", "link", "del", "etcd0"], check=False, capture_output=True)


def wait_ready(store) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            store.version()
            store.range("/")
            return
        except (Unavailable, NsnetError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_transactions_leases_watches_and_outages(member) -> None:
    start, stop = member
    process = start()
    store = open_store(f"etcd://{ADDRESS}:2379", {})
    wait_ready(store)
    first = store.put("/nsnet/v1/a", b"1")
    assert store.txn([Compare("/nsnet/v1/a", "create", "=", 0)], [Put("/nsnet/v1/a", b"2")])[0] is False
    assert store.get("/nsnet/v1/a").value == b"1"
    lease = store.grant(2)
    store.put("/nsnet/v1/alive", b"x", lease)
    deadline = time.monotonic() + 10
    while store.get("/nsnet/v1/alive") is not None:  # the lease ends: its key goes
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert store.keepalive(lease) == 0
    events = [(e.type, e.kv.key) for e in _events(store.watch("/nsnet/v1/", first), 3)]
    assert events == [("put", "/nsnet/v1/a"), ("put", "/nsnet/v1/alive"), ("delete", "/nsnet/v1/alive")]
    stop(process)
    with pytest.raises(Unavailable, match="cluster store unavailable: 10.98.0.10:2379"):
        store.get("/nsnet/v1/a")
    start()
    wait_ready(store)
    revision = store.put("/nsnet/v1/b", b"3")
    store.compact(revision)
    with pytest.raises(Compacted):
        _events(store.watch("/nsnet/v1/", first), 1)


def _events(watch, count: int) -> list:
    """The first `count` events of a watch (history comes in as few batches as etcd likes)."""
    got = []
    for batch in watch:
        got += batch.events
        if len(got) >= count:
            watch.close()
    return got


def test_tls_and_a_user_limited_to_nsnets_prefix(member, tmp_path: Path, state_dir: str) -> None:
    start, stop = member
    ca, key = tmp_path / "ca.pem", tmp_path / "ca.key"
    server, server_key = tmp_path / "server.pem", tmp_path / "server.key"
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=nsnet test CA",
       "-keyout", str(key), "-out", str(ca))
    sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=etcd", "-keyout", str(server_key),
       "-out", str(tmp_path / "server.csr"))
    (tmp_path / "san.ext").write_text(f"subjectAltName=IP:{ADDRESS}\n")
    sh("openssl", "x509", "-req", "-in", str(tmp_path / "server.csr"), "-CA", str(ca), "-CAkey", str(key),
       "-CAcreateserial", "-days", "1", "-extfile", str(tmp_path / "san.ext"), "-out", str(server))
    start("--cert-file", str(server), "--key-file", str(server_key), scheme="https")
    url = f"etcds://{ADDRESS}:2379"
    admin = open_store(url, {"NSNET_CLUSTER_CACERT": str(ca)})
    wait_ready(admin)
    etcdctl = [etcd_binary("etcdctl"), f"--endpoints=https://{ADDRESS}:2379", f"--cacert={ca}"]
    for args in (["user", "add", "root:rootpw"], ["user", "add", "nsnet:s3cret"], ["role", "add", "nsnet"],
                 ["role", "grant-permission", "nsnet", "--prefix=true", "readwrite", "/nsnet/"],
                 ["user", "grant-role", "nsnet", "nsnet"], ["auth", "enable"]):
        sh(*etcdctl, *args)
    user = open_store(url, {"NSNET_CLUSTER_CACERT": str(ca), "NSNET_CLUSTER_USER": "nsnet:s3cret"})
    user.put("/nsnet/v1/x", b"1")
    assert user.get("/nsnet/v1/x").value == b"1"
    with pytest.raises(NsnetError, match="permission denied"):
        user.get("/elsewhere")
    with pytest.raises(NsnetError, match="user 'nsnet'"):
        open_store(url, {"NSNET_CLUSTER_CACERT": str(ca), "NSNET_CLUSTER_USER": "nsnet:wrong"}).get("/nsnet/v1/x")
    with pytest.raises(Unavailable, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        open_store(url, {"NSNET_CLUSTER_USER": "nsnet:s3cret"}).get("/nsnet/v1/x")  # the system's CAs know none of it
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{ADDRESS}:2379/version", timeout=2)  # no plaintext beside TLS
    # nsnet itself on that cluster, as user nsnet over TLS: the command joins, the agent it starts
    # registers the host and publishes the sandbox's name.
    env = {**os.environ, "NSNET_CLUSTER": url, "NSNET_CLUSTER_CACERT": str(ca), "NSNET_CLUSTER_USER": "nsnet:s3cret",
           "NSNET_HOST_ID": "tls-host"}

    def nsnet(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([NSNET, *args], env=env, capture_output=True, text=True, timeout=60)

    try:
        made = nsnet("network", "create", "mesh", "--driver", "overlay", "--subnet", "10.80.0.0/16")
        assert made.returncode == 0, made.stderr
        assert nsnet("create", "a", "--network", "mesh").returncode == 0
        hosts = json.loads(nsnet("cluster", "hosts", "--format", "json").stdout)
        assert [(h["Host"], h["State"], h["Vtep"]) for h in hosts] == [("tls-host", "alive", "10.98.0.1")]
        published = user.get("/nsnet/v1/networks/mesh/endpoints/tls-host/a")
        address = json.loads(nsnet("inspect", "a").stdout)[0]["Networks"]["mesh"]["IPAddress"]
        assert published is not None and json.loads(published.value)["addresses"] == [address]
    finally:
        nsnet("rm", "-f", "a")
        nsnet("network", "rm", "-f", "mesh")
    assert user.get("/nsnet/v1/networks/mesh/config") is None
