"""The dashboard's JSON API (``/api/ROUTE``): each route's parameters read from the query, the panel that answers
it, strict JSON encoding of the answer, and the HTTP status for a failure of the store or the Query service."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import grpc
import numpy as np

from stepwire.dashboard.compare import compare
from stepwire.dashboard.panels import CONSOLE_LINES, TABLE_ROWS, PanelError, Panels
from stepwire.store.base import StoreUnavailable

INT64 = (-(2**63), 2**63 - 1)
RANKS = (0, 2**31 - 1)


def _nonfinite(value: float) -> str:
    return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else _nonfinite(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic | np.ndarray):
        return _finite(obj.tolist())
    return obj


def _numpy(obj: Any) -> Any:
    if isinstance(obj, np.generic | np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def encode_json(obj: Any) -> bytes:
    """Strict JSON (no ``NaN`` tokens): non-finite floats become ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``."""
    try:
        return json.dumps(obj, allow_nan=False, default=_numpy).encode()
    except ValueError:  # a non-finite float somewhere: walk the answer once more, replacing them
        return json.dumps(_finite(obj), allow_nan=False, default=_numpy).encode()


def one_param(query: dict[str, list[str]], key: str, default: str | None = None) -> str:
    """The last value of ``key`` in ``query``; ``default`` without one (``PanelError`` if there is no default)."""
    values = query.get(key)
    if not values:
        if default is None:
            raise PanelError(f"missing parameter {key!r}")
        return default
    return values[-1]


def int_param(query: dict[str, list[str]], key: str, default: int | None = None,
              bounds: tuple[int, int] = INT64) -> int | None:
    """The last value of ``key`` in ``query`` as an integer within ``bounds`` (``default`` when absent or empty;
    ``PanelError`` when it is not an integer or out of bounds)."""
    raw = query.get(key)
    if not raw or raw[-1] == "":
        return default
    text = raw[-1].strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,20}", text):
        raise PanelError(f"{key} must be an integer, got {raw[-1][:40]!r}")
    value = int(text)
    if not bounds[0] <= value <= bounds[1]:
        raise PanelError(f"{key} must be between {bounds[0]} and {bounds[1]}, got {value}")
    return value


def answer(panels: Panels, route: str, q: dict[str, list[str]]) -> Any:
    """The JSON-ready answer of ``/api/ROUTE`` to the query ``q`` (``PanelError`` 404 for an unknown route)."""
    if route == "runs":
        return panels.runs(q.get("project", [None])[-1])
    if route == "series":
        return panels.series(one_param(q, "run"))
    if route == "scalars":
        return panels.scalars(one_param(q, "run"), one_param(q, "name"), one_param(q, "x", "step"),
                              int_param(q, "points", 1000) or 0)
    if route == "heatmap":
        return panels.heatmap(one_param(q, "run"), one_param(q, "name"), int_param(q, "steps", 200) or 0,
                              int_param(q, "rows", 120) or 0, int_param(q, "rank", bounds=RANKS))
    if route == "histogram":
        return panels.histogram(one_param(q, "run"), one_param(q, "name"), int_param(q, "step"),
                                int_param(q, "rank", bounds=RANKS), int_param(q, "bins", 64) or 0)
    if route == "skew":
        return panels.skew(one_param(q, "run"))
    if route == "compare":
        return compare(panels.reader, q.get("runs", [""])[-1] or None, q.get("project", [""])[-1] or None)
    if route == "console":
        return panels.console(one_param(q, "run"), int_param(q, "rank", bounds=RANKS), q.get("q", [""])[-1],
                              int_param(q, "lines", CONSOLE_LINES) or 0)
    if route == "media":
        return panels.media(one_param(q, "run"), q.get("name", [""])[-1] or None,
                            q.get("kind", [""])[-1] or None)
    if route == "media/table":
        return panels.media_table(one_param(q, "run"), one_param(q, "sha"), q.get("name", [""])[-1] or None,
                                  int_param(q, "rows", TABLE_ROWS) or 0)
    raise PanelError(f"no API route {route!r}", status=404)


def failure_status(exc: Exception) -> int | None:
    """The HTTP status for a store that cannot answer now (503: retry) or a failed call to the Query service
    behind the dashboard (``stepwire ui``), else None."""
    if isinstance(exc, StoreUnavailable):
        return 503
    if not isinstance(exc, grpc.Call):
        return None
    return {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.OUT_OF_RANGE: 400,
            grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.UNAVAILABLE: 503}.get(exc.code(), 502)
