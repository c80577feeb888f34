"""``define_metric``: a metric's x-axis (``step_metric``) and what its summary keeps, matched by exact name or by
a name ending in ``*`` (W&B allows a glob suffix only; an exact definition wins over a glob, a longer glob over a
shorter one)."""

from __future__ import annotations

from collections.abc import Sequence

from stepwire.compat.wandb.unsupported import Error
from stepwire.summary import MODES


class Metric:
    """A defined metric (what ``define_metric`` returns): ``name``, ``step_metric``, ``step_sync``, ``hidden``,
    ``summary`` (a list of modes), ``goal`` (``"min"``/``"max"``), ``overwrite``."""

    def __init__(self, name: str, step_metric: str | None = None, step_sync: bool | None = None,
                 hidden: bool | None = None, summary: Sequence[str] | None = None, goal: str | None = None,
                 overwrite: bool | None = None) -> None:
        self.name = name
        self.step_metric = step_metric
        self.step_sync = step_sync if step_sync is not None else step_metric is not None
        self.hidden = hidden
        self.summary = list(summary) if summary is not None else None
        self.goal = goal
        self.overwrite = overwrite

    def __repr__(self) -> str:
        return f"<Metric {self.name!r} step_metric={self.step_metric!r} summary={self.summary!r}>"


def make_metric(name: str, step_metric: str | Metric | None, step_sync: bool | None, hidden: bool | None,
                summary: str | None, goal: str | None, overwrite: bool | None) -> Metric:
    """Check ``define_metric``'s arguments as W&B does (``Error`` naming the bad one) and build the Metric."""
    if not name:
        raise Error("define_metric() requires non-empty name argument")
    if isinstance(step_metric, Metric):
        step_metric = step_metric.name
    for arg, value, kind in (("name", name, str), ("step_metric", step_metric, str), ("step_sync", step_sync, bool),
                             ("hidden", hidden, bool), ("summary", summary, str), ("goal", goal, str),
                             ("overwrite", overwrite, bool)):
        if value is not None and not isinstance(value, kind):
            raise Error(f"Unhandled define_metric() arg: {arg} type: {type(value).__name__}")
    if "*" in (name[:-1] if name.endswith("*") else name):
        raise Error(f"Unhandled define_metric() arg: name (glob suffixes only): {name}")
    ops: list[str] | None = None
    if summary:
        ops = []
        for op in (s.strip().lower() for s in summary.split(",")):
            op = "last" if op == "copy" else op  # W&B's deprecated "copy" is the last value
            if op not in MODES:
                raise Error(f"Unhandled define_metric() arg: summary op: {op}")
            ops.append(op)
    cleaned = None
    if goal is not None:
        cleaned = goal[:3].lower()
        if cleaned not in ("min", "max"):
            raise Error(f"Unhandled define_metric() arg: goal: {goal}")
    return Metric(name, step_metric, step_sync, hidden, ops, cleaned, overwrite)


class Metrics:
    """The metrics a run defined, looked up by logged key."""

    def __init__(self) -> None:
        self.exact: dict[str, Metric] = {}
        self.globs: dict[str, Metric] = {}
        self.step_metrics = False
        """Whether any metric has a ``step_metric`` (else every key is stored at the W&B step)."""
        self.summaries = False
        """Whether any metric asks for summary aggregates (else every key's summary is its last value)."""
        self._cache: dict[str, Metric | None] = {}

    def add(self, metric: Metric) -> None:
        """Define (or, as W&B does, redefine) ``metric``."""
        if metric.name.endswith("*"):
            self.globs[metric.name[:-1]] = metric
        else:
            self.exact[metric.name] = metric
        self.step_metrics = any(m.step_metric for m in (*self.exact.values(), *self.globs.values()))
        self.summaries = any(m.summary for m in (*self.exact.values(), *self.globs.values()))
        self._cache.clear()

    def find(self, key: str) -> Metric | None:
        """The metric that applies to ``key``: its exact definition, else the longest matching glob."""
        if key in self._cache:
            return self._cache[key]
        found = self.exact.get(key)
        if found is None:
            prefixes = [p for p in self.globs if key.startswith(p)]
            found = self.globs[max(prefixes, key=len)] if prefixes else None
        self._cache[key] = found
        return found

    def summary_modes(self, key: str) -> Sequence[str] | None:
        """What the summary keeps for ``key`` (None: the last value)."""
        if not self.summaries:
            return None
        metric = self.find(key)
        return metric.summary if metric is not None else None

    def goal(self, key: str) -> str | None:
        """``"maximize"`` or ``"minimize"`` for ``summary="best"`` (default: minimize)."""
        metric = self.find(key)
        return "maximize" if metric is not None and metric.goal == "max" else "minimize"
