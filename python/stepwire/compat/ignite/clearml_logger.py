"""Ignite's ``ignite.handlers.clearml_logger`` on stepwire's ClearML shim (``stepwire.compat.clearml``).

``ClearMLLogger(**task_init_kwargs)`` takes the current task or starts one with ``Task.init``; its handlers
store ``(title, series)`` as the stepwire name ``title/series`` at the reported iteration plus the task's initial
iteration, as ``Logger.report_scalar`` does (so ``task.get_reported_scalars()`` reads them back as ClearML
titles and series). Histograms are stepwire histograms (exact buckets) of that name. ``ClearMLSaver`` writes each
checkpoint file and stores it as an output model of the task, as ClearML's framework binding does: one model
per checkpoint slot, named ``"{task name}: {checkpoint file name}"``, its weights file
``{basename}_{slot}{ext}``, its comment ``"Checkpoint Metadata: k=v, ..."``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import ignite.distributed as idist
from ignite.handlers.checkpoint import DiskSaver
from ignite.handlers.utils import global_step_from_engine

from stepwire.compat.clearml.artifacts import MODELS_META
from stepwire.compat.clearml.logger import Logger
from stepwire.compat.clearml.model import OutputModel
from stepwire.compat.clearml.task import Task
from stepwire.ignite import handlers
from stepwire.ignite.naming import Naming
from stepwire.run import Run

__all__ = [
    "ClearMLLogger",
    "ClearMLSaver",
    "GradsHistHandler",
    "GradsScalarHandler",
    "OptimizerParamsHandler",
    "OutputHandler",
    "WeightsHistHandler",
    "WeightsScalarHandler",
    "global_step_from_engine",
]

_warned: set[str] = set()


def _unsupported(what: str) -> None:
    """Warn once per process that ``what`` has no effect here."""
    if what not in _warned:
        _warned.add(what)
        warnings.warn(f"stepwire.compat.ignite.clearml_logger: {what} is not supported and is ignored",
                      stacklevel=3)


class ClearMLNaming(Naming):
    """ClearML's names, recorded as ``(title, series)`` pairs with the task and shifted by its initial
    iteration, as ``Logger.report_scalar`` does."""

    def __init__(self, task: Task) -> None:
        self.task = task

    def series(self, title: str, series: str) -> str:
        """``title/series``, the pair kept with the task where the name does not split back into it."""
        return self.task._scalar_name(title, series)

    def output(self, tag: str | None, key: tuple[str, ...]) -> str | None:
        """As Ignite's ClearML handler: without a tag nothing is reported."""
        return None if tag is None else super().output(tag, key)

    def step(self, step: int) -> int:
        """``step`` plus the task's initial iteration."""
        return step + self.task.get_initial_iteration()


class ClearMLLogger(handlers.RunLogger):
    """Ignite's ``ClearMLLogger``: takes ``Task.init``'s keyword arguments (``project_name``, ``task_name``,
    ``task_type``, ...; stepwire's ``address=``/``dir=`` too) and uses the current task if one is open.

    Unknown attributes go to the task's ClearML ``Logger`` (``clearml_logger.report_scalar(...)``), as in Ignite.
    ``close()`` flushes and closes the task.
    """

    _task: Task
    _bypass: bool

    def __init__(self, **kwargs: Any) -> None:
        experiment_kwargs = {k: v for k, v in kwargs.items() if k not in ("project_name", "task_name", "task_type")}
        if self.bypass_mode():
            warnings.warn("ClearMLSaver: running in bypass mode", stacklevel=2)
        current = Task.current_task()
        self._task = current if current is not None else Task.init(
            project_name=kwargs.get("project_name"), task_name=kwargs.get("task_name"),
            task_type=kwargs.get("task_type", Task.TaskTypes.training), **experiment_kwargs)
        self.clearml_logger: Logger = self._task.get_logger()
        """The task's ClearML ``Logger``."""
        self.naming = ClearMLNaming(self._task)

    @classmethod
    def set_bypass_mode(cls, bypass: bool) -> None:
        """Ignite's bypass mode: ``Task.set_offline(bypass)`` for tasks started from now on."""
        cls._bypass = bypass
        Task.set_offline(offline_mode=bypass)

    @classmethod
    def bypass_mode(cls) -> bool:
        """Whether bypass mode is on (default: the ``CI`` environment variable is set), as in Ignite."""
        return bool(getattr(cls, "_bypass", bool(os.environ.get("CI"))))

    @property
    def stepwire_run(self) -> Run:
        """The task's stepwire run."""
        return self._task._writable()

    def __getattr__(self, attr: str) -> Any:
        if attr in ("_task", "clearml_logger", "naming"):  # not set: __init__ failed
            raise AttributeError(attr)
        return getattr(self.clearml_logger, attr)

    def get_task(self) -> Task:
        """The ClearML task."""
        return self._task

    def close(self) -> None:
        """Flush the ClearML logger and close the task."""
        self.clearml_logger.flush()
        if self._task:
            self._task.close()

    def _create_output_handler(self, *args: Any, **kwargs: Any) -> OutputHandler:
        return OutputHandler(*args, **kwargs)

    def _create_opt_params_handler(self, *args: Any, **kwargs: Any) -> OptimizerParamsHandler:
        return OptimizerParamsHandler(*args, **kwargs)


class OutputHandler(handlers.OutputHandler):
    """Ignite's ClearML ``OutputHandler``: title ``tag`` and series ``key`` (title ``tag/key1`` and series
    ``key2/...`` for nested keys)."""

    logger_class = ClearMLLogger


class OptimizerParamsHandler(handlers.OptimizerParamsHandler):
    """Ignite's ClearML ``OptimizerParamsHandler``: title ``{tag/}{param_name}``, series the group index."""

    logger_class = ClearMLLogger


class WeightsScalarHandler(handlers.WeightsScalarHandler):
    """Ignite's ClearML ``WeightsScalarHandler``: title ``{tag/}weights_{reduction}/{module}``, series the
    rest of the parameter name."""

    logger_class = ClearMLLogger


class WeightsHistHandler(handlers.WeightsHistHandler):
    """Ignite's ClearML ``WeightsHistHandler``: title ``{tag/}weights_{module}``, series the rest of the
    parameter name (a stepwire histogram)."""

    logger_class = ClearMLLogger


class GradsScalarHandler(handlers.GradsScalarHandler):
    """Ignite's ClearML ``GradsScalarHandler``: title ``{tag/}grads_{reduction}/{module}``."""

    logger_class = ClearMLLogger


class GradsHistHandler(handlers.GradsHistHandler):
    """Ignite's ClearML ``GradsHistHandler``: title ``{tag/}grads_{module}`` (a stepwire histogram)."""

    logger_class = ClearMLLogger


class ClearMLSaver(DiskSaver):
    """Ignite's ``ClearMLSaver`` for ``Checkpoint``: writes each checkpoint to ``dirname`` (default: a new
    temporary directory, with Ignite's warning) and stores it as an output model of the current task.

    ``logger`` is checked to be a ``ClearMLLogger``; the task is always ``Task.current_task()``, as in Ignite.
    ``output_uri`` (another storage) is not supported: it warns once and models go to the stepwire store.
    """

    def __init__(self, logger: ClearMLLogger | None = None, output_uri: str | None = None,
                 dirname: str | None = None, *args: Any, **kwargs: Any) -> None:
        if logger and not isinstance(logger, ClearMLLogger):
            raise TypeError("logger must be an instance of ClearMLLogger")
        task = Task.current_task()
        if task is None:
            raise RuntimeError("ClearMLSaver requires a ClearML Task to be initialized. Please use the `logger` "
                               "argument or call `clearml.Task.init()`.")
        self._task = task
        if output_uri:
            _unsupported("ClearMLSaver(output_uri=...)")
        if not dirname:
            dirname = ""
            if idist.get_rank() == 0:
                stamp = datetime.now().strftime("%Y_%m_%d_%H_%M_%S_")
                dirname = tempfile.mkdtemp(prefix=f"ignite_checkpoints_{stamp}")
            if idist.get_world_size() > 1:
                dirname = idist.all_gather(dirname)[0]  # type: ignore[index,assignment]
            warnings.warn(f"ClearMLSaver created a temporary checkpoints directory: {dirname}", stacklevel=2)
            idist.barrier()
        kwargs.setdefault("atomic", False)
        self._checkpoint_slots: defaultdict[tuple[str, str], list[str | None]] = defaultdict(list)
        self._models: dict[tuple[tuple[str, str], int], OutputModel] = {}
        super().__init__(dirname, *args, **kwargs)

    def __call__(self, checkpoint: Mapping[str, Any], filename: str, metadata: Mapping[str, Any] | None = None
                 ) -> None:
        """Write the checkpoint file, then store it as the output model of its slot."""
        try:
            basename = str(metadata["basename"])  # type: ignore[index]
        except (TypeError, KeyError):
            warnings.warn("Checkpoint metadata missing or basename cannot be found", stacklevel=2)
            basename = "checkpoint"
        super().__call__(checkpoint, filename, metadata)
        if idist.get_rank() == 0:
            self._store(filename, basename, metadata)

    def _store(self, filename: str, basename: str, metadata: Mapping[str, Any] | None) -> None:
        key = (str(self.dirname), basename)
        slots = self._checkpoint_slots[key]
        try:
            slot = slots.index(None)
            slots[slot] = filename
        except ValueError:
            slots.append(filename)
            slot = len(slots) - 1
        items = ", ".join(f"{k}={v}" for k, v in metadata.items()) if metadata else "none"
        name = f"{self._task.name}: {filename}"
        model = self._models.get((key, slot))
        if model is None:
            model = OutputModel(task=self._task, name=name, framework="PyTorch")
            self._models[key, slot] = model
        elif model.name != name:
            _drop_model(self._task, model.name)  # ClearML renames the slot's model: one model per slot
            model.name = name
        model.comment = f"Checkpoint Metadata: {items}"
        with tempfile.TemporaryDirectory(prefix="stepwire-ignite-") as tmp:
            upload = Path(tmp) / f"{basename}_{slot}{os.path.splitext(filename)[1]}"
            try:
                os.link(os.path.join(self.dirname, filename), upload)
            except OSError:
                shutil.copyfile(os.path.join(self.dirname, filename), upload)
            model.update_weights(weights_filename=str(upload), target_filename=upload.name)

    def get_local_copy(self, filename: str) -> str | None:
        """A local path of checkpoint ``filename``: the task's artifact of that name, else the output model
        holding it; None (reporting "Can not find artifact ...") if neither."""
        if idist.get_rank() != 0:
            return None
        artifact = self._task.artifacts.get(filename)
        if artifact:
            return artifact.get_local_copy()
        models = {m.name: m for m in self._task.models["output"]}
        model = models.get(f"{self._task.name}: {filename}")
        if model is not None:
            return model.get_local_copy()
        self._task.get_logger().report_text(f"Can not find artifact {filename}")
        return None

    def remove(self, filename: str) -> None:
        """Remove the local file and free its slot (the next checkpoint's model takes it over)."""
        if idist.get_rank() != 0:
            return
        super().remove(filename)
        for slots in self._checkpoint_slots.values():
            try:
                slots[slots.index(filename)] = None
            except ValueError:
                pass
            else:
                break


def _drop_model(task: Task, name: str) -> None:
    """Remove output model ``name`` (its weights file and its description) from ``task``."""
    artifacts = task._task_artifacts()
    stored = artifacts._files.pop(("model", name), None)
    run = task._writable()
    if stored is not None:
        run.delete_artifact(stored)
    run.update_meta({MODELS_META: {name: None}})
