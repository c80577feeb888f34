"""``itwinai.loggers`` on stepwire: the names and signatures of itwinai 0.4's module, sharing ``stepwire.loggers``.

Change the import and keep the code::

    from stepwire.compat.itwinai.loggers import LoggersCollection, MLFlowLogger

    logger = MLFlowLogger(savedir="mllogs", experiment_name="mnist", log_freq="batch")
    with logger.start_logging(rank=0):
        logger.save_hyperparameters({"lr": 0.1})
        logger.log(0.5, "train_loss", kind="metric", step=0)
        logger.log(fig, "confusion", kind="figure", step=0)

What is here:

- ``Logger``: itwinai's abstract base, to subclass with ``create_logger_context(rank=0, **kwargs)``,
  ``destroy_logger_context()``, ``save_hyperparameters(params)`` and ``log(item, identifier, kind="metric",
  step=None, batch_idx=None, **kwargs)``; it brings ``should_log``, ``start_logging``, ``log_freq``,
  ``log_on_workers``, ``worker_rank``, ``is_initialized``, ``savedir``, ``experiment_id``, ``run_id`` and
  ``serialize``. ``check_initialized``/``check_not_initialized`` are itwinai's decorators (same messages).
- ``StepwireLogger``: the logger that stores into a stepwire run (``stepwire.loggers.StepwireLogger``).
- ``ConsoleLogger``, ``MLFlowLogger``, ``WandBLogger``, ``TensorBoardLogger``, ``Prov4MLLogger``: itwinai's
  loggers under their names and constructor arguments, each a ``StepwireLogger`` that stores every kind into
  its own stepwire run (not only the kinds its upstream backend handles): the experiment/project name is the
  run's project, ``savedir`` (Prov4ML: ``provenance_save_dir``) is stepwire's data directory, used as given (no
  ``mlflow``/``wandb`` sub-folder), and more keywords go to ``stepwire.init`` (``address=``, ``tags=``...).
- ``LoggersCollection``: as itwinai's, one logger per type (``ValueError`` otherwise); a user's subclass may be
  a member. ``EmptyLogger`` and ``get_mlflow_logger`` as in itwinai.

docs/compat/itwinai.md maps each kind and call onto what stepwire stores.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, Literal

from stepwire import loggers as _impl
from stepwire.logger_kinds import warn_once
from stepwire.loggers import (
    BaseLogger,
    LogFreq,
    LogMixin,
    StepwireLogger,
    check_initialized,
    check_not_initialized,
)
from stepwire.run import Run

log = logging.getLogger("stepwire")

BASE_EXP_NAME = "unnamed-experiment"
"""itwinai's default experiment name (``itwinai.constants.BASE_EXP_NAME``)."""

Logger = BaseLogger
"""itwinai's abstract ``Logger``: subclass it (``stepwire.loggers.BaseLogger``)."""


class ConsoleLogger(StepwireLogger):
    """itwinai's ``ConsoleLogger``: stores into stepwire like ``StepwireLogger`` and, as itwinai's, reports each
    metric as ``"ConsoleLogger: {identifier} = {item}"`` (an INFO record on the ``stepwire`` logger)."""

    def __init__(self, savedir: str | os.PathLike[str] = "mllogs", log_freq: LogFreq = "epoch",
                 log_on_workers: int | Sequence[int] = 0, **init_kwargs: Any) -> None:
        super().__init__(savedir=savedir, log_freq=log_freq, log_on_workers=log_on_workers, **init_kwargs)

    @check_initialized
    def log(self, item: Any, identifier: Any, kind: str = "metric", step: int | None = None,
            batch_idx: int | None = None, **kwargs: Any) -> None:
        """``StepwireLogger.log``, and an INFO line for each metric logged."""
        super().log(item, identifier, kind, step, batch_idx, **kwargs)
        if kind == "metric" and self.run is not None and self.should_log(batch_idx):
            log.info("%s: %s = %s", type(self).__name__, identifier, item)


class MLFlowLogger(StepwireLogger):
    """itwinai's ``MLFlowLogger`` on stepwire: ``experiment_name`` is the project, ``run_name`` the run name,
    ``run_description`` the run meta ``description``. ``tracking_uri`` is not used (runs go to stepwire's
    ``savedir`` or ``address=``): giving one warns once."""

    def __init__(self, savedir: str | os.PathLike[str] = "mllogs", experiment_name: str = BASE_EXP_NAME,
                 tracking_uri: str | None = None, run_description: str | None = None,
                 run_name: str | None = None, log_freq: LogFreq = "epoch", log_on_workers: int | Sequence[int] = 0,
                 **init_kwargs: Any) -> None:
        super().__init__(savedir=savedir, log_freq=log_freq, log_on_workers=log_on_workers,
                         experiment_id=experiment_name, run_id=run_name, **init_kwargs)
        if tracking_uri is not None:
            warn_once("MLFlowLogger(tracking_uri=)", "stepwire.compat.itwinai: MLFlowLogger(tracking_uri=...) is "
                      "not supported: runs go to stepwire (savedir, or address=); ignored")
        self.experiment_name = experiment_name
        """The experiment: the stepwire project."""
        self.tracking_uri = tracking_uri
        """As given (not used)."""
        self.run_description = run_description
        """Stored as the run meta ``description``."""
        self.run_name = run_name
        """The run name (None: generated)."""

    def _started(self, run: Run) -> None:
        if self.run_description is not None:
            run.update_meta({"description": self.run_description})


class WandBLogger(StepwireLogger):
    """itwinai's ``WandBLogger`` on stepwire: ``project_name`` is the project; ``offline_mode=True`` is
    stepwire's ``mode="offline"`` (the spool, uploaded later with ``stepwire sync``)."""

    def __init__(self, savedir: str | os.PathLike[str] = "mllogs", project_name: str = BASE_EXP_NAME,
                 log_freq: LogFreq = "epoch", log_on_workers: int | Sequence[int] = 0, offline_mode: bool = False,
                 **init_kwargs: Any) -> None:
        if offline_mode:
            init_kwargs.setdefault("mode", "offline")
        super().__init__(savedir=savedir, log_freq=log_freq, log_on_workers=log_on_workers,
                         experiment_id=project_name, **init_kwargs)
        self.project_name = project_name
        """The stepwire project."""
        self.offline_mode = offline_mode
        """Whether runs are written to the spool only."""


class TensorBoardLogger(StepwireLogger):
    """itwinai's ``TensorBoardLogger`` on stepwire; ``framework`` is checked as itwinai does and kept."""

    def __init__(self, savedir: str | os.PathLike[str] = "mllogs", log_freq: LogFreq = "epoch",
                 framework: Literal["tensorflow", "pytorch"] = "pytorch", log_on_workers: int | Sequence[int] = 0,
                 **init_kwargs: Any) -> None:
        super().__init__(savedir=savedir, log_freq=log_freq, log_on_workers=log_on_workers, **init_kwargs)
        if framework.lower() not in ("tensorflow", "pytorch"):
            raise ValueError("Accepted values for TensorBoardLogger framework are 'tensorflow' and 'pytorch'. "
                             f"Received {framework}")
        self.framework = framework.lower()
        """``"pytorch"`` or ``"tensorflow"`` (stepwire takes either's tensors)."""


class Prov4MLLogger(StepwireLogger):
    """itwinai's ``Prov4MLLogger`` on stepwire: ``experiment_name`` is the project and ``provenance_save_dir``
    stepwire's data directory; no provenance graph is made (``create_graph``/``create_svg`` are kept, unused)."""

    def __init__(self, prov_user_namespace: str = "www.example.org", experiment_name: str = "experiment_name",
                 provenance_save_dir: str | os.PathLike[str] = "mllogs/prov_logs",
                 save_after_n_logs: int | None = 100, create_graph: bool | None = True,
                 create_svg: bool | None = True, log_freq: LogFreq = "epoch",
                 log_on_workers: int | Sequence[int] = 0, **init_kwargs: Any) -> None:
        super().__init__(savedir=provenance_save_dir, log_freq=log_freq, log_on_workers=log_on_workers,
                         experiment_id=experiment_name, **init_kwargs)
        self.prov_user_namespace = prov_user_namespace
        """As given (not used)."""
        self.experiment_name = experiment_name
        """The stepwire project."""
        self.provenance_save_dir = str(provenance_save_dir)
        """stepwire's data directory."""
        self.save_after_n_logs = save_after_n_logs
        """As given (stepwire sends in the background whatever the count)."""
        self.create_graph = create_graph
        """As given (not used)."""
        self.create_svg = create_svg
        """As given (not used)."""


class LoggersCollection(_impl.LoggersCollection):
    """itwinai's ``LoggersCollection``: ``stepwire.loggers.LoggersCollection`` with itwinai's rule of one logger
    per type (``ValueError`` with itwinai's message otherwise)."""

    def __init__(self, loggers: Sequence[BaseLogger]) -> None:
        logger_types = [type(logger) for logger in loggers]
        if len(set(logger_types)) != len(logger_types):
            raise ValueError(f"{type(self).__name__} does not allow for multiple loggers of the same type. "
                             f"Received: {logger_types}")
        super().__init__(loggers)


class EmptyLogger(BaseLogger):
    """itwinai's placeholder logger: every method does nothing (it is never initialized)."""

    def __init__(self, savedir: str | os.PathLike[str] = "mllogs", log_freq: LogFreq = "epoch",
                 log_on_workers: int | Sequence[int] = 0) -> None:
        super().__init__(savedir, log_freq, log_on_workers)

    def create_logger_context(self, rank: int = 0, **kwargs: Any) -> None:
        """Do nothing."""

    def destroy_logger_context(self) -> None:
        """Do nothing."""

    def save_hyperparameters(self, params: dict[str, Any]) -> None:
        """Do nothing."""

    def log(self, item: Any, identifier: Any, kind: str = "metric", step: int | None = None,
            batch_idx: int | None = None, **kwargs: Any) -> None:
        """Do nothing."""


def get_mlflow_logger(logger: BaseLogger | None) -> MLFlowLogger | None:
    """The ``MLFlowLogger`` that ``logger`` is or holds (the first in a ``LoggersCollection``), else None."""
    if isinstance(logger, _impl.LoggersCollection):
        return next((member for member in logger.loggers if isinstance(member, MLFlowLogger)), None)
    return logger if isinstance(logger, MLFlowLogger) else None


__all__ = ["BASE_EXP_NAME", "ConsoleLogger", "EmptyLogger", "LogMixin", "Logger", "LoggersCollection",
           "MLFlowLogger", "Prov4MLLogger", "StepwireLogger", "TensorBoardLogger", "WandBLogger",
           "check_initialized", "check_not_initialized", "get_mlflow_logger"]
