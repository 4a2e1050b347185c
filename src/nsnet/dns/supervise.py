"""Keeping a ledger's resolver (nsnet.dns.server) alive and current, from the commands that change
what it serves.

After a change the engine calls `sync`: a running resolver is asked to reload, and answers once
the new names are served, so the command returns only when they resolve. When none answers and the
ledger has DNS networks, one is started (again, after a kill -9): a new session, the starter waiting
for it to report ready, or why it could not. A resolver exits by itself once no DNS network is
left; a `flock` on dns.lock, held for its life, keeps it single.

Where systemd runs the machine and nsnet runs in its namespaces (not in a lab), the resolver is a
transient unit (`systemd-run`, one per state directory): its log is in the journal, and systemd
restarts it at once if it dies (Restart=on-failure), before any nsnet command would. Elsewhere it
is a process of its own, started again by the next nsnet command or `nsnet gc`; `nsnet check`
reports it down either way.
"""

from __future__ import annotations

import os
import socket
import sys

from dataclasses import dataclass

from ..errors import NsnetError
from . import LOG, SOCKET

REPLY_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Resident:
    """One kind of resident process of a ledger: the module it runs (`python -m MODULE STATE_DIR
    READY_FD`), its control socket and log in the state directory, its systemd unit's prefix."""

    title: str
    module: str
    socket: str
    log: str
    unit_prefix: str


RESOLVER = Resident("nsnet's resolver", "nsnet.dns.server", SOCKET, LOG, "nsnet-dns-")


def ask(state_dir: str, request: str, resident: Resident = RESOLVER) -> str | None:
    """A resident's answer to a control request; None when none answers."""
    path = os.path.join(state_dir, resident.socket)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(REPLY_TIMEOUT_S)
            sock.connect(path)
            sock.sendall(f"{request}\n".encode())
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except (FileNotFoundError, ConnectionRefusedError, socket.timeout, OSError):
        return None
    return answer.decode("ascii", "replace").strip() or None


def sync(state_dir: str, wanted: bool) -> None:
    """Make the resolver serve the ledger as it is now: reload a running one (which exits if no
    DNS network is left), start one when there is none and `wanted`. A resolver may be exiting
    while another command adds a DNS network: then the start finds it still holding the lock
    ("running"), and the next round asks again or starts anew."""
    for _ in range(3):
        answer = ask(state_dir, "reload")
        if answer is not None and answer.startswith("ok"):
            stranger = foreign(answer)
            if stranger:
                raise NsnetError(f"the resolver of {state_dir} {stranger}")
            return
        if not wanted or start(state_dir):
            return
    raise NsnetError("nsnet's resolver neither answers nor starts (another one holds its lock)")


def namespace() -> str:
    return os.readlink("/proc/self/ns/net")


def foreign(answer: str) -> str | None:
    """What is wrong with a resolver whose answer (`ok GENERATION PID NAMESPACE ...`) says it
    runs in another network namespace than this process (one state directory used from two);
    None when it is this one's."""
    words = answer.split()
    if len(words) < 4 or words[3] == namespace():
        return None
    return (f"(pid {words[2]}) runs in another network namespace ({words[3]}, not {namespace()}): it serves "
            "that namespace's gateways; one state directory is for one namespace (NSNET_STATE_DIR)")


def systemd_run() -> str | None:
    """systemd-run, when systemd runs the machine (sd_booted) and this process shares its first
    process's network and mount namespaces: a unit would run there, not in a lab."""
    import shutil

    try:
        if not os.path.isdir("/run/systemd/system") or any(
                os.readlink(f"/proc/1/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}") for kind in ("net", "mnt")):
            return None
    except OSError:
        return None
    return shutil.which("systemd-run")


def unit_name(state_dir: str, resident: Resident = RESOLVER) -> str:
    import hashlib

    return resident.unit_prefix + hashlib.sha256(os.path.realpath(state_dir).encode()).hexdigest()[:12]


def start(state_dir: str, resident: Resident = RESOLVER) -> bool:
    """Start a resident and wait until it serves: True; False when another one held the lock."""
    tool = systemd_run()
    return _start_unit(tool, state_dir, resident) if tool else _start_process(state_dir, resident)


def _source_path() -> str:
    import nsnet

    return os.path.dirname(os.path.dirname(nsnet.__file__))


def _environment() -> dict[str, str]:
    """The starting command's environment but its fault hook (nsnet.faults): a test that kills a
    command at a step must not kill the resident it starts too."""
    from ..faults import ENV

    return {k: v for k, v in os.environ.items() if k != ENV}


def _start_unit(tool: str, state_dir: str, resident: Resident) -> bool:
    import subprocess
    import time

    unit = unit_name(state_dir, resident)
    done = subprocess.run([tool, "--unit", unit, "--collect", "--quiet", "--property=Restart=on-failure",
                           "--property=RestartSec=200ms", f"--setenv=PYTHONPATH={_source_path()}",
                           *(f"--setenv={k}={v}" for k, v in sorted(_environment().items()) if k.startswith("NSNET_")),
                           sys.executable,
                           "-m", resident.module, state_dir], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        if "already" in done.stderr:  # the unit is there: a resolver starting, or one leaving
            return False
        raise NsnetError(f"{resident.title} did not start: systemd-run: {' '.join(done.stderr.split())}")
    deadline = time.monotonic() + REPLY_TIMEOUT_S
    while time.monotonic() < deadline:
        if ask(state_dir, "status", resident) is not None:
            return True
        time.sleep(0.01)
    raise NsnetError(f"{resident.title} did not start in {REPLY_TIMEOUT_S:.0f} s (see journalctl -u {unit})")


def _start_process(state_dir: str, resident: Resident) -> bool:
    import subprocess

    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    log = os.open(os.path.join(state_dir, resident.log), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW,
                  0o600)
    env = {**_environment(),
           "PYTHONPATH": os.pathsep.join([_source_path(), *filter(None, [os.environ.get("PYTHONPATH")])])}
    try:
        # The server forks once more and this parent exits: the resident is nobody's child here.
        subprocess.run([sys.executable, "-m", resident.module, state_dir, str(write_end)], pass_fds=(write_end,),
                       stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=env,
                       cwd="/", check=False)
    finally:
        os.close(write_end)
        os.close(log)
    try:
        answer = _read_line(read_end, REPLY_TIMEOUT_S)
    finally:
        os.close(read_end)
    if answer.startswith("ready"):
        return True
    if answer.startswith("running"):
        return False
    reason = answer.removeprefix("error ").strip() or "it exited without a word"
    raise NsnetError(f"{resident.title} did not start: {reason} (see {os.path.join(state_dir, resident.log)})")


def _read_line(fd: int, timeout: float) -> str:
    import select

    data = b""
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace")


def run_resident(state_dir: str, ready: int | None, lock_name: str, title: str, serve) -> int:
    """The body of a resident's `main`: one per ledger (a `flock` on `lock_name`, held for its
    life; a second one says `running`), `serve(ready)` run, and why it failed told to the starter
    on `ready` and to its log."""
    import fcntl

    lock = os.open(os.path.join(state_dir, lock_name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if ready is not None:
            os.write(ready, b"running\n")
        return 0
    try:
        serve(ready)
    except Exception as exc:  # noqa: BLE001 - the starter must learn why
        if ready is not None:
            try:
                os.write(ready, f"error {type(exc).__name__}: {exc}\n".encode())
            except OSError:
                pass
        print(f"{title}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
