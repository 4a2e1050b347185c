"""CNI's wire format: the spec versions nsnet speaks, its well-known error codes, and the
result of ADD as each version spells it. Pure: no I/O."""

from __future__ import annotations

TYPE_CHECKING = False  # typing and dataclasses cost a CNI VERSION more than the rest of it
if TYPE_CHECKING:
    from typing import Any

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT_VERSION = "1.1.0"

# Well-known error codes (SPEC.md, "Error"); 100 and up are nsnet's own.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50  # STATUS: the plugin cannot serve ADD
REFUSED = 100  # the ledger refused the request (a conflict, a full network, a taken port)
KERNEL_FAILURE = 101  # the kernel refused a change; nothing of it is left
DRIFTED = 102  # CHECK: the attachment is not what the ledger says
INTERNAL = 199  # a defect of nsnet's: the traceback goes to stderr, the runtime still gets JSON


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details

    def to_json(self, version: str) -> dict[str, Any]:
        body: dict[str, Any] = {"cniVersion": version, "code": self.code, "msg": self.msg}
        if self.details:
            body["details"] = self.details
        return body


def version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)


def at_least(version: str, minimum: str) -> bool:
    return version_tuple(version) >= version_tuple(minimum)


def checked_version(version: Any, command: str) -> str:
    """The configuration's cniVersion, if nsnet speaks it and it has `command`."""
    if not isinstance(version, str) or version not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, f"incompatible CNI version {version!r}",
                       f"nsnet supports {', '.join(SUPPORTED_VERSIONS)}")
    since = {"CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"}.get(command)
    if since and not at_least(version, since):
        raise CniError(INCOMPATIBLE_VERSION, f"{command} needs CNI {since} or later, the configuration says {version}")
    return version


class Result:
    """What ADD made: interfaces (each a dict of name, mac, sandbox), addresses (CIDR, gateway,
    the index of their interface), routes and DNS, in the spec's own keys."""

    def __init__(self, interfaces: list[dict[str, Any]], ips: list[dict[str, Any]],
                 routes: list[dict[str, Any]], dns: dict[str, Any]) -> None:
        self.interfaces, self.ips, self.routes, self.dns = interfaces, ips, routes, dns

    def after(self, previous: dict[str, Any] | None) -> Result:
        """This result appended to an earlier plugin's (prevResult), interface indexes shifted."""
        if not previous:
            return self
        interfaces = list(previous.get("interfaces") or [])
        shifted = [{**ip, "interface": ip["interface"] + len(interfaces)} if "interface" in ip else ip
                   for ip in self.ips]
        return Result(interfaces + self.interfaces,
                      [{k: v for k, v in ip.items() if k != "version"} for ip in previous.get("ips") or []] + shifted,
                      list(previous.get("routes") or []) + self.routes, self.dns or dict(previous.get("dns") or {}))

    def to_json(self, version: str) -> dict[str, Any]:
        ips = self.ips
        if not at_least(version, "1.0.0"):  # 0.3.x and 0.4.0 name each address's family
            ips = [{"version": "6" if ":" in ip["address"] else "4", **ip} for ip in ips]
        body: dict[str, Any] = {"cniVersion": version, "interfaces": self.interfaces, "ips": ips}
        if self.routes:
            body["routes"] = self.routes
        body["dns"] = self.dns
        return body
