"""Group commit: concurrent ingest requests share batches, and a 200 means committed."""

from __future__ import annotations

import asyncio
import time

import pytest

from query.commit import GroupCommitter
from query.state import COMMITTER
from store import Batch, Store, StoreError, StoreUnavailable, WriteResult
from tests.http_support import auth, config, new_key, serve, stored_points


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


async def test_conflicts_are_answered_to_the_request_they_concern(store: Store) -> None:
    await store.write_batch(Batch("setup", 1, [("is.value", "value", 100, 1, 1, 1, 1)]))
    committer = GroupCommitter(store.write_batch, "test", window=0.05)
    good = committer.commit([("is.counter", "counter", 100, 1, 2, 2, 2)])
    bad = committer.commit([("is.value", "counter", 100, 1, 5, 5, 5),
                            ("other", "counter", 100, 1, 1, 1, 1)])
    assert await asyncio.gather(good, bad) == [{}, {"is.value": "value"}]
    assert committer.stats.batches == 1
    await committer.close()


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

    committer = GroupCommitter(lose_first_answer, "test", window=0.001,
                               retry_delays=(0.001,))
    assert await committer.commit([("once", "counter", 100, 1, 1, 1, 1)]) == {}
    assert seen == [("test", 1), ("test", 1)]
    assert committer.stats.retries == 1
    assert await stored_points(store) == {"once": [(100, 1, 1, 1, 1)]}
    await committer.close()


async def test_a_failed_group_fails_every_request_in_it(store: Store) -> None:
    async def down(batch: Batch) -> WriteResult:
        raise StoreUnavailable("database unreachable")

    committer = GroupCommitter(down, "test", window=0.01, retry_delays=(0.001, 0.001))
    results = await asyncio.gather(
        *(committer.commit([("x", "counter", 100, 1, 1, 1, 1)]) for _ in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, StoreError) for r in results), results
    assert committer.stats.failures == 1
    await committer.close()


async def test_full_groups_close_early_and_commit_in_order(store: Store) -> None:
    order: list[int] = []

    async def write(batch: Batch) -> WriteResult:
        order.append(batch.seq)
        return await store.write_batch(batch)

    committer = GroupCommitter(write, "test", window=10.0, max_rows=3)
    rows = [[(f"m{i}", "counter", 100 + j, 1, 1, 1, 1) for j in range(3)] for i in range(4)]
    # window 10 s, but each request fills a group: nothing waits for the window
    await asyncio.wait_for(asyncio.gather(*(committer.commit(r) for r in rows)), 5)
    assert order == [1, 2, 3, 4]
    await committer.close()


async def test_close_commits_what_waits_and_refuses_the_rest(store: Store) -> None:
    committer = GroupCommitter(store.write_batch, "test", window=10.0)
    waiting = asyncio.ensure_future(committer.commit([("late", "counter", 100, 1, 1, 1, 1)]))
    await asyncio.sleep(0)  # one turn of the loop: the request joins a group
    assert committer.pending == 1
    await asyncio.wait_for(committer.close(), 5)  # does not wait out the 10 s window
    assert await waiting == {}
    assert await stored_points(store) == {"late": [(100, 1, 1, 1, 1)]}
    with pytest.raises(StoreUnavailable):
        await committer.commit([("later", "counter", 100, 1, 1, 1, 1)])
