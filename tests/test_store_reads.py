"""Reads in bounded pieces: each store's (DuckDB, PostgreSQL) paged reads give exactly what a whole read gives
(every rank, rank and step ranges, steps out of order, repeated steps), histograms page too, and the dashboard's
chart and rank skew computed piece by piece equal the same computed over the whole series."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest

import stepwire.store.duckdb_store as ds
import stepwire.store.postgres.reads as pg_reads
from stepwire import _core
from stepwire.api import RunView, _Sample, aggregate
from stepwire.collector.decode import DecodedBatch
from stepwire.dashboard.downsample import minmax
from stepwire.dashboard.panels import Panels, _floats
from stepwire.store.base import RunRecord, ScalarPoints, SeriesRecord, Store, whole_steps
from test_store_limits import batch

FIELDS = ("step", "value", "wall_time", "rank")


def same(a: ScalarPoints, b: ScalarPoints) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


@pytest.fixture
def random_store(make_store: Callable[[], Store], monkeypatch: pytest.MonkeyPatch
                 ) -> tuple[Any, dict[str, ScalarPoints]]:
    """Each store in turn with three ranks, two series, steps ascending or not, repeated steps, rows longer than
    MAX_CHUNK_POINTS; returns the store and what each series must read back as (sorted by step, rank, logged order)."""
    monkeypatch.setattr(ds, "_KEYS_PER_QUERY", 7)  # the index pass pages too
    monkeypatch.setattr(pg_reads, "KEYS_PER_QUERY", 7)
    store = make_store()
    rng = np.random.default_rng(5)
    logged: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = {"a": [], "b": []}
    seqs = [0, 0, 0]
    for _ in range(40):
        rank = int(rng.integers(0, 3))
        series = {}
        for sid, name in enumerate(("a", "b")):
            n = int(rng.integers(1, 3000))
            steps = rng.integers(0, 4000, n)
            if rng.random() < 0.7:
                steps = np.sort(steps)
            series[sid] = (name, steps, rng.standard_normal(n).round(1))
        b = batch(f"s{rank}", rank, seqs[rank], series, seqs[rank] == 0)
        seqs[rank] += 1
        assert store.append(b)
        lengths = b.group_lengths.astype(np.int64)
        for sid, (start, length) in enumerate(zip(np.cumsum(lengths) - lengths, lengths, strict=True)):
            sl = slice(int(start), int(start + length))
            logged["ab"[sid]].append((b.steps[sl], b.values[sl], b.wall_times[sl], np.full(length, rank, np.uint32)))
    expected = {}
    for name, parts in logged.items():
        step, value, wall, rank = (np.concatenate([p[i] for p in parts]) for i in range(4))
        order = np.lexsort((rank, step))  # stable: logged order within (step, rank)
        expected[name] = ScalarPoints(step[order], value[order], wall[order], rank[order])
    return store, expected


def test_paged_reads_give_what_a_whole_read_gives(random_store: tuple[Any, dict[str, ScalarPoints]]) -> None:
    store, expected = random_store
    for name, want in expected.items():
        assert same(store.scalars("run", name), want)
        for page_points in (1, 50, 1000, 1 << 18):
            pages = list(store.scalar_pages("run", name, page_points=page_points))
            assert same(ScalarPoints.join(pages), want)
            assert all(a.step[-1] < b.step[0] for a, b in itertools.pairwise(pages))  # no step in two pieces
            sizes = [len(p) for p in pages]  # a piece is larger than a page only where one step has more points
            assert all(n <= page_points or len(np.unique(p.step)) == 1 for n, p in zip(sizes, pages, strict=True))
        for ranks, start, end in [([1], None, None), ([0, 2], 100, 2000), (None, 3990, None), (None, None, 3)]:
            sel = np.ones(len(want), bool)
            if ranks:
                sel &= np.isin(want.rank, ranks)
            if start is not None:
                sel &= want.step >= start
            if end is not None:
                sel &= want.step < end
            assert same(store.scalars("run", name, ranks, start, end), want[sel])
    assert same(store.scalars("run", "nothing"), ScalarPoints.empty())


def test_histograms_are_read_page_by_page(make_store: Callable[[], Store], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ds, "_KEYS_PER_QUERY", 3)
    monkeypatch.setattr(pg_reads, "KEYS_PER_QUERY", 3)
    store = make_store()
    m = 10
    hist = {"series_ids": np.zeros(m, np.uint32), "steps": np.arange(m, dtype=np.int64)[::-1].copy(),
            "wall_times": np.arange(m, dtype=np.float64), "k": np.full(m, 3, np.uint8),
            "count": np.ones(m, np.int64), "sum": np.zeros(m), "min": np.zeros(m), "max": np.zeros(m),
            "nan": np.zeros(m, np.int64), "pos_inf": np.zeros(m, np.int64), "neg_inf": np.zeros(m, np.int64),
            "bucket_lengths": np.ones(m, np.uint32), "bucket_indices": np.arange(m, dtype=np.int32),
            "bucket_counts": np.ones(m, np.int64)}
    empty = np.empty(0)
    store.append(DecodedBatch("run", 0, "s", 0, [(0, "h", _core.KIND_HISTOGRAM)], np.empty(0, np.uint32),
                              np.empty(0, np.uint32), empty.astype(np.int64), empty, empty, hist))
    hists = store.histograms("run", "h")
    assert [h.step for h in hists] == list(range(m)) and [int(h.indices[0]) for h in hists] == list(range(m))[::-1]


class PiecesReader:
    """A reader over fixed points that answers in small pieces (whole steps), to check piece-by-piece reads."""

    def __init__(self, pts: ScalarPoints, piece: int) -> None:
        self.pts, self.piece = pts, piece

    def runs(self, project: str | None = None) -> list[RunRecord]:
        return [RunRecord("r", "p", "n")]

    def series(self, run_id: str) -> list[SeriesRecord]:
        return [SeriesRecord("s", "scalar", sorted(set(self.pts.rank.tolist())), len(self.pts))]

    def scalars(self, run_id: str, name: str, ranks: Sequence[int] | None = None, start_step: int | None = None,
                end_step: int | None = None) -> ScalarPoints:
        return ScalarPoints.join(list(self.scalar_pages(run_id, name, ranks, start_step, end_step)))

    def scalar_pages(self, run_id: str, name: str, ranks: Sequence[int] | None = None,
                     start_step: int | None = None, end_step: int | None = None) -> Iterator[ScalarPoints]:
        p = self.pts
        if ranks:
            p = p[np.isin(p.rank, ranks)]
        if end_step is not None:
            p = p[p.step < end_step]
        return whole_steps(p[a:a + self.piece] for a in range(0, len(p), self.piece))


def random_points(rng: np.random.Generator) -> ScalarPoints:
    ranks, n = int(rng.integers(1, 4)), int(rng.integers(1, 5000))
    step, rank = np.sort(rng.integers(0, int(rng.integers(1, 3000)), n)), rng.integers(0, ranks, n).astype(np.uint32)
    value = rng.standard_normal(n)
    value[rng.random(n) < 0.05] = np.nan
    value[rng.random(n) < 0.01] = np.inf
    if rng.random() < 0.3:
        value = np.round(value)  # ties
    wall = rng.random(n) * 100 if rng.random() < 0.5 else step * 0.5 + rng.random(n)
    order = np.lexsort((rank, step))
    return ScalarPoints(step[order].astype(np.int64), value[order], wall[order], rank[order])


def whole_chart(pts: ScalarPoints, x: str, points: int) -> dict[str, Any]:
    """The chart as the dashboard drew it from the whole series at once (before it read piece by piece)."""
    out: dict[str, Any] = {"total": len(pts), "nonfinite": int(np.count_nonzero(~np.isfinite(pts.value))),
                           "ranks": [], "agg": None}
    ranks = np.unique(pts.rank)
    for rank in ranks.tolist():
        sel = pts.rank == rank
        xs, ys = (pts.step[sel] if x == "step" else pts.wall_time[sel]), pts.value[sel]
        order = np.argsort(xs, kind="stable")
        xs, ys = xs[order], ys[order]
        keep, starts = minmax(xs, ys, points)
        out["ranks"].append({"rank": rank, "total": len(xs), "x": _floats(xs[keep]), "y": _floats(ys[keep]),
                             "buckets": _floats(xs[starts])})
    if len(ranks) > 1:
        mean, low, high = aggregate(pts, "mean"), aggregate(pts, "min")["value"], aggregate(pts, "max")["value"]
        xs = mean["step"] if x == "step" else mean["wall_time"]
        order = np.argsort(xs, kind="stable")
        xs, m, low, high, count = xs[order], mean["value"][order], low[order], high[order], mean["count"][order]
        third = max(2, points // 3)
        keep = np.unique(np.r_[minmax(xs, m, third)[0], minmax(xs, low, third)[0], minmax(xs, high, third)[0]])
        out["agg"] = {"x": _floats(xs[keep]), "mean": _floats(m[keep]), "min": _floats(low[keep]),
                      "max": _floats(high[keep]), "count": count[keep].tolist(), "total": len(xs)}
    return out


def test_dashboard_chart_read_piece_by_piece_is_the_whole_read_chart() -> None:
    rng = np.random.default_rng(11)
    for _ in range(40):
        pts = random_points(rng)
        for x, points in itertools.product(("step", "wall_time"), (2, 7, 60, 1000)):
            chart = Panels(PiecesReader(pts, int(rng.integers(1, 500)))).scalars("r", "s", x, points)
            want = whole_chart(pts, x, points)
            assert {k: chart[k] for k in want} == want


def whole_skew(pts: ScalarPoints) -> list[tuple[int, int, float, float]]:
    """Per rank (steps, median step time, median lag), as step_skew computed them from the whole series."""
    per_rank: dict[int, dict[int, float]] = {}
    for step, wall, rank in zip(pts.step.tolist(), pts.wall_time.tolist(), pts.rank.tolist(), strict=True):
        first = per_rank.setdefault(rank, {})
        first[step] = min(wall, first.get(step, wall))
    common = sorted(set.intersection(*(set(w) for w in per_rank.values())))
    grid = np.array([[per_rank[r][s] for s in common] for r in sorted(per_rank)]).reshape(len(per_rank), -1)
    lags = grid - np.median(grid, axis=0) if grid.size else grid
    rows = []
    for i, rank in enumerate(sorted(per_rank)):
        steps = np.array(sorted(per_rank[rank]))
        walls = np.array([per_rank[rank][s] for s in steps])
        per_step = np.diff(walls) / np.diff(steps) if len(steps) > 1 else np.array([np.nan])
        rows.append((rank, len(steps), float(np.median(per_step)), float(np.median(lags[i])) if lags.size else 0.0))
    return rows


def test_step_skew_read_piece_by_piece_is_the_whole_read_skew() -> None:
    rng = np.random.default_rng(12)
    for _ in range(30):
        pts = random_points(rng)
        skew = RunView(PiecesReader(pts, int(rng.integers(1, 300))), RunRecord("r", "p", "n")).step_skew()
        got = [(r["rank"], r["steps"], r["step_time"], r["lag"]) for r in skew["ranks"]]
        want = whole_skew(pts)
        assert [g[:2] for g in got] == [w[:2] for w in want]
        assert [g[2:] for g in got] == [pytest.approx(w[2:], nan_ok=True) for w in want]


def test_a_thinned_sample_keeps_evenly_spaced_values() -> None:
    sample = _Sample(cap=100)
    values = np.arange(1000.0)
    for a in range(0, 1000, 37):
        sample.add(values[a:a + 37])
    kept = np.concatenate(sample.parts)
    assert sample.stride == 16 and np.array_equal(kept, values[::16])
    assert sample.median(0.0) == np.median(values[::16])


def test_live_runs_are_those_with_a_rank_running_and_those_named(make_store: Callable[[], Store]) -> None:
    """The crash check's read: runs with a rank still running (whatever the run's own status says), and the runs it
    names; not the finished and crashed history of the store."""
    store = make_store()
    ranks = {"running": ["running"], "finished": ["finished"], "mixed": ["crashed", "running"], "crashed": ["crashed"],
             "failed": ["failed", "finished"]}
    for i, (run_id, statuses) in enumerate(ranks.items()):
        for rank, status in enumerate(statuses):
            store.open_run(RunRecord(id=run_id, project="running", name="running", tags=["running"],
                                     config={"running": "running"}, created=100.0 + i, status="running", meta={}),
                           rank, len(statuses))
            if status != "running":
                store.update_run(run_id, status=status, finished=200.0, rank=rank)
    assert {r.id: r.status for r in store.runs()}["mixed"] == "crashed"
    assert [r.id for r in store.live_runs()] == ["running", "mixed"]
    assert [r.id for r in store.live_runs(["crashed", "nosuch", "running"])] == ["running", "mixed", "crashed"]
    assert store.live_runs(["mixed"])[1].meta["ranks"] == {"0": "crashed", "1": "running"}
