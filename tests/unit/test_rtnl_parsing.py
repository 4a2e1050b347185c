"""nsnet's rtnetlink layer reads attributes back from dumps (routes, links): the parser alone."""

from __future__ import annotations

import struct

from nsnet.kernel.rtnl import IFLA_IFNAME, RTA_DST, RTA_OIF, RTA_TABLE, attr, attributes, nested, string, u32


def test_attributes_are_read_back_by_type_padding_and_nesting_included():
    body = b"HEADER__" + string(IFLA_IFNAME, "eth0") + attr(RTA_DST, bytes([10, 31, 0, 0])) + u32(RTA_OIF, 7) \
        + nested(RTA_TABLE, u32(1, 1000))
    found = attributes(body, 8)
    assert found[IFLA_IFNAME] == b"eth0\0"
    assert found[RTA_DST] == bytes([10, 31, 0, 0])
    assert struct.unpack("=I", found[RTA_OIF]) == (7,)
    assert found[RTA_TABLE] == u32(1, 1000)  # nested: left packed, found under its plain type


def test_a_truncated_or_zero_length_attribute_ends_the_reading():
    assert attributes(b"\x00\x00\x01\x00rest", 0) == {}
    assert attributes(u32(RTA_OIF, 3)[:6], 0) == {}
    assert attributes(u32(RTA_OIF, 3) + u32(RTA_DST, 4)[:5], 0) == {RTA_OIF: b"\x03\x00\x00\x00"}
