"""ClearML's ``Logger``: reports of a task from ``Task.init`` go to the task's stepwire run."""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from stepwire.compat.clearml import media_reports as mr
from stepwire.compat.clearml.media_reports import SeriesInfo
from stepwire.compat.clearml.reports import CONSOLE_TEXT, PLOTS_PREFIX, SUMMARY_TITLE
from stepwire.compat.clearml.unsupported import unsupported
from stepwire.run import Run

if TYPE_CHECKING:
    from stepwire.compat.clearml.task import Task

HIST_MODES = ("stack", "group", "relative")
"""ClearML's bar modes of ``report_histogram``."""


class Logger:
    """ClearML's ``Logger`` for a task from ``Task.init``: reports go to the task's stepwire run."""

    SeriesInfo = SeriesInfo
    """A line of ``report_line_plot`` (name, N x 2 data, labels), as ClearML's ``Logger.SeriesInfo``."""

    def __init__(self, task: Task, run: Run) -> None:
        self._task = task
        self._run = run
        self._upload_destination: str | None = None

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

    def report_vector(self, title: str, series: str, values: npt.ArrayLike, iteration: int | None = None,
                      labels: Sequence[str] | None = None, xlabels: Sequence[str] | None = None,
                      xaxis: str | None = None, yaxis: str | None = None, mode: str | None = None,
                      extra_layout: Mapping[str, Any] | None = None) -> None:
        """As ``report_histogram`` (ClearML's ``report_vector`` is the same call)."""
        self.report_histogram(title, series, values, iteration, labels=labels, xlabels=xlabels, xaxis=xaxis,
                              yaxis=yaxis, mode=mode, extra_layout=extra_layout)

    # -- debug samples, plots and tables: stepwire media records named "title/series" --------------------------
    def _name_step(self, title: str, series: str, iteration: int | None) -> tuple[str, int]:
        return self._task._scalar_name(title, series), (iteration or 0) + self._task._offset

    def _link(self, kind: str, title: str, series: str, step: int, url: str) -> None:
        name, text = mr.link_record(kind, title, series, step, url)
        self._run.log_text(name, text, step=step)

    def report_image(self, title: str, series: str, iteration: int | None = None,
                     local_path: str | os.PathLike[str] | None = None, image: Any = None, matrix: Any = None,
                     max_image_history: int | None = None, delete_after_upload: bool = False,
                     url: str | None = None) -> None:
        """Log a debug image as the stepwire image ``"title/series"`` at step ``iteration`` (0 if None).

        Exactly one of ``local_path`` (PNG/JPEG/GIF/WebP, stored as given), ``image`` (a numpy array or PIL
        image; stepwire's conversion rules), ``matrix`` (deprecated: as ``image``) or ``url`` (a link: the text
        ``"links/title/series"``, never fetched). ``delete_after_upload`` deletes ``local_path`` once captured;
        ``max_image_history`` (stepwire keeps every image) warns once and is counted.
        """
        chosen = mr.one_of("report_image", local_path=local_path, url=url, image=image, matrix=matrix)
        if matrix is not None:
            warnings.warn("'matrix' variable is deprecated; use 'image' instead.", DeprecationWarning, stacklevel=2)
        self._history("Logger.report_image(max_image_history=...)", max_image_history)
        name, step = self._name_step(title, series, iteration)
        if chosen == "url":
            self._link("image", title, series, step, str(url))
            return
        if chosen != "local_path" or local_path is None:
            self._run.log_image(name, image if chosen == "image" else matrix, step=step)
            return
        self._run.log_image(name, os.fspath(local_path), step=step)
        if delete_after_upload:
            os.remove(local_path)

    def report_media(self, title: str, series: str, iteration: int | None = None,
                     local_path: str | os.PathLike[str] | None = None, stream: Any = None,
                     file_extension: str | None = None, max_history: int | None = None,
                     delete_after_upload: bool = False, url: str | None = None) -> None:
        """Log audio, video, an image or HTML as the stepwire media ``"title/series"`` at step ``iteration``.

        Exactly one of ``local_path``, ``stream`` (``BytesIO``/``StringIO``, with ``file_extension``) or ``url``
        (a link: the text ``"links/title/series"``, never fetched). The type is read from the content (HTML from
        an ``html``/``htm`` extension); ``delete_after_upload`` deletes ``local_path`` once captured;
        ``max_history`` warns once and is counted.
        """
        chosen = mr.one_of("report_media", local_path=local_path, url=url, stream=stream)
        if stream is not None and not file_extension:
            raise ValueError("No file extension provided for stream media upload")
        self._history("Logger.report_media(max_history=...)", max_history)
        name, step = self._name_step(title, series, iteration)
        if chosen == "url":
            self._link("media", title, series, step, str(url))
            return
        kind = mr.media_kind(local_path, file_extension)
        if chosen == "stream":
            self._run.log_media(name, mr.stream_bytes(stream), step=step, kind=kind)
            return
        assert local_path is not None
        self._run.log_media(name, os.fspath(local_path), step=step, kind=kind)
        if delete_after_upload:
            os.remove(local_path)

    def _history(self, what: str, history: int | None) -> None:
        if history is not None and history >= 0:
            unsupported(what, "stepwire keeps every sample")

    def report_plotly(self, title: str, series: str, figure: Any, iteration: int | None = None) -> None:
        """Log a Plotly figure (or its dict) as the stepwire plot ``"title/series"`` (its layout title set to
        ``series``, as ClearML does)."""
        name, step = self._name_step(title, series, iteration)
        self._run.log_plot(name, mr.plotly_dict(series, figure), step=step)

    def report_matplotlib_figure(self, title: str, series: str, figure: Any, iteration: int | None = None,
                                 report_image: bool = False, report_interactive: bool = True) -> None:
        """Log a matplotlib figure (or ``matplotlib.pyplot``: its current figure) as the PNG image
        ``"title/series"``, whatever ``report_image``/``report_interactive`` say (stepwire does not convert
        matplotlib to Plotly)."""
        name, step = self._name_step(title, series, iteration)
        self._run.log_plot(name, mr.matplotlib_figure(figure), step=step)

    def report_table(self, title: str, series: str, iteration: int | None = None, table_plot: Any = None,
                     csv: str | os.PathLike[str] | None = None, url: str | None = None,
                     extra_layout: Mapping[str, Any] | None = None) -> None:
        """Log a table as the stepwire table ``"title/series"`` at step ``iteration``.

        Exactly one of ``table_plot`` (a DataFrame, its index the first column unless it is the default one; or a
        list of rows, the first of which is the header), ``csv`` (a CSV file) or ``url`` (a link: the text
        ``"links/title/series"``, never fetched). ``extra_layout`` (display only) warns once and is counted.
        """
        chosen = mr.one_of("report_table", table_plot=table_plot, csv=csv, url=url)
        if extra_layout is not None:
            unsupported("Logger.report_table(extra_layout=...)", "tables are stored without a layout")
        name, step = self._name_step(title, series, iteration)
        if chosen == "url":
            self._link("table", title, series, step, str(url))
        elif chosen == "csv":
            assert csv is not None
            self._run.log_table(name, os.fspath(csv), step=step)
        else:
            data, columns = mr.table_data(table_plot)
            self._run.log_table(name, data, step=step, columns=columns)

    def report_confusion_matrix(self, title: str, series: str, matrix: npt.ArrayLike, iteration: int | None = None,
                                xaxis: str | None = None, yaxis: str | None = None,
                                xlabels: Sequence[Any] | None = None, ylabels: Sequence[Any] | None = None,
                                yaxis_reversed: bool = False, comment: str | None = None,
                                extra_layout: Mapping[str, Any] | None = None) -> None:
        """Log ``matrix`` as the Plotly heatmap ``"title/series"`` (see ``media_reports``)."""
        name, step = self._name_step(title, series, iteration)
        self._run.log_plot(name, mr.confusion_matrix_figure(title, series, matrix, xaxis, yaxis, xlabels, ylabels,
                                                            yaxis_reversed, comment, extra_layout), step=step)

    def report_matrix(self, title: str, series: str, matrix: npt.ArrayLike, iteration: int | None = None,
                      xaxis: str | None = None, yaxis: str | None = None, xlabels: Sequence[Any] | None = None,
                      ylabels: Sequence[Any] | None = None, yaxis_reversed: bool = False,
                      extra_layout: Mapping[str, Any] | None = None) -> None:
        """As ``report_confusion_matrix`` (ClearML's older name)."""
        self.report_confusion_matrix(title, series, matrix, iteration, xaxis=xaxis, yaxis=yaxis, xlabels=xlabels,
                                     ylabels=ylabels, yaxis_reversed=yaxis_reversed, extra_layout=extra_layout)

    def report_scatter2d(self, title: str, series: str, scatter: npt.ArrayLike, iteration: int | None = None,
                         xaxis: str | None = None, yaxis: str | None = None, labels: Sequence[str] | None = None,
                         mode: str = "lines", comment: str | None = None,
                         extra_layout: Mapping[str, Any] | None = None) -> None:
        """Log N x 2 points (x, y) as the Plotly scatter ``"title/series"``."""
        name, step = self._name_step(title, series, iteration)
        self._run.log_plot(name, mr.scatter2d_figure(title, series, scatter, xaxis, yaxis, labels, mode, comment,
                                                     extra_layout), step=step)

    def report_scatter3d(self, title: str, series: str, scatter: Any, iteration: int | None = None,
                         xaxis: str | None = None, yaxis: str | None = None, zaxis: str | None = None,
                         labels: Sequence[str] | None = None, mode: str = "markers", fill: bool = False,
                         comment: str | None = None, extra_layout: Mapping[str, Any] | None = None) -> None:
        """Log N x 3 points (or a list of such arrays) as the Plotly scatter3d ``"title/series"``."""
        name, step = self._name_step(title, series, iteration)
        self._run.log_plot(name, mr.scatter3d_figure(title, series, scatter, xaxis, yaxis, zaxis, labels, mode, fill,
                                                     comment, extra_layout), step=step)

    def report_surface(self, title: str, series: str, matrix: npt.ArrayLike, iteration: int | None = None,
                       xaxis: str | None = None, yaxis: str | None = None, zaxis: str | None = None,
                       xlabels: Sequence[Any] | None = None, ylabels: Sequence[Any] | None = None,
                       camera: Sequence[float] | None = None, comment: str | None = None,
                       extra_layout: Mapping[str, Any] | None = None) -> None:
        """Log ``matrix`` (heights) as the Plotly surface ``"title/series"``."""
        name, step = self._name_step(title, series, iteration)
        self._run.log_plot(name, mr.surface_figure(title, series, matrix, xaxis, yaxis, zaxis, xlabels, ylabels,
                                                   camera, comment, extra_layout), step=step)

    def report_line_plot(self, title: str, series: Sequence[mr.SeriesInfo | Mapping[str, Any]],
                         xaxis: str | None = None, yaxis: str | None = None, mode: str = "lines",
                         iteration: int | None = None, reverse_xaxis: bool = False, comment: str | None = None,
                         extra_layout: Mapping[str, Any] | None = None) -> None:
        """Log lines (``SeriesInfo`` or dicts ``{"name", "data", "labels"}``), a ``scatter`` trace each, as one
        Plotly figure named ``title`` (ClearML reports it with an empty series). The arguments and their order
        are ClearML's: ``xaxis``, ``yaxis`` and ``mode`` come before ``iteration``."""
        lines = [s if isinstance(s, mr.SeriesInfo) else mr.SeriesInfo(**s) for s in series]
        name, step = str(title), (iteration or 0) + self._task._offset
        self._run.log_plot(name, mr.line_plot_figure(title, lines, xaxis, yaxis, mode, reverse_xaxis, comment,
                                                     extra_layout), step=step)

    def set_default_debug_sample_history(self, max_history: int) -> None:
        """Accepted for ClearML's API: stepwire keeps every sample (warned once and counted)."""
        self._history("Logger.set_default_debug_sample_history", max_history)

    def set_default_upload_destination(self, uri: str) -> None:
        """Accepted for ClearML's API: media go to the run's stepwire store (warned once and counted)."""
        self._upload_destination = uri
        unsupported("Logger.set_default_upload_destination", "media go to the run's stepwire store")

    def get_default_upload_destination(self) -> str | None:
        """The destination given to ``set_default_upload_destination`` (unused), else None."""
        return self._upload_destination

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
