"""Ignite's ``ignite.handlers.wandb_logger`` on stepwire's W&B shim (``stepwire.compat.wandb``).

``WandBLogger(*args, **kwargs)`` calls ``stepwire.compat.wandb.init(*args, **kwargs)`` and forwards unknown
attributes to that module, as Ignite's does to ``wandb`` (``wandb_logger.watch(model)``, ``wandb_logger.run.dir``,
``wandb_logger.config``). Its handlers write into the W&B run's stepwire run (``wandb.run.stepwire_run``) with
W&B's names (``{tag}/{key}``, ``{tag/}{param_name}/group_{i}``) through ``wandb.log(values, step=global_step)``,
as Ignite's W&B handlers do: the W&B run's step, summary and ``define_metric`` rules apply as to the script's own
``wandb.log`` calls (a step lower than the current one, which W&B drops, is stored where it was logged, as
``stepwire.compat.wandb.log`` does); string values of an output are stored as texts, as Ignite's W&B handler
logs them. 0-d tensors are handed on as they are (never read back on the training thread).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any
from warnings import warn

from ignite.engine import Engine, Events
from ignite.handlers.utils import global_step_from_engine
from torch.optim import Optimizer

from stepwire.ignite import handlers
from stepwire.ignite.naming import SlashNaming
from stepwire.run import Run

__all__ = ["OptimizerParamsHandler", "OutputHandler", "WandBLogger", "global_step_from_engine"]

_SYNC_WARNING = "The sync argument for the WandBLoggers is no longer used, and may be removed in the future"


class WandBNaming(SlashNaming):
    """W&B's names; strings in an output are logged (as texts)."""

    log_text = True


class WandBLogger(handlers.RunLogger):
    """Ignite's ``WandBLogger``: ``stepwire.compat.wandb.init(*args, **kwargs)`` (unless ``init=False``), and a
    wrapper of that module (unknown attributes go to it). ``close()`` is ``wandb.finish()``."""

    naming = WandBNaming()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._wandb: ModuleType = importlib.import_module("stepwire.compat.wandb")
        if kwargs.get("init", True):
            kwargs.pop("init", None)
            self._wandb.init(*args, **kwargs)

    @property
    def stepwire_run(self) -> Run:
        """The stepwire run of the current W&B run (``wandb.run.stepwire_run``)."""
        current = self._wandb.run
        if current is None:
            raise RuntimeError("WandBLogger: no W&B run is active (call wandb.init first)")
        run: Run = current.stepwire_run
        return run

    def store_values(self, values: Mapping[str, Any], step: int) -> None:
        """``wandb.log(values, step=step)``, as Ignite's W&B handlers log."""
        self._wandb.log(dict(values), step=step)

    def __getattr__(self, attr: str) -> Any:
        if attr == "_wandb":  # not set: __init__ failed
            raise AttributeError(attr)
        return getattr(self._wandb, attr)

    def close(self) -> None:
        """Finish the W&B run (``wandb.finish()``)."""
        self._wandb.finish()

    def _create_output_handler(self, *args: Any, **kwargs: Any) -> OutputHandler:
        return OutputHandler(*args, **kwargs)

    def _create_opt_params_handler(self, *args: Any, **kwargs: Any) -> OptimizerParamsHandler:
        return OptimizerParamsHandler(*args, **kwargs)


class OutputHandler(handlers.OutputHandler):
    """Ignite's W&B ``OutputHandler``: ``{tag}/{key}`` (nested keys joined by ``/``) at the global step.
    ``sync`` has no function (Ignite warns that it is no longer used, and so does this)."""

    logger_class = WandBLogger

    def __init__(self, tag: str, metric_names: str | list[str] | None = None,
                 output_transform: Callable[..., Any] | None = None,
                 global_step_transform: Callable[[Engine, str | Events], int] | None = None,
                 sync: bool | None = None, state_attributes: list[str] | None = None) -> None:
        super().__init__(tag, metric_names, output_transform, global_step_transform, state_attributes)
        if sync is not None:
            warn(_SYNC_WARNING, stacklevel=2)


class OptimizerParamsHandler(handlers.OptimizerParamsHandler):
    """Ignite's W&B ``OptimizerParamsHandler``: ``{tag/}{param_name}/group_{i}`` at the event's counter."""

    logger_class = WandBLogger

    def __init__(self, optimizer: Optimizer, param_name: str = "lr", tag: str | None = None,
                 sync: bool | None = None) -> None:
        super().__init__(optimizer, param_name, tag)
        if sync is not None:
            warn(_SYNC_WARNING, stacklevel=2)
