"""One ``log`` call's values, routed to what stores them in a stepwire run, at their steps.

Numbers, booleans, 0-d arrays and tensors are scalars; other arrays and tensors histograms (W&B makes them
histograms too); strings texts (``Run.log_text``); W&B media values (``data_types``) their own records, a list
of them as ``name/0``, ``name/1``, ...; anything else (lists of numbers, ``None``, objects) warns once per key and
is not stored. A key whose metric has a ``step_metric`` is stored at that metric's value (in this call, else the
last one logged), the others at the W&B step.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from stepwire.compat.wandb.data_types import WBValue, is_media_list
from stepwire.compat.wandb.unsupported import unsupported
from stepwire.compat.wandb.wandb_metric import Metrics
from stepwire.tensors import is_tensor

if TYPE_CHECKING:
    from stepwire.run import Run


def is_scalar(value: object) -> bool:
    """A number, a bool, or a one-value array or tensor (stored as a scalar point)."""
    if isinstance(value, (numbers.Real, np.bool_)):
        return True
    if isinstance(value, np.ndarray) or is_tensor(value):
        return value.ndim == 0 and (not isinstance(value, np.ndarray) or value.dtype.kind in "biuf")
    return False


class History:
    """Routes the values of each ``log`` call of one run and remembers the last value of each step metric."""

    def __init__(self, run: Run, metrics: Metrics) -> None:
        self.run = run
        self.metrics = metrics
        self.last: dict[str, float] = {}

    def _step_of(self, key: str, flat: Mapping[str, Any], step: int) -> int:
        if not self.metrics.step_metrics:
            return step
        metric = self.metrics.find(key)
        if metric is None or metric.step_metric is None or metric.step_metric == key:
            return step
        x = flat.get(metric.step_metric)
        if x is not None and is_scalar(x):
            value = float(x)
        elif metric.step_metric in self.last and metric.step_sync:
            value = self.last[metric.step_metric]
        else:
            return step
        if not math.isfinite(value):
            unsupported("a step_metric that is NaN or infinite", f"{metric.step_metric}: stored at the W&B step")
            return step
        if value != int(value):
            unsupported("a step_metric that is not a whole number", f"{metric.step_metric}={value!r}: rounded down")
        return int(value)

    @staticmethod
    def _route(key: str, value: Any, at: int, by_step: dict[int, dict[str, Any]], later: list[tuple[str, Any, int]],
               seen: dict[str, Any]) -> None:
        """Put ``value`` where it is stored: a scalar or array in ``by_step[at]``, a text or media in ``later``;
        numbers and texts also in ``seen`` (for the summary)."""
        if is_tensor(value):
            value = value.detach()  # a loss with its graph: the value is what is logged
        if is_scalar(value):
            by_step.setdefault(at, {})[key] = value
            if not is_tensor(value) or value.device.type == "cpu":
                seen[key] = float(value)
        elif isinstance(value, np.ndarray) or is_tensor(value):
            by_step.setdefault(at, {})[key] = value
        elif isinstance(value, str):
            later.append((key, value, at))
            seen[key] = value
        elif isinstance(value, WBValue):
            later.append((key, value, at))
        elif is_media_list(value):
            later.extend((f"{key}/{i}", v, at) for i, v in enumerate(value))
        else:
            unsupported(f"logging a {type(value).__name__} (key {key!r})", "only numbers, arrays, tensors, "
                        "strings and wandb media types are stored")

    def log(self, flat: Mapping[str, Any], step: int, numbers: bool = False) -> dict[str, Any]:
        """Store ``flat`` (checked names -> values) at ``step``; returns what the summary sees (numbers, texts).
        ``numbers``: the caller saw that every value is a Python int or float."""
        by_step: dict[int, dict[str, Any]] = {}
        later: list[tuple[str, Any, int]] = []
        seen: dict[str, Any] = {}
        if numbers and not self.metrics.step_metrics:
            seen = {k: float(v) for k, v in flat.items()}  # the common case: numbers at the W&B step
            by_step[step] = dict(flat)
            self.last.update(seen)
        else:
            for key, value in flat.items():
                self._route(key, value, self._step_of(key, flat, step), by_step, later, seen)
            self.last.update((k, v) for k, v in seen.items() if type(v) is float)  # for step_sync
        for at, values in sorted(by_step.items()):
            self.run.log(values, step=at)
        for key, value, at in later:
            if isinstance(value, str):
                self.run.log_text(key, value, step=at)
            else:
                value._log(self.run, key, at)
        return seen
