"""A CNI network configuration, in the keys of the reference `bridge` plugin and of `host-local`
IPAM, plus nsnet's own (`internal`, `icc`), read into what the engine takes. Pure: no I/O.

So that a conflist written for the reference chain works by changing `type` to `nsnet` and
dropping `portmap` and `firewall`, every key those plugins define is either honoured or named
in an error (or, where harmless, in a note on stderr); keys of neither are left alone, as the
spec lets a plugin do.
"""

from __future__ import annotations

import json
from ipaddress import ip_address, ip_interface, ip_network, summarize_address_range

from ..record import record
from .spec import DECODING_FAILURE, INVALID_CONFIG, UNSUPPORTED_FIELD, CniError, checked_version

TYPE_CHECKING = False  # typing's import is 5 ms of a CNI plugin's start-up
if TYPE_CHECKING:
    from typing import Any

VALID_ATTACHMENTS = "cni.dev/valid-attachments"
DEFAULT_ROUTES = {"0.0.0.0/0": 4, "::/0": 6}
JSON_TYPES = {str: "a string", bool: "a boolean", int: "an integer", list: "a list", dict: "an object"}


@record
class NetConf:
    version: str
    name: str
    # The network, as `network create` takes it.
    subnets: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()
    ip_ranges: tuple[str, ...] = ()
    bridge: str | None = None
    mtu: int = 1500
    masquerade: bool = False
    internal: bool = False
    icc: bool = True
    # The attachment.
    default_route: bool = False
    ports: tuple[str, ...] = ()  # -p spellings of runtimeConfig.portMappings
    ips: tuple[str, ...] = ()
    mac: str | None = None
    labels: tuple[str, ...] = ()  # --label spellings of args.cni.labels
    dns: dict[str, Any] | None = None
    prev_result: dict[str, Any] | None = None
    valid_attachments: tuple[tuple[str, str], ...] | None = None
    notes: tuple[str, ...] = ()


def decode(raw: bytes) -> dict[str, Any]:
    try:
        conf = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CniError(DECODING_FAILURE, "the network configuration on stdin is not JSON", str(exc)) from None
    if not isinstance(conf, dict):
        raise CniError(DECODING_FAILURE, "the network configuration on stdin is not a JSON object")
    return conf


def _invalid(key: str, reason: str) -> CniError:
    return CniError(INVALID_CONFIG, f"invalid network configuration: {key}: {reason}")


def _unsupported(key: str, reason: str) -> CniError:
    return CniError(UNSUPPORTED_FIELD, f"unsupported field {key}: {reason}")


def _typed(conf: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any, where: str = "") -> Any:
    value = conf.get(key, default)
    if value is not default and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        names = " or ".join(JSON_TYPES[k] for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise _invalid(where + key, f"must be {names}")
    return value


def parse(conf: dict[str, Any], command: str, cni_args: str = "") -> NetConf:
    version = checked_version(conf.get("cniVersion"), command)
    name = conf.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid("name", "must be the network's name")
    notes: list[str] = []
    if command in ("DEL", "GC", "STATUS", "VERSION"):
        valid = _valid_attachments(conf) if command == "GC" else None
        return NetConf(version, name, prev_result=_prev_result(conf), valid_attachments=valid)
    if _typed(conf, "isGateway", bool, True) is False:
        raise _unsupported("isGateway", "false: nsnet's bridge always holds the gateway address")
    for key in ("vlan", "vlanTrunk", "preserveDefaultVlan", "disableContainerInterface"):
        if key in conf:
            raise _unsupported(key, "nsnet bridges carry no VLANs and always make the container interface")
    if _typed(conf, "hairpinMode", bool, True) is False:
        notes.append("hairpinMode false ignored: nsnet keeps hairpin on (a container reaching its own published "
                     "port needs it)")
    if "promiscMode" in conf:
        notes.append("promiscMode ignored: hairpin traffic goes back through the bridge port, no promiscuous "
                     "bridge needed")
    if _typed(conf, "macspoofchk", bool, None) is False:
        notes.append("macspoofchk false ignored: nsnet always drops frames a container forges")
    bridge = _typed(conf, "bridge", str, None)
    mtu = _typed(conf, "mtu", int, 1500)
    internal = _typed(conf, "internal", bool, False)
    subnets, gateways, ranges, routes = _ipam(conf.get("ipam"), notes)
    runtime = _typed(conf, "runtimeConfig", dict, {})
    args_cni = _typed(_typed(conf, "args", dict, {}), "cni", dict, {}, "args.")
    requested_ips = list(_typed(runtime, "ips", list, [], "runtimeConfig.")) + \
        list(_typed(args_cni, "ips", list, [], "args.cni."))
    mac = _typed(runtime, "mac", str, None, "runtimeConfig.") or _typed(args_cni, "mac", str, None, "args.cni.")
    legacy = _cni_args(cni_args)
    if "IP" in legacy:
        requested_ips += legacy["IP"].split(",")
    mac = mac or legacy.get("MAC")
    dns = _typed(conf, "dns", dict, None)
    return NetConf(
        version, name, subnets=subnets, gateways=gateways, ip_ranges=ranges, bridge=bridge, mtu=mtu,
        masquerade=_typed(conf, "ipMasq", bool, False), internal=internal, icc=_typed(conf, "icc", bool, True),
        default_route=(_typed(conf, "isDefaultGateway", bool, False) or bool(routes)) and not internal,
        ports=tuple(_port_mappings(_typed(runtime, "portMappings", list, [], "runtimeConfig."))),
        ips=tuple(_ip(v) for v in requested_ips), mac=mac,
        labels=(*(f"{k}={legacy[k]}" for k in NAMING_ARGS if k in legacy),
                *_labels(_typed(args_cni, "labels", list, [], "args.cni."))), dns=dns or None,
        prev_result=_prev_result(conf), notes=tuple(notes),
    )


def _ipam(ipam: Any, notes: list[str]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], set[int]]:
    """host-local's keys: `ranges` (one range set per family, one range in each), or the older
    `subnet`/`rangeStart`/`rangeEnd`/`gateway`; `routes` (default routes only)."""
    if not isinstance(ipam, dict):
        raise _invalid("ipam", "nsnet needs an ipam section in host-local's format (nsnet serves it from its ledger)")
    kind = ipam.get("type")
    if kind != "host-local":
        raise _unsupported("ipam.type", f"{kind!r}: nsnet serves host-local's format from its own ledger")
    if "dataDir" in ipam:
        notes.append("ipam.dataDir ignored: addresses live in nsnet's ledger")
    range_sets = _typed(ipam, "ranges", list, None, "ipam.")
    if range_sets is None:
        if "subnet" not in ipam:
            raise _invalid("ipam", "needs ranges (or subnet)")
        range_sets = [[{k: ipam[k] for k in ("subnet", "rangeStart", "rangeEnd", "gateway") if k in ipam}]]
    subnets, gateways, ranges, versions = [], [], [], set()
    for i, range_set in enumerate(range_sets):
        where = f"ipam.ranges[{i}]"
        if not isinstance(range_set, list) or not range_set:
            raise _invalid(where, "must be a non-empty list of ranges")
        if len(range_set) > 1:
            raise _unsupported(where, "one range per set: a network has one subnet per family")
        entry = range_set[0]
        if not isinstance(entry, dict) or not isinstance(entry.get("subnet"), str):
            raise _invalid(where + "[0].subnet", "must be a CIDR string")
        try:
            subnet = ip_network(entry["subnet"], strict=False)
        except ValueError as exc:
            raise _invalid(where + "[0].subnet", str(exc)) from None
        if subnet.version in versions:
            raise _unsupported(where, f"a second IPv{subnet.version} subnet: a network has one per family")
        versions.add(subnet.version)
        subnets.append(str(subnet))
        if entry.get("gateway"):
            gateways.append(str(entry["gateway"]))
        if entry.get("rangeStart") or entry.get("rangeEnd"):
            ranges.append(_range(where + "[0]", subnet, entry.get("rangeStart"), entry.get("rangeEnd")))
    routes = set()
    for i, route in enumerate(_typed(ipam, "routes", list, [], "ipam.")):
        where = f"ipam.routes[{i}]"
        dst = route.get("dst") if isinstance(route, dict) else None
        if dst not in DEFAULT_ROUTES:
            raise _unsupported(where, f"dst {dst!r}: nsnet sets default routes (0.0.0.0/0, ::/0) only")
        if route.get("gw"):
            notes.append(f"{where}.gw ignored: the default route goes via the network's gateway")
        routes.add(DEFAULT_ROUTES[dst])
    return tuple(subnets), tuple(gateways), tuple(ranges), routes


def _range(where: str, subnet: Any, start: Any, end: Any) -> str:
    """rangeStart..rangeEnd as the CIDR block nsnet allocates from (--ip-range)."""
    try:
        first = ip_address(start) if start else subnet.network_address + 1
        last = ip_address(end) if end else subnet.broadcast_address - (1 if subnet.version == 4 else 0)
        blocks = list(summarize_address_range(first, last))
    except (ValueError, TypeError) as exc:
        raise _invalid(where, f"rangeStart/rangeEnd: {exc}") from None
    # host-local's defaults leave out the network address (and IPv4's broadcast): the block they
    # sit in is the subnet itself.
    if first == subnet.network_address + 1 and last >= subnet.broadcast_address - 1:
        return str(subnet)
    if len(blocks) != 1:
        raise _unsupported(where, f"rangeStart {first} to rangeEnd {last} is not one CIDR block; nsnet allocates "
                                  f"from one ({', '.join(str(b) for b in blocks[:3])}...)")
    return str(blocks[0])


def _port_mappings(mappings: list[Any]) -> list[str]:
    """runtimeConfig.portMappings (the portMappings capability) as nsnet's -p spellings."""
    specs = []
    for i, m in enumerate(mappings):
        where = f"runtimeConfig.portMappings[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("hostPort"), int) or \
                not isinstance(m.get("containerPort"), int):
            raise _invalid(where, "needs integer hostPort and containerPort")
        protocol = str(m.get("protocol") or "tcp").lower()
        host_ip = m.get("hostIP") or ""
        host = f"[{host_ip}]:" if ":" in host_ip else f"{host_ip}:" if host_ip else ""
        specs.append(f"{host}{m['hostPort']}:{m['containerPort']}/{protocol}")
    return specs


def _labels(entries: list[Any]) -> list[str]:
    """args.cni.labels, CNI's convention for a runtime's labels ([{"key": K, "value": V}], see
    CONVENTIONS.md in containernetworking/cni), as nsnet's --label spellings; the engine checks
    the keys as it checks --label's."""
    spellings = []
    for i, entry in enumerate(entries):
        key, value = (entry.get("key"), entry.get("value")) if isinstance(entry, dict) else (None, None)
        if not isinstance(key, str) or not isinstance(value, str) or "=" in key:
            raise _invalid(f"args.cni.labels[{i}]", 'must be {"key": K, "value": V}, two strings, no "=" in K')
        spellings.append(f"{key}={value}")
    return spellings


def _ip(value: Any) -> str:
    """A requested address: an address, or one with its prefix (runtimeConfig.ips)."""
    try:
        return str(ip_interface(str(value).strip()).ip)
    except ValueError:
        raise _invalid("ips", f"{value!r} is not an IP address") from None


# CNI_ARGS keys that name the container, kept as its labels under the same keys (Podman passes
# K8S_POD_NAME, the container's name, and no labels; Kubernetes runtimes both): so that a service
# can select a runtime's container by name (`--selector K8S_POD_NAME=web`).
NAMING_ARGS = ("K8S_POD_NAME", "K8S_POD_NAMESPACE")


def _cni_args(text: str) -> dict[str, str]:
    """CNI_ARGS, `K=V;K=V`: the keys nsnet reads (IP, MAC, NAMING_ARGS); every other is tolerated."""
    found = {}
    for item in text.split(";"):
        key, sep, value = item.partition("=")
        if sep and key.strip() in ("IP", "MAC", *NAMING_ARGS) and value.strip():
            found[key.strip()] = value.strip()
    return found


def _prev_result(conf: dict[str, Any]) -> dict[str, Any] | None:
    previous = conf.get("prevResult")
    if previous is not None and not isinstance(previous, dict):
        raise _invalid("prevResult", "must be an object")
    return previous


def _valid_attachments(conf: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    items = conf.get(VALID_ATTACHMENTS, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise _invalid(VALID_ATTACHMENTS, "must be a list of {containerID, ifname}")
    return tuple((str(i.get("containerID", "")), str(i.get("ifname", ""))) for i in items)
