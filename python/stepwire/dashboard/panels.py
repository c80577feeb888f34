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

from stepwire.api import RunView
from stepwire.dashboard.compare import grouping
from stepwire.dashboard.curves import Curves, union_points
from stepwire.dashboard.downsample import from_blocks, min_points_for_blocks
from stepwire.dashboard.skew_cause import SYSTEM_SIGNS as SYSTEM_SIGNS
from stepwire.dashboard.skew_cause import likely_cause as likely_cause
from stepwire.dashboard.skew_cause import system_by_rank as system_by_rank
from stepwire.histogram import Histogram, merge_by_step
from stepwire.mediatypes import KINDS as MEDIA_KINDS
from stepwire.store.base import MediaEntry, Reader, RunRecord

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
        first = Curves(x, points, len(ranks) > 1)
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
            chosen = union_points([c.result() for c in band])
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
