"""Export of a stored run: TensorBoard event files (written by the ``tensorboard`` package's own writer), and
CSV or Parquet tables (written by DuckDB) for analysis tools."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt

from stepwire.api import RunView
from stepwire.histogram import Histogram


def tensorboard_histogram(h: Histogram) -> Any:
    """``h`` as TensorBoard's ``HistogramProto``: one bucket per exact bucket, with an empty bucket put in every
    gap between occupied ones (TensorBoard reads bucket ``i`` as ``(limit[i-1], limit[i]]``).

    TensorBoard has no place for NaN or infinities: ``num`` counts the finite values. stepwire does not store
    the sum of squares; ``sum_squares`` is estimated from bucket midpoints (TensorBoard's charts do not use it).
    """
    from tensorboard.compat.proto.summary_pb2 import HistogramProto

    lower, upper = h.edges()
    limits: list[float] = []
    counts: list[float] = []
    for lo, hi, c in zip(lower.tolist(), upper.tolist(), h.counts.tolist(), strict=True):
        if limits and lo > limits[-1]:
            limits.append(lo)
            counts.append(0.0)
        elif not limits:
            limits.append(lo)  # the first bucket's lower edge: an empty bucket below everything
            counts.append(0.0)
        limits.append(hi)
        counts.append(float(c))
    mid = (lower + upper) / 2
    finite = int(h.counts.sum())
    return HistogramProto(min=h.min if finite else 0.0, max=h.max if finite else 0.0, num=finite, sum=h.sum,
                          sum_squares=float(np.sum(h.counts * mid * mid)), bucket_limit=limits, bucket=counts)


def to_tensorboard(run: RunView, logdir: str | os.PathLike[str], per_rank: bool = False) -> Path:
    """Write ``run`` under ``logdir/<run name>-<run id>``: scalars (the mean across ranks, or one directory per
    rank with ``per_rank``) and histograms (merged exactly across ranks, or per rank). Returns that directory."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    root = Path(logdir) / f"{run.name}-{run.id}".replace("/", "_")
    series = run.series()
    ranks = sorted({r for s in series for r in s.ranks}) if per_rank else [None]
    for rank in ranks:
        writer = EventFileWriter(str(root / f"rank{rank}" if rank is not None else root))
        for s in series:
            if s.kind == "scalar":
                pts = run.scalars(s.name, ranks=[rank]) if rank is not None else run.scalars(s.name, agg="mean")
                for step, value, wall in zip(pts["step"].tolist(), pts["value"].tolist(), pts["wall_time"].tolist(),
                                             strict=True):
                    summary = Summary(value=[Summary.Value(tag=s.name, simple_value=value)])
                    writer.add_event(Event(wall_time=wall, step=step, summary=summary))
            else:
                hists = run.histograms(s.name, merge_ranks=rank is None)
                for h in hists:
                    if rank is not None and h.rank != rank:
                        continue
                    summary = Summary(value=[Summary.Value(tag=s.name, histo=tensorboard_histogram(h))])
                    writer.add_event(Event(wall_time=h.wall_time, step=h.step, summary=summary))
        writer.close()
    return root


def _tables(run: RunView) -> dict[str, dict[str, npt.NDArray[Any]]]:
    parts: dict[str, list[dict[str, npt.NDArray[Any]]]] = {"scalars": [], "histograms": []}
    for s in run.series():
        if s.kind == "scalar":
            pts = run.scalars(s.name)
            parts["scalars"].append({"name": np.full(len(pts["step"]), s.name, dtype=object), "step": pts["step"],
                                     "rank": pts["rank"].astype(np.int32), "value": pts["value"],
                                     "wall_time": pts["wall_time"]})
            continue
        for h in run.histograms(s.name, merge_ranks=False):
            lower, upper = h.edges()
            n = len(h.counts)
            parts["histograms"].append({
                "name": np.full(n, s.name, dtype=object), "step": np.full(n, h.step, dtype=np.int64),
                "rank": np.full(n, h.rank if h.rank is not None else -1, dtype=np.int32),
                "lower": lower, "upper": upper, "count": h.counts})
    columns = {"scalars": ("name", "step", "rank", "value", "wall_time"),
               "histograms": ("name", "step", "rank", "lower", "upper", "count")}
    return {table: {c: np.concatenate([p[c] for p in rows]) if rows else np.empty(0) for c in columns[table]}
            for table, rows in parts.items()}


def _write(run: RunView, directory: str | os.PathLike[str], fmt: str) -> list[Path]:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    paths = []
    for table, columns in _tables(run).items():
        path = out / f"{table}.{fmt}"
        con.register("t", {c: (v.astype(str) if v.dtype == object else v) for c, v in columns.items()})
        options = "FORMAT csv, HEADER" if fmt == "csv" else "FORMAT parquet"
        con.execute(f"COPY (SELECT * FROM t) TO '{path.as_posix().replace(chr(39), chr(39) * 2)}' ({options})")
        con.unregister("t")
        paths.append(path)
    con.close()
    return paths


def to_csv(run: RunView, directory: str | os.PathLike[str]) -> list[Path]:
    """Write ``scalars.csv`` (name, step, rank, value, wall_time: every stored point) and ``histograms.csv``
    (name, step, rank, lower, upper, count: one row per occupied bucket of every stored histogram)."""
    return _write(run, directory, "csv")


def to_parquet(run: RunView, directory: str | os.PathLike[str]) -> list[Path]:
    """Write ``scalars.parquet`` and ``histograms.parquet``, the same tables as ``to_csv``."""
    return _write(run, directory, "parquet")
