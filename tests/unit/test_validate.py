import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from nsnet import validate
from nsnet.errors import InvalidInput
from nsnet.model import NetworkRequest, SubnetRequest

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


# Independent oracles: what each parser must accept, written from the grammar with integers and
# regular expressions, not with the ipaddress module the parsers use.
OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
DOTTED = re.compile(rf"{OCTET}\.{OCTET}\.{OCTET}\.{OCTET}")
RESERVED_INTERVALS = [(0x00000000, 0x00FFFFFF), (0x7F000000, 0x7FFFFFFF), (0xA9FE0000, 0xA9FEFFFF),
                      (0xE0000000, 0xFFFFFFFF)]
LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]*")


def address_oracle(text: str) -> int | None:
    match = DOTTED.fullmatch(text)
    return None if match is None else sum(int(octet) << shift for octet, shift in zip(match.groups(), (24, 16, 8, 0)))


def cidr_oracle(text: str) -> tuple[int, int] | None:
    address_text, slash, prefix_text = text.partition("/")
    address = address_oracle(address_text)
    if address is None or not slash or not re.fullmatch(r"[0-9]{1,4}", prefix_text) or int(prefix_text) > 32:
        return None
    prefix = int(prefix_text)
    return (address, prefix) if address % (1 << (32 - prefix)) == 0 else None


def interval(network: tuple[int, int]) -> tuple[int, int]:
    address, prefix = network
    return address, address + (1 << (32 - prefix)) - 1


def reserved(network: tuple[int, int]) -> bool:
    first, last = interval(network)
    return any(first <= r_last and r_first <= last for r_first, r_last in RESERVED_INTERVALS)


def usable_cidr_oracle(text: str) -> tuple[int, int] | None:
    network = cidr_oracle(text)
    return None if network is None or reserved(network) else network


def pool_oracle(text: str) -> tuple[tuple[int, int], int] | None:
    fields = [part.partition("=") for part in text.split(",")]
    if sorted(key for key, _, _ in fields) != ["base", "size"]:
        return None
    values = {key: value for key, _, value in fields}
    base = usable_cidr_oracle(values["base"])
    size = values["size"]
    if base is None or not re.fullmatch(r"[0-9]{1,4}", size) or not base[1] <= int(size) <= 30:
        return None
    return base, int(size)


def labels_oracle(items: list[str]) -> tuple[tuple[str, str], ...] | None:
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not LABEL_KEY.fullmatch(key):
            return None
        parsed[key] = value
    return tuple(sorted(parsed.items()))


def request_oracle(name, subnet, gateway, ip_range):
    """(subnet, gateway, ip_range) as integer tuples when the request must be accepted, else None."""
    if not SAFE_NAME.fullmatch(name):
        return None
    net = usable_cidr_oracle(subnet) if subnet is not None else None
    gw = address_oracle(gateway) if gateway is not None else None
    rng = usable_cidr_oracle(ip_range) if ip_range is not None else None
    if (subnet is not None and (net is None or net[1] > 30)) or (gateway is not None and gw is None) \
            or (ip_range is not None and rng is None):
        return None
    if net is None:
        return (None, None, None) if gateway is None and ip_range is None else None
    first, last = interval(net)
    if gw is not None and not first < gw < last:  # inside, and neither network nor broadcast address
        return None
    if rng is not None:
        range_first, range_last = interval(rng)
        if not first <= range_first <= range_last <= last:
            return None
        low, high = max(range_first, first + 1), min(range_last, last - 1)
        gateway_used = gw if gw is not None else first + 1
        if max(0, high - low + 1) - (1 if low <= gateway_used <= high else 0) == 0:
            return None
    return net, gw, rng


def request(name, subnet_cidr=None, gateway=None, ip_range=None, **kwargs) -> NetworkRequest:
    """A `network create` with at most one --subnet, --gateway and --ip-range."""
    listed = {key: [value] if value is not None else [] for key, value in
              (("subnets", subnet_cidr), ("gateways", gateway), ("ip_ranges", ip_range))}
    return validate.network_request(name, **listed, **kwargs)


def invalid(call, *args, **kwargs) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        call(*args, **kwargs)
    return caught.value


def assert_one_line_naming(err: InvalidInput, field: str) -> None:
    assert err.field == field
    assert "\n" not in str(err)
    assert str(err).startswith(f"invalid {field} ")


@pytest.mark.parametrize("value", ["web", "a", "Web-1", "db_2.prod", "9lives", "x" * 63])
def test_name_accepts_safe_names(value):
    assert validate.name("sandbox name", value) == value


@pytest.mark.parametrize(
    "value, reason",
    [
        ("", "must not be empty"),
        ("x" * 64, "is longer than 63 characters"),
        ("../x", "must start with a letter or digit"),
        ("/", "must start with a letter or digit"),
        (".", "must start with a letter or digit"),
        ("..", "must start with a letter or digit"),
        ("a/b", "must start with a letter or digit"),
        ("-rf", "must start with a letter or digit"),
        ("a b", "must start with a letter or digit"),
        ("café", "must start with a letter or digit"),
        ("ｗｅｂ", "must start with a letter or digit"),
        ("web\n", "must start with a letter or digit"),
    ],
)
def test_name_refuses_unsafe_names(value, reason):
    err = invalid(validate.name, "sandbox name", value)
    assert_one_line_naming(err, "sandbox name")
    assert err.value == value
    assert err.reason.startswith(reason)


def test_name_error_message_is_exact():
    err = invalid(validate.name, "network name", "")
    assert str(err) == "invalid network name '': must not be empty"


@given(st.text(max_size=80) | st.from_regex(r"[A-Za-z0-9_.\-/ é]{0,70}", fullmatch=True))
def test_accepted_names_are_exactly_safe_path_components(value):
    if SAFE_NAME.fullmatch(value):
        assert validate.name("network name", value) == value
        assert "/" not in value and value not in (".", "..")
    else:
        assert_one_line_naming(invalid(validate.name, "network name", value), "network name")


@pytest.mark.parametrize(
    "value, expected",
    [
        ("10.0.0.0/24", IPv4Network("10.0.0.0/24")),
        ("0.0.0.0/0", IPv4Network("0.0.0.0/0")),
        ("192.168.1.7/32", IPv4Network("192.168.1.7/32")),
        ("fd00:40::/64", IPv6Network("fd00:40::/64")),
        ("fd00:0040:0::/64", IPv6Network("fd00:40::/64")),
    ],
)
def test_subnet_parses_cidr(value, expected):
    assert validate.subnet("subnet", value) == expected


@pytest.mark.parametrize(
    "value, reason",
    [
        ("10.0.0.0", "is not a CIDR (expected A.B.C.D/N or X:X::X/N)"),
        ("10.0.0.0/", "prefix length is not a number"),
        ("10.0.0.0/x", "prefix length is not a number"),
        ("10.0.0.0/-1", "prefix length is not a number"),
        ("10.0.0.0/33", "prefix length must be between 0 and 32 for IPv4"),
        ("10.0.0.0/64", "prefix length must be between 0 and 32 for IPv4"),
        ("fd00::/129", "prefix length must be between 0 and 128 for IPv6"),
        ("10.0.0/24", "is not an IP CIDR (expected A.B.C.D/N or X:X::X/N)"),
        ("300.0.0.0/8", "is not an IP CIDR (expected A.B.C.D/N or X:X::X/N)"),
        ("/24", "is not an IP CIDR (expected A.B.C.D/N or X:X::X/N)"),
        ("fd00::1/16", "host bits are set (did you mean fd00::/16?)"),
        ("10.0.0.1/24", "host bits are set (did you mean 10.0.0.0/24?)"),
    ],
)
def test_subnet_refuses_bad_cidr(value, reason):
    err = invalid(validate.subnet, "subnet", value)
    assert_one_line_naming(err, "subnet")
    assert err.reason == reason


def test_subnet_host_bits_message_suggests_the_network():
    err = invalid(validate.subnet, "subnet", "10.0.0.1/24")
    assert str(err) == "invalid subnet '10.0.0.1/24': host bits are set (did you mean 10.0.0.0/24?)"
    assert "did you mean 10.0.0.0/24" in str(err)


CIDR_SHAPED = st.builds(lambda a, p: f"{a}/{p}", st.ip_addresses(v=4).map(str) | st.from_regex(
    r"[0-9]{1,4}(\.[0-9]{1,4}){2,4}", fullmatch=True), st.integers(0, 40).map(str) | st.from_regex(r"[0-9²]{0,5}",
                                                                                                  fullmatch=True))


@given(st.text(max_size=40) | CIDR_SHAPED)
@example("10.0.0.0/²")
@example("10.0.0.0/" + "9" * 5000)
@example("10.0.0.0/08")
@example("10.0.0.0/24\n")
@example("010.0.0.0/8")
@example("10.0.0.0/ 8")
def test_subnet_accepts_exactly_what_the_oracle_accepts(value):
    if ":" in value:  # IPv6 (the oracle speaks IPv4): refused with one line, or an IPv6 network
        try:
            assert isinstance(validate.subnet("subnet", value), IPv6Network)
        except InvalidInput as err:
            assert_one_line_naming(err, "subnet")
        return
    expected = cidr_oracle(value)
    if expected is None:
        assert_one_line_naming(invalid(validate.subnet, "subnet", value), "subnet")
    else:
        assert validate.subnet("subnet", value) == IPv4Network(expected)


@given(st.integers(0, 2**32 - 1), st.integers(0, 32))
def test_subnet_round_trips_every_ipv4_network(address, prefix):
    network = IPv4Network((address, prefix), strict=False)
    assert validate.subnet("subnet", str(network)) == network


@pytest.mark.parametrize("value", ["10.0.0.1", "0.0.0.0", "255.255.255.255"])
def test_address_parses_ipv4(value):
    assert validate.address("ip", value, 4) == IPv4Address(value)
    assert validate.address("ip", value) == IPv4Address(value)


@pytest.mark.parametrize(
    "value, reason",
    [("10.0.0", "is not an IPv4 address"), ("", "is not an IPv4 address"),
     ("fd00::1", "is an IPv6 address, not an IPv4 one"), ("::ffff:10.0.0.1", "is an IPv6 address, not an IPv4 one"),
     ("fe80::1%eth0", "must not carry a zone (%...): nsnet's addresses are global")],
)
def test_address_refuses_non_ipv4(value, reason):
    err = invalid(validate.address, "ip", value, 4)
    assert_one_line_naming(err, "ip")
    assert err.reason == reason


@pytest.mark.parametrize("value", [68, 1500, 9000, 65535])
def test_mtu_accepts_bounds(value):
    assert validate.mtu(value) == value


@pytest.mark.parametrize("value", [67, 0, -1, 65536])
def test_mtu_refuses_out_of_bounds(value):
    err = invalid(validate.mtu, value)
    assert_one_line_naming(err, "mtu")
    assert err.reason == "must be between 68 and 65535"


def test_labels_are_sorted_and_last_duplicate_wins():
    assert validate.labels(["b=2", "a=1", "com.example/x=y=z", "b=3", "empty="]) == (
        ("a", "1"), ("b", "3"), ("com.example/x", "y=z"), ("empty", ""),
    )


@pytest.mark.parametrize("item", ["novalue", "=v", "-a=1", "a b=1", "ключ=1"])
def test_labels_refuse_malformed_items(item):
    err = invalid(validate.labels, ["ok=1", item])
    assert_one_line_naming(err, "label")
    assert err.value == item


def test_network_request_fills_defaults():
    assert request("app") == NetworkRequest(name="app")


def test_network_request_parses_every_field():
    parsed = request(
        "app", subnet_cidr="10.31.0.0/16", gateway="10.31.0.254", ip_range="10.31.1.0/24", internal=True,
        mtu_value=9000, icc=False, label_items=["tier=web"],
    )
    assert parsed == NetworkRequest(
        name="app", subnets=(SubnetRequest(4, IPv4Network("10.31.0.0/16"), IPv4Address("10.31.0.254"),
                                           IPv4Network("10.31.1.0/24")),),
        internal=True, mtu=9000, icc=False, labels=(("tier", "web"),),
    )


def test_network_request_accepts_a_30():
    assert request("app", subnet_cidr="10.0.0.4/30").subnets[0].subnet == IPv4Network("10.0.0.4/30")


@pytest.mark.parametrize(
    "kwargs, field, reason",
    [
        ({"subnet_cidr": "10.0.0.0/31"}, "subnet", "is too small: a network needs at least a /30"),
        ({"subnet_cidr": "10.0.0.1/32"}, "subnet", "is too small: a network needs at least a /30"),
        ({"subnet_cidr": "10.0.0.1/24"}, "subnet", "host bits are set (did you mean 10.0.0.0/24?)"),
        ({"gateway": "10.0.0.1"}, "gateway", "requires an IPv4 --subnet"),
        ({"ip_range": "10.0.0.0/25"}, "ip-range", "requires an IPv4 --subnet"),
        ({"subnet_cidr": "10.0.0.0/24", "gateway": "10.0.1.1"}, "gateway", "is outside the subnet 10.0.0.0/24"),
        ({"subnet_cidr": "10.0.0.0/24", "gateway": "10.0.0.0"}, "gateway",
         "is the first or last address of 10.0.0.0/24"),
        ({"subnet_cidr": "10.0.0.0/24", "gateway": "10.0.0.255"}, "gateway",
         "is the first or last address of 10.0.0.0/24"),
        ({"subnet_cidr": "10.0.0.0/24", "gateway": "fd00::1"}, "gateway", "is IPv6, but the network has no IPv6"),
        ({"subnet_cidr": "10.0.0.0/24", "ip_range": "10.0.1.0/25"}, "ip-range", "is not inside the subnet 10.0.0.0/24"),
        ({"subnet_cidr": "10.0.0.0/24", "ip_range": "10.0.0.0/23"}, "ip-range", "is not inside the subnet 10.0.0.0/24"),
        ({"subnet_cidr": "10.0.0.0/24", "ip_range": "10.0.0.1/25"}, "ip-range",
         "host bits are set (did you mean 10.0.0.0/25?)"),
        ({"mtu_value": 67}, "mtu", "must be between 68 and 65535"),
        ({"label_items": ["nokey"]}, "label", "must be KEY=VALUE with a key of letters, digits, '_', '.', '/', '-'"),
    ],
)
def test_network_request_refuses_inconsistent_fields(kwargs, field, reason):
    err = invalid(request, "app", **kwargs)
    assert_one_line_naming(err, field)
    assert err.reason == reason


def test_network_request_refuses_a_bad_name_first():
    err = invalid(request, "../etc", subnet_cidr="bogus")
    assert_one_line_naming(err, "network name")


def test_address_pool_parses_docker_syntax():
    assert validate.address_pool("base=10.210.0.0/16,size=24") == (IPv4Network("10.210.0.0/16"), 24)
    assert validate.address_pool("size=30,base=172.30.0.0/16") == (IPv4Network("172.30.0.0/16"), 30)


@pytest.mark.parametrize(
    "value, field",
    [
        ("base=10.210.0.0/16", "address pool"),
        ("size=24", "address pool"),
        ("base=10.210.0.0/16,size=24,extra=1", "address pool"),
        ("10.210.0.0/16", "address pool"),
        ("", "address pool"),
        ("base=10.210.0.1/16,size=24", "address pool base"),
        ("base=nonsense,size=24", "address pool base"),
        ("base=10.210.0.0/16,size=x", "address pool size"),
        ("base=10.210.0.0/16,size=", "address pool size"),
        ("base=10.210.0.0/16,size=8", "address pool size"),
        ("base=10.210.0.0/16,size=31", "address pool size"),
    ],
)
def test_address_pool_refuses_malformed_pools(value, field):
    assert_one_line_naming(invalid(validate.address_pool, value), field)


def test_address_pool_size_with_a_unicode_digit_is_invalid_input():
    assert_one_line_naming(invalid(validate.address_pool, "base=10.210.0.0/16,size=²"), "address pool size")


ANY_TEXT = st.text(max_size=40) | st.from_regex(r"[0-9a-f.:/=,x-]{0,30}", fullmatch=True)
ADDRESSES = st.builds("{}.{}.{}.{}".format, *[st.sampled_from([0, 1, 10, 127, 169, 224, 255])] * 3,
                      st.sampled_from([0, 1, 2, 3, 4, 5, 6, 128, 254, 255])) | st.ip_addresses(v=4).map(str)
CIDRS = st.builds("{}/{}".format, ADDRESSES, st.sampled_from([0, 1, 8, 16, 24, 25, 30, 31, 32]))
POOLS = st.builds("base={},size={}".format, CIDRS, st.integers(0, 33)) | st.builds(
    "size={},base={}".format, st.integers(0, 33), CIDRS)


@given(ANY_TEXT | ADDRESSES)
@example("1.2.3.04")
@example("1.2.3.4 ")
@example("１.2.3.4")
def test_address_accepts_exactly_what_the_oracle_accepts(value):
    expected = address_oracle(value)
    if expected is None:
        assert_one_line_naming(invalid(validate.address, "ip", value, 4), "ip")
    else:
        assert validate.address("ip", value, 4) == IPv4Address(expected)


@given(ANY_TEXT | POOLS)
@example("base=10.0.0.0/8,base=10.0.0.0/8,size=24")
@example("base=10.0.0.0/8,size=24,size=25")
def test_address_pool_accepts_exactly_what_the_oracle_accepts(value):
    expected = pool_oracle(value)
    if expected is None:
        err = invalid(validate.address_pool, value)
        assert err.field in ("address pool", "address pool base", "address pool size")
        assert "\n" not in str(err)
    else:
        base, size = expected
        assert validate.address_pool(value) == (IPv4Network(base), size)


LABEL_ITEMS = ANY_TEXT | st.builds("{}={}".format, st.from_regex(r"[A-Za-z0-9é_./ -]{0,6}", fullmatch=True),
                                   st.text(max_size=4))


@given(st.lists(LABEL_ITEMS, max_size=4))
def test_labels_accept_exactly_what_the_oracle_accepts(values):
    expected = labels_oracle(values)
    if expected is None:
        assert_one_line_naming(invalid(validate.labels, values), "label")
    else:
        assert validate.labels(values) == expected


@given(st.integers(min_value=-10**6, max_value=10**6))
def test_mtu_accepts_exactly_68_to_65535(value):
    if 68 <= value <= 65535:
        assert validate.mtu(value) == value
    else:
        with pytest.raises(InvalidInput):
            validate.mtu(value)


# Values of one neighbourhood, so that many requests are consistent and the acceptance side is exercised.
NEAR_SUBNETS = st.sampled_from(["10.0.0.0/24", "10.0.0.0/30", "10.0.0.4/30", "10.0.0.128/25", "10.0.0.0/23",
                                "10.0.0.1/24", "10.0.0.0/31"])
NEAR_RANGES = st.sampled_from(["10.0.0.0/31", "10.0.0.1/32", "10.0.0.2/32", "10.0.0.0/30", "10.0.0.4/31",
                               "10.0.0.128/25", "10.0.0.254/31", "10.0.0.255/32", "10.0.1.0/24", "10.0.0.0/24"])
NEAR_ADDRESSES = st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.5", "10.0.0.6", "10.0.0.254", "10.0.0.255",
                                  "10.0.0.0", "10.0.1.1", "10.0.0.129"])


@given(name=ANY_TEXT | st.sampled_from(["app", "a.b-c_9"]), subnet=st.none() | ANY_TEXT | CIDRS | NEAR_SUBNETS,
       gateway=st.none() | ANY_TEXT | ADDRESSES | NEAR_ADDRESSES, ip_range=st.none() | ANY_TEXT | CIDRS | NEAR_RANGES)
@example(name="app", subnet="10.0.0.0/24", gateway=None, ip_range="10.0.0.1/32")
@example(name="app", subnet="10.0.0.0/24", gateway="10.0.0.2", ip_range="10.0.0.0/30")
@example(name="app", subnet="10.0.0.0/30", gateway="10.0.0.2", ip_range="10.0.0.0/30")
def test_a_whole_network_request_is_accepted_exactly_when_the_oracle_accepts_it(name, subnet, gateway, ip_range):
    assert_request_matches_the_oracle(name, subnet, gateway, ip_range)


@settings(max_examples=300)
@given(subnet=st.none() | NEAR_SUBNETS, gateway=st.none() | NEAR_ADDRESSES, ip_range=st.none() | NEAR_RANGES)
def test_requests_of_one_neighbourhood_are_accepted_exactly_when_the_oracle_accepts_them(subnet, gateway, ip_range):
    assert_request_matches_the_oracle("app", subnet, gateway, ip_range)


def assert_request_matches_the_oracle(name, subnet, gateway, ip_range):
    assume(not any(":" in v for v in (subnet, gateway, ip_range) if v))  # the oracle speaks IPv4
    expected = request_oracle(name, subnet, gateway, ip_range)
    if expected is None:
        err = invalid(request, name, subnet_cidr=subnet, gateway=gateway, ip_range=ip_range)
        assert "\n" not in str(err)
        return
    parsed = request(name, subnet_cidr=subnet, gateway=gateway, ip_range=ip_range)
    net, gw, rng = expected
    assert parsed == NetworkRequest(name=name, subnets=(SubnetRequest(
        4, net and IPv4Network(net), gw and IPv4Address(gw), rng and IPv4Network(rng)),))


@pytest.mark.parametrize(
    "value, reason",
    [
        ("0.0.0.0/0", "overlaps the 'this network' range 0.0.0.0/8"),
        ("0.0.0.0/8", "overlaps the 'this network' range 0.0.0.0/8"),
        ("0.255.255.252/30", "overlaps the 'this network' range 0.0.0.0/8"),
        ("127.0.0.0/24", "overlaps the loopback range 127.0.0.0/8"),
        ("126.0.0.0/7", "overlaps the loopback range 127.0.0.0/8"),
        ("169.254.0.0/24", "overlaps the link-local range 169.254.0.0/16"),
        ("224.0.0.0/24", "overlaps the multicast range 224.0.0.0/4"),
        ("239.255.255.0/24", "overlaps the multicast range 224.0.0.0/4"),
        ("240.0.0.0/24", "overlaps the reserved range 240.0.0.0/4 (class E and broadcast)"),
        ("255.255.255.252/30", "overlaps the reserved range 240.0.0.0/4 (class E and broadcast)"),
        ("128.0.0.0/1", "overlaps the link-local range 169.254.0.0/16"),
    ],
)
def test_network_request_refuses_reserved_subnets(value, reason):
    err = invalid(request, "app", subnet_cidr=value)
    assert_one_line_naming(err, "subnet")
    assert err.reason == reason


@pytest.mark.parametrize("value", ["1.0.0.0/30", "126.255.255.252/30", "128.0.0.0/30", "169.253.255.252/30",
                                   "169.255.0.0/30", "223.255.255.252/30", "100.64.0.0/10", "10.0.0.0/8"])
def test_network_request_accepts_subnets_next_to_the_reserved_ranges(value):
    assert request("app", subnet_cidr=value).subnets[0].subnet == IPv4Network(value)


@pytest.mark.parametrize(
    "kwargs, field, reason",
    [
        ({"subnet_cidr": "10.0.0.0/24", "gateway": "127.0.0.1"}, "gateway", "overlaps the loopback range 127.0.0.0/8"),
        ({"subnet_cidr": "10.0.0.0/24", "gateway": "255.255.255.255"}, "gateway",
         "overlaps the reserved range 240.0.0.0/4 (class E and broadcast)"),
        ({"subnet_cidr": "10.0.0.0/24", "ip_range": "169.254.1.0/24"}, "ip-range",
         "overlaps the link-local range 169.254.0.0/16"),
        ({"subnet_cidr": "10.0.0.0/24", "ip_range": "10.0.0.1/32"}, "ip-range", "leaves no address for sandboxes"),
        ({"subnet_cidr": "10.0.0.0/24", "ip_range": "10.0.0.0/32"}, "ip-range", "leaves no address for sandboxes"),
        ({"subnet_cidr": "10.0.0.0/24", "ip_range": "10.0.0.255/32"}, "ip-range", "leaves no address for sandboxes"),
        ({"subnet_cidr": "10.0.0.0/24", "ip_range": "10.0.0.0/31"}, "ip-range", "leaves no address for sandboxes"),
        ({"subnet_cidr": "10.0.0.0/24", "gateway": "10.0.0.9", "ip_range": "10.0.0.9/32"}, "ip-range",
         "leaves no address for sandboxes"),
        ({"subnet_cidr": "10.0.0.4/30", "ip_range": "10.0.0.4/31"}, "ip-range", "leaves no address for sandboxes"),
    ],
)
def test_network_request_refuses_reserved_gateways_and_empty_ranges(kwargs, field, reason):
    err = invalid(request, "app", **kwargs)
    assert_one_line_naming(err, field)
    assert err.reason == reason


@pytest.mark.parametrize(
    "kwargs, ip_range",
    [
        ({"subnet_cidr": "10.0.0.0/24", "ip_range": "10.0.0.2/32"}, "10.0.0.2/32"),
        ({"subnet_cidr": "10.0.0.0/24", "ip_range": "10.0.0.0/31"} | {"gateway": "10.0.0.254"}, "10.0.0.0/31"),
        ({"subnet_cidr": "10.0.0.4/30", "ip_range": "10.0.0.6/31"}, "10.0.0.6/31"),
    ],
)
def test_network_request_accepts_a_range_with_one_address_left(kwargs, ip_range):
    assert request("app", **kwargs).subnets[0].ip_range == IPv4Network(ip_range)


@pytest.mark.parametrize("base, reason", [("127.0.0.0/16", "overlaps the loopback range 127.0.0.0/8"),
                                          ("224.0.0.0/8", "overlaps the multicast range 224.0.0.0/4"),
                                          ("0.0.0.0/0", "overlaps the 'this network' range 0.0.0.0/8")])
def test_address_pool_refuses_a_reserved_base(base, reason):
    err = invalid(validate.address_pool, f"base={base},size=24")
    assert_one_line_naming(err, "address pool base")
    assert err.reason == reason


def test_network_request_takes_a_subnet_per_family():
    parsed = validate.network_request("app", subnets=["fd00:40::/64", "10.40.0.0/24"], gateways=["fd00:40::fe"],
                                      ip_ranges=["fd00:40::100/120"])
    assert parsed.subnets == (SubnetRequest(4, IPv4Network("10.40.0.0/24")),
                              SubnetRequest(6, IPv6Network("fd00:40::/64"), IPv6Address("fd00:40::fe"),
                                            IPv6Network("fd00:40::100/120")))
    assert validate.network_request("app", ipv6=True).subnets == (SubnetRequest(4), SubnetRequest(6))
    assert validate.network_request("app", ipv4=False, ipv6=True).subnets == (SubnetRequest(6),)
    assert validate.network_request("app", subnets=["fd00::/64"], ipv6_routed=True).ipv6_routed


@pytest.mark.parametrize("kwargs, field, reason", [
    ({"subnets": ["fd00::/64", "fd01::/64"]}, "subnet", "is a second IPv6 subnet: a network has at most one per family"),
    ({"subnets": ["10.0.0.0/24", "10.1.0.0/24"]}, "subnet",
     "is a second IPv4 subnet: a network has at most one per family"),
    ({"gateways": ["10.0.0.1", "10.0.0.2"], "subnets": ["10.0.0.0/24"]}, "gateway",
     "is a second IPv4 gateway: a network has at most one per family"),
    ({"ipv4": False}, "--no-ipv4", "a network needs IPv4 or IPv6: add --ipv6"),
    ({"ipv4": False, "subnets": ["10.0.0.0/24"], "ipv6": True}, "subnet",
     "is IPv4, but the network has none (--no-ipv4)"),
    ({"ipv6_routed": True}, "--ipv6-routed", "needs IPv6 (--ipv6 or an IPv6 --subnet)"),
    ({"ipv6_routed": True, "ipv6": True, "internal": True}, "--ipv6-routed", "an internal network has no egress to route"),
    ({"ipv6": True, "gateways": ["fd00::1"]}, "gateway", "requires an IPv6 --subnet"),
    ({"subnets": ["10.0.0.0/24"], "ip_ranges": ["fd00::/120"]}, "ip-range", "is IPv6, but the network has no IPv6"),
    ({"subnets": ["fd00::/64"], "gateways": ["fd01::1"]}, "gateway", "is outside the subnet fd00::/64"),
    ({"subnets": ["fd00::/64"], "gateways": ["fd00::"]}, "gateway", "is the first or last address of fd00::/64"),
    ({"subnets": ["fd00::/127"]}, "subnet", "is too small: a network needs at least a /126"),
    ({"subnets": ["fd00::/64"], "ip_ranges": ["fd00::/128"]}, "ip-range", "leaves no address for sandboxes"),
    ({"ipv6": True, "mtu_value": 1279}, "mtu", "IPv6 needs a link MTU of at least 1280 (RFC 8200)"),
    ({"subnets": ["fe80::/64"]}, "subnet", "overlaps the link-local range fe80::/10"),
    ({"subnets": ["ff02::/64"]}, "subnet", "overlaps the multicast range ff00::/8"),
    ({"subnets": ["::/0"]}, "subnet", "overlaps the reserved range ::/8 (unspecified, loopback, IPv4-mapped)"),
    ({"subnets": ["::ffff:10.0.0.0/120"]}, "subnet",
     "overlaps the reserved range ::/8 (unspecified, loopback, IPv4-mapped)"),
    ({"subnets": ["fec0::/64"]}, "subnet", "overlaps the deprecated site-local range fec0::/10"),
    ({"subnets": ["fd00::/64"], "gateways": ["fe80::1"]}, "gateway", "overlaps the link-local range fe80::/10"),
])
def test_network_request_refuses_what_no_dual_stack_network_can_be(kwargs, field, reason):
    err = invalid(validate.network_request, "app", **kwargs)
    assert (err.field, err.reason) == (field, reason)
    assert "\n" not in str(err)


def test_an_ipv6_address_pool_is_refused():
    err = invalid(validate.address_pool, "base=fd00::/48,size=64")
    assert (err.field, err.reason) == ("address pool base", "must be IPv4 (IPv6 networks take /64s of a ULA /48)")
