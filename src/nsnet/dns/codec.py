"""DNS messages as nsnet's resolver reads and writes them (RFC 1035, EDNS from RFC 6891).

Pure bytes in, bytes out. A query is one question and perhaps an OPT record; an answer copies the
question's bytes (the client's letter case included, so 0x20 randomisation holds) and names it by
a pointer. Anything malformed raises FormatError, never another exception: the server answers
FORMERR when the header can be read and drops the datagram when it cannot.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address, ip_address

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

A, NS, SOA, PTR, AAAA, OPT = 1, 2, 6, 12, 28, 41
CLASS_IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
QR, AA, TC, RD, RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080
OPCODE_MASK = 0x7800
HEADER = struct.Struct("!HHHHHH")
PLAIN_UDP_SIZE = 512
EDNS_UDP_SIZE = 1232  # what nsnet offers and accepts at most: no fragmentation (DNS flag day 2020)
MAX_MESSAGE = 65535
POINTER_TO_QUESTION = b"\xc0\x0c"
MAX_NAME = 255
MAX_POINTERS = 16  # more jumps than any honest message needs: a loop


class FormatError(ValueError):
    """The message is not one nsnet can read."""


class Query:
    """One question: `name` lowercased without the final dot, `question` the wire bytes as sent."""

    __slots__ = ("id", "flags", "name", "qtype", "qclass", "question", "edns_size")

    def __init__(self, id: int, flags: int, name: str, qtype: int, qclass: int, question: bytes,
                 edns_size: int | None) -> None:
        self.id, self.flags, self.name, self.qtype, self.qclass = id, flags, name, qtype, qclass
        self.question, self.edns_size = question, edns_size

    @property
    def recursion_desired(self) -> bool:
        return bool(self.flags & RD)

    def udp_limit(self) -> int:
        """The largest UDP answer this client takes."""
        if self.edns_size is None:
            return PLAIN_UDP_SIZE
        return max(PLAIN_UDP_SIZE, min(self.edns_size, EDNS_UDP_SIZE))


def read_name(message: bytes, offset: int) -> tuple[str, int]:
    """The name at offset (pointers followed, at most MAX_POINTERS) and the offset after it."""
    labels: list[str] = []
    length = 0
    end = None
    jumps = 0
    while True:
        if offset >= len(message):
            raise FormatError("name runs past the message")
        size = message[offset]
        if size & 0xC0 == 0xC0:
            if offset + 1 >= len(message):
                raise FormatError("pointer runs past the message")
            jumps += 1
            if jumps > MAX_POINTERS:
                raise FormatError("compression pointers loop")
            if end is None:
                end = offset + 2
            offset = ((size & 0x3F) << 8) | message[offset + 1]
            continue
        if size & 0xC0:
            raise FormatError("unknown label type")
        offset += 1
        if size == 0:
            break
        label = message[offset:offset + size]
        if len(label) < size:
            raise FormatError("label runs past the message")
        length += size + 1
        if length > MAX_NAME:
            raise FormatError("name longer than 255 bytes")
        # A dot inside a label is escaped: `a.b` as one label is not the name a.b.
        labels.append(label.decode("ascii", "replace").lower().replace(".", "\\."))
        offset += size
    return ".".join(labels), (end if end is not None else offset)


def parse_query(message: bytes) -> Query:
    if len(message) < HEADER.size:
        raise FormatError("shorter than a header")
    ident, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(message)
    if flags & QR:
        raise FormatError("a response, not a query")
    if qdcount != 1:
        raise FormatError(f"{qdcount} questions (one is served)")
    name, offset = read_name(message, HEADER.size)
    if message[HEADER.size] & 0xC0:
        raise FormatError("the question's name is a pointer")
    if offset + 4 > len(message):
        raise FormatError("question runs past the message")
    qtype, qclass = struct.unpack_from("!HH", message, offset)
    question = message[HEADER.size:offset + 4]
    offset += 4
    edns_size = None
    for _ in range(ancount + nscount + arcount):
        _, offset = read_name(message, offset)
        if offset + 10 > len(message):
            raise FormatError("record runs past the message")
        rtype, rclass, _, rdlength = struct.unpack_from("!HHIH", message, offset)
        offset += 10 + rdlength
        if offset > len(message):
            raise FormatError("record data runs past the message")
        if rtype == OPT:
            edns_size = rclass
    return Query(ident, flags, name, qtype, qclass, question, edns_size)


def query_id(message: bytes) -> int | None:
    """The id of a message too broken to parse, to answer FORMERR; None without a header."""
    return struct.unpack_from("!H", message)[0] if len(message) >= HEADER.size else None


def _opt(query: Query) -> bytes:
    if query.edns_size is None:
        return b""
    return b"\x00" + struct.pack("!HHIH", OPT, EDNS_UDP_SIZE, 0, 0)


def _header(query: Query, rcode: int, answers: int, authority: int, *, authoritative: bool,
            recursion_available: bool, truncated: bool = False) -> bytes:
    flags = QR | (query.flags & (OPCODE_MASK | RD)) | rcode
    flags |= (AA if authoritative else 0) | (RA if recursion_available else 0) | (TC if truncated else 0)
    return HEADER.pack(query.id, flags, 1, answers, authority, 1 if query.edns_size is not None else 0)


def _record(rtype: int, ttl: int, rdata: bytes, owner: bytes = POINTER_TO_QUESTION) -> bytes:
    return owner + struct.pack("!HHIH", rtype, CLASS_IN, ttl, len(rdata)) + rdata


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.strip(".").split(".") if name.strip(".") else ():
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise FormatError(f"label {label!r} is not 1 to 63 bytes")
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def addresses_answer(query: Query, addresses: Sequence[IPv4Address | IPv6Address], *, ttl: int = 0,
                     recursion_available: bool = False, limit: int = MAX_MESSAGE) -> bytes:
    """An authoritative answer: one A or AAAA record per address, in the order given. When it
    exceeds `limit` it goes back truncated (TC, no records) so the client retries over TCP."""
    records = [_record(AAAA if a.version == 6 else A, ttl, a.packed) for a in addresses]
    message = (_header(query, NOERROR, len(records), 0, authoritative=True, recursion_available=recursion_available)
               + query.question + b"".join(records) + _opt(query))
    if len(message) > limit:
        return (_header(query, NOERROR, 0, 0, authoritative=True, recursion_available=recursion_available,
                        truncated=True) + query.question + _opt(query))
    return message


def pointer_answer(query: Query, target: str, *, ttl: int = 0, recursion_available: bool = False) -> bytes:
    record = _record(PTR, ttl, encode_name(target))
    return (_header(query, NOERROR, 1, 0, authoritative=True, recursion_available=recursion_available)
            + query.question + record + _opt(query))


def negative_answer(query: Query, rcode: int, zone: str, *, recursion_available: bool = False) -> bytes:
    """NXDOMAIN, or NOERROR without records (NODATA), authoritative for `zone`, whose SOA (TTL 0,
    minimum 0) goes in the authority section so no one caches the absence."""
    mname = encode_name(zone)
    rdata = mname + encode_name(f"hostmaster.{zone}") + struct.pack("!IIIII", 1, 60, 60, 60, 0)
    soa = _record(SOA, 0, rdata, owner=mname)
    return (_header(query, rcode, 0, 1, authoritative=True, recursion_available=recursion_available)
            + query.question + soa + _opt(query))


def error_answer(query: Query, rcode: int, *, recursion_available: bool = False) -> bytes:
    """SERVFAIL, REFUSED, NOTIMP...: the question back, nothing else."""
    return (_header(query, rcode, 0, 0, authoritative=False, recursion_available=recursion_available)
            + query.question + _opt(query))


def format_error(ident: int) -> bytes:
    return HEADER.pack(ident, QR | FORMERR, 0, 0, 0, 0)


def with_id(message: bytes, ident: int) -> bytes:
    return struct.pack("!H", ident) + message[2:]


def response_matches(response: bytes, ident: int, question: bytes) -> bool:
    """A forwarded query's answer: its id, QR set, and the question exactly as asked."""
    if len(response) < HEADER.size + len(question):
        return False
    rid, flags, qdcount = struct.unpack_from("!HHH", response)
    return (rid == ident and bool(flags & QR) and qdcount == 1
            and response[HEADER.size:HEADER.size + len(question)].lower() == question.lower())


def truncated(response: bytes) -> bool:
    return len(response) >= HEADER.size and bool(struct.unpack_from("!H", response, 2)[0] & TC)


def response_rcode(response: bytes) -> int:
    return struct.unpack_from("!H", response, 2)[0] & 0x000F


def reverse_address(name: str) -> IPv4Address | IPv6Address | None:
    """The address a PTR question names (`4.3.2.1.in-addr.arpa`, the 32 nibbles of ip6.arpa), or
    None for any other name (a partial one included)."""
    if name.endswith(".in-addr.arpa"):
        parts = name[:-len(".in-addr.arpa")].split(".")
        if len(parts) == 4 and all(p.isdigit() and len(p) <= 3 for p in parts):
            try:
                return IPv4Address(".".join(reversed(parts)))
            except ValueError:
                return None
    elif name.endswith(".ip6.arpa"):
        nibbles = name[:-len(".ip6.arpa")].split(".")
        if len(nibbles) == 32 and all(len(n) == 1 and n in "0123456789abcdef" for n in nibbles):
            hexits = "".join(reversed(nibbles))
            return ip_address(":".join(hexits[i:i + 4] for i in range(0, 32, 4)))
    return None
