"""Ignite's logger handlers on a stepwire run, once for every upstream logger: what a handler logs is
Ignite's, how it is named comes from the logger's ``Naming`` policy (see ``naming``).

Nothing here reads a tensor back to the host: 0-d tensors in outputs and metrics go to ``Run.log`` as they are
(GPU ones are copied without blocking and logged by a waiter thread), histogram handlers use the fused
reduction of ``stepwire.torch``, and the default ``torch.norm`` reduction uses ``torch._foreach_norm``.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

from ignite.engine import Engine, Events
from ignite.handlers.base_logger import (
    BaseLogger,
    BaseOptimizerParamsHandler,
    BaseOutputHandler,
    BaseWeightsHandler,
    BaseWeightsScalarHandler,
)

import stepwire
import torch
from stepwire.ignite.naming import Naming
from stepwire.run import Run
from stepwire.torch.watch import ModelStats
from stepwire.values import flatten

_KEY_SEP = "\0"  # joins a flattened key path, split again into its parts: no key holds it


class RunLogger(BaseLogger):
    """An Ignite logger whose handlers write to a stepwire run, naming series by its ``naming`` policy."""

    naming: Naming = Naming()
    """How this logger's handlers name what they log."""

    @property
    def stepwire_run(self) -> Run:
        """The stepwire run the handlers write to."""
        raise NotImplementedError  # each logger's

    def store_values(self, values: Mapping[str, Any], step: int) -> None:
        """Store what a handler logs at ``step``: numbers and 0-d tensors as scalars, strings as texts."""
        run = self.stepwire_run
        numeric = {k: v for k, v in values.items() if not isinstance(v, str)}
        if numeric:
            run.log(numeric, step=step)
        for name, text in values.items():
            if isinstance(text, str):
                run.log_text(name, text, step=step)

    def _create_output_handler(self, *args: Any, **kwargs: Any) -> OutputHandler:
        return OutputHandler(*args, **kwargs)

    def _create_opt_params_handler(self, *args: Any, **kwargs: Any) -> OptimizerParamsHandler:
        return OptimizerParamsHandler(*args, **kwargs)


class StepwireLogger(RunLogger):
    """An Ignite logger writing to a stepwire run; takes the arguments of ``stepwire.init``.

    Attribute access falls through to the run (``logger.log(...)``, ``logger.id``), as ClearMLLogger does with
    its ClearML logger. ``close()`` (or leaving ``with logger:``) finishes the run.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.run: Run = stepwire.init(*args, **kwargs)

    @property
    def stepwire_run(self) -> Run:
        """The run (``self.run``)."""
        return self.run

    def __getattr__(self, name: str) -> Any:
        if name == "run":  # not set yet: stepwire.init failed
            raise AttributeError(name)
        return getattr(self.run, name)

    def __enter__(self) -> StepwireLogger:
        return self

    def close(self) -> None:
        """Finish the run (flushes everything logged)."""
        self.run.finish()


class _Handler:
    """What every handler shares: the logger type it takes, and the run and naming it writes with."""

    logger_class: ClassVar[type[RunLogger]] = StepwireLogger
    """The logger this handler works with (``RuntimeError`` for any other)."""

    def _target(self, logger: object) -> RunLogger:
        if not isinstance(logger, self.logger_class):
            raise RuntimeError(f"Handler {type(self).__name__} works only with {self.logger_class.__name__}")
        return logger


def _outputs(values: dict[str, Any], tag: str, naming: Naming) -> dict[str, Any]:
    """Ignite's flattening (mappings recurse, sequences and 1-d tensors expand by index, by ``values.flatten``)
    named by ``naming``: numbers, 0-d tensors (never ``.item()``) and, where the naming logs them, strings;
    anything else is dropped with Ignite's warning."""
    out: dict[str, Any] = {}
    for key, value in flatten(values, sep=_KEY_SEP, sequences=True, key_check=None).items():
        name = naming.output(tag, tuple(str(key).split(_KEY_SEP)))
        if isinstance(value, numbers.Number) or (isinstance(value, torch.Tensor) and value.ndim == 0) or (
                isinstance(value, str) and naming.log_text):
            if name is not None:
                out[name] = value
        else:
            warnings.warn(f"Logger output_handler can not log metrics value type {type(value)}", stacklevel=3)
    return out


class OutputHandler(_Handler, BaseOutputHandler):
    """Logs metrics, the transformed engine output and state attributes under ``tag``.

    Ignite's arguments: ``tag``, ``metric_names`` (a list or "all"), ``output_transform``,
    ``global_step_transform`` (default: the event's counter) and ``state_attributes``.
    """

    def __call__(self, engine: Engine, logger: Any, event_name: str | Events) -> None:
        target = self._target(logger)
        collected: dict[str, Any] = {}
        if self.metric_names is not None:
            if isinstance(self.metric_names, str) and self.metric_names == "all":
                collected.update(engine.state.metrics)
            else:
                for name in self.metric_names:
                    if name not in engine.state.metrics:
                        warnings.warn(f"Provided metric name '{name}' is missing in engine's state metrics: "
                                      f"{list(engine.state.metrics.keys())}", stacklevel=2)
                        continue
                    collected[name] = engine.state.metrics[name]
        if self.output_transform is not None:
            output = self.output_transform(engine.state.output)
            collected.update(output if isinstance(output, dict) else {"output": output})
        if self.state_attributes is not None:
            collected.update({name: getattr(engine.state, name, None) for name in self.state_attributes})
        global_step = self.global_step_transform(engine, event_name)
        if not isinstance(global_step, int):
            raise TypeError(f"global_step must be int, got {type(global_step)}. "
                            "Please check the output of global_step_transform.")
        values = _outputs(collected, self.tag, target.naming)
        step = target.naming.step(global_step)
        if values and step is not None:
            target.store_values(values, step)


class OptimizerParamsHandler(_Handler, BaseOptimizerParamsHandler):
    """Logs ``param_name`` (default "lr") of every parameter group of ``optimizer``."""

    def __call__(self, engine: Engine, logger: Any, event_name: str | Events) -> None:
        target = self._target(logger)
        naming = target.naming
        step = naming.step(engine.state.get_event_attrib_value(event_name))
        if step is not None:
            target.store_values({naming.param(self.tag, self.param_name, i): _param_value(group[self.param_name])
                                 for i, group in enumerate(self.optimizer.param_groups)}, step)


def _param_value(value: Any) -> Any:
    """A one-element tensor (a learning rate on a GPU, say) as a 0-d tensor for ``Run.log``, which copies it
    without synchronising; anything else as float."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.detach().reshape(())
    return float(value)


def _parameters(handler: BaseWeightsHandler, grads: bool) -> list[tuple[str, torch.Tensor]]:
    """``(parameter name, tensor)`` of every whitelisted parameter (its gradient with ``grads``, skipping
    parameters without one)."""
    out = []
    for name, p in handler.weights:
        t = p.grad if grads else p.data
        if t is not None:
            out.append((name, t.detach()))
    return out


class _ParamsHandler(_Handler, BaseWeightsHandler):
    """What the weights and grads handlers share: the parameters they read (their gradients with ``grads``)."""

    grads = False

    def _read(self, engine: Engine, logger: Any, event_name: str | Events
              ) -> tuple[RunLogger, str, list[tuple[str, torch.Tensor]], int | None]:
        """The logger, the kind ("weights" or "grads"), the ``(name, tensor)`` of every whitelisted parameter and
        the step to log them at (None: none)."""
        target = self._target(logger)
        named = _parameters(self, self.grads)
        step = target.naming.step(engine.state.get_event_attrib_value(event_name))
        return target, "grads" if self.grads else "weights", named, step


class _ScalarHandler(_ParamsHandler, BaseWeightsScalarHandler):
    def __call__(self, engine: Engine, logger: Any, event_name: str | Events) -> None:
        target, kind, named, step = self._read(engine, logger, event_name)
        if not named or step is None:
            return
        tensors = [t for _, t in named]
        results: list[Any] = (list(torch._foreach_norm(tensors))  # one fused launch per device and dtype
                              if self.reduction is torch.norm else [self.reduction(t) for t in tensors])
        target.store_values({target.naming.reduced(self.tag, kind, self.reduction.__name__, name): r
                             for (name, _), r in zip(named, results, strict=True)}, step)


class WeightsScalarHandler(_ScalarHandler):
    """Logs ``reduction(p.data)`` (default ``torch.norm``) of every (whitelisted) parameter."""


class GradsScalarHandler(_ScalarHandler):
    """Logs ``reduction(p.grad)`` (default ``torch.norm``) of every (whitelisted) parameter with a gradient."""

    grads = True


class _HistHandler(_ParamsHandler):
    def __call__(self, engine: Engine, logger: Any, event_name: str | Events) -> None:
        target, kind, named, step = self._read(engine, logger, event_name)
        if named and step is not None:
            ModelStats(target.stepwire_run).log([(target.naming.histogram(self.tag, kind, name), t)
                                                 for name, t in named], step, scalars=False)


class WeightsHistHandler(_HistHandler):
    """Logs the histogram of every (whitelisted) parameter, all of them in a few fused launches per device."""


class GradsHistHandler(_HistHandler):
    """Logs the histogram of every (whitelisted) parameter's gradient, in a few fused launches per device."""

    grads = True
