"""Per-parameter statistics of a model, logged every N iterations: ``Run.watch`` and ``Run.log_model_stats``.

For every parameter (or its gradient) stepwire logs a histogram under ``{kind}/{name}`` and the scalars
``{kind}/{name}/norm``, ``/min``, ``/max``, ``/mean`` and ``/nonfinite``, where kind is ``gradients`` or
``parameters`` (the names W&B's ``watch`` uses). Tensors on a GPU are reduced there in a few fused launches per
chunk (``reduce_tensors``) and a waiter thread, not the training thread, waits for the results.

CPU tensors: ``log_model_stats`` and the Ignite handlers bin them on the caller's thread (GIL released, all
cores). ``watch`` starts the same way and, once a ``torch.optim`` optimizer has stepped with no in-place change
to the tensors it logged (``clip_grad_norm_``, ``GradScaler.unscale_``), hands them to the run's background
binning thread instead (``stepwire.binning``): the hook keeps a reference to each gradient (``zero_grad()``
replaces it rather than changing it) and to each parameter, and the optimizer's step hooks and the next
forward pass are the fences where the training thread checks their version counters and, before code that may
change them, waits for what is not binned yet. A tensor changed in place before its fence (which the version
counter shows; changes made through ``.data`` it does not) loses that step's histograms, counted in
``run.stats()["binning_changed"]``, and from then on ``watch`` bins on the training thread again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import torch
from stepwire import _core
from stepwire.binning import Job
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
        t = p.grad if kind == "gradients" else p.detach()  # detach(), not .data: it shares the version counter
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


class _Watcher:
    """One ``watch``: logs a model's tensors of one kind or both, on the training thread or in the background.

    What may change a logged tensor, and the fence that waits for its binning first (a barrier):
    parameters: the optimizer step (barrier at its pre-hook); gradients: ``backward`` accumulating into a
    ``.grad`` that is still the logged tensor (barrier before the next forward pass) and ``zero_grad`` zeroing it
    in place (barrier at the optimizer's post-hook, only for loops seen doing that); and one gradient job at a
    time. Gradients replaced by ``zero_grad()`` (``set_to_none``, the default) are binned while the next step runs.
    """

    def __init__(self, run: Run, model: torch.nn.Module, background: bool) -> None:
        self.run = run
        self.model = model
        self.stats = ModelStats(run)
        self.allowed = dict.fromkeys(KINDS["all"], background)
        """Kinds that may go to the background; off for good once their tensors were seen changed in place."""
        self.background = dict.fromkeys(KINDS["all"], False)
        """Kinds binned in the background now: on after an optimizer step showed them unchanged."""
        self.probe: dict[str, list[tuple[torch.Tensor, int]]] = {}
        """The tensors (and versions) last binned on the training thread, per kind: what the next step shows."""
        self.stepped: list[tuple[torch.Tensor, int]] | None = None
        """The gradients' probe once an optimizer step left them unchanged: the next forward pass shows whether
        ``zero_grad`` replaced them or zeroed them in place."""
        self.zeroed_in_place = True
        self.params = {kind: [(f"{kind}/{name}", p) for name, p in model.named_parameters()] for kind in KINDS["all"]}
        """``named_tensors``'s names and parameters, listed once (a hook runs every step)."""
        self.warned_finished = False
        self.series: dict[str, int] = {}
        """Histogram series ids by name, their scalars defined too."""

    def log(self, kind: str) -> None:
        """Log every tensor of ``kind`` at the run's current step (nothing once the run is finished)."""
        run = self.run
        if run._finished:
            if not self.warned_finished:
                self.warned_finished = True
                log.warning("stepwire watch: run %s is finished; its hooks log nothing (call .remove() on the "
                            "handle watch returned)", run.id)
            return
        run._busy_begin()  # hooks run on the training thread: their time counts as logging time
        try:
            named = self._named(kind)
            cpu = [(n, t) for n, t in named if t.is_cpu]
            if len(cpu) < len(named):
                self.stats._log([(n, t) for n, t in named if not t.is_cpu], run.step, True)
            if not cpu:
                return
            if self.background[kind]:
                self._fence(lambda job: job.kind == kind == "gradients")  # one gradient job at a time
                if self._submit(kind, cpu):
                    return
            self.stats._log(cpu, run.step, True)
            if self.allowed[kind]:
                self.probe[kind] = [(t, t._version) for _, t in cpu]
        finally:
            run._busy_end()

    def _named(self, kind: str) -> list[tuple[str, torch.Tensor]]:
        """What ``named_tensors(model, kind)`` returns, from the parameters listed at ``watch``."""
        if kind == "gradients":
            return [(name, p.grad) for name, p in self.params[kind] if p.grad is not None]
        return [(name, p.detach()) for name, p in self.params[kind]]

    def _submit(self, kind: str, items: list[tuple[str, torch.Tensor]]) -> bool:
        run = self.run
        names = [name for name, _ in items]
        for name in names:
            if name not in self.series:  # defined here, on the training thread, so the binning thread only logs
                for scalar in scalars_of(name, _NO_VALUES):
                    run._define(scalar, _core.KIND_SCALAR)
                self.series[name] = run._define(name, _core.KIND_HISTOGRAM)
        tensors = [t for _, t in items]
        job = Job([self.series[name] for name in names], names, run.step, [], [], tensors=tensors,
                  scalars_of=scalars_of, guards=[(t, t._version) for t in tensors], kind=kind,
                  on_changed=lambda: self._changed(kind))
        return run._background().submit(job)

    def _changed(self, kind: str) -> None:
        self.allowed[kind] = self.background[kind] = False
        log.warning("stepwire watch: %s were changed in place before they were binned (clip_grad_norm_, "
                    "GradScaler.unscale_, ...): that step's %s histograms are dropped (counted in "
                    "stats()['binning_changed']) and they are binned on the training thread from now on", kind, kind)

    def _fence(self, barrier: Callable[[Job], bool] | None) -> None:
        binner = self.run._binner
        if binner is not None and any(self.background.values()):
            binner.fence(barrier)

    def _accounted(self, fence: Callable[[], None]) -> None:
        self.run._busy_begin()
        try:
            fence()
        finally:
            self.run._busy_end()

    def poll(self) -> None:
        """A cheap fence while backward runs (between two gradients): approve what the thread has binned, so
        that it queues it now rather than in the hook at the end of backward."""
        binner = self.run._binner
        if binner is not None and binner.approvable:
            self._accounted(lambda: binner.fence(None))

    def before_forward(self) -> None:
        """A forward pass begins (its backward may accumulate into gradients logged before)."""
        self._accounted(self._before_forward)

    def _before_forward(self) -> None:
        live = {id(p.grad) for p in self.model.parameters() if p.grad is not None}
        self._fence(lambda job: job.kind == "gradients" and any(id(t) in live for t, _ in job.guards or ()))
        if self.stepped is not None:
            self.zeroed_in_place = any(id(t) in live or t._version != v for t, v in self.stepped)
            self.background["gradients"] = self.allowed["gradients"]
            self.stepped = None

    def before_step(self) -> None:
        """An optimizer is about to change the parameters: those logged before must be binned by now."""
        self._accounted(self._before_step)

    def _before_step(self) -> None:
        self._fence(lambda job: job.kind == "parameters")
        if (probe := self.probe.pop("parameters", None)) is not None:
            unchanged = all(t._version == v for t, v in probe)
            self.background["parameters"] = self.allowed["parameters"] = self.allowed["parameters"] and unchanged

    def after_step(self) -> None:
        """An optimizer stepped; ``zero_grad`` may come next."""
        self._accounted(self._after_step)

    def _after_step(self) -> None:
        self._fence((lambda job: job.kind == "gradients") if self.zeroed_in_place else None)
        if (probe := self.probe.pop("gradients", None)) is not None:
            if all(t._version == v for t, v in probe):
                self.stepped = probe
            else:
                self.allowed["gradients"] = False
                log.info("stepwire watch: gradients change in place between backward and the optimizer step "
                         "(clip_grad_norm_, GradScaler.unscale_, ...); they are binned on the training thread")


_NO_VALUES = {"count": 0, "nan": 0, "pos_inf": 0, "neg_inf": 0, "sumsq": 0.0, "min": 0.0, "max": 0.0, "sum": 0.0}


def watch(run: Run, model: torch.nn.Module, log: str = "gradients", every: int = 1,
          background: bool = True) -> WatchHandle:
    """Log ``log_model_stats`` every ``every`` iterations, from hooks: gradients once a backward pass has
    accumulated all of them (or, if it left some without, before the next forward pass), parameters before a
    forward pass. The step is the run's current step. ``background=False`` keeps binning CPU tensors on the
    training thread (for loops that change them through ``.data``, which version counters do not show)."""
    if log not in KINDS:
        raise ValueError(f"log must be one of {sorted(KINDS)}, got {log!r}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be an int >= 1, got {every!r}")
    watcher = _Watcher(run, model, background)
    handles: list[Any] = [
        register_optimizer_step_pre_hook(lambda opt, args, kwargs: watcher.before_step()),
        register_optimizer_step_post_hook(lambda opt, args, kwargs: watcher.after_step()),
    ]
    state = {"ready": 0, "passes": 0, "calls": 0}
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def log_gradients() -> None:
        if state["passes"] % every == 0:
            watcher.log("gradients")
        state["passes"] += 1
        state["ready"] = 0

    def before_forward(module: torch.nn.Module, args: Any) -> None:
        watcher.before_forward()
        if "gradients" in KINDS[log] and state["ready"]:  # a backward pass that left some without gradient
            log_gradients()
        if "parameters" in KINDS[log]:
            if state["calls"] % every == 0:
                watcher.log("parameters")
            state["calls"] += 1

    handles.append(model.register_forward_pre_hook(before_forward))
    if "gradients" in KINDS[log]:
        # Post-accumulate hooks see each gradient once it is in .grad; holding no reference to gradients in
        # flight keeps autograd stealing them into .grad instead of copying (a multi-grad hook would hold them).
        def accumulated(p: torch.Tensor) -> None:
            watcher.poll()
            state["ready"] += 1
            if state["ready"] == len(params):
                log_gradients()

        handles += [p.register_post_accumulate_grad_hook(accumulated) for _, p in params]
    return WatchHandle(handles)
