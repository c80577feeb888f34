"""Per-parameter statistics of a model, logged every N iterations: ``Run.watch`` and ``Run.log_model_stats``.

For every parameter (or its gradient) stepwire logs a histogram under ``{kind}/{name}`` and the scalars
``{kind}/{name}/norm``, ``/min``, ``/max``, ``/mean`` and ``/nonfinite``, where kind is ``gradients`` or
``parameters`` (the names W&B's ``watch`` uses). CPU tensors are binned by the native core as they are at the
call (GIL released, one pass for histogram and statistics); tensors on a GPU are reduced there in a few fused
launches per chunk (``reduce_tensors``) and a waiter thread, not the training thread, waits for the results.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from stepwire import _core
from stepwire.tensors import cpu_view
from stepwire.torch.reduce import DEFAULT_CHUNK_ELEMENTS, DeviceReduction, reduce_tensors

if TYPE_CHECKING:
    from stepwire.run import Run

log = logging.getLogger("stepwire.torch")

KINDS = {"gradients": ("gradients",), "parameters": ("parameters",), "all": ("gradients", "parameters")}


def scalars_of(prefix: str, s: dict[str, Any]) -> dict[str, float]:
    """The scalar series logged beside a histogram with statistics ``s``."""
    finite = s["count"] - s["nan"] - s["pos_inf"] - s["neg_inf"]
    return {f"{prefix}/norm": math.sqrt(s["sumsq"]), f"{prefix}/min": s["min"], f"{prefix}/max": s["max"],
            f"{prefix}/mean": s["sum"] / finite if finite else math.nan,
            f"{prefix}/nonfinite": float(s["count"] - finite)}


class DeviceWaiter:
    """A thread that waits for device reductions and logs their results, so the training thread never waits.

    At most ``max_pending`` reductions are in flight; beyond that ``submit`` waits for the oldest (back-pressure
    like a full ring under the block policy) or, with ``drop=True``, drops and counts.
    """

    def __init__(self, max_pending: int = 8, drop: bool = False) -> None:
        self._queue: queue.Queue[tuple[DeviceReduction, Callable[[DeviceReduction], None]] | None] = queue.Queue(
            max_pending)
        self._drop = drop
        self.dropped = 0
        self._thread = threading.Thread(target=self._loop, name="stepwire-device-waiter", daemon=True)
        self._thread.start()

    def submit(self, reduction: DeviceReduction, done: Callable[[DeviceReduction], None]) -> None:
        """Call ``done(reduction)`` on the waiter thread once the reduction's results are on the host."""
        if self._drop:
            try:
                self._queue.put_nowait((reduction, done))
            except queue.Full:
                self.dropped += 1
        else:
            self._queue.put((reduction, done))

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            reduction, done = item
            try:
                reduction.wait()
                done(reduction)
            except Exception as exc:  # a failure here must not stop later results from being logged
                log.error("logging device statistics failed: %s", exc)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def join(self) -> None:
        """Wait until everything submitted so far is logged."""
        self._queue.join()

    def close(self) -> None:
        """Log what is pending, then stop the thread."""
        self._queue.put(None)
        self._thread.join()


class ModelStats:
    """Logs histograms and statistics of many tensors for one run (shared by ``watch`` and the Ignite handlers)."""

    def __init__(self, run: Run, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> None:
        self.run = run
        self.chunk_elements = chunk_elements

    def log(self, named: Iterable[tuple[str, torch.Tensor]], step: int, scalars: bool = True) -> None:
        """Log the histogram of each ``(name, tensor)`` (and its scalars) at ``step``."""
        self.run._busy_begin()  # hooks call this on the training thread: it counts as logging time
        try:
            self._log(named, step, scalars)
        finally:
            self.run._busy_end()

    def _log(self, named: Iterable[tuple[str, torch.Tensor]], step: int, scalars: bool) -> None:
        by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
        for name, t in named:
            by_device.setdefault(t.device, []).append((name, t))
        for device, items in by_device.items():
            if device.type == "cpu":
                self._log_cpu(items, step, scalars)
            else:
                reduction = reduce_tensors([t for _, t in items], self.run._k, self.chunk_elements)
                names = [n for n, _ in items]
                self.run._device_waiter().submit(reduction, self._done(names, step, scalars))

    def _done(self, names: list[str], step: int, scalars: bool) -> Callable[[DeviceReduction], None]:
        return lambda r: self._log_reduction(r, names, step, scalars)

    def _log_cpu(self, items: Sequence[tuple[str, torch.Tensor]], step: int, scalars: bool) -> None:
        run = self.run
        views = [cpu_view(name, t) for name, t in items]
        ids = [run._define(name, _core.KIND_HISTOGRAM) for name, _ in items]
        results = run._stream.push_histograms(ids, step, [v for v, _ in views], [b for _, b in views], run._k)
        out: dict[str, float] = {}
        for (name, _), stats in zip(items, results, strict=True):
            if stats is not None and scalars:
                out.update(scalars_of(name, stats))
        if out:
            run._log_stats(out, step)

    def _log_reduction(self, r: DeviceReduction, names: list[str], step: int, scalars: bool) -> None:
        run = self.run
        out: dict[str, float] = {}
        for i, name in enumerate(names):
            h = r.histogram(i)
            run._stream.push_binned(run._define(name, _core.KIND_HISTOGRAM), step, h["k"], h["indices"],
                                    h["counts"], h["count"], h["sum"], h["min"], h["max"], h["nan"], h["pos_inf"],
                                    h["neg_inf"])
            if scalars:
                out.update(scalars_of(name, h))
        if out:
            run._log_stats(out, step)


def log_device_values(run: Run, scalars: dict[str, torch.Tensor], hists: dict[str, torch.Tensor], step: int) -> None:
    """Log GPU tensors without synchronising: one-element tensors as scalars (copied to pinned memory without
    blocking), the others as histograms (reduced on the device); the waiter thread logs them when ready."""
    if hists:
        ModelStats(run).log(hists.items(), step, scalars=False)
    if scalars:
        names = list(scalars)
        values = torch.stack([t.detach().reshape(()).to(torch.float64) for t in scalars.values()])
        host = torch.empty(values.shape, dtype=torch.float64, pin_memory=True)
        host.copy_(values, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        reduction = DeviceReduction(0, [], host, host, event)
        run._device_waiter().submit(reduction, lambda r: run._log_stats(dict(zip(names, r.stats.tolist(),
                                                                                 strict=True)), step))


def named_tensors(model: torch.nn.Module, kind: str) -> list[tuple[str, torch.Tensor]]:
    """``(f"{kind}/{name}", tensor)`` for every parameter (its gradient for kind "gradients", when it has one)."""
    out = []
    for name, p in model.named_parameters():
        t = p.grad if kind == "gradients" else p.data
        if t is not None:
            out.append((f"{kind}/{name}", t))
    return out


def log_model_stats(run: Run, model: torch.nn.Module, step: int | None = None, log: str = "gradients") -> None:
    """Log histograms and norm/min/max/mean/non-finite count of every parameter (``log``: gradients,
    parameters or all) at ``step`` (default: the run's current step, without advancing it)."""
    if log not in KINDS:
        raise ValueError(f"log must be one of {sorted(KINDS)}, got {log!r}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    at = run.step if step is None else step
    stats = ModelStats(run)
    for kind in KINDS[log]:
        stats.log(named_tensors(model, kind), at)


@dataclass
class WatchHandle:
    """What ``watch`` registered; ``remove()`` stops watching."""

    handles: list[Any]

    def remove(self) -> None:
        """Unregister the hooks."""
        for h in self.handles:
            h.remove()
        self.handles.clear()


def watch(run: Run, model: torch.nn.Module, log: str = "gradients", every: int = 1) -> WatchHandle:
    """Log ``log_model_stats`` every ``every`` iterations, from hooks: gradients once a backward pass has
    accumulated all of them (or, if it left some without, before the next forward pass), parameters before a
    forward pass. The step is the run's current step."""
    if log not in KINDS:
        raise ValueError(f"log must be one of {sorted(KINDS)}, got {log!r}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be an int >= 1, got {every!r}")
    stats = ModelStats(run)
    handles: list[Any] = []
    if "parameters" in KINDS[log]:
        calls = [0]

        def before_forward(module: torch.nn.Module, args: Any) -> None:
            if calls[0] % every == 0:
                stats.log(named_tensors(model, "parameters"), run.step)
            calls[0] += 1

        handles.append(model.register_forward_pre_hook(before_forward))
    if "gradients" in KINDS[log]:
        # Post-accumulate hooks see each gradient once it is in .grad; holding no reference to gradients in
        # flight keeps autograd stealing them into .grad instead of copying (a multi-grad hook would hold them).
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        state = {"ready": 0, "passes": 0}

        def log_gradients() -> None:
            if state["passes"] % every == 0:
                stats.log(named_tensors(model, "gradients"), run.step)
            state["passes"] += 1
            state["ready"] = 0

        def accumulated(p: torch.Tensor) -> None:
            state["ready"] += 1
            if state["ready"] == len(params):
                log_gradients()

        def before_next_forward(module: torch.nn.Module, args: Any) -> None:
            if state["ready"]:  # a backward pass that left some parameters without gradient
                log_gradients()

        handles += [p.register_post_accumulate_grad_hook(accumulated) for _, p in params]
        handles.append(model.register_forward_pre_hook(before_next_forward))
    return WatchHandle(handles)
