"""Per-parameter statistics of a model, logged every N iterations: ``Run.watch`` and ``Run.log_model_stats``.

For every parameter (or its gradient) stepwire logs a histogram under ``{kind}/{name}`` and the scalars
``{kind}/{name}/norm``, ``/min``, ``/max``, ``/mean`` and ``/nonfinite``, where kind is ``gradients`` or
``parameters`` (the names W&B's ``watch`` uses). CPU tensors are binned by the native core as they are at the
call (GIL released, one pass for histogram and statistics); tensors on a GPU are reduced there in a few fused
launches per chunk (``reduce_tensors``) and a waiter thread, not the training thread, waits for the results.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from stepwire import _core
from stepwire.tensors import cpu_view
from stepwire.torch.device import log_on_device
from stepwire.torch.reduce import DEFAULT_CHUNK_ELEMENTS
from stepwire.torch.statistics import scalars_of

if TYPE_CHECKING:
    from stepwire.run import Run

log = logging.getLogger("stepwire.torch")

KINDS = {"gradients": ("gradients",), "parameters": ("parameters",), "all": ("gradients", "parameters")}


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
                log_on_device(self.run, items, step, scalars, self.chunk_elements)

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
