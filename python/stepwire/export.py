"""Export of a stored run: TensorBoard event files (written by the ``tensorboard`` package's own writer), and
CSV or Parquet tables (written by DuckDB) for analysis tools."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
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
    rank with ``per_rank``), histograms (merged exactly across ranks, or per rank) and images (the lowest rank's,
    or per rank). Returns that directory."""
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
                pieces = run.scalars_iter(s.name, ranks=[rank]) if rank is not None else \
                    run.scalars_iter(s.name, agg="mean")
                for pts in pieces:  # piece by piece: a series of any length
                    for step, value, wall in zip(pts["step"].tolist(), pts["value"].tolist(),
                                                 pts["wall_time"].tolist(), strict=True):
                        summary = Summary(value=[Summary.Value(tag=s.name, simple_value=value)])
                        writer.add_event(Event(wall_time=wall, step=step, summary=summary))
            else:
                hists = run.histograms(s.name, merge_ranks=rank is None)
                for h in hists:
                    if rank is not None and h.rank != rank:
                        continue
                    summary = Summary(value=[Summary.Value(tag=s.name, histo=tensorboard_histogram(h))])
                    writer.add_event(Event(wall_time=h.wall_time, step=h.step, summary=summary))
        _tensorboard_images(run, writer, rank)
        writer.close()
    return root


def _tensorboard_images(run: RunView, writer: Any, rank: int | None) -> None:
    """The run's images (``Run.log_image``) as TensorBoard image summaries, as stored (PNG, JPEG, GIF, WebP): one
    rank's (``rank``), or without it the lowest rank's image of each (name, step). One image in memory at a time."""
    import io

    from PIL import Image
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    chosen: dict[tuple[str, int], Any] = {}
    for item in run.media(kind="image"):
        if (rank is None or item.rank == rank) and (item.name, item.step) not in chosen:
            chosen[(item.name, item.step)] = item  # by (name, step, rank): the lowest rank comes first
    for item in chosen.values():
        content = item.bytes()
        with Image.open(io.BytesIO(content)) as im:  # the header only: the pixels stay encoded
            colorspace = len(im.getbands())
        image = Summary.Image(height=item.height, width=item.width, colorspace=colorspace,
                              encoded_image_string=content)
        writer.add_event(Event(wall_time=item.wall_time, step=item.step,
                               summary=Summary(value=[Summary.Value(tag=item.name, image=image)])))


COLUMNS = {"scalars": ("name", "step", "rank", "value", "wall_time"),
           "histograms": ("name", "step", "rank", "lower", "upper", "count")}
PART_ROWS = 1 << 20
"""Rows gathered before they are written out as one part (about 40 MiB of scalar rows)."""
MEMORY_LIMIT = "256MB"
"""DuckDB's memory limit while it writes an export (it spills the rest to the output directory)."""


def _scalar_rows(run: RunView) -> Iterator[dict[str, npt.NDArray[Any]]]:
    for s in run.series():
        if s.kind == "scalar":
            for pts in run.scalars_iter(s.name):
                yield {"name": np.full(len(pts["step"]), s.name, dtype=object), "step": pts["step"],
                       "rank": pts["rank"].astype(np.int32), "value": pts["value"], "wall_time": pts["wall_time"]}


def _histogram_rows(run: RunView) -> Iterator[dict[str, npt.NDArray[Any]]]:
    for s in run.series():
        if s.kind != "scalar":
            for h in run.histograms(s.name, merge_ranks=False):
                lower, upper = h.edges()
                n = len(h.counts)
                yield {"name": np.full(n, s.name, dtype=object), "step": np.full(n, h.step, dtype=np.int64),
                       "rank": np.full(n, h.rank if h.rank is not None else -1, dtype=np.int32),
                       "lower": lower, "upper": upper, "count": h.counts}


def _parts(rows: Iterator[dict[str, npt.NDArray[Any]]]) -> Iterator[dict[str, npt.NDArray[Any]]]:
    """``rows`` gathered into parts of about ``PART_ROWS`` rows."""
    held: list[dict[str, npt.NDArray[Any]]] = []
    count = 0
    for piece in rows:
        held.append(piece)
        count += len(piece["step"])
        if count >= PART_ROWS:
            yield {c: np.concatenate([p[c] for p in held]) for c in held[0]}
            held, count = [], 0
    if held:
        yield {c: np.concatenate([p[c] for p in held]) for c in held[0]}


def _sql_path(path: Path) -> str:
    return "'" + path.as_posix().replace("'", "''") + "'"


def _write(run: RunView, directory: str | os.PathLike[str], fmt: str) -> list[Path]:
    """Each table written part by part (Parquet files in a scratch directory), then copied into one file by
    DuckDB, which streams: memory stays at a part however many points the run holds."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".stepwire-export-", dir=out))
    con = duckdb.connect(config={"memory_limit": MEMORY_LIMIT, "temp_directory": str(scratch / "spill"),
                                 "threads": "2"})
    options = "FORMAT csv, HEADER" if fmt == "csv" else "FORMAT parquet"
    paths = []
    try:
        for table, rows in (("scalars", _scalar_rows(run)), ("histograms", _histogram_rows(run))):
            parts = []
            for i, part in enumerate(_parts(rows)):
                parts.append(scratch / f"{table}-{i:08d}.parquet")
                con.register("t", part)
                con.execute(f"COPY (SELECT * FROM t) TO {_sql_path(parts[-1])} (FORMAT parquet)")
                con.unregister("t")
            path = out / f"{table}.{fmt}"
            if parts:
                files = ", ".join(_sql_path(p) for p in parts)
                con.execute(f"COPY (SELECT * FROM read_parquet([{files}])) TO {_sql_path(path)} ({options})")
            else:
                con.register("t", {c: np.empty(0) for c in COLUMNS[table]})
                con.execute(f"COPY (SELECT * FROM t) TO {_sql_path(path)} ({options})")
                con.unregister("t")
            paths.append(path)
    finally:
        con.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return paths


def to_csv(run: RunView, directory: str | os.PathLike[str]) -> list[Path]:
    """Write ``scalars.csv`` (name, step, rank, value, wall_time: every stored point) and ``histograms.csv``
    (name, step, rank, lower, upper, count: one row per occupied bucket of every stored histogram)."""
    return _write(run, directory, "csv")


def to_parquet(run: RunView, directory: str | os.PathLike[str]) -> list[Path]:
    """Write ``scalars.parquet`` and ``histograms.parquet``, the same tables as ``to_csv``."""
    return _write(run, directory, "parquet")
