"""A decoded batch as the rows the PostgreSQL store copies in: one scalar chunk row per series per batch (longer
runs cut into rows of ``MAX_CHUNK_POINTS``), points packed as in the DuckDB store, and one row per histogram."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from stepwire import _core
from stepwire.collector.decode import BatchError, DecodedBatch
from stepwire.store import overview

MAX_CHUNK_POINTS = 1024
"""Points per chunk row at most (24 KiB of packed points), as the DuckDB store keeps them."""

KIND_NAMES = {_core.KIND_SCALAR: "scalar", _core.KIND_HISTOGRAM: "histogram"}

CHUNK_COLUMNS = ("run_id", "rank", "name", "stream_id", "sequence", "n", "step_min", "step_max", "vmin", "vmax",
                 "last", "points", "overview")
CHUNK_TYPES = ("text", "int4", "text", "text", "int8", "int4", "int8", "int8", "float8", "float8", "float8",
               "bytea", "bytea")
HIST_COLUMNS = ("run_id", "rank", "name", "stream_id", "sequence", "step", "wall_time", "k", "count", "sum", "min",
                "max", "nan", "pos_inf", "neg_inf", "indices", "counts")
HIST_TYPES = ("text", "int4", "text", "text", "int8", "int8", "float8", "int2", "int8", "float8", "float8",
              "float8", "int8", "int8", "int8", "bytea", "bytea")


def names(ids: npt.NDArray[Any], defs: dict[int, tuple[str, int]], kind: int) -> list[str]:
    """The series names of ``ids`` (``BatchError`` for an id not defined, or defined as the other kind)."""
    out = []
    for sid in ids.tolist():
        d = defs.get(sid)
        if d is None:
            raise BatchError(f"series id {sid} is used before it is defined")
        if d[1] != kind:
            raise BatchError(f"series {d[0]!r} is a {KIND_NAMES[d[1]]}, not a {KIND_NAMES[kind]}")
        out.append(d[0])
    return out


def chunk_rows(batch: DecodedBatch, defs: dict[int, tuple[str, int]]) -> list[tuple[Any, ...]]:
    """Rows of ``CHUNK_COLUMNS`` for the batch's scalars, in logged order."""
    if len(batch.group_series) == 0:
        return []
    series = names(batch.group_series, defs, _core.KIND_SCALAR)
    lengths = batch.group_lengths.astype(np.int64)
    group_ends = np.cumsum(lengths)
    group_starts = group_ends - lengths
    parts = -(-lengths // MAX_CHUNK_POINTS)
    first = np.repeat(np.cumsum(parts) - parts, parts)
    starts = np.repeat(group_starts, parts) + (np.arange(int(parts.sum())) - first) * MAX_CHUNK_POINTS
    ends = np.minimum(starts + MAX_CHUNK_POINTS, np.repeat(group_ends, parts))
    row_names = [n for n, k in zip(series, parts.tolist(), strict=True) for _ in range(k)]
    steps, values, walls = batch.steps, batch.values, batch.wall_times
    step_min = np.minimum.reduceat(steps, starts)
    step_max = np.maximum.reduceat(steps, starts)
    with np.errstate(invalid="ignore"):
        vmin = np.fmin.reduceat(values, starts)
        vmax = np.fmax.reduceat(values, starts)
    last_idx = ends - 1
    for gi in np.flatnonzero(steps[last_idx] != step_max).tolist():  # "last": the value at the highest step
        seg = steps[starts[gi]:ends[gi]]
        last_idx[gi] = starts[gi] + len(seg) - 1 - int(np.argmax(seg[::-1]))
    overviews = overview.compute(steps, values, walls, starts, ends)
    # every chunk's steps, values and wall times back to back, packed at once; each row's bytes a slice of them
    counts = (ends - starts).astype(np.int64)
    packed = np.empty(3 * len(steps), dtype=np.int64)
    pos = np.arange(len(steps)) + 2 * np.repeat(starts, counts)
    each = np.repeat(counts, counts)
    packed[pos] = steps
    packed[pos + each] = values.view(np.int64)
    packed[pos + 2 * each] = walls.view(np.int64)
    raw = packed.tobytes()
    run_id, rank, stream_id, sequence = batch.run_id, batch.rank, batch.stream_id, batch.sequence
    return [(run_id, rank, name, stream_id, sequence, n, lo_step, hi_step, lo, hi, last, raw[24 * a:24 * b], ov)
            for name, n, lo_step, hi_step, lo, hi, last, a, b, ov in zip(
                row_names, counts.tolist(), step_min.tolist(), step_max.tolist(), _nullables(vmin),
                _nullables(vmax), _nullables(values[last_idx]), starts.tolist(), ends.tolist(), overviews,
                strict=True)]


def _nullables(v: npt.NDArray[np.float64]) -> list[float | None]:
    """Floats for PostgreSQL, NaN as NULL (the readers map it back)."""
    return [None if x != x else x for x in v.tolist()]


def _nullable(v: Any) -> float | None:
    """A float for PostgreSQL, NaN as NULL (as DuckDB's aggregates give a min of NaNs: the readers map it back)."""
    f = float(v)
    return None if f != f else f


def histogram_rows(batch: DecodedBatch, defs: dict[int, tuple[str, int]]) -> list[tuple[Any, ...]]:
    """Rows of ``HIST_COLUMNS`` for the batch's histograms."""
    h = batch.hist
    if batch.histogram_count == 0:
        return []
    series = names(h["series_ids"], defs, _core.KIND_HISTOGRAM)
    ends = np.cumsum(h["bucket_lengths"], dtype=np.int64)
    starts = ends - h["bucket_lengths"]
    idx, cnt = h["bucket_indices"], h["bucket_counts"]
    cols = [h[c].tolist() for c in ("steps", "wall_times", "k", "count", "sum", "min", "max", "nan", "pos_inf",
                                    "neg_inf")]
    rows = []
    for i, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        step, wall, k, count, total, lo, hi, nan, pos, neg = (c[i] for c in cols)
        rows.append((batch.run_id, batch.rank, series[i], batch.stream_id, batch.sequence, step, wall, k, count,
                     total, _nullable(lo), _nullable(hi), nan, pos, neg, idx[a:b].tobytes(), cnt[a:b].tobytes()))
    return rows
