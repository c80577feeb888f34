"""A chart's curves read piece by piece in bounded memory, for ``Panels.scalars``: per rank and, over several
ranks, the cross-rank mean with its min/max band, each downsampled as ``downsample.minmax`` would choose from the
whole curve (every point while there are few enough; else a second read, bucketed over the x range seen)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from stepwire.api import aggregate
from stepwire.store.base import ScalarPoints


class Curve:
    """One curve read piece by piece, choosing the points ``downsample.minmax`` would choose from it whole.

    Without ``xrange`` it keeps every point while there are at most ``keep``; past that it is ``overflow`` and
    keeps only its count and x range, for a second read. With ``xrange`` it keeps, per bucket of that range
    (``keep // 2`` of equal width), the first point in x order holding the bucket's minimum of ``y`` and the
    first holding its maximum (NaN skipped), and the bucket's smallest x. Points carry the ``columns`` given
    to ``add`` (``y`` is the one chosen on); ``order`` breaks ties in x as a stable sort would."""

    def __init__(self, keep: int, xrange: tuple[float, float] | None = None) -> None:
        self.keep = keep
        self.n = 0
        self.x_min, self.x_max = math.inf, -math.inf
        self.overflow = False
        self.parts: list[dict[str, npt.NDArray[Any]]] = []
        self.edges: npt.NDArray[np.float64] | None = None
        if xrange is not None:
            self.edges = np.linspace(xrange[0], xrange[1], keep // 2 + 1)[1:-1]
            buckets = len(self.edges) + 1
            self.start = np.full(buckets, np.inf)
            self.best: dict[str, dict[str, npt.NDArray[Any]]] = {}
            self.filled = np.zeros(buckets, dtype=bool)

    def add(self, x: npt.NDArray[np.float64], order: npt.NDArray[np.int64], **columns: npt.NDArray[Any]) -> None:
        """Take the next piece of the curve: its ``x``, its rows' ``order`` and its ``columns`` (``y`` among them)."""
        if len(x) == 0:
            return
        self.n += len(x)
        self.x_min, self.x_max = min(self.x_min, float(x.min())), max(self.x_max, float(x.max()))
        if self.edges is None:
            if not self.overflow:
                self.parts.append({"x": x, "order": order, **columns})
                if self.n > self.keep:
                    self.overflow, self.parts = True, []
            return
        bucket = np.searchsorted(self.edges, x, side="right")
        np.minimum.at(self.start, bucket, x)
        y = columns["y"]
        nan = np.isnan(y)
        for which, key in (("min", np.where(nan, np.inf, y)), ("max", -np.where(nan, -np.inf, y))):
            idx = np.lexsort((order, x, key, bucket))  # per bucket, the first point holding its extreme
            idx = idx[np.r_[True, bucket[idx][1:] != bucket[idx][:-1]]]
            b = bucket[idx]
            best = self.best.get(which)
            if best is None:
                size = len(self.start)
                best = self.best[which] = {"key": np.full(size, np.inf), "x": np.full(size, np.inf),
                                           "order": np.zeros(size, np.int64),
                                           **{c: np.zeros(size, v.dtype) for c, v in columns.items()}}
            k, xx, oo = key[idx], x[idx], order[idx]
            ck, cx, co = best["key"][b], best["x"][b], best["order"][b]
            better = ~self.filled[b] | (k < ck) | ((k == ck) & ((xx < cx) | ((xx == cx) & (oo < co))))
            into, src = b[better], idx[better]
            best["key"][into], best["x"][into], best["order"][into] = key[src], x[src], order[src]
            for c, v in columns.items():
                best[c][into] = v[src]
        self.filled[bucket] = True

    def result(self) -> dict[str, npt.NDArray[Any]]:
        """The chosen points in x order (``x``, ``order``, the columns) and ``buckets``, where each starts."""
        if self.edges is None:
            if not self.parts:
                return {"x": np.empty(0), "order": np.empty(0, np.int64), "y": np.empty(0), "buckets": np.empty(0)}
            rows = {c: np.concatenate([p[c] for p in self.parts]) for c in self.parts[0]}
            by_x = np.lexsort((rows["order"], rows["x"]))
            rows = {c: v[by_x] for c, v in rows.items()}
            return {**rows, "buckets": rows["x"]}  # every point is its own bucket
        filled = self.filled
        if not self.best:
            return {"x": np.empty(0), "order": np.empty(0, np.int64), "y": np.empty(0), "buckets": np.empty(0)}
        chosen = {c: np.r_[self.best["min"][c][filled], self.best["max"][c][filled]]
                  for c in self.best["min"] if c != "key"}
        _, first = np.unique(chosen["order"], return_index=True)
        chosen = {c: v[first] for c, v in chosen.items()}
        by_x = np.lexsort((chosen["order"], chosen["x"]))
        return {**{c: v[by_x] for c, v in chosen.items()}, "buckets": self.start[filled]}


def union_points(chosen: list[dict[str, npt.NDArray[Any]]]) -> dict[str, npt.NDArray[Any]]:
    """The points chosen by any of several curves over the same rows, once each, in x order."""
    rows = {c: np.concatenate([r[c] for r in chosen]) for c in chosen[0] if c != "buckets"}
    _, first = np.unique(rows["order"], return_index=True)
    rows = {c: v[first] for c, v in rows.items()}
    by_x = np.lexsort((rows["order"], rows["x"]))
    return {c: v[by_x] for c, v in rows.items()}


class Curves:
    """The curves of one chart read piece by piece: one per rank and, for several ranks, the cross-rank mean
    with its min/max band (three curves over the same rows, ``points // 3`` each)."""

    def __init__(self, x: str, points: int, several_ranks: bool,
                 ranges: dict[int | str, tuple[float, float]] | None = None) -> None:
        self.x, self.points, self.several_ranks, self.ranges = x, points, several_ranks, ranges
        self.per_rank: dict[int, Curve] = {}
        self.agg: tuple[Curve, Curve, Curve] | None = None
        if several_ranks and (ranges is None or "agg" in ranges):
            third = max(2, points // 3)
            span = ranges["agg"] if ranges is not None else None
            self.agg = (Curve(third, span), Curve(third, span), Curve(third, span))
        self.total = self.nonfinite = self.last_step = 0
        self._seen = self._steps = 0

    def add(self, pts: ScalarPoints) -> None:
        """Take the next page of the series' points (every rank's, in step order)."""
        if len(pts) == 0:
            return
        self.total += len(pts)
        self.nonfinite += int(np.count_nonzero(~np.isfinite(pts.value)))
        self.last_step = max(self.last_step, int(pts.step[-1]))
        order = np.arange(self._seen, self._seen + len(pts), dtype=np.int64)
        self._seen += len(pts)
        xs = (pts.step if self.x == "step" else pts.wall_time).astype(np.float64)
        for rank in np.unique(pts.rank).tolist():
            if self.ranges is not None and rank not in self.ranges:
                continue
            curve = self.per_rank.get(rank)
            if curve is None:
                curve = self.per_rank[rank] = Curve(self.points, self.ranges[rank] if self.ranges else None)
            mine = pts.rank == rank
            curve.add(xs[mine], order[mine], y=pts.value[mine])
        if self.agg is not None:
            mean, low, high = aggregate(pts, "mean"), aggregate(pts, "min"), aggregate(pts, "max")
            ax = (mean["step"] if self.x == "step" else mean["wall_time"]).astype(np.float64)
            rows = np.arange(self._steps, self._steps + len(ax), dtype=np.int64)
            self._steps += len(ax)
            columns = {"mean": mean["value"], "min": low["value"], "max": high["value"], "count": mean["count"]}
            for curve, y in zip(self.agg, (mean["value"], low["value"], high["value"]), strict=True):
                curve.add(ax, rows, y=y, **columns)

    def again(self) -> Curves | None:
        """The curves to read again (those that had too many points), bucketed over the x range seen; None if
        every curve kept all its points."""
        ranges: dict[int | str, tuple[float, float]] = {
            rank: (c.x_min, c.x_max) for rank, c in self.per_rank.items() if c.overflow}
        if self.agg is not None and self.agg[0].overflow:
            ranges["agg"] = (self.agg[0].x_min, self.agg[0].x_max)
        return Curves(self.x, self.points, self.several_ranks, ranges) if ranges else None
