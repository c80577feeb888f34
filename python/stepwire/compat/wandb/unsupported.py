"""W&B calls, arguments and values that stepwire cannot honour: each warns once per process and is counted."""

from __future__ import annotations

import warnings
from collections import Counter

_counts: Counter[str] = Counter()


class Error(Exception):
    """What ``wandb.Error`` is: a call made in a state W&B refuses (e.g. ``log`` before ``init``)."""


class UnsupportedWarning(UserWarning):
    """An upstream W&B call or argument that stepwire ignores (warned once per kind, counted)."""


def unsupported(what: str, detail: str = "") -> None:
    """Count one use of ``what`` (e.g. ``"wandb.init(resume=...)"``), warning the first time."""
    _counts[what] += 1
    if _counts[what] == 1:
        warnings.warn(f"stepwire.compat.wandb: {what} is not supported by stepwire{f' ({detail})' if detail else ''}; "
                      "it is ignored (counted in stepwire.compat.wandb.unsupported_counts())",
                      UnsupportedWarning, stacklevel=3)


def unsupported_counts() -> dict[str, int]:
    """``{what: times used}`` of every unsupported W&B call, argument or value used in this process."""
    return dict(_counts)
