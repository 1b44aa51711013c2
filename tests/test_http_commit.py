"""Group commit: concurrent ingest requests share batches, and a 200 means committed,
or spooled (fsync'd) while the database is down, and replayed exactly once later."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from protocol.sketch import Sketch
from query.commit import GroupCommitter
from query.state import COMMITTER
from store import Batch, Store, StoreError, StoreUnavailable, WriteResult, open_store
from store.durable import BatchWrite, DurableWriter
from store.spool import Spool
from tests.http_support import assert_error, auth, config, new_key, serve, stored_points

DOWN_URL = "mysql://root@127.0.0.1:1/x"  # nothing listens on port 1: connection refused


@contextlib.asynccontextmanager
async def committing(
    write: BatchWrite, writer_id: str = "test", *, window: float, max_rows: int = 50_000,
    **writer_options: Any,
) -> AsyncIterator[GroupCommitter]:
    """A group committer on a durable writer of its own (as ``serve`` has), both closed
    at the end."""
    writer = DurableWriter(write, writer_id, spool_after=0.0, **writer_options)
    writer.start()
    committer = GroupCommitter(writer, window=window, max_rows=max_rows)
    try:
        yield committer
    finally:
        await committer.close()
        await writer.close(5)


async def draining(spool: Spool, write: BatchWrite, timeout: float = 10) -> DurableWriter:
    """A writer that drains ``spool`` (as one does at start-up), closed once drained."""
    writer = DurableWriter(write, "drainer", spool=spool)
    writer.start()
    await _drained(spool, timeout)
    await writer.close(5)
    return writer


async def test_concurrent_posts_share_few_commits(store: Store) -> None:
    token = await new_key(store)
    async with serve(store, config(commit_window=0.05)) as api:
        ts = int(time.time()) - 60

        async def post(i: int) -> int:
            response = await api.post(
                "/api/metrics/value", json={"metric": "grouped", "value": i, "timestamp": ts},
                headers=auth(token))
            return int(response.status)

        statuses = await asyncio.gather(*(post(i) for i in range(50)))
        assert statuses == [200] * 50
        stats = api.server.app[COMMITTER].stats
        assert stats.requests == 50
        assert stats.batches <= 10, stats  # typically 1-3
        text = await (await api.get("/metrics")).text()
        assert f"gf_http_commit_batches_total {float(stats.batches)}" in text
        assert "gf_http_commit_requests_total 50.0" in text
    # merged per (metric, second) before writing: one row with every sample in it
    assert await stored_points(store) == {"grouped": [(ts, 50, sum(range(50)), 0, 49)]}


async def test_a_group_merges_its_requests_sketches_of_one_minute(store: Store) -> None:
    batches: list[Batch] = []

    async def write(batch: Batch) -> WriteResult:
        batches.append(batch)
        return await store.write_batch(batch)

    def sketch(*values: float) -> bytes:
        s = Sketch()
        for v in values:
            s.add(v)
        return s.to_bytes()

    async with committing(write, window=0.05) as committer:
        await asyncio.gather(*(
            committer.commit([("t", "value", 120 + i, 1, v, v, v)],
                             [("t", "value", 120, sketch(v))])
            for i, v in enumerate([1.0, 2.0, 3.0, 400.0])))
    [batch] = batches
    [(name, kind, minute, data)] = batch.sketches  # one per (name, minute)
    merged = Sketch.from_bytes(data)
    assert (name, kind, minute, merged.count) == ("t", "value", 120, 4.0)
    assert merged.quantile(1.0) == pytest.approx(400.0, rel=0.01)


async def test_conflicts_are_answered_to_the_request_they_concern(store: Store) -> None:
    await store.write_batch(Batch("setup", 1, [("is.value", "value", 100, 1, 1, 1, 1)]))
    async with committing(store.write_batch, window=0.05) as committer:
        good = committer.commit([("is.counter", "counter", 100, 1, 2, 2, 2)])
        bad = committer.commit([("is.value", "counter", 100, 1, 5, 5, 5),
                                ("other", "counter", 100, 1, 1, 1, 1)])
        assert await asyncio.gather(good, bad) == [{}, {"is.value": "value"}]
        assert committer.stats.batches == 1


async def test_an_ambiguous_failure_is_retried_with_the_same_sequence(store: Store) -> None:
    """The commit succeeds but the answer is lost: the retry of the same (writer, seq)
    is recognized by the store and the points count once."""
    seen: list[tuple[str, int]] = []

    async def lose_first_answer(batch: Batch) -> WriteResult:
        seen.append((batch.writer_id, batch.seq))
        result = await store.write_batch(batch)
        if len(seen) == 1:
            raise StoreUnavailable("connection lost after COMMIT")
        return result

    async with committing(lose_first_answer, window=0.001) as committer:
        assert await committer.commit([("once", "counter", 100, 1, 1, 1, 1)]) == {}
        assert seen == [("test", 1), ("test", 1)]
        assert committer.writer.stats.flush_failures == 1
        assert committer.writer.stats.flush_duplicates == 1
    assert await stored_points(store) == {"once": [(100, 1, 1, 1, 1)]}


async def test_a_failed_group_fails_every_request_in_it(store: Store) -> None:
    async def down(batch: Batch) -> WriteResult:
        raise StoreUnavailable("database unreachable")

    async with committing(down, window=0.01) as committer:
        results = await asyncio.gather(
            *(committer.commit([("x", "counter", 100, 1, 1, 1, 1)]) for _ in range(5)),
            return_exceptions=True,
        )
        assert all(isinstance(r, StoreError) for r in results), results
        assert committer.stats.failures == 1
        assert committer.writer.pending_rows == 0  # given up: not written later


async def test_full_groups_close_early_and_commit_in_order(store: Store) -> None:
    order: list[int] = []

    async def write(batch: Batch) -> WriteResult:
        order.append(batch.seq)
        return await store.write_batch(batch)

    async with committing(write, window=10.0, max_rows=3) as committer:
        rows = [[(f"m{i}", "counter", 100 + j, 1, 1, 1, 1) for j in range(3)] for i in range(4)]
        # window 10 s, but each request fills a group: nothing waits for the window
        await asyncio.wait_for(asyncio.gather(*(committer.commit(r) for r in rows)), 5)
        assert order == [1, 2, 3, 4]


async def test_the_window_runs_from_the_first_request_not_from_when_the_loop_gets_to_it(
    store: Store,
) -> None:
    """Under load the loop reaches a new group's task only after the requests already
    queued: that time counts toward the window, or the CPU idles while the group waits."""
    started: list[float] = []

    async def write(batch: Batch) -> WriteResult:
        started.append(time.monotonic())
        return await store.write_batch(batch)

    async with committing(write, window=0.5) as committer:
        # Two requests in one group: the next group waits for company.
        await asyncio.gather(*(committer.commit([(f"w{i}", "counter", 100, 1, 1, 1, 1)])
                               for i in range(2)))
        waiting = asyncio.ensure_future(
            committer.commit([("late", "counter", 100, 1, 1, 1, 1)]))
        await asyncio.sleep(0)  # the request joins and opens a group
        time.sleep(0.6)  # the loop busy with other requests for longer than the window
        unblocked = time.monotonic()
        assert await asyncio.wait_for(waiting, 5) == {}
        assert started[-1] - unblocked < 0.25  # not another 0.5 s window on top


async def test_close_commits_what_waits_and_refuses_the_rest(store: Store) -> None:
    async with committing(store.write_batch, window=10.0) as committer:
        waiting = asyncio.ensure_future(
            committer.commit([("late", "counter", 100, 1, 1, 1, 1)]))
        await asyncio.sleep(0)  # one turn of the loop: the request joins a group
        assert committer.pending == 1
        await asyncio.wait_for(committer.close(), 5)  # does not wait out the 10 s window
        assert await waiting == {}
        assert await stored_points(store) == {"late": [(100, 1, 1, 1, 1)]}
        with pytest.raises(StoreUnavailable):
            await committer.commit([("later", "counter", 100, 1, 1, 1, 1)])


# -- with a spool: the database down is not the end of an acknowledged point -----------


@pytest.fixture
async def down() -> AsyncIterator[Store]:
    """A real MySQL store whose server is unreachable."""
    opened = open_store(DOWN_URL)
    try:
        yield opened
    finally:
        await opened.close()


async def _drained(spool: Spool, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while spool.batches:
        assert time.monotonic() < deadline, f"{spool.batches} batch(es) never drained"
        await asyncio.sleep(0.02)


async def test_store_down_answers_200_once_spooled_and_the_drain_writes_it_once(
    sqlite_store: Store, down: Store, tmp_path: Path
) -> None:
    token = await new_key(sqlite_store)
    spool = await Spool.open(tmp_path / "state", "http")
    ts = int(time.time()) - 30
    try:
        async with serve(sqlite_store, config(), write=down.write_batch, spool=spool) as api:
            started = time.monotonic()
            response = await api.post(
                "/api/metrics/batch", headers=auth(token), json={"points": [
                    {"metric": "spooled.c", "type": "counter", "value": 3, "timestamp": ts},
                    {"metric": "spooled.c", "type": "counter", "value": 4, "timestamp": ts},
                    {"metric": "spooled.v", "type": "value", "value": 7, "timestamp": ts},
                ]})
            assert response.status == 200, await response.text()
            assert await response.json() == {"accepted": 3}
            assert time.monotonic() - started < 0.5  # no 0.75 s of retries first
            committer = api.server.app[COMMITTER]
            assert (committer.stats.spooled, committer.stats.batches) == (1, 0)
            assert committer.writer.stats.flush_failures == 1  # one attempt, then spooled
            text = await (await api.get("/metrics")).text()
            assert "gf_http_commit_spooled_total 1.0" in text
            assert "gf_http_commit_spooled_rows_total 2.0" in text
            assert "gf_http_spool_replayed_rows_total 0.0" in text
            assert "gf_http_spool_pending 1.0" in text
        # acknowledged: on disk in the spool, not in the store (two point rows and the
        # value's sketch of its minute)
        assert (spool.batches, spool.rows) == (1, 3)
        assert await stored_points(sqlite_store) == {}

        # the database is back: a committer that drains writes the batch, once
        drainer = await draining(spool, sqlite_store.write_batch)
        assert drainer.stats.spool_replayed_batches == 1
        assert drainer.stats.replay_conflicts == 0
        assert await stored_points(sqlite_store) == {
            "spooled.c": [(ts, 2, 7, 3, 4)], "spooled.v": [(ts, 1, 7, 7, 7)],
        }
        info = await sqlite_store.get_metric("spooled.v")  # and the value's sketch
        assert info is not None
        minute = ts - ts % 60
        [(at, data)] = await sqlite_store.read_sketches(info.id, "value", minute,
                                                        minute + 60, 60)
        assert at == minute and Sketch.from_bytes(data).count == 1
    finally:
        await spool.close()
    assert not spool.path.exists()  # drained: the empty spool file is gone


async def test_a_spooled_ambiguous_commit_is_replayed_without_counting_twice(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """The COMMIT went through but its answer was lost: the batch is spooled under the
    same (writer_id, seq), and its replay finds that pair applied."""

    async def commit_then_lose_the_answer(batch: Batch) -> WriteResult:
        await sqlite_store.write_batch(batch)
        raise StoreUnavailable("mysql: connection lost during COMMIT")

    spool = await Spool.open(tmp_path, "http")
    try:
        async with committing(commit_then_lose_the_answer, "ambiguous", window=0.001,
                              spool=spool) as committer:
            assert await committer.commit([("amb", "counter", 100, 1, 5, 5, 5)]) == {}
            assert committer.stats.spooled == 1
        spooled = await spool.head()
        assert spooled is not None
        assert (spooled.batch.writer_id, spooled.batch.seq) == ("ambiguous", 1)

        drainer = await draining(spool, sqlite_store.write_batch)
        assert drainer.stats.spool_replayed_batches == 1
        assert drainer.stats.flush_duplicates == 1
        assert await stored_points(sqlite_store) == {"amb": [(100, 1, 5, 5, 5)]}
    finally:
        await spool.close()


async def test_a_hung_database_is_abandoned_after_the_write_timeout_and_spooled(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """A server that accepts connections and never answers: the write is abandoned
    after ``write_timeout``; the batch is spooled, later groups skip the dead store."""
    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hung = open_store(f"mysql://root@127.0.0.1:{port}/x")
    attempts = 0

    async def write(batch: Batch) -> WriteResult:
        nonlocal attempts
        attempts += 1
        return await hung.write_batch(batch)

    spool = await Spool.open(tmp_path, "http")
    try:
        async with committing(write, "hung", window=0.001, spool=spool,
                              ack_timeout=0.3, write_timeout=5) as committer:
            started = time.monotonic()
            assert await committer.commit([("hung", "counter", 100, 1, 1, 1, 1)]) == {}
            assert 0.3 <= time.monotonic() - started < 2
            assert attempts == 1
            await asyncio.sleep(0.2)  # the writer tries the spool again: hangs 5 s
            # writes fail: the next group goes straight to the spool, not behind it
            started = time.monotonic()
            assert await committer.commit([("hung", "counter", 101, 1, 2, 2, 2)]) == {}
            assert time.monotonic() - started < 0.3
            assert (committer.stats.spooled, spool.batches) == (2, 2)
        assert [b.seq for b in await _spooled_batches(spool)] == [1, 2]
    finally:
        await spool.close()
        await hung.close()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def _spooled_batches(spool: Spool) -> list[Batch]:
    """(writer_id, seq) of the spool's batches, oldest first, read from its file."""
    conn = sqlite3.connect(spool.path)
    try:
        rows = conn.execute("SELECT writer_id, seq FROM batches ORDER BY id").fetchall()
    finally:
        conn.close()
    return [Batch(writer_id, seq, []) for writer_id, seq in rows]


async def test_a_full_spool_answers_503_and_nothing_is_recorded(
    sqlite_store: Store, down: Store, tmp_path: Path
) -> None:
    """Neither written nor spooled: 503, and the points are nowhere."""
    token = await new_key(sqlite_store)
    await sqlite_store.write_batch(Batch("setup", 1, [("full", "counter", 100, 1, 1, 1, 1)]))
    spool = await Spool.open(tmp_path, "http", max_bytes=1)  # takes no batch at all
    try:
        async with serve(sqlite_store, config(), write=down.write_batch, spool=spool) as api:
            response = await api.post("/api/metrics/counter", headers=auth(token),
                                      json={"metric": "full", "value": 5})
            assert response.status == 503
            assert_error(await response.json(), "unavailable")
            committer = api.server.app[COMMITTER]
            assert (committer.stats.failures, committer.stats.spooled) == (1, 0)
            assert committer.writer.stats.spool_failures == 1
        assert spool.batches == 0
        assert await stored_points(sqlite_store) == {"full": [(100, 1, 1, 1, 1)]}
    finally:
        await spool.close()


async def test_the_drain_waits_out_the_outage_and_keeps_spool_order(
    sqlite_store: Store, down: Store, tmp_path: Path
) -> None:
    """Batches spooled while the store is down stay put (the replay fails, backs off);
    once writes work the drain replays them oldest first."""
    spool = await Spool.open(tmp_path, "http")
    try:
        async with committing(down.write_batch, "outage", window=0.001,
                              spool=spool) as outage:
            for second in range(3):
                await outage.commit(
                    [("order", "counter", 100 + second, 1, second, second, second)])
        assert spool.batches == 3
        replayed: list[int] = []

        async def back_after_two_failures(batch: Batch) -> WriteResult:
            if len(failures) < 2:
                failures.append(batch.seq)
                return await down.write_batch(batch)
            replayed.append(batch.seq)
            return await sqlite_store.write_batch(batch)

        failures: list[int] = []
        await draining(spool, back_after_two_failures, timeout=15)
        assert failures == [1, 1] and replayed == [1, 2, 3]
        assert await stored_points(sqlite_store) == {
            "order": [(100 + s, 1, s, s, s) for s in range(3)]}
    finally:
        await spool.close()
