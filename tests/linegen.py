"""A known mixed load of StatsD lines and the totals and drops it must produce.

Values are integers or multiples of 1/4 and rates are 1, 1/2 or 1/4, so every sum the
store computes is exact in binary floating point whatever order it adds in.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from protocol.lines import Reason
from store import Store

Totals = dict[tuple[str, int], list[float]]  # (name, ts) -> [cnt, sum, mn, mx]


async def stored_totals(store: Store, names: set[str], start: int, end: int) -> Totals:
    """What the store holds for ``names`` in [start, end), in the shape of Totals."""
    out: Totals = {}
    for name in names:
        info = await store.get_metric(name)
        assert info is not None, name
        for row in await store.read_buckets(info.id, start, end, 1):
            out[(name, row.ts)] = [row.cnt, row.sum, row.mn, row.mx]
    return out

BAD_LINES: dict[Reason, list[bytes]] = {
    Reason.PARSE_ERROR: [b"nonsense", b"no.type:1", b"x:1|c|zz"],
    Reason.BAD_NAME: [b"bad..name:1|c", b".lead:1|c", b"sp ace:1|c"],
    Reason.BAD_VALUE: [b"x.v:abc|c", b"x.v:nan|ms", b"x.v:1e999|v", b"x.v:|c", b"x.s:|s",
                       b"x.g:+inf|g"],
    Reason.UNKNOWN_TYPE: [b"x.s:1|S", b"x.q:1|q"],
    Reason.BAD_RATE: [b"x.r:1|c|@2", b"x.r:1|c|@0", b"x.r:1|c|@x"],
    Reason.BAD_TIMESTAMP: [b"x.t:1|c|T1", b"x.t:1|c|Tabc"],
}


@dataclass
class Load:
    lines: list[bytes] = field(default_factory=list)
    totals: Totals = field(default_factory=dict)  # lines with |T: exact per second
    now_sums: Counter[str] = field(default_factory=Counter)  # lines without |T: per name
    drops: Counter[Reason] = field(default_factory=Counter)

    def add_sample(self, name: str, kind: str, ts: int, value: float, rate: float) -> None:
        weight = 1 / rate
        bucket = self.totals.get((name, ts))
        if bucket is None:
            self.totals[(name, ts)] = [weight, value * weight, value, value]
        else:
            bucket[0] += weight
            bucket[1] += value * weight
            bucket[2] = min(bucket[2], value)
            bucket[3] = max(bucket[3], value)


def make_load(
    count: int, base_ts: int, *, seconds: int = 30, names: int = 50, bad_every: int = 20,
    seed: int = 7, prefix: str = "e2e",
) -> Load:
    """``count`` lines: counters and values over ``names`` names each, |T-stamped across
    ``seconds`` seconds, with sample rates, tags, some arrival-time counters, and one bad
    line of each kind in every ``bad_every`` lines (plus kind conflicts)."""
    rng = random.Random(seed)
    load = Load()
    # First, one line per name fixes every kind before any conflicting line is sent.
    for i in range(names):
        load.lines.append(f"{prefix}.c.{i}:1|c|T{base_ts}".encode())
        load.add_sample(f"{prefix}.c.{i}", "counter", base_ts, 1.0, 1.0)
        load.lines.append(f"{prefix}.v.{i}:0.5|ms|T{base_ts}".encode())
        load.add_sample(f"{prefix}.v.{i}", "value", base_ts, 0.5, 1.0)
    bad = [(reason, line) for reason, lines in BAD_LINES.items() for line in lines]
    while len(load.lines) < count:
        n = len(load.lines)
        if n % bad_every == 0:
            reason, line = bad[(n // bad_every) % len(bad)]
            load.lines.append(line)
            load.drops[reason] += 1
            continue
        if n % (bad_every * 7) == 1:  # a value sample for a counter: kind conflict
            load.lines.append(f"{prefix}.c.{rng.randrange(names)}:3|ms".encode())
            load.drops[Reason.KIND_CONFLICT] += 1
            continue
        rate = rng.choice((1.0, 1.0, 0.5, 0.25))
        rate_text = "" if rate == 1.0 else f"|@{rate}"
        tags = "|#env:test,host:a" if rng.random() < 0.2 else ""
        if rng.random() < 0.05:  # arrival time: only the per-name total is known
            name = f"{prefix}.now.{rng.randrange(5)}"
            value = float(rng.randrange(1, 100))
            load.lines.append(f"{name}:{value:g}|c{rate_text}{tags}".encode())
            load.now_sums[name] += value / rate
            continue
        ts = base_ts + rng.randrange(seconds)
        if rng.random() < 0.5:
            name = f"{prefix}.c.{rng.randrange(names)}"
            value = float(rng.randrange(-50, 100))
            load.lines.append(f"{name}:{value:g}|c{rate_text}{tags}|T{ts}".encode())
            load.add_sample(name, "counter", ts, value, rate)
        else:
            name = f"{prefix}.v.{rng.randrange(names)}"
            value = rng.randrange(-400, 4000) / 4
            # no |g: a process whose first line of a name is a |g would make it a
            # gauge (test_workers spreads a load over processes)
            code = rng.choice(("ms", "v", "h", "d"))
            load.lines.append(f"{name}:{value!r}|{code}{rate_text}{tags}|T{ts}".encode())
            load.add_sample(name, "value", ts, value, rate)
    return load


def datagrams(lines: list[bytes], max_bytes: int = 1400) -> list[bytes]:
    """Pack lines into datagrams of at most ``max_bytes`` (a long line goes alone)."""
    out: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if current and size + len(line) + 1 > max_bytes:
            out.append(b"\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        out.append(b"\n".join(current))
    return out
