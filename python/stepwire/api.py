"""``Api``: read runs, scalars, summaries and histograms back, per rank or aggregated across ranks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from stepwire.collector.embedded import data_dir, running_collector
from stepwire.histogram import Histogram, merge_by_step
from stepwire.query_client import LocalReader, RemoteReader
from stepwire.store.base import ArtifactEntry, Reader, RunRecord, ScalarPoints, SeriesRecord, TextEntry

AGGREGATIONS = ("mean", "min", "max", "sum")


def aggregate(pts: ScalarPoints, agg: str) -> dict[str, npt.NDArray[Any]]:
    """One row per step of ``pts`` across ranks, as ``RunView.scalars(name, agg=...)`` returns it."""
    if agg not in AGGREGATIONS:
        raise ValueError(f"agg must be one of {AGGREGATIONS} or None, got {agg!r}")
    if len(pts.step) == 0:
        empty = {"step": pts.step, "value": pts.value, "wall_time": pts.wall_time}
        return {**empty, "rank": np.empty(0, np.int64), "count": np.empty(0, np.int64)}
    starts = np.flatnonzero(np.r_[True, pts.step[1:] != pts.step[:-1]])
    count = np.diff(np.r_[starts, len(pts.step)])
    rank = np.full(len(starts), -1, dtype=np.int64)
    if agg in ("mean", "sum"):
        value = np.add.reduceat(pts.value, starts)
        if agg == "mean":
            value = value / count
    else:
        key = pts.value if agg == "min" else -pts.value
        order = np.lexsort((key, pts.step))  # NaN sorts last: picked only when a step has nothing else
        first = order[starts]
        value, rank = pts.value[first], pts.rank[first].astype(np.int64)
    return {"step": pts.step[starts], "value": value, "wall_time": np.maximum.reduceat(pts.wall_time, starts),
            "rank": rank, "count": count}


class RunView:
    """One stored run: its metadata as attributes, its data through methods."""

    def __init__(self, reader: Reader, record: RunRecord) -> None:
        self._reader = reader
        self.id = record.id
        self.project = record.project
        self.name = record.name
        self.tags = record.tags
        self.config = record.config
        self.created = record.created
        self.status = record.status
        self.finished = record.finished
        self.meta = record.meta

    def series(self) -> list[SeriesRecord]:
        """Every series name of the run with its kind, ranks and item count."""
        return self._reader.series(self.id)

    def scalars(self, name: str, ranks: list[int] | None = None, agg: str | None = None
                ) -> dict[str, npt.NDArray[Any]]:
        """Points of ``name`` as numpy arrays ``step``, ``value``, ``wall_time``, ``rank``, sorted by step.

        With ``agg`` in mean/min/max/sum: one row per step across ranks, plus ``count`` (points at that step);
        ``rank`` is then the rank holding the min/max (-1 for mean/sum) and ``wall_time`` the latest one.
        min/max skip NaN unless a step has nothing else; mean/sum propagate NaN.
        """
        pts = self._reader.scalars(self.id, name, ranks)
        if agg is None:
            return {"step": pts.step, "value": pts.value, "wall_time": pts.wall_time, "rank": pts.rank}
        return aggregate(pts, agg)

    def step_skew(self, name: str | None = None) -> dict[str, Any]:
        """Per-rank step timing from the wall times stored with scalar series ``name`` (default: the scalar
        logged by the most ranks, then with the most points), to spot a straggler.

        For each rank: ``steps``, ``step_time`` (median seconds per step) and ``lag`` (median over the steps
        all ranks logged of how far behind the median rank this rank logged it, in seconds). ``slowest`` is
        the rank with the largest lag (``lag`` its lag, ``step_time_ratio`` its step time over the median).
        """
        if name is None:
            scalars = [s for s in self.series() if s.kind == "scalar"]
            if not scalars:
                return {"series": None, "ranks": [], "slowest": None, "lag": 0.0, "step_time_ratio": 1.0}
            name = max(scalars, key=lambda s: (len(s.ranks), s.items)).name
        pts = self._reader.scalars(self.id, name)
        per_rank: dict[int, dict[int, float]] = {}
        for step, wall, rank in zip(pts.step.tolist(), pts.wall_time.tolist(), pts.rank.tolist(), strict=True):
            first = per_rank.setdefault(rank, {})
            first[step] = min(wall, first.get(step, wall))  # when the rank first logged that step
        common = sorted(set.intersection(*(set(w) for w in per_rank.values()))) if per_rank else []
        grid = np.array([[per_rank[r][s] for s in common] for r in sorted(per_rank)]).reshape(len(per_rank), -1)
        lags = grid - np.median(grid, axis=0) if grid.size else grid
        rows = []
        for i, rank in enumerate(sorted(per_rank)):
            steps = np.array(sorted(per_rank[rank]))
            walls = np.array([per_rank[rank][s] for s in steps])
            per_step = np.diff(walls) / np.diff(steps) if len(steps) > 1 else np.array([np.nan])
            rows.append({"rank": rank, "steps": len(steps), "step_time": float(np.median(per_step)),
                         "lag": float(np.median(lags[i])) if lags.size else 0.0})
        if not rows:
            return {"series": name, "ranks": [], "slowest": None, "lag": 0.0, "step_time_ratio": 1.0}
        slowest = max(rows, key=lambda r: r["lag"])
        median_step = float(np.nanmedian([r["step_time"] for r in rows]))
        return {"series": name, "ranks": rows, "slowest": slowest["rank"], "lag": slowest["lag"],
                "step_time_ratio": slowest["step_time"] / median_step if median_step > 0 else 1.0}

    def summary(self) -> dict[str, dict[str, float]]:
        """``{name: {"last", "min", "max"}}`` for every scalar series (last = value at the highest step)."""
        return {e.name: {"last": e.last, "min": e.min, "max": e.max} for e in self._reader.summary(self.id)}

    def histograms(self, name: str, merge_ranks: bool = True) -> list[Histogram]:
        """Histograms of ``name`` by step; merged exactly across ranks (``rank`` None) unless ``merge_ranks=False``."""
        hists = self._reader.histograms(self.id, name)
        return merge_by_step(hists) if merge_ranks else hists

    def texts(self, name: str | None = None) -> list[TextEntry]:
        """Texts logged with ``Run.log_text`` (of ``name`` only, if given), by step."""
        return self._reader.texts(self.id, name)

    def artifacts(self) -> list[ArtifactEntry]:
        """Files stored with the run (``name``, ``size`` in bytes, ``step``, ``sha256``, ...), by name."""
        return self._reader.artifacts(self.id)

    def download_artifact(self, name: str, dest: str | os.PathLike[str]) -> Path:
        """Copy artifact ``name`` to ``dest`` (a file path, or an existing directory); returns the file written."""
        target = Path(dest)
        if target.is_dir():
            target = target / Path(name).name
        pieces = iter(self._reader.read_artifact(self.id, name))
        first = next(pieces, b"")  # raises KeyError before any file is created
        tmp = target.with_name(f".{target.name}.part")
        with open(tmp, "wb") as f:
            f.write(first)
            for chunk in pieces:
                f.write(chunk)
        shutil.move(tmp, target)
        return target

    def __repr__(self) -> str:
        return f"<stepwire.RunView {self.id} project={self.project!r} name={self.name!r} status={self.status}>"


class Api:
    """Read access to stored runs: ``Api(dir=...)`` (the embedded default) or ``Api(address="host:port")``.

    With ``dir`` (else ``$STEPWIRE_DIR``, else ``./stepwire-data``) it asks the directory's running collector,
    or reads the store file directly when none runs. A remote collector may want a bearer ``token`` (default
    ``$STEPWIRE_TOKEN``) and TLS (``tls_ca``: the PEM file of the CA that signed its certificate).
    """

    def __init__(self, dir: str | os.PathLike[str] | None = None, address: str | None = None,
                 token: str | None = None, tls_ca: str | os.PathLike[str] | None = None) -> None:
        if address is not None:
            self._reader: Reader = RemoteReader(address, token=token, tls_ca=tls_ca)
            return
        directory = data_dir(dir)
        running = running_collector(directory)
        self._reader = RemoteReader(running) if running else LocalReader(directory)

    def runs(self, project: str | None = None) -> list[RunView]:
        """Every run (of ``project`` if given), oldest first."""
        return [RunView(self._reader, r) for r in self._reader.runs(project)]

    def run(self, run_id: str) -> RunView:
        """The run with id ``run_id`` (``KeyError`` if there is none)."""
        for r in self._reader.runs():
            if r.id == run_id:
                return RunView(self._reader, r)
        raise KeyError(f"no run {run_id!r}")
