"""Downsampling of long series to what a chart can show, keeping every bucket's extremes."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def minmax(x: npt.NDArray[Any], y: npt.NDArray[np.float64], max_points: int) -> npt.NDArray[np.int64]:
    """Indices of the points to draw: at most ``max_points``, in ``x`` order.

    ``x`` must be sorted. Its range is cut into ``max_points // 2`` equal-width buckets (one per pixel
    column of a chart that wide) and each bucket keeps the points holding its minimum and its maximum ``y``
    (NaN is skipped; a bucket of NaN only keeps its first point, so gaps stay visible). Series of at most
    ``max_points`` points come back whole.
    """
    n = len(x)
    if max_points < 2:
        raise ValueError("max_points must be at least 2")
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    buckets = max_points // 2
    xf = np.asarray(x, dtype=np.float64)
    lo, hi = xf[0], xf[-1]
    edges = np.linspace(lo, hi, buckets + 1)[1:-1]
    starts = np.r_[0, np.searchsorted(xf, edges, side="left")]
    starts = np.unique(starts)  # empty buckets share a start: drop them
    bucket = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n]))
    finite = ~np.isnan(y)
    y_lo = np.where(finite, y, np.inf)
    y_hi = np.where(finite, y, -np.inf)
    mins = np.minimum.reduceat(y_lo, starts)
    maxs = np.maximum.reduceat(y_hi, starts)
    first_min = _first_per_bucket(np.flatnonzero(y_lo == mins[bucket]), bucket, len(starts))
    first_max = _first_per_bucket(np.flatnonzero(y_hi == maxs[bucket]), bucket, len(starts))
    keep = np.unique(np.r_[first_min, first_max])
    return keep.astype(np.int64)


def _first_per_bucket(hits: npt.NDArray[np.intp], bucket: npt.NDArray[np.intp], n_buckets: int
                      ) -> npt.NDArray[np.int64]:
    out = np.full(n_buckets, -1, dtype=np.int64)
    hit_bucket = bucket[hits]
    first = np.r_[True, hit_bucket[1:] != hit_bucket[:-1]] if len(hits) else np.zeros(0, bool)
    out[hit_bucket[first]] = hits[first]
    return out

