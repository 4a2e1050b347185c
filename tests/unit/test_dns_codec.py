"""The resolver's codec, checked against dnspython as an independent parser, and fuzzed."""

from __future__ import annotations

from ipaddress import ip_address

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nsnet.dns import codec


def query(name: str, rdtype: str = "A", *, edns: int = -1, size: int = 1232, ident: int = 4242) -> bytes:
    message = dns.message.make_query(name, rdtype, use_edns=edns, payload=size)
    message.id = ident
    return message.to_wire()


def test_a_query_is_read_with_its_case_kept_in_the_question_bytes() -> None:
    parsed = codec.parse_query(query("WeB.App.", "AAAA", edns=0, size=4096))
    assert (parsed.id, parsed.name, parsed.qtype, parsed.qclass) == (4242, "web.app", codec.AAAA, codec.CLASS_IN)
    assert parsed.question == b"\x03WeB\x03App\x00\x00\x1c\x00\x01"
    assert parsed.edns_size == 4096 and parsed.udp_limit() == 1232 and parsed.recursion_desired
    plain = codec.parse_query(query("web."))
    assert plain.edns_size is None and plain.udp_limit() == 512


def test_an_address_answer_reads_back_in_dnspython() -> None:
    parsed = codec.parse_query(query("Web.nsnet.", "A", edns=0))
    wire = codec.addresses_answer(parsed, [ip_address("10.31.0.2"), ip_address("10.31.0.3")])
    answer = dns.message.from_wire(wire)
    assert answer.id == 4242 and answer.rcode() == dns.rcode.NOERROR
    assert answer.flags & dns.flags.QR and answer.flags & dns.flags.AA and not answer.flags & dns.flags.RA
    (rrset,) = answer.answer
    assert rrset.name.to_text() == "Web.nsnet." and rrset.ttl == 0
    assert sorted(r.address for r in rrset) == ["10.31.0.2", "10.31.0.3"]
    assert answer.edns == 0 and answer.payload == 1232


def test_an_aaaa_answer_and_a_pointer() -> None:
    parsed = codec.parse_query(query("web.", "AAAA"))
    (rrset,) = dns.message.from_wire(codec.addresses_answer(parsed, [ip_address("fd00:31::2")],
                                                            recursion_available=True)).answer
    assert [r.address for r in rrset] == ["fd00:31::2"]
    reverse = codec.parse_query(query("2.0.31.10.in-addr.arpa.", "PTR"))
    assert codec.reverse_address(reverse.name) == ip_address("10.31.0.2")
    (rrset,) = dns.message.from_wire(codec.pointer_answer(reverse, "web.app.nsnet")).answer
    assert rrset[0].target.to_text() == "web.app.nsnet."
    six = ip_address("fd00:31::2")
    assert codec.reverse_address(six.reverse_pointer) == six
    for partial in ("31.10.in-addr.arpa", "x.0.31.10.in-addr.arpa", "0.0.ip6.arpa", "example.org"):
        assert codec.reverse_address(partial) is None


def test_negative_answers_carry_the_zone_s_soa_with_ttl_0() -> None:
    parsed = codec.parse_query(query("nobody.nsnet.", "A", edns=0))
    answer = dns.message.from_wire(codec.negative_answer(parsed, codec.NXDOMAIN, "nsnet"))
    assert answer.rcode() == dns.rcode.NXDOMAIN and answer.flags & dns.flags.AA and not answer.answer
    (soa,) = answer.authority
    assert soa.name.to_text() == "nsnet." and soa.ttl == 0 and soa[0].minimum == 0
    nodata = dns.message.from_wire(codec.negative_answer(parsed, codec.NOERROR, "nsnet"))
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority
    failed = dns.message.from_wire(codec.error_answer(parsed, codec.SERVFAIL, recursion_available=True))
    assert failed.rcode() == dns.rcode.SERVFAIL and failed.flags & dns.flags.RA
    assert failed.question[0].name.to_text() == "nobody.nsnet."


def test_an_answer_larger_than_the_client_takes_is_truncated() -> None:
    parsed = codec.parse_query(query("many.", "A"))
    addresses = [ip_address(f"10.0.{i // 250}.{i % 250 + 1}") for i in range(60)]
    small = codec.addresses_answer(parsed, addresses, limit=parsed.udp_limit())
    answer = dns.message.from_wire(small)
    assert answer.flags & dns.flags.TC and not answer.answer and len(small) <= 512
    whole = dns.message.from_wire(codec.addresses_answer(parsed, addresses))  # what TCP carries
    assert len(whole.answer[0]) == 60


@pytest.mark.parametrize("wire, reason", [
    (b"\x00\x01", "shorter than a header"),
    (b"\x00\x01\x81\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01", "a response"),
    (b"\x00\x01\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01", "2 questions"),
    (b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05ab", "label runs past"),
    (b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01", "pointers loop"),
    (b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03abc\x00\x00", "question runs past"),
    (b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\x00\x00\x01\x00\x01\x00\x00\x29", "record runs past"),
    (b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x3fa" * 5, "label runs past"),
    (b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01",
     "longer than 255"),
])
def test_malformed_queries_are_format_errors(wire: bytes, reason: str) -> None:
    with pytest.raises(codec.FormatError, match=reason):
        codec.parse_query(wire)


def test_a_forwarded_answer_must_match_id_and_question() -> None:
    parsed = codec.parse_query(query("Example.org.", "A"))
    upstream = dns.message.make_response(dns.message.from_wire(codec.with_id(query("example.ORG.", "A"), 7)))
    wire = upstream.to_wire()
    assert codec.response_matches(wire, 7, parsed.question)
    assert not codec.response_matches(wire, 8, parsed.question)
    assert not codec.response_matches(codec.with_id(query("other.org."), 7), 7, parsed.question)  # not a response
    assert codec.parse_query(codec.with_id(query("x."), 9)).id == 9


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_parse_or_raise_format_error(wire: bytes) -> None:
    try:
        parsed = codec.parse_query(wire)
    except codec.FormatError:
        return
    dns.message.from_wire(codec.negative_answer(parsed, codec.NXDOMAIN, "nsnet"), question_only=True)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.from_regex(r"[A-Za-z0-9-]{1,20}", fullmatch=True), min_size=1, max_size=5),
       st.sampled_from(["A", "AAAA", "PTR", "MX", "TXT"]), st.integers(0, 65535))
def test_every_well_formed_query_is_read_as_dnspython_wrote_it(labels: list[str], rdtype: str, ident: int) -> None:
    name = ".".join(labels) + "."
    parsed = codec.parse_query(query(name, rdtype, ident=ident, edns=0))
    assert parsed.name == name[:-1].lower() and parsed.id == ident
    assert parsed.qtype == dns.rdatatype.from_text(rdtype)
