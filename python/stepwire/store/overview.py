"""Block extremes of scalar chunks: what lets a chart of a long series be drawn without reading every point.

Each stored chunk whose steps and wall times ascend is cut into blocks of ``BLOCK`` points; per block the
store keeps one row of ``FIELDS``: its first and last step and wall time, the points holding its minimum and
its maximum value (NaN skipped; a block of NaN keeps its first point) and its count of NaN/±inf values.
A chart bucket made of whole blocks has its minimum and maximum among its blocks' — exactly, not estimated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

BLOCK = 256
FIELDS = ("first_step", "first_wall", "last_step", "last_wall", "min_step", "min_value", "min_wall",
          "max_step", "max_value", "max_wall", "nonfinite")
_FLOAT_FIELDS = {"first_wall", "last_wall", "min_value", "min_wall", "max_value", "max_wall"}


def block_starts(starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64],
                                                                                     npt.NDArray[np.int64]]:
    """Start index of every block of every chunk ``[starts[i], ends[i])``, and how many blocks each chunk has."""
    counts = (ends - starts + BLOCK - 1) // BLOCK
    chunk_of_block = np.repeat(np.arange(len(starts)), counts)
    first_block = np.cumsum(counts) - counts
    offsets = (np.arange(int(counts.sum())) - np.repeat(first_block, counts)) * BLOCK
    return starts[chunk_of_block] + offsets, counts


def _first_hit(hit: npt.NDArray[np.bool_], block: npt.NDArray[np.int64], n_blocks: int,
               fallback: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    out = fallback.copy()
    where = np.flatnonzero(hit)
    b = block[where]
    first = np.r_[True, b[1:] != b[:-1]] if len(where) else np.zeros(0, bool)
    out[b[first]] = where[first]
    return out


def block_extremes(steps: npt.NDArray[np.int64], values: npt.NDArray[np.float64], walls: npt.NDArray[np.float64],
                   starts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Rows of ``FIELDS`` (float fields stored as their int64 bit patterns) for blocks starting at ``starts``
    (ascending, the first 0) over points sorted as stored."""
    n_blocks = len(starts)
    block = np.repeat(np.arange(n_blocks), np.diff(np.r_[starts, len(values)]))
    finite = np.isfinite(values)
    notnan = ~np.isnan(values)
    lo = np.where(notnan, values, np.inf)
    hi = np.where(notnan, values, -np.inf)
    bmin = np.minimum.reduceat(lo, starts)
    bmax = np.maximum.reduceat(hi, starts)
    imin = _first_hit(lo == bmin[block], block, n_blocks, starts)
    imax = _first_hit(hi == bmax[block], block, n_blocks, starts)
    last = np.r_[starts[1:], len(values)] - 1
    out = np.empty((n_blocks, len(FIELDS)), dtype=np.int64)
    out[:, 0], out[:, 1] = steps[starts], walls[starts].view(np.int64)
    out[:, 2], out[:, 3] = steps[last], walls[last].view(np.int64)
    out[:, 4], out[:, 5], out[:, 6] = steps[imin], values[imin].view(np.int64), walls[imin].view(np.int64)
    out[:, 7], out[:, 8], out[:, 9] = steps[imax], values[imax].view(np.int64), walls[imax].view(np.int64)
    out[:, 10] = np.add.reduceat((~finite).astype(np.int64), starts)
    return out


def ascending(x: npt.NDArray[Any], starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """For each chunk ``[starts[i], ends[i])``: whether ``x`` never decreases inside it."""
    drops = np.r_[False, x[1:] < x[:-1]].astype(np.int64)
    drops[starts] = 0  # a drop from the previous chunk does not count
    return np.add.reduceat(drops, starts) == 0 if len(starts) else np.zeros(0, bool)


def unpack(blobs: list[bytes]) -> dict[str, npt.NDArray[Any]]:
    """Concatenated block rows of ``blobs`` as named columns (steps int64, the rest float64, nonfinite int64)."""
    rows = np.concatenate([np.frombuffer(b, np.int64).reshape(-1, len(FIELDS)) for b in blobs]) if blobs else \
        np.empty((0, len(FIELDS)), np.int64)
    return {name: (np.ascontiguousarray(rows[:, i]).view(np.float64) if name in _FLOAT_FIELDS
                   else np.ascontiguousarray(rows[:, i])) for i, name in enumerate(FIELDS)}
