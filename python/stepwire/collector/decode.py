"""Batch -> numpy arrays: decompress and check every column of an incoming batch, with no per-point objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lz4.block
import numpy as np
import numpy.typing as npt

from stepwire import _core
from stepwire.v1 import ingest_pb2

MAX_COLUMN_BYTES = 256 << 20
"""Largest decompressed column accepted; guards against a forged size prefix."""

KINDS = {_core.KIND_SCALAR, _core.KIND_HISTOGRAM}


class BatchError(ValueError):
    """A batch that is malformed or corrupt; the collector answers INVALID_ARGUMENT."""


@dataclass
class DecodedBatch:
    """One batch as arrays; scalars grouped by series in ``group_series``/``group_lengths``."""

    run_id: str
    rank: int
    stream_id: str
    sequence: int
    defs: list[tuple[int, str, int]]
    group_series: npt.NDArray[np.uint32]
    group_lengths: npt.NDArray[np.uint32]
    steps: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    wall_times: npt.NDArray[np.float64]
    hist: dict[str, npt.NDArray[Any]] = field(default_factory=dict)

    @property
    def point_count(self) -> int:
        """Scalar points in the batch."""
        return len(self.steps)

    @property
    def histogram_count(self) -> int:
        """Histograms in the batch."""
        return len(self.hist.get("series_ids", ()))

    @property
    def items(self) -> int:
        """Scalar points plus histograms."""
        return self.point_count + self.histogram_count


def _column(raw: bytes, dtype: type[np.generic], compressed: bool, what: str) -> npt.NDArray[Any]:
    data = raw
    if compressed and raw:
        if len(raw) < 4:
            raise BatchError(f"column {what}: truncated LZ4 block")
        size = int.from_bytes(raw[:4], "little", signed=True)
        if size < 0 or size > MAX_COLUMN_BYTES:
            raise BatchError(f"column {what}: declared size {size} is outside [0, {MAX_COLUMN_BYTES}]")
        try:
            data = lz4.block.decompress(raw)
        except Exception as exc:  # lz4 raises LZ4BlockError (a plain Exception subclass)
            raise BatchError(f"column {what}: corrupt LZ4 block ({exc})") from None
    itemsize = np.dtype(dtype).itemsize
    if len(data) % itemsize:
        raise BatchError(f"column {what}: {len(data)} bytes is not a whole number of {np.dtype(dtype).name}")
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"))


_HIST_COLUMNS: dict[str, type[np.generic]] = {
    "series_ids": np.uint32, "steps": np.int64, "wall_times": np.float64, "k": np.uint8, "count": np.int64,
    "sum": np.float64, "min": np.float64, "max": np.float64, "nan": np.int64, "pos_inf": np.int64,
    "neg_inf": np.int64, "bucket_lengths": np.uint32, "bucket_indices": np.int32, "bucket_counts": np.int64,
}


def decode_batch(batch: ingest_pb2.Batch) -> DecodedBatch:
    """Decode and validate ``batch``; raise ``BatchError`` saying what is wrong."""
    if not batch.run_id or not batch.stream_id:
        raise BatchError("batch has no run_id or stream_id")
    if batch.sequence < 1:
        raise BatchError("batch sequence numbers start at 1")
    if batch.compression not in (ingest_pb2.COMPRESSION_NONE, ingest_pb2.COMPRESSION_LZ4_BLOCK):
        raise BatchError(f"unknown compression {batch.compression}")
    lz = batch.compression == ingest_pb2.COMPRESSION_LZ4_BLOCK
    defs = []
    for d in batch.series:
        if d.kind not in KINDS:
            raise BatchError(f"series {d.name!r}: unknown kind {d.kind}")
        if not d.name or len(d.name.encode()) > _core.MAX_NAME_BYTES:
            raise BatchError(f"series id {d.id}: invalid name")
        defs.append((int(d.id), d.name, int(d.kind)))

    s = batch.scalars
    group_series = _column(s.series_ids, np.uint32, lz, "scalars.series_ids")
    group_lengths = _column(s.group_lengths, np.uint32, lz, "scalars.group_lengths")
    steps = _column(s.steps, np.int64, lz, "scalars.steps")
    values = _column(s.values, np.float64, lz, "scalars.values")
    wall_times = _column(s.wall_times, np.float64, lz, "scalars.wall_times")
    n = int(s.point_count)
    if not (len(steps) == len(values) == len(wall_times) == n):
        raise BatchError(f"scalar columns disagree with point_count {n}")
    if len(group_series) != len(group_lengths):
        raise BatchError("scalars.series_ids and scalars.group_lengths differ in length")
    if int(group_lengths.sum(dtype=np.uint64)) != n or (len(group_lengths) and group_lengths.min() == 0):
        raise BatchError("scalars.group_lengths do not add up to point_count")

    hist: dict[str, npt.NDArray[Any]] = {}
    h = batch.histograms
    if h.histogram_count or h.series_ids:
        for name, dtype in _HIST_COLUMNS.items():
            hist[name] = _column(getattr(h, name), dtype, lz, f"histograms.{name}")
        m = int(h.histogram_count)
        for name in _HIST_COLUMNS:
            if name not in ("bucket_indices", "bucket_counts") and len(hist[name]) != m:
                raise BatchError(f"histograms.{name} disagrees with histogram_count {m}")
        buckets = int(hist["bucket_lengths"].sum(dtype=np.uint64))
        if len(hist["bucket_indices"]) != buckets or len(hist["bucket_counts"]) != buckets:
            raise BatchError("histogram bucket columns disagree with bucket_lengths")
        if len(hist["k"]) and int(hist["k"].max()) > _core.MAX_K:
            raise BatchError("histogram k out of range")
    return DecodedBatch(batch.run_id, int(batch.rank), batch.stream_id, int(batch.sequence), defs,
                        group_series, group_lengths, steps, values, wall_times, hist)
