"""Block extremes of scalar chunks: what lets a chart of a long series be drawn without reading every point.

Each stored chunk whose steps and wall times ascend is cut into blocks of ``BLOCK`` points; per block the
store keeps one row of ``FIELDS`` (computed by the native core, ``_core.block_extremes``): its first and last
step and wall time, the points holding its minimum and its maximum value (NaN skipped; a block of NaN keeps its
first point) and its count of NaN/±inf values. A chart bucket made of whole blocks has its minimum and maximum
among its blocks' — exactly, not estimated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from stepwire import _core

BLOCK = 256
FIELDS = ("first_step", "first_wall", "last_step", "last_wall", "min_step", "min_value", "min_wall",
          "max_step", "max_value", "max_wall", "nonfinite")
_FLOAT_FIELDS = {"first_wall", "last_wall", "min_value", "min_wall", "max_value", "max_wall"}


def compute(steps: npt.NDArray[np.int64], values: npt.NDArray[np.float64], walls: npt.NDArray[np.float64],
            starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64], min_points: int = BLOCK
            ) -> list[bytes | None]:
    """For each chunk ``[starts[i], ends[i])``: its packed block rows, or None if it has fewer than
    ``min_points`` points or its steps or wall times do not ascend."""
    rows, blocks = _core.block_extremes(steps, values, walls, starts, ends, BLOCK, min_points)
    offsets = np.r_[0, np.cumsum(blocks)]
    return [rows[offsets[i]:offsets[i + 1]].tobytes() if blocks[i] else None for i in range(len(blocks))]


def unpack(blobs: list[bytes]) -> dict[str, npt.NDArray[Any]]:
    """Concatenated block rows of ``blobs`` as named columns (steps int64, the rest float64, nonfinite int64)."""
    rows = np.concatenate([np.frombuffer(b, np.int64).reshape(-1, len(FIELDS)) for b in blobs]) if blobs else \
        np.empty((0, len(FIELDS)), np.int64)
    return {name: (np.ascontiguousarray(rows[:, i]).view(np.float64) if name in _FLOAT_FIELDS
                   else np.ascontiguousarray(rows[:, i])) for i, name in enumerate(FIELDS)}
