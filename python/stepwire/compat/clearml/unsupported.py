"""ClearML calls and arguments that stepwire cannot honour: each warns once per process and is counted."""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger("stepwire.compat.clearml")

_counts: Counter[str] = Counter()


def unsupported(what: str, detail: str = "") -> None:
    """Count one use of ``what`` (e.g. ``"Task.init(output_uri=...)"``), warning the first time."""
    _counts[what] += 1
    if _counts[what] == 1:
        log.warning("stepwire.compat.clearml: %s is not supported by stepwire%s; it is ignored (counted in "
                    "stepwire.compat.clearml.unsupported_counts())", what, f" ({detail})" if detail else "")


def unsupported_counts() -> dict[str, int]:
    """``{what: times used}`` of every unsupported ClearML call or argument used in this process."""
    return dict(_counts)
