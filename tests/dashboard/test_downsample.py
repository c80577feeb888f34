"""Downsampling keeps at most the points asked for, and the minimum and maximum of every bucket."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stepwire.dashboard.downsample import from_blocks, minmax
from stepwire.store import overview


def _check(x: np.ndarray, y: np.ndarray, max_points: int) -> None:
    keep, starts = minmax(x, y, max_points)
    assert len(keep) <= max_points
    assert np.all(np.diff(keep) > 0), "indices must be unique and in x order"
    if len(x) <= max_points:
        assert keep.tolist() == list(range(len(x)))
        return
    buckets = max_points // 2
    edges = np.linspace(float(x[0]), float(x[-1]), buckets + 1)
    which = np.clip(np.searchsorted(edges, x.astype(np.float64), side="right") - 1, 0, buckets - 1)
    assert starts.tolist() == np.flatnonzero(np.r_[True, which[1:] != which[:-1]]).tolist()
    kept = np.zeros(len(x), bool)
    kept[keep] = True
    for b in np.unique(which):
        members = which == b
        values = y[members]
        assert kept[members].any(), f"bucket {b} lost every point"
        finite = values[~np.isnan(values)]
        if len(finite):
            shown = y[members & kept]
            assert np.nanmin(shown) == finite.min() and np.nanmax(shown) == finite.max(), f"bucket {b}"


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 3000), max_points=st.integers(2, 400), seed=st.integers(0, 2**32 - 1),
       nan_fraction=st.sampled_from([0.0, 0.1, 1.0]), repeats=st.booleans())
def test_bounds_and_extremes(n: int, max_points: int, seed: int, nan_fraction: float, repeats: bool) -> None:
    rng = np.random.default_rng(seed)
    x = np.sort(rng.integers(0, n // 3 + 1, n) if repeats else rng.permutation(10 * n)[:n]).astype(np.int64)
    y = rng.standard_normal(n).cumsum()
    y[rng.random(n) < nan_fraction] = np.nan
    _check(x, y, max_points)


def test_large_series_with_spikes() -> None:
    n = 1_000_000
    x = np.arange(n, dtype=np.int64)
    y = np.sin(np.arange(n) / 1e4)
    y[123_457] = 50.0
    y[876_543] = -50.0
    keep, _ = minmax(x, y, 1000)
    assert len(keep) <= 1000
    assert 123_457 in keep and 876_543 in keep
    _check(x, y, 1000)


def test_wall_time_axis() -> None:
    x = 1.7e9 + np.cumsum(np.random.default_rng(1).exponential(0.01, 50_000))
    _check(x, np.random.default_rng(2).standard_normal(50_000), 300)


def test_rejects_too_few_points() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        minmax(np.arange(10), np.zeros(10), 1)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 40_000), max_points=st.integers(2, 40), chunks=st.integers(1, 5),
       seed=st.integers(0, 2**32 - 1), ties=st.booleans())
@example(n=30_000, max_points=10, chunks=3, seed=1, ties=True)
@example(n=40_000, max_points=2, chunks=1, seed=2, ties=False)
def test_from_blocks_keeps_every_declared_bucket_exact(n: int, max_points: int, chunks: int, seed: int,
                                                       ties: bool) -> None:
    """Downsampling from block extremes (chunks cut into blocks as the store cuts them) keeps the min and max of
    every bucket it declares, ties in x included, and is the same whichever axis ascends."""
    rng = np.random.default_rng(seed)
    steps = np.sort(rng.integers(0, n // 4 + 1, n)) if ties else np.arange(n, dtype=np.int64)
    walls = 1.7e9 + np.sort(rng.integers(0, n // 2 + 1, n)) * 1e-6
    values = rng.standard_normal(n).cumsum()
    values[rng.random(n) < 0.05] = np.nan
    cuts = np.unique(np.r_[0, np.sort(rng.integers(0, n, chunks - 1)), n])
    packed = overview.compute(steps, values, walls, cuts[:-1], cuts[1:], min_points=1)
    blocks = overview.unpack([p for p in packed if p is not None])
    for axis, x in (("step", steps.astype(np.float64)), ("wall", walls)):
        chosen = from_blocks(blocks, n, axis, max_points)
        if chosen is None:
            assert n <= max_points or n < (max_points // 2) * 4 * overview.BLOCK
            continue
        shown_x = chosen[axis].astype(np.float64)
        assert len(shown_x) <= max_points and np.all(np.diff(shown_x) >= 0)
        bucket_starts = chosen["bucket_start"]
        assert len(bucket_starts) <= max_points // 2 and np.all(np.diff(bucket_starts) > 0)
        which = np.searchsorted(bucket_starts, x, side="right") - 1
        shown_which = np.searchsorted(bucket_starts, shown_x, side="right") - 1
        for b in range(len(bucket_starts)):
            stored, shown = values[which == b], chosen["value"][shown_which == b]
            assert len(shown)
            if np.isnan(stored).all():
                assert np.isnan(shown).all()
            else:
                assert np.nanmin(shown) == np.nanmin(stored) and np.nanmax(shown) == np.nanmax(stored)


def test_block_rows_against_numpy() -> None:
    rng = np.random.default_rng(7)
    n = 5000
    steps = np.arange(n, dtype=np.int64) * 2
    walls = 1.7e9 + np.arange(n) * 1e-3
    values = rng.standard_normal(n)
    values[300:600] = np.nan  # a whole block of NaN (256..511) and parts of two others
    values[[10, 20]] = [np.inf, -np.inf]
    starts, ends = np.array([0, 1000, 1100]), np.array([1000, 1100, n])
    packed = overview.compute(steps, values, walls, starts, ends)  # the 100-point chunk is too short
    assert packed[1] is None and packed[0] is not None and packed[2] is not None
    blocks = overview.unpack([packed[0], packed[2]])
    firsts = [b for s, e in ((0, 1000), (1100, n)) for b in range(s, e, overview.BLOCK)]
    assert len(blocks["first_step"]) == len(firsts)
    for i, b in enumerate(firsts):
        e = min(b + overview.BLOCK, 1000 if b < 1000 else n)
        seg = values[b:e]
        assert (blocks["first_step"][i], blocks["last_step"][i]) == (steps[b], steps[e - 1])
        assert (blocks["first_wall"][i], blocks["last_wall"][i]) == (walls[b], walls[e - 1])
        assert blocks["nonfinite"][i] == np.count_nonzero(~np.isfinite(seg))
        if np.isnan(seg).all():
            assert blocks["min_step"][i] == blocks["max_step"][i] == steps[b] and np.isnan(blocks["min_value"][i])
            continue
        lo, hi = b + int(np.nanargmin(seg)), b + int(np.nanargmax(seg))
        for end, j in (("min", lo), ("max", hi)):
            assert (blocks[f"{end}_step"][i], blocks[f"{end}_value"][i], blocks[f"{end}_wall"][i]) == (
                steps[j], values[j], walls[j])
    descending = overview.compute(steps[::-1].copy(), values, walls, np.array([0]), np.array([n]))
    assert descending == [None]
    with pytest.raises(ValueError, match="out of range"):
        overview.compute(steps, values, walls, np.array([0]), np.array([n + 1]))
