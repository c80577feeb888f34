"""How fast the dashboard opens a long series: a 10-million-point scalar served downsampled by the collector.

Figures: the time from request to parsed JSON for one chart (``/api/scalars``, 1000 points, x = step and x =
wall time), and for what the page asks when it opens a run (runs table, series list, that chart). References
measured in the same run: reading the whole series through ``Api`` (no downsampling), and TensorBoard's own
backend (``EventAccumulator``) loading an event file with 1 M points of the same series, once keeping every
point and once with its default reservoir of 1000 (what ``tensorboard --logdir`` does); ratios are per point.

    python bench/bench_dashboard.py [--points 10000000] [--tensorboard-points 1000000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from processes import start_collector
from report import emit
from stepwire import Api, init


def fetch(url: str) -> tuple[float, Any]:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=300) as r:
        body = json.loads(r.read())
    return time.perf_counter() - t, body


def best_of(n: int, url: str) -> float:
    return min(fetch(url)[0] for _ in range(n))


def tensorboard_load(directory: Path, points: int, values: np.ndarray) -> dict[str, float] | None:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        return None
    writer = EventFileWriter(str(directory))
    for step, v in enumerate(values[:points].tolist()):
        writer.add_event(Event(step=step, wall_time=1.7e9 + step, summary=Summary(
            value=[Summary.Value(tag="signal", simple_value=v)])))
    writer.close()
    out = {}
    for label, keep in (("all", 0), ("reservoir", 1000)):
        t = time.perf_counter()
        acc = EventAccumulator(str(directory), size_guidance={"scalars": keep})
        acc.Reload()
        assert len(acc.Scalars("signal")) == (points if keep == 0 else min(points, keep))
        out[label] = time.perf_counter() - t
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--tensorboard-points", type=int, default=1_000_000)
    args = parser.parse_args()
    values = np.sin(np.arange(args.points) / 1e4) + np.random.default_rng(0).standard_normal(args.points) * 0.1
    with tempfile.TemporaryDirectory(prefix="stepwire-bench-dash-") as tmp:
        proc, address = start_collector(Path(tmp) / "store", 0, "--http", "127.0.0.1:0")
        try:
            run = init(project="bench", name="long", address=address, quiet=True)
            t = time.perf_counter()
            log = run.log_scalar
            for step, v in enumerate(values.tolist()):
                log("signal", v, step)
            run.finish()
            ingest_s = time.perf_counter() - t
            url = json.loads((Path(tmp) / "store" / "collector.json").read_text())["http"]
            chart = f"{url}api/scalars?run={run.id}&name=signal&points=1000"
            first, body = fetch(chart)
            assert body["total"] == args.points and len(body["ranks"][0]["x"]) <= 1000
            chart_s = best_of(3, chart)
            wall_s = best_of(3, chart + "&x=wall_time")
            t = time.perf_counter()
            fetch(f"{url}api/runs")
            fetch(f"{url}api/series?run={run.id}")
            fetch(chart)
            page_s = time.perf_counter() - t
            t = time.perf_counter()
            full = Api(address=address).run(run.id).scalars("signal")
            api_s = time.perf_counter() - t
            assert len(full["step"]) == args.points
        finally:
            proc.terminate()
            proc.wait()
        tb = tensorboard_load(Path(tmp) / "tb", args.tensorboard_points, values)
    n = args.points
    rows: list[dict[str, Any]] = [
        {"case": f"dashboard chart, {n:,} points -> 1000 (x = step)", "s": chart_s, "first request s": first,
         "target": "well under 1 s"},
        {"case": "dashboard chart, x = wall time", "s": wall_s, "first request s": "-", "target": "-"},
        {"case": "page opening a run (runs, series, chart)", "s": page_s, "first request s": "-", "target": "-"},
        {"case": f"reference: Api reads all {n:,} points", "s": api_s, "first request s": "-", "target": "-"},
    ]
    extra: dict[str, Any] = {"points": n, "ingest_s": ingest_s}
    if tb is not None:
        m = args.tensorboard_points
        for label, secs in tb.items():
            per_point_ratio = (secs / m) / (chart_s / n)
            rows.append({"case": f"reference: TensorBoard EventAccumulator, {m:,} points, keep {label}", "s": secs,
                         "first request s": "-", "target": f"stepwire {per_point_ratio:,.0f}x less per point"})
        extra["tensorboard"] = tb
    else:
        rows.append({"case": "reference: TensorBoard", "s": float("nan"), "first request s": "-",
                     "target": "missing: pip install tensorboard"})
    emit("dashboard", f"stepwire dashboard: opening a {n:,}-point series", rows, extra)


if __name__ == "__main__":
    main()
