"""The `nsnet` command: argument parsing and printing only; the work is the Engine's.

Errors are nsnet's own (NsnetError): one line on stderr, exit code 1 (2 for usage errors). What
is wrong in the arguments alone is a usage error, `--format` values and template syntax included;
a template field that the printed object does not have is found against the data (exit 1), before
anything is printed. The read-only verbs (`ls`, `ps`, `inspect`, `port`, `--help`) load neither the
engine nor the kernel layer.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from .errors import InvalidInput, NsnetError
from .output import Template, as_json, table


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        message = message.replace("\n", "\\n")  # an argument may hold a newline; the error stays one line
        sys.stderr.write(f"nsnet: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


Format = str | Template


def _template(value: str, keywords: tuple[str, ...]) -> Format:
    if value in keywords:
        return value
    if "{{" not in value:
        raise argparse.ArgumentTypeError(
            f"invalid format {value!r}: must be {' or '.join(keywords)} or a template such as '{{{{.Name}}}}'")
    try:
        return Template(value)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _listing_format(value: str) -> Format:
    return _template(value, ("table", "json"))


def _inspect_format(value: str) -> Format:
    return _template(value, ("json",))


def _rendered(fmt: Template, items: list[dict[str, Any]]) -> str:
    """Every item rendered before any is printed: a missing field fails with no output."""
    return "\n".join(fmt.render(item) for item in items)


def _formatted(items: list[dict[str, Any]], fmt: Format | None, headers: Sequence[str],
               row: Callable[[dict[str, Any]], Sequence[Any]]) -> str:
    if fmt == "json":
        return as_json(items)
    if isinstance(fmt, Template):
        return _rendered(fmt, items)
    return table(headers, [row(item) for item in items])


@contextmanager
def _engine() -> Iterator[Any]:
    """The engine, and its notes on stderr once the command is done (a resolver that did not
    start: the command's own work stands)."""
    from .engine import Engine

    with Engine() as engine:
        yield engine
    for note in engine.notes:
        print(f"nsnet: warning: {note}", file=sys.stderr)


def _catalog() -> Any:
    """For the read-only verbs: the ledger's queries, without the engine's imports."""
    from .catalog import Catalog

    return Catalog()


# Networks

def network_create(args: argparse.Namespace) -> int:
    with _engine() as engine:
        network = engine.create_network(
            args.name, subnet=args.subnet, gateway=args.gateway, ip_range=args.ip_range, ipv4=not args.no_ipv4,
            ipv6=args.ipv6, ipv6_routed=args.ipv6_routed, ipv4_routed=args.ipv4_routed, internal=args.internal,
            mtu=args.mtu, icc=not args.no_icc, labels=args.label, dns=not args.no_dns, dns_servers=args.dns,
            driver=args.driver, parent=args.parent, mode=args.mode, block_size=args.block_size, vni=args.vni,
        )
    print(network.id)
    return 0


def network_ls(args: argparse.Namespace) -> int:
    with _catalog() as catalog:
        items = [n.to_dict() for n in catalog.networks()]
    if args.quiet:
        for item in items:
            print(item["Name"])
        return 0
    headers = ("NETWORK ID", "NAME", "SUBNET", "GATEWAY", "BRIDGE", "INTERNAL", "STATE")

    def every(item: dict[str, Any], key: str) -> str:
        return ",".join(c[key] or "-" for c in item["IPAM"]["Config"])  # a macvlan network may have no gateway

    print(_formatted(items, args.format, headers,
                     lambda i: (i["Id"][:12], i["Name"], every(i, "Subnet"), every(i, "Gateway"),
                                i["Bridge"] or f"{i['Driver']}:{i.get('Parent')}",
                                str(i["Internal"]).lower(), i["State"])))
    return 0


def _inspect(lookup: Callable[[Any, str], dict[str, Any]], names: list[str], fmt: Format | None) -> int:
    found, failed = [], 0
    with _catalog() as catalog:
        for name in names:
            try:
                found.append(lookup(catalog, name))
            except NsnetError as exc:
                print(f"nsnet: error: {exc}", file=sys.stderr)
                failed = 1
    if isinstance(fmt, Template):
        if found:
            print(_rendered(fmt, found))
    elif found or not failed:
        print(as_json(found))
    return failed


def network_inspect(args: argparse.Namespace) -> int:
    return _inspect(lambda c, n: c.network_details(n), args.names, args.format)


def _each(names: list[str], action: Callable[[str], None]) -> int:
    """Docker's multi-name verbs: act on every name, report each failure, fail if any failed."""
    failed = 0
    for name in names:
        try:
            action(name)
            print(name)
        except NsnetError as exc:
            print(f"nsnet: error: {exc}", file=sys.stderr)
            failed = 1
    return failed


def network_rm(args: argparse.Namespace) -> int:
    with _engine() as engine:
        return _each(args.names, lambda n: engine.remove_network(n, force=args.force))


def network_prune(args: argparse.Namespace) -> int:
    with _engine() as engine:
        for name in engine.prune_networks():
            print(name)
    return 0


# Services

def service_create(args: argparse.Namespace) -> int:
    with _engine() as engine:
        service = engine.create_service(args.name, network=args.network, ports=args.ports, backends=args.backend,
                                        selector=args.selector, vips=args.vip, affinity=args.affinity,
                                        publish=args.host_ports)
    print(" ".join(str(v) for v in service.vips))
    return 0


def _services() -> list[dict[str, Any]]:
    with _engine() as engine:
        return [service.to_dict(backends) for service, backends in engine.services()]


def _listing(args: argparse.Namespace, items: list[dict[str, Any]], quiet: Callable[[dict[str, Any]], str],
             headers: Sequence[str], row: Callable[[dict[str, Any]], Sequence[Any]]) -> int:
    """An `ls` verb's output: a line per item with -q, else a table (or --format)."""
    print("\n".join(quiet(i) for i in items) if args.quiet else _formatted(items, args.format, headers, row),
          end="\n" if items or not args.quiet else "")
    return 0


def service_ls(args: argparse.Namespace) -> int:
    return _listing(args, _services(), lambda i: i["Name"], ("NAME", "NETWORK", "VIPS", "PORTS", "BACKENDS"),
                    lambda i: (i["Name"], i["Network"], ",".join(i["VIPs"]),
                               ",".join(f"{p['Port']}:{p['TargetPort']}/{p['Protocol']}"
                                        + (f" (host {p['HostPort']})" if p["HostPort"] else "") for p in i["Ports"]),
                               ",".join(b["Sandbox"] for b in i["Backends"]) or "-"))


def service_inspect(args: argparse.Namespace) -> int:
    items = {item["Name"]: item for item in _services()}
    found = [items[name] for name in args.names if name in items]
    for name in args.names:
        if name not in items:
            print(f"nsnet: error: no such service: {name!r}", file=sys.stderr)
    print(as_json(found) if args.format in (None, "json") else _rendered(args.format, found))
    return 0 if len(found) == len(args.names) else 1


def service_rm(args: argparse.Namespace) -> int:
    with _engine() as engine:
        return _each(args.names, engine.remove_service)


# Interception

def intercept_add(args: argparse.Namespace) -> int:
    from .intercept import spec

    made = spec(outbound_port=args.outbound_port, inbound_port=args.inbound_port, exclude_uids=args.exclude_uid,
                exclude_ports=args.exclude_port, exclude_inbound_ports=args.exclude_inbound_port,
                exclude_cidrs=args.exclude_cidr, dns_port=args.dns_port)
    with _engine() as engine:
        engine.intercept(args.name, made)
    return 0


def intercept_rm(args: argparse.Namespace) -> int:
    with _engine() as engine:
        return _each(args.names, engine.stop_intercepting)


def intercept_ls(args: argparse.Namespace) -> int:
    with _engine() as engine:
        items = [{"Sandbox": name, **spec.to_dict()} for name, spec in engine.interceptions()]
    if args.format == "json":
        print(as_json(items))
        return 0
    print(_formatted(items, None, ("SANDBOX", "OUTBOUND", "INBOUND", "DNS", "EXCLUDED USERS"),
                     lambda i: (i["Sandbox"], str(i["OutboundPort"] or "-"), str(i["InboundPort"] or "-"),
                                str(i["DNSPort"] or "-"), ",".join(map(str, i["ExcludeUIDs"])) or "-")))
    return 0


# Links

def link(args: argparse.Namespace) -> int:
    with _engine() as engine:
        made = engine.link(args.a, args.b, ips=args.ip, mtu=args.mtu)
    print(" ".join(f"{e.sandbox}:{e.ifname}" for e in made.ends))
    return 0


def unlink(args: argparse.Namespace) -> int:
    with _engine() as engine:
        engine.unlink(args.a, args.b)
    return 0


def links(args: argparse.Namespace) -> int:
    with _engine() as engine:
        items = [lk.to_dict() for lk in engine.links()]
    return _listing(args, items, lambda i: " ".join(e["Sandbox"] for e in i["Ends"]),
                    ("A", "INTERFACE", "ADDRESSES", "B", "INTERFACE", "ADDRESSES", "MTU"),
                    lambda i: (*(v for e in i["Ends"] for v in (e["Sandbox"], e["Interface"],
                                                                ",".join(e["IPAddresses"]) or "-")), str(i["MTU"])))


# Pictures (nsnet.graph)

def graph(args: argparse.Namespace) -> int:
    from .graph import from_engine, render

    with _engine() as engine:
        picture = from_engine(engine)
    sys.stdout.write(render(picture, args.format))
    return 0


# Routes

def route_add(args: argparse.Namespace) -> int:
    with _engine() as engine:
        engine.add_route(args.name, args.dst, args.gw)
    return 0


def route_rm(args: argparse.Namespace) -> int:
    with _engine() as engine:
        engine.remove_route(args.name, args.dst)
    return 0


def route_ls(args: argparse.Namespace) -> int:
    with _engine() as engine:
        items = [r.to_dict() for r in engine.routes()]
    return _listing(args, items, lambda i: f"{i['Sandbox']} {i['Destination']} via {i['Gateway']}",
                    ("SANDBOX", "DESTINATION", "GATEWAY"), lambda i: (i["Sandbox"], i["Destination"], i["Gateway"]))


# Topology files (nsnet.topology)

def _topology_errors(fn: Callable[[], int]) -> int:
    """A wrong file's errors as they are: FILE:LINE: message, one a line."""
    from .topology import TopologyError

    try:
        return fn()
    except TopologyError as exc:
        print(str(exc), file=sys.stderr)
        return 1


def up(args: argparse.Namespace) -> int:
    from . import topology

    def work() -> int:
        with _engine() as engine:
            topology.up(engine, args.file, dry_run=args.dry_run)
        return 0
    return _topology_errors(work)


def down(args: argparse.Namespace) -> int:
    from . import topology

    def work() -> int:
        with _engine() as engine:
            topology.down(engine, args.file)
        return 0
    return _topology_errors(work)


def verify(args: argparse.Namespace) -> int:
    from .topology import load
    from .topology.verify import verify as run_verify

    def work() -> int:
        with _engine() as engine:
            known = tuple(s.name for s in engine.sandboxes())
            results = run_verify(engine, load(args.file, known_sandboxes=known))
        print(table(("FROM", "TO", "EXPECT", "RESULT", "DETAIL"), [r.row() for r in results]))
        missed = [r for r in results if not r.ok]
        if missed:
            print(f"nsnet: {len(missed)} of {len(results)} expectation(s) missed", file=sys.stderr)
        return 1 if missed else 0
    return _topology_errors(work)
# Shaping

def shape(args: argparse.Namespace) -> int:
    with _engine() as engine:
        if args.clear:
            knobs = [f"--{k}" for k in ("rate", "delay", "jitter", "loss", "reorder", "limit")
                     if getattr(args, k) is not None]
            if knobs:
                from .errors import InvalidInput

                raise InvalidInput(knobs[0], getattr(args, knobs[0][2:]), "cannot go with --clear")
            engine.clear_shape(args.name, network=args.network, link=args.link)
            return 0
        made = engine.shape(args.name, network=args.network, link=args.link, rate=args.rate, delay=args.delay,
                            jitter=args.jitter, loss=args.loss, reorder=args.reorder, limit=args.limit,
                            direction=args.direction)
    print(made)
    return 0


def shapes(args: argparse.Namespace) -> int:
    with _catalog() as catalog:
        items = [s.to_dict() for s in catalog.shapings()]
    return _listing(args, items, lambda i: f"{i['Sandbox']} {'network' if i['Network'] else 'link'} "
                                           f"{i['Network'] or i['Link']}",
                    ("SANDBOX", "INTERFACE", "DIRECTION", "RATE", "DELAY", "JITTER", "LOSS", "REORDER", "LIMIT"),
                    lambda i: (i["Sandbox"], f"network {i['Network']}" if i["Network"] else f"link {i['Link']}",
                               i["Direction"], *(str(i[k]) if i[k] is not None else "-"
                                                 for k in ("Rate", "Delay", "Jitter", "Loss", "Reorder", "Limit"))))


# Sandboxes

def create(args: argparse.Namespace) -> int:
    with _engine() as engine:
        sandbox = engine.create_sandbox(args.name, networks=args.network, ip=args.ip, ip6=args.ip6,
                                        publish=args.publish, aliases=args.alias, labels=args.label, kind=args.kind,
                                        owner=args.owner, group=args.group, mac=args.mac)
    print(sandbox.id)
    return 0


def cni_install(args: argparse.Namespace) -> int:
    from .cni.install import install
    from .store import state_dir

    print(install(args.bin_dir, state_dir()))
    return 0


def ps(args: argparse.Namespace) -> int:
    with _catalog() as catalog:
        items = [s.to_dict() for s in catalog.sandboxes()]
    if args.quiet:
        for item in items:
            print(item["Name"])
        return 0

    def row(item: dict[str, Any]) -> Sequence[Any]:
        nets = item["Networks"].values()
        addresses = [a for e in nets for a in (e["IPAddress"], e["GlobalIPv6Address"]) if a]
        mode = item["NetworkMode"]  # host, container:NAME (nsnet.modes)
        shared = mode if mode == "host" or mode.startswith("container:") else "-"
        return (item["Id"][:12], item["Name"], ",".join(e["Network"] for e in nets) or shared,
                ",".join(addresses) or "-", item["State"])

    print(_formatted(items, args.format, ("SANDBOX ID", "NAME", "NETWORKS", "IP ADDRESSES", "STATE"), row))
    return 0


def inspect(args: argparse.Namespace) -> int:
    def details(catalog: Any, name: str) -> dict[str, Any]:
        shaped = [s.to_dict() for s in catalog.shapings(name)]  # shown when it has any (nsnet shape)
        return {**catalog.sandbox(name).to_dict(), **({"Shaping": shaped} if shaped else {})}

    return _inspect(details, args.names, args.format)


def rm(args: argparse.Namespace) -> int:
    with _engine() as engine:
        return _each(args.names, lambda n: engine.remove_sandbox(n, force=args.force))


def port(args: argparse.Namespace) -> int:
    with _catalog() as catalog:
        endpoints = catalog.sandbox(args.name).endpoints
    if args.format == "json":
        print(as_json([m.to_dict() for e in endpoints for m in e.bindings()]))
        return 0
    for endpoint in endpoints:
        for mapping in endpoint.bindings():
            print(mapping)
    for note in (e.ports_note for e in endpoints if e.ports_note):
        print(f"nsnet: {note}", file=sys.stderr)
    return 0


def resolve(args: argparse.Namespace) -> int:
    with _catalog() as catalog:
        for address in catalog.resolve(args.name, args.network):
            print(address)
    return 0


def connect(args: argparse.Namespace) -> int:
    with _engine() as engine:
        engine.connect(args.network, args.name, ip=args.ip, ip6=args.ip6, publish=args.publish, aliases=args.alias)
    return 0


def disconnect(args: argparse.Namespace) -> int:
    with _engine() as engine:
        engine.disconnect(args.network, args.name)
    return 0


def _command(argv: list[str]) -> list[str]:
    argv = argv[1:] if argv[:1] == ["--"] else argv
    if not argv:
        raise NsnetError("no command given (usage: ... -- CMD [ARG...])")
    return argv


def _cannot_execute(program: str, exc: OSError) -> int:
    """The shell's answer when a command cannot start: 127 when it is not there, 126 when it is
    there but cannot be executed (a directory, no permission, not an executable format)."""
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        reason, code = "command not found", 127
    elif "/" in program and os.path.isdir(program):  # a bare name was looked up in PATH
        reason, code = "is a directory", 126
    elif isinstance(exc, PermissionError):
        reason, code = "permission denied", 126
    else:
        reason, code = (exc.strerror or str(exc)).lower(), 126
    print(f"nsnet: error: {program}: {reason}", file=sys.stderr)
    return code


def exec_(args: argparse.Namespace) -> int:
    from .kernel.netns import enter_sandbox

    argv = _command(args.command)
    with _engine() as engine:
        sandbox = engine.enterable(args.name)
    if sandbox.network_mode != "host":  # --network host: the namespace nsnet runs in (nsnet.modes)
        enter_sandbox(sandbox.handle)  # a container: sandbox's is its donor's
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        return _cannot_execute(argv[0], exc)


def run(args: argparse.Namespace) -> int:
    import signal

    argv = _command(args.command)
    name = args.name or f"run-{os.urandom(4).hex()}"
    with _engine() as engine:
        engine.create_sandbox(name, networks=args.network, ip=args.ip, ip6=args.ip6, publish=args.publish,
                              aliases=args.alias, labels=args.label)
        try:
            if not args.rm:  # stdout is the command's; the name of what is kept goes to stderr
                print(f"nsnet: sandbox {name}", file=sys.stderr, flush=True)
            try:
                process = engine.popen(name, argv)
            except OSError as exc:
                return _cannot_execute(argv[0], exc)
            # The terminal's Ctrl-C reaches the child directly; termination asked of us is passed on.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            for sig in (signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, lambda signum, _frame: process.send_signal(signum))
            code = process.wait()
            return code if code >= 0 else 128 - code
        finally:
            if args.rm:
                engine.remove_sandbox(name, force=True)


def doctor(args: argparse.Namespace) -> int:
    with _engine() as engine:
        findings = engine.doctor()
    if args.format == "json":
        print(as_json([f.to_dict() for f in findings]))
    elif not findings:
        print("nsnet doctor: nothing on this host stands in nsnet's way")
    for finding in findings if args.format != "json" else []:
        print(f"{finding.severity}: {finding.check}: {finding.reason}")
        for detail in finding.details:
            print(f"    {detail}")
        print(f"    fix: {finding.fix}")
    return 1 if any(f.severity == "problem" for f in findings) else 0


def check(args: argparse.Namespace) -> int:
    with _engine() as engine:
        drift = engine.check()
    if args.format == "json":
        print(as_json([d.to_dict() for d in drift]))
    else:
        for difference in drift:
            print(difference)
    return 1 if drift else 0


def gc(args: argparse.Namespace) -> int:
    with _engine() as engine:
        for action in engine.gc():
            print(action)
    return 0


LAB_CONTROL = ("exec", "cut", "heal", "kill", "etcd")


def lab(args: argparse.Namespace) -> int:
    if args.command[:1] and args.command[0] in LAB_CONTROL:  # inside a multi-host lab (nsnet.labhosts)
        from . import labhosts

        return labhosts.control(args.command)
    from . import lab as lab_module

    if args.etcd is not None and not args.hosts:
        raise InvalidInput("--etcd", args.etcd, "is for a lab of several hosts (--hosts N)")
    members = args.etcd if args.etcd is not None else 1
    return lab_module.run(args.command[1:] if args.command[:1] == ["--"] else args.command, hosts=args.hosts,
                          members=members if args.hosts else 0, mtu=args.underlay_mtu)


# Clusters (overlay networks)

def cluster_hosts(args: argparse.Namespace) -> int:
    from .cluster import local

    with _engine() as engine:
        items = local.hosts(engine)
    _listing(args, items, lambda i: i["Host"], ["HOST", "VTEP", "STATE", "BLOCKS"],
             lambda i: [i["Host"] + (" *" if i["Here"] else ""), i["Vtep"], i["State"], " ".join(i["Blocks"]) or "-"])
    return 0


def cluster_leave(args: argparse.Namespace) -> int:
    from .cluster import local

    with _engine() as engine:
        left = local.leave_cluster(engine, args.force)
    for name in left:
        print(name)
    return 0


def cluster_evict(args: argparse.Namespace) -> int:
    from .cluster import local

    with _engine() as engine:
        for block in local.evict(engine, args.host, args.force):
            print(block)
    return 0


# Parser

TEMPLATE_HELP = "a template such as '{{.Name}}' ({{.A.B}} paths and {{json .A}})"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nsnet", description="Docker-style bridge networking from the kernel's own parts.")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True, parser_class=_Parser)

    def verb(name: str, fn: Callable[[argparse.Namespace], int], help_text: str,
             group: Any = verbs) -> argparse.ArgumentParser:
        sub = group.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(fn=fn)
        return sub

    def listing(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--format", type=_listing_format, help=f"table (default), json, or {TEMPLATE_HELP}")
        sub.add_argument("-q", "--quiet", action="store_true", help="print names only")

    def inspecting(sub: argparse.ArgumentParser, kind: str) -> None:
        sub.add_argument("names", nargs="+", metavar="NAME", help=f"the {kind}s to show")
        sub.add_argument("--format", "-f", type=_inspect_format, help=f"json (default) or {TEMPLATE_HELP}")

    def json_only(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--format", choices=["json"], help="json: print JSON instead of text")

    def naming(sub: argparse.ArgumentParser, what: str) -> None:
        sub.add_argument("name", help=what)

    cni = verbs.add_parser("cni", help="nsnet as a CNI plugin for container runtimes").add_subparsers(
        dest="cni_verb", metavar="COMMAND", required=True, parser_class=_Parser)
    sub = verb("install", cni_install, "write the plugin executable `nsnet` into a runtime's CNI plugin directory;"
                                       " it serves this ledger (NSNET_STATE_DIR or the default)", cni)
    sub.add_argument("--bin-dir", default="/opt/cni/bin", help="the plugin directory (default /opt/cni/bin)")

    network = verbs.add_parser("network", help="manage networks").add_subparsers(
        dest="network_verb", metavar="COMMAND", required=True, parser_class=_Parser)
    sub = verb("create", network_create, "create a network: a bridge, its subnet and its rules", network)
    naming(sub, "the network's name")
    sub.add_argument("--subnet", action="append", default=[],
                     help="CIDR, one per family (repeatable: IPv4 and IPv6); picked when omitted: IPv4 from the "
                          "address pool, IPv6 a /64 of this host's unique local /48")
    sub.add_argument("--gateway", action="append", default=[],
                     help="the bridge's address in a subnet's family (default: its first address)")
    sub.add_argument("--ip-range", action="append", default=[],
                     help="allocate sandbox addresses from this part of a subnet (one per family)")
    sub.add_argument("--ipv6", action="store_true", help="IPv6 too (implied by an IPv6 --subnet)")
    sub.add_argument("--no-ipv4", action="store_true", help="no IPv4: an IPv6-only network (with --ipv6)")
    sub.add_argument("--ipv6-routed", action="store_true",
                     help="route the IPv6 subnet without NAT66; inbound stays limited to published ports")
    sub.add_argument("--ipv4-routed", action="store_true",
                     help="route the IPv4 subnet without masquerade; inbound stays limited to published ports")
    sub.add_argument("--internal", action="store_true", help="no traffic in or out of the network")
    sub.add_argument("--mtu", type=int, help="MTU of the bridge and its veths (default: 1500; overlay: what the"
                                             " underlay carries inside VXLAN, its MTU - 50)")
    sub.add_argument("--no-icc", action="store_true", help="sandboxes on it may not talk to each other")
    sub.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                     help="metadata shown by inspect (repeatable)")
    sub.add_argument("--no-dns", action="store_true", help="no name resolution on it (default: its sandboxes "
                     "resolve each other by name through nsnet's resolver on the gateway)")
    sub.add_argument("--dns", action="append", default=[], metavar="IP",
                     help="an upstream server for names not nsnet's (repeatable; default: the host's resolvers)")
    sub.add_argument("--driver", default="bridge",
                     help="bridge (default), overlay (across the hosts of the cluster NSNET_CLUSTER names: each host"
                          " leases a block of --subnet and reaches the others' blocks through VXLAN) or macvlan: each"
                          " sandbox a macvlan child of --parent, on its LAN, with no"
                          " bridge, NAT, published ports, DNS or firewall of nsnet's; --gateway is then a router of that"
                          " LAN (none: no default route); the host cannot reach the children through the parent")
    sub.add_argument("--parent", metavar="IFACE", help="the host interface of a macvlan network (never changed)")
    sub.add_argument("--mode", help="macvlan's mode: bridge (default: children reach each other), private (they"
                                    " cannot) or vepa (through the switch outside)")
    sub.add_argument("--block-size", type=int, metavar="BITS",
                     help="overlay: each host's block of the subnet, as a prefix length (default 24)")
    sub.add_argument("--vni", type=int, help="overlay: its VXLAN network identifier (default: the first free from 4096)")
    listing(verb("ls", network_ls, "list networks", network))
    cluster = verbs.add_parser("cluster", help="the hosts of overlay networks (NSNET_CLUSTER)").add_subparsers(
        dest="cluster_verb", metavar="COMMAND", required=True, parser_class=_Parser)
    listing(verb("hosts", cluster_hosts, "list the cluster's hosts: alive or suspect, their VTEPs and blocks", cluster))
    sub = verb("leave", cluster_leave, "take this host out of every overlay network and the cluster", cluster)
    sub.add_argument("-f", "--force", action="store_true", help="disconnect attached sandboxes first")
    sub = verb("evict", cluster_evict, "delete a dead host's blocks now: its peers forget it", cluster)
    sub.add_argument("host", metavar="HOST", help="the host's id (see nsnet cluster hosts)")
    sub.add_argument("-f", "--force", action="store_true", help="evict it even though it is alive (it fences itself)")
    inspecting(verb("inspect", network_inspect, "show networks and their sandboxes as JSON", network), "network")
    sub = verb("rm", network_rm, "remove networks", network)
    sub.add_argument("names", nargs="+", metavar="NAME", help="the networks to remove")
    sub.add_argument("-f", "--force", action="store_true", help="disconnect attached sandboxes first")
    sub = verb("prune", network_prune, "remove every network no sandbox uses", network)
    sub.add_argument("-f", "--force", action="store_true", help="accepted for Docker compatibility")

    def attaching(sub: argparse.ArgumentParser, where: str) -> None:
        sub.add_argument("--ip", help=f"its IPv4 address {where} (default: the next free one)")
        sub.add_argument("--ip6", help=f"its IPv6 address {where} (default: the next free one)")
        sub.add_argument("-p", "--publish", action="append", default=[],
                         metavar="[HOST_IP:][HOST_PORT:]SANDBOX_PORT[/PROTO]",
                         help="publish a port (repeatable; an IPv6 HOST_IP in brackets: [2001:db8::5]:8080:80)")
        sub.add_argument("--alias", action="append", default=[], metavar="NAME",
                         help=f"another name it answers to {where} (repeatable)")

    def labelling(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                         help="metadata services select sandboxes by (repeatable)")

    def command(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]",
                         help="the command and its arguments, after --")

    service = verbs.add_parser("service", help="virtual addresses spread over sandboxes (Kubernetes Services)")
    service = service.add_subparsers(dest="service_verb", metavar="COMMAND", required=True, parser_class=_Parser)
    sub = verb("create", service_create, "create a service: a VIP whose ports the kernel spreads over backends; prints"
                                         " the VIP", service)
    naming(sub, "the service's name")
    sub.add_argument("--network", required=True, help="the network its VIP serves and its backends are on")
    sub.add_argument("-p", "--port", dest="ports", action="append", default=[],
                     metavar="PORT[:TARGET_PORT][/tcp|udp|sctp]",
                     help="a port of the VIPs and the backends' port it goes to (repeatable)")
    sub.add_argument("--publish", dest="host_ports", action="append", default=[], metavar="HOST_PORT[:PORT]",
                     help="also reach service port PORT on every address of the host, at HOST_PORT (Kubernetes'"
                          " NodePort; repeatable)")
    sub.add_argument("--affinity", metavar="client-ip[=SECONDS]|none",
                     help="keep each client on one backend for SECONDS after its last new connection (default"
                          " 10800)")
    sub.add_argument("--backend", action="append", default=[], metavar="SANDBOX", help="a backend (repeatable)")
    sub.add_argument("--selector", action="append", default=[], metavar="KEY=VALUE",
                     help="every sandbox of the network with this label serves it, as they come and go (repeatable:"
                          " all must hold)")
    sub.add_argument("--vip", action="append", default=[],
                     help="its address in a family (default: the next free one of the service range,"
                          " NSNET_SERVICE_RANGE, 10.211.0.0/16 and fd00:6e73:7663::/112; one per family)")
    listing(verb("ls", service_ls, "list services", service))
    inspecting(verb("inspect", service_inspect, "show services and their backends as JSON", service), "service")
    sub = verb("rm", service_rm, "remove services", service)
    sub.add_argument("names", nargs="+", metavar="NAME", help="the services to remove")

    sub = verb("link", link, "join two sandboxes by a veth pair, no bridge between them (a lab's cable); each end"
                             " is named after the other sandbox; prints both ends")
    sub.add_argument("a", metavar="A", help="a sandbox")
    sub.add_argument("b", metavar="B", help="the other sandbox")
    sub.add_argument("--ip", action="append", default=[], metavar="SANDBOX=CIDR",
                     help="an address of one end, with its prefix (repeatable: one per end and family)")
    sub.add_argument("--mtu", type=int, default=1500, help="the MTU of both ends (default 1500)")
    sub = verb("unlink", unlink, "remove the link between two sandboxes")
    sub.add_argument("a", metavar="A", help="a sandbox")
    sub.add_argument("b", metavar="B", help="the other sandbox")
    listing(verb("links", links, "list links"))
    sub = verb("shape", shape, "shape one interface of a sandbox: rate cap, delay, jitter, loss, reordering, queue"
                               " limit (replaces what was set there; --clear removes it)")
    naming(sub, "the sandbox")
    target = sub.add_mutually_exclusive_group(required=True)
    target.add_argument("--network", metavar="NET", help="its endpoint on this network")
    target.add_argument("--link", metavar="PEER", help="its end of the link to this sandbox")
    sub.add_argument("--rate", metavar="R", help="rate cap: 10mbit, 512kbit, 1gbit (bits) or 1mbps (bytes) per second")
    sub.add_argument("--delay", metavar="D", help="added delay: 20ms, 500us, 1s (needs sch_netem)")
    sub.add_argument("--jitter", metavar="J", help="random variation of the delay (needs --delay)")
    sub.add_argument("--loss", metavar="P%%", help="share of packets dropped at random: 1%%, 0.5%%")
    sub.add_argument("--reorder", metavar="P%%", help="share of packets sent at once, ahead of delayed ones"
                                                     " (needs --delay)")
    sub.add_argument("--limit", metavar="N", help="queue limit in packets (netem's queue; with --rate alone, N"
                                                  " packets of the MTU in tbf's queue)")
    sub.add_argument("--direction", default="out",
                     help="out (default): what leaves the sandbox through it; in: what arrives; both")
    sub.add_argument("--clear", action="store_true", help="remove the interface's shaping")
    listing(verb("shapes", shapes, "list shaped interfaces"))
    sub = verb("graph", graph, "draw what nsnet holds: networks, sandboxes, links, published ports, routes, services,"
                               " shaping")
    sub.add_argument("--format", choices=["dot", "svg", "mermaid"], default="dot",
                     help="dot (Graphviz, the default), svg (laid out by Graphviz's dot) or mermaid (graph LR)")
    route = verbs.add_parser("route", help="static routes inside sandboxes (a lab's routers)").add_subparsers(
        dest="route_verb", metavar="COMMAND", required=True, parser_class=_Parser)
    sub = verb("add", route_add, "add a static route inside a sandbox; its first of a family switches forwarding on"
                                 " inside it", route)
    naming(sub, "the sandbox")
    sub.add_argument("dst", metavar="DST", help="the destination (CIDR)")
    sub.add_argument("via", choices=["via"], help="the word via")
    sub.add_argument("gw", metavar="GW", help="the gateway, on one of the sandbox's networks or links")
    sub = verb("rm", route_rm, "remove a sandbox's static route; its last of a family switches forwarding off", route)
    naming(sub, "the sandbox")
    sub.add_argument("dst", metavar="DST", help="the destination (CIDR)")
    listing(verb("ls", route_ls, "list static routes", route))

    intercept = verbs.add_parser("intercept", help="send a sandbox's traffic through a local proxy").add_subparsers(
        dest="intercept_verb", metavar="COMMAND", required=True, parser_class=_Parser)
    sub = verb("add", intercept_add, "redirect a sandbox's outbound and inbound TCP to local ports (Istio's sidecar"
                                     " capture), in a table of nsnet's inside its namespace", intercept)
    naming(sub, "the sandbox")
    sub.add_argument("--outbound-port", metavar="PORT", help="outbound TCP goes to 127.0.0.1:PORT (Istio: 15001)")
    sub.add_argument("--inbound-port", metavar="PORT", help="inbound TCP goes to PORT (Istio: 15006)")
    sub.add_argument("--exclude-uid", action="append", default=[], metavar="UID",
                     help="this user's traffic is never captured: the proxy's own (repeatable; needed with "
                          "--outbound-port)")
    sub.add_argument("--exclude-port", action="append", default=[], metavar="PORT",
                     help="outbound TCP to this port flows directly (repeatable)")
    sub.add_argument("--exclude-inbound-port", action="append", default=[], metavar="PORT",
                     help="inbound TCP to this port flows directly (repeatable)")
    sub.add_argument("--exclude-cidr", action="append", default=[], metavar="CIDR",
                     help="outbound traffic to these addresses flows directly (repeatable)")
    sub.add_argument("--dns-port", metavar="PORT", help="DNS (UDP and TCP 53) goes to 127.0.0.1:PORT")
    sub = verb("rm", intercept_rm, "send a sandbox's traffic directly again, at once", intercept)
    sub.add_argument("names", nargs="+", metavar="NAME", help="the sandboxes")
    json_only(verb("ls", intercept_ls, "list intercepted sandboxes", intercept))

    sub = verb("up", up, "make what a topology file describes, or change it to match the file (prints each step)")
    sub.add_argument("file", metavar="FILE", help="the topology file (YAML)")
    sub.add_argument("--dry-run", action="store_true", help="print the plan (+ make, ~ change, - remove) only")
    sub = verb("down", down, "remove everything a topology file's topology made")
    sub.add_argument("file", metavar="FILE", help="the topology file (YAML)")
    sub = verb("verify", verify, "probe every expectation of a file (expect:) with real packets; exit 1 on a miss")
    sub.add_argument("file", metavar="FILE", help="a topology file, or a file of expectations only")

    networks_help = ("attach to this network (repeatable; default: nsnet; none: no network, its loopback only;"
                     " host: the host's namespace, none of its own; container:NAME: NAME's namespace)")
    sub = verb("create", create, "create a sandbox: a named netns attached to networks")
    naming(sub, "the sandbox's name")
    sub.add_argument("--network", action="append", default=[], help=networks_help)
    labelling(sub)
    attaching(sub, "on the first network")
    sub.add_argument("--kind", choices=("netns", "tap"), default="netns",
                     help="netns (default): a namespace; tap: a VM guest's tap device on the network's bridge")
    sub.add_argument("--owner", metavar="UID", help="tap: the uid that may open it without privileges (QEMU's)")
    sub.add_argument("--group", metavar="GID", help="tap: the gid that may open it without privileges")
    sub.add_argument("--mac", help="tap: the guest's MAC (default: one nsnet derives from its address)")
    sub = verb("run", run, "run a command in a new sandbox")
    sub.add_argument("--name", help="the sandbox's name (default: run-<8 hex digits>, printed on stderr)")
    sub.add_argument("--rm", action="store_true", help="remove the sandbox when the command exits")
    sub.add_argument("--network", action="append", default=[], help=networks_help)
    labelling(sub)
    attaching(sub, "on the first network")
    command(sub)
    sub = verb("exec", exec_, "run a command inside a sandbox")
    naming(sub, "the sandbox")
    command(sub)
    sub = verb("connect", connect, "attach a sandbox to a network")
    sub.add_argument("network", help="the network to attach to")
    naming(sub, "the sandbox")
    attaching(sub, "on that network")
    sub = verb("resolve", resolve, "the addresses nsnet's resolver gives a name (a sandbox or an alias)")
    sub.add_argument("name", help="the name, as a sandbox would ask it: NAME, NAME.NETWORK, NAME.nsnet")
    sub.add_argument("--network", help="only that network's sandboxes")
    sub = verb("port", port, "list a sandbox's published ports")
    naming(sub, "the sandbox")
    json_only(sub)
    sub = verb("disconnect", disconnect, "detach a sandbox from a network")
    sub.add_argument("network", help="the network to detach from")
    naming(sub, "the sandbox")
    listing(verb("ps", ps, "list sandboxes"))
    inspecting(verb("inspect", inspect, "show sandboxes as JSON"), "sandbox")
    sub = verb("rm", rm, "remove sandboxes")
    sub.add_argument("names", nargs="+", metavar="NAME", help="the sandboxes to remove")
    sub.add_argument("-f", "--force", action="store_true", help="kill processes still running inside")
    json_only(verb("check", check, "list every difference between the ledger and the kernel"))
    verb("gc", gc, "repair: finish or undo interrupted commands, forget vanished sandboxes, re-make what is missing")
    json_only(verb("doctor", doctor, "report what on this host would break nsnet, and why"))
    sub = verb("lab", lab, "run a command (default: a shell) in a throwaway isolated host; with --hosts, in one"
                           " holding several hosts on an underlay and etcd (then: lab exec HOST -- CMD, lab cut|heal|"
                           "kill NAME, lab etcd start|stop|kill MEMBER)")
    sub.add_argument("--hosts", type=int, default=0, metavar="N", help="N hosts h1..hN on an underlay (10.99.0.0/16)")
    sub.add_argument("--etcd", type=int, metavar="M", help="M etcd members e1..eM on it (default 1; 0: none)")
    sub.add_argument("--underlay-mtu", type=int, default=1500, metavar="N", help="the underlay's MTU (default 1500)")
    command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except NsnetError as exc:
        print(f"nsnet: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def entry() -> NoReturn:
    """The `nsnet` console script: main(), then a prompt exit. Interpreter teardown would free the
    libnftables context (~13 ms, as much as the rest of an `rm`); everything is flushed and
    closed by then, so there is nothing left for it to do."""
    if len(sys.argv) == 1 and "CNI_COMMAND" in os.environ:  # run by a container runtime as its CNI plugin
        from .cni.plugin import run

        run()
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
