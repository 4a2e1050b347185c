"""Parsing of user input into model objects. Every failure is an InvalidInput naming the field.

Nothing here touches the kernel or the store: a request is fully validated before anything
changes, so bad input leaves the machine as it was.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from . import ipam
from .errors import InvalidInput
from .model import DEFAULT_MTU, IPAddress, IPNetwork, NetworkRequest, SubnetRequest

MAX_NAME = 63
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_DIGITS = re.compile(r"[0-9]{1,4}\Z")
_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]*\Z")
# A subnet must hold a network address, a gateway, a sandbox and a last address.
MAX_PREFIX = {4: 30, 6: 126}
# Below this MTU the kernel gives an interface no IPv6 at all (RFC 8200's minimum link MTU).
IPV6_MIN_MTU = 1280
# Ranges no bridge subnet may touch (RFC 6890, RFC 4291): the kernel treats their addresses
# specially (martians, loopback, multicast routing, link-local scope), so a bridge there breaks
# traffic, and a 0.0.0.0/0 or 0.0.0.0/8 subnet would shadow every later network.
RESERVED = (
    (IPv4Network("0.0.0.0/8"), "the 'this network' range 0.0.0.0/8"),
    (IPv4Network("127.0.0.0/8"), "the loopback range 127.0.0.0/8"),
    (IPv4Network("169.254.0.0/16"), "the link-local range 169.254.0.0/16"),
    (IPv4Network("224.0.0.0/4"), "the multicast range 224.0.0.0/4"),
    (IPv4Network("240.0.0.0/4"), "the reserved range 240.0.0.0/4 (class E and broadcast)"),
    (IPv6Network("::/8"), "the reserved range ::/8 (unspecified, loopback, IPv4-mapped)"),
    (IPv6Network("fe80::/10"), "the link-local range fe80::/10"),
    (IPv6Network("fec0::/10"), "the deprecated site-local range fec0::/10"),
    (IPv6Network("ff00::/8"), "the multicast range ff00::/8"),
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


_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")
IFNAMSIZ = 16  # with the terminating NUL


def mac(field: str, value: str) -> str:
    """A unicast Ethernet address, in the kernel's lower-case spelling."""
    text = value.strip().lower().replace("-", ":")
    if not _MAC.match(text):
        raise InvalidInput(field, value, "is not a MAC address (six hex pairs: 0a:58:0a:1f:00:05)")
    if int(text[:2], 16) & 1:
        raise InvalidInput(field, value, "is a multicast address; an interface needs a unicast one")
    if text == "00:00:00:00:00:00":
        raise InvalidInput(field, value, "is the zero address")
    return text


def container_id(field: str, value: str) -> str:
    """A runtime's container id, as the CNI spec allows it (a name's characters, any length up
    to what a runtime plausibly makes: Podman's are 64 hex digits)."""
    if not value:
        raise InvalidInput(field, value, "must not be empty")
    if len(value) > 1024 or not _NAME.match(value):
        raise InvalidInput(field, value[:80], "must start with a letter or digit and hold only letters, digits,"
                           " '_', '.' and '-' (at most 1024)")
    return value


def interface_name(field: str, value: str) -> str:
    """A Linux interface name, as the kernel's dev_valid_name accepts it."""
    if not value or len(value) >= IFNAMSIZ:
        raise InvalidInput(field, value, f"must be 1 to {IFNAMSIZ - 1} characters")
    if value in (".", "..") or any(c in value for c in "/:") or any(c.isspace() for c in value):
        raise InvalidInput(field, value, "may not be '.' or '..' nor hold '/', ':' or whitespace")
    return value


def address(field: str, value: str, version: int | None = None) -> IPAddress:
    """An IPv4 or IPv6 address (or one of `version` only)."""
    want = f"IPv{version}" if version else "IP"
    try:
        parsed = ip_address(value)
    except ValueError:
        raise InvalidInput(field, value, f"is not an {want} address") from None
    if parsed.version == 6 and parsed.scope_id:
        raise InvalidInput(field, value, "must not carry a zone (%...): nsnet's addresses are global")
    if version is not None and parsed.version != version:
        raise InvalidInput(field, value, f"is an IPv{parsed.version} address, not an {want} one")
    return parsed


def subnet(field: str, value: str) -> IPNetwork:
    """Any IPv4 or IPv6 CIDR, strictly written; see usable_subnet for one a bridge may take."""
    addr, slash, prefix = value.partition("/")
    if not slash:
        raise InvalidInput(field, value, "is not a CIDR (expected A.B.C.D/N or X:X::X/N)")
    try:
        version = ip_address(addr).version
    except ValueError:
        raise InvalidInput(field, value, "is not an IP CIDR (expected A.B.C.D/N or X:X::X/N)") from None
    if not _DIGITS.match(prefix):  # str.isdigit() accepts '²', which int() refuses
        raise InvalidInput(field, value, "prefix length is not a number")
    longest = 32 if version == 4 else 128
    if int(prefix) > longest:
        raise InvalidInput(field, value, f"prefix length must be between 0 and {longest} for IPv{version}")
    network = ip_network(value, strict=False)
    if network.network_address != ip_address(addr):
        raise InvalidInput(field, value, f"host bits are set (did you mean {network}?)")
    return network


def refuse_reserved(field: str, value: object, network: IPNetwork) -> None:
    for reserved, what in RESERVED:
        if reserved.version == network.version and network.overlaps(reserved):
            raise InvalidInput(field, value, f"overlaps {what}")


def usable_subnet(field: str, value: str) -> IPNetwork:
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


def _one_per_family(field: str, items: list[tuple[str, object]]) -> dict[int, tuple[str, object]]:
    found: dict[int, tuple[str, object]] = {}
    for text, parsed in items:
        version = parsed.version  # type: ignore[attr-defined]
        if version in found:
            raise InvalidInput(field, text, f"is a second IPv{version} {field}: a network has at most one per family")
        found[version] = (text, parsed)
    return found


def _subnet_request(version: int, net: tuple[str, IPNetwork] | None, gw: tuple[str, IPAddress] | None,
                    rng: tuple[str, IPNetwork] | None) -> SubnetRequest:
    if net is None:
        for field, given in (("gateway", gw), ("ip-range", rng)):
            if given is not None:
                raise InvalidInput(field, given[0], f"requires an IPv{version} --subnet")
        return SubnetRequest(version)
    text, network = net
    if network.prefixlen > MAX_PREFIX[version]:
        raise InvalidInput("subnet", text, f"is too small: a network needs at least a /{MAX_PREFIX[version]}")
    gateway = gw[1] if gw else None
    if gw is not None:
        if gateway not in network:
            raise InvalidInput("gateway", gw[0], f"is outside the subnet {network}")
        if gateway in (network.network_address, network.broadcast_address):
            raise InvalidInput("gateway", gw[0], f"is the first or last address of {network}")
    ip_range = rng[1] if rng else None
    if rng is not None:
        if not ip_range.subnet_of(network):  # type: ignore[arg-type]
            raise InvalidInput("ip-range", rng[0], f"is not inside the subnet {network}")
        if ipam.capacity(network, gateway or ipam.default_gateway(network), ip_range) == 0:
            raise InvalidInput("ip-range", rng[0], "leaves no address for sandboxes")
    return SubnetRequest(version, network, gateway, ip_range)


# Names `--network` gives a meaning of its own (Docker's): `none`, a sandbox with its loopback only;
# `host`, a sandbox in the host's namespace (nsnet.modes).
RESERVED_NETWORKS = ("none", "host")


def network_request(
    network_name: str,
    *,
    subnets: list[str] | tuple[str, ...] = (),
    gateways: list[str] | tuple[str, ...] = (),
    ip_ranges: list[str] | tuple[str, ...] = (),
    ipv4: bool = True,
    ipv6: bool = False,
    ipv6_routed: bool = False,
    internal: bool = False,
    mtu_value: int = DEFAULT_MTU,
    icc: bool = True,
    label_items: list[str] | tuple[str, ...] = (),
    ipv4_routed: bool = False,
    bridge: str | None = None,
    dns: bool = True,
    dns_servers: list[str] | tuple[str, ...] = (),
    driver: str = "bridge",
    parent: str | None = None,
    driver_mode: str | None = None,
) -> NetworkRequest:
    """Validate every field of `network create` against each other; IPAM fills what is left out.
    A network has IPv4 unless --no-ipv4, and IPv6 with --ipv6 or an IPv6 --subnet."""
    name("network name", network_name)
    if network_name in RESERVED_NETWORKS:
        meaning = {"none": "a sandbox on no network", "host": "a sandbox in the host's namespace"}[network_name]
        raise InvalidInput("network name", network_name, f"is reserved (--network {network_name}: {meaning})")
    nets = _one_per_family("subnet", [(v, usable_subnet("subnet", v)) for v in subnets])
    gws = _one_per_family("gateway", [(v, address("gateway", v)) for v in gateways])
    for text, gw in gws.values():
        refuse_reserved("gateway", text, ip_network(gw))  # type: ignore[arg-type]
    rngs = _one_per_family("ip-range", [(v, usable_subnet("ip-range", v)) for v in ip_ranges])
    ipv6 = ipv6 or 6 in nets
    if not ipv4 and 4 in nets:
        raise InvalidInput("subnet", nets[4][0], "is IPv4, but the network has none (--no-ipv4)")
    if not ipv4 and not ipv6:
        raise InvalidInput("--no-ipv4", None, "a network needs IPv4 or IPv6: add --ipv6")
    if ipv6_routed and not ipv6:
        raise InvalidInput("--ipv6-routed", None, "needs IPv6 (--ipv6 or an IPv6 --subnet)")
    if ipv6_routed and internal:
        raise InvalidInput("--ipv6-routed", None, "an internal network has no egress to route")
    if ipv4_routed and not ipv4:
        raise InvalidInput("--ipv4-routed", None, "needs IPv4")
    if ipv4_routed and internal:
        raise InvalidInput("--ipv4-routed", None, "an internal network has no egress to route")
    if bridge is not None:
        interface_name("bridge", bridge)
    if ipv6 and mtu_value < IPV6_MIN_MTU:
        raise InvalidInput("mtu", mtu_value, f"IPv6 needs a link MTU of at least {IPV6_MIN_MTU} (RFC 8200)")
    servers = tuple(dict.fromkeys(str(address("dns", v)) for v in dns_servers))
    if servers and not dns:
        raise InvalidInput("dns", dns_servers[0], "names an upstream server, but the network has no DNS (--no-dns)")
    families = [v for v, on in ((4, ipv4), (6, ipv6)) if on]
    for field, given in (("gateway", gws), ("ip-range", rngs)):
        for version, (text, _) in given.items():
            if version not in families:
                raise InvalidInput(field, text, f"is IPv{version}, but the network has no IPv{version}")
    driver, parent, driver_mode, dns = _driver(driver, parent, driver_mode, dns=dns, servers=servers, bridge=bridge,
                                               routed=ipv4_routed or ipv6_routed, icc=icc)
    if driver != "bridge":  # no --gateway: no default route through it (nsnet.drivers)
        internal = internal or not gws
    return NetworkRequest(
        driver=driver, parent=parent, driver_mode=driver_mode,
        name=network_name,
        subnets=tuple(_subnet_request(v, nets.get(v), gws.get(v), rngs.get(v)) for v in families),
        internal=internal,
        mtu=mtu(mtu_value),
        icc=icc,
        labels=labels(label_items),
        ipv6_routed=ipv6_routed,
        ipv4_routed=ipv4_routed,
        bridge=bridge,
        dns=dns,
        dns_servers=servers,
    )


def _driver(driver: str, parent: str | None, mode: str | None, *, dns: bool, servers: tuple[str, ...],
            bridge: str | None, routed: bool, icc: bool) -> tuple[str, str | None, str | None, bool]:
    """(driver, parent, mode, dns) of a `network create --driver` (nsnet.drivers); ipvlan is
    refused before (it needs the kernel asked)."""
    from .drivers import DRIVERS, MACVLAN_MODES

    if driver not in DRIVERS:
        raise InvalidInput("--driver", driver, f"must be one of {', '.join(DRIVERS)} or overlay")
    if driver == "bridge":
        for flag, value in (("--parent", parent), ("--mode", mode)):
            if value is not None:
                raise InvalidInput(flag, value, "is for --driver macvlan")
        return driver, None, None, dns
    if parent is None:
        raise InvalidInput("--parent", None, "is needed by --driver macvlan: the host interface its sandboxes hang off")
    interface_name("--parent", parent)
    if mode == "passthru":
        raise InvalidInput("--mode", mode, "hands the parent itself to one sandbox (its MAC, promiscuous mode), and"
                                           " nsnet never changes a parent: use bridge, private or vepa")
    if (mode or "bridge") not in MACVLAN_MODES:
        raise InvalidInput("--mode", mode, f"must be one of {', '.join(m for m in MACVLAN_MODES if m != 'passthru')}")
    for flag, given in (("--bridge", bridge is not None), ("--ipv4-routed/--ipv6-routed", routed),
                        ("--no-icc", not icc), ("--dns", bool(servers))):
        if given:
            raise InvalidInput(flag, None, "has no meaning on a macvlan network: no bridge, no firewall and no"
                                           " resolver of nsnet's see its traffic")
    return driver, parent, mode or "bridge", False  # nsnet's resolver listens on bridges only


_DNS_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")


def dns_label(name: str) -> bool:
    """Whether a name can be asked for in DNS: letters, digits and inner hyphens, 1 to 63."""
    return bool(_DNS_LABEL.match(name))


def aliases(values: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """More names for a sandbox on a network: DNS labels (letters, digits, inner hyphens, at most
    63), kept lowercase since names are asked for in any case; a repeat counts once."""
    for value in values:
        if not dns_label(value):
            raise InvalidInput("alias", value, "must be a DNS label: letters, digits and inner '-', 1 to 63 of them")
    return tuple(dict.fromkeys(v.lower() for v in values))


def address_pool(value: str) -> tuple[IPNetwork, int]:
    """Docker's `default-address-pools` syntax: 'base=10.210.0.0/16,size=24'."""
    pairs = [part.partition("=")[::2] for part in value.split(",")]
    if sorted(key for key, _ in pairs) != ["base", "size"]:  # each once: a repeated key is not "the last wins"
        raise InvalidInput("address pool", value, "must be 'base=CIDR,size=PREFIX'")
    fields = dict(pairs)
    base = usable_subnet("address pool base", fields["base"])
    if base.version != 4:  # IPv6 subnets come from the ledger's unique local /48
        raise InvalidInput("address pool base", fields["base"], "must be IPv4 (IPv6 networks take /64s of a ULA /48)")
    longest = MAX_PREFIX[base.version]
    if not _DIGITS.match(fields["size"]) or not base.prefixlen <= int(fields["size"]) <= longest:
        raise InvalidInput("address pool size", fields["size"], f"must be between /{base.prefixlen} and /{longest}")
    return base, int(fields["size"])
