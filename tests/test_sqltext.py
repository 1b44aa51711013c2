"""store/_sqltext.c, the C text of MySQL's point upserts, against its reference
store.mysql.python_upsert_statement: every double reads back as itself, bit for bit.

MariaDB's own reading of the text is held by tests/test_store.py's awkward doubles
(the flush writes through the C text whenever it is built)."""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from store import mysql

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
