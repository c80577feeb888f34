"""Batch -> numpy arrays: decompress and check every column of an incoming batch, with no per-point objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lz4.block
import numpy as np
import numpy.typing as npt

from stepwire import _core
from stepwire.names import check_id, check_name
from stepwire.v1 import ingest_pb2

MAX_DECODED_BYTES = 64 << 20
"""Largest batch accepted once decompressed (clients seal batches of at most 16 MiB). Every column's declared
size is checked against the counts the batch states, and their sum against this bound, before anything is
decompressed: a forged batch costs the collector at most this much memory (no decompression bombs)."""

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


class _Columns:
    """Decodes a batch's columns, each checked against the item count the batch states for it, within one
    budget of ``MAX_DECODED_BYTES`` for the whole batch."""

    def __init__(self, compressed: bool) -> None:
        self.compressed = compressed
        self.budget = MAX_DECODED_BYTES

    def check(self, nbytes: int, what: str) -> None:
        """Raise unless ``nbytes`` more still fit in the batch's budget."""
        if nbytes > self.budget:
            raise BatchError(f"{what}: {nbytes} bytes would take the batch past {MAX_DECODED_BYTES} bytes decoded")

    def decode(self, raw: bytes, dtype: type[np.generic], what: str, count: int | None = None,
               at_most: int | None = None) -> npt.NDArray[Any]:
        """Column ``what``: exactly ``count`` items, or any whole number of items up to ``at_most``."""
        itemsize = np.dtype(dtype).itemsize
        declared = len(raw)
        if self.compressed and raw:
            if len(raw) < 4:
                raise BatchError(f"column {what}: truncated LZ4 block")
            declared = int.from_bytes(raw[:4], "little", signed=True)
        if declared < 0 or declared % itemsize:
            raise BatchError(f"column {what}: {declared} bytes is not a whole number of {np.dtype(dtype).name}")
        items = declared // itemsize
        if count is not None and items != count:
            raise BatchError(f"column {what}: {items} items where the batch states {count}")
        if at_most is not None and items > at_most:
            raise BatchError(f"column {what}: {items} items where the batch states at most {at_most}")
        self.check(declared, f"column {what}")
        self.budget -= declared
        data = raw
        if self.compressed and raw:
            try:
                data = lz4.block.decompress(raw)
            except Exception as exc:  # lz4 raises LZ4BlockError (a plain Exception subclass)
                raise BatchError(f"column {what}: corrupt LZ4 block ({exc})") from None
            if len(data) != declared:
                raise BatchError(f"column {what}: inflates to {len(data)} bytes, not the {declared} declared")
        return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"))


_HIST_COLUMNS: dict[str, type[np.generic]] = {
    "series_ids": np.uint32, "steps": np.int64, "wall_times": np.float64, "k": np.uint8, "count": np.int64,
    "sum": np.float64, "min": np.float64, "max": np.float64, "nan": np.int64, "pos_inf": np.int64,
    "neg_inf": np.int64, "bucket_lengths": np.uint32, "bucket_indices": np.int32, "bucket_counts": np.int64,
}


_SCALAR_COLUMNS = ("series_ids", "group_lengths", "steps", "values", "wall_times")


def declared_bytes(batch: ingest_pb2.Batch) -> int:
    """What ``batch``'s columns declare they inflate to (read from the LZ4 block headers, nothing inflated): 0 for
    an uncompressed batch, whose arrays are views of its own bytes. A forged header only costs its sender: the
    decoder refuses any column that does not inflate to what it declares."""
    if batch.compression != ingest_pb2.COMPRESSION_LZ4_BLOCK:
        return 0
    raws = [getattr(batch.scalars, name) for name in _SCALAR_COLUMNS]
    raws += [getattr(batch.histograms, name) for name in _HIST_COLUMNS]
    return sum(max(0, int.from_bytes(raw[:4], "little", signed=True)) for raw in raws if len(raw) >= 4)


def decode_batch(batch: ingest_pb2.Batch) -> DecodedBatch:
    """Decode and validate ``batch``; raise ``BatchError`` saying what is wrong."""
    try:
        check_id("run id", batch.run_id)
        check_id("stream id", batch.stream_id)
    except ValueError as exc:
        raise BatchError(str(exc)) from None
    if batch.sequence < 1:
        raise BatchError("batch sequence numbers start at 1")
    if batch.compression not in (ingest_pb2.COMPRESSION_NONE, ingest_pb2.COMPRESSION_LZ4_BLOCK):
        raise BatchError(f"unknown compression {batch.compression}")
    columns = _Columns(batch.compression == ingest_pb2.COMPRESSION_LZ4_BLOCK)
    defs = []
    for d in batch.series:
        if d.kind not in KINDS:
            raise BatchError(f"series {d.name!r:.80}: unknown kind {d.kind}")
        try:
            defs.append((int(d.id), check_name(d.name), int(d.kind)))
        except ValueError as exc:
            raise BatchError(f"series id {d.id}: {exc}") from None

    s = batch.scalars
    n = int(s.point_count)
    columns.check(24 * n, f"{n} scalar points")  # before any column is inflated
    group_series = columns.decode(s.series_ids, np.uint32, "scalars.series_ids", at_most=n)
    group_lengths = columns.decode(s.group_lengths, np.uint32, "scalars.group_lengths", count=len(group_series))
    if int(group_lengths.sum(dtype=np.uint64)) != n or (len(group_lengths) and group_lengths.min() == 0):
        raise BatchError("scalars.group_lengths do not add up to point_count")
    steps = columns.decode(s.steps, np.int64, "scalars.steps", count=n)
    values = columns.decode(s.values, np.float64, "scalars.values", count=n)
    wall_times = columns.decode(s.wall_times, np.float64, "scalars.wall_times", count=n)
    if n and steps.min() < 0:
        raise BatchError("scalar steps must be >= 0")

    hist: dict[str, npt.NDArray[Any]] = {}
    h = batch.histograms
    if h.histogram_count or h.series_ids:
        m = int(h.histogram_count)
        columns.check(sum(np.dtype(t).itemsize for t in _HIST_COLUMNS.values()) * m, f"{m} histograms")
        for name, dtype in _HIST_COLUMNS.items():
            if name not in ("bucket_indices", "bucket_counts"):
                hist[name] = columns.decode(getattr(h, name), dtype, f"histograms.{name}", count=m)
        buckets = int(hist["bucket_lengths"].sum(dtype=np.uint64))
        for name in ("bucket_indices", "bucket_counts"):
            hist[name] = columns.decode(getattr(h, name), _HIST_COLUMNS[name], f"histograms.{name}", count=buckets)
        if m and int(hist["k"].max()) > _core.MAX_K:
            raise BatchError("histogram k out of range")
        if m and hist["steps"].min() < 0:
            raise BatchError("histogram steps must be >= 0")
        for name in ("count", "nan", "pos_inf", "neg_inf", "bucket_counts"):
            if len(hist[name]) and hist[name].min() < 0:
                raise BatchError(f"histograms.{name} must not be negative")
    return DecodedBatch(batch.run_id, int(batch.rank), batch.stream_id, int(batch.sequence), defs,
                        group_series, group_lengths, steps, values, wall_times, hist)
