"""The C line parser (collector/_fastfeed.c) accepts exactly what the Python parser
(protocol.lines, the reference) accepts, with bit-identical values, and rejects exactly
what it rejects, with the same reason: the table of test_lines, grammar-aware
hypothesis (valid lines with one field mutated), a differential fuzz (slow: 10M+
inputs), and the same fuzz against an ASan/UBSan build of the extension (slow).

With GF_TEST_REQUIRE_SERVICES=1 (CI) a missing extension fails these tests instead of
skipping them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from collector import aggregator
from collector.aggregator import Aggregator, Sketches
from collector.config import CollectorConfig
from collector.flusher import sketches_to_rows
from collector.stats import CollectorStats
from protocol import buckets, lines, names, tokens
from protocol.lines import LineParser
from tests import fastfeed_diff
from tests.fastfeed_diff import NOW, SPECIAL_NUMBERS, compare
from tests.test_lines import INVALID, VALID
from tests.test_lines import NOW as TABLE_NOW
from tests.test_protocol_properties import formatted

ROOT = Path(__file__).resolve().parent.parent
REQUIRE = os.environ.get("GF_TEST_REQUIRE_SERVICES") == "1"


@pytest.fixture(scope="module")
def fastfeed() -> ModuleType:
    try:
        from collector import _fastfeed
    except ImportError as exc:
        message = f"collector._fastfeed is not built: {exc}"
        if REQUIRE:
            pytest.fail(message + " (GF_TEST_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    return _fastfeed


def test_constants_are_the_python_ones(fastfeed: ModuleType) -> None:
    assert fastfeed.RATE_FLOOR == buckets.RATE_FLOOR
    assert fastfeed.FUTURE_TOLERANCE == lines.FUTURE_TOLERANCE
    assert fastfeed.MAX_NAME_LENGTH == names.MAX_NAME_LENGTH
    assert fastfeed.TOKEN_LENGTH == tokens.TOKEN_LENGTH
    assert fastfeed.MAX_MEMBER_LENGTH == lines.MAX_MEMBER_LENGTH
    # every reason C can count is one of Python's (and each once)
    assert fastfeed.REASONS[0] == ""
    reasons = [lines.Reason(name) for name in fastfeed.REASONS[1:]]
    assert len(set(reasons)) == len(reasons) > 0


@pytest.mark.parametrize("case", VALID + INVALID, ids=lambda case: repr(case[0])[:60])
def test_the_line_table(fastfeed: ModuleType, case: tuple[bytes, object]) -> None:
    compare(fastfeed, LineParser(), case[0], TABLE_NOW)


# -- grammar-aware: a valid line with one field replaced ---------------------------

mutations = st.one_of(
    st.binary(max_size=8),
    st.sampled_from([n.encode() for n in SPECIAL_NUMBERS]),
    st.text("0123456789.eE+-_x:|@#T \u0663", max_size=12).map(str.encode),
    st.sampled_from([b"", b"@", b"#", b"T", b"@0", b"@1e-320", b"T1", b"c:", b"gf_", b"\r"]),
)


@st.composite
def one_field_mutated(draw: st.DrawFn) -> bytes:
    line, _sample, _tagged = draw(formatted())
    head, _colon, rest = line.partition(b":")
    fields = [head, *rest.split(b"|")]
    at = draw(st.integers(0, len(fields) - 1))
    replacement = draw(mutations)
    if draw(st.booleans()):  # keep the field's marker (@, #, T) or part of it
        replacement = fields[at][: draw(st.integers(0, len(fields[at])))] + replacement
    fields[at] = replacement
    return fields[0] + b":" + b"|".join(fields[1:])


@settings(max_examples=1500, deadline=None)
@given(datagram=st.lists(one_field_mutated() | formatted().map(lambda c: c[0]), min_size=1,
                         max_size=8).map(b"\n".join))
@example(datagram=b"a:0x10|c")
@example(datagram=b"a:1|c|@0x1p-3")
@example(datagram=b"a:1_0|ms")
@example(datagram="a:\u0661|ms".encode())
@example(datagram=b"a:1e-99999|ms\na:-0|c|@1e-6")
def test_one_field_mutated(fastfeed: ModuleType, datagram: bytes) -> None:
    compare(fastfeed, LineParser(), datagram)


def test_a_short_differential_fuzz(fastfeed: ModuleType) -> None:
    result = fastfeed_diff.run(fastfeed, seed=20261201, lines=20_000)
    assert result["lines"] >= 20_000


@pytest.mark.slow
def test_long_differential_fuzz(fastfeed: ModuleType) -> None:
    """5M random lines and 5M random numbers (plus 1M as rates), bit for bit: about
    two minutes of one core."""
    seed = int.from_bytes(os.urandom(4), "big")
    result = fastfeed_diff.run(fastfeed, seed=seed, lines=5_000_000)
    print(f"differential fuzz: {result}")
    assert result["lines"] + result["numbers"] >= 10_000_000


# -- the feed path: what C aggregates equals the general path --------------------


@pytest.fixture(scope="module", params=[True, False], ids=["sketches", "no-sketches"])
def sketches_on(request: pytest.FixtureRequest, fastfeed: ModuleType) -> bool:
    """With sketches, the C pass needs protocol._sketch's capsule: without it the
    aggregator does not use C (test_aggregator_sketches holds that fallback)."""
    if request.param and not fastfeed.has_sketches():
        message = "protocol._sketch (the sketch capsule) is not built"
        if REQUIRE:
            pytest.fail(message + " (GF_TEST_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    return bool(request.param)


@settings(max_examples=300, deadline=None)
@given(datagrams=st.lists(
    st.lists(one_field_mutated() | formatted().map(lambda c: c[0]), min_size=1, max_size=8)
    .map(b"\n".join), min_size=1, max_size=6))
def test_feed_equals_the_general_path_on_mutated_lines(
    fastfeed: ModuleType, sketches_on: bool, datagrams: list[bytes]
) -> None:
    assert aggregator._feed_fast is fastfeed.feed
    config = CollectorConfig(max_metrics=50, max_pending_buckets=40, sketches=sketches_on)
    fast = Aggregator(config, CollectorStats())
    slow = Aggregator(config, CollectorStats())
    assert fast.uses_c
    for data in datagrams * 2:  # the second time, the names are known: C aggregates
        fast.feed(data, NOW)
        slow._feed_parsed(data, NOW)
    assert exact(fast.buckets) == exact(slow.buckets)
    assert encoded(fast.sketches) == encoded(slow.sketches)
    assert fast.gauges == slow.gauges
    assert fast.pending_buckets == slow.pending_buckets
    fs, ss = fast.stats, slow.stats
    assert (fs.lines, fs.samples, fs.tags_ignored, fs.drops) == (
        ss.lines, ss.samples, ss.tags_ignored, ss.drops)


def exact(held: dict[int, dict[str, list[object]]]) -> object:
    """Buckets with their floats as hex: bit for bit."""
    return {ts: {name: [*(float(x).hex() for x in b[:4]), b[4]]  # type: ignore[arg-type]
                 for name, b in table.items()} for ts, table in held.items()}


def encoded(sketches: Sketches) -> list[tuple[str, str, int, bytes]]:
    """The summaries as the flusher writes them: the bytes, in a fixed order."""
    return sorted(sketches_to_rows(sketches))


# -- AddressSanitizer / UndefinedBehaviorSanitizer ---------------------------------


def build_sanitized(source: Path, out: Path) -> Path:
    """The extension of ``source`` built with -fsanitize=address,undefined into ``out``
    (tests/test_sqltext.py builds store/_sqltext.c so too)."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    target = out / f"{source.stem}{suffix}"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-g", "-O1", "-fno-omit-frame-pointer",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         f"-I{sysconfig.get_paths()['include']}", str(source), "-o", str(target)],
        check=True, capture_output=True, text=True,
    )
    return target


def sanitizer_env() -> dict[str, str]:
    """The environment of a Python that loads a sanitized extension."""
    libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], check=True,
                             capture_output=True, text=True).stdout.strip()
    return {
        **os.environ,
        "LD_PRELOAD": libasan,
        "PYTHONMALLOC": "malloc",  # every object its own allocation: ASan sees overreads
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=99",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=98",
    }


def run_sanitized(module: Path, lines_count: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.fastfeed_diff", "--lines", str(lines_count),
         "--module", str(module)],
        cwd=ROOT, env=sanitizer_env(), capture_output=True, text=True, timeout=1800,
    )


@pytest.mark.slow
def test_differential_corpus_under_asan_and_ubsan(tmp_path: Path) -> None:
    """Checked once by hand that it catches a bug: with a one-byte overread injected
    into is_number, this run fails with an ASan heap-buffer-overflow report."""
    if not REQUIRE and subprocess.run(["which", "gcc"], capture_output=True).returncode:
        pytest.skip("gcc not found")
    module = build_sanitized(ROOT / "collector" / "_fastfeed.c", tmp_path)
    result = run_sanitized(module, 300_000)
    assert result.returncode == 0, result.stdout + result.stderr[-6000:]
    assert "'lines': " in result.stdout
    assert "'datagrams': 0," not in result.stdout  # recv_datagrams ran too (Linux)
    assert "ERROR: AddressSanitizer" not in result.stderr
    assert "runtime error" not in result.stderr


# -- the name cache --------------------------------------------------------------------

# Heads around the 72 bytes an entry holds inline: equal up to there, different after
HEADS = [b"", b"a", b"b", b"a.b", b"x" * 71, b"x" * 72, b"x" * 73, b"x" * 72 + b"y",
         b"x" * 200, b"x" * 199 + b"y"]
head = st.one_of(st.sampled_from(HEADS), st.binary(max_size=90))
entry = st.tuples(st.sampled_from(["m", "n", "x" * 80]),
                  st.sampled_from(["counter", "value", "gauge", "set", "other"]))
table_ops = st.lists(st.one_of(
    st.tuples(st.just("set"), head, entry), st.tuples(st.just("pop"), head),
    st.tuples(st.just("del"), head), st.tuples(st.just("get"), head),
    st.tuples(st.just("fill"), st.integers(0, 300)), st.tuples(st.just("clear")),
    st.tuples(st.just("forget")),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(table_ops)
def test_the_head_table_is_a_dict_of_heads(fastfeed: ModuleType, ops: list[tuple]) -> None:
    """HeadTable (the C pass's name cache) answers as a dict would, through the inserts
    that rebuild it, pops that leave holes, heads longer than the inline part, clears."""
    table, model = fastfeed.HeadTable(), {}
    for op, *args in ops:
        if op == "set":
            table[args[0]] = model[args[0]] = args[1]
        elif op == "pop":
            assert table.pop(args[0], None) == model.pop(args[0], None)
        elif op == "del":
            if args[0] in model:
                del table[args[0]], model[args[0]]
            else:
                with pytest.raises(KeyError):
                    del table[args[0]]
        elif op == "get":
            assert table.get(args[0]) == model.get(args[0])
        elif op == "fill":
            for i in range(args[0]):
                table[b"fill.%d" % i] = model[b"fill.%d" % i] = ("f", "counter")
        elif op == "clear":
            table.clear()
            model.clear()
        else:
            table.forget_buckets()
        assert len(table) == len(model)
    for key in {*model, *HEADS}:
        assert (key in table) == (key in model)
        assert table.get(key) == model.get(key)
    with pytest.raises(TypeError):
        table["str"] = ("m", "counter")
    with pytest.raises(TypeError):
        table[b"m"] = ("m",)
