"""Fused per-tensor statistics and bucket counts computed with tensor ops where the tensors live.

For a list of tensors on one device, a handful of launches per chunk compute each tensor's bucket counts in
stepwire's log-linear scheme (integer ops on the float bits, ``scatter_add_`` into a preallocated counts buffer;
never ``bincount`` or ``histc``, which read values back to the host), its sum, sum of squares, min and max of the
finite values, and its NaN/+Inf/-Inf counts. What holds:

- **The values logged are those at the call.** On a device with streams and events (CUDA, XPU) the work runs on a
  side stream that first waits for the tensors' (current) stream; an event recorded on the side stream once the
  last value is read is then waited for, on the device, by the current stream, so work queued after the call
  (``clip_grad_norm_``, ``GradScaler.unscale_``, ``optimizer.step()``, an in-place ``mul_``) cannot change values
  still being read. That wait is device-side (``wait_event``): the host never synchronises. Its cost is that such
  later work starts only once the reduction has read everything.
- **The caller never synchronises.** Results reach the host through a non-blocking copy into pinned host memory
  (CUDA), marked done by an event; ``DeviceReduction.wait`` (called by the waiter thread, not the training
  thread) waits for it. On a device with streams but without pinned memory (XPU) the device results are copied to
  the host by ``wait`` itself after the event. On a device without streams and events (MPS, other backends) the
  reduction runs on the device's only queue, in order with the training work, and ``wait`` copies the results
  with a blocking copy, which waits for the device on the waiter thread. CPU tensors are reduced at the call.
- **Device memory is bounded by ``chunk_elements``, whatever the model size, and nothing is kept.** Values are
  read in chunks of at most ``chunk_elements`` elements (about 100 bytes of temporaries per chunk element); the
  tensor index of each element of a chunk is built on the device from a tiny ``arange`` (no host-to-device
  copy, no numpy, no cache); counts are computed for groups of tensors whose counters fit in ``chunk_elements``
  slots. The only exception is a non-contiguous tensor, read through one contiguous copy of itself. On devices
  whose results are copied by ``wait`` (no pinned memory) the groups' results stay on the device until then.
- **One scheme with the core.** Bucket indices are those of ``stepwire._core.bucket_index`` for every value, its
  constants taken from ``_core.SCHEME``: float16/bfloat16/float32 values from their float32 bits, float64 values
  from their own bits, finite doubles beyond float32's range (``|x| >= 2**128``) in their own buckets, as the
  core gives them (a call with any float64 tensor uses a counts window that wide). On devices without float64
  (MPS) sums, sums of squares, min and max are accumulated in float32, elsewhere in float64.

The same code runs on CPU tensors, which is how it is tested without a GPU.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import torch
from stepwire import _core

_SCHEME: dict[str, int] = _core.SCHEME
MANTISSA_BITS = _SCHEME["mantissa_bits"]                # 23: float32's explicit mantissa bits
FLOAT64_MANTISSA_BITS = _SCHEME["float64_mantissa_bits"]  # 52
EXPONENT_REBASE = _SCHEME["exponent_rebase"]            # 896: float64 biased exponent - float32 biased exponent
FIRST_NORMAL_EXPONENT = _SCHEME["first_normal_exponent"]  # 897: float64 exponent of 2^-126
FINITE_EXPONENTS = _SCHEME["finite_exponents"]          # 255: biased exponents of finite float32 values
DENORMAL_SCALE = 2.0 ** _SCHEME["denormal_scale_log2"]  # a float32 denormal |x| has bit pattern |x| * 2^149
SMALLEST_NORMAL = 2.0 ** _SCHEME["smallest_normal_log2"]  # 2^-126
_FLOAT64_EXPONENTS = (1 << (64 - 1 - FLOAT64_MANTISSA_BITS)) - 1  # 2047: biased exponents of finite doubles

DEFAULT_CHUNK_ELEMENTS = 8 << 20
"""Elements reduced per chunk; device temporaries are about 100 bytes per element of a chunk."""


def finite_slots(k: int, wide: bool = False) -> int:
    """Bucket magnitudes of finite values: float32's range, or (``wide``, any float64 input) every double's."""
    return ((_FLOAT64_EXPONENTS - EXPONENT_REBASE) if wide else FINITE_EXPONENTS) << k


def window(k: int, wide: bool = False) -> int:
    """Counter slots per tensor: negative then positive finite buckets (``finite_slots``), then NaN, +Inf, -Inf."""
    return 2 * finite_slots(k, wide) + 3


@dataclass(frozen=True)
class Backend:
    """How a device's results reach the host: ``module`` (``torch.cuda``, ``torch.xpu``...) when the device has
    streams and events, else None; ``pinned`` host memory (CUDA only); whether it computes in ``float64``; ``sync``
    for the CPU, whose results are there at the call."""

    module: Any
    pinned: bool
    float64: bool
    sync: bool = False


def backend(device: torch.device) -> Backend:
    """The ``Backend`` of ``device`` (device-generic: ``torch.get_device_module`` where torch has it)."""
    if device.type == "cpu":
        return Backend(None, False, True, sync=True)
    try:
        get = getattr(torch, "get_device_module", None)
        module = get(device) if get is not None else getattr(torch, device.type, None)
    except (AttributeError, RuntimeError, ValueError):
        module = None
    streams = module is not None and all(hasattr(module, a) for a in ("Stream", "Event", "current_stream", "stream"))
    return Backend(module if streams else None, device.type == "cuda", device.type != "mps")


class HostResults:
    """Results on their way from a device into host tensors: read them after ``wait()``.

    ``event`` (None when there is nothing to wait for on the device) marks when device work is done;
    ``deferred`` holds ``(host, device)`` pairs that ``wait`` copies after it (devices without pinned memory).
    """

    event: Any
    deferred: list[tuple[torch.Tensor, torch.Tensor]]

    @property
    def nbytes(self) -> int:
        """Bytes of host memory the results occupy (what a waiter bounds)."""
        raise NotImplementedError

    def wait(self) -> None:
        """Block until the results are in their host tensors (the waiter thread, never the training thread)."""
        if self.event is not None:
            self.event.synchronize()
            self.event = None
        for host, dev in self.deferred:
            host.copy_(dev)  # blocking: on a device without events this waits for the work queued before it
        self.deferred = []


@dataclass
class DeviceReduction(HostResults):
    """Results of ``reduce_tensors``: valid once ``wait()`` has returned (at once for CPU tensors)."""

    k: int
    numels: list[int]
    finite: int           # finite_slots(k, wide) of the counts window
    counts: torch.Tensor  # (len(numels), window) int32 (int64 for a tensor of 2**31 elements or more)
    stats: torch.Tensor   # (len(numels), 4) float64: sum, sum of squares, min, max of the finite values
    event: Any = None
    deferred: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        """Bytes of the host buffers."""
        return self.counts.nbytes + self.stats.nbytes

    def histogram(self, i: int) -> dict[str, Any]:
        """Tensor ``i`` as sparse buckets and statistics (the fields of ``Stream.push_binned``)."""
        f = self.finite
        row = self.counts[i].numpy()
        nz = np.flatnonzero(row[:2 * f])
        idx = np.where(nz < f, -(f - 1 - nz), nz - f)
        counts = row[nz].astype(np.int64)
        if len(idx) > 1 and (idx == 0).sum() == 2:  # -0 and +0 share bucket 0
            zero = np.flatnonzero(idx == 0)
            counts[zero[1]] += counts[zero[0]]
            idx, counts = np.delete(idx, zero[0]), np.delete(counts, zero[0])
        s = self.stats[i].numpy()
        finite = int(counts.sum())
        return {"k": self.k, "indices": idx.astype(np.int32), "counts": counts,
                "count": self.numels[i], "sum": float(s[0]), "sumsq": float(s[1]),
                "min": float(s[2]) if finite else math.nan, "max": float(s[3]) if finite else math.nan,
                "nan": int(row[2 * f]), "pos_inf": int(row[2 * f + 1]), "neg_inf": int(row[2 * f + 2])}


@dataclass
class DeviceValues(HostResults):
    """Scalars copied from a device (``copy_values``): ``values`` valid once ``wait()`` has returned."""

    values: torch.Tensor  # float64, one per scalar
    event: Any = None
    deferred: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        """Bytes of the host buffer."""
        return self.values.nbytes


_SIDE_STREAMS: dict[torch.device, Any] = {}  # one stream object per device: no tensor, nothing per element


def _side_stream(b: Backend, device: torch.device) -> Any:
    if device not in _SIDE_STREAMS:
        _SIDE_STREAMS[device] = b.module.Stream(device)
    return _SIDE_STREAMS[device]


def _host_empty(shape: tuple[int, ...], dtype: torch.dtype, b: Backend) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, pin_memory=b.pinned)


def _to_host(host: torch.Tensor, dev: torch.Tensor, b: Backend, deferred: list[tuple[torch.Tensor, torch.Tensor]]
             ) -> None:
    """Copy ``dev`` into ``host`` without making the calling thread wait for the device."""
    if b.sync:
        host.copy_(dev)
    elif b.pinned:
        host.copy_(dev, non_blocking=True)  # into pinned memory: queued on the current stream, never waited for
    else:
        deferred.append((host, dev))  # the waiter copies it after the event (or, without one, blocking)


def result_bytes(tensors: Sequence[torch.Tensor], k: int) -> int:
    """Host bytes ``reduce_tensors(tensors, k)`` will hold its results in."""
    wide = any(t.dtype == torch.float64 for t in tensors)
    per_count = 4 if max((t.numel() for t in tensors), default=0) < 2**31 else 8
    return len(tensors) * (window(k, wide) * per_count + 4 * 8)


Piece = tuple[int, int, int]  # (tensor index, start, stop) of a slice of one tensor


def _chunks(numels: Sequence[int], chunk: int) -> Iterator[list[Piece]]:
    """Chunks of at most ``chunk`` elements, as pieces of the tensors in order (computed, never cached)."""
    pieces: list[Piece] = []
    room = chunk
    for i, n in enumerate(numels):
        start = 0
        while start < n:
            take = min(n - start, room)
            pieces.append((i, start, start + take))
            start += take
            room -= take
            if room == 0:
                yield pieces
                pieces, room = [], chunk
    if pieces:
        yield pieces


def _bucket_slots(x: torch.Tensor, k: int, f: int, wide: bool) -> torch.Tensor:
    """The counter slot of each value: ``f - 1 - magnitude`` for negative, ``f + magnitude`` for positive finite
    values, then ``2f``, ``2f + 1``, ``2f + 2`` for NaN, +Inf, -Inf; the magnitude is ``_core.bucket_index``'s."""
    if wide:  # from the float64 bits, as the core bins doubles
        x = x.to(torch.float64)
        bits = x.view(torch.int64)
        a = bits & 0x7FFFFFFFFFFFFFFF
        normal = (a >> (FLOAT64_MANTISSA_BITS - k)) - (EXPONENT_REBASE << k)
        denormal = (x.abs().clamp(max=SMALLEST_NORMAL) * DENORMAL_SCALE).to(torch.int64) >> (MANTISSA_BITS - k)
        mag = torch.where((a >> FLOAT64_MANTISSA_BITS) >= FIRST_NORMAL_EXPONENT, normal, denormal)
    else:  # float16, bfloat16 and float32 widen exactly to float32: bucket from its bits
        x = x.to(torch.float32)
        bits = x.view(torch.int32)
        mag = (bits & 0x7FFFFFFF) >> (MANTISSA_BITS - k)
    slot = torch.where(bits < 0, f - 1 - mag, f + mag)  # NaN and Inf land beyond the finite slots: replaced below
    slot = torch.where(x.isnan(), 2 * f, slot)
    slot = torch.where(x == math.inf, 2 * f + 1, slot)
    return torch.where(x == -math.inf, 2 * f + 2, slot)


def _reduce_group(tensors: Sequence[torch.Tensor], k: int, f: int, wide: bool, chunk: int, count_dtype: torch.dtype,
                  stat_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts ``(len, window)`` and statistics ``(len, 4)`` of ``tensors``, on their device."""
    device = tensors[0].device
    n, w = len(tensors), 2 * f + 3
    counts = torch.zeros(n * w, dtype=count_dtype, device=device)
    stats = torch.zeros(4, n, dtype=stat_dtype, device=device)
    stats[2].fill_(math.inf)
    stats[3].fill_(-math.inf)
    ids = torch.arange(n, device=device)  # segment ids are built from this on the device: no host copy
    one = torch.ones((), dtype=count_dtype, device=device)
    flat: tuple[int, torch.Tensor] | None = None  # the tensor being read, flattened (a view unless non-contiguous)
    for pieces in _chunks([t.numel() for t in tensors], chunk):
        parts = []
        for i, a, b in pieces:
            if flat is None or flat[0] != i:
                flat = (i, tensors[i].detach().reshape(-1))
            parts.append(flat[1][a:b])
        x = torch.cat(parts)
        seg = torch.cat([ids[i:i + 1].expand(b - a) for i, a, b in pieces])
        slot = _bucket_slots(x, k, f, wide)
        counts.scatter_add_(0, seg * w + slot, one.expand(slot.shape))
        xs = x.to(stat_dtype)
        finite = xs.isfinite()
        xf = torch.where(finite, xs, 0.0)
        stats[0].index_add_(0, seg, xf)
        stats[1].index_add_(0, seg, xf * xf)
        stats[2].scatter_reduce_(0, seg, torch.where(finite, xs, math.inf), "amin")
        stats[3].scatter_reduce_(0, seg, torch.where(finite, xs, -math.inf), "amax")
    return counts.view(n, w), stats.t().contiguous()


def reduce_tensors(tensors: Sequence[torch.Tensor], k: int = 3,
                   chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> DeviceReduction:
    """Queue the reduction of ``tensors`` (all on one device) and return where its results will be.

    The calling thread never waits for the device; later work on the tensors' stream waits (on the device) until
    the values have been read. See the module docstring for what holds on which device.
    """
    if not tensors:
        raise ValueError("nothing to reduce")
    if not 0 <= k <= _core.MAX_K:
        raise ValueError(f"k must be between 0 and {_core.MAX_K}, got {k}")
    if chunk_elements < 1:
        raise ValueError(f"chunk_elements must be at least 1, got {chunk_elements}")
    device = tensors[0].device
    if any(t.device != device for t in tensors):
        raise ValueError(f"reduce_tensors takes tensors on one device, got {sorted({str(t.device) for t in tensors})}")
    b = backend(device)
    wide = any(t.dtype == torch.float64 for t in tensors)
    f = finite_slots(k, wide)
    w = 2 * f + 3
    numels = [t.numel() for t in tensors]
    count_dtype = torch.int32 if max(numels) < 2**31 else torch.int64
    stat_dtype = torch.float64 if b.float64 else torch.float32
    n = len(tensors)
    out = DeviceReduction(k, numels, f, _host_empty((n, w), count_dtype, b), _host_empty((n, 4), torch.float64, b))
    side: Any = None
    current: Any = None
    if b.module is not None:
        current = b.module.current_stream(device)
        side = _side_stream(b, device)
        side.wait_stream(current)  # read the values only once the work queued before the call has written them
        for t in tensors:
            t.record_stream(side)  # the allocator must not reuse their memory before the side stream is done
    per_group = max(1, chunk_elements // w)  # counters of a group fit in chunk_elements slots
    with b.module.stream(side) if side is not None else contextlib.nullcontext():
        for g0 in range(0, n, per_group):
            g1 = min(n, g0 + per_group)
            counts, stats = _reduce_group(tensors[g0:g1], k, f, wide, chunk_elements, count_dtype, stat_dtype)
            if side is not None and g1 == n:
                read = b.module.Event()
                read.record(side)
                current.wait_event(read)  # later work on the tensors' stream waits, on the device, for the reads
            _to_host(out.counts[g0:g1], counts, b, out.deferred)
            _to_host(out.stats[g0:g1], stats, b, out.deferred)
        if side is not None:
            out.event = b.module.Event()
            out.event.record(side)
    return out


def copy_values(values: Sequence[torch.Tensor]) -> DeviceValues:
    """Queue the copy of one-element tensors (all on one device) to the host as float64, without waiting.

    Read on the tensors' device's current stream, so in order with the work that wrote them and the work after.
    """
    device = values[0].device
    b = backend(device)
    stacked = torch.stack([t.detach().reshape(()).to(torch.float64 if b.float64 else torch.float32) for t in values])
    out = DeviceValues(_host_empty((len(values),), torch.float64, b))
    _to_host(out.values, stacked, b, out.deferred)
    if b.module is not None:
        out.event = b.module.Event()
        out.event.record(b.module.current_stream(device))  # the tensors' device's stream, not the current device's
    return out
