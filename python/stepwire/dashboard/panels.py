"""The data of every dashboard panel, as JSON-ready dicts, read through a store ``Reader``.

Floats that JSON cannot hold (NaN, ±inf) become ``null`` in chart data (a gap in a chart); each panel says how
many points it left out that way (``nonfinite``). Elsewhere (a run's config, a histogram's sum) the server sends
them as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from stepwire.api import RunView, aggregate
from stepwire.dashboard.downsample import from_blocks, min_points_for_blocks, minmax
from stepwire.histogram import Histogram, merge_by_step
from stepwire.store.base import Reader, RunRecord

X_AXES = ("step", "wall_time")
MAX_POINTS = 20_000
"""The most points a chart may ask for per curve."""


class PanelError(ValueError):
    """A request the panels cannot answer (bad parameter); ``status`` is the HTTP status to send."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _floats(values: npt.NDArray[Any]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).tolist()]


def _section(name: str) -> str:
    return name.split("/", 1)[0] if "/" in name else ""


class Panels:
    """Answers the dashboard's questions about the runs a ``Reader`` holds."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    def _record(self, run_id: str) -> RunRecord:
        for r in self.reader.runs():
            if r.id == run_id:
                return r
        raise PanelError(f"no run {run_id!r}", status=404)

    def runs(self, project: str | None = None) -> list[dict[str, Any]]:
        """The runs table: one row per run, newest first, with duration, ranks and logging overhead."""
        now = time.time()
        rows = []
        for r in reversed(self.reader.runs(project)):
            ranks = sorted(int(k) for k in r.meta.get("ranks", {}) if str(k).isdigit())
            end = r.finished if r.finished else now
            rows.append({"id": r.id, "project": r.project, "name": r.name, "status": r.status,
                         "created": r.created, "finished": r.finished or None,
                         "duration": max(0.0, end - r.created) if r.created else None, "tags": r.tags,
                         "config": r.config, "ranks": ranks or [0], "rank_status": r.meta.get("ranks", {}),
                         "overhead": r.meta.get("overhead", {})})
        return rows

    def series(self, run_id: str) -> list[dict[str, Any]]:
        """Every series of a run with its kind, ``section`` (the part of the name before the first ``/``),
        ranks and stored item count; sorted by section then name."""
        self._record(run_id)
        out = [{"name": s.name, "kind": s.kind, "section": _section(s.name), "ranks": s.ranks, "items": s.items}
               for s in self.reader.series(run_id)]
        return sorted(out, key=lambda s: (s["section"], s["name"]))

    def scalars(self, run_id: str, name: str, x: str = "step", points: int = 1000) -> dict[str, Any]:
        """One run's curve(s) of ``name``: per rank (each downsampled to at most ``points``, with ``buckets``:
        the x where each downsampling bucket starts), and for multi-rank series the cross-rank ``mean`` with
        its ``min``/``max`` band (the three together at most ``points``). ``total`` is the number of stored
        points. A long single-rank series is answered from the store's block extremes when it has them."""
        if x not in X_AXES:
            raise PanelError(f"x must be one of {X_AXES}, got {x!r}")
        if not 2 <= points <= MAX_POINTS:
            raise PanelError(f"points must be between 2 and {MAX_POINTS}, got {points}")
        self._record(run_id)
        fast = self._from_blocks(run_id, name, x, points)
        if fast is not None:
            return fast
        pts = self.reader.scalars(run_id, name)
        out: dict[str, Any] = {"run": run_id, "name": name, "x": x, "total": len(pts.step),
                               "nonfinite": int(np.count_nonzero(~np.isfinite(pts.value))), "ranks": [], "agg": None}
        ranks = np.unique(pts.rank)
        for rank in ranks.tolist():
            sel = pts.rank == rank if len(ranks) > 1 else slice(None)
            xs = pts.step[sel] if x == "step" else pts.wall_time[sel]
            ys = pts.value[sel]
            if len(xs) > 1 and np.any(xs[1:] < xs[:-1]):
                order = np.argsort(xs, kind="stable")
                xs, ys = xs[order], ys[order]
            keep, starts = minmax(xs, ys, points)
            out["ranks"].append({"rank": rank, "total": len(xs), "x": _floats(xs[keep]), "y": _floats(ys[keep]),
                                 "buckets": _floats(xs[starts])})
        if len(ranks) > 1:
            mean = aggregate(pts, "mean")
            low, high = aggregate(pts, "min")["value"], aggregate(pts, "max")["value"]
            xs = mean["step"] if x == "step" else mean["wall_time"]
            order = np.argsort(xs, kind="stable")
            xs, m, low, high, count = xs[order], mean["value"][order], low[order], high[order], mean["count"][order]
            third = max(2, points // 3)
            keep = np.unique(np.r_[minmax(xs, m, third)[0], minmax(xs, low, third)[0], minmax(xs, high, third)[0]])
            out["agg"] = {"x": _floats(xs[keep]), "mean": _floats(m[keep]), "min": _floats(low[keep]),
                          "max": _floats(high[keep]), "count": count[keep].tolist(), "total": len(xs)}
        return out

    def _from_blocks(self, run_id: str, name: str, x: str, points: int) -> dict[str, Any] | None:
        """The chart of a long single-rank series from the store's block extremes, without reading its points;
        None where that does not apply (several ranks, a remote store, steps out of order, a short series)."""
        blocks_of = getattr(self.reader, "scalar_blocks", None)
        found = blocks_of(run_id, name, min_points_for_blocks(points)) if blocks_of is not None else None
        if found is None:
            return None
        rank, total, blocks = found
        chosen = from_blocks(blocks, total, "step" if x == "step" else "wall", points)
        if chosen is None:
            return None
        xs = chosen["step"] if x == "step" else chosen["wall"]
        curve = {"rank": rank, "total": total, "x": _floats(xs), "y": _floats(chosen["value"]),
                 "buckets": _floats(chosen["bucket_start"])}
        return {"run": run_id, "name": name, "x": x, "total": total, "nonfinite": int(blocks["nonfinite"].sum()),
                "ranks": [curve], "agg": None}

    def _histograms(self, run_id: str, name: str, rank: int | None) -> list[Histogram]:
        self._record(run_id)
        if rank is None:
            return merge_by_step(self.reader.histograms(run_id, name))
        return self.reader.histograms(run_id, name, [rank])

    def heatmap(self, run_id: str, name: str, max_steps: int = 200, max_rows: int = 120,
                rank: int | None = None) -> dict[str, Any]:
        """Histograms over time: ``z[row][column]`` counts of value bucket ``row`` at step ``steps[column]``.

        Columns are exact stored histograms (merged across ranks unless ``rank``), evenly picked when there are
        more than ``max_steps``. Rows are the scheme's log-linear buckets, ascending in value (so the value
        axis is logarithmic on both sides of zero), merged exactly to fewer mantissa bits until at most
        ``max_rows`` remain (or one bucket per power of two); ``lower``/``upper`` bound each row.
        """
        if max_steps < 1 or max_rows < 1:
            raise PanelError("steps and rows must be positive")
        hists = self._histograms(run_id, name, rank)
        total = len(hists)
        if total > max_steps:
            hists = [hists[i] for i in np.unique(np.linspace(0, total - 1, max_steps).round().astype(int))]
        if not hists:
            return {"run": run_id, "name": name, "total": 0, "steps": [], "k": 0, "lower": [], "upper": [], "z": []}
        k = min(h.k for h in hists)
        while True:
            scaled = [h if h.k == k else h.downscale(k) for h in hists]
            rows = np.unique(np.concatenate([h.indices.astype(np.int64) for h in scaled]))
            if len(rows) <= max_rows or k == 0:
                break
            k -= 1
        z = np.zeros((len(rows), len(scaled)), dtype=np.int64)
        for col, h in enumerate(scaled):
            z[np.searchsorted(rows, h.indices.astype(np.int64)), col] = h.counts
        lower, upper = Histogram(0, k, rows.astype(np.int32), np.zeros(len(rows), np.int64), 0, 0.0, 0.0,
                                 0.0).edges()
        return {"run": run_id, "name": name, "total": total, "steps": [h.step for h in scaled], "k": k,
                "lower": _floats(lower), "upper": _floats(upper), "z": z.tolist(),
                "nan": [h.nan for h in scaled], "inf": [h.pos_inf + h.neg_inf for h in scaled]}

    def histogram(self, run_id: str, name: str, step: int | None = None, rank: int | None = None, bins: int = 64
                  ) -> dict[str, Any]:
        """The histogram at ``step`` (the last one at or before it; default the last step): exact buckets
        (``lower``, ``upper``, ``counts``), the same counts in ``bins`` equal-width display bins over
        [min, max] (``bin_edges``, ``bin_counts``; see ``Histogram.to_bins``) and its statistics."""
        if not 1 <= bins <= 1000:
            raise PanelError(f"bins must be between 1 and 1000, got {bins}")
        hists = self._histograms(run_id, name, rank)
        if not hists:
            raise PanelError(f"run {run_id!r} has no histogram {name!r}", status=404)
        steps = np.array([h.step for h in hists])
        i = len(hists) - 1 if step is None else max(0, int(np.searchsorted(steps, step, side="right")) - 1)
        h = hists[i]
        lower, upper = h.edges()
        bin_edges, bin_counts = h.to_bins(bins)
        return {"run": run_id, "name": name, "step": h.step, "steps": steps.tolist(), "k": h.k,
                "bin_edges": _floats(bin_edges), "bin_counts": bin_counts.tolist(),
                "lower": _floats(lower), "upper": _floats(upper), "counts": h.counts.tolist(), "count": h.count,
                "sum": h.sum, "min": _floats(np.array([h.min]))[0], "max": _floats(np.array([h.max]))[0],
                "nan": h.nan, "pos_inf": h.pos_inf, "neg_inf": h.neg_inf}

    def skew(self, run_id: str) -> dict[str, Any]:
        """Per-rank step timing (straggler view), as ``RunView.step_skew``; NaN becomes null."""
        result = RunView(self.reader, self._record(run_id)).step_skew()
        for row in result["ranks"]:
            row["step_time"] = _floats(np.array([row["step_time"]]))[0]
        result["step_time_ratio"] = _floats(np.array([result["step_time_ratio"]]))[0]
        return result
