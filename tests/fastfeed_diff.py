"""Differential fuzz of the C line parser (collector/_fastfeed.c) against the reference,
protocol.lines.LineParser: random numeric strings and random lines, every result
compared bit for bit (floats by their hex form, so -0.0 is not 0.0) and every drop
reason compared in order.

Used by tests/test_fastfeed_differential.py in-process and, for the sanitizer run, as
a subprocess against an ASan/UBSan build of the extension:

    python -m tests.fastfeed_diff --lines 1000000 [--seed N] [--module PATH.so]
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import random
import socket
import sys
import time
from types import ModuleType
from typing import Any

from protocol.lines import LineParser

NOW = 1_700_000_000
MAX_AGE = 7 * 86400
MAX_LEN = 4096

DIGITS = "0123456789"
SPECIAL_NUMBERS = [
    "inf", "-inf", "+inf", "nan", "NaN", "-nan", "Infinity", "INF", "infinity", "0x10",
    "0x1p3", "0X1P-2", "0b1", "0o7", "1_000", "1__0", "_1", "1_", "1_0.5", " 1", "1 ", "\t1",
    "1\x00", "\u0661", "\uff11", "\u0663.\u0665", "\u0967", "1\u0660",  # non-ASCII digits
    "4.9e-324", "5e-324", "2.4703282292062327e-324",
    "2.4703282292062328e-324", "2.2250738585072011e-308", "2.2250738585072014e-308",
    "1.7976931348623157e308", "1.7976931348623158e308", "1.7976931348623159e308", "1e308",
    "-1e308", "1e309", "9007199254740993", "9007199254740992.5", "0.1", "0.30000000000000004",
    "1e-320", "1e-400", "-0", "-0.0", "+0", "0e0", "-0e-999999", "0e999999", "1e99999",
    "1e-99999", "1.e5", ".5e-3", "5.", ".", "e5", "1e", "1e+", "1e-", "--1", "+-1", "1.2.3",
    "1,5", "1e5.5", "0.000001", "0.0000009999999999", "1e-6", "9.99999e-7", "1.0000000000000002",
    "0.9999999999999999", "1.00000000000000011102230246251565404236316680908203125",
    "123456789012345678901234567890", "00000000000000000000001", "0." + "0" * 330 + "1",
    "1" + "0" * 400, "9" * 400, "9" * 308, "1" * 23, "123456789012345678",
    "12345678901234567890", "18446744073709551616", "4503599627370497.5",
]
TYPES = ["c", "ms", "g", "v", "h", "d", "s", "", "C", "c ", "m", "msx", "kv", "c\r", "S", "sg",
         "g "]
SPECIAL_MEMBERS = ["", " ", "~", "a b", "#x", "@0.5", "T1", "host:8080", "1", "1.0", "-5", "+5",
                   "nan", "m" * 255, "m" * 256, "\t", "a\x00", "\x7f", "\x1f", "\u00e9",
                   "\udcff", "a\r", "\r"]
NAMES = ["a", "web.hits", "db.query-time_ms", "x" * 255, "x" * 256, "a..b", ".a", "a.", "",
         "gf_" + "A" * 32 + ".keyed.name", "gf_" + "B" * 32 + "web.hits", "gf_" + "C" * 32,
         "gf_" + "D" * 31 + ".short", "gf_" + "E" * 32 + ".", "gf_" + "F" * 32 + "..x",
         "n\u00e4me", "sp ace", "tab\tname", "gf_" + "G" * 33 + ".x", "GF_" + "H" * 32 + ".x"]
MUTATION_BYTES = "0123456789.eE+-_x :|@#T\r" + "\u0663"


class Gen:
    """Random numeric strings and lines; one seeded generator, fast enough for 10M."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def digits(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.05:
            return ""
        if roll < 0.85:
            n = 1 + int(roll * 100) % 8
        elif roll < 0.97:
            n = 9 + int(roll * 1000) % 17
        else:
            n = (300, 330, 400, 800)[int(roll * 10000) % 4]
        text = str(rng.getrandbits(4 * n) % 10**n).zfill(n)
        if rng.random() < 0.1:
            text = "0" * (1 + int(rng.random() * 30)) + text  # leading zeros
        return text

    def number(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.08:
            text = rng.choice(SPECIAL_NUMBERS)
        elif roll < 0.18:
            text = repr(rng.uniform(-1e6, 1e6))
        elif roll < 0.25:
            text = f"{rng.random() * 1000:0.6f}"  # pystatsd's timing format
        elif roll < 0.30:
            text = repr(rng.choice((-1, 1)) * rng.random()) + f"e{rng.randint(-330, 310)}"
        else:
            sign = rng.choice(("", "", "", "-", "+"))
            whole = self.digits()
            frac = ("." + self.digits()) if rng.random() < 0.6 else ""
            exp = ""
            if rng.random() < 0.3:
                exp = rng.choice("eE") + rng.choice(("", "+", "-")) + rng.choice(
                    (str(rng.randint(0, 30)), str(rng.randint(0, 400)), self.digits(),
                     "99999", "100000", "4" * 20)
                )
            text = sign + whole + frac + exp
        if rng.random() < 0.1:
            text = self.mutate(text)
        return text

    def mutate(self, text: str) -> str:
        rng = self.rng
        chars = list(text)
        for _ in range(rng.randint(1, 3)):
            op = rng.random()
            at = rng.randint(0, len(chars))
            if op < 0.4:
                chars.insert(at, rng.choice(MUTATION_BYTES))
            elif chars and op < 0.7:
                del chars[min(at, len(chars) - 1)]
            elif chars:
                chars[min(at, len(chars) - 1)] = rng.choice(MUTATION_BYTES)
        return "".join(chars)

    def member(self) -> str:
        """A set member: mostly printable ASCII, sometimes not (bad_value)."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.15:
            return rng.choice(SPECIAL_MEMBERS)
        if roll < 0.35:
            return self.number()
        n = rng.choice((1, 2, 5, 12, 40, 254, 255, 256))
        text = "".join(chr(rng.randint(0x20, 0x7E)) for _ in range(n)).replace("|", "/")
        if rng.random() < 0.1:
            text = self.mutate(text)
        return text

    def rate(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.5:
            return rng.choice(("0.1", "0.5", "1", "1.0", ".25", "1e-6", "0.000001", "9.99e-7",
                               "1e-320", "0", "-0.0", "2", "1.0000000000000002", "1e-7"))
        if roll < 0.7:
            return repr(rng.random())
        return self.number()

    def line(self) -> bytes:
        rng = self.rng
        name = rng.choice(NAMES) if rng.random() < 0.3 else "m" + str(rng.randint(0, 50))
        type_code = rng.choice(TYPES) if rng.random() < 0.2 else rng.choice(
            ("c", "ms", "g", "h", "d", "v", "g", "s"))
        value = self.member() if type_code.startswith("s") else self.number()
        if type_code == "g" and rng.random() < 0.3 and value[:1] not in ("+", "-"):
            value = rng.choice("+-") + value  # a gauge delta
        fields = [value, type_code]
        for _ in range(rng.choice((0, 0, 0, 1, 1, 2, 3))):
            kind = rng.random()
            if kind < 0.35:
                fields.append("@" + self.rate())
            elif kind < 0.65:
                fields.append("#" + ",".join(
                    f"k{rng.randint(0, 9)}:v{rng.randint(0, 99)}" for _ in range(rng.randint(0, 4))
                ))
            elif kind < 0.85:
                ts = rng.choice((NOW, NOW - MAX_AGE, NOW - MAX_AGE - 1, NOW + 300, NOW + 301,
                                 NOW - rng.randint(0, 100)))
                fields.append("T" + rng.choice((str(ts), str(ts) + "0" * rng.randint(0, 8),
                                                "", "-1", "+1", "1.5", "9" * 20, "0" * 12 + "1")))
            elif kind < 0.92:
                fields.append(rng.choice(("c:abc", "e:x", "c", "e", "x", "", "zz")))
            else:
                fields.append(self.mutate(rng.choice(("@0.5", "#a:b", "T1700000000"))))
        text = name + ":" + "|".join(fields)
        if rng.random() < 0.05:
            text = self.mutate(text)
        if rng.random() < 0.02:
            text += "\r"
        return text.encode("utf-8", "surrogatepass")


def load_module(path: str | None) -> ModuleType:
    """collector._fastfeed, or the extension built at ``path`` (the sanitizer build)."""
    if path is None:
        from collector import _fastfeed

        return _fastfeed
    loader = importlib.machinery.ExtensionFileLoader("collector._fastfeed", path)
    spec = importlib.util.spec_from_file_location("collector._fastfeed", path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def normalized(samples: list[Any]) -> list[tuple[Any, ...]]:
    """Samples with their floats as hex: bit-for-bit comparison (-0.0 is not 0.0)."""
    return [(s[0], s[1], s[2].hex(), s[3].hex(), s[4], s[5], s[6], s[7]) for s in samples]


def compare(module: ModuleType, parser: LineParser, data: bytes, now: int = NOW) -> int:
    """Parse ``data`` with both; raise AssertionError at the first difference."""
    c_samples, c_reasons, c_tagged = module.parse_lines(
        data, now, parser.max_age, parser.max_line_length
    )
    parsed = parser.parse(data, now)
    py_reasons = [error.reason.value for error in parsed.errors]
    if (
        c_reasons != py_reasons
        or normalized(c_samples) != normalized(parsed.samples)
        or c_tagged != parsed.tags_ignored
    ):
        for line in data.split(b"\n"):  # find the line that differs, for the report
            one_c = module.parse_lines(line, now, parser.max_age, parser.max_line_length)
            one_py = parser.parse(line, now)
            if one_c[1] != [e.reason.value for e in one_py.errors] or normalized(
                one_c[0]
            ) != normalized(one_py.samples):
                raise AssertionError(
                    f"C and Python differ on {line!r}: C {one_c}, Python {one_py}"
                )
        raise AssertionError(f"C and Python differ on a datagram: {data!r}")
    return len(c_samples) + len(c_reasons)


def exercise_feed(module: ModuleType, data: bytes, known: Any,
                  held: dict[int, dict[str, list[Any]]], summaries: dict[int, dict[str, Any]],
                  gauges: dict[str, float], value_sketches: bool) -> None:
    """Run the aggregating entry point over ``data``, skipping each line it stops at
    (what Aggregator hands to Python): for the sanitizers, which watch every read.
    That its results equal the general path's is test_fastfeed_differential's job.
    ``value_sketches``: the value sketches too (only if protocol._sketch imports). Every
    reason is quiet half the time: C then counts bad lines itself (whole-line parse)."""
    quiet = (1 << len(module.REASONS)) - 2 if len(data) % 2 else 0
    pos = 0
    while pos < len(data):
        pos = module.feed(data, pos, NOW, MAX_AGE, MAX_LEN, known, held, 1000, summaries,
                          gauges, 100, value_sketches, quiet)[0]
        end = data.find(b"\n", pos)
        pos = len(data) if end < 0 else end + 1
    held_count = sum(len(table) for table in held.values())
    held_count += sum(len(table) for table in summaries.values())
    if held_count > 900:
        known.forget_buckets()  # as Aggregator.take() does
        held.clear()
        summaries.clear()
        gauges.clear()
    # the table's own changes under the sanitizers: a name forgotten, learnt again
    # (with another kind now and then), once in a while all of them
    head = f"m{len(data) % 60}".encode()
    entry = known.pop(head, None)
    if entry is not None and len(data) % 3:
        known[head] = entry if len(data) % 7 else (entry[0], "counter")
    if len(data) % 101 == 0:
        entries = [(h, known[h]) for h in (f"m{i}".encode() for i in range(60)) if h in known]
        known.clear()
        for h, e in entries:
            known[h] = e


def exercise_recv(module: ModuleType, rng: random.Random, rounds: int = 200) -> int:
    """recv_datagrams on real sockets: random datagrams (empty to the UDP maximum) read
    with random slot sizes and counts, each answer checked. Returns datagrams read."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    read = 0
    try:
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        sender.connect(receiver.getsockname())
        for _ in range(rounds):
            sizes = [rng.choice((0, 1, rng.randrange(2, 2000), rng.randrange(2000, 65_508)))
                     for _ in range(rng.randrange(1, 5))]  # < the default rmem_max
            sent = [rng.randbytes(size) for size in sizes]
            for datagram in sent:
                sender.send(datagram)
            slot = rng.randrange(1, 70_000)
            buffer = bytearray(slot * rng.randrange(1, 12) + rng.randrange(slot))
            got = b""
            count = truncated = 0
            while count < len(sent):
                data, n, cut = module.recv_datagrams(receiver, buffer, slot)
                assert n > 0, "a datagram sent on loopback was not there"
                got, count, truncated = got + data, count + n, truncated + cut
            assert got == b"".join(d + b"\n" for d in sent if len(d) <= slot)
            assert truncated == sum(len(d) > slot for d in sent)
            read += count
    finally:
        receiver.close()
        sender.close()
    return read


def run(module: ModuleType, seed: int, lines: int, batch: int = 500) -> dict[str, int]:
    """``lines`` random lines and as many random numbers (as ``n:<number>|ms`` and as
    ``n:1|c|@<number>``), in datagrams of ``batch`` lines."""
    gen = Gen(seed)
    parser = LineParser(max_line_length=MAX_LEN, max_age=MAX_AGE)
    kinds = ("counter", "value", "gauge", "set", "value")
    known = module.HeadTable()
    for i in range(50):
        known[f"m{i}".encode()] = (f"m{i}", kinds[i % len(kinds)])
    held: dict[int, dict[str, list[Any]]] = {}
    summaries: dict[int, dict[str, Any]] = {}
    gauges: dict[str, float] = {}
    value_sketches = module.has_sketches()
    checked = 0
    numbers = 0
    while checked < lines:
        chunk = b"\n".join(gen.line() for _ in range(batch))
        checked += compare(module, parser, chunk)
        exercise_feed(module, chunk, known, held, summaries, gauges, value_sketches)
        nums = [gen.number().encode("utf-8", "surrogatepass") for _ in range(batch)]
        numbers += len(nums)
        compare(module, parser, b"\n".join(b"n:" + n + b"|ms" for n in nums))
        compare(module, parser, b"\n".join(b"n:1|c|@" + n for n in nums[: batch // 5]))
    datagrams = 0
    if hasattr(module, "recv_datagrams"):  # Linux only
        datagrams = exercise_recv(module, random.Random(seed))
    return {"lines": checked, "numbers": numbers, "datagrams": datagrams, "seed": seed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--module", default=None, help="path of a built _fastfeed .so")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    module = load_module(args.module)
    started = time.monotonic()
    result = run(module, seed, args.lines)
    result["seconds"] = round(time.monotonic() - started)
    print(result, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
