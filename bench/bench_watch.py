"""Overhead of per-iteration model statistics on a training step: an MLP of about 10 M parameters on CPU.

Side by side in one run, alternating step by step so that machine noise hits both alike: training steps with
logging off, and the same steps with ``Run.watch(model, log="gradients", every=1)`` logging every parameter's
histogram and norm/min/max/mean/non-finite count every iteration (both log the loss). Prints median step
times, the overhead ratio (target: at most 5%), and the median time spent inside the watch hook itself.

    python bench/bench_watch.py [--steps 40] [--hidden 2048]
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
import time
from typing import Any

import numpy as np

import stepwire
import torch
from report import emit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per mode")
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--flush-interval", type=float, default=0.1, help="the run's flush_interval, s")
    args = parser.parse_args()
    torch.manual_seed(0)
    h = args.hidden
    model = torch.nn.Sequential(torch.nn.Linear(512, h), torch.nn.ReLU(), torch.nn.Linear(h, h), torch.nn.ReLU(),
                                torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, 10))
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(args.batch, 512), torch.randint(0, 10, (args.batch,))
    run = stepwire.init(project="bench", name="watch", dir=tempfile.mkdtemp(prefix="stepwire-watch-"),
                        flush_interval=args.flush_interval)

    def step(log: bool) -> float:
        t = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        run.log({"loss": loss.detach()})
        return time.perf_counter() - t

    times: dict[bool, list[float]] = {False: [], True: []}
    hook_times: list[float] = []
    watch_module = importlib.import_module("stepwire.torch.watch")
    log_stats = watch_module.ModelStats.log

    def timed_log(self: Any, *a: Any, **kw: Any) -> None:
        t = time.perf_counter()
        log_stats(self, *a, **kw)
        hook_times.append(time.perf_counter() - t)

    watch_module.ModelStats.log = timed_log
    for _ in range(3):
        step(False)  # warm-up
    for i in range(2 * args.steps):
        log = i % 2 == 1
        handle = run.watch(model, log="gradients", every=1) if log else None
        times[log].append(step(log))
        if handle is not None:
            handle.remove()
    run.finish()
    off, on = np.median(times[False]), np.median(times[True])
    stats = run.stats()
    emit("watch", f"stepwire: per-iteration statistics of {params / 1e6:.1f} M parameters (CPU)", [
        {"case": "logging off", "median step ms": off * 1e3, "p90 step ms": np.percentile(times[False], 90) * 1e3,
         "steps": len(times[False]), "reference": "-", "overhead": 0.0, "target": "-"},
        {"case": "watch(log='gradients', every=1)", "median step ms": on * 1e3,
         "p90 step ms": np.percentile(times[True], 90) * 1e3, "steps": len(times[True]),
         "reference": "logging off, same run", "overhead": on / off - 1, "target": "<= 5%"},
        {"case": "time inside the watch hook (direct cost)", "median step ms": float(np.median(hook_times)) * 1e3,
         "p90 step ms": float(np.percentile(hook_times, 90)) * 1e3, "steps": len(hook_times),
         "reference": "logging off, same run", "overhead": float(np.median(hook_times)) / off, "target": "<= 5%"},
    ], {"parameters": params, "stats": stats, "hook_median_ms": float(np.median(hook_times) * 1e3)})
    assert stats["acknowledged"] == stats["logged"], stats


if __name__ == "__main__":
    main()
