"""Link shaping (`nsnet shape`): a rate cap, delay, jitter, loss, reordering and a queue limit on
one interface of a sandbox: its endpoint on a network, or its end of a link. Parsing, validation
and the kernel objects a setting needs are here, pure; the plan is nsnet.plan.shape's, the nft
table nsnet.shaping.render's, the ledger's rows the store's.

Direction: `out` (the default) shapes what leaves the sandbox through that interface, `in` what
arrives through it, `both` both. A queueing discipline only shapes what a device sends, so:

  rate, delay, jitter, reorder, limit (tc): `out` on the sandbox's own interface; `in` on the
    device that sends towards it: the host-side veth of an endpoint, the peer's end of a link.
  loss (nftables): a random drop (`numgen random mod 10000 < k`) in a table of nsnet's inside the
    sandbox's namespace: `out` in postrouting (oifname), `in` in prerouting (iifname). It works on
    every kernel nsnet runs on, with or without sch_netem, so loss is always made this way. A
    packet dropped there that a process of the sandbox itself sent is refused to it (EPERM from
    sendto, where netem drops silently); forwarded packets and arriving ones are dropped silently.

The kernel objects: rate alone is a tbf root qdisc; delay/jitter/reorder need sch_netem (root
netem, with a tbf child for a rate). `--limit N` is netem's queue in packets when netem is used;
with tbf alone it is tbf's queue, N packets of the interface's MTU in bytes; alone it is refused
(no queue to bound). A knob whose module the kernel lacks is refused, never accepted silently.
"""

from __future__ import annotations

import re

from ..errors import InvalidInput
from ..record import record

DIRECTIONS = ("out", "in", "both")
NETEM, TBF = "sch_netem", "sch_tbf"
LOSS_SCALE = 10000  # loss is drawn as numgen random mod LOSS_SCALE < k: steps of 0.01%
MIN_RATE, MAX_RATE = 8_000, 32_000_000_000  # bit/s: tbf's rate is 32 bits of bytes per second
MAX_DELAY_US = 60_000_000
MAX_LIMIT = 1_000_000
# Default latency of tbf's queue (the `tc ... tbf latency 50ms` of the manuals), and its burst:
# 10 ms of the rate, at least 2 full-size frames (tbf needs one packet to fit in its bucket).
TBF_LATENCY_US = 50_000
BURST_MS = 10

_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12,
               "bps": 8, "kbps": 8 * 10**3, "mbps": 8 * 10**6, "gbps": 8 * 10**9}
_TIME_UNITS = {"us": 1, "ms": 1000, "s": 1_000_000}
_NUMBER = r"(\d+(?:\.\d+)?)"


@record
class Settings:
    """What a user asked of one interface, in the kernel's units."""

    rate: int | None = None  # bit/s
    delay: int | None = None  # microseconds
    jitter: int | None = None
    loss: int | None = None  # in LOSS_SCALE steps (1% = 100)
    reorder: int | None = None  # idem
    limit: int | None = None  # packets

    @property
    def netem(self) -> bool:
        """Whether it needs sch_netem."""
        return self.delay is not None

    @property
    def qdisc(self) -> bool:
        """Whether it needs a qdisc at all (loss alone does not)."""
        return self.rate is not None or self.netem

    def to_dict(self) -> dict[str, str | int | None]:
        return {"Rate": rate_text(self.rate), "Delay": time_text(self.delay), "Jitter": time_text(self.jitter),
                "Loss": percent_text(self.loss), "Reorder": percent_text(self.reorder), "Limit": self.limit}

    @classmethod
    def from_dict(cls, data: dict) -> Settings:
        return settings(rate=data.get("Rate"), delay=data.get("Delay"), jitter=data.get("Jitter"),
                        loss=data.get("Loss"), reorder=data.get("Reorder"), limit=data.get("Limit"))

    def __str__(self) -> str:
        shown = [f"{k.lower()} {v}" for k, v in self.to_dict().items() if v is not None]
        return ", ".join(shown)


@record
class Shaping:
    """A sandbox's shaping of one interface: its endpoint on `network`, or its end of the link to
    `link` (a sandbox's name)."""

    sandbox: str
    network: str | None
    link: str | None
    direction: str
    settings: Settings
    state: str = "ready"

    @property
    def target(self) -> str:
        return f"network {self.network}" if self.network is not None else f"link {self.link}"

    @property
    def key(self) -> str:
        """The ledger's name of the interface: network:NAME or link:PEER."""
        return f"network:{self.network}" if self.network is not None else f"link:{self.link}"

    def to_dict(self) -> dict:
        return {"Sandbox": self.sandbox, "Network": self.network, "Link": self.link, "Direction": self.direction,
                **self.settings.to_dict(), "State": self.state}

    def __str__(self) -> str:
        return f"{self.sandbox} {self.target} {self.direction}: {self.settings}"


@record
class Qdisc:
    """The root qdisc of one device: tbf for a rate (bytes/s, its bucket and queue in bytes),
    netem for delay/jitter/reorder (its queue in packets), or netem with a tbf child."""

    rate: int | None = None  # bytes/s
    burst: int = 0
    tbf_limit: int = 0  # bytes
    delay: int | None = None  # microseconds
    jitter: int | None = None
    reorder: int | None = None  # LOSS_SCALE steps
    netem_limit: int | None = None  # packets

    @property
    def kinds(self) -> str:
        """The root's kind, and its child's."""
        if self.delay is not None:
            return "netem/tbf" if self.rate is not None else "netem"
        return "tbf"

    @property
    def summary(self) -> str:
        """What `check` compares with the kernel's (Kernel.root_qdisc): kinds and rate."""
        return f"{self.kinds} rate {self.rate}" if self.rate is not None else self.kinds


def _number(field: str, text: object, pattern: str, what: str) -> tuple[float, str]:
    found = re.fullmatch(pattern, str(text).strip().lower())
    if not found:
        raise InvalidInput(field, text, what)
    return float(found.group(1)), found.group(2) or ""


def parse_rate(text: str | int | None) -> int | None:
    if text is None:
        return None
    units = "|".join(sorted(_RATE_UNITS, key=len, reverse=True))
    value, unit = _number("--rate", text, rf"{_NUMBER}({units})", "must be a number with a unit: bit, kbit, mbit, "
                          "gbit (bits per second) or bps, kbps, mbps, gbps (bytes per second), e.g. 10mbit")
    bits = int(value * _RATE_UNITS[unit])
    if not MIN_RATE <= bits <= MAX_RATE:
        raise InvalidInput("--rate", text, "must be from 8kbit to 32gbit")
    return bits


def parse_time(field: str, text: str | int | None) -> int | None:
    if text is None:
        return None
    value, unit = _number(field, text, rf"{_NUMBER}(us|ms|s)", "must be a time with a unit: us, ms or s, e.g. 20ms")
    micro = int(round(value * _TIME_UNITS[unit]))
    if not 0 < micro <= MAX_DELAY_US:
        raise InvalidInput(field, text, "must be more than 0 and at most 60s")
    return micro


def parse_percent(field: str, text: str | int | float | None) -> int | None:
    if text is None:
        return None
    value, _ = _number(field, text, rf"{_NUMBER}(%?)", "must be a percentage, e.g. 1% or 0.5%")
    steps = int(round(value * LOSS_SCALE / 100))
    if not 0 < steps <= LOSS_SCALE:
        raise InvalidInput(field, text, "must be more than 0% (in steps of 0.01%) and at most 100%")
    return steps


def parse_limit(text: str | int | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise InvalidInput("--limit", text, "must be a number of packets") from None
    if not 1 <= value <= MAX_LIMIT:
        raise InvalidInput("--limit", text, f"must be from 1 to {MAX_LIMIT} packets")
    return value


def direction(text: str) -> str:
    if text not in DIRECTIONS:
        raise InvalidInput("--direction", text, "must be out, in or both")
    return text


def settings(*, rate: str | int | None = None, delay: str | int | None = None, jitter: str | int | None = None,
             loss: str | int | None = None, reorder: str | int | None = None,
             limit: str | int | None = None) -> Settings:
    """The settings as asked, validated on their own (the kernel's modules are judged by `refuse`)."""
    made = Settings(parse_rate(rate), parse_time("--delay", delay), parse_time("--jitter", jitter),
                    parse_percent("--loss", loss), parse_percent("--reorder", reorder), parse_limit(limit))
    if made == Settings():
        raise InvalidInput("--rate", None, "is needed (or --delay, --jitter, --loss, --reorder, --limit; or --clear):"
                                           " nothing to shape")
    if made.jitter is not None and made.delay is None:
        raise InvalidInput("--jitter", jitter, "needs --delay: jitter varies a delay")
    if made.reorder is not None and made.delay is None:
        raise InvalidInput("--reorder", reorder, "needs --delay: reordered packets are the ones sent without it")
    if made.limit is not None and not made.qdisc:
        raise InvalidInput("--limit", limit, "needs --rate or --delay: without them there is no queue to bound")
    return made


def refuse(made: Settings, asked: dict[str, object], available: frozenset[str]) -> None:
    """Refuse a knob the kernel cannot serve, naming the missing module. `available`: the
    modules among NETEM and TBF the kernel has (Kernel.qdisc_modules)."""
    if made.netem and NETEM not in available:
        field = next(f for f in ("delay", "jitter", "reorder") if asked.get(f) is not None)
        raise InvalidInput(f"--{field}", asked[field], f"needs the kernel module {NETEM}, which this kernel lacks")
    if made.rate is not None and TBF not in available:
        raise InvalidInput("--rate", asked["rate"], f"needs the kernel module {TBF}, which this kernel lacks")


def qdisc(made: Settings, mtu: int) -> Qdisc | None:
    """The root qdisc for these settings on a device of this MTU; None when they need none."""
    if not made.qdisc:
        return None
    rate = made.rate // 8 if made.rate is not None else None
    burst = max(rate * BURST_MS // 1000, 2 * (mtu + 14)) if rate is not None else 0
    if rate is None:
        tbf_limit = 0
    elif made.limit is not None and not made.netem:
        tbf_limit = made.limit * mtu
    else:
        tbf_limit = rate * TBF_LATENCY_US // 1_000_000 + burst
    return Qdisc(rate=rate, burst=burst, tbf_limit=tbf_limit, delay=made.delay, jitter=made.jitter,
                 reorder=made.reorder, netem_limit=made.limit if made.netem else None)


def rate_text(bits: int | None) -> str | None:
    if bits is None:
        return None
    for unit, size in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bits % size == 0:
            return f"{bits // size}{unit}"
    return f"{bits}bit"


def time_text(micro: int | None) -> str | None:
    if micro is None:
        return None
    for unit, size in (("s", 1_000_000), ("ms", 1000)):
        if micro % size == 0:
            return f"{micro // size}{unit}"
    return f"{micro}us"


def percent_text(steps: int | None) -> str | None:
    if steps is None:
        return None
    return f"{steps / (LOSS_SCALE // 100):g}%"
