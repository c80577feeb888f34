"""Typed face of the native extension ``stepwire._core``."""

from typing import Any

import numpy as np
import numpy.typing as npt

DEFAULT_K: int
MAX_K: int
MAX_NAME_BYTES: int
MAX_STEP: int
KIND_SCALAR: int
KIND_HISTOGRAM: int
SEGMENT_MAGIC: int
SEGMENT_VERSION: int
SCHEME: dict[str, int]
"""Constants of the histogram bucket scheme (cpp/scheme.hpp): mantissa_bits, float64_mantissa_bits, exponent_bias,
exponent_rebase, first_normal_exponent, finite_exponents, beyond_float32_exponent, denormal_scale_log2,
smallest_normal_log2, default_k, max_k."""

def bin_values(values: Any, k: int = ..., bfloat16: bool = ...) -> dict[str, Any]:
    """Bins a contiguous float buffer (GIL released); returns k, indices, counts and exact statistics."""

def bin_many(values: list[Any], bfloat16: list[bool], k: int = ..., threads: int = ...) -> list[dict[str, Any]]:
    """Bins several buffers on several threads (0: one per core), GIL released; a list of bin_values results."""

class BinnedSet:
    """Histograms binned by bin_many_held, waiting to be queued by a Stream."""

    def __len__(self) -> int: ...
    def stats(self) -> list[dict[str, Any]]:
        """The statistics of each histogram (the keys of bin_values without k, indices and counts)."""

def bin_many_held(values: list[Any], bfloat16: list[bool], k: int = ..., threads: int = ...) -> BinnedSet:
    """bin_many keeping the histograms in native memory for Stream.push_binned_set."""

def block_extremes(steps: npt.ArrayLike, values: npt.ArrayLike, walls: npt.ArrayLike, starts: npt.ArrayLike,
                   ends: npt.ArrayLike, block: int, min_points: int
                   ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Block extremes of the chunks [starts[i], ends[i]) of at least min_points points whose steps and wall times
    ascend (GIL released): (rows of 11 int64 per block, blocks per chunk; 0 for a chunk left out)."""

def bucket_index(x: float, k: int = ...) -> int:
    """Bucket index of one value in the log-linear scheme."""

def bucket_indices(values: npt.ArrayLike, k: int = ...) -> npt.NDArray[np.int32]:
    """Bucket index of each finite value (as float64; same shape, int32), by the rule of bucket_index."""

def pool_workers() -> int:
    """Workers of the binning pool started in this process (0 before first use)."""

def _pool_selftest(n: int, threads: int, fail_at: int = ..., sleep_us: int = ...
                   ) -> tuple[npt.NDArray[np.int32], int]:
    """Test hook: n tasks through the binning pool; (runs per task, threads that ran tasks)."""

class SealedBatch:
    """A sealed columnar batch, ready to be compressed and sent."""

    @property
    def sequence(self) -> int: ...
    @property
    def point_count(self) -> int: ...
    @property
    def histogram_count(self) -> int: ...
    @property
    def defs(self) -> list[tuple[int, str, int]]: ...
    def scalar_columns(self) -> dict[str, bytes]: ...
    def histogram_columns(self) -> dict[str, bytes]: ...

class Stream:
    """Rings, drainer thread and sealed-batch queue of a run."""

    def __init__(self, ring_capacity: int = ..., drop_when_full: bool = ..., batch_bytes: int = ...,
                 flush_interval: float = ..., max_sealed: int = ..., max_batch_bytes: int = ...,
                 discard: bool = ..., max_sealed_bytes: int = ..., max_histogram_bytes: int = ...,
                 block_timeout: float = ..., shm_path: str = ..., shm_slots: int = ...,
                 journal_bytes: int = ...) -> None:
        """With ``shm_path`` the rings of the first ``shm_slots`` producing threads, the journal (``journal_bytes``; 0:
        max_sealed_bytes + max_batch_bytes) and the series table live in a shared-memory segment created there
        (docs/segment.md). While sealed batches wait for the sender (at most ``max_sealed`` of them), they and the
        batch being filled hold at most ``max_sealed_bytes`` (32 MiB); binned histograms wait for a batch up to
        ``max_histogram_bytes`` (16 MiB). With ``drop_when_full`` false a producer waits for room at most
        ``block_timeout`` seconds (60), then drops and counts (``timed_out``)."""
    def define(self, name: str, kind: int) -> int: ...
    def push_histogram(self, series: int, step: int, values: npt.NDArray[Any], k: int = ...,
                       bfloat16: bool = ...) -> dict[str, float] | None:
        """Bin ``values`` and queue the histogram; its statistics, or None if dropped (drop policy)."""
    def push_histograms(self, series: list[int], step: int, values: list[Any], bfloat16: list[bool],
                        k: int = ...) -> list[dict[str, float] | None]:
        """Bin several arrays on all cores (GIL released) and queue their histograms; their statistics."""
    def push_binned(self, series: int, step: int, k: int, indices: npt.NDArray[Any], counts: npt.NDArray[Any],
                    count: int, sum: float, min: float, max: float, nan: int, pos_inf: int,
                    neg_inf: int) -> bool:
        """Queue a histogram binned elsewhere (e.g. on a GPU) in the same scheme."""
    def push_binned_set(self, series: list[int], step: int, binned: BinnedSet, raw: int = ...,
                        wall_time: float = ...) -> int:
        """Queue a BinnedSet (which it empties) at step; returns how many histograms were accepted. ``raw``: the
        segment's raw-values file its one histogram was binned from (``stepwire.segment_raw``), settled in the
        same locked section (its id in the queue entry, then the header's ``raw_done``); ``wall_time``: of the
        logging call (s; 0: now)."""
    def next_batch(self, timeout: float) -> SealedBatch | None: ...
    def flush(self, timeout: float = ...) -> int | None: ...
    def close(self) -> None: ...
    def exhausted(self) -> bool: ...
    def retire(self, sequence: int) -> None:
        """Batches up to ``sequence`` are acknowledged, refused, spooled or lost: their journal room is free."""
    def set_segment_meta(self, json: str) -> bool:
        """Write the segment's JSON metadata; False without a segment (or when it is too long)."""
    def release_segment(self) -> bool:
        """Mark the segment finished and remove its file; True if it was removed."""
    def segment_info(self) -> dict[str, Any]:
        """survives_crash, reason, path, bytes, journal_bytes, slots, unsafe_rings, unsafe_series,
        unsafe_histograms."""
    def stats(self) -> dict[str, int]:
        """logged, dropped (timed_out among them), timed_out, blocked, held_bytes (sealed batches, the open batch,
        queued histograms and series names not sent yet), sealed_batches, sealed_items."""

class Producer:
    """Per-point logging entry points over a Stream; subclassed by stepwire.Run."""

    def __init__(self, stream: Stream) -> None: ...
    def log_scalar(self, name: str, value: float, step: int | None = None) -> None:
        """Log one scalar point; ``step`` defaults to the auto-incrementing counter (one step per call)."""
    def log(self, data: dict[str, Any], step: int | None = None) -> None:
        """Log every entry of ``data`` at one step; ``step`` defaults to the auto-incrementing counter.

        Numbers become scalar points, numpy arrays histograms, nested dicts ``outer/inner`` names. The call
        is all-or-nothing: a bad name or value raises ``TypeError``/``ValueError`` naming its key, and nothing
        of that call is logged.
        """
    def _take_step(self, step: int | None = None) -> int: ...
    def _log_at(self, data: dict[str, float], step: int) -> None: ...
    def _busy_begin(self) -> None: ...
    def _busy_end(self) -> None: ...
    @property
    def _busy_ns(self) -> int: ...
    @property
    def _calls(self) -> int: ...
    @property
    def _scalar_ids(self) -> dict[str, int]: ...
    @property
    def step(self) -> int:
        """The step the next call without an explicit step will use."""

