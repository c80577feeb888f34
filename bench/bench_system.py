"""Cost of the system-metrics sampler (``stepwire.system``) and of the console tee (``stepwire.console``).

Training-step overhead: one run trains a CPU MLP (4 x Linear(1024, 1024), batch 64, SGD, torch on one thread,
``run.log`` every step) in blocks of ``--block`` seconds that rotate through three modes in the same process, so
that machine noise hits all alike: sampler off (the reference), sampler at the default 2 s interval, sampler at
0.1 s. A sampler costs a few hundred microseconds every interval, so the figure is the mean step time (a median
would hide it), with p99 beside it.

Sampler CPU time: the sampler thread's own CPU time (``pthread_getcpuclockid``) over ``--idle`` seconds at each
interval, as seconds per minute.

Console tee: ns per ``print`` of a short line to a stream that discards it, with and without the tee.

    python bench/bench_system.py [--seconds 120] [--block 5] [--idle 30]
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import tempfile
import time
from typing import Any

import numpy as np

import stepwire
import torch
from report import emit, per_call_ns
from stepwire.console import ConsoleCapture
from stepwire.system import SystemSampler

MODES = ("sampler off", "sampler every 2 s", "sampler every 0.1 s")
INTERVALS = {MODES[1]: 2.0, MODES[2]: 0.1}


def step_overhead(seconds: float, block: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(*(torch.nn.Linear(1024, 1024) for _ in range(4)))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 1024), torch.randint(0, 1024, (64,))
    run = stepwire.init(project="bench", name="system", quiet=True, system_metrics=False, console=False,
                        dir=tempfile.mkdtemp(prefix="stepwire-system-"))
    times: dict[str, list[float]] = {m: [] for m in MODES}

    def step() -> float:
        t = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        run.log({"loss": loss.detach()})
        return time.perf_counter() - t

    for _ in range(10):
        step()  # warm-up
    samples = {m: 0 for m in MODES}
    for b in range(len(MODES) * max(1, math.ceil(seconds / block / len(MODES)))):
        mode = MODES[b % len(MODES)]
        sampler = SystemSampler(run, INTERVALS[mode]) if mode in INTERVALS else None
        end = time.perf_counter() + block
        while time.perf_counter() < end:
            times[mode].append(step())
        if sampler is not None:
            sampler.close()
            samples[mode] += sampler.samples
    run.finish()
    stats = run.stats()
    off = float(np.mean(times[MODES[0]]))
    rows = [{"mode": m, "steps": len(times[m]), "samples": samples[m],
             "mean step ms": float(np.mean(times[m])) * 1e3,
             "median step ms": float(np.median(times[m])) * 1e3,
             "p99 step ms": float(np.percentile(times[m], 99)) * 1e3,
             "reference": "-" if m == MODES[0] else "sampler off, same run",
             "overhead (mean)": float(np.mean(times[m])) / off - 1} for m in MODES]
    return rows, stats


def sampler_cpu(idle: float) -> list[dict[str, Any]]:
    run = stepwire.init(project="bench", name="system-cpu", quiet=True, system_metrics=False, console=False,
                        dir=tempfile.mkdtemp(prefix="stepwire-system-"))
    rows = []
    for interval in (2.0, 0.1):
        sampler = SystemSampler(run, interval)
        ident = sampler._thread.ident
        assert ident is not None
        clock = time.pthread_getcpuclockid(ident)
        t0, c0 = time.perf_counter(), time.clock_gettime(clock)
        time.sleep(idle)
        cpu, wall = time.clock_gettime(clock) - c0, time.perf_counter() - t0
        n = sampler.samples
        sampler.close()
        rows.append({"mode": f"sampler every {interval:g} s", "seconds": wall, "samples": n,
                     "sampler CPU s per minute": cpu / wall * 60, "CPU ms per sample": cpu / max(n, 1) * 1e3})
    run.finish()
    return rows


def tee_cost() -> dict[str, float]:
    sink = io.StringIO()

    def line() -> None:
        print("epoch 3 step 1200 loss 0.1234", file=sys.stdout)
        if sink.tell() > 1 << 20:
            sink.seek(0)
            sink.truncate()

    saved = sys.stdout
    sys.stdout = sink
    try:
        plain = per_call_ns(line, calls=1000, repeats=50)["median"]
        run = stepwire.init(project="bench", name="console", quiet=True, system_metrics=False, console=False,
                            dir=tempfile.mkdtemp(prefix="stepwire-console-"))
        capture = ConsoleCapture(run)  # tees the sink
        teed = per_call_ns(line, calls=1000, repeats=50)["median"]
        capture.close()
        run.finish()
    finally:
        sys.stdout = saved
    return {"print ns": plain, "print ns with tee": teed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="training time over all three modes")
    parser.add_argument("--block", type=float, default=5.0, help="seconds per block of one mode")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds per interval for the sampler's CPU time")
    args = parser.parse_args()
    rows, stats = step_overhead(args.seconds, args.block)
    cpu_rows = sampler_cpu(args.idle)
    tee = tee_cost()
    emit("system", "stepwire: system-metrics sampler, training-step overhead (CPU MLP, 1 torch thread)", rows,
         {"tee": tee})
    emit("system_cpu", "stepwire: the sampler thread's own CPU time", cpu_rows)
    print(f"console tee: print() of a short line {tee['print ns']:.0f} ns -> {tee['print ns with tee']:.0f} ns "
          f"(+{tee['print ns with tee'] - tee['print ns']:.0f} ns)")
    assert stats["acknowledged"] == stats["logged"], stats


if __name__ == "__main__":
    main()
