"""Docker's network modes beyond a namespace of one's own (`create --network MODE`).

* `host`: the sandbox has no namespace of its own; its processes run in the namespace nsnet runs
  in (the host's, or a lab's). It has no address, port or alias of nsnet's to give: `--ip`,
  `--ip6`, `-p` and `--alias` are refused (Docker ignores `-p` there with a warning; a refusal
  says so before anything is made). Removing it never touches that namespace.
* `container:DONOR`: the sandbox joins DONOR's namespace (same interfaces, addresses and ports;
  a port bound in one is busy in the other). The ledger records the joiner against its donor:
  `rm DONOR` is refused while joiners exist, and `rm -f DONOR` removes them with it (Docker leaves
  them in a dead namespace). Joining a joiner joins its donor (no chains). A joiner's networks,
  links, routes and interception are its donor's: changing them on the joiner is refused.
* `none` (a namespace with its loopback only) is the engine's NO_NETWORK.

Neither mode makes a kernel object: creating and removing one is a ledger row.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InvalidInput
from .. import validate

HOST = "host"
CONTAINER = "container:"


def requested(networks: Sequence[str]) -> tuple[str, str | None] | None:
    """(mode, donor) when `networks` asks for host or container:NAME mode, None otherwise; a mode
    is refused beside other networks."""
    for net in networks:
        if net == HOST or net.startswith(CONTAINER):
            if len(networks) > 1:
                raise InvalidInput("network", net, "cannot be joined with other networks")
            if net == HOST:
                return HOST, None
            donor = net.removeprefix(CONTAINER)
            validate.name("network", donor)
            return "container", donor
    return None


def refuse_options(mode: str, donor: str | None, *, ip: str | None, ip6: str | None, publish: Sequence[str],
                   aliases: Sequence[str]) -> None:
    """A sandbox in a mode has no endpoint of its own: nothing to give an address, port or alias."""
    given = [flag for flag, value in (("--ip", ip), ("--ip6", ip6), ("-p", publish), ("--alias", aliases)) if value]
    if given:
        what = "the host's network" if mode == HOST else "another sandbox's namespace"
        raise InvalidInput("network", HOST if mode == HOST else f"{CONTAINER}{donor}", f"uses {what}: {', '.join(given)} "
                           "cannot be given (no address, port or alias of its own)")
