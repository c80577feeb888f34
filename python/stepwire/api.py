"""``Api``: read runs, scalars, summaries and histograms back, per rank or aggregated across ranks."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from stepwire.collector.embedded import data_dir, running_collector
from stepwire.console import ConsoleLine
from stepwire.histogram import Histogram, merge_by_step
from stepwire.query_client import LocalReader, RemoteReader
from stepwire.store import is_url, open_store, store_spec
from stepwire.store.base import (
    ArtifactEntry,
    MediaEntry,
    Reader,
    RunRecord,
    ScalarPoints,
    SeriesRecord,
    TextEntry,
)

SKEW_SAMPLES = 1 << 22
"""Values ``step_skew`` keeps for its medians, over all ranks: exact up to that many steps, evenly thinned beyond."""

AGGREGATIONS = ("mean", "min", "max", "sum")


def _check_agg(agg: str | None) -> None:
    if agg is not None and agg not in AGGREGATIONS:
        raise ValueError(f"agg must be one of {AGGREGATIONS} or None, got {agg!r}")


def _columns(pts: ScalarPoints, agg: str | None) -> dict[str, npt.NDArray[Any]]:
    if agg is None:
        return {"step": pts.step, "value": pts.value, "wall_time": pts.wall_time, "rank": pts.rank}
    return aggregate(pts, agg)


SKEW_TIE = 0.1
"""Step times within this fraction of the longest count as equally slow: the one furthest behind is named."""


def _slowest(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row of the rank with the longest step time; among those within ``SKEW_TIE`` of it (or when no rank has
    a step time), the one with the largest lag."""
    timed = [r for r in rows if math.isfinite(r["step_time"])]
    if not timed:
        return max(rows, key=lambda r: r["lag"])
    longest = max(r["step_time"] for r in timed)
    near = longest - SKEW_TIE * abs(longest)  # the longest is always among them, whatever its sign
    return max((r for r in timed if r["step_time"] >= near), key=lambda r: r["lag"])


class _Sample:
    """Values kept for a median: every one up to ``cap``, then every 2nd, 4th, ... (evenly thinned)."""

    def __init__(self, cap: int) -> None:
        self.cap, self.stride, self.seen = cap, 1, 0
        self.parts: list[npt.NDArray[np.float64]] = []
        self.kept = 0

    def add(self, values: npt.NDArray[np.float64]) -> None:
        taken = values[(-self.seen) % self.stride::self.stride]  # those whose index is a multiple of the stride
        self.seen += len(values)
        self.parts.append(taken)
        self.kept += len(taken)
        while self.kept > self.cap:
            kept = np.concatenate(self.parts)[::2]
            self.parts, self.kept, self.stride = [kept], len(kept), 2 * self.stride

    def median(self, empty: float) -> float:
        return float(np.median(np.concatenate(self.parts))) if self.kept else empty


def aggregate(pts: ScalarPoints, agg: str) -> dict[str, npt.NDArray[Any]]:
    """One row per step of ``pts`` across ranks, as ``RunView.scalars(name, agg=...)`` returns it."""
    _check_agg(agg)
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


class MediaItem:
    """A stored media record: ``name``, ``step``, ``rank``, ``wall_time``, ``kind`` (image, audio, video, html,
    plotly, table), ``mime``, ``caption``, ``width``/``height`` (images), ``size`` in bytes, ``sha256``; its
    content through ``bytes()``, or decoded with ``image()``, ``figure()``, ``table()``."""

    def __init__(self, reader: Reader, run_id: str, entry: MediaEntry) -> None:
        self._reader = reader
        self.run_id = run_id
        self.entry = entry
        self.name, self.step, self.rank, self.wall_time = entry.name, entry.step, entry.rank, entry.wall_time
        self.kind, self.mime, self.caption = entry.kind, entry.mime, entry.caption
        self.width, self.height, self.size, self.sha256 = entry.width, entry.height, entry.size, entry.sha256

    def bytes(self) -> bytes:
        """The content as stored (PNG, WAV, MP4, HTML, Plotly JSON, Parquet, ...)."""
        return b"".join(self._reader.read_media(self.run_id, self.sha256))

    def image(self) -> Any:
        """The image as a PIL image (decoded in full; for GIFs the first frame)."""
        if self.kind != "image" and not self.mime.startswith("image/"):
            raise TypeError(f"{self.name!r} at step {self.step} is a {self.kind}, not an image")
        import io

        from PIL import Image

        im = Image.open(io.BytesIO(self.bytes()))
        im.load()
        return im

    def figure(self) -> dict[str, Any]:
        """A Plotly figure as its dict (``plotly.graph_objects.Figure(item.figure())`` makes it a figure)."""
        if self.kind != "plotly":
            raise TypeError(f"{self.name!r} at step {self.step} is a {self.kind}, not a Plotly figure")
        import json

        figure: dict[str, Any] = json.loads(self.bytes())
        return figure

    def table(self) -> Any:
        """A table as a pandas DataFrame when pandas is installed, else a dict of numpy columns."""
        if self.kind != "table":
            raise TypeError(f"{self.name!r} at step {self.step} is a {self.kind}, not a table")
        from stepwire.mediatypes import decode_parquet

        return decode_parquet(self.bytes())

    def __repr__(self) -> str:
        return f"<stepwire.MediaItem {self.kind} {self.name!r} step={self.step} rank={self.rank} {self.mime}>"


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

    def scalars(self, name: str, ranks: list[int] | None = None, agg: str | None = None,
                start_step: int | None = None, end_step: int | None = None) -> dict[str, npt.NDArray[Any]]:
        """Points of ``name`` as numpy arrays ``step``, ``value``, ``wall_time``, ``rank``, sorted by step (then
        rank, then logged order); only those with ``start_step <= step < end_step`` when given.

        With ``agg`` in mean/min/max/sum: one row per step across ranks, plus ``count`` (points at that step);
        ``rank`` is then the rank holding the min/max (-1 for mean/sum) and ``wall_time`` the latest one.
        min/max skip NaN unless a step has nothing else; mean/sum propagate NaN.

        Every point asked for is in memory at once (28 bytes each, twice that while the pieces are joined):
        read a series of any length with ``scalars_iter``, or a step range at a time.
        """
        _check_agg(agg)
        return _columns(self._reader.scalars(self.id, name, ranks, start_step, end_step), agg)

    def scalars_iter(self, name: str, ranks: list[int] | None = None, agg: str | None = None,
                     start_step: int | None = None, end_step: int | None = None
                     ) -> Iterator[dict[str, npt.NDArray[Any]]]:
        """What ``scalars`` returns (the same arguments, keys and order), in pieces: each holds a bounded number
        of points (about 262,144; more only where one step has more points) and whole steps, so that ``agg``
        applies piece by piece. Memory stays at a piece, however long the series."""
        _check_agg(agg)
        return (_columns(pts, agg) for pts in self._reader.scalar_pages(self.id, name, ranks, start_step, end_step))

    def step_skew(self, name: str | None = None) -> dict[str, Any]:
        """Per-rank step timing from the wall times stored with scalar series ``name`` (default: the scalar
        logged by the most ranks, then with the most points, leaving out the ``system/`` series the sampler logs on
        a clock), to spot a straggler.

        For each rank: ``steps``, ``step_time`` (median seconds per step) and ``lag`` (median over the steps
        all ranks logged of how far behind the median rank this rank logged it, in seconds). ``slowest`` is
        the rank with the longest step time (among those within ``SKEW_TIE`` of it, the one furthest behind;
        ``lag`` its lag, ``step_time_ratio`` its step time over the median); ``most_behind`` the rank with the
        largest lag (``most_behind_lag``), which without a start barrier need not be the slowest.
        The series is read piece by piece: medians are exact up to ``SKEW_SAMPLES`` steps over all ranks, and
        beyond that taken over evenly spaced steps; memory stays bounded however long the series.
        """
        scalars = [s for s in self.series() if s.kind == "scalar"]
        if name is None:
            timed = [s for s in scalars if not s.name.startswith("system/")]  # sampled on a clock, not per step
            if not timed:
                return {"series": None, "ranks": [], "slowest": None, "lag": 0.0, "step_time_ratio": 1.0,
                        "most_behind": None, "most_behind_lag": 0.0}
            name = max(timed, key=lambda s: (len(s.ranks), s.items)).name
        ranks = next((s.ranks for s in scalars if s.name == name), [])
        if not ranks:
            return {"series": name, "ranks": [], "slowest": None, "lag": 0.0, "step_time_ratio": 1.0,
                    "most_behind": None, "most_behind_lag": 0.0}
        cap = max(1024, SKEW_SAMPLES // (2 * len(ranks)))
        steps = dict.fromkeys(ranks, 0)
        last: dict[int, tuple[int, float]] = {}
        times = {r: _Sample(cap) for r in ranks}
        lags = {r: _Sample(cap) for r in ranks}
        for pts in self._reader.scalar_pages(self.id, name, ranks):
            # when each rank first logged each step (pieces are in (step, rank) order and hold whole steps)
            starts = np.flatnonzero(np.r_[True, (pts.step[1:] != pts.step[:-1]) | (pts.rank[1:] != pts.rank[:-1])])
            step, rank, wall = pts.step[starts], pts.rank[starts], np.minimum.reduceat(pts.wall_time, starts)
            for r in np.unique(rank).tolist():
                mine = rank == r
                s, w = step[mine], wall[mine]
                steps[r] += len(s)
                if r in last:
                    s, w = np.r_[last[r][0], s], np.r_[last[r][1], w]
                times[r].add(np.diff(w) / np.diff(s))
                last[r] = (int(s[-1]), float(w[-1]))
            # steps every rank logged: a run of len(ranks) rows, one per rank in rank order
            first = np.flatnonzero(np.r_[True, step[1:] != step[:-1]])
            common = first[np.diff(np.r_[first, len(step)]) == len(ranks)]
            if len(common):
                grid = wall[common[:, None] + np.arange(len(ranks))].T  # ranks x common steps
                behind = grid - np.median(grid, axis=0)
                for i, r in enumerate(ranks):
                    lags[r].add(behind[i])
        rows = [{"rank": r, "steps": steps[r], "step_time": times[r].median(float("nan")),
                 "lag": lags[r].median(0.0)} for r in ranks if steps[r]]
        if not rows:
            return {"series": name, "ranks": [], "slowest": None, "lag": 0.0, "step_time_ratio": 1.0,
                    "most_behind": None, "most_behind_lag": 0.0}
        slowest = _slowest(rows)
        behind = max(rows, key=lambda r: r["lag"])
        step_times = [r["step_time"] for r in rows if math.isfinite(r["step_time"])]
        median_step = float(np.median(step_times)) if step_times else float("nan")
        return {"series": name, "ranks": rows, "slowest": slowest["rank"], "lag": slowest["lag"],
                "step_time_ratio": slowest["step_time"] / median_step if median_step > 0 else 1.0,
                "most_behind": behind["rank"], "most_behind_lag": behind["lag"]}

    def summary(self) -> dict[str, dict[str, float]]:
        """``{name: {"last", "min", "max"}}`` for every scalar series (last = value at the highest step)."""
        return {e.name: {"last": e.last, "min": e.min, "max": e.max} for e in self._reader.summary(self.id)}

    def histograms(self, name: str, merge_ranks: bool = True) -> list[Histogram]:
        """Histograms of ``name`` by step; merged exactly across ranks (``rank`` None) unless ``merge_ranks=False``."""
        hists = self._reader.histograms(self.id, name)
        return merge_by_step(hists) if merge_ranks else hists

    def texts(self, name: str | None = None) -> list[TextEntry]:
        """Texts logged with ``Run.log_text`` (of ``name`` only, if given), by step; the records that hold console
        lines (``stepwire/console``) only when asked for by name (read them with ``console``)."""
        from stepwire.console import CONSOLE_NAME

        texts = self._reader.texts(self.id, name)
        return texts if name else [t for t in texts if t.name != CONSOLE_NAME]

    def console(self, rank: int | None = None) -> list[ConsoleLine]:
        """What the run's processes printed to stdout and stderr (of ``rank`` only, if given), as lines
        (``rank``, ``stream``, ``step``, ``wall_time``, ``text``): each rank's in the order printed, the ranks merged
        by wall time (``stepwire.console`` says what is captured and its limits)."""
        from stepwire.console import CONSOLE_NAME, parse

        return parse(self._reader.texts(self.id, CONSOLE_NAME), rank)

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

    def media(self, name: str | None = None, step: int | None = None, kind: str | None = None) -> list[MediaItem]:
        """Media records (``Run.log_image``/``log_media``/``log_plot``/``log_table``) of ``name``, at ``step``, of
        ``kind`` (each if given), by (name, step, rank); each reads its content on demand."""
        return [MediaItem(self._reader, self.id, e) for e in self._reader.media(self.id, name, step, kind)]

    def plots(self, name: str | None = None, step: int | None = None) -> list[MediaItem]:
        """The Plotly figures (``item.figure()``), as ``media(kind="plotly")``."""
        return self.media(name, step, "plotly")

    def tables(self, name: str | None = None, step: int | None = None) -> list[MediaItem]:
        """The tables (``item.table()``: a DataFrame, or a dict of numpy columns without pandas), as
        ``media(kind="table")``."""
        return self.media(name, step, "table")

    def table(self, name: str, step: int | None = None) -> Any:
        """Table ``name`` at ``step`` (default: its last step; rank 0's, else the lowest rank's), decoded as
        ``MediaItem.table`` does (``KeyError`` if there is none)."""
        items = self.tables(name, step)
        if not items:
            raise KeyError(f"run {self.id} has no table {name!r}" + ("" if step is None else f" at step {step}"))
        last = max(i.step for i in items)
        return min((i for i in items if i.step == last), key=lambda i: i.rank).table()

    def __repr__(self) -> str:
        return f"<stepwire.RunView {self.id} project={self.project!r} name={self.name!r} status={self.status}>"


class Api:
    """Read access to stored runs: ``Api(dir=...)`` (the embedded default), ``Api(address="host:port")`` or
    ``Api(store="postgresql://user@host/db")``.

    With ``dir`` (else ``$STEPWIRE_DIR``, else ``./stepwire-data``) it asks the directory's running collector,
    or reads the store file directly when none runs. A remote collector may want a bearer ``token`` (default
    ``$STEPWIRE_TOKEN``) and TLS (``tls_ca``: the PEM file of the CA that signed its certificate). ``store``
    (else, without ``dir``, ``$STEPWIRE_STORE``) a database URL reads that database directly (artifacts and media
    from ``blob_dir``, else ``$STEPWIRE_BLOB_DIR``, else ``{dir}/blobs``); a path there is taken as ``dir``.
    """

    def __init__(self, dir: str | os.PathLike[str] | None = None, address: str | None = None,
                 token: str | None = None, tls_ca: str | os.PathLike[str] | None = None,
                 store: str | None = None, blob_dir: str | os.PathLike[str] | None = None) -> None:
        if address is not None:
            self._reader: Reader = RemoteReader(address, token=token, tls_ca=tls_ca)
            return
        spec = store_spec(store) if store is not None or dir is None else None  # a dir given is read as given
        if is_url(spec):
            self._reader = open_store(spec, data_dir(dir), read_only=True, blob_dir=blob_dir)
            return
        directory = data_dir(dir if dir is not None or spec is None else spec)
        running = running_collector(directory)
        self._reader = RemoteReader(running) if running else LocalReader(directory)

    def runs(self, project: str | None = None) -> list[RunView]:
        """Every run (of ``project`` if given), oldest first."""
        return [RunView(self._reader, r) for r in self._reader.runs(project)]

    def run(self, run_id: str) -> RunView:
        """The run with id ``run_id``, or the one run whose id starts with it (as git takes a commit's prefix);
        ``KeyError`` if there is none, or if the prefix names several (the message lists them)."""
        runs = self._reader.runs()
        found = [r for r in runs if r.id == run_id]
        if not found and run_id:
            found = [r for r in runs if r.id.startswith(run_id)]
        if len(found) == 1:
            return RunView(self._reader, found[0])
        if found:
            shown = ", ".join(r.id for r in found[:5]) + (", ..." if len(found) > 5 else "")
            raise KeyError(f"run id prefix {run_id!r} matches {len(found)} runs ({shown}): give more of it")
        raise KeyError(f"no run {run_id!r}")
