"""Overhead of per-iteration gradient statistics on a CPU training step: ``watch(log="gradients", every=1)``.

MLPs of 4 x Linear(h, h) (h = 420, 1024, 1600: 0.7 M, 4.2 M and 10.2 M parameters), batch 64, SGD, with torch
using 1 and then 2 threads. Each configuration trains one model in blocks of ``--block`` steps that rotate
through three modes in the same process, so that machine noise hits all alike:

- logging off (the reference): only the loss is logged;
- ``watch(..., background=False)``: every gradient's histogram and statistics binned on the training thread,
  inside the hook (stepwire before the background thread existed);
- ``watch(...)``: the hook hands the gradients to the run's background binning thread.

The first step after ``watch()`` is binned on the training thread either way (the probe that shows background
binning is safe), as it is once per run; medians leave it out. Prints median step times, the overhead of each
mode against logging off (target for the background mode: <= 2%), and the median time the training thread
spent inside stepwire's hooks and fences per step (waits for the binning thread included).

    python bench/bench_watch.py [--steps 60] [--block 10] [--sizes 0.7 4 10] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import stepwire
import torch
from report import emit
from stepwire.torch.watch import _Watcher

MODES = ("logging off", "watch, binned in the hook", "watch, background thread")


class HookClock:
    """Seconds the training thread spends inside watch's hooks and fences (wrapping the methods)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        cls = _Watcher
        for name in ("log", "before_forward", "before_step", "after_step"):
            setattr(cls, name, self._timed(getattr(cls, name)))

    def _timed(self, method: Callable[..., None]) -> Callable[..., None]:
        def timed(*args: Any) -> None:
            t = time.perf_counter()
            try:
                method(*args)
            finally:
                self.seconds += time.perf_counter() - t
        return timed


def measure(hidden: int, threads: int, steps: int, block: int, clock: HookClock) -> dict[str, Any]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torch.nn.Sequential(*(torch.nn.Linear(hidden, hidden) for _ in range(4)))
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, hidden), torch.randint(0, hidden, (64,))
    run = stepwire.init(project="bench", name=f"watch-{hidden}-{threads}", quiet=True,
                        dir=tempfile.mkdtemp(prefix="stepwire-watch-"))
    times: dict[str, list[float]] = {m: [] for m in MODES}
    hook_s: dict[str, list[float]] = {m: [] for m in MODES}

    def step() -> tuple[float, float]:
        before = clock.seconds
        t = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        run.log({"loss": loss.detach()})
        return time.perf_counter() - t, clock.seconds - before

    for _ in range(5):
        step()  # warm-up
    for b in range(len(MODES) * math.ceil(steps / block)):
        mode = MODES[b % len(MODES)]
        handle = None if mode == MODES[0] else run.watch(model, background=mode == MODES[2])
        if handle is not None:
            step()  # the probe step (binned in the hook): once per run in real training, left out here
        for _ in range(block):
            t, h = step()
            times[mode].append(t)
            hook_s[mode].append(h)
        if handle is not None:
            handle.remove()
            run.flush()  # nothing of this block waits into the next one
    stats = run.stats()
    run.finish()
    off = float(np.median(times[MODES[0]]))
    return {"hidden": hidden, "threads": threads, "parameters": params, "off": off, "stats": stats,
            "rows": [{"parameters": f"{params / 1e6:.1f} M", "torch threads": threads, "mode": m,
                      "median step ms": float(np.median(times[m])) * 1e3,
                      "p90 step ms": float(np.percentile(times[m], 90)) * 1e3,
                      "in hooks ms/step": float(np.median(hook_s[m])) * 1e3,
                      "reference": "-" if m == MODES[0] else "logging off, same run",
                      "overhead": float(np.median(times[m])) / off - 1,
                      "target": "<= 2%" if m == MODES[2] else "-"} for m in MODES]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per mode and configuration")
    parser.add_argument("--block", type=int, default=10, help="steps per block of one mode")
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.7, 4, 10], help="millions of parameters")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch.set_num_threads values")
    args = parser.parse_args()
    clock = HookClock()
    results = [measure(round(math.sqrt(size * 1e6 / 4)), threads, args.steps, args.block, clock)
               for size in args.sizes for threads in args.threads]
    emit("watch", "stepwire: gradient histograms and statistics of every parameter, every step (CPU MLPs)",
         [row for r in results for row in r["rows"]],
         {"configs": [{k: r[k] for k in ("hidden", "threads", "parameters", "stats")} for r in results]})
    for r in results:
        stats = r["stats"]
        assert stats["acknowledged"] == stats["logged"] and stats["binning_changed"] == 0, stats


if __name__ == "__main__":
    main()
