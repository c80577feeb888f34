"""Cost of logging calls on the training thread: ``log_scalar`` and ``log`` of a 100-key dict.

Each figure is printed with its ratio to a reference measured in the same run: a no-op Python call with the
same arguments, and a Python loop that merely reads the 100 values of the dict. ``log`` is measured twice:
back to back (the pipeline saturated, sharing the 2 cores with the drainer, sender and collector) and
between 1 ms of simulated compute, as in a training loop.

    python bench/bench_log.py [--dir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

import stepwire
from report import emit, per_call_ns


def noop(name: str, value: float, step: int | None = None) -> None:
    """The reference: a Python call that does nothing."""


def compute(ms: float) -> None:
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    directory = args.dir or tempfile.mkdtemp(prefix="stepwire-bench-")
    run = stepwire.init(project="bench", name="log", dir=directory)
    rows = []

    run.log_scalar("a", 1.0)
    ls = run.log_scalar
    ours = per_call_ns(lambda: ls("a", 1.5))
    ref = per_call_ns(lambda: noop("a", 1.5))
    rows.append({"case": "log_scalar", "median ns": ours["median"], "p99 ns": ours["p99"],
                 "reference": "no-op Python call", "ref median ns": ref["median"],
                 "ratio": ours["median"] / ref["median"], "target": "<= 200 ns"})

    d = {f"layer{i}/weight_norm": float(i) for i in range(100)}
    run.log(d)

    def read_all() -> None:
        for _k, _v in d.items():
            pass

    ref = per_call_ns(read_all, calls=100, repeats=200)
    saturated = per_call_ns(lambda: run.log(d), calls=100, repeats=200)
    rows.append({"case": "log 100 keys, back to back", "median ns": saturated["median"], "p99 ns": saturated["p99"],
                 "reference": "loop reading 100 values", "ref median ns": ref["median"],
                 "ratio": saturated["median"] / ref["median"], "target": "<= 15 us"})
    samples = []
    for _ in range(1000):
        compute(1.0)
        t = time.perf_counter_ns()
        run.log(d)
        samples.append(time.perf_counter_ns() - t)
    paced = {"median": float(np.median(samples)), "p99": float(np.percentile(samples, 99))}
    rows.append({"case": "log 100 keys, 1 ms compute between", "median ns": paced["median"], "p99 ns": paced["p99"],
                 "reference": "loop reading 100 values", "ref median ns": ref["median"],
                 "ratio": paced["median"] / ref["median"], "target": "<= 15 us"})
    t = time.perf_counter()
    run.finish()
    stats = run.stats()
    emit("log", "stepwire: logging cost on the calling thread", rows,
         {"finish_s": time.perf_counter() - t, "stats": stats})
    assert stats["acknowledged"] == stats["logged"], stats


if __name__ == "__main__":
    main()
