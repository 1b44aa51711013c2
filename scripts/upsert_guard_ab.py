"""A/B, side by side in one run: MariaDB's additive upsert with and without the overflow
guard of ``store.rollups.upsert_assignments``, on the duplicate-key path (every row an
update), 20,000 rows in 1,000-row statements, six alternating rounds each.

    .venv/bin/python scripts/upsert_guard_ab.py [mysql://root@127.0.0.1:3306/]

Creates and drops the database gf_bench_guard.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from store.rollups import upsert_assignments

UNGUARDED = (" ON DUPLICATE KEY UPDATE cnt = cnt + VALUES(cnt), `sum` = `sum` + VALUES(`sum`), "
             "mn = LEAST(mn, VALUES(mn)), mx = GREATEST(mx, VALUES(mx))")
GUARDED = " ON DUPLICATE KEY UPDATE " + upsert_assignments("VALUES({})", "LEAST", "GREATEST")
ROWS = 20_000
CHUNK = 1_000


def main() -> None:
    url = urlsplit(sys.argv[1] if len(sys.argv) > 1 else "mysql://root@127.0.0.1:3306/")
    conn = pymysql.connect(host=url.hostname or "127.0.0.1", port=url.port or 3306,
                           user=url.username or "root", password=url.password or "")
    cursor = conn.cursor()
    cursor.execute("DROP DATABASE IF EXISTS gf_bench_guard")
    cursor.execute("CREATE DATABASE gf_bench_guard")
    cursor.execute("USE gf_bench_guard")
    cursor.execute("CREATE TABLE p (metric_id BIGINT NOT NULL, ts BIGINT NOT NULL, "
                   "cnt DOUBLE NOT NULL, `sum` DOUBLE NOT NULL, mn DOUBLE NOT NULL, "
                   "mx DOUBLE NOT NULL, PRIMARY KEY (metric_id, ts))")
    rng = random.Random(1)
    rows = [(m, 1000, 1.0, rng.random(), 0.1, 0.9) for m in range(ROWS)]

    def rate(tail: str) -> float:
        started = time.perf_counter()
        for start in range(0, ROWS, CHUNK):
            values = ",".join(f"({r[0]},{r[1]},{r[2]!r},{r[3]!r},{r[4]!r},{r[5]!r})"
                              for r in rows[start : start + CHUNK])
            cursor.execute("INSERT INTO p VALUES " + values + tail)
        conn.commit()
        return ROWS / (time.perf_counter() - started)

    try:
        rate(UNGUARDED)  # the inserts: every later round is updates only
        rates: dict[str, list[float]] = {"unguarded": [], "guarded": []}
        for round_no in range(6):
            order = [("unguarded", UNGUARDED), ("guarded", GUARDED)]
            for name, tail in order if round_no % 2 else reversed(order):
                rates[name].append(rate(tail))
        for name, got in rates.items():
            print(f"{name:>9}: median {statistics.median(got):,.0f} rows/s "
                  f"(rounds: {', '.join(f'{x:,.0f}' for x in got)})")
    finally:
        cursor.execute("DROP DATABASE gf_bench_guard")
        conn.close()


if __name__ == "__main__":
    main()
