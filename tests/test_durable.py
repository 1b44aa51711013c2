"""The one durable writer (store.durable): its error policy on real databases.

Transient errors are retried, then spooled; permanent ones (a row the database refuses
for good) send only the refused rows to the quarantine while everything else is
written, once. The refusal is real: a trigger on ``points_1s`` that rejects a marked
value, in SQLite and in MariaDB.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from store import Batch, PointRow, Store, StoreUnavailable, WriteResult, open_store
from store.durable import DurableWriter, is_transient, split_id
from store.spool import Quarantine, Spool
from tests.daemon import CLI
from tests.http_support import stored_points
from tests.poison import POISON, accept_poison, refuse_poison

T0 = int(time.time()) - 600

def good_rows(n: int, name: str = "good") -> list[PointRow]:
    return [(f"{name}.{i % 7}", "counter", T0 + i, 1.0, 2.0, 2.0, 2.0) for i in range(n)]


POISON_ROW: PointRow = ("bad", "counter", T0, 1.0, POISON, POISON, POISON)


async def until(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.01)


def totals(points: dict[str, list[tuple[int, float, float, float, float]]]) -> dict[str, float]:
    """name -> stored sum, for names with points (MySQL keeps the metric a refused
    batch created: names are created outside the points' transaction)."""
    return {name: sum(row[2] for row in rows) for name, rows in points.items() if rows}


def test_the_policy() -> None:
    assert is_transient(StoreUnavailable("down"))
    assert is_transient(TimeoutError())
    from store import StoreError

    assert not is_transient(StoreError("mysql: (1690, 'DOUBLE value is out of range')"))
    assert not is_transient(RuntimeError("a bug"))


async def test_transient_errors_are_retried_and_the_batch_counts_once(store: Store) -> None:
    attempts = 0

    async def flaky(batch: Batch) -> WriteResult:
        nonlocal attempts
        attempts += 1
        if attempts <= 3:
            raise StoreUnavailable("connection refused")
        return await store.write_batch(batch)

    writer = DurableWriter(flaky, "w")
    writer.start()
    writer.submit(good_rows(10))
    await until(lambda: not writer.pending)
    await writer.close(5)
    assert attempts == 4 and writer.stats.flush_failures == 3
    assert sum(totals(await stored_points(store)).values()) == 20.0


async def test_a_refused_row_is_quarantined_and_every_other_row_written(
    store: Store, database_url: str, tmp_path: Path
) -> None:
    refuse_poison(database_url)
    quarantine = Quarantine(tmp_path)
    writer = DurableWriter(store.write_batch, "w", quarantine=quarantine)
    writer.start()
    rows = good_rows(500)
    writer.submit([*rows[:250], POISON_ROW, *rows[250:]])
    writer.submit(good_rows(20, "after"))  # the next batch flows
    await until(lambda: not writer.pending)
    health = await writer.health()
    await writer.close(5)
    stored = totals(await stored_points(store))
    assert "bad" not in stored
    assert sum(v for k, v in stored.items() if k.startswith("good")) == 1000.0
    assert sum(v for k, v in stored.items() if k.startswith("after")) == 40.0
    assert (writer.stats.quarantined_batches, writer.stats.quarantined_rows) == (1, 1)
    assert health["status"] == "degraded" and health["quarantine_batches"] == 1
    held = Quarantine(tmp_path)
    [entry] = await held.list()
    assert entry.rows == 1 and "poison row refused" in entry.error
    batch = await held.get(entry.id)
    assert batch is not None and batch.points == [POISON_ROW]
    await held.close()


async def test_a_refused_batch_in_the_spool_does_not_hold_up_the_ones_behind_it(
    store: Store, database_url: str, tmp_path: Path
) -> None:
    """The hole of the hardening issue: a poison batch first in the spool, retried
    forever, with every later batch queued behind it, across restarts."""
    refuse_poison(database_url)
    spool = await Spool.open(tmp_path, "collector")
    await spool.put_many([Batch("old", 1, [POISON_ROW, *good_rows(3, "old")]),
                          Batch("old", 2, good_rows(5, "older"))])
    writer = DurableWriter(store.write_batch, "new", spool=spool,
                           quarantine=Quarantine(tmp_path))
    writer.start()
    writer.submit(good_rows(4, "new"))
    await until(lambda: not writer.pending and spool.batches == 0)
    await writer.close(5)
    await spool.close()
    stored = totals(await stored_points(store))
    assert stored == {"old.0": 2.0, "old.1": 2.0, "old.2": 2.0,
                      **{f"older.{i}": 2.0 for i in range(5)},
                      **{f"new.{i}": 2.0 for i in range(4)}}
    assert writer.stats.quarantined_rows == 1


async def test_a_split_interrupted_by_an_outage_applies_each_part_once(
    store: Store, database_url: str, tmp_path: Path
) -> None:
    """The parts of a split batch have ids derived from the batch: the database going
    away in the middle of a split, and the whole batch written again later, must not
    count the parts written the first time twice."""
    refuse_poison(database_url)
    part_writes = 0

    async def outage_mid_split(batch: Batch) -> WriteResult:
        nonlocal part_writes
        if batch.writer_id.startswith("split:"):
            part_writes += 1
            if part_writes == 3:
                raise StoreUnavailable("connection lost")
        return await store.write_batch(batch)

    writer = DurableWriter(outage_mid_split, "w", quarantine=Quarantine(tmp_path))
    writer.start()
    rows = good_rows(64)
    writer.submit([*rows[:40], POISON_ROW, *rows[40:]])
    await until(lambda: not writer.pending)
    await writer.close(5)
    assert writer.stats.flush_failures == 1  # the outage, then the batch again
    assert writer.stats.flush_duplicates >= 1  # a part written before, not again
    assert sum(totals(await stored_points(store)).values()) == 128.0
    assert split_id(Batch("w", 1, [])) == split_id(Batch("w", 1, rows))


async def test_a_waiter_gets_its_outcome_with_what_was_quarantined(
    store: Store, database_url: str, tmp_path: Path
) -> None:
    refuse_poison(database_url)
    writer = DurableWriter(store.write_batch, "w", quarantine=Quarantine(tmp_path))
    writer.start()
    outcome = await writer.commit([POISON_ROW, *good_rows(3)])
    await writer.close(5)
    assert outcome.refused == frozenset({("bad", T0)})
    assert outcome.result.rows == 3 and not outcome.spooled


async def test_without_a_quarantine_refused_rows_are_counted_lost(store: Store,
                                                                  database_url: str) -> None:
    refuse_poison(database_url)
    writer = DurableWriter(store.write_batch, "w")
    writer.start()
    writer.submit([POISON_ROW, *good_rows(3)])
    await until(lambda: not writer.pending)
    await writer.close(5)
    assert writer.stats.rows_lost == 1
    assert sum(totals(await stored_points(store)).values()) == 6.0


async def test_the_cli_lists_replays_and_discards_the_quarantine(
    database_url: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    store = open_store(database_url)
    await store.migrate()
    refuse_poison(database_url)
    writer = DurableWriter(store.write_batch, "w", quarantine=Quarantine(state))
    writer.start()
    writer.submit([POISON_ROW, *good_rows(2)])
    writer.submit([("bad2", "counter", T0, 1.0, POISON, POISON, POISON)])
    await until(lambda: not writer.pending)
    await writer.close(5)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, "quarantine", *args, "--database-url", database_url, "--state-dir",
             str(state)], capture_output=True, text=True, timeout=60, check=False)

    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    assert "poison row refused" in listed.stdout
    ids = [line.split()[0] for line in listed.stdout.splitlines()[1:]]
    assert len(ids) == 2
    refused = cli("replay", "--all")  # the trigger is still there
    assert refused.returncode == 1 and "refused again" in refused.stderr
    accept_poison(database_url)
    replayed = cli("replay", ids[0])
    assert replayed.returncode == 0, replayed.stderr
    assert "1 row(s) written" in replayed.stdout
    assert cli("replay", ids[0]).returncode == 0  # gone: nothing to do
    discarded = cli("discard", "--all")
    assert discarded.returncode == 0 and "discarded 1 batch(es)" in discarded.stdout
    assert "empty" in cli("list").stderr
    assert cli("replay").returncode == 2  # neither IDs nor --all
    stored = totals(await stored_points(store))
    await store.close()
    assert stored["bad"] == POISON and "bad2" not in stored


@pytest.mark.slow
async def test_sigkill_while_draining_the_spool_applies_every_batch_once(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A writer killed at a random moment of its drain (mid-write, between the COMMIT
    and the spool's removal): a new one drains the rest, and every batch counts once."""
    store = open_store(sqlite_url)
    await store.migrate()
    spool = await Spool.open(tmp_path, "t")
    batches = [Batch("dead", seq, good_rows(200, f"k{seq}")) for seq in range(1, 41)]
    await spool.put_many(batches)
    await spool.close()
    script = f"""
import asyncio, sys
from store import open_store
from store.durable import DurableWriter
from store.spool import Spool

async def main():
    store = open_store({sqlite_url!r})
    spool = await Spool.open_existing({str(tmp_path)!r}, "t")
    writer = DurableWriter(store.write_batch, "drainer", spool=spool)
    writer.start()
    while True:
        await asyncio.sleep(0.001)
        if writer.stats.spool_replayed_batches >= 7:
            print("replaying", flush=True)

asyncio.run(main())
"""
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "replaying"
    process.kill()
    process.wait(10)
    process.stdout.close()
    spool = await Spool.open_existing(tmp_path, "t")
    assert spool is not None and 0 < spool.batches < 40
    writer = DurableWriter(store.write_batch, "again", spool=spool)
    writer.start()
    await until(lambda: spool.batches == 0)
    await writer.close(5)
    await spool.close()
    assert sum(totals(await stored_points(store)).values()) == 40 * 400.0
    await store.close()
