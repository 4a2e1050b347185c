from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsnet import ipam
from nsnet.errors import Conflict, Exhausted, InvalidInput

NET = IPv4Network("10.0.0.0/24")
GW = IPv4Address("10.0.0.1")


def ip(last_octet: int) -> IPv4Address:
    return IPv4Address(f"10.0.0.{last_octet}")


def test_default_gateway_is_first_address():
    assert ipam.default_gateway(IPv4Network("10.31.4.0/22")) == IPv4Address("10.31.4.1")


def test_allocate_skips_network_and_gateway():
    assert ipam.allocate(NET, GW, set()) == ip(2)


def test_allocate_skips_gateway_anywhere_in_the_subnet():
    assert ipam.allocate(NET, ip(3), set(), last=ip(2)) == ip(4)


def test_allocate_never_hands_out_broadcast():
    assert ipam.allocate(NET, GW, set(), last=ip(253)) == ip(254)
    assert ipam.allocate(NET, GW, set(), last=ip(254)) == ip(2)


def test_allocate_is_round_robin_after_last():
    assert ipam.allocate(NET, GW, {ip(3), ip(4), ip(5)}, last=ip(5)) == ip(6)


def test_allocate_skips_taken_addresses_after_last():
    assert ipam.allocate(NET, GW, {ip(6), ip(7)}, last=ip(5)) == ip(8)


def test_allocate_wraps_around_to_the_start():
    taken = {ip(n) for n in range(5, 255)}
    assert ipam.allocate(NET, GW, taken, last=ip(254)) == ip(2)
    assert ipam.allocate(NET, GW, taken - {ip(3)}, last=ip(200)) == ip(2)


def test_allocate_ignores_a_last_outside_the_range():
    assert ipam.allocate(NET, GW, set(), last=IPv4Address("192.168.0.9")) == ip(2)


def test_allocate_respects_ip_range():
    rng = IPv4Network("10.0.0.128/25")
    assert ipam.allocate(NET, GW, set(), ip_range=rng) == ip(128)
    assert ipam.allocate(NET, GW, {ip(128)}, last=ip(128), ip_range=rng) == ip(129)
    assert ipam.allocate(NET, GW, set(), last=ip(254), ip_range=rng) == ip(128)
    assert ipam.allocate(NET, GW, set(), last=ip(5), ip_range=rng) == ip(128)


def test_allocate_in_a_range_at_the_start_skips_the_network_address():
    assert ipam.allocate(NET, GW, set(), ip_range=IPv4Network("10.0.0.0/29")) == ip(2)


def test_slash_30_with_gateway_has_exactly_one_address():
    net = IPv4Network("10.0.0.4/30")
    gateway = IPv4Address("10.0.0.5")
    assert ipam.capacity(net, gateway) == 1
    assert ipam.allocate(net, gateway, set()) == IPv4Address("10.0.0.6")
    with pytest.raises(Exhausted) as caught:
        ipam.allocate(net, gateway, {IPv4Address("10.0.0.6")})
    assert str(caught.value) == "network 10.0.0.4/30: no free address left in 10.0.0.4/30"


def test_exhausted_range_names_the_range():
    rng = IPv4Network("10.0.0.8/30")
    with pytest.raises(Exhausted) as caught:
        ipam.allocate(NET, GW, {ip(n) for n in range(8, 12)}, ip_range=rng)
    assert str(caught.value) == "network 10.0.0.0/24: no free address left in 10.0.0.8/30"


def test_exhausted_is_a_conflict():
    assert issubclass(Exhausted, Conflict)


@pytest.mark.parametrize(
    "subnet, gateway, ip_range, expected",
    [
        ("10.0.0.0/24", "10.0.0.1", None, 253),
        ("10.0.0.0/30", "10.0.0.1", None, 1),
        ("10.0.0.0/16", "10.0.0.1", None, 65533),
        ("10.0.0.0/24", "10.0.0.1", "10.0.0.128/25", 127),
        ("10.0.0.0/24", "10.0.0.1", "10.0.0.0/25", 126),
        ("10.0.0.0/24", "10.0.0.130", "10.0.0.128/25", 126),
        ("10.0.0.0/24", "10.0.0.1", "10.0.0.0/32", 0),
        ("10.0.0.0/24", "10.0.0.1", "10.0.0.7/32", 1),
    ],
)
def test_capacity(subnet, gateway, ip_range, expected):
    rng = IPv4Network(ip_range) if ip_range else None
    assert ipam.capacity(IPv4Network(subnet), IPv4Address(gateway), rng) == expected


@given(
    st.sets(st.integers(1, 14), max_size=14),
    st.one_of(st.none(), st.integers(0, 15)),
    st.integers(1, 14),
)
def test_allocate_returns_a_free_usable_address_or_exhausted(taken_octets, last, gateway_octet):
    net = IPv4Network("10.0.0.0/28")
    gateway = ip(gateway_octet)
    taken = {ip(n) for n in taken_octets} - {gateway}
    free = {ip(n) for n in range(1, 15)} - taken - {gateway}
    try:
        got = ipam.allocate(net, gateway, taken, last=ip(last) if last is not None else None)
    except Exhausted:
        assert not free
        return
    assert got in free


def test_check_requested_accepts_a_free_address():
    assert ipam.check_requested(ip(9), NET, GW, {ip(2)}) == ip(9)


@pytest.mark.parametrize(
    "requested, ip_range, reason",
    [
        (IPv4Address("10.0.1.9"), None, "is outside the subnet 10.0.0.0/24"),
        (ip(9), IPv4Network("10.0.0.128/25"), "is outside the ip-range 10.0.0.128/25"),
        (ip(0), None, "is the network or broadcast address of 10.0.0.0/24"),
        (ip(255), None, "is the network or broadcast address of 10.0.0.0/24"),
    ],
)
def test_check_requested_refuses_unusable_addresses(requested, ip_range, reason):
    with pytest.raises(InvalidInput) as caught:
        ipam.check_requested(requested, NET, GW, set(), ip_range)
    assert caught.value.field == "ip"
    assert caught.value.reason == reason


def test_check_requested_refuses_the_gateway():
    with pytest.raises(Conflict) as caught:
        ipam.check_requested(GW, NET, GW, set())
    assert type(caught.value) is Conflict
    assert str(caught.value) == "ip 10.0.0.1 is the gateway of 10.0.0.0/24"


def test_check_requested_refuses_a_taken_address():
    with pytest.raises(Conflict) as caught:
        ipam.check_requested(ip(2), NET, GW, {ip(2)})
    assert type(caught.value) is Conflict
    assert str(caught.value) == "ip 10.0.0.2 is already in use on 10.0.0.0/24"


def test_overlapping_returns_the_first_clash():
    others = [IPv4Network("192.168.0.0/16"), IPv4Network("10.0.0.0/8"), IPv4Network("10.0.0.0/24")]
    assert ipam.overlapping(IPv4Network("10.0.0.128/25"), others) == IPv4Network("10.0.0.0/8")
    assert ipam.overlapping(IPv4Network("172.16.0.0/12"), others) is None


POOL = IPv4Network("10.210.0.0/16")


def test_pick_subnet_takes_the_first_free_block():
    assert ipam.pick_subnet(POOL, 24, []) == IPv4Network("10.210.0.0/24")


def test_pick_subnet_skips_used_subnets_and_routes():
    used = [IPv4Network("10.210.0.0/24"), IPv4Network("10.210.1.128/25"), IPv4Network("10.210.2.7/32")]
    assert ipam.pick_subnet(POOL, 24, used) == IPv4Network("10.210.3.0/24")


def test_pick_subnet_skips_a_larger_network_inside_the_pool():
    assert ipam.pick_subnet(POOL, 24, [IPv4Network("10.210.0.0/20")]) == IPv4Network("10.210.16.0/24")


def test_pick_subnet_is_exhausted_by_a_route_covering_the_pool():
    with pytest.raises(Exhausted) as caught:
        ipam.pick_subnet(POOL, 24, [IPv4Network("10.0.0.0/8")])
    assert str(caught.value) == "address pool 10.210.0.0/16: every /24 overlaps a network or a route of the host"


def test_pick_subnet_is_exhausted_when_every_block_is_used():
    pool = IPv4Network("10.210.0.0/23")
    with pytest.raises(Exhausted):
        ipam.pick_subnet(pool, 24, [IPv4Network("10.210.0.0/24"), IPv4Network("10.210.1.0/24")])
