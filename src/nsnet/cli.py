"""The `nsnet` command: argument parsing and printing only; the work is the Engine's.

Errors are nsnet's own (NsnetError): one line on stderr, exit code 1 (2 for usage errors). The
read-only verbs (`ls`, `ps`, `inspect`, `port`, `--help`) load neither the engine nor the kernel layer.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .errors import NsnetError
from .output import as_json, table, template


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        message = message.replace("\n", "\\n")  # an argument may hold a newline; the error stays one line
        sys.stderr.write(f"nsnet: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def _formatted(items: list[dict[str, Any]], fmt: str | None, headers: Sequence[str],
               row: Callable[[dict[str, Any]], Sequence[Any]]) -> str:
    if fmt == "json":
        return as_json(items)
    if fmt and fmt != "table":
        return "\n".join(template(fmt, item) for item in items)
    return table(headers, [row(item) for item in items])


def _engine() -> Any:
    from .engine import Engine

    return Engine()


def _catalog() -> Any:
    """For the read-only verbs: the ledger's queries, without the engine's imports."""
    from .catalog import Catalog

    return Catalog()


# Networks

def network_create(args: argparse.Namespace) -> int:
    with _engine() as engine:
        network = engine.create_network(
            args.name, subnet=args.subnet, gateway=args.gateway, ip_range=args.ip_range, internal=args.internal,
            mtu=args.mtu, icc=not args.no_icc, labels=args.label,
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
    print(_formatted(items, args.format, ("NETWORK ID", "NAME", "SUBNET", "GATEWAY", "BRIDGE", "INTERNAL"),
                     lambda i: (i["Id"][:12], i["Name"], i["Subnet"], i["Gateway"], i["Bridge"],
                                str(i["Internal"]).lower())))
    return 0


def _inspect(lookup: Callable[[Any, str], Any], names: list[str], fmt: str | None) -> int:
    found, failed = [], 0
    with _catalog() as catalog:
        for name in names:
            try:
                found.append(lookup(catalog, name).to_dict())
            except NsnetError as exc:
                print(f"nsnet: error: {exc}", file=sys.stderr)
                failed = 1
    if fmt and fmt != "json":
        for item in found:
            print(template(fmt, item))
    elif found or not failed:
        print(as_json(found))
    return failed


def network_inspect(args: argparse.Namespace) -> int:
    return _inspect(lambda e, n: e.network(n), args.names, args.format)


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


# Sandboxes

def create(args: argparse.Namespace) -> int:
    with _engine() as engine:
        sandbox = engine.create_sandbox(args.name, networks=args.network, ip=args.ip, publish=args.publish)
    print(sandbox.id)
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
        return (item["Id"][:12], item["Name"], ",".join(e["Network"] for e in nets) or "-",
                ",".join(e["IPAddress"] for e in nets) or "-", item["State"])

    print(_formatted(items, args.format, ("SANDBOX ID", "NAME", "NETWORKS", "IP ADDRESSES", "STATE"), row))
    return 0


def inspect(args: argparse.Namespace) -> int:
    return _inspect(lambda e, n: e.sandbox(n), args.names, args.format)


def rm(args: argparse.Namespace) -> int:
    with _engine() as engine:
        return _each(args.names, lambda n: engine.remove_sandbox(n, force=args.force))


def port(args: argparse.Namespace) -> int:
    with _catalog() as catalog:
        mappings = catalog.ports(args.name)
    if args.format == "json":
        print(as_json([m.to_dict() for m in mappings]))
        return 0
    for mapping in mappings:
        print(mapping)
    return 0


def connect(args: argparse.Namespace) -> int:
    with _engine() as engine:
        engine.connect(args.network, args.name, ip=args.ip, publish=args.publish)
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
        engine.sandbox(args.name)
    enter_sandbox(args.name)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        return _cannot_execute(argv[0], exc)


def run(args: argparse.Namespace) -> int:
    import signal

    argv = _command(args.command)
    name = args.name or f"run-{os.urandom(4).hex()}"
    with _engine() as engine:
        engine.create_sandbox(name, networks=args.network, ip=args.ip, publish=args.publish)
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


def lab(args: argparse.Namespace) -> int:
    from . import lab as lab_module

    return lab_module.run(args.command[1:] if args.command[:1] == ["--"] else args.command)


# Parser

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nsnet", description="Docker-style bridge networking from the kernel's own parts.")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True, parser_class=_Parser)

    def verb(name: str, fn: Callable[[argparse.Namespace], int], help_text: str,
             group: Any = verbs) -> argparse.ArgumentParser:
        sub = group.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(fn=fn)
        return sub

    def listing(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--format", help="table (default), json, or a template such as '{{.Name}}'")
        sub.add_argument("-q", "--quiet", action="store_true", help="print names only")

    network = verbs.add_parser("network", help="manage networks").add_subparsers(
        dest="network_verb", metavar="COMMAND", required=True, parser_class=_Parser)
    sub = verb("create", network_create, "create a network: a bridge, its subnet and its rules", network)
    sub.add_argument("name")
    sub.add_argument("--subnet", help="CIDR; picked from the address pool when omitted")
    sub.add_argument("--gateway", help="the bridge's address (default: first address of the subnet)")
    sub.add_argument("--ip-range", help="allocate sandbox addresses from this part of the subnet")
    sub.add_argument("--internal", action="store_true", help="no traffic in or out of the network")
    sub.add_argument("--mtu", type=int, default=1500)
    sub.add_argument("--no-icc", action="store_true", help="sandboxes on it may not talk to each other")
    sub.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    listing(verb("ls", network_ls, "list networks", network))
    sub = verb("inspect", network_inspect, "show networks as JSON", network)
    sub.add_argument("names", nargs="+", metavar="NAME")
    sub.add_argument("--format", "-f")
    sub = verb("rm", network_rm, "remove networks", network)
    sub.add_argument("names", nargs="+", metavar="NAME")
    sub.add_argument("-f", "--force", action="store_true", help="disconnect attached sandboxes first")
    sub = verb("prune", network_prune, "remove every network no sandbox uses", network)
    sub.add_argument("-f", "--force", action="store_true", help="accepted for Docker compatibility")

    def publishing(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("-p", "--publish", action="append", default=[],
                         metavar="[HOST_IP:][HOST_PORT:]SANDBOX_PORT[/PROTO]", help="publish a port (repeatable)")

    sub = verb("create", create, "create a sandbox: a named netns attached to networks")
    sub.add_argument("name")
    sub.add_argument("--network", action="append", default=[], help="repeatable; default: nsnet")
    sub.add_argument("--ip", help="address on the first network")
    publishing(sub)
    sub = verb("run", run, "run a command in a new sandbox")
    sub.add_argument("--name")
    sub.add_argument("--rm", action="store_true", help="remove the sandbox when the command exits")
    sub.add_argument("--network", action="append", default=[])
    sub.add_argument("--ip")
    publishing(sub)
    sub.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]")
    sub = verb("exec", exec_, "run a command inside a sandbox")
    sub.add_argument("name")
    sub.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]")
    sub = verb("connect", connect, "attach a sandbox to a network")
    sub.add_argument("network")
    sub.add_argument("name")
    sub.add_argument("--ip")
    publishing(sub)
    sub = verb("port", port, "list a sandbox's published ports")
    sub.add_argument("name")
    sub.add_argument("--format", help="json for JSON")
    sub = verb("disconnect", disconnect, "detach a sandbox from a network")
    sub.add_argument("network")
    sub.add_argument("name")
    listing(verb("ps", ps, "list sandboxes"))
    sub = verb("inspect", inspect, "show sandboxes as JSON")
    sub.add_argument("names", nargs="+", metavar="NAME")
    sub.add_argument("--format", "-f")
    sub = verb("rm", rm, "remove sandboxes")
    sub.add_argument("names", nargs="+", metavar="NAME")
    sub.add_argument("-f", "--force", action="store_true", help="kill processes still running inside")
    sub = verb("check", check, "list every difference between the ledger and the kernel")
    sub.add_argument("--format", help="json for JSON")
    verb("gc", gc, "repair: finish or undo interrupted commands, forget vanished sandboxes, re-make what is missing")
    sub = verb("doctor", doctor, "report what on this host would break nsnet, and why")
    sub.add_argument("--format", help="json for JSON")
    sub = verb("lab", lab, "run a command (default: a shell) in a throwaway isolated host")
    sub.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]")
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
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
