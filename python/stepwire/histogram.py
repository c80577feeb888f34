"""Histograms in stepwire's fixed log-linear bucket scheme, and what readers do with them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stepwire import _core

DEFAULT_K: int = _core.DEFAULT_K
"""Mantissa bits kept by default: 2**k buckets per power of two (k = 3: relative width <= 12.5%)."""


def bucket_edges(indices: npt.ArrayLike, k: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return (lower, upper) value bounds of the buckets ``indices`` in the scheme with ``k`` mantissa bits.

    Bucket ``i > 0`` holds ``lower <= x < upper``; bucket ``-i`` holds ``lower < x <= upper``; bucket 0 holds
    zero and the values closer to zero than the smallest denormals of its width: ``lower < x < upper``.
    """
    idx = np.asarray(indices, dtype=np.int64)
    mag = np.abs(idx)

    def value_of(m: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        exponent = m >> k
        mantissa = (m & ((1 << k) - 1)).astype(np.float64)
        normal = np.ldexp(1.0 + mantissa / (1 << k), (exponent - 127).astype(np.int32))
        denormal = np.ldexp(mantissa / (1 << k), -126)
        return np.where(exponent >= 1, normal, denormal)

    lo, hi = value_of(mag), value_of(mag + 1)
    neg = idx < 0
    return np.where(neg | (idx == 0), -hi, lo), np.where(neg, -lo, hi)


@dataclass
class Histogram:
    """One histogram: exact bucket counts of the finite values plus summary statistics.

    ``count`` includes NaN and infinities; ``sum``/``min``/``max`` and the buckets cover finite values.
    ``rank`` is None for a histogram merged across ranks.
    """

    step: int
    k: int
    indices: npt.NDArray[np.int32]
    counts: npt.NDArray[np.int64]
    count: int
    sum: float
    min: float
    max: float
    nan: int = 0
    pos_inf: int = 0
    neg_inf: int = 0
    rank: int | None = None
    wall_time: float = 0.0

    @classmethod
    def from_values(cls, values: npt.ArrayLike, k: int = DEFAULT_K, step: int = 0) -> Histogram:
        """Bin ``values`` (float16/32/64) exactly as ``Run.log_histogram`` does."""
        arr = np.ascontiguousarray(values)
        if arr.dtype.kind in "iub":
            arr = arr.astype(np.float64)
        d = _core.bin_values(arr, k)
        return cls(step=step, k=d["k"], indices=d["indices"], counts=d["counts"], count=d["count"], sum=d["sum"],
                   min=d["min"], max=d["max"], nan=d["nan"], pos_inf=d["pos_inf"], neg_inf=d["neg_inf"])

    def edges(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Lower and upper bounds of each occupied bucket (see ``bucket_edges``)."""
        return bucket_edges(self.indices, self.k)

    def downscale(self, k: int) -> Histogram:
        """The same data with ``k`` mantissa bits (``k <= self.k``): neighbouring buckets merge exactly."""
        if k > self.k:
            raise ValueError(f"cannot raise k from {self.k} to {k}: buckets only merge")
        shift = self.k - k
        idx = self.indices.astype(np.int64)
        coarse = np.sign(idx) * (np.abs(idx) >> shift)
        uniq, inverse = np.unique(coarse, return_inverse=True)
        counts = np.bincount(inverse, weights=self.counts, minlength=len(uniq)).astype(np.int64)
        return Histogram(self.step, k, uniq.astype(np.int32), counts, self.count, self.sum, self.min, self.max,
                         self.nan, self.pos_inf, self.neg_inf, self.rank, self.wall_time)

    @staticmethod
    def merge(parts: Sequence[Histogram]) -> Histogram:
        """Exact merge of histograms (ranks, steps or chunks) by adding counts at the smallest k among them."""
        if not parts:
            raise ValueError("nothing to merge")
        k = min(p.k for p in parts)
        scaled = [p if p.k == k else p.downscale(k) for p in parts]
        all_idx = np.concatenate([p.indices.astype(np.int64) for p in scaled])
        all_cnt = np.concatenate([p.counts for p in scaled])
        uniq, inverse = np.unique(all_idx, return_inverse=True)
        counts = np.zeros(len(uniq), dtype=np.int64)
        np.add.at(counts, inverse, all_cnt)
        mins = [p.min for p in scaled if not np.isnan(p.min)]
        maxs = [p.max for p in scaled if not np.isnan(p.max)]
        ranks = {p.rank for p in scaled}
        return Histogram(
            step=scaled[0].step, k=k, indices=uniq.astype(np.int32), counts=counts,
            count=sum(p.count for p in scaled), sum=float(sum(p.sum for p in scaled)),
            min=min(mins) if mins else float("nan"), max=max(maxs) if maxs else float("nan"),
            nan=sum(p.nan for p in scaled), pos_inf=sum(p.pos_inf for p in scaled),
            neg_inf=sum(p.neg_inf for p in scaled), rank=ranks.pop() if len(ranks) == 1 else None,
            wall_time=max(p.wall_time for p in scaled))

    def to_bins(self, n: int = 64) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """``n`` equal-width display bins over [min, max]: (edges of length n+1, counts of length n).

        Each exact bucket's count goes to the display bin holding the bucket's midpoint (clipped to
        [min, max]), so the counts add up to the number of finite values.
        """
        if n < 1:
            raise ValueError("n must be >= 1")
        if np.isnan(self.min):
            return np.linspace(0.0, 1.0, n + 1), np.zeros(n, dtype=np.int64)
        lo, hi = float(self.min), float(self.max)
        if hi <= lo:
            hi = lo + (abs(lo) * 1e-6 or 1e-12)
        edges = np.linspace(lo, hi, n + 1)
        b_lo, b_hi = self.edges()
        mid = np.clip((b_lo + b_hi) / 2, lo, hi)
        which = np.clip(np.searchsorted(edges, mid, side="right") - 1, 0, n - 1)
        counts = np.bincount(which, weights=self.counts, minlength=n).astype(np.int64)
        return edges, counts


def merge_by_step(parts: Iterable[Histogram]) -> list[Histogram]:
    """Merge histograms that share a step; returns one per step, ascending."""
    by_step: dict[int, list[Histogram]] = {}
    for h in parts:
        by_step.setdefault(h.step, []).append(h)
    out = []
    for step in sorted(by_step):
        merged = Histogram.merge(by_step[step])
        merged.rank = None
        out.append(merged)
    return out
