"""resolv.conf read (the host's, for upstream servers, search domains and options) and written
(a sandbox's, naming nsnet's resolver). Pure text in, text out, but for_networks, which reads the
host's file."""

from __future__ import annotations

from ipaddress import ip_address

from .table import ZONE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..model import Network

MAX_SERVERS = 3  # what glibc reads (MAXNS)
HOST_RESOLV_CONF = "/etc/resolv.conf"


class HostResolvConf:
    __slots__ = ("servers", "search", "options")

    def __init__(self, servers: tuple[str, ...], search: tuple[str, ...], options: tuple[str, ...]) -> None:
        self.servers, self.search, self.options = servers, search, options


def parse(text: str) -> HostResolvConf:
    """The nameservers (at most three, as glibc; IPv6 ones may carry a %scope), the last search
    or domain line, and the options, ignoring comments and what cannot be read."""
    servers: list[str] = []
    search: tuple[str, ...] = ()
    options: list[str] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) < 2:
            continue
        keyword, values = words[0], words[1:]
        if keyword == "nameserver" and len(servers) < MAX_SERVERS:
            try:
                ip_address(values[0].split("%", 1)[0])
            except ValueError:
                continue
            servers.append(values[0])
        elif keyword in ("search", "domain"):
            search = tuple(v for v in values if v != ".")
        elif keyword == "options":
            options.extend(values)
    return HostResolvConf(tuple(servers), search, tuple(options))


def render(nameservers: Sequence[str], host: HostResolvConf) -> str:
    """A sandbox's resolv.conf: nsnet's resolver on its networks' gateways, `nsnet` then the host's
    search domains (so bare names are nsnet's first, at the cost of one local NXDOMAIN for an
    outside bare name), and the host's options but ndots, which stays glibc's 1."""
    lines = ["# Written by nsnet: its resolver, on the gateways of this sandbox's DNS networks."]
    lines += [f"nameserver {server}" for server in nameservers[:MAX_SERVERS]]
    lines.append("search " + " ".join(dict.fromkeys((ZONE, *host.search))))
    options = [o for o in host.options if not o.startswith("ndots:")]
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def for_networks(networks: Sequence[Network], host_path: str = HOST_RESOLV_CONF) -> str | None:
    """A sandbox's resolv.conf naming nsnet's resolver on its DNS networks' gateways, with the
    host's search domains and options as they are now; None without a DNS network (the sandbox
    then sees the host's, as before DNS)."""
    servers = [str(s.gateway) for n in networks if n.dns for s in n.subnets]
    if not servers:
        return None
    try:
        with open(host_path, encoding="utf-8", errors="replace") as f:
            host = parse(f.read(65536))
    except OSError:
        host = parse("")
    return render(servers, host)
