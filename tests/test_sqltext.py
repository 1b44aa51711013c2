"""store/_sqltext.c, the C text of MySQL's point upserts, against its reference
store.mysql.python_upsert_statement: every double reads back as itself, bit for bit.

MariaDB's own reading of the text is held by tests/test_store.py's awkward doubles
(the flush writes through the C text whenever it is built)."""

from __future__ import annotations

import math
import os
import re
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from store import mysql
from tests.test_fastfeed_differential import ROOT, build_sanitized, sanitizer_env

IdRow = tuple[int, int, float, float, float, float]
TAIL = mysql._UPSERT_TAIL


Statement = Callable[[str, list[IdRow], str], str]


@pytest.fixture(scope="module")
def statement() -> Statement:
    """The extension's statement(); without it the test is skipped, or fails in CI
    (where GF_TEST_REQUIRE_SERVICES=1: the C text is what flushes send)."""
    if mysql._c_statement is None:
        message = "store._sqltext is not built (optional C accelerator)"
        if os.environ.get("GF_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return mysql._c_statement


def read_back(text: str) -> list[tuple[int, int, list[float]]]:
    """The rows of an upsert's text, each double read by Python's float (correctly
    rounded, like MariaDB's reading)."""
    assert text.startswith("H ") and text.endswith(TAIL)
    rows = []
    for values in re.findall(r"\(([^()]*)\)", text[2 : -len(TAIL)]):
        metric_id, ts, *doubles = values.split(",")
        rows.append((int(metric_id), int(ts), [float(d) for d in doubles]))
    return rows


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


finite = st.floats(allow_nan=False, allow_infinity=False)
decimal_like = st.builds(lambda n, d: n / 10**d, st.integers(-(10**12), 10**12),
                         st.integers(0, 12))
value = st.one_of(finite, decimal_like, st.integers(-(2**60), 2**60).map(float))
rows = st.lists(st.tuples(st.integers(0, 2**63 - 1), st.integers(-(2**62), 2**62),
                          value, value, value, value), max_size=20)
AWKWARD = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
           2.0**53, 2.0**53 - 1, 2.0**52 + 0.5, -(2.0**53) + 2, 0.1 + 0.2, 1 / 3, 0.05,
           1e-9, 1.5e-10, 14.391172, 123456789.123456, 999999999.999999999, -0.001]


@given(rows)
@example([(1, 2, *AWKWARD[i : i + 4]) for i in range(0, len(AWKWARD) - 3)])
@settings(max_examples=2000, deadline=None)
def test_every_double_reads_back_as_itself(statement: Statement, rows: list[IdRow]) -> None:
    c_text = statement("H ", rows, TAIL)
    python_text = mysql.python_upsert_statement("H ", rows)
    for text in (c_text, python_text):
        got = read_back(text)
        assert [(m, ts) for m, ts, _ in got] == [(r[0], r[1]) for r in rows]
        assert [[bits(x) for x in doubles] for _m, _t, doubles in got] == [
            [bits(x) for x in row[2:]] for row in rows]


def test_few_decimals_are_written_as_such(statement: Statement) -> None:
    text = statement("H ", [(7, 60, 3.0, 14.391172, 0.05, -0.001)], TAIL)
    assert text == "H (7,60,3,14.391172,0.05,-0.001)" + TAIL
    text = statement("H ", [(7, 60, -0.0, 1 / 3, 2.0**53, 1e-9)], TAIL)
    assert text == "H (7,60,-0,0.33333333333333331,9007199254740992,0.000000001)" + TAIL
    assert statement("H ", [], TAIL) == "H " + TAIL


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_value_that_is_not_finite_is_refused(statement: Statement, bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        statement("H ", [(1, 2, 1.0, bad, 1.0, 1.0)], TAIL)


@pytest.mark.parametrize("row", [(1, 2, 1.0, 1.0, 1.0), [1, 2, 1.0, 1.0, 1.0, 1.0],
                                 (1.5, 2, 1.0, 1.0, 1.0, 1.0), (1, 2, "1", 1.0, 1.0, 1.0)])
def test_a_row_of_another_shape_is_refused(statement: Statement, row: object) -> None:
    with pytest.raises(TypeError):
        statement("H ", [row], TAIL)
    with pytest.raises(OverflowError):
        statement("H ", [(2**64, 2, 1.0, 1.0, 1.0, 1.0)], TAIL)


# The C text under AddressSanitizer and UndefinedBehaviorSanitizer: random rows of the
# awkward doubles, each read back, and the refusals (their error paths free what the
# copy took).
SANITIZED = r"""
import importlib.util, math, random, struct, sys
spec = importlib.util.spec_from_file_location("store._sqltext", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
rng = random.Random(15)
awkward = [0.0, -0.0, 5e-324, 1.7976931348623157e308, 2.0**53, 2.0**52 + 0.5, 0.05,
           14.391172, -0.001, 1e-9, 1 / 3]
def value():
    pick = rng.random()
    if pick < 0.3:
        return rng.choice(awkward) * rng.choice((1, -1))
    if pick < 0.6:
        return rng.randrange(-10**12, 10**12) / 10 ** rng.randrange(0, 12)
    return struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
checked = 0
for _ in range(3000):
    rows = []
    while len(rows) < rng.randrange(0, 40):
        row = (rng.getrandbits(63), rng.randrange(-2**62, 2**62),
               *(value() for _ in range(4)))
        if all(math.isfinite(x) for x in row[2:]):
            rows.append(row)
    text = module.statement("H ", rows, " T")
    for row, got in zip(rows, text[2:-2].strip("()").split("),("), strict=False):
        if rows:
            parts = got.split(",")
            assert int(parts[0]) == row[0] and int(parts[1]) == row[1], (row, got)
            assert [struct.pack("<d", float(p)) for p in parts[2:]] == [
                struct.pack("<d", x) for x in row[2:]], (row, got)
            checked += 1
for bad in ([(1, 2, 1.0, 1.0, 1.0, math.nan)], [(1, 2, 1.0)], [(1, 2, 1.0, 1.0, 1.0, "x")],
            [(2**64, 1, 1.0, 1.0, 1.0, 1.0)], [(1, 2, 1.0, 1.0, 1.0, 1.0), None]):
    try:
        module.statement("H ", bad, " T")
    except (ValueError, TypeError, OverflowError):
        pass
    else:
        raise AssertionError(bad)
print("checked", checked)
"""


def test_the_c_text_under_asan_and_ubsan(tmp_path: Path) -> None:
    if os.environ.get("GF_TEST_REQUIRE_SERVICES") != "1" and subprocess.run(
            ["which", "gcc"], capture_output=True).returncode:
        pytest.skip("gcc not found")
    module = build_sanitized(ROOT / "store" / "_sqltext.c", tmp_path)
    result = subprocess.run([sys.executable, "-c", SANITIZED, str(module)],
                            env=sanitizer_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-6000:]
    assert int(result.stdout.split()[-1]) > 10_000  # rows read back
    assert "ERROR: AddressSanitizer" not in result.stderr
    assert "runtime error" not in result.stderr
