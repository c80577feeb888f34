"""Ignite's ``ignite.handlers.tensorboard_logger`` on stepwire's TensorBoard shim (``stepwire.compat.tensorboard``).

``TensorboardLogger(*args, **kwargs)`` makes ``self.writer = stepwire.compat.tensorboard.SummaryWriter(*args,
**kwargs)`` (``log_dir``, ...; ``run=`` logs into a given stepwire run) and forwards unknown attributes to it.
Its handlers write into the writer's run with TensorBoard's names: ``{tag}/{key}``,
``{tag/}{param_name}/group_{i}``, ``{tag/}weights_{reduction}/{name}`` and ``{tag/}grads_{reduction}/{name}``,
histograms ``{tag/}weights/{name}`` and ``{tag/}grads/{name}``, with the parameter name's dots as ``/``.
"""

from __future__ import annotations

from typing import Any

from ignite.handlers.utils import global_step_from_engine

from stepwire.compat.tensorboard import SummaryWriter
from stepwire.ignite import handlers
from stepwire.ignite.naming import SlashNaming
from stepwire.run import Run

__all__ = [
    "GradsHistHandler",
    "GradsScalarHandler",
    "OptimizerParamsHandler",
    "OutputHandler",
    "TensorboardLogger",
    "WeightsHistHandler",
    "WeightsScalarHandler",
    "global_step_from_engine",
]


class TensorboardLogger(handlers.RunLogger):
    """Ignite's ``TensorboardLogger``: takes ``SummaryWriter``'s arguments; ``close()`` closes the writer
    (finishing the run it started)."""

    naming = SlashNaming()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.writer = SummaryWriter(*args, **kwargs)
        """The ``SummaryWriter``."""

    @property
    def stepwire_run(self) -> Run:
        """The writer's stepwire run."""
        return self.writer.run

    def __getattr__(self, attr: str) -> Any:
        if attr == "writer":  # not set: __init__ failed
            raise AttributeError(attr)
        return getattr(self.writer, attr)

    def close(self) -> None:
        """Close the writer."""
        self.writer.close()

    def _create_output_handler(self, *args: Any, **kwargs: Any) -> OutputHandler:
        return OutputHandler(*args, **kwargs)

    def _create_opt_params_handler(self, *args: Any, **kwargs: Any) -> OptimizerParamsHandler:
        return OptimizerParamsHandler(*args, **kwargs)


class OutputHandler(handlers.OutputHandler):
    """Ignite's TensorBoard ``OutputHandler``: ``{tag}/{key}`` (nested keys joined by ``/``)."""

    logger_class = TensorboardLogger


class OptimizerParamsHandler(handlers.OptimizerParamsHandler):
    """Ignite's TensorBoard ``OptimizerParamsHandler``: ``{tag/}{param_name}/group_{i}``."""

    logger_class = TensorboardLogger


class WeightsScalarHandler(handlers.WeightsScalarHandler):
    """Ignite's TensorBoard ``WeightsScalarHandler``: ``{tag/}weights_{reduction}/{name, . as /}``."""

    logger_class = TensorboardLogger


class WeightsHistHandler(handlers.WeightsHistHandler):
    """Ignite's TensorBoard ``WeightsHistHandler``: the histogram ``{tag/}weights/{name, . as /}``."""

    logger_class = TensorboardLogger


class GradsScalarHandler(handlers.GradsScalarHandler):
    """Ignite's TensorBoard ``GradsScalarHandler``: ``{tag/}grads_{reduction}/{name, . as /}``."""

    logger_class = TensorboardLogger


class GradsHistHandler(handlers.GradsHistHandler):
    """Ignite's TensorBoard ``GradsHistHandler``: the histogram ``{tag/}grads/{name, . as /}``."""

    logger_class = TensorboardLogger
