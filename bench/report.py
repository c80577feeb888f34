"""Shared output of the benchmarks: a rich table on the terminal and a JSON file under bench/results/."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"


def per_call_ns(fn: Callable[[], object], calls: int = 1000, repeats: int = 200) -> dict[str, float]:
    """Median and p99 over ``repeats`` timings of ``calls`` back-to-back calls, in ns per call."""
    samples = []
    for _ in range(repeats):
        t = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter_ns() - t) / calls)
    arr = np.array(samples)
    return {"median": float(np.median(arr)), "p99": float(np.percentile(arr, 99))}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine()}


def emit(name: str, title: str, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> Path:
    """Print ``rows`` (dicts with the same keys) as a table and write them to bench/results/{name}.json."""
    table = Table(title=title)
    for key in rows[0]:
        table.add_column(key, justify="left" if key in ("case", "reference", "target") else "right")
    for row in rows:
        table.add_row(*[f"{v:,.3g}" if isinstance(v, float) else str(v) for v in row.values()])
    Console().print(table)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), "rows": rows, **(extra or {})}, indent=2))
    Console().print(f"results written to {path}")
    return path
