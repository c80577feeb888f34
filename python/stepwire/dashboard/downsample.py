"""Downsampling of long series to what a chart can show, keeping every bucket's extremes.

A chart ``max_points`` wide gets ``max_points // 2`` buckets of equal width in x; each keeps the points holding
its minimum and its maximum (NaN skipped; a bucket of NaN keeps its first point, so the gap stays visible).
``minmax`` works on the points; ``from_blocks`` on a store's block extremes (``stepwire.store.overview``), where
bucket edges snap to block edges so that the extremes stay exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from stepwire.store.overview import BLOCK

MIN_BLOCKS_PER_BUCKET = 4
"""``from_blocks`` answers only when buckets are at least this many blocks wide (else the edges move too much)."""


def _first_per_group(hit: npt.NDArray[np.bool_], group: npt.NDArray[np.intp], starts: npt.NDArray[np.intp]
                     ) -> npt.NDArray[np.int64]:
    out = np.asarray(starts, dtype=np.int64).copy()
    where = np.flatnonzero(hit)
    g = group[where]
    first = np.r_[True, g[1:] != g[:-1]] if len(where) else np.zeros(0, bool)
    out[g[first]] = where[first]
    return out


def _bucket_starts(x: npt.NDArray[Any], max_points: int) -> npt.NDArray[np.intp]:
    xf = np.asarray(x, dtype=np.float64)
    edges = np.linspace(xf[0], xf[-1], max_points // 2 + 1)[1:-1]
    return np.unique(np.r_[0, np.searchsorted(xf, edges, side="left")])  # empty buckets share a start: dropped


def _extremes(y: npt.NDArray[np.float64], starts: npt.NDArray[np.intp]) -> tuple[npt.NDArray[np.int64],
                                                                                   npt.NDArray[np.int64]]:
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(y)]))
    notnan = ~np.isnan(y)
    lo = np.where(notnan, y, np.inf)
    hi = np.where(notnan, y, -np.inf)
    first_min = _first_per_group(lo == np.minimum.reduceat(lo, starts)[group], group, starts)
    first_max = _first_per_group(hi == np.maximum.reduceat(hi, starts)[group], group, starts)
    return first_min, first_max


def minmax(x: npt.NDArray[Any], y: npt.NDArray[np.float64], max_points: int
           ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Indices of the points to draw (at most ``max_points``, in ``x`` order) and the index where each bucket
    starts. ``x`` must be sorted; series of at most ``max_points`` points come back whole (one bucket each)."""
    n = len(x)
    if max_points < 2:
        raise ValueError("max_points must be at least 2")
    if n <= max_points:
        every = np.arange(n, dtype=np.int64)
        return every, every
    starts = _bucket_starts(x, max_points)
    first_min, first_max = _extremes(y, starts)
    return np.unique(np.r_[first_min, first_max]).astype(np.int64), starts.astype(np.int64)


def min_points_for_blocks(max_points: int) -> int:
    """The fewest points a series needs before ``from_blocks`` answers for a chart ``max_points`` wide."""
    return max(max_points + 1, (max_points // 2) * MIN_BLOCKS_PER_BUCKET * BLOCK)


def from_blocks(blocks: dict[str, npt.NDArray[Any]], total: int, axis: str, max_points: int
                ) -> dict[str, npt.NDArray[Any]] | None:
    """The points to draw from block extremes: ``step``, ``value``, ``wall`` of at most ``max_points`` points
    and ``bucket_start`` (x where each bucket starts); None when the buckets would be narrower than
    ``MIN_BLOCKS_PER_BUCKET`` blocks (read the points instead). ``axis`` is ``"step"`` or ``"wall"``."""
    if total < min_points_for_blocks(max_points):
        return None
    buckets = max_points // 2
    first_x = blocks[f"first_{axis}"].astype(np.float64)
    edges = np.linspace(first_x[0], float(blocks[f"last_{axis}"][-1]), buckets + 1)[1:-1]
    bucket = np.searchsorted(edges, first_x, side="right")  # a block belongs to the bucket of its first point,
    tied = np.r_[False, first_x[1:] == blocks[f"last_{axis}"][:-1]]  # or, if that x goes on from the block
    bucket = np.maximum.accumulate(np.where(tied, -1, bucket))  # before, to that block's: no x in two buckets
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(first_x)]))
    lo = np.where(np.isnan(blocks["min_value"]), np.inf, blocks["min_value"])
    hi = np.where(np.isnan(blocks["max_value"]), -np.inf, blocks["max_value"])
    bmin = _first_per_group(lo == np.minimum.reduceat(lo, starts)[group], group, starts)
    bmax = _first_per_group(hi == np.maximum.reduceat(hi, starts)[group], group, starts)
    step = np.c_[blocks["min_step"][bmin], blocks["max_step"][bmax]]
    value = np.c_[blocks["min_value"][bmin], blocks["max_value"][bmax]]
    wall = np.c_[blocks["min_wall"][bmin], blocks["max_wall"][bmax]]
    key = step if axis == "step" else wall
    swap = key[:, 1] < key[:, 0]  # each bucket's two points in x order
    for arr in (step, value, wall):
        arr[swap] = arr[swap][:, ::-1]
    same_value = (value[:, 0] == value[:, 1]) | (np.isnan(value[:, 0]) & np.isnan(value[:, 1]))
    same = (step[:, 0] == step[:, 1]) & (wall[:, 0] == wall[:, 1]) & same_value  # one point, both min and max
    keep = np.c_[np.ones(len(starts), bool), ~same].ravel()
    return {"step": step.ravel()[keep], "value": value.ravel()[keep], "wall": wall.ravel()[keep],
            "bucket_start": first_x[starts]}
