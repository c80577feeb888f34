"""How ``StepwireLogger.log`` stores each itwinai ``kind`` (the logger itself is in ``stepwire.loggers``).

itwinai's loggers accept every kind and ignore the ones their backend has no place for; so does stepwire. This
module holds one function per kind that carries data, each taking the run, the item, the identifier and the step.
``KINDS`` lists every kind itwinai names, ``STORE`` maps the kinds stepwire stores to their function; the others
(``prov_documents``, and any kind itwinai does not name) are ignored without a word, as itwinai's loggers do.
"""

from __future__ import annotations

import json
import numbers
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stepwire.names import check_artifact_name
from stepwire.run import Run
from stepwire.values import to_float

if TYPE_CHECKING:
    import torch

KINDS: tuple[str, ...] = ("metric", "torch", "artifact", "figure", "image", "param", "text", "dict", "model",
                          "best_model", "dataset", "watch", "flops_pb", "flops_pe", "system", "carbon",
                          "execution_time", "prov_documents")
"""Every ``kind`` itwinai 0.4's loggers know (``itwinai.loggers`` documents them in its module docstring)."""

_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """``warnings.warn(message)`` the first time ``key`` is seen in this process."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, UserWarning, stacklevel=4)


class LogContext:
    """What a kind's function may need beside the run: when the logging context started (``monotonic`` seconds)
    and the models being watched (``id(model)`` -> handle, removed when the context ends)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.started = time.monotonic()
        self.watched: dict[int, Any] = {}

    def close(self) -> None:
        """Remove the watch hooks this context added."""
        for handle in self.watched.values():
            handle.remove()
        self.watched.clear()


Store = Callable[[LogContext, Any, Any, "int | None", Mapping[str, Any]], None]


def artifact_name(identifier: object, fallback: str) -> str:
    """``identifier`` when it is a valid artifact name (letters, digits, ``._-/``, no ``..``), else ``fallback``."""
    try:
        return check_artifact_name(identifier)
    except ValueError:
        return fallback


def _metric(ctx: LogContext, item: Any, identifier: Any, step: int | None, kw: Mapping[str, Any]) -> None:
    ctx.run.log_scalar(identifier, item, step)


def _is_array(item: object) -> bool:
    return hasattr(item, "__array__") or hasattr(item, "__dlpack__") or isinstance(item, (list, tuple))


def _torch(ctx: LogContext, item: Any, identifier: Any, step: int | None, kw: Mapping[str, Any]) -> None:
    """Tensors and arrays as histograms; a DataLoader as a dataset record; any other torch object (a model,
    an optimizer state) saved with ``torch.save`` as the artifact ``identifier``."""
    if _is_array(item) or isinstance(item, numbers.Real):
        ctx.run.log_histogram(identifier, item, step)
    elif hasattr(item, "dataset") and hasattr(item, "batch_size"):
        _dataset(ctx, item, identifier, step, kw)
    else:
        _save_torch(ctx.run, item, identifier, step, "object.pt")


def _save_torch(run: Run, obj: object, identifier: object, step: int | None, fallback: str) -> None:
    import torch

    with tempfile.TemporaryDirectory(prefix="stepwire-") as tmp:
        path = Path(tmp) / fallback
        torch.save(obj, path)
        run.log_artifact(path, name=artifact_name(identifier, fallback), step=step)  # captured at the call


def _param(ctx: LogContext, item: Any, identifier: Any, step: int | None, kw: Mapping[str, Any]) -> None:
    ctx.run.log_params({identifier: item})


def _dict(ctx: LogContext, item: Any, identifier: Any, step: int | None, kw: Mapping[str, Any]) -> None:
    if not isinstance(item, Mapping):
        raise TypeError(f"kind 'dict' needs a dict for {identifier!r}, got {type(item).__name__}")
    ctx.run.log({identifier: item}, step)


def _text(ctx: LogContext, item: Any, identifier: Any, step: int | None, kw: Mapping[str, Any]) -> None:
    ctx.run.log_text(identifier, item, step)


def _artifact(ctx: LogContext, item: Any, identifier: Any, step: int | None, kw: Mapping[str, Any]) -> None:
    if not isinstance(item, (str, os.PathLike)):
        raise TypeError(f"kind 'artifact' needs a file path for {identifier!r}, got {type(item).__name__}")
    ctx.run.log_artifact(item, name=artifact_name(identifier, Path(item).name), step=step)


def _figure(ctx: LogContext, item: Any, identifier: Any, step: int | None, kw: Mapping[str, Any]) -> None:
    ctx.run.log_plot(identifier, item, step)


def _image(ctx: LogContext, item: Any, identifier: Any, step: int | None, kw: Mapping[str, Any]) -> None:
    ctx.run.log_image(identifier, item, step)


def _model(ctx: LogContext, item: Any, identifier: Any, step: int | None, kw: Mapping[str, Any]) -> None:
    """A ``torch.nn.Module``'s state dict (or a state dict as given) saved with ``torch.save``."""
    state = item.state_dict() if hasattr(item, "state_dict") and callable(item.state_dict) else item
    if not isinstance(state, Mapping):
        warn_once(f"model:{type(item).__name__}",
                  f"stepwire.loggers: kind 'model'/'best_model' needs a torch.nn.Module or a state dict, got "
                  f"{type(item).__name__}; not logged")
        return
    _save_torch(ctx.run, state, identifier, step, "model.pt")


def describe_dataset(item: object) -> str:
    """A JSON object describing a dataset: ``type`` (module.qualname), ``len`` (None when it has none) and
    ``repr`` (at most 1000 characters); a DataLoader is described by its dataset, with its ``batch_size``."""
    loader = item if hasattr(item, "dataset") and hasattr(item, "batch_size") else None
    dataset: Any = item.dataset if loader is not None else item  # type: ignore[attr-defined]
    try:
        length: int | None = len(dataset)
    except TypeError:
        length = None
    out: dict[str, Any] = {"type": f"{type(dataset).__module__}.{type(dataset).__qualname__}", "len": length,
                           "repr": repr(dataset)[:1000]}
    if loader is not None:
        out["batch_size"] = loader.batch_size
    return json.dumps(out)


def _dataset(ctx: LogContext, item: Any, identifier: Any, step: int | None, kw: Mapping[str, Any]) -> None:
    ctx.run.log_text(identifier, describe_dataset(item), step)


def _watch(ctx: LogContext, item: Any, identifier: Any, step: int | None, kw: Mapping[str, Any]) -> None:
    """``Run.watch(item, log=kw "log" or "gradients", every=kw "log_freq" or 1)``, once per model."""
    if id(item) not in ctx.watched:
        ctx.watched[id(item)] = ctx.run.watch(item, log=kw.get("log") or "gradients", every=kw.get("log_freq") or 1)


def count_flops(model: torch.nn.Module, inputs: object) -> int:
    """Floating-point operations of one forward pass of ``model`` on ``inputs`` (``torch.utils.flop_counter``),
    in eval mode and without gradients, so that the count leaves the model's state (batch-norm statistics) as it
    was."""
    from torch.utils.flop_counter import FlopCounterMode

    import torch

    training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(inputs)
    finally:
        model.train(training)
    return int(counter.get_total_flops())


def _inputs(batch: object) -> object:
    """The model input of a batch or sample: the first element of an ``(inputs, targets)`` pair."""
    return batch[0] if isinstance(batch, (tuple, list)) and batch else batch


def _flops(ctx: LogContext, item: Any, identifier: Any, step: int | None, kind: str) -> None:
    if isinstance(item, Sequence) and len(item) == 2 and hasattr(item[0], "parameters"):
        model, data = item
        if kind == "flops_pe":  # one sample's forward pass times the samples in the dataset, as yProv4ML counts
            value = float(count_flops(model, _inputs(data[0])) * len(data))
        else:
            value = float(count_flops(model, _inputs(data)))
    else:
        value = to_float(identifier, item)
    ctx.run.log_scalar(identifier, value, step)


def _flops_pb(ctx: LogContext, item: Any, identifier: Any, step: int | None, kw: Mapping[str, Any]) -> None:
    _flops(ctx, item, identifier, step, "flops_pb")


def _flops_pe(ctx: LogContext, item: Any, identifier: Any, step: int | None, kw: Mapping[str, Any]) -> None:
    _flops(ctx, item, identifier, step, "flops_pe")


def _system(ctx: LogContext, item: Any, identifier: Any, step: int | None, kw: Mapping[str, Any]) -> None:
    """A number under ``system/``; ``None`` (Prov4ML's "sample the machine now") is left to the run's own
    sampler (``system_metrics``)."""
    if item is None:
        return
    if not isinstance(identifier, str):
        raise TypeError(f"kind 'system' needs a str identifier for the value {item!r:.80}, got {identifier!r:.80}")
    name = identifier if identifier.startswith("system/") else f"system/{identifier}"
    ctx.run._log_stats({name: to_float(name, item)}, ctx.run.step if step is None else step)


def _carbon(ctx: LogContext, item: Any, identifier: Any, step: int | None, kw: Mapping[str, Any]) -> None:
    """A number (or a dict of numbers) measured elsewhere (e.g. codecarbon): stepwire measures no carbon."""
    name = identifier or "carbon"
    if item is None:
        warn_once("carbon", "stepwire.loggers: kind 'carbon' without a value is not supported (stepwire does not "
                            "measure emissions); pass the figure, e.g. from codecarbon. Ignored")
    elif isinstance(item, Mapping):
        ctx.run.log({name: item}, step)
    else:
        ctx.run.log_scalar(name, item, step)


def _execution_time(ctx: LogContext, item: Any, identifier: Any, step: int | None, kw: Mapping[str, Any]) -> None:
    """Seconds: ``item`` when given, else the time since the logging context started."""
    value = time.monotonic() - ctx.started if item is None else item
    ctx.run.log_scalar(identifier or "execution_time", value, step)


STORE: dict[str, Store] = {
    "metric": _metric, "torch": _torch, "artifact": _artifact, "figure": _figure, "image": _image,
    "param": _param, "text": _text, "dict": _dict, "model": _model, "best_model": _model, "dataset": _dataset,
    "watch": _watch, "flops_pb": _flops_pb, "flops_pe": _flops_pe, "system": _system, "carbon": _carbon,
    "execution_time": _execution_time,
}
"""The kinds stepwire stores, each with its function ``(context, item, identifier, step, kwargs)``."""

__all__ = ["KINDS", "STORE", "LogContext", "artifact_name", "count_flops", "describe_dataset", "warn_once"]
