"""ClearML's ``Task`` on a stepwire run: ``Task.init`` starts one, ``Task.get_task`` reads one back."""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import stepwire
from stepwire.api import Api, RunView
from stepwire.compat.clearml import args, offline, queries, reports
from stepwire.compat.clearml.artifacts import TaskArtifacts
from stepwire.compat.clearml.configuration import TaskConfiguration
from stepwire.compat.clearml.hyperparameters import TaskHyperparameters
from stepwire.compat.clearml.logger import Logger
from stepwire.compat.clearml.outputs import TaskOutputs
from stepwire.compat.clearml.parameters import (
    Connected,
    flatten,
    sectioned,
)
from stepwire.compat.clearml.reports import NAMES_META, ScalarGraphs, split_name, title_map
from stepwire.compat.clearml.unsupported import unsupported
from stepwire.compat.tensorboard import clearml_capture
from stepwire.run import Run

log = logging.getLogger("stepwire.compat.clearml")

_STATUS = queries.STATUS_NAMES



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


class Task(TaskConfiguration, TaskHyperparameters, TaskOutputs):
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
        self._artifacts = TaskArtifacts(run) if run is not None else None
        self._connected = Connected()
        self._configs: dict[str, dict[str, Any]] = {}
        self._user_props: dict[str, dict[str, Any]] = {}
        self._offset = 0
        self._arg_switches: bool | Mapping[str, bool] = False
        self._labels: dict[str, int] = {}

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
        ClearML does. In offline mode the run goes to a new session folder (see ``get_offline_mode_folder``).

        ``continue_last_task``: True continues the newest task of this project and name (or the id given as
        ``reuse_last_task_id``), a task id string continues that task, an int continues it with that iteration
        offset; continuing appends to the same stepwire run (``stepwire.init(run_id=...)``), every reported
        iteration shifted by the offset (default: the last reported iteration + 1). Without it every ``init``
        makes a new task: stepwire never overwrites one, so ``reuse_last_task_id`` only names the task to
        continue. ``auto_connect_arg_parser`` (default True) captures ``ArgumentParser.parse_args`` into the
        ``Args`` section while the task is open (a dict ``{dest: False}`` leaves arguments out).
        ``auto_resource_monitoring=False`` turns stepwire's system metrics off (``system_metrics=False``) and
        ``auto_connect_streams=False`` (or a dict with stdout and stderr both False) its console capture
        (``console=False``); otherwise stepwire's defaults and ``STEPWIRE_SYSTEM_METRICS``/``STEPWIRE_CONSOLE``
        decide. Unless ``auto_connect_frameworks`` is False or has ``tensorboard: False``, what torch's and
        tensorboardX's SummaryWriters log is stored in the task under ClearML's names until it closes
        (``stepwire.compat.tensorboard.clearml_capture``). ``output_uri`` and ``deferred_init`` have no effect (an
        ``output_uri`` storage warns once).
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
        if "config" in stepwire_kwargs:
            raise TypeError("Task.init takes no config=; record parameters with task.connect(...)")
        if auto_resource_monitoring is False:
            stepwire_kwargs.setdefault("system_metrics", False)
        streams = auto_connect_streams
        if streams is False or (isinstance(streams, Mapping) and not (streams.get("stdout", True)
                                                                      or streams.get("stderr", True))):
            stepwire_kwargs.setdefault("console", False)
        continuing = continue_last_task is True or isinstance(continue_last_task, str) or (
            isinstance(continue_last_task, int) and not isinstance(continue_last_task, bool))
        if isinstance(reuse_last_task_id, str) and not continuing:
            unsupported("Task.init(reuse_last_task_id=<task id>) without continue_last_task",
                        "stepwire never overwrites a task: a new one is created")
        if isinstance(output_uri, str):
            unsupported("Task.init(output_uri=<storage>)", "artifacts and models go to the stepwire store")
        folder: Path | None = None
        if cls.is_offline():
            if "address" in stepwire_kwargs or "dir" in stepwire_kwargs:
                raise ValueError("in offline mode a task logs to its own session folder: pass no address= or dir=")
            if continuing:
                unsupported("Task.init(continue_last_task=...) in offline mode", "a new offline task is created")
                continuing = False
            folder = offline.new_session_folder()
            stepwire_kwargs["dir"] = folder
        tag_list = [tags] if isinstance(tags, str) else list(tags or [])
        previous: RunView | None = None
        if continuing:
            where = Api(dir=stepwire_kwargs.get("dir"), address=stepwire_kwargs.get("address"))
            previous = queries.run_to_continue(where, project_name or "default", task_name, reuse_last_task_id,
                                               continue_last_task)
        if previous is not None:
            run = stepwire.init(project=previous.project, name=previous.name, tags=tag_list or previous.tags or None,
                                run_id=previous.id, **stepwire_kwargs)
            tag_list = tag_list or list(previous.tags)
        else:
            run = stepwire.init(project=project_name or "default", name=task_name, tags=tag_list or None,
                                **stepwire_kwargs)
        run.update_meta({"task_type": type_name})

        def open_api() -> Api:
            return Api(dir=run.dir) if run.dir is not None else Api(address=run.address)

        task = cls(task_id=run.id, name=run.name, project=run.project, tags=tag_list, task_type=type_name,
                   open_api=open_api, run=run, offline_folder=folder)
        if previous is not None:
            task._resume(previous, continue_last_task)
        if auto_connect_arg_parser:
            task._arg_switches = auto_connect_arg_parser
            args.install(task._record_args)
        cls._current = task
        clearml_capture.start(task, auto_connect_frameworks)  # TensorBoard's SummaryWriters report to the task
        return task

    def _resume(self, previous: RunView, continue_last_task: bool | str | int) -> None:
        """Take over what ``previous`` (the run being continued) recorded; set the iteration offset."""
        self._params = sectioned(flatten(previous.config))
        meta = previous.meta
        self._progress = meta.get("progress") if isinstance(meta.get("progress"), int) else None
        self._names = {name: list(pair) for name, pair in title_map(meta).items()}
        self._seen = set(self._names)
        self._resume_configuration(meta)
        if isinstance(continue_last_task, int) and not isinstance(continue_last_task, bool):
            self._offset = continue_last_task
        else:
            last = queries.last_iteration(previous)
            self._offset = 0 if last is None else last + 1

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
        return offline.offline_from_env()

    @classmethod
    def import_offline_session(cls, session_folder_zip: str | os.PathLike[str], previous_task_id: str | None = None,
                               iteration_offset: int | None = 0, *, address: str | None = None,
                               dir: str | os.PathLike[str] | None = None) -> str:
        """Copy an offline session (``get_offline_mode_folder()``, or a zip of it) into the store at ``address``
        or ``dir`` (as for ``stepwire.init``; default the embedded one); returns the task id (the offline task's,
        or ``previous_task_id`` to append to that task). Wall times become the import's; see the module
        docstring."""
        target: dict[str, Any] = {"address": address} if address is not None else {"dir": dir}
        return offline.import_session(session_folder_zip, previous_task_id, iteration_offset or 0, **target)

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
        def open_api() -> Api:
            return Api(dir=dir, address=address)

        view = queries.find_run(open_api(), task_id, project_name, task_name, tags, task_filter)
        return cls._read_only(view, open_api)

    @classmethod
    def get_tasks(cls, task_ids: Sequence[str] | None = None, project_name: str | Sequence[str] | None = None,
                  task_name: str | None = None, tags: Sequence[str] | None = None, allow_archived: bool = True,
                  task_filter: Mapping[str, Any] | None = None, *, address: str | None = None,
                  dir: str | os.PathLike[str] | None = None) -> list[Task]:
        """Read-only tasks, oldest first: those of ``task_ids``, else those matching every filter given.

        ``project_name``: exact name or list of names; ``task_name``: a regular expression searched in the name (as
        in ClearML; ``"^name$"`` for an exact match); ``tags``: any of them present, or a ``"-tag"`` absent.
        """
        def open_api() -> Api:
            return Api(dir=dir, address=address)

        views = queries.find_runs(open_api(), task_ids, project_name, task_name, tags, task_filter)
        return [cls._read_only(v, open_api) for v in views]

    def _view(self) -> RunView:
        """The run as stored now (everything reported so far flushed first)."""
        if self._run is not None and not self._closed:
            self._run.flush()
        return self._open_api().run(self.id)

    def get_reported_scalars(self, max_samples: int = 0, x_axis: str = "iter") -> ScalarGraphs:
        """``{title: {series: {"x": [...], "y": [...]}}}`` of every scalar but the single values.

        ``x_axis``: ``"iter"`` (steps), ``"timestamp"`` (wall time, ms since the epoch) or ``"iso_time"`` (ISO 8601,
        UTC). ``max_samples`` > 0 keeps that many points per series, evenly spread (first and last included);
        0 returns every point (ClearML caps at 5000; stepwire has them all). Points of several ranks are all
        returned, by step.
        """
        return reports.reported_scalars(self._view(), max_samples, x_axis)

    def get_all_reported_scalars(self, x_axis: str = "iter") -> ScalarGraphs:
        """Every point of every scalar but the single values: ``get_reported_scalars(0, x_axis)``."""
        return self.get_reported_scalars(0, x_axis)

    def get_last_scalar_metrics(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{title: {series: {"last", "min", "max"}}}`` of every scalar (single values included, under "Summary")."""
        return reports.last_scalar_metrics(self._view())

    def get_reported_single_values(self) -> dict[str, float]:
        """``{name: value}`` of every ``report_single_value`` (its latest report)."""
        return reports.single_values(self._view())

    def get_reported_single_value(self, name: str) -> float | None:
        """The single value ``name``, or None if it was not reported."""
        return self.get_reported_single_values().get(name)

    def get_reported_histograms(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """``{title: {series: [record, ...]}}`` of ``report_histogram`` calls, by iteration (a stepwire addition).

        Each record has ``iteration``, ``values`` (a list of rows), ``labels``, ``xlabels``, ``xaxis``,
        ``yaxis``, ``mode``, ``data_args`` and ``extra_layout`` as reported.
        """
        return reports.histograms(self._view())

    def get_reported_console_output(self, number_of_reports: int = 1) -> list[str]:
        """The last ``number_of_reports`` texts of ``report_text``, oldest first."""
        return reports.console_output(self._view(), number_of_reports)

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

    @property
    def logger(self) -> Logger:
        """The task's ``Logger`` (as ``get_logger()``)."""
        return self.get_logger()

    # -- iterations ---------------------------------------------------------------------------------------
    def set_initial_iteration(self, offset: int = 0) -> int:
        """Shift every iteration reported from now on by ``offset``; returns it."""
        self._offset = int(offset)
        return self._offset

    def get_initial_iteration(self) -> int:
        """The offset added to reported iterations (non-zero when continuing a task)."""
        return self._offset

    def get_last_iteration(self) -> int:
        """The highest iteration reported (stored) so far, 0 if none."""
        return queries.last_iteration(self._view()) or 0

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
        """Record changes to connected dicts and registered DataFrames, then wait until everything reported so
        far is stored; False on timeout."""
        run = self._writable()
        self._sync_connected()
        return run.flush()

    def _end(self, status: str) -> None:
        if self._run is None or self._closed:
            return
        try:
            self._sync_connected()
        except Exception:  # the run still ends; what could not be recorded is reported, not lost silently
            log.exception("task %s: recording the final values of connected objects and registered artifacts "
                          "failed", self.id)
        finally:
            if self._arg_switches:
                args.uninstall()
            clearml_capture.stop(self)
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
