"""The batch sequences a stream has stored, as ranges: the DuckDB store's exactly-once keys, kept in memory.

A collector is the only process writing its DuckDB file, so what it committed is all there is: it need not ask the
database before each transaction whether a batch is stored already (a ``SELECT`` that cost 1.2 to 1.9 ms of the
8 to 13 ms of a small transaction, docs/ingest.md). A client numbers its batches 1, 2, 3, ... and they arrive nearly
in order (replays and retries aside), so a few ranges hold a stream's whole history.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable


class SequenceSet:
    """A set of non-negative integers stored as sorted, disjoint, non-adjacent ranges ``[lo, hi]``."""

    __slots__ = ("_hi", "_lo")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._lo: list[int] = []
        self._hi: list[int] = []
        for lo, hi in sorted(ranges):
            if self._hi and lo <= self._hi[-1] + 1:
                self._hi[-1] = max(self._hi[-1], hi)
            else:
                self._lo.append(lo)
                self._hi.append(hi)

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        i = bisect_right(self._lo, value) - 1
        return i >= 0 and value <= self._hi[i]

    def add(self, value: int) -> None:
        """Add ``value``, joining the ranges it touches."""
        i = bisect_right(self._lo, value) - 1
        if i >= 0 and value <= self._hi[i]:
            return
        joins_left = i >= 0 and self._hi[i] == value - 1
        joins_right = i + 1 < len(self._lo) and self._lo[i + 1] == value + 1
        if joins_left and joins_right:
            self._hi[i] = self._hi.pop(i + 1)
            del self._lo[i + 1]
        elif joins_left:
            self._hi[i] = value
        elif joins_right:
            self._lo[i + 1] = value
        else:
            self._lo.insert(i + 1, value)
            self._hi.insert(i + 1, value)

    def ranges(self) -> list[tuple[int, int]]:
        """The ranges, lowest first."""
        return list(zip(self._lo, self._hi, strict=True))
