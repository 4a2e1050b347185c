"""Parsing of user input into model objects. Every failure is an InvalidInput naming the field.

Nothing here touches the kernel or the store: a request is fully validated before anything
changes, so bad input leaves the machine as it was.
"""

from __future__ import annotations

import re
from ipaddress import AddressValueError, IPv4Address, IPv4Network, NetmaskValueError, ip_address, ip_network

from . import ipam
from .errors import InvalidInput
from .model import DEFAULT_MTU, NetworkRequest

MAX_NAME = 63
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_DIGITS = re.compile(r"[0-9]{1,4}\Z")
_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]*\Z")
# A subnet must hold a network address, a gateway, a sandbox and a broadcast address.
MAX_PREFIX = 30
# Ranges no bridge subnet may touch (RFC 6890): the kernel treats their addresses specially
# (martians, loopback, multicast routing), so a bridge there breaks traffic, and a 0.0.0.0/0 or
# 0.0.0.0/8 subnet would shadow every later network.
RESERVED = (
    (IPv4Network("0.0.0.0/8"), "the 'this network' range 0.0.0.0/8"),
    (IPv4Network("127.0.0.0/8"), "the loopback range 127.0.0.0/8"),
    (IPv4Network("169.254.0.0/16"), "the link-local range 169.254.0.0/16"),
    (IPv4Network("224.0.0.0/4"), "the multicast range 224.0.0.0/4"),
    (IPv4Network("240.0.0.0/4"), "the reserved range 240.0.0.0/4 (class E and broadcast)"),
)


def name(field: str, value: str) -> str:
    """A network or sandbox name: safe as a file name under /run/netns and in nft sets."""
    if not value:
        raise InvalidInput(field, value, "must not be empty")
    if len(value) > MAX_NAME:
        raise InvalidInput(field, value, f"is longer than {MAX_NAME} characters")
    if not _NAME.match(value):
        raise InvalidInput(
            field, value, "must start with a letter or digit and hold only letters, digits, '_', '.' and '-'"
        )
    return value


def _is_ipv6(text: str) -> bool:
    try:
        return ip_address(text).version == 6
    except ValueError:
        return False


def address(field: str, value: str) -> IPv4Address:
    if _is_ipv6(value.partition("/")[0]):
        raise InvalidInput(field, value, "IPv6 is not supported yet")
    try:
        parsed = ip_address(value)
    except ValueError:
        raise InvalidInput(field, value, "is not an IPv4 address") from None
    return parsed


def subnet(field: str, value: str) -> IPv4Network:
    """Any IPv4 CIDR, strictly written; see usable_subnet for one a bridge may take."""
    addr, slash, prefix = value.partition("/")
    if _is_ipv6(addr):  # before the prefix checks: fd00::/64 has a prefix too long for IPv4
        raise InvalidInput(field, value, "IPv6 is not supported yet")
    if not slash:
        raise InvalidInput(field, value, "is not a CIDR (expected A.B.C.D/N)")
    if not _DIGITS.match(prefix):  # str.isdigit() accepts '²', which int() refuses
        raise InvalidInput(field, value, "prefix length is not a number")
    if int(prefix) > 32:
        raise InvalidInput(field, value, "prefix length must be between 0 and 32")
    try:
        network = ip_network(value, strict=False)
    except (ValueError, AddressValueError, NetmaskValueError):
        raise InvalidInput(field, value, "is not an IPv4 CIDR (expected A.B.C.D/N)") from None
    if str(network.network_address) != addr:
        raise InvalidInput(field, value, f"host bits are set (did you mean {network}?)")
    return network


def refuse_reserved(field: str, value: object, network: IPv4Network) -> None:
    for reserved, what in RESERVED:
        if network.overlaps(reserved):
            raise InvalidInput(field, value, f"overlaps {what}")


def usable_subnet(field: str, value: str) -> IPv4Network:
    """A subnet a network may use: a valid CIDR outside every reserved range."""
    network = subnet(field, value)
    refuse_reserved(field, value, network)
    return network


def mtu(value: int) -> int:
    if not 68 <= value <= 65535:
        raise InvalidInput("mtu", value, "must be between 68 and 65535")
    return value


def labels(values: list[str] | tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    parsed: dict[str, str] = {}
    for item in values:
        key, sep, val = item.partition("=")
        if not sep or not _LABEL_KEY.match(key):
            raise InvalidInput("label", item, "must be KEY=VALUE with a key of letters, digits, '_', '.', '/', '-'")
        parsed[key] = val
    return tuple(sorted(parsed.items()))


def network_request(
    network_name: str,
    *,
    subnet_cidr: str | None = None,
    gateway: str | None = None,
    ip_range: str | None = None,
    internal: bool = False,
    mtu_value: int = DEFAULT_MTU,
    icc: bool = True,
    label_items: list[str] | tuple[str, ...] = (),
) -> NetworkRequest:
    """Validate every field of `network create` against each other; IPAM fills what is left out."""
    name("network name", network_name)
    net = usable_subnet("subnet", subnet_cidr) if subnet_cidr is not None else None
    if net is not None and net.prefixlen > MAX_PREFIX:
        raise InvalidInput("subnet", subnet_cidr, f"is too small: a network needs at least a /{MAX_PREFIX}")
    gw = address("gateway", gateway) if gateway is not None else None
    if gw is not None:
        refuse_reserved("gateway", gateway, IPv4Network(gw))
    rng = usable_subnet("ip-range", ip_range) if ip_range is not None else None
    if (gw is not None or rng is not None) and net is None:
        field = "gateway" if gw is not None else "ip-range"
        raise InvalidInput(field, gateway if gw is not None else ip_range, "requires --subnet")
    if net is not None and gw is not None:
        if gw not in net:
            raise InvalidInput("gateway", gateway, f"is outside the subnet {net}")
        if gw in (net.network_address, net.broadcast_address):
            raise InvalidInput("gateway", gateway, f"is the network or broadcast address of {net}")
    if net is not None and rng is not None:
        if not rng.subnet_of(net):
            raise InvalidInput("ip-range", ip_range, f"is not inside the subnet {net}")
        if ipam.capacity(net, gw or ipam.default_gateway(net), rng) == 0:
            raise InvalidInput("ip-range", ip_range, "leaves no address for sandboxes")
    return NetworkRequest(
        name=network_name,
        subnet=net,
        gateway=gw,
        ip_range=rng,
        internal=internal,
        mtu=mtu(mtu_value),
        icc=icc,
        labels=labels(label_items),
    )


def address_pool(value: str) -> tuple[IPv4Network, int]:
    """Docker's `default-address-pools` syntax: 'base=10.210.0.0/16,size=24'."""
    pairs = [part.partition("=")[::2] for part in value.split(",")]
    if sorted(key for key, _ in pairs) != ["base", "size"]:  # each once: a repeated key is not "the last wins"
        raise InvalidInput("address pool", value, "must be 'base=CIDR,size=PREFIX'")
    fields = dict(pairs)
    base = usable_subnet("address pool base", fields["base"])
    if not _DIGITS.match(fields["size"]) or not base.prefixlen <= int(fields["size"]) <= MAX_PREFIX:
        raise InvalidInput("address pool size", fields["size"], f"must be between /{base.prefixlen} and /{MAX_PREFIX}")
    return base, int(fields["size"])
