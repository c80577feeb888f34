"""ClearML-style ``Task`` and ``Logger`` on stepwire runs.

Scripts written for ClearML's SDK run on stepwire by changing the import::

    from stepwire.compat.clearml import Task

    task = Task.init(project_name="mnist", task_name="baseline")     # address=/dir= go to stepwire.init
    params = task.connect({"lr": 0.1, "epochs": 3})                   # parameters "General/lr", "General/epochs"
    logger = task.get_logger()
    for it in range(100):
        logger.report_scalar("loss", "train", value=1.0 / (it + 1), iteration=it)
    logger.report_single_value("accuracy", 0.97)
    task.close()

    done = Task.get_task(project_name="mnist", task_name="baseline")  # read back (the newest of that name)
    done.get_reported_scalars()   # {"loss": {"train": {"x": [0, 1, ...], "y": [1.0, 0.5, ...]}}}

How ClearML's model maps onto stepwire's:

- A task is a run: ``task.id`` is the run id, ``project_name`` the project (``"default"`` if None),
  ``task_name`` the run name, ``tags`` its tags; the task type goes to the run meta ``task_type``.
- Scalars: ``(title, series)`` is the stepwire scalar ``"title/series"``, ``iteration`` its step (stepwire steps
  are ints >= 0, so a negative iteration raises ``ValueError``).
- Reading back (``get_reported_scalars``, ``get_last_scalar_metrics``, ...) splits a stepwire name at its **last**
  ``"/"``: title = what is before it, series = what follows (``"train/loss/mean"`` -> ``("train/loss", "mean")``,
  which is what ClearML's Ignite output handler makes of 3-part keys); a name without ``"/"`` (or with nothing on
  one side of it) reads as title = series = the name. Where that rule would not give back the pair reported
  through this module (a series containing ``"/"``, an empty title or series) the exact pair is kept in the run
  meta ``clearml_names`` and reading uses it; names logged by other means follow the rule. Two pairs that join to
  the same name (``("a/b", "c")`` and ``("a", "b/c")``) are one stepwire series.
- Single values: ClearML reports them as title ``"Summary"`` at iteration -2**31; here they are the scalar
  ``"Summary/<name>"`` at step 0. Everything under title ``"Summary"`` reads back as single values
  (``get_reported_single_values``: the latest report of each name), is part of ``get_last_scalar_metrics`` and
  is left out of ``get_reported_scalars`` (ClearML shows single values as a table, not as graphs).
- Histograms: ClearML's ``report_histogram`` takes bar heights that are already binned (a row per bar group, a
  column per bar, with legend ``labels`` and bar ``xlabels``): a plot, not data to bin. stepwire's histograms bin
  raw values, so bar heights cannot go there; scalar series per bar would lose the labels and show up among the
  scalars, which ClearML never does. So each call is stored losslessly as a JSON text record named
  ``"plots/<title>/<series>"`` at step = iteration (0 if None)::

      {"kind": "histogram", "title": ..., "series": ..., "iteration": ..., "values": [[...], ...],
       "labels": ..., "xlabels": ..., "xaxis": ..., "yaxis": ..., "mode": "group", "data_args": ...,
       "extra_layout": ...}

  ``values`` is a list of rows (1-D input is one row) with the numbers exactly as given (ints stay ints, NaN and
  infinities included). Read them with ``Task.get_reported_histograms()`` (a stepwire addition) or
  ``stepwire.Api().run(id).texts()``. Each call is one request to the collector, not the native fast path:
  fine for per-epoch plots, not for per-step ones.
- Text: ``report_text`` is the text ``"console"`` at the run's auto step (printed too unless
  ``print_console=False``; the level is not stored); ``get_reported_console_output`` reads it back.
- Parameters are the run config, stored flat as ClearML shows them: ``{"Section/name": "value as a string"}``
  (section ``"General"`` by default; None -> ``""``, lists/tuples/dicts -> JSON, enums -> their member name,
  anything else ``str()``). A task keeps a local copy, so ``get_parameters`` is consistent right away. Reading a
  run whose config was logged by plain stepwire flattens nested dicts with ``"/"`` and puts keys without a
  section under ``"General"``.
- Progress is the run meta ``progress`` (an int 0..100); status: ``get_status`` maps stepwire's
  running/finished/failed to ClearML's in_progress/completed/failed.
- Offline mode (``Task.set_offline(True)`` before ``Task.init``, or ``CLEARML_OFFLINE_MODE=1``): the task logs
  through the embedded default into a fresh session folder ``$STEPWIRE_OFFLINE_DIR/<uuid>`` (else
  ``~/.stepwire/offline/<uuid>``), a complete stepwire data directory (collector started on demand, DuckDB store);
  ``task.get_offline_mode_folder()`` returns it and ``Task.get_task(task_id, dir=folder)`` or
  ``stepwire.Api(dir=folder)`` read it. The folder name is a uuid because the run id exists only once the run does.

Accepted and without effect: ``Task.init``'s ``reuse_last_task_id`` (every ``init`` makes a new task),
``output_uri``, ``auto_connect_arg_parser``, ``auto_connect_frameworks``, ``auto_resource_monitoring``,
``auto_connect_streams`` (nothing is captured automatically) and ``deferred_init``; ``allow_archived`` of
``get_task``/``get_tasks`` (nothing is archived).

Not implemented: ``continue_last_task`` (``ValueError``), ``task_filter`` (``ValueError``), the ``"__$"`` tag
operators (``ValueError``), reporting into a task opened with ``Task.get_task`` (read-only: ``RuntimeError``),
uploading offline sessions (``Task.import_offline_session``), ``connect`` of argparse parsers and models
(``TypeError``; connect ``vars(args)`` instead), tracking a connected dict after ``connect`` (ClearML returns a
proxy that records later writes; here the dict itself is returned and its later changes need another
``connect``), ``cast=`` when reading parameters, artifacts, models, debug samples and other plot kinds.
``mark_completed``/``mark_failed`` end the run but, unlike ClearML, never terminate the process.
"""

from __future__ import annotations

import argparse
import datetime
import enum
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

import stepwire
from stepwire.api import Api, RunView
from stepwire.run import Run

__all__ = ["Logger", "Task", "TaskTypes", "split_name"]

log = logging.getLogger("stepwire.compat.clearml")

SUMMARY_TITLE = "Summary"
"""Title of single values (``Logger.report_single_value``), as in ClearML."""
DEFAULT_SECTION = "General"
"""Parameter section of keys given without one, as in ClearML."""
CONSOLE_TEXT = "console"
"""stepwire text name of ``Logger.report_text``."""
PLOTS_PREFIX = "plots/"
"""Prefix of the stepwire text names holding ``Logger.report_histogram`` records."""
NAMES_META = "clearml_names"
"""Run meta key: ``{stepwire name: [title, series]}`` for pairs that the last-"/" split does not give back."""
OFFLINE_ENV = "CLEARML_OFFLINE_MODE"
"""Environment variable that turns offline mode on (``1``/``true``/``yes``/``on``)."""
OFFLINE_DIR_ENV = "STEPWIRE_OFFLINE_DIR"
"""Environment variable: where offline session folders go (default ``~/.stepwire/offline``)."""

_X_AXES = ("iter", "timestamp", "iso_time")
_HIST_MODES = ("stack", "group", "relative")
_STATUS = {"running": "in_progress", "finished": "completed", "failed": "failed", "crashed": "stopped"}
_PARAM_TYPES = (str, int, float, list, tuple, dict, type(None), enum.Enum)

ScalarGraphs = dict[str, dict[str, dict[str, list[Any]]]]
"""``{title: {series: {"x": [...], "y": [...]}}}``."""


class TaskTypes(enum.Enum):
    """ClearML's task types; a task stores the value (e.g. ``"training"``) as its run meta ``task_type``."""

    training = "training"
    testing = "testing"
    inference = "inference"
    data_processing = "data_processing"
    application = "application"
    monitor = "monitor"
    controller = "controller"
    optimizer = "optimizer"
    service = "service"
    qc = "qc"
    custom = "custom"

    def __str__(self) -> str:
        return str(self.value)


_TaskType = TaskTypes  # for annotations inside Task, where TaskTypes names the class attribute


def split_name(name: str) -> tuple[str, str]:
    """``(title, series)`` of a stepwire scalar name: split at the last ``"/"``; else both are ``name``."""
    title, sep, series = name.rpartition("/")
    return (title, series) if sep and title and series else (name, name)


def _stringify(value: Any) -> str:
    """A parameter value as ClearML stores it."""
    if value is None:
        return ""
    if isinstance(value, (tuple, list, dict)):
        try:
            return json.dumps(value)
        except TypeError:
            pass
    if isinstance(value, enum.Enum):
        return value.name
    return str(value)


def _flatten(data: Mapping[Any, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings flattened with ``"/"`` (an empty nested mapping stays as a value)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        flat_key = prefix + str(key)
        nested = _flatten(value, flat_key + "/") if isinstance(value, Mapping) else None
        if nested:
            out.update(nested)
        else:
            out[flat_key] = {} if nested is not None else value
    return out


def _sectioned(flat: Mapping[str, Any], section: str | None = None) -> dict[str, str]:
    """Keys as ``"Section/name"`` (under ``section``, else ``General`` for keys without one), values as strings."""
    if section is not None:
        prefix = section.strip("/")
        return {f"{prefix}/{key}": _stringify(value) for key, value in flat.items()}
    return {(key if "/" in key else f"{DEFAULT_SECTION}/{key}"): _stringify(value) for key, value in flat.items()}


def _object_params(obj: object) -> dict[str, Any]:
    """Public attributes of a class (with its bases') or of an instance that ClearML would record."""
    items: dict[str, Any] = {}
    owners = reversed(obj.__mro__) if isinstance(obj, type) else [obj]  # a subclass overrides its bases
    for owner in owners:
        for key, value in getattr(owner, "__dict__", {}).items():
            if str(key).startswith("_") or not isinstance(value, _PARAM_TYPES):
                continue
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                continue
            items[str(key)] = value
    return items


def _pairs_from_args(args: Sequence[Mapping[str, Any] | Iterable[tuple[str, Any]]],
                     kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """ClearML's ``set_parameters`` arguments (dicts or iterables of pairs, then keywords) as one dict."""
    merged: dict[str, Any] = {}
    for arg in args:
        if isinstance(arg, Mapping):
            merged.update({str(k): v for k, v in arg.items()})
        elif isinstance(arg, Iterable):
            merged.update({str(k): v for k, v in arg})
        else:
            raise ValueError("only dict or iterable are supported as positional arguments")
    merged.update(kwargs)
    return merged


def _sample(n: int, max_samples: int) -> npt.NDArray[np.int64]:
    """Indices of at most ``max_samples`` of ``n`` points, evenly spread, first and last included (0: all)."""
    if max_samples <= 0 or n <= max_samples:
        return np.arange(n, dtype=np.int64)
    if max_samples == 1:
        return np.array([n - 1], dtype=np.int64)
    return np.round(np.linspace(0, n - 1, max_samples)).astype(np.int64)


def _x_values(steps: npt.NDArray[np.int64], wall: npt.NDArray[np.float64], x_axis: str) -> list[Any]:
    if x_axis == "iter":
        return [int(s) for s in steps]
    if x_axis == "timestamp":
        return [round(float(w) * 1000) for w in wall]
    return [datetime.datetime.fromtimestamp(float(w), tz=datetime.timezone.utc).isoformat() for w in wall]


def _tags_match(run_tags: Sequence[str], wanted: Sequence[str]) -> bool:
    """ClearML's default tag filter: any listed tag present, or any ``"-tag"`` absent (logical OR)."""
    have = set(run_tags)
    for tag in wanted:
        if tag.startswith("__$"):
            raise ValueError(f"tag operator {tag!r} is not supported by stepwire.compat.clearml")
        if (tag[1:] not in have) if tag.startswith("-") else (tag in have):
            return True
    return False


def _title_map(meta: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """The exact ``(title, series)`` pairs a task recorded in its meta."""
    recorded = meta.get(NAMES_META)
    if not isinstance(recorded, Mapping):
        return {}
    return {str(name): (str(pair[0]), str(pair[1])) for name, pair in recorded.items()
            if isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2}


class Logger:
    """ClearML's ``Logger`` for a task from ``Task.init``: reports go to the task's stepwire run."""

    def __init__(self, task: Task, run: Run) -> None:
        self._task = task
        self._run = run

    @classmethod
    def current_logger(cls) -> Logger | None:
        """The logger of ``Task.current_task()``, or None when no task is open."""
        task = Task.current_task()
        return task.get_logger() if task is not None else None

    def report_scalar(self, title: str, series: str, value: float, iteration: int) -> None:
        """Log ``value`` as the stepwire scalar ``"title/series"`` at step ``iteration``."""
        name = self._task._scalar_name(title, series)
        self._run.log_scalar(name, value if type(value) is float else float(value), iteration)

    def report_single_value(self, name: str, value: float) -> None:
        """Log a single value (e.g. final accuracy): the scalar ``"Summary/<name>"`` at step 0."""
        self.report_scalar(SUMMARY_TITLE, name, value, 0)

    def report_histogram(self, title: str, series: str, values: npt.ArrayLike, iteration: int | None = None,
                         labels: Sequence[str] | None = None, xlabels: Sequence[str] | None = None,
                         xaxis: str | None = None, yaxis: str | None = None, mode: str | None = None,
                         data_args: Mapping[str, Any] | None = None,
                         extra_layout: Mapping[str, Any] | None = None) -> None:
        """Store already-binned bar heights ``values`` (a row per bar group) as a JSON text record.

        The record is the text ``"plots/<title>/<series>"`` at step ``iteration`` (0 if None); see the module
        docstring for its fields, and ``Task.get_reported_histograms`` to read it back.
        """
        arr = np.asarray(values)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"histogram values for {title!r}/{series!r} must be numbers, got dtype {arr.dtype}")
        rows = np.atleast_2d(arr.astype(np.int64) if arr.dtype.kind == "b" else arr)
        if rows.ndim != 2:
            raise ValueError(f"histogram values for {title!r}/{series!r} must be 1-D or 2-D, got shape {arr.shape}")
        mode = mode or "group"
        if mode not in _HIST_MODES:
            raise ValueError(f"mode must be one of {_HIST_MODES}, got {mode!r}")
        if xlabels is not None and len(xlabels) != rows.shape[1]:
            raise ValueError(f"xlabels has {len(xlabels)} entries for {rows.shape[1]} bars")
        if labels is not None and len(labels) != rows.shape[0] and not (xlabels is not None and len(labels) == 1):
            raise ValueError(f"labels has {len(labels)} entries for {rows.shape[0]} rows of values")
        step = 0 if iteration is None else iteration
        record = {"kind": "histogram", "title": str(title), "series": str(series), "iteration": step,
                  "values": rows.tolist(), "labels": None if labels is None else [str(x) for x in labels],
                  "xlabels": None if xlabels is None else [str(x) for x in xlabels], "xaxis": xaxis,
                  "yaxis": yaxis, "mode": mode, "data_args": None if data_args is None else dict(data_args),
                  "extra_layout": None if extra_layout is None else dict(extra_layout)}
        self._run.log_text(f"{PLOTS_PREFIX}{title}/{series}", json.dumps(record, default=str), step=step)

    def report_text(self, msg: str, level: int = logging.INFO, print_console: bool = True, *args: Any,
                    **kwargs: Any) -> None:
        """Log ``msg`` as the text ``"console"`` (and print it unless ``print_console`` is False).

        ``level`` is accepted for ClearML's signature and not stored.
        """
        text = str(msg)
        self._run.log_text(CONSOLE_TEXT, text)
        if print_console:
            print(text)

    def flush(self, wait: bool = False) -> bool:
        """Wait until everything reported so far is stored; False on timeout (always waits, whatever ``wait``)."""
        return self._run.flush()

    def __repr__(self) -> str:
        return f"<stepwire.compat.clearml.Logger of task {self._task.id}>"


class Task:
    """A ClearML-style task on a stepwire run: ``Task.init`` starts one, ``Task.get_task`` reads one back.

    Not meant to be constructed directly. Tasks from ``get_task``/``get_tasks`` are read-only.
    """

    TaskTypes: ClassVar[type[TaskTypes]] = TaskTypes
    """ClearML's ``Task.TaskTypes``."""

    _current: ClassVar[Task | None] = None
    _offline: ClassVar[bool | None] = None

    def __init__(self, *, task_id: str, name: str, project: str, tags: Sequence[str], task_type: str,
                 open_api: Callable[[], Api], run: Run | None = None, offline_folder: Path | None = None) -> None:
        self.id: str = task_id
        """The task id: the stepwire run id."""
        self.name: str = name
        """The task name: the stepwire run name."""
        self._project = project
        self._tags = list(tags)
        self._task_type = task_type
        self._open_api = open_api
        self._run = run
        self._offline_folder = offline_folder
        self._closed = False
        self._status = "in_progress"
        self._logger: Logger | None = None
        self._params: dict[str, str] = {}
        self._progress: int | None = None
        self._seen: set[str] = set()
        self._names: dict[str, list[str]] = {}

    # -- creating ---------------------------------------------------------------------------------------
    @classmethod
    def init(cls, project_name: str | None = None, task_name: str | None = None,
             task_type: _TaskType | str | None = TaskTypes.training, tags: Sequence[str] | None = None,
             reuse_last_task_id: bool | str = True, continue_last_task: bool | str | int = False,
             output_uri: str | bool | None = None, auto_connect_arg_parser: bool | Mapping[str, bool] = True,
             auto_connect_frameworks: bool | Mapping[str, Any] = True,
             auto_resource_monitoring: bool | Mapping[str, Any] = True,
             auto_connect_streams: bool | Mapping[str, bool] = True, deferred_init: bool = False,
             **stepwire_kwargs: Any) -> Task:
        """Start a task: a ``stepwire.init(project=project_name or "default", name=task_name, tags=tags, ...)`` run.

        Further keyword arguments (``address=``, ``dir=``, ``policy=``, ...) go to ``stepwire.init``. While a
        task is open, ``init`` returns it (``RuntimeError`` if the project, name or type asked for differ), as
        ClearML does. ``reuse_last_task_id``, ``output_uri``, the ``auto_*`` switches and ``deferred_init`` have
        no effect; ``continue_last_task`` is not supported (``ValueError``). In offline mode the run goes to a
        new session folder (see ``get_offline_mode_folder``).
        """
        type_name = TaskTypes(str(task_type) if task_type is not None else "training").value
        current = cls._current
        if current is not None and not current._closed:
            for what, asked, have in (("project name", project_name, current._project),
                                      ("task name", task_name, current.name),
                                      ("task type", None if task_type is None else type_name,
                                       current._task_type)):
                if asked is not None and asked != have:
                    raise RuntimeError(f"Current task already created and requested {what} {asked!r} does not match "
                                       f"current {what} {have!r}; close the current task with task.close() before "
                                       "calling Task.init(...)")
            return current
        if continue_last_task:
            raise ValueError("continue_last_task is not supported by stepwire.compat.clearml: every Task.init starts "
                             "a new task")
        if "config" in stepwire_kwargs:
            raise TypeError("Task.init takes no config=; record parameters with task.connect(...)")
        folder: Path | None = None
        if cls.is_offline():
            if "address" in stepwire_kwargs or "dir" in stepwire_kwargs:
                raise ValueError("in offline mode a task logs to its own session folder: pass no address= or dir=")
            base = Path(os.environ.get(OFFLINE_DIR_ENV) or Path.home() / ".stepwire" / "offline")
            folder = (base / uuid.uuid4().hex).resolve()
            stepwire_kwargs["dir"] = folder
        tag_list = [tags] if isinstance(tags, str) else list(tags or [])
        run = stepwire.init(project=project_name or "default", name=task_name, tags=tag_list or None,
                            **stepwire_kwargs)
        run.update_meta({"task_type": type_name})

        def open_api() -> Api:
            return Api(dir=run.dir) if run.dir is not None else Api(address=run.address)

        task = cls(task_id=run.id, name=run.name, project=run.project, tags=tag_list, task_type=type_name,
                   open_api=open_api, run=run, offline_folder=folder)
        cls._current = task
        return task

    @classmethod
    def current_task(cls) -> Task | None:
        """The task opened by ``Task.init`` and not closed yet, else None."""
        current = cls._current
        return current if current is not None and not current._closed else None

    @classmethod
    def _read_only(cls, view: RunView, open_api: Callable[[], Api]) -> Task:
        """A read-only task on a stored run."""
        return cls(task_id=view.id, name=view.name, project=view.project, tags=view.tags,
                   task_type=str(view.meta.get("task_type", TaskTypes.training.value)), open_api=open_api)

    # -- offline mode -----------------------------------------------------------------------------------
    @classmethod
    def set_offline(cls, offline_mode: bool = False) -> None:
        """Turn offline mode on or off for the next ``Task.init`` (overrides ``$CLEARML_OFFLINE_MODE``)."""
        current = cls.current_task()
        if current is not None and current._offline_folder is not None and not offline_mode:
            raise RuntimeError("Switching from offline mode to online mode, but the current task has not been "
                               "closed. Use `Task.close` to close it.")
        cls._offline = bool(offline_mode)

    @classmethod
    def is_offline(cls) -> bool:
        """True if ``Task.init`` starts offline tasks (``set_offline``, else ``$CLEARML_OFFLINE_MODE``)."""
        if cls._offline is not None:
            return cls._offline
        return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on", "y")

    def get_offline_mode_folder(self) -> Path | None:
        """The session folder of an offline task (a stepwire data directory), else None."""
        return self._offline_folder

    # -- reading back -----------------------------------------------------------------------------------
    @classmethod
    def get_task(cls, task_id: str | None = None, project_name: str | None = None, task_name: str | None = None,
                 tags: Sequence[str] | None = None, allow_archived: bool = True,
                 task_filter: Mapping[str, Any] | None = None, *, address: str | None = None,
                 dir: str | os.PathLike[str] | None = None) -> Task:
        """A read-only task by id, or by project and/or exact name (the newest one on a clash); ``ValueError`` if none.

        ``address``/``dir`` say where the store is, as for ``stepwire.Api``. ``allow_archived`` has no effect.
        """
        if task_filter:
            raise ValueError("task_filter is not supported by stepwire.compat.clearml")
        if task_id is None and project_name is None and task_name is None:
            raise ValueError("Task.get_task needs task_id, or project_name and/or task_name")

        def open_api() -> Api:
            return Api(dir=dir, address=address)

        api = open_api()
        if task_id is not None:
            try:
                return cls._read_only(api.run(task_id), open_api)
            except KeyError:
                raise ValueError(f"Task ID '{task_id}' could not be found") from None
        views = [v for v in api.runs(project_name) if (task_name is None or v.name == task_name)
                 and (not tags or _tags_match(v.tags, tags))]
        if not views:
            raise ValueError(f"no task found with project_name={project_name!r}, task_name={task_name!r}"
                             + (f", tags={list(tags)!r}" if tags else ""))
        newest = sorted(views, key=lambda v: v.created)[-1]
        return cls._read_only(newest, open_api)

    @classmethod
    def get_tasks(cls, task_ids: Sequence[str] | None = None, project_name: str | Sequence[str] | None = None,
                  task_name: str | None = None, tags: Sequence[str] | None = None, allow_archived: bool = True,
                  task_filter: Mapping[str, Any] | None = None, *, address: str | None = None,
                  dir: str | os.PathLike[str] | None = None) -> list[Task]:
        """Read-only tasks, oldest first: those of ``task_ids``, else those matching every filter given.

        ``project_name``: exact name or list of names; ``task_name``: a regular expression searched in the name (as
        in ClearML; ``"^name$"`` for an exact match); ``tags``: any of them present, or a ``"-tag"`` absent.
        """
        if task_filter:
            raise ValueError("task_filter is not supported by stepwire.compat.clearml")

        def open_api() -> Api:
            return Api(dir=dir, address=address)

        views = open_api().runs()
        if task_ids is not None:
            ids = set(task_ids)
            views = [v for v in views if v.id in ids]
        else:
            if project_name is not None:
                projects = {project_name} if isinstance(project_name, str) else set(project_name)
                views = [v for v in views if v.project in projects]
            if task_name is not None:
                pattern = re.compile(task_name)
                views = [v for v in views if pattern.search(v.name)]
            if tags:
                views = [v for v in views if _tags_match(v.tags, tags)]
        return [cls._read_only(v, open_api) for v in views]

    def _view(self) -> RunView:
        """The run as stored now (everything reported so far flushed first)."""
        if self._run is not None and not self._closed:
            self._run.flush()
        return self._open_api().run(self.id)

    def _titles(self, view: RunView, names: Iterable[str]) -> dict[str, tuple[str, str]]:
        exact = _title_map(view.meta)
        return {name: exact.get(name) or split_name(name) for name in names}

    def get_reported_scalars(self, max_samples: int = 0, x_axis: str = "iter") -> ScalarGraphs:
        """``{title: {series: {"x": [...], "y": [...]}}}`` of every scalar but the single values.

        ``x_axis``: ``"iter"`` (steps), ``"timestamp"`` (wall time, ms since the epoch) or ``"iso_time"`` (ISO 8601,
        UTC). ``max_samples`` > 0 keeps that many points per series, evenly spread (first and last included);
        0 returns every point (ClearML caps at 5000; stepwire has them all). Points of several ranks are all
        returned, by step.
        """
        if x_axis not in _X_AXES:
            raise ValueError("Scalar x-axis supported values are: 'iter', 'timestamp', 'iso_time'")
        if max_samples < 0:
            raise ValueError(f"max_samples must be >= 0, got {max_samples}")
        view = self._view()
        names = [s.name for s in view.series() if s.kind == "scalar"]
        out: ScalarGraphs = {}
        for name, (title, series) in self._titles(view, names).items():
            if title == SUMMARY_TITLE:
                continue
            pts = view.scalars(name)
            idx = _sample(len(pts["step"]), max_samples)
            out.setdefault(title, {})[series] = {"x": _x_values(pts["step"][idx], pts["wall_time"][idx], x_axis),
                                                 "y": pts["value"][idx].tolist()}
        return out

    def get_all_reported_scalars(self, x_axis: str = "iter") -> ScalarGraphs:
        """Every point of every scalar but the single values: ``get_reported_scalars(0, x_axis)``."""
        return self.get_reported_scalars(0, x_axis)

    def get_last_scalar_metrics(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{title: {series: {"last", "min", "max"}}}`` of every scalar (single values included, under "Summary")."""
        view = self._view()
        summary = view.summary()
        out: dict[str, dict[str, dict[str, float]]] = {}
        for name, (title, series) in self._titles(view, summary).items():
            out.setdefault(title, {})[series] = dict(summary[name])
        return out

    def get_reported_single_values(self) -> dict[str, float]:
        """``{name: value}`` of every ``report_single_value`` (its latest report)."""
        view = self._view()
        names = [s.name for s in view.series() if s.kind == "scalar"]
        out: dict[str, float] = {}
        for name, (title, series) in self._titles(view, names).items():
            if title == SUMMARY_TITLE:
                values = view.scalars(name)["value"]
                if len(values):
                    out[series] = float(values[-1])
        return out

    def get_reported_single_value(self, name: str) -> float | None:
        """The single value ``name``, or None if it was not reported."""
        return self.get_reported_single_values().get(name)

    def get_reported_histograms(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """``{title: {series: [record, ...]}}`` of ``report_histogram`` calls, by iteration (a stepwire addition).

        Each record has ``iteration``, ``values`` (a list of rows), ``labels``, ``xlabels``, ``xaxis``,
        ``yaxis``, ``mode``, ``data_args`` and ``extra_layout`` as reported.
        """
        out: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for entry in self._view().texts():
            if not entry.name.startswith(PLOTS_PREFIX):
                continue
            try:
                record = json.loads(entry.text)
            except ValueError:
                continue
            if not isinstance(record, dict) or record.get("kind") != "histogram":
                continue
            title, series = str(record.pop("title")), str(record.pop("series"))
            record.pop("kind")
            out.setdefault(title, {}).setdefault(series, []).append(record)
        return out

    def get_reported_console_output(self, number_of_reports: int = 1) -> list[str]:
        """The last ``number_of_reports`` texts of ``report_text``, oldest first."""
        texts = [t.text for t in self._view().texts(CONSOLE_TEXT)]
        return texts[-number_of_reports:] if number_of_reports > 0 else []

    # -- properties ---------------------------------------------------------------------------------------
    @property
    def task_type(self) -> str:
        """The task type's value, e.g. ``"training"``."""
        return self._task_type

    @property
    def run(self) -> Run | None:
        """The stepwire ``Run`` of a task from ``Task.init`` (None for read-only tasks)."""
        return self._run

    def get_project_name(self) -> str:
        """The project name (the stepwire project)."""
        return self._project

    def get_tags(self) -> list[str]:
        """The task's tags."""
        return list(self._tags)

    def get_status(self) -> str:
        """``"in_progress"``, ``"completed"`` or ``"failed"`` (stepwire's running/finished/failed)."""
        if self._run is not None:
            return self._status
        status = self._view().status
        return _STATUS.get(status, status)

    # -- writing --------------------------------------------------------------------------------------------
    def _writable(self) -> Run:
        if self._run is None:
            raise RuntimeError(f"task {self.id} was opened with Task.get_task and is read-only in "
                               "stepwire.compat.clearml")
        if self._closed:
            raise RuntimeError(f"task {self.id} is closed")
        return self._run

    def _scalar_name(self, title: str, series: str) -> str:
        """The stepwire name of ``(title, series)``, recording the pair when the name does not split back to it."""
        name = f"{title}/{series}"
        if name not in self._seen:
            run = self._writable()
            self._seen.add(name)
            if split_name(name) != (title, series):
                self._names[name] = [str(title), str(series)]
                run.update_meta({NAMES_META: dict(self._names)})
        return name

    def get_logger(self) -> Logger:
        """The task's ``Logger`` (``RuntimeError`` for read-only tasks)."""
        run = self._writable()
        if self._logger is None:
            self._logger = Logger(self, run)
        return self._logger

    def _update_params(self, params: dict[str, str], replace: bool = False) -> None:
        run = self._writable()
        if replace:
            self._params = dict(params)
        else:
            self._params.update(params)
        run.log_params(params, replace=replace)

    def connect(self, mutable: Any, name: str | None = None, ignore_remote_overrides: bool = False) -> Any:
        """Record a dict's items (nested dicts flattened with "/"), or a class's/instance's public attributes.

        They become parameters ``"<name or General>/<key>"`` with string values; returns ``mutable`` itself.
        Later changes to it are not recorded (connect again). Argparse parsers are not supported
        (connect ``vars(args)``).
        """
        self._writable()
        if isinstance(mutable, argparse.ArgumentParser):
            raise TypeError("connect() of an ArgumentParser is not supported; connect vars(parser.parse_args())")
        items = _flatten(mutable) if isinstance(mutable, Mapping) else _object_params(mutable)
        self._update_params(_sectioned(items, name or DEFAULT_SECTION))
        return mutable

    def set_parameters(self, *args: Mapping[str, Any] | Iterable[tuple[str, Any]], **kwargs: Any) -> None:
        """Replace all parameters with ``{"Section/name": value}`` (keys without a section go under General)."""
        self._update_params(_sectioned(_pairs_from_args(args, kwargs)), replace=True)

    def set_parameters_as_dict(self, dictionary: Mapping[str, Any]) -> None:
        """Add or update parameters from a dict (nested dicts flattened with "/"); the others stay."""
        self._update_params(_sectioned(_flatten(dictionary)))

    def set_parameter(self, name: str, value: Any, description: str | None = None,
                      value_type: Any = None) -> None:
        """Add or update one parameter ``"Section/name"`` (``description``/``value_type`` are not stored)."""
        self._update_params(_sectioned({name: value}))

    def get_parameters(self) -> dict[str, str]:
        """All parameters, flat: ``{"Section/name": "value"}``."""
        if self._run is not None:
            return dict(self._params)
        return _sectioned(_flatten(self._view().config))

    def get_parameter(self, name: str, default: Any = None) -> Any:
        """The parameter ``"Section/name"`` as a string, or ``default``."""
        return self.get_parameters().get(name, default)

    def set_progress(self, progress: int) -> None:
        """Set the progress (an int 0..100; anything else is logged as a warning and ignored, as in ClearML)."""
        run = self._writable()
        if not isinstance(progress, int) or isinstance(progress, bool) or not 0 <= progress <= 100:
            log.warning("Can't set progress %r as it is not an int between 0 and 100", progress)
            return
        self._progress = progress
        run.update_meta({"progress": progress})

    def get_progress(self) -> int | None:
        """The progress (0..100), or None if it was never set."""
        if self._run is not None:
            return self._progress
        progress = self._view().meta.get("progress")
        if isinstance(progress, int) and not isinstance(progress, bool):
            return progress
        return int(progress) if isinstance(progress, str) and progress.isdigit() else None

    def flush(self, wait_for_uploads: bool = False) -> bool:
        """Wait until everything reported so far is stored; False on timeout."""
        return self._writable().flush()

    def _end(self, status: str) -> None:
        if self._run is None or self._closed:
            return
        self._closed = True
        self._status = _STATUS[status]
        self._run.finish(status)
        if Task._current is self:
            Task._current = None

    def close(self) -> None:
        """Flush and end the task (status completed). No-op for read-only or closed tasks."""
        self._end("finished")

    def mark_completed(self, ignore_errors: bool = True, status_message: str | None = None,
                       force: bool = False) -> None:
        """End the task as completed (unlike ClearML, the process goes on)."""
        self._end("finished")

    def mark_failed(self, ignore_errors: bool = True, status_reason: str | None = None,
                    status_message: str | None = None, force: bool = False) -> None:
        """End the task as failed, keeping ``status_reason``/``status_message`` in the run meta."""
        if self._run is not None and not self._closed:
            reasons = {"status_reason": status_reason, "status_message": status_message}
            if any(reasons.values()):
                self._run.update_meta({k: v for k, v in reasons.items() if v})
        self._end("failed")

    def __enter__(self) -> Task:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.mark_failed(status_reason=f"{exc_type.__name__}: {exc}")
        else:
            self.close()

    def __repr__(self) -> str:
        mode = "" if self._run is not None else " read-only"
        return f"<stepwire.compat.clearml.Task {self.id} project={self._project!r} name={self.name!r}{mode}>"
