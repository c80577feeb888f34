"""Fused per-tensor statistics and bucket counts computed with tensor ops where the tensors live.

For a list of tensors, a handful of launches per chunk compute each tensor's bucket counts in stepwire's
log-linear scheme (integer ops on the float bits, ``scatter_add_`` into one preallocated int64 buffer; never
``bincount`` or ``histc``, which read values back to the host), its sum, sum of squares, min and max of the
finite values, and its NaN/+Inf/-Inf counts. On CUDA the work runs on a side stream that waits on the
current one, the results are copied without blocking into pinned host memory, and an event marks when they
are there: the caller never synchronises. Temporary device memory is bounded by ``chunk_elements``, whatever
the model size. The same code runs on CPU tensors, which is how it is tested without a GPU.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import torch

DEFAULT_CHUNK_ELEMENTS = 8 << 20
"""Elements reduced per chunk; device temporaries are about 80 bytes per element of a chunk."""


def window(k: int) -> int:
    """Counter slots per tensor: negative and positive finite buckets of float32's range, then NaN, +Inf, -Inf."""
    return 2 * (255 << k) + 3


@dataclass
class DeviceReduction:
    """Results of ``reduce_tensors``: valid once ``event`` (None on CPU) has completed."""

    k: int
    numels: list[int]
    counts: torch.Tensor  # (len(numels), window(k)) int64, pinned host memory on CUDA
    stats: torch.Tensor   # (4, len(numels)) float64: sum, sum of squares, min, max of the finite values
    event: Any = None

    def wait(self) -> None:
        """Block until the results are on the host (the caller's thread, not the training thread)."""
        if self.event is not None:
            self.event.synchronize()

    def histogram(self, i: int) -> dict[str, Any]:
        """Tensor ``i`` as sparse buckets and statistics (the fields of ``Stream.push_binned``)."""
        f = 255 << self.k
        row = self.counts[i].numpy()
        nz = np.flatnonzero(row[:2 * f])
        idx = np.where(nz < f, -(f - 1 - nz), nz - f)
        counts = row[nz]
        if len(idx) > 1 and (idx == 0).sum() == 2:  # -0 and +0 share bucket 0
            zero = np.flatnonzero(idx == 0)
            counts = counts.copy()
            counts[zero[1]] += counts[zero[0]]
            idx, counts = np.delete(idx, zero[0]), np.delete(counts, zero[0])
        s = self.stats[:, i].numpy()
        finite = int(counts.sum())
        return {"k": self.k, "indices": idx.astype(np.int32), "counts": counts.astype(np.int64),
                "count": self.numels[i], "sum": float(s[0]), "sumsq": float(s[1]),
                "min": float(s[2]) if finite else math.nan, "max": float(s[3]) if finite else math.nan,
                "nan": int(row[2 * f]), "pos_inf": int(row[2 * f + 1]), "neg_inf": int(row[2 * f + 2])}


Piece = tuple[int, int, int]  # (tensor index, start, stop) of a slice of one tensor
_PLANS: dict[tuple[Any, ...], list[tuple[list[Piece], torch.Tensor]]] = {}
_SIDE_STREAMS: dict[torch.device, Any] = {}


def _plan(numels: Sequence[int], chunk: int, device: torch.device) -> list[tuple[list[Piece], torch.Tensor]]:
    """Chunks of at most ``chunk`` elements as pieces of tensors, plus the tensor index of every element.

    Cached per layout (a model's parameters keep their shapes), so the index tensors are built once.
    """
    key = (tuple(numels), chunk, str(device))
    if key not in _PLANS:
        chunks: list[list[Piece]] = [[]]
        room = chunk
        for i, n in enumerate(numels):
            start = 0
            while start < n:
                take = min(n - start, room)
                chunks[-1].append((i, start, start + take))
                start += take
                room -= take
                if room == 0:
                    chunks.append([])
                    room = chunk
        _PLANS[key] = [(pieces, _segment_ids(pieces, device)) for pieces in chunks if pieces]
    return _PLANS[key]


def _segment_ids(pieces: list[Piece], device: torch.device) -> torch.Tensor:
    ids = torch.from_numpy(np.repeat(np.array([p[0] for p in pieces], np.int64), [p[2] - p[1] for p in pieces]))
    if device.type == "cuda":  # pinned, non-blocking: not even this one-time copy waits on the device
        return ids.pin_memory().to(device, non_blocking=True)
    return ids


def _side_stream(device: torch.device) -> Any:
    if device not in _SIDE_STREAMS:
        _SIDE_STREAMS[device] = torch.cuda.Stream(device)
    return _SIDE_STREAMS[device]


def _magnitude_bits(x: torch.Tensor) -> torch.Tensor:
    """float32 bit pattern (without sign) of each float64 value truncated toward zero, as int64."""
    a = x.view(torch.int64) & 0x7FFFFFFFFFFFFFFF
    normal = (a >> 29) - (896 << 23)
    denormal = (x.abs().clamp(max=2.0**-126) * 2.0**149).to(torch.int64)
    return torch.where((a >> 52) >= 897, normal, denormal)


def reduce_tensors(tensors: Sequence[torch.Tensor], k: int = 3,
                   chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> DeviceReduction:
    """Queue the reduction of ``tensors`` (all on one device) and return where its results will be."""
    if not tensors:
        raise ValueError("nothing to reduce")
    device = tensors[0].device
    numels = [t.numel() for t in tensors]
    f, w = 255 << k, window(k)
    cuda = device.type == "cuda"
    side = _side_stream(device) if cuda else None
    if side is not None:
        side.wait_stream(torch.cuda.current_stream(device))
        for t in tensors:
            t.record_stream(side)  # the allocator must not reuse their memory before the side stream is done
    with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
        counts = torch.zeros(len(tensors) * w, dtype=torch.int64, device=device)
        stats = torch.zeros(4, len(tensors), dtype=torch.float64, device=device)
        stats[2].fill_(math.inf)
        stats[3].fill_(-math.inf)
        one = torch.ones(1, dtype=torch.int64, device=device)
        for pieces, seg in _plan(numels, chunk_elements, device):
            x = torch.cat([tensors[i].detach().reshape(-1)[a:b] for i, a, b in pieces]).to(torch.float64)
            mag = (_magnitude_bits(x) >> (23 - k)).clamp_(max=f - 1)  # beyond float32's range: top bucket
            slot = torch.where(x.view(torch.int64) < 0, f - 1 - mag, f + mag)
            slot = torch.where(x.isnan(), 2 * f, slot)
            slot = torch.where(x == math.inf, 2 * f + 1, slot)
            slot = torch.where(x == -math.inf, 2 * f + 2, slot)
            counts.scatter_add_(0, seg * w + slot, one.expand(slot.shape))
            finite = x.isfinite()
            xf = torch.where(finite, x, 0.0)
            stats[0].index_add_(0, seg, xf)
            stats[1].index_add_(0, seg, xf * xf)
            stats[2].scatter_reduce_(0, seg, torch.where(finite, x, math.inf), "amin")
            stats[3].scatter_reduce_(0, seg, torch.where(finite, x, -math.inf), "amax")
        if cuda:
            host_counts = torch.empty(counts.shape, dtype=counts.dtype, pin_memory=True)
            host_stats = torch.empty(stats.shape, dtype=stats.dtype, pin_memory=True)
            host_counts.copy_(counts, non_blocking=True)
            host_stats.copy_(stats, non_blocking=True)
            event = torch.cuda.Event()
            event.record(side)
            return DeviceReduction(k, numels, host_counts.view(len(tensors), w), host_stats, event)
    return DeviceReduction(k, numels, counts.view(len(tensors), w), stats)
