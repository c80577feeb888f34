"""Cost of the system-metrics sampler (``stepwire.system``), of W&B's and ClearML's system monitors, and of the
console tee (``stepwire.console``).

Training-step overhead: one run trains a CPU MLP (4 x Linear(1024, 1024), batch 64, SGD, torch on one thread,
``run.log`` every step) in blocks of ``--block`` seconds that rotate through the modes in the same process, so that
machine noise hits all alike: sampler off (the reference), stepwire's sampler every 2 s (its default is 10 s)
and every 0.1 s, and, where they import, the peers' monitors:

- ClearML: ``ResourceMonitor`` on an offline task (``Task.init(auto_resource_monitoring=False,
  auto_connect_frameworks=False, auto_connect_streams=False)``, so that only the monitor started here runs), as a
  thread in this process (``sdk.development.report_use_subprocess: false``; on Linux ClearML's default runs its
  monitors in a forked subprocess instead), at its defaults (a sample every 0.5 s, averages reported every 30 s
  after 180 s: within a block it only samples) and sampling and reporting every 0.1 s.
- W&B (>= 0.19): an offline run per block (``wandb.init`` before it, ``finish`` after, outside the timed steps,
  ``console="off"``), with stats off (``x_disable_stats=True``: the reference of the two W&B modes, the cost of an
  idle W&B run), at the default ``x_stats_sampling_interval`` of 15 s and at 0.1 s (its minimum). W&B samples in
  the ``wandb-symon`` process that its ``wandb-core`` service starts per run; ``x_stats_buffer_size`` keeps the
  samples in ``wandb-core`` so that they can be counted.

A sampler costs a few hundred microseconds every interval, so the figure is the mean step time (a median would
hide it), with p99 beside it, and the overhead of the medians beside that of the means: on a loaded machine other
processes' bursts move the means more than a sampler does. Every overhead is against the reference mode's blocks of
the same run. The monitor's own CPU time over the blocks is beside it: the sampler thread's
(``pthread_getcpuclockid``) for stepwire and ClearML, the ``wandb-core`` process tree's (psutil) for W&B. Both peers
are set up before the first block (ClearML's task and W&B's service stay up through all blocks, so that their idle
threads and processes hit every mode alike).

Monitor CPU time: each monitor alone over ``--idle`` seconds (no training), as CPU seconds per minute.

Console tee: ns per ``print`` of a short line to a stream that discards it, with and without the tee.

    python bench/bench_system.py [--seconds 120] [--block 5] [--idle 30]

The peers are optional: install them outside the project's environment and put them on the path, e.g.
``pip install --target /tmp/peers wandb clearml`` and ``PYTHONPATH=/tmp/peers python bench/bench_system.py``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import io
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

import stepwire
import torch
from report import emit, per_call_ns
from stepwire.console import ConsoleCapture
from stepwire.run import Run
from stepwire.system import SystemSampler

OFF = "sampler off"
WANDB_OFF = "W&B stats off"
STATS_BUFFER = 100_000  # samples W&B keeps in memory per metric (x_stats_buffer_size), so that they can be counted


def thread_cpu(thread: threading.Thread | None) -> float:
    """CPU seconds ``thread`` has used so far (0 when it is not running)."""
    if thread is None or thread.ident is None or not thread.is_alive():
        return 0.0
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except OSError:  # ended meanwhile
        return 0.0


def tree_cpu(proc: psutil.Process | None) -> float:
    """CPU seconds of ``proc``, its reaped children and its live descendants."""
    if proc is None:
        return 0.0
    try:
        t = proc.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        children = proc.children(recursive=True)
    except psutil.Error:
        return 0.0
    for child in children:
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.Error:  # exited between the listing and the reading: counted once reaped
            pass
    return float(total)


class Monitor:
    """A system monitor, started before a block and closed after it (both outside the timed steps)."""

    measured = "-"

    def __init__(self) -> None:
        self.samples = 0

    def cpu(self) -> float:
        """The monitor's own CPU seconds so far."""
        return 0.0

    def close(self) -> None:
        """Stop it and set ``samples``."""


class StepwireMonitor(Monitor):
    """stepwire's sampler thread, logging into ``run``."""

    measured = "sampler thread"

    def __init__(self, run: Run, interval: float) -> None:
        super().__init__()
        self.sampler = SystemSampler(run, interval)

    def cpu(self) -> float:
        return thread_cpu(self.sampler._thread)

    def close(self) -> None:
        self.sampler.close()
        self.samples = self.sampler.samples


class ClearMLMonitor(Monitor):
    """ClearML's ``ResourceMonitor`` thread on the offline task made by ``setup``."""

    measured = "monitor thread"
    task: Any = None
    monitor_class: Any = None

    @classmethod
    def setup(cls, directory: str) -> str:
        """Make the offline task once per process; returns what runs, or why ClearML's rows are absent."""
        if importlib.util.find_spec("clearml") is None:
            return "ClearML: clearml is not installed, its rows are absent"
        conf = Path(directory) / "clearml.conf"
        conf.write_text("sdk.development.report_use_subprocess: false\n")
        os.environ["CLEARML_CONFIG_FILE"] = str(conf)
        os.environ["CLEARML_CACHE_DIR"] = directory
        from clearml import Task
        from clearml.utilities.resource_monitor import ResourceMonitor

        class Counting(ResourceMonitor):  # type: ignore[misc]
            """ResourceMonitor counting its samples."""

            samples = 0

            def _update_readouts(self) -> None:
                self.samples += 1
                super()._update_readouts()

        Task.set_offline(True)
        Task.force_store_standalone_script()  # no git commands on the checkout
        cls.task = Task.init(project_name="bench", task_name="system", auto_resource_monitoring=False,
                             auto_connect_frameworks=False, auto_connect_streams=False,
                             auto_connect_arg_parser=False)
        for thread in threading.enumerate():  # its script detection, done before the first block
            if "_update_repository" in thread.name:
                thread.join(60)
        cls.monitor_class = Counting
        return (f"ClearML {importlib.metadata.version('clearml')}: ResourceMonitor as a thread in this process "
                f"(offline task, report_use_subprocess false)")

    def __init__(self, **kwargs: float) -> None:
        super().__init__()
        from clearml.utilities.process.mp import BackgroundMonitor

        self.monitor = self.monitor_class(self.task, **kwargs)
        self.monitor.start()  # the main task's monitors are queued, then started by start_all (as Task.init does)
        BackgroundMonitor.start_all(task=self.task)

    def cpu(self) -> float:
        thread = self.monitor._thread
        return thread_cpu(thread if isinstance(thread, threading.Thread) else None)

    def close(self) -> None:
        self.monitor.stop()
        self.samples = self.monitor.samples


class WandbMonitor(Monitor):
    """An offline W&B run, whose system monitor samples in the ``wandb-core`` service's process tree."""

    measured = "wandb-core tree"
    directory = ""
    service: psutil.Process | None = None
    has_disable = False

    @classmethod
    def setup(cls, directory: str) -> str:
        """Start W&B's service with a first run; returns what runs, or why W&B's rows are absent."""
        if importlib.util.find_spec("wandb") is None:
            return "W&B: wandb is not installed, its rows are absent"
        import wandb

        fields = wandb.Settings.model_fields
        if "x_stats_sampling_interval" not in fields:
            return f"W&B: wandb {wandb.__version__} has no x_stats_sampling_interval (< 0.19), its rows are absent"
        cls.directory, cls.has_disable = directory, "x_disable_stats" in fields
        first = cls(x_disable_stats=True) if cls.has_disable else cls(x_stats_sampling_interval=15.0)
        first.close()
        cores = [p for p in psutil.Process().children() if p.name().startswith("wandb-core")]
        cls.service = cores[0] if cores else None
        where = "its wandb-core process" if cls.service else "no wandb-core process found: no CPU time"
        stats_off = "" if cls.has_disable else ", no x_disable_stats in this version"
        return f"W&B {wandb.__version__}: offline run per block, {where}{stats_off}"

    def __init__(self, **settings: Any) -> None:
        super().__init__()
        import wandb

        if "x_stats_buffer_size" in wandb.Settings.model_fields:  # else its samples are not counted
            settings["x_stats_buffer_size"] = STATS_BUFFER
        self.run = wandb.init(project="bench", mode="offline", dir=self.directory,
                              settings=wandb.Settings(console="off", quiet=True, silent=True, **settings))
        self.first = self._count()

    def _count(self) -> int:
        metrics = getattr(self.run, "_system_metrics", None) or {}
        return max((len(v) for v in metrics.values()), default=0)

    def cpu(self) -> float:
        return tree_cpu(self.service)

    def close(self) -> None:
        self.samples = self._count() - self.first
        self.run.finish()


@dataclass
class Mode:
    """One mode of the rotation: its name, the mode it is measured against, and how to start its monitor."""

    name: str
    reference: str
    measured: str  # whose CPU time is the monitor's ("-": none)
    start: Callable[[Run], Monitor]


def modes(directory: str) -> tuple[list[Mode], list[str]]:
    """stepwire's modes and those of the peers that import, with one line per peer saying what runs or why not."""
    own = StepwireMonitor.measured
    out = [Mode(OFF, "", "-", lambda run: Monitor()),
           Mode("sampler every 2 s", OFF, own, lambda run: StepwireMonitor(run, 2.0)),
           Mode("sampler every 0.1 s", OFF, own, lambda run: StepwireMonitor(run, 0.1))]
    notes = [ClearMLMonitor.setup(tempfile.mkdtemp(prefix="clearml-", dir=directory))]
    if ClearMLMonitor.task is not None:
        cm = ClearMLMonitor.measured
        out += [Mode("ClearML every 0.5 s, report 30 s", OFF, cm, lambda run: ClearMLMonitor()),
                Mode("ClearML every 0.1 s, report 0.1 s", OFF, cm, lambda run: ClearMLMonitor(
                    sample_frequency_per_sec=10.0, report_frequency_sec=0.1, first_report_sec=0.1,
                    wait_for_first_iteration_to_start_sec=0.0))]
    notes.append(WandbMonitor.setup(tempfile.mkdtemp(prefix="wandb-", dir=directory)))
    if WandbMonitor.directory:
        ref, wb = OFF, WandbMonitor.measured
        if WandbMonitor.has_disable:
            out.append(Mode(WANDB_OFF, OFF, wb, lambda run: WandbMonitor(x_disable_stats=True)))
            ref = WANDB_OFF
        out += [Mode("W&B every 15 s", ref, wb, lambda run: WandbMonitor(x_stats_sampling_interval=15.0)),
                Mode("W&B every 0.1 s", ref, wb, lambda run: WandbMonitor(x_stats_sampling_interval=0.1))]
    return out, notes


def step_overhead(seconds: float, block: float, rotation: list[Mode]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(*(torch.nn.Linear(1024, 1024) for _ in range(4)))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 1024), torch.randint(0, 1024, (64,))
    run = stepwire.init(project="bench", name="system", quiet=True, system_metrics=False, console=False,
                        dir=tempfile.mkdtemp(prefix="stepwire-system-"))
    times: dict[str, list[float]] = {m.name: [] for m in rotation}

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
    samples = {m.name: 0 for m in rotation}
    cpu = {m.name: 0.0 for m in rotation}
    wall = {m.name: 0.0 for m in rotation}
    for b in range(len(rotation) * max(1, math.ceil(seconds / block / len(rotation)))):
        mode = rotation[b % len(rotation)]
        monitor = mode.start(run)
        c0, t0 = monitor.cpu(), time.perf_counter()
        end = t0 + block
        while time.perf_counter() < end:
            times[mode.name].append(step())
        cpu[mode.name] += monitor.cpu() - c0
        wall[mode.name] += time.perf_counter() - t0
        monitor.close()
        samples[mode.name] += monitor.samples
    run.finish()
    stats = run.stats()
    mean = {m.name: float(np.mean(times[m.name])) for m in rotation}
    median = {m.name: float(np.median(times[m.name])) for m in rotation}
    rows = [{"mode": m.name, "steps": len(times[m.name]), "samples": samples[m.name],
             "mean step ms": mean[m.name] * 1e3,
             "median step ms": median[m.name] * 1e3,
             "p99 step ms": float(np.percentile(times[m.name], 99)) * 1e3,
             "reference": f"{m.reference}, same run" if m.reference else "-",
             "overhead (mean)": mean[m.name] / mean[m.reference] - 1 if m.reference else 0.0,
             "overhead (median)": median[m.name] / median[m.reference] - 1 if m.reference else 0.0,
             "monitor CPU s per minute": cpu[m.name] / wall[m.name] * 60 if m.measured != "-" else "-"}
            for m in rotation]
    return rows, stats


def monitor_cpu(idle: float, rotation: list[Mode]) -> list[dict[str, Any]]:
    """Each monitor alone for ``idle`` seconds: its CPU time per minute and per sample."""
    run = stepwire.init(project="bench", name="system-cpu", quiet=True, system_metrics=False, console=False,
                        dir=tempfile.mkdtemp(prefix="stepwire-system-"))
    rows: list[dict[str, Any]] = []
    for mode in rotation:
        if mode.measured == "-":
            continue
        monitor = mode.start(run)
        c0, t0 = monitor.cpu(), time.perf_counter()
        time.sleep(idle)
        cpu, wall = monitor.cpu() - c0, time.perf_counter() - t0
        monitor.close()
        n = monitor.samples
        rows.append({"mode": mode.name, "measured": mode.measured, "seconds": wall, "samples": n,
                     "monitor CPU s per minute": cpu / wall * 60,
                     "CPU ms per sample": cpu / n * 1e3 if n else "-"})
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
    parser.add_argument("--seconds", type=float, default=120.0, help="training time over all the modes")
    parser.add_argument("--block", type=float, default=5.0, help="seconds per block of one mode")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds per monitor for its CPU time")
    args = parser.parse_args()
    rotation, notes = modes(tempfile.mkdtemp(prefix="stepwire-system-peers-"))
    rows, stats = step_overhead(args.seconds, args.block, rotation)
    cpu_rows = monitor_cpu(args.idle, rotation)
    tee = tee_cost()
    emit("system", "system monitors: training-step overhead (CPU MLP, 1 torch thread)", rows,
         {"tee": tee, "peers": notes})
    emit("system_cpu", "system monitors: the monitor's own CPU time, idle", cpu_rows, {"peers": notes})
    for note in notes:
        print(note)
    print(f"console tee: print() of a short line {tee['print ns']:.0f} ns -> {tee['print ns with tee']:.0f} ns "
          f"(+{tee['print ns with tee'] - tee['print ns']:.0f} ns)")
    assert stats["acknowledged"] == stats["logged"], stats


if __name__ == "__main__":
    main()
