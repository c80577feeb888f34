"""ClearML's automatic capture of TensorBoard output, for the ClearML shim's ``Task.init``/``Task.close``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stepwire.compat.tensorboard.naming import ClearMLNames
from stepwire.compat.tensorboard.patch import patch, patched_run, unpatch

if TYPE_CHECKING:
    from stepwire.compat.clearml.task import Task

_task: Task | None = None


def should_connect(auto_connect_frameworks: bool | Mapping[str, Any], *keys: str) -> bool:
    """ClearML's reading of ``auto_connect_frameworks``: follow ``keys`` through nested dicts; a bool met on the
    way is the answer, an empty dict is False, a missing key is True."""
    value: Any = auto_connect_frameworks
    for key in keys:
        if not isinstance(value, Mapping):
            return bool(value)
        if not value:
            return False
        value = value.get(key, True)
    return bool(value)


def start(task: Task, auto_connect_frameworks: bool | Mapping[str, Any]) -> None:
    """Store what every torch/tensorboardX SummaryWriter logs in ``task``'s run under ClearML's names, unless
    ``auto_connect_frameworks`` is False or says ``tensorboard: False`` (``{"tensorboard": {"report_hparams":
    False}}`` leaves ``add_hparams``' parameters out)."""
    global _task
    run = task._run
    if run is None or not should_connect(auto_connect_frameworks, "tensorboard"):
        return
    patch(run, names=ClearMLNames(task, should_connect(auto_connect_frameworks, "tensorboard",
                                                                 "report_hparams")))
    _task = task


def stop(task: Task) -> None:
    """Stop capturing for ``task`` (when it closes); a capture started by something else is left alone."""
    global _task
    if _task is task:
        _task = None
        if patched_run() is task._run:
            unpatch()
