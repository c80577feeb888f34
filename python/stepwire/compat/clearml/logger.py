"""ClearML's ``Logger``: reports of a task from ``Task.init`` go to the task's stepwire run."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from stepwire.compat.clearml.reports import CONSOLE_TEXT, PLOTS_PREFIX, SUMMARY_TITLE
from stepwire.run import Run

if TYPE_CHECKING:
    from stepwire.compat.clearml.task import Task

HIST_MODES = ("stack", "group", "relative")
"""ClearML's bar modes of ``report_histogram``."""


class Logger:
    """ClearML's ``Logger`` for a task from ``Task.init``: reports go to the task's stepwire run."""

    def __init__(self, task: Task, run: Run) -> None:
        self._task = task
        self._run = run

    @classmethod
    def current_logger(cls) -> Logger | None:
        """The logger of ``Task.current_task()``, or None when no task is open."""
        from stepwire.compat.clearml.task import Task

        task = Task.current_task()
        return task.get_logger() if task is not None else None

    def report_scalar(self, title: str, series: str, value: float, iteration: int) -> None:
        """Log ``value`` as the stepwire scalar ``"title/series"`` at step ``iteration`` (plus the task's initial
        iteration offset, non-zero when continuing a task)."""
        name = self._task._scalar_name(title, series)
        self._run.log_scalar(name, value if type(value) is float else float(value), iteration + self._task._offset)

    def report_single_value(self, name: str, value: float) -> None:
        """Log a single value (e.g. final accuracy): the scalar ``"Summary/<name>"`` at step 0."""
        stored = self._task._scalar_name(SUMMARY_TITLE, name)
        self._run.log_scalar(stored, value if type(value) is float else float(value), 0)

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
        if mode not in HIST_MODES:
            raise ValueError(f"mode must be one of {HIST_MODES}, got {mode!r}")
        if xlabels is not None and len(xlabels) != rows.shape[1]:
            raise ValueError(f"xlabels has {len(xlabels)} entries for {rows.shape[1]} bars")
        if labels is not None and len(labels) != rows.shape[0] and not (xlabels is not None and len(labels) == 1):
            raise ValueError(f"labels has {len(labels)} entries for {rows.shape[0]} rows of values")
        step = (0 if iteration is None else iteration) + self._task._offset
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
