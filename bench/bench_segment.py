"""What the shared-memory segment costs the training thread (issue 19: the hot path stays as it was).

Workloads A to E of the peer comparison (``stepwire bench``, ``stepwire.compare.suite``), stepwire's own, each in
a fresh process: with the rings in process memory (``$STEPWIRE_SHM=0``, the reference) and in the segment (the
default), alternating which goes first, several rounds; medians over the rounds and the ratio segment/reference.
A ratio near 1 within the rounds' spread means no cost.

    python bench/bench_segment.py [--rounds 5] [--scale 1]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from report import emit
from stepwire.compare.peers import all_peers
from stepwire.compare.suite import WORKLOADS, headline, measure

UNITS = {"A": "ns/call", "B": "µs/step", "C": "ms/call", "D": "ms/step over unlogged", "E": "s per M points"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scale", type=int, default=1, help="the suite's sizes times this")
    args = parser.parse_args()
    peer = next(p for p in all_peers() if p.name == "stepwire")
    # what is logged is exactly what the workloads log: no sampler thread adding series (and noise) to either side
    os.environ.update({"STEPWIRE_SYSTEM_METRICS": "0", "STEPWIRE_CONSOLE": "0"})
    figures: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for shm in ("0", "1") if r % 2 == 0 else ("1", "0"):
            os.environ["STEPWIRE_SHM"] = shm
            for w in WORKLOADS:
                result = measure(peer, w, args.scale)
                value = headline(w, result) if result.get("status") == "ok" else None
                if value is None or result.get("stored") != result.get("expected"):
                    raise SystemExit(f"workload {w} with STEPWIRE_SHM={shm}: {result}")
                figures.setdefault((w, shm), []).append(value)
    rows = []
    for w, title in WORKLOADS.items():
        off, on = np.array(figures[(w, "0")]), np.array(figures[(w, "1")])
        rows.append({"case": f"{w}: {title} ({UNITS[w]})", "process memory (median)": float(np.median(off)),
                     "segment (median)": float(np.median(on)), "ratio": float(np.median(on) / np.median(off)),
                     "reference spread": f"{off.min():.3g}-{off.max():.3g}",
                     "segment spread": f"{on.min():.3g}-{on.max():.3g}"})
    emit("bench_segment", f"segment vs process memory, {args.rounds} alternating rounds (lower is better)", rows)


if __name__ == "__main__":
    main()
