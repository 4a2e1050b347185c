"""What the resolver answers, from ledger rows: names, aliases, NAME.NETWORK, the zone, scoping
to shared networks, forwarding rights, pointers; and the resolv.conf files it reads and writes."""

from __future__ import annotations

from ipaddress import ip_address

from nsnet.dns import resolvconf
from nsnet.dns.table import EndpointRow, NetworkRow, Table, dns_label

ip = ip_address


def table() -> Table:
    networks = [NetworkRow("app", ["10.31.0.1", "fd00:31::1"], ["10.31.0.0/24", "fd00:31::/64"], False, []),
                NetworkRow("back", ["10.32.0.1"], ["10.32.0.0/24"], True, []),
                NetworkRow("vault", ["10.33.0.1"], ["10.33.0.0/24"], True, ["10.33.0.53"], 10053)]
    endpoints = [EndpointRow("Web", "app", ["10.31.0.2", "fd00:31::2"], ["www", "API"]),
                 EndpointRow("web", "back", ["10.32.0.2"], ["db-front"]),
                 EndpointRow("client", "app", ["10.31.0.3"], []),
                 EndpointRow("db", "back", ["10.32.0.3"], []),
                 EndpointRow("spare", "back", ["10.32.0.4"], ["www"]),
                 EndpointRow("safe", "vault", ["10.33.0.2"], []),
                 EndpointRow("bad_name", "app", ["10.31.0.9"], ["under_score"]),
                 EndpointRow("ghost", "nodns", ["10.99.0.2"], [])]
    return Table(networks, endpoints)


def addresses(t: Table, name: str, source: str | None) -> list[str] | None:
    answer = t.lookup(name, t.scope(source))
    return sorted(str(a) for a in answer.addresses) if answer.known else None


def test_names_aliases_and_network_qualified_names_within_shared_networks() -> None:
    t = table()
    assert addresses(t, "web", "10.31.0.3") == ["10.31.0.2", "fd00:31::2"]  # client shares only app
    assert addresses(t, "www", "10.31.0.3") == ["10.31.0.2", "fd00:31::2"]
    assert addresses(t, "api.app", "10.31.0.3") == ["10.31.0.2", "fd00:31::2"]
    assert addresses(t, "web.app.nsnet", "10.31.0.3") == ["10.31.0.2", "fd00:31::2"]
    assert addresses(t, "web.nsnet", "10.31.0.3") == ["10.31.0.2", "fd00:31::2"]
    assert addresses(t, "db", "10.31.0.3") is None  # on back only: not the client's
    assert addresses(t, "web.back", "10.31.0.3") is None
    # db shares back with web and spare: both hold `www` there
    assert addresses(t, "www", "10.32.0.3") == ["10.32.0.4"]
    assert addresses(t, "web", "10.32.0.3") == ["10.32.0.2"]
    # web itself is on both: its name answers with both networks' addresses
    assert addresses(t, "web", "10.31.0.2") == ["10.31.0.2", "10.32.0.2", "fd00:31::2"]
    # the host (or any address not a sandbox's) sees every DNS network
    assert addresses(t, "www", None) == ["10.31.0.2", "10.32.0.4", "fd00:31::2"]
    assert addresses(t, "db.back.nsnet", "10.31.0.1") == ["10.32.0.3"]
    # names no question can ask for are skipped; networks without DNS are not in the table
    assert sorted(t.skipped) == ["bad_name", "under_score"]
    assert addresses(t, "ghost", None) is None and addresses(t, "nobody.nsnet", None) is None
    assert t.lookup("nobody.nsnet", t.scope(None)).in_zone and not t.lookup("example.org", t.scope(None)).in_zone
    # an address as recvfrom gives it, any spelling of an IPv6 one, a link's scope id
    assert t.scope("fd00:31:0::2").networks == t.scope("fd00:31::2%eth0").networks == frozenset({"app", "back"})
    assert t.scope("not an address") is t.scope("192.0.2.9") is t.everything
    assert dns_label("web-1") and not dns_label("-web") and not dns_label("a.b") and not dns_label("x" * 64)


def test_forwarding_rights_upstreams_and_pointers() -> None:
    t = table()
    client, web, db, safe = (t.scope(a) for a in ("10.31.0.3", "10.31.0.2", "10.32.0.3", "10.33.0.2"))
    assert client.forwards and t.scope(None).forwards and web.forwards
    assert not db.forwards and not safe.forwards  # every network of theirs is internal
    assert safe.servers == ("10.33.0.53",) and client.servers == ()
    assert t.pointer(ip("10.31.0.2"), client) == "web.app.nsnet"
    assert t.pointer(ip("10.32.0.3"), client) is None
    assert t.owns_reverse(ip("10.31.0.200"), client) and not t.owns_reverse(ip("10.32.0.200"), client)
    assert [(str(a), port) for a, port in t.listeners()] == [("10.31.0.1", 53), ("10.32.0.1", 53), ("10.33.0.1", 10053),
                                                           ("fd00:31::1", 53)]


def test_resolv_conf_read_and_written() -> None:
    host = resolvconf.parse("# a comment\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver bogus\n"
                            "nameserver 192.0.2.1\nnameserver 192.0.2.2\ndomain old.example\n"
                            "search corp.example lab.example ; trailing\noptions edns0 ndots:5 trust-ad\n")
    assert host.servers == ("127.0.0.53", "fe80::1%eth0", "192.0.2.1")
    assert host.search == ("corp.example", "lab.example") and host.options == ("edns0", "ndots:5", "trust-ad")
    assert resolvconf.render(["10.31.0.1", "10.32.0.1"], host) == (
        "# Written by nsnet: its resolver, on the gateways of this sandbox's DNS networks.\n"
        "nameserver 10.31.0.1\nnameserver 10.32.0.1\n"
        "search nsnet corp.example lab.example\noptions edns0 trust-ad\n")
    empty = resolvconf.parse("")
    assert resolvconf.render(["10.31.0.1"], empty).endswith("nameserver 10.31.0.1\nsearch nsnet\n")
