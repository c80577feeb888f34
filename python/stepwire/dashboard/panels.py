"""The data of every dashboard panel, as JSON-ready dicts, read through a store ``Reader``.

Floats that JSON cannot hold (NaN, ±inf) become ``null`` in chart data (a gap in a chart); each panel says how
many points it left out that way (``nonfinite``). Elsewhere (a run's config, a histogram's sum) the server sends
them as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.
"""

from __future__ import annotations

import math
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from stepwire.api import RunView, aggregate
from stepwire.dashboard.compare import grouping
from stepwire.dashboard.downsample import from_blocks, min_points_for_blocks
from stepwire.histogram import Histogram, merge_by_step
from stepwire.mediatypes import KINDS as MEDIA_KINDS
from stepwire.store.base import MediaEntry, Reader, RunRecord, ScalarPoints

X_AXES = ("step", "wall_time")
MAX_POINTS = 20_000
"""The most points a chart may ask for per curve."""
CONSOLE_LINES = 1_000
MAX_CONSOLE_LINES = 20_000
"""The most console lines the console panel may ask for at once (the last ones; 1,000 by default)."""
MAX_MEDIA_NAMES = 500
"""The most media names one ``media`` answer lists (the first in name order; ``names_total`` counts them all)."""
MAX_MEDIA_STEPS = 1_000
"""The most steps of one media name a ``media`` answer lists: evenly picked, the last among them."""
MAX_MEDIA_ITEMS = 20_000
"""The most records one ``media`` answer lists in all: past that, every name lists fewer steps (halved until they
fit; at least its last step)."""
TABLE_ROWS = 1_000
MAX_TABLE_ROWS = 10_000
"""The most rows of a table one ``media_table`` answer holds (the first ones; 1,000 by default)."""
MAX_CELL_CHARS = 1_000
"""Longer text in a table cell is cut to this many characters (and ends with an ellipsis)."""
_SHA256 = re.compile(r"[0-9a-f]{64}")


class PanelError(ValueError):
    """A request the panels cannot answer (bad parameter); ``status`` is the HTTP status to send."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _floats(values: npt.NDArray[Any]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).tolist()]


def _section(name: str) -> str:
    return name.split("/", 1)[0] if "/" in name else ""


class _Downsample:
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


def _union(chosen: list[dict[str, npt.NDArray[Any]]]) -> dict[str, npt.NDArray[Any]]:
    """The points chosen by any of several curves over the same rows, once each, in x order."""
    rows = {c: np.concatenate([r[c] for r in chosen]) for c in chosen[0] if c != "buckets"}
    _, first = np.unique(rows["order"], return_index=True)
    rows = {c: v[first] for c, v in rows.items()}
    by_x = np.lexsort((rows["order"], rows["x"]))
    return {c: v[by_x] for c, v in rows.items()}


class _Curves:
    """The curves of one chart read piece by piece: one per rank and, for several ranks, the cross-rank mean
    with its min/max band (three curves over the same rows, ``points // 3`` each)."""

    def __init__(self, x: str, points: int, several_ranks: bool,
                 ranges: dict[int | str, tuple[float, float]] | None = None) -> None:
        self.x, self.points, self.several_ranks, self.ranges = x, points, several_ranks, ranges
        self.per_rank: dict[int, _Downsample] = {}
        self.agg: tuple[_Downsample, _Downsample, _Downsample] | None = None
        if several_ranks and (ranges is None or "agg" in ranges):
            third = max(2, points // 3)
            span = ranges["agg"] if ranges is not None else None
            self.agg = (_Downsample(third, span), _Downsample(third, span), _Downsample(third, span))
        self.total = self.nonfinite = self.last_step = 0
        self._seen = self._steps = 0

    def add(self, pts: ScalarPoints) -> None:
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
                curve = self.per_rank[rank] = _Downsample(self.points, self.ranges[rank] if self.ranges else None)
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

    def again(self) -> _Curves | None:
        """The curves to read again (those that had too many points), bucketed over the x range seen; None if
        every curve kept all its points."""
        ranges: dict[int | str, tuple[float, float]] = {
            rank: (c.x_min, c.x_max) for rank, c in self.per_rank.items() if c.overflow}
        if self.agg is not None and self.agg[0].overflow:
            ranges["agg"] = (self.agg[0].x_min, self.agg[0].x_max)
        return _Curves(self.x, self.points, self.several_ranks, ranges) if ranges else None


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
        """The runs table: one row per run, newest first, with duration, ranks, logging overhead, and ``group`` and
        ``job_type`` (``compare.grouping``)."""
        now = time.time()
        rows = []
        for r in reversed(self.reader.runs(project)):
            ranks = sorted(int(k) for k in r.meta.get("ranks", {}) if str(k).isdigit())
            end = r.finished if r.finished else now
            rows.append({"id": r.id, "project": r.project, "name": r.name, "status": r.status,
                         "created": r.created, "finished": r.finished or None,
                         "duration": max(0.0, end - r.created) if r.created else None, "tags": r.tags,
                         "config": r.config, "ranks": ranks or [0], "rank_status": r.meta.get("ranks", {}),
                         "overhead": r.meta.get("overhead", {}), **grouping(r)})
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
        ranks = next((r.ranks for r in self.reader.series(run_id) if r.name == name and r.kind == "scalar"), [])
        # a series of any length in bounded memory: read piece by piece, keeping every point of a curve while it
        # has few enough; a curve with more is chosen from in a second read, per bucket of the x range seen
        first = _Curves(x, points, len(ranks) > 1)
        for pts in self.reader.scalar_pages(run_id, name):
            first.add(pts)
        second = first.again()
        if second is not None:
            for pts in self.reader.scalar_pages(run_id, name, end_step=first.last_step + 1):
                second.add(pts)
        out: dict[str, Any] = {"run": run_id, "name": name, "x": x, "total": first.total,
                               "nonfinite": first.nonfinite, "ranks": [], "agg": None}
        for rank, curve in sorted(first.per_rank.items()):
            if curve.overflow and second is not None:
                curve = second.per_rank[rank]
            chosen = curve.result()
            out["ranks"].append({"rank": rank, "total": curve.n, "x": _floats(chosen["x"]), "y": _floats(chosen["y"]),
                                 "buckets": _floats(chosen["buckets"])})
        if first.agg is not None:
            band = first.agg if not first.agg[0].overflow or second is None or second.agg is None else second.agg
            chosen = _union([c.result() for c in band])
            out["agg"] = {"x": _floats(chosen["x"]), "mean": _floats(chosen["mean"]), "min": _floats(chosen["min"]),
                          "max": _floats(chosen["max"]), "count": chosen["count"].astype(np.int64).tolist(),
                          "total": band[0].n}
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

    def console(self, run_id: str, rank: int | None = None, search: str = "", limit: int = CONSOLE_LINES
                ) -> dict[str, Any]:
        """What the run's ranks printed (``RunView.console``): the last ``limit`` lines of ``rank`` (every rank's if
        None) that contain ``search`` (case-insensitive), in order; ``ranks`` that printed anything, ``matched``
        lines before the limit, ``total`` lines of the run."""
        if not 1 <= limit <= MAX_CONSOLE_LINES:
            raise PanelError(f"lines must be between 1 and {MAX_CONSOLE_LINES}, got {limit}")
        lines = RunView(self.reader, self._record(run_id)).console()
        ranks = sorted({line.rank for line in lines})
        needle = search.lower()
        chosen = [line for line in lines
                  if (rank is None or line.rank == rank) and (not needle or needle in line.text.lower())]
        return {"run": run_id, "ranks": ranks, "total": len(lines), "matched": len(chosen),
                "lines": [{"rank": line.rank, "stream": line.stream, "step": line.step, "wall_time": line.wall_time,
                           "text": line.text} for line in chosen[-limit:]]}

    def media(self, run_id: str, name: str | None = None, kind: str | None = None) -> dict[str, Any]:
        """The run's media records (of ``name``, of ``kind``, if given) grouped by name, each name with its
        ``steps`` in order and, per step, its ``items`` (one per rank: ``rank``, ``kind``, ``mime``, ``caption``,
        ``width``, ``height``, ``size``, ``sha256``, ``wall_time``). At most ``MAX_MEDIA_NAMES`` names,
        ``MAX_MEDIA_STEPS`` steps per name (evenly picked, the last one kept) and ``MAX_MEDIA_ITEMS`` records in
        all (fewer steps per name past that); ``names_total`` and each name's ``steps_total`` count them all,
        ``total`` the records."""
        self._record(run_id)
        if kind is not None and kind not in MEDIA_KINDS:
            raise PanelError(f"kind must be one of {MEDIA_KINDS}, got {kind[:40]!r}")
        entries = self.reader.media(run_id, name or None, None, kind)
        by_name: dict[str, dict[int, list[MediaEntry]]] = {}
        for e in entries:
            by_name.setdefault(e.name, {}).setdefault(e.step, []).append(e)
        listed = sorted(by_name)[:MAX_MEDIA_NAMES]
        all_steps = {n: sorted(by_name[n]) for n in listed}
        cap = MAX_MEDIA_STEPS
        while True:
            shown = {n: _pick(steps, cap) for n, steps in all_steps.items()}
            if cap == 1 or sum(len(by_name[n][s]) for n, steps in shown.items() for s in steps) <= MAX_MEDIA_ITEMS:
                break
            cap //= 2
        names = []
        for n in listed:
            last = by_name[n][all_steps[n][-1]]
            names.append({"name": n, "kind": last[0].kind, "steps_total": len(all_steps[n]),
                          "steps": [{"step": s, "items": [_media_item(e) for e in by_name[n][s]]} for s in shown[n]]})
        return {"run": run_id, "total": len(entries), "names_total": len(by_name), "names": names}

    def media_entry(self, run_id: str, sha256: str, name: str | None = None) -> MediaEntry:
        """The run's media record holding content ``sha256`` (of ``name``, if given): 404 when it has none."""
        if not _SHA256.fullmatch(sha256):
            raise PanelError("sha must be 64 lower-case hexadecimal digits")
        self._record(run_id)
        for e in self.reader.media(run_id, name or None):
            if e.sha256 == sha256:
                return e
        raise PanelError(f"run {run_id!r} has no media record with content {sha256}", status=404)

    def media_blob(self, run_id: str, sha256: str, name: str | None = None) -> tuple[MediaEntry, Iterator[bytes]]:
        """The stored record with content ``sha256`` (its mime type is what the content is sent as) and the
        content in pieces; 404 when the run has no record with it."""
        entry = self.media_entry(run_id, sha256, name)
        return entry, self.reader.read_media(run_id, sha256)

    def media_table(self, run_id: str, sha256: str, name: str | None = None, rows: int = TABLE_ROWS
                    ) -> dict[str, Any]:
        """A stored table as JSON columns: ``columns`` (names), ``types`` (DuckDB's type names), ``data`` (one
        list per column) of its first ``rows`` rows (at most ``MAX_TABLE_ROWS``), ``rows_total`` and
        ``truncated``. Text longer than ``MAX_CELL_CHARS`` is cut; values other than numbers, text, booleans and
        null are sent as text."""
        if not 1 <= rows <= MAX_TABLE_ROWS:
            raise PanelError(f"rows must be between 1 and {MAX_TABLE_ROWS}, got {rows}")
        entry = self.media_entry(run_id, sha256, name)
        if entry.kind != "table":
            raise PanelError(f"{entry.name!r} at step {entry.step} is a {entry.kind}, not a table")
        import duckdb

        with tempfile.TemporaryDirectory(prefix="stepwire-table-") as tmp, duckdb.connect() as con:
            path = Path(tmp) / "t.parquet"
            with path.open("wb") as f:
                for chunk in self.reader.read_media(run_id, sha256):
                    f.write(chunk)
            total = con.execute("SELECT count(*) FROM read_parquet(?)", [str(path)]).fetchone()
            rel = con.execute("SELECT * FROM read_parquet(?) LIMIT ?", [str(path), rows])
            columns = [d[0] for d in rel.description or []]
            types = [str(d[1]) for d in rel.description or []]
            fetched = rel.fetchall()
        data = [[_cell(row[i]) for row in fetched] for i in range(len(columns))]
        rows_total = int(total[0]) if total else len(fetched)
        return {"run": run_id, "name": entry.name, "step": entry.step, "columns": columns, "types": types,
                "data": data, "rows": len(fetched), "rows_total": rows_total, "truncated": rows_total > len(fetched)}

    def skew(self, run_id: str) -> dict[str, Any]:
        """Per-rank step timing (straggler view), as ``RunView.step_skew``; NaN becomes null. With the system
        series of ``stepwire.system``: ``system``, per rank, the medians of GPU utilisation, SM clock, process CPU
        and RSS and the share of samples with GPU throttle reasons, and ``cause``, what stands out for the slowest
        rank (``likely_cause``; "" without system series)."""
        view = RunView(self.reader, self._record(run_id))
        result = view.step_skew()
        per_rank = system_by_rank(view)
        result["system"] = {str(r): v for r, v in sorted(per_rank.items())}
        result["cause"] = likely_cause(result["slowest"], per_rank) if result["slowest"] is not None else ""
        for row in result["ranks"]:
            row["step_time"] = _floats(np.array([row["step_time"]]))[0]
        result["step_time_ratio"] = _floats(np.array([result["step_time_ratio"]]))[0]
        return result


def _pick(steps: list[int], cap: int) -> list[int]:
    """At most ``cap`` of ``steps``, evenly picked, the last always among them."""
    if len(steps) <= cap:
        return steps
    if cap == 1:
        return steps[-1:]
    return [steps[i] for i in np.unique(np.linspace(0, len(steps) - 1, cap).round().astype(int))]


def _media_item(e: MediaEntry) -> dict[str, Any]:
    return {"rank": e.rank, "kind": e.kind, "mime": e.mime, "caption": e.caption, "width": e.width,
            "height": e.height, "size": e.size, "sha256": e.sha256, "wall_time": e.wall_time}


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_CELL_CHARS else text[:MAX_CELL_CHARS - 1] + "…"


SYSTEM_SIGNS = {"system/gpu/utilization": "gpu_utilization", "system/gpu/sm_clock_mhz": "gpu_sm_clock_mhz",
                "system/gpu/throttle_reasons": "gpu_throttled", "system/cpu_percent": "cpu_percent",
                "system/rss_mib": "rss_mib"}
"""The system series (``stepwire.system``) the straggler view summarises per rank, and their keys there."""


def system_by_rank(view: RunView) -> dict[int, dict[str, float]]:
    """Per rank, the median of each of ``SYSTEM_SIGNS`` over the run (``gpu_throttled``: the share of samples
    with any throttle reason)."""
    names = {s.name for s in view.series() if s.kind == "scalar"}
    out: dict[int, dict[str, float]] = {}
    for name, key in SYSTEM_SIGNS.items():
        if name not in names:
            continue
        pts = view.scalars(name)
        for r in np.unique(pts["rank"]).tolist():
            values = pts["value"][(pts["rank"] == r) & np.isfinite(pts["value"])]
            if len(values):
                out.setdefault(int(r), {})[key] = float(np.mean(values != 0) if key == "gpu_throttled"
                                                        else np.median(values))
    return out


def likely_cause(slowest: int, per_rank: dict[int, dict[str, float]]) -> str:
    """What stands out in the system figures of rank ``slowest`` against the median of the other ranks: GPU clocks
    held back (throttle reasons in most samples), the lowest SM clock (10% below), the least busy GPU (15 points
    below: the rank waits on something else) or the busiest CPU (25% and 10 points above); "no system metric
    stands out" when none does, "" without figures for it and another rank."""
    mine = per_rank.get(slowest, {})
    others = [v for r, v in per_rank.items() if r != slowest]

    def typical(key: str) -> float | None:
        values = [v[key] for v in others if key in v]
        return float(np.median(values)) if values else None

    if not mine or not others:
        return ""
    causes = []
    throttled, usual = mine.get("gpu_throttled"), typical("gpu_throttled")
    if throttled is not None and usual is not None and throttled > 0.5 and throttled > usual + 0.25:
        causes.append(f"its GPU's clocks were held back (throttle reasons) in {throttled:.0%} of samples, the "
                      f"others' in {usual:.0%}")
    clock, usual = mine.get("gpu_sm_clock_mhz"), typical("gpu_sm_clock_mhz")
    if clock is not None and usual and clock < 0.9 * usual:
        causes.append(f"its GPU's SM clock is lowest: {clock:.0f} MHz against {usual:.0f}")
    busy, usual = mine.get("gpu_utilization"), typical("gpu_utilization")
    if busy is not None and usual is not None and busy < usual - 15:
        causes.append(f"its GPU is the least busy: {busy:.0f}% against {usual:.0f}% (the rank waits on something "
                      "else: input, CPU work, communication)")
    cpu, usual = mine.get("cpu_percent"), typical("cpu_percent")
    if cpu is not None and usual is not None and cpu > 1.25 * usual + 10:
        causes.append(f"its process uses the most CPU: {cpu:.0f}% against {usual:.0f}%")
    return "; ".join(causes) or "no system metric stands out"
