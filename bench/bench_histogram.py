"""Histogram binning throughput of the native core, against numpy on the same data.

References measured in the same run: ``numpy.histogram`` with 64 bins (what most loggers call), and
``numpy.copyto`` of the same array (a memory-bound pass: binning cannot beat reading the data once).
The target is per core; "all cores" is what ``Run.log_histogram`` takes (large arrays are split across cores).

A second table bins many arrays in one ``_core.bin_many`` call, as ``watch`` does for a model's parameters:
ResNet-50's 161 parameter tensors (biases and norms of 64 to 2048 values, weights up to 2.4 M), 1,000 tensors of
16 values (the fixed cost per tensor: "ns / tensor"), and one 4 M float32 tensor; against ``numpy.histogram``
(64 bins) and ``numpy.copyto`` over the same tensors, one by one.

    python bench/bench_histogram.py [--n 1000000] [--only single|many]
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


def resnet50_sizes() -> list[int]:
    """Element counts of torchvision's ResNet-50 parameters, in order (161 tensors, 25.6 M values)."""
    sizes = [64 * 3 * 7 * 7, 64, 64]
    cin = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            sizes += [width * cin, width, width, width * width * 9, width, width, 4 * width * width, 4 * width,
                      4 * width]
            if b == 0:
                sizes += [4 * width * cin, 4 * width, 4 * width]  # downsample
            cin = 4 * width
    return [*sizes, 1000 * 2048, 1000]


def many_rows(rng: np.random.Generator) -> list[dict[str, object]]:
    cases = [
        ("ResNet-50 parameters", resnet50_sizes()),
        ("1,000 x 16 values", [16] * 1000),
        ("one 4 M tensor", [4 << 20]),
    ]
    rows: list[dict[str, object]] = []
    for name, sizes in cases:
        tensors = [(rng.standard_normal(n) * 0.05).astype(np.float32) for n in sizes]
        dsts = [np.empty_like(t) for t in tensors]
        flags = [False] * len(tensors)
        total = sum(sizes)
        repeats = max(3, min(30, int(2e8 / (total + 1000 * len(sizes)))))
        one = best_seconds(lambda t=tensors, f=flags: _core.bin_many(t, f, 3, 1), repeats)
        all_cores = best_seconds(lambda t=tensors, f=flags: _core.bin_many(t, f, 3, 0), repeats)
        numpy_hist = best_seconds(lambda t=tensors: [np.histogram(x, bins=64) for x in t], max(3, repeats // 5))
        copy = best_seconds(lambda t=tensors, d=dsts: [np.copyto(y, x) for x, y in zip(t, d, strict=True)], repeats)
        rows.append({
            "case": name, "tensors": len(sizes), "M values": total / 1e6, "ms": one * 1e3,
            "ns / tensor": one / len(sizes) * 1e9, "G values/s": total / one / 1e9, "all cores ms": all_cores * 1e3,
            "numpy.histogram ms": numpy_hist * 1e3, "speed-up vs numpy": numpy_hist / one,
            "memcpy ms": copy * 1e3, "time / memcpy": one / copy,
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--only", choices=("single", "many"), help="run one of the two tables")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    if args.only != "single":
        emit("histogram_many", "stepwire: many arrays in one bin_many call (float32, k = 3; ms: one core)",
             many_rows(rng))
    if args.only == "many":
        return
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
