"""The two store reads the Graphite API adds, on SQLite and MariaDB: held against the
reads they stand for."""

from __future__ import annotations

import pytest

from store import Batch, Store

BASE = 1_700_000_000 - 1_700_000_000 % 3600


@pytest.mark.parametrize("metrics", [3, 60])
async def test_merged_read_is_the_merge_of_the_single_reads(store: Store, metrics: int) -> None:
    points = [(f"m.{i}", "value", BASE + s, 1.0 + s % 2, float(s * i), float(-s - i),
               float(s + i)) for i in range(metrics) for s in range(i, 7300, 13 + i)]
    await store.write_batch(Batch("t", 1, points))
    infos = await store.list_metrics("m.", 100, None)
    assert len(infos) == metrics
    ids = [info.id for info in infos]
    for start, end, interval in ((BASE, BASE + 7300, 60), (BASE + 17, BASE + 7211, 1),
                                 (BASE, BASE + 7300, 3600), (BASE + 61, BASE + 7000, 600)):
        counts: dict[int, float] = {}
        sums: dict[int, float] = {}
        for metric_id in ids:
            for row in await store.read_buckets(metric_id, start, end, interval):
                counts[row.ts] = counts.get(row.ts, 0.0) + row.cnt
                sums[row.ts] = sums.get(row.ts, 0.0) + row.sum
        assert counts  # the ranges hold data
        assert await store.read_totals_merged(ids, start, end, interval, "cnt") == sorted(
            counts.items())
        assert await store.read_totals_merged(ids, start, end, interval, "sum") == sorted(
            sums.items())
    assert await store.read_totals_merged([], BASE, BASE + 60, 60, "sum") == []
    with pytest.raises(ValueError, match="cannot total"):
        await store.read_totals_merged(ids, BASE, BASE + 60, 60, "mx")  # type: ignore[arg-type]


async def test_metric_refs_are_the_listing_without_first_and_last(store: Store) -> None:
    await store.write_batch(Batch("t", 1, [(name, kind, BASE, 1.0, 1.0, 1.0, 1.0) for name, kind
                                           in (("a.x", "counter"), ("a.y", "value"),
                                               ("a_b", "counter"), ("b", "value"))]))
    full = await store.list_metrics("a", 10, None)
    refs = await store.list_metric_refs("a", 10, None)
    assert [(r.id, r.name, r.kind) for r in refs] == [(i.id, i.name, i.kind) for i in full]
    assert [r.name for r in await store.list_metric_refs("a", 1, "a.x")] == ["a.y"]
    assert await store.list_metric_refs("é", 10, None) == []
