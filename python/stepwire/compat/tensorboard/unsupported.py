"""SummaryWriter calls and arguments that stepwire cannot honour: each warns once per process and is counted."""

from __future__ import annotations

import warnings
from collections import Counter

_counts: Counter[str] = Counter()


def unsupported(what: str, detail: str = "", stacklevel: int = 3) -> None:
    """Count one use of ``what`` (e.g. ``"SummaryWriter.add_graph"``), warning (``UserWarning``) the first time;
    ``stacklevel`` as ``warnings.warn``'s, counted from the caller of ``unsupported``'s caller by default."""
    _counts[what] += 1
    if _counts[what] == 1:
        why = f" ({detail})" if detail else ""
        warnings.warn(f"stepwire.compat.tensorboard: {what} is not supported by stepwire{why}; it is ignored "
                      "(counted in stepwire.compat.tensorboard.unsupported_counts())",
                      UserWarning, stacklevel=stacklevel)


def unsupported_counts() -> dict[str, int]:
    """``{what: times used}`` of every unsupported SummaryWriter call or argument used in this process."""
    return dict(_counts)
