"""A read made of several statements sees one moment of the ledger, even when another process
commits between its statements (two runtimes calling the CNI plugin at once did exactly that)."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

from nsnet.model import Network, Subnet
from nsnet.store import Store


def _network(name: str) -> Network:
    return Network(id=f"id-{name}", name=name, bridge=f"br-{name}",
                   subnets=(Subnet(ip_network("10.88.0.0/16"), ip_address("10.88.0.1"), None),),
                   internal=False, mtu=1500, icc=True, labels=(), ipv6_routed=False, created=1.0, state="ready")


def _commit_during(reader: Store, writer: Store, statement_marker: str) -> None:
    """Commit a new network from `writer` the moment `reader` starts the statement holding the marker."""
    done = []

    def trace(sql: str) -> None:
        if statement_marker in sql and not done:
            done.append(sql)
            with writer.transaction():
                writer.add_network(_network("app"))

    reader.db.set_trace_callback(trace)


def test_a_network_is_never_read_without_its_subnets(tmp_path) -> None:
    reader, writer = Store(str(tmp_path)), Store(str(tmp_path))
    _commit_during(reader, writer, "FROM networks n WHERE")  # after the subnets were read
    assert reader.network("app") is None  # the moment before the commit, whole
    reader.db.set_trace_callback(None)
    assert [str(s.subnet) for s in reader.network("app").subnets] == ["10.88.0.0/16"]


def test_a_read_inside_a_transaction_is_that_transaction(tmp_path) -> None:
    store = Store(str(tmp_path))
    with store.transaction():
        store.add_network(_network("app"))
        assert store.network("app").subnets[0].gateway == ip_address("10.88.0.1")
    assert not store.db.in_transaction
