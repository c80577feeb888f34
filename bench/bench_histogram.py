"""Histogram binning throughput of the native core, against numpy on the same data.

References measured in the same run: ``numpy.histogram`` with 64 bins (what most loggers call), and
``numpy.copyto`` of the same array (a memory-bound pass: binning cannot beat reading the data once).
The target is per core; "all cores" is what ``Run.log_histogram`` takes (large arrays are split across cores).

    python bench/bench_histogram.py [--n 1000000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from report import emit
from stepwire import _core


def best_seconds(fn: Callable[[], object], repeats: int = 30) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for dtype in (np.float32, np.float64, np.float16):
        x = rng.standard_normal(args.n).astype(dtype)
        dst = np.empty_like(x)
        ours = best_seconds(lambda x=x: _core.bin_many([x], [False], 3, 1))
        all_cores = best_seconds(lambda x=x: _core.bin_values(x, 3))  # what log_histogram calls
        numpy_hist = best_seconds(lambda x=x: np.histogram(x, bins=64), repeats=5)
        copy = best_seconds(lambda x=x, dst=dst: np.copyto(dst, x))
        rows.append({
            "case": f"{args.n:,} {np.dtype(dtype).name}", "ms": ours * 1e3, "G values/s": args.n / ours / 1e9,
            "all cores ms": all_cores * 1e3, "numpy.histogram ms": numpy_hist * 1e3,
            "speed-up vs numpy": numpy_hist / ours,
            "memcpy ms": copy * 1e3, "time / memcpy": ours / copy,
            "target": ">= 1 G values/s" if dtype is np.float32 else "-",
        })
    emit("histogram", "stepwire: histogram binning (one core, k = 3)", rows)


if __name__ == "__main__":
    main()
