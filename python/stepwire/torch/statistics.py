"""The scalar series logged beside each per-tensor histogram (``watch``, ``log_model_stats``, Ignite handlers)."""

from __future__ import annotations

import math
from typing import Any


def scalars_of(prefix: str, s: dict[str, Any]) -> dict[str, float]:
    """``{prefix}/norm``, ``/min``, ``/max``, ``/mean`` and ``/nonfinite`` of a histogram with statistics ``s``."""
    finite = s["count"] - s["nan"] - s["pos_inf"] - s["neg_inf"]
    return {f"{prefix}/norm": math.sqrt(s["sumsq"]), f"{prefix}/min": s["min"], f"{prefix}/max": s["max"],
            f"{prefix}/mean": s["sum"] / finite if finite else math.nan,
            f"{prefix}/nonfinite": float(s["count"] - finite)}
