"""The CNI commands: a runtime runs this with CNI_COMMAND and the network configuration on stdin;
the answer (a result, a version list or an error) goes to stdout as JSON, notes to stderr.

A runtime starts a fresh process for every container, so the start-up is the cost: VERSION
imports nothing beyond the spec, and the engine is loaded only by the commands that need it.
"""

from __future__ import annotations

import os
import sys

from . import spec
from .spec import CniError

TYPE_CHECKING = False  # typing's import is a sixth of a VERSION
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import IO, Any, NoReturn

    from ..engine import Engine
    from ..model import Network
    from .config import NetConf

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")


def main(environ: Mapping[str, str] | None = None, stdin: IO[bytes] | None = None,
         stdout: IO[str] | None = None, stderr: IO[str] | None = None, state_dir: str | None = None) -> int:
    """One command; `state_dir` is the ledger the installed plugin serves (NSNET_STATE_DIR, or
    nsnet's default, when not given)."""
    environ = os.environ if environ is None else environ
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    version = spec.CURRENT_VERSION
    try:
        command = environ.get("CNI_COMMAND", "")
        if command not in COMMANDS:
            raise CniError(spec.INVALID_ENVIRONMENT, f"CNI_COMMAND {command!r} is none of {', '.join(COMMANDS)}")
        raw = (stdin or sys.stdin.buffer).read()
        if command == "VERSION":
            stdout.write(version_answer(raw) + "\n")
            return 0
        import json

        from .config import decode, parse

        conf = decode(raw)
        if conf.get("cniVersion") in spec.SUPPORTED_VERSIONS:
            version = conf["cniVersion"]
        netconf = parse(conf, command, environ.get("CNI_ARGS", ""))
        for note in netconf.notes:
            print(f"nsnet: {note}", file=stderr)
        answer = _run(command, netconf, environ, state_dir or environ.get("NSNET_STATE_DIR") or None, stderr)
    except CniError as exc:
        return _failed(exc, version, stdout)
    except Exception as exc:  # noqa: BLE001 - the runtime must get CNI JSON whatever happens
        import traceback

        traceback.print_exc(file=stderr)
        return _failed(CniError(spec.INTERNAL, f"nsnet failed: {type(exc).__name__}: {exc}"), version, stdout)
    if answer is not None:
        json.dump(answer, stdout)
        stdout.write("\n")
    return 0


def run(state_dir: str | None = None) -> NoReturn:
    """The executable's entry: main(), then a prompt exit, as the `nsnet` console script does.
    Interpreter teardown would only free the libnftables context (8 ms, a tenth of a DEL): the
    ledger has committed and the answer is flushed by then."""
    code = main(state_dir=state_dir)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _failed(error: CniError, version: str, stdout: IO[str]) -> int:
    import json

    json.dump(error.to_json(version), stdout)
    stdout.write("\n")
    return 1


def version_answer(raw: bytes) -> str:
    """VERSION's answer, in the configuration's version when nsnet speaks it. A runtime asks
    before every command, so this one reads its single field without a JSON parser (json's
    import is ~40% of a VERSION): whatever it cannot find is answered in the current version."""
    asked = spec.CURRENT_VERSION
    key = raw.find(b'"cniVersion"')
    if key >= 0:
        start = raw.find(b'"', raw.find(b":", key) + 1)
        value = raw[start + 1:raw.find(b'"', start + 1)].decode("ascii", "replace") if start > 0 else ""
        asked = value if value in spec.SUPPORTED_VERSIONS else asked
    listed = ", ".join(f'"{v}"' for v in spec.SUPPORTED_VERSIONS)  # known strings: valid JSON as written
    return f'{{"cniVersion": "{asked}", "supportedVersions": [{listed}]}}'


def _required(environ: Mapping[str, str], *names: str) -> list[str]:
    missing = [n for n in names if not environ.get(n)]
    if missing:
        raise CniError(spec.INVALID_ENVIRONMENT, f"missing environment variable {missing[0]}")
    return [environ[n] for n in names]


def _run(command: str, conf: NetConf, environ: Mapping[str, str], state_dir: str | None,
         stderr: IO[str]) -> dict[str, Any] | None:
    from ..engine import Engine
    from ..errors import Conflict, Exhausted, InvalidInput, KernelError, NotFound, NsnetError, PathError

    try:
        with Engine(state_dir=state_dir) as engine:
            if command == "ADD":
                return _add(engine, conf, *_required(environ, "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"), stderr)
            if command == "DEL":
                container, ifname = _required(environ, "CNI_CONTAINERID", "CNI_IFNAME")
                _delete(engine, conf, container, ifname)
            elif command == "CHECK":
                _check(engine, conf, *_required(environ, "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"))
            elif command == "GC":
                _gc(engine, conf)
            elif command == "STATUS":
                _status(engine)
            return None
    except InvalidInput as exc:
        raise CniError(spec.INVALID_CONFIG, str(exc)) from None
    except NotFound as exc:
        raise CniError(spec.UNKNOWN_CONTAINER, str(exc)) from None
    except (Conflict, Exhausted) as exc:
        raise CniError(spec.REFUSED, str(exc)) from None
    except (KernelError, PathError) as exc:
        raise CniError(spec.KERNEL_FAILURE, str(exc)) from None
    except NsnetError as exc:
        raise CniError(spec.IO_FAILURE, str(exc)) from None


def _network(engine: Engine, conf: NetConf) -> Network:
    """The configuration's network, created in the ledger on the first ADD; one that exists must
    be what the configuration describes."""
    from ..errors import Conflict

    network = _existing(engine, conf.name)
    if network is None:
        try:
            return engine.create_network(
                conf.name, subnet=list(conf.subnets), gateway=list(conf.gateways), ip_range=list(conf.ip_ranges),
                ipv4=any(":" not in s for s in conf.subnets), ipv6=any(":" in s for s in conf.subnets),
                ipv4_routed=not conf.masquerade and not conf.internal and any(":" not in s for s in conf.subnets),
                ipv6_routed=not conf.masquerade and not conf.internal and any(":" in s for s in conf.subnets),
                internal=conf.internal, mtu=conf.mtu, icc=conf.icc, bridge=conf.bridge,
                labels=["cni=true"], dns=False)  # the runtime gives its containers their resolver
        except Conflict:  # another ADD made it first
            network = _existing(engine, conf.name)
            if network is None:
                raise
    differences = _differences(network, conf)
    if differences:
        raise CniError(spec.INVALID_CONFIG, f"network {conf.name!r} exists with another definition: "
                                            + "; ".join(differences))
    return network


def _existing(engine: Engine, name: str) -> Network | None:
    from ..errors import NotFound

    try:
        return engine.network(name)
    except NotFound:
        return None


def _differences(network: Network, conf: NetConf) -> list[str]:
    found = []
    have = {s.version: s for s in network.subnets}
    want = {6 if ":" in s else 4: s for s in conf.subnets}
    if sorted(have) != sorted(want):
        found.append(f"families {sorted(have)} in the ledger, {sorted(want)} configured")
    for version, subnet in want.items():
        s = have.get(version)
        if s is not None and str(s.subnet) != subnet:
            found.append(f"subnet {s.subnet} in the ledger, {subnet} configured")
    for gateway in conf.gateways:
        s = have.get(6 if ":" in gateway else 4)
        if s is not None and str(s.gateway) != gateway:
            found.append(f"gateway {s.gateway} in the ledger, {gateway} configured")
    for ip_range in conf.ip_ranges:
        s = have.get(6 if ":" in ip_range else 4)
        if s is not None and str(s.ip_range or s.subnet) != ip_range:
            found.append(f"range {s.ip_range or s.subnet} in the ledger, {ip_range} configured")
    if conf.bridge and network.bridge != conf.bridge:
        found.append(f"bridge {network.bridge} in the ledger, {conf.bridge} configured")
    for what, ledger, configured in (("mtu", network.mtu, conf.mtu), ("internal", network.internal, conf.internal),
                                     ("icc", network.icc, conf.icc)):
        if ledger != configured:
            found.append(f"{what} {ledger} in the ledger, {configured} configured")
    routed = not conf.masquerade and not conf.internal
    if any(network.routed(s.version) != routed for s in network.subnets):
        found.append(f"ipMasq {not network.routed(network.subnets[0].version)} in the ledger, {conf.masquerade}"
                     " configured")
    return found


def _add(engine: Engine, conf: NetConf, container: str, netns: str, ifname: str,
         stderr: IO[str]) -> dict[str, Any]:
    from ..kernel.netns import is_namespace
    from ..naming import bridge_mac

    if not netns.startswith("/") or not is_namespace(netns):
        raise CniError(spec.INVALID_ENVIRONMENT, f"CNI_NETNS {netns} is not a network namespace")

    network = _network(engine, conf)
    if network.state == "ready" and engine.kernel.link_mac(network.bridge) is None:
        # A reboot (or a hand) took the bridge: restore the ledger's networks as `nsnet gc` does,
        # instead of failing every container until someone runs it. gc also forgets the
        # containers whose namespaces went with the reboot.
        print(f"nsnet: network {network.name!r} had no bridge {network.bridge} (a reboot?); restoring it (nsnet gc)",
              file=stderr)
        engine.gc()
    stale = engine.container(container)
    if stale is not None and stale.netns != netns and not is_namespace(stale.netns):
        # The runtime made the container a new namespace (a restart) and deleted the old one
        # without a DEL reaching nsnet (Podman's cleanup runs apart): those attachments are gone.
        for endpoint in stale.endpoints:
            engine.detach_container(container, endpoint.network, endpoint.ifname)
    ips = {6 if ":" in ip else 4: ip for ip in conf.ips}
    endpoint = engine.attach_container(container, netns, ifname, network.name, ip=ips.get(4), ip6=ips.get(6),
                                       mac=conf.mac, publish=conf.ports, default_route=conf.default_route,
                                       labels=conf.labels)
    host_mac = engine.kernel.link_mac(endpoint.host_ifname)  # the kernel's pick, as the bridge plugin reports
    interfaces = [{"name": network.bridge, "mac": bridge_mac(network)},
                  {"name": endpoint.host_ifname, **({"mac": host_mac} if host_mac else {})},
                  {"name": endpoint.ifname, "mac": endpoint.mac, "sandbox": netns}]
    ips_out = [{"address": str(a), "gateway": str(g), "interface": 2}
               for a, g in zip(endpoint.addresses, endpoint.gateways)]
    routes = [{"dst": "0.0.0.0/0" if g.version == 4 else "::/0", "gw": str(g)}
              for g in endpoint.gateways] if endpoint.default_route else []
    result = spec.Result(interfaces, ips_out, routes, dict(conf.dns or {}))
    return result.after(conf.prev_result).to_json(conf.version)


def _delete(engine: Engine, conf: NetConf, container: str, ifname: str) -> None:
    if _existing(engine, conf.name) is not None:
        engine.detach_container(container, conf.name, ifname)


def _check(engine: Engine, conf: NetConf, container: str, netns: str, ifname: str) -> None:
    if conf.prev_result is None:
        raise CniError(spec.INVALID_CONFIG, "CHECK needs prevResult, the result of the ADD it checks")
    sandbox = engine.container(container)
    endpoint = sandbox.endpoint(conf.name) if sandbox else None
    if endpoint is None or endpoint.ifname != ifname:
        raise CniError(spec.UNKNOWN_CONTAINER, f"container {container!r} has no interface {ifname!r} on network "
                                               f"{conf.name!r}")
    if sandbox.netns != netns:
        raise CniError(spec.DRIFTED, f"container {container!r} was attached in namespace {sandbox.netns}, not {netns}")
    recorded = {ip.get("address") for ip in conf.prev_result.get("ips") or []}
    missing = sorted({str(a) for a in endpoint.addresses} - recorded)
    if missing:
        raise CniError(spec.DRIFTED, f"prevResult lacks the address {missing[0]} the ledger holds for {ifname}")
    drift = [str(d) for d in engine.check() if _concerns(str(d), sandbox.name, endpoint.host_ifname)]
    if drift:
        raise CniError(spec.DRIFTED, f"the attachment drifted: {drift[0]}", "; ".join(drift))


def _concerns(drift: str, sandbox: str, host_ifname: str) -> bool:
    return f"sandbox {sandbox}:" in drift or f"sandbox {sandbox} " in drift or host_ifname in drift


def _gc(engine: Engine, conf: NetConf) -> None:
    """Every attachment to this network that the runtime no longer lists is detached."""
    valid = set(conf.valid_attachments or ())
    for sandbox in engine.sandboxes():
        endpoint = sandbox.endpoint(conf.name)
        if sandbox.container_id and endpoint and (sandbox.container_id, endpoint.ifname) not in valid:
            engine.detach_container(sandbox.container_id, conf.name, endpoint.ifname)


def _status(engine: Engine) -> None:
    from ..kernel.nft import Nft

    try:
        Nft().list_ruleset()
    except Exception as exc:  # any reason the packet filter cannot be driven
        raise CniError(spec.NOT_AVAILABLE, f"nsnet cannot drive nftables: {exc}") from None
    engine.networks()  # the ledger opens and reads


if __name__ == "__main__":
    run()
