"""PyTorch Ignite integration: ``StepwireLogger`` and its handlers, drop-in peers of Ignite's ClearML/W&B loggers.

Names follow Ignite's ClearML handlers, with stepwire's name being ``title/series``:

| handler | name |
| --- | --- |
| OutputHandler | ``tag/key`` (nested keys joined with ``/``) |
| OptimizerParamsHandler | ``{tag/}{param_name}/{group index}`` |
| WeightsScalarHandler | ``{tag/}weights_{reduction}/{module}/{rest of the parameter name}`` |
| GradsScalarHandler | ``{tag/}grads_{reduction}/{module}/{rest}`` |
| WeightsHistHandler | ``{tag/}weights_{module}/{rest}`` |
| GradsHistHandler | ``{tag/}grads_{module}/{rest}`` |

Nothing here reads a tensor back to the host: 0-d tensors in outputs and metrics go to ``Run.log`` as they are
(GPU ones are copied without blocking and logged by a waiter thread), histogram handlers use the fused
reduction of ``stepwire.torch``, and the default ``torch.norm`` reduction uses ``torch._foreach_norm``.
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from ignite.handlers.base_logger import (
    BaseLogger,
    BaseOptimizerParamsHandler,
    BaseOutputHandler,
    BaseWeightsHandler,
    BaseWeightsScalarHandler,
)

import stepwire
import torch
from stepwire.run import Run
from stepwire.torch.watch import ModelStats
from stepwire.values import flatten

__all__ = [
    "GradsHistHandler",
    "GradsScalarHandler",
    "OptimizerParamsHandler",
    "OutputHandler",
    "StepwireLogger",
    "StepwireSaver",
    "WeightsHistHandler",
    "WeightsScalarHandler",
]


class StepwireLogger(BaseLogger):
    """An Ignite logger writing to a stepwire run; takes the arguments of ``stepwire.init``.

    Attribute access falls through to the run (``logger.log(...)``, ``logger.id``), as ClearMLLogger does with
    its ClearML logger. ``close()`` (or leaving ``with logger:``) finishes the run.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.run: Run = stepwire.init(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.run, name)

    def __enter__(self) -> StepwireLogger:
        return self

    def close(self) -> None:
        """Finish the run (flushes everything logged)."""
        self.run.finish()

    def _create_output_handler(self, *args: Any, **kwargs: Any) -> OutputHandler:
        return OutputHandler(*args, **kwargs)

    def _create_opt_params_handler(self, *args: Any, **kwargs: Any) -> OptimizerParamsHandler:
        return OptimizerParamsHandler(*args, **kwargs)


def _check_logger(handler: object, logger: object) -> StepwireLogger:
    if not isinstance(logger, StepwireLogger):
        raise RuntimeError(f"Handler {type(handler).__name__} works only with StepwireLogger")
    return logger


def _flatten(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Ignite's flattening (mappings recurse, sequences and 1-d tensors expand by index, by ``values.flatten``),
    keeping numbers and 0-d tensors (as tensors, never calling ``.item()``) and dropping the rest with Ignite's
    warning."""
    out: dict[str, Any] = {}
    for name, value in flatten(values, f"{prefix}/" if prefix else "", sequences=True, key_check=None).items():
        if isinstance(value, numbers.Number) or (isinstance(value, torch.Tensor) and value.ndim == 0):
            out[name] = value
        else:
            warnings.warn(f"Logger output_handler can not log metrics value type {type(value)}", stacklevel=3)
    return out


class OutputHandler(BaseOutputHandler):
    """Logs metrics, the transformed engine output and state attributes under ``tag``.

    Same arguments as Ignite's ClearML/W&B ``OutputHandler``: ``tag``, ``metric_names`` (a list or "all"),
    ``output_transform``, ``global_step_transform`` (default: the event's counter) and ``state_attributes``.
    """

    def __call__(self, engine: Engine, logger: Any, event_name: str | Events) -> None:
        run = _check_logger(self, logger).run
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
        values = _flatten(collected, self.tag)
        if values:
            run.log(values, step=global_step)


class OptimizerParamsHandler(BaseOptimizerParamsHandler):
    """Logs ``param_name`` (default "lr") of every parameter group as ``{tag/}{param_name}/{group index}``."""

    def __call__(self, engine: Engine, logger: Any, event_name: str | Events) -> None:
        run = _check_logger(self, logger).run
        global_step = engine.state.get_event_attrib_value(event_name)
        prefix = f"{self.tag}/" if self.tag else ""
        run.log({f"{prefix}{self.param_name}/{i}": _param_value(group[self.param_name])
                 for i, group in enumerate(self.optimizer.param_groups)}, step=global_step)


def _param_value(value: Any) -> Any:
    """A one-element tensor (a learning rate on a GPU, say) as a 0-d tensor for ``Run.log``, which copies it
    without synchronising; anything else as float."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.detach().reshape(())
    return float(value)


def _parameters(handler: BaseWeightsHandler, grads: bool, title: str) -> list[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of every whitelisted parameter (its gradient with ``grads``, skipping parameters
    without one), named ``{tag/}{title}/{rest of the parameter name}`` where ``title`` may use ``{module}``."""
    prefix = f"{handler.tag}/" if handler.tag else ""
    out = []
    for name, p in handler.weights:
        t = p.grad if grads else p.data
        if t is not None:
            module, _, rest = name.partition(".")
            out.append((f"{prefix}{title.format(module=module)}/{rest}".rstrip("/"), t.detach()))
    return out


class _ScalarHandler(BaseWeightsScalarHandler):
    grads = False

    def __call__(self, engine: Engine, logger: Any, event_name: str | Events) -> None:
        run = _check_logger(self, logger).run
        kind = "grads" if self.grads else "weights"
        named = _parameters(self, self.grads, f"{kind}_{self.reduction.__name__}/{{module}}")
        if not named:
            return
        tensors = [t for _, t in named]
        results: list[Any] = (list(torch._foreach_norm(tensors))  # one fused launch per device and dtype
                              if self.reduction is torch.norm else [self.reduction(t) for t in tensors])
        run.log({name: r for (name, _), r in zip(named, results, strict=True)},
                step=engine.state.get_event_attrib_value(event_name))


class WeightsScalarHandler(_ScalarHandler):
    """Logs ``reduction(p.data)`` (default ``torch.norm``) of every (whitelisted) parameter."""


class GradsScalarHandler(_ScalarHandler):
    """Logs ``reduction(p.grad)`` (default ``torch.norm``) of every (whitelisted) parameter with a gradient."""

    grads = True


class _HistHandler(BaseWeightsHandler):
    grads = False

    def __call__(self, engine: Engine, logger: Any, event_name: str | Events) -> None:
        run = _check_logger(self, logger).run
        named = _parameters(self, self.grads, ("grads" if self.grads else "weights") + "_{module}")
        if named:
            ModelStats(run).log(named, engine.state.get_event_attrib_value(event_name), scalars=False)


class WeightsHistHandler(_HistHandler):
    """Logs the histogram of every (whitelisted) parameter, all of them in a few fused launches per device."""


class GradsHistHandler(_HistHandler):
    """Logs the histogram of every (whitelisted) parameter's gradient, in a few fused launches per device."""

    grads = True


class StepwireSaver(DiskSaver):
    """A ``DiskSaver`` for ``ignite.handlers.Checkpoint`` that also stores each checkpoint as an artifact of the
    run (``checkpoints/{filename}``, at the last step logged) and removes the artifacts Checkpoint drops.

    ``logger`` is a ``StepwireLogger`` (or pass ``run=``); ``dirname`` defaults to a fresh temporary directory.
    """

    def __init__(self, logger: StepwireLogger | None = None, dirname: str | Path | None = None,
                 *args: Any, run: Run | None = None, **kwargs: Any) -> None:
        if logger is not None and not isinstance(logger, StepwireLogger):
            raise TypeError("logger must be an instance of StepwireLogger")
        target = run if run is not None else (logger.run if logger is not None else None)
        if target is None:
            raise RuntimeError("StepwireSaver needs a StepwireLogger (logger=) or a stepwire Run (run=)")
        self.run = target
        if not dirname:
            import tempfile

            dirname = tempfile.mkdtemp(prefix=f"stepwire-checkpoints-{target.id}-")
        kwargs.setdefault("require_empty", False)
        super().__init__(dirname, *args, **kwargs)

    @staticmethod
    def artifact_name(filename: str) -> str:
        """The artifact name a checkpoint file is stored under."""
        return f"checkpoints/{filename}"

    def __call__(self, checkpoint: Mapping[str, Any], filename: str, metadata: Mapping[str, Any] | None = None
                 ) -> None:
        super().__call__(checkpoint, filename, metadata)
        self.run.log_artifact(os.path.join(self.dirname, filename), self.artifact_name(filename),
                              max(self.run.step - 1, 0))

    def remove(self, filename: str) -> None:
        """Remove the local file and the run's artifact."""
        super().remove(filename)
        self.run.delete_artifact(self.artifact_name(filename))

