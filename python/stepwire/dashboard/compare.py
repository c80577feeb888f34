"""The data of the dashboard's run comparison: each run's configuration (flattened) beside the last/min/max of its
scalar series, and the group it belongs to, for the parallel-coordinates chart and the sortable runs table.

A run's group and job type come, as W&B's ``group`` and ``job_type`` do, from the run's meta (``group``,
``job_type``) or else from a tag ``group:NAME`` / ``job_type:NAME`` (``=`` works as well as ``:``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from stepwire.store.base import Reader, RunRecord

MAX_COMPARE_RUNS = 500
"""The most runs one ``compare`` answer holds."""
MAX_RUN_IDS_CHARS = 64_000
"""The longest ``runs`` parameter (comma-separated run ids) accepted."""
GROUP_KEYS = ("group", "job_type")


class CompareError(ValueError):
    """A comparison the dashboard cannot answer (a bad parameter); ``status`` is the HTTP status to send."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def grouping(record: RunRecord) -> dict[str, str | None]:
    """``{"group": ..., "job_type": ...}`` of a run: from its meta, else from a ``group:NAME`` (or ``group=NAME``)
    tag; None where neither says."""
    out: dict[str, str | None] = {}
    for key in GROUP_KEYS:
        value = record.meta.get(key)
        if value is None:
            for tag in record.tags:
                head, sep, rest = tag.partition(":") if ":" in tag else tag.partition("=")
                if sep and head == key and rest:
                    value = rest
                    break
        out[key] = None if value is None or value == "" else str(value)
    return out


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A run's stored configuration as ``{"a.b": value}``: nested mappings joined with ``.``; numbers, strings,
    booleans and None kept; anything else (a list) as its JSON text; non-finite floats as ``"NaN"``, ``"Infinity"``
    or ``"-Infinity"`` (a category, not a coordinate)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat_config(value, f"{name}."))
        elif isinstance(value, float) and not math.isfinite(value):
            out[name] = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
        elif value is None or isinstance(value, bool | int | float | str):
            out[name] = value
        else:
            out[name] = json.dumps(value, sort_keys=True, default=str)
    return out


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _run_ids(raw: str | None) -> list[str] | None:
    if raw is None or raw.strip() == "":
        return None
    if len(raw) > MAX_RUN_IDS_CHARS:
        raise CompareError(f"runs must be at most {MAX_RUN_IDS_CHARS} characters of comma-separated run ids")
    ids = list(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    if len(ids) > MAX_COMPARE_RUNS:
        raise CompareError(f"at most {MAX_COMPARE_RUNS} runs can be compared at once, got {len(ids)}")
    return ids


def compare(reader: Reader, runs: str | None = None, project: str | None = None) -> dict[str, Any]:
    """The comparison of ``runs`` (comma-separated ids; default every run of ``project``, or every run, the
    newest ``MAX_COMPARE_RUNS``): per run its ``id``, ``name``, ``project``, ``status``, ``group``, ``job_type``,
    flattened ``config`` and ``metrics`` (``{name: {"last", "min", "max", "last_step"}}``, null where not finite);
    ``metrics`` and ``config_keys`` list the names any of them has. Unknown ids: 404 naming the first."""
    wanted = _run_ids(runs)
    records = reader.runs(project)
    if wanted is None:
        chosen = list(reversed(records))[:MAX_COMPARE_RUNS]
    else:
        by_id = {r.id: r for r in records}
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise CompareError(f"no run {missing[0][:100]!r}" + (f" (and {len(missing) - 1} more)"
                                                                if len(missing) > 1 else ""), status=404)
        chosen = [by_id[i] for i in wanted]
    rows = []
    metric_names: set[str] = set()
    config_keys: set[str] = set()
    for record in chosen:
        config = flat_config(record.config)
        metrics = {e.name: {"last": _number(e.last), "min": _number(e.min), "max": _number(e.max),
                            "last_step": e.last_step} for e in reader.summary(record.id)}
        metric_names.update(metrics)
        config_keys.update(config)
        rows.append({"id": record.id, "name": record.name, "project": record.project, "status": record.status,
                     **grouping(record), "config": config, "metrics": metrics})
    return {"runs": rows, "metrics": sorted(metric_names), "config_keys": sorted(config_keys)}
