"""ClearML's debug samples, plots and tables on stepwire's media records: the pieces ``Logger`` builds them from.

Plots are built here as Plotly figure dicts (``{"data": [...], "layout": {...}}``) the way ClearML's reporter lays
them out (the title, with a comment under it as ``<br><sup>comment</sup>``; axis titles; ``extra_layout`` merged
into the layout), but only with properties Plotly knows, so ``plotly.graph_objects.Figure(figure)`` accepts them.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

LINKS_PREFIX = "links/"
"""Prefix of the stepwire text names holding the URLs given to ``report_image``/``report_media``/``report_table``
(never fetched)."""
SCATTER_MODES = ("lines", "markers", "lines+markers")
"""ClearML's scatter and line plot modes."""
HTML_EXTENSIONS = ("html", "htm")
"""``file_extension`` values (and path suffixes) that make ``report_media`` content HTML."""


@dataclass
class SeriesInfo:
    """One line of ``Logger.report_line_plot``: its ``name``, ``data`` (N x 2: x, y) and optional per-point
    ``labels`` (as ClearML's ``Logger.SeriesInfo``)."""

    name: str
    data: Any
    labels: Sequence[str] | None = field(default=None)

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data)
        if self.data.ndim != 2 or self.data.shape[1] != 2:
            raise ValueError(f"series {self.name!r}: data must be N x 2 (x, y), got shape {self.data.shape}")
        if self.labels is not None and len(self.labels) != self.data.shape[0]:
            raise ValueError(f"series {self.name!r}: {len(self.labels)} labels for {self.data.shape[0]} points")


def one_of(call: str, **given: Any) -> str:
    """The name of the one argument of ``given`` that is set (not None, not empty); ``ValueError`` otherwise (as
    ClearML's ``UsageError``: exactly one must be given)."""
    chosen = [k for k, v in given.items() if v is not None and not (isinstance(v, (str, bytes)) and not v)]
    if len(chosen) != 1:
        raise ValueError(f"{call}: give exactly one of {', '.join(given)} (got {', '.join(chosen) or 'none'})")
    return chosen[0]


def link_record(kind: str, title: str, series: str, step: int, url: str) -> tuple[str, str]:
    """(text name, JSON text) of a URL reported as ``kind`` (image, media or table): stored, never fetched."""
    record = {"kind": kind, "title": str(title), "series": str(series), "iteration": step, "url": str(url)}
    return f"{LINKS_PREFIX}{title}/{series}", json.dumps(record)


def stream_bytes(stream: Any) -> bytes:
    """The content of a ``BytesIO``/``StringIO`` (or any object with ``read``): the whole buffer (``getvalue``),
    else what ``read`` returns; text as UTF-8."""
    data = stream.getvalue() if hasattr(stream, "getvalue") else stream.read()
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"stream must give bytes or text, got {type(data).__name__}")


def media_kind(local_path: str | os.PathLike[str] | None, file_extension: str | None) -> str | None:
    """``"html"`` for HTML content (by ``file_extension`` or the path's suffix), else None (read from content)."""
    ext = (file_extension or (os.fspath(local_path).rpartition(".")[2] if local_path is not None else "")).lower()
    return "html" if ext.lstrip(".") in HTML_EXTENSIONS else None


def table_data(table: Any) -> tuple[Any, list[str] | None]:
    """(data, columns) for ``Run.log_table`` of ClearML's ``table_plot``: a DataFrame with its index as the first
    column unless it is the default 0..n-1 (ClearML shows the index), or a list of rows whose first row is the
    header."""
    if hasattr(table, "columns") and hasattr(table, "index") and hasattr(table, "reset_index"):
        index = table.index
        default = index.name is None and getattr(index, "nlevels", 1) == 1 and \
            list(index) == list(range(len(index)))
        frame = table if default else table.reset_index()
        frame = frame.rename(columns=lambda c: str(c))
        return frame, None
    if isinstance(table, (list, tuple)):
        if not table:
            raise ValueError("table_plot has no rows (the first row is the header)")
        header = _unique([str(c) if str(c) else f"c{i}" for i, c in enumerate(table[0])])
        return [list(r) for r in table[1:]], header
    raise TypeError(f"table_plot must be a pandas DataFrame or a list of rows, got {type(table).__name__}")


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if k == 0 else f"{n}.{k}")
    return out


# -- Plotly figures ----------------------------------------------------------------------------------------------
def _title(title: str, comment: str | None) -> str:
    return str(title) if not comment else f"{title}<br><sup>{comment}</sup>"


def _merge(base: dict[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, dicts recursively (``extra`` wins)."""
    for key, value in (extra or {}).items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            base[key] = _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _axis(title: str | None) -> dict[str, Any]:
    return {"title": {"text": title}} if title else {}


def _numbers(what: str, values: Any) -> npt.NDArray[Any]:
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{what} must be numbers, got dtype {arr.dtype}") from None
    return arr


def _list(arr: npt.NDArray[Any]) -> list[Any]:
    """Values as JSON-ready Python numbers (NaN and infinities as None: Plotly's gaps)."""
    if arr.dtype.kind == "f":
        return [None if not np.isfinite(v) else float(v) for v in arr.ravel().tolist()] if arr.ndim == 1 else \
            [_list(row) for row in arr]
    return arr.tolist()  # type: ignore[no-any-return]


def _check_mode(mode: str) -> str:
    if mode not in SCATTER_MODES:
        raise ValueError(f"mode must be one of {SCATTER_MODES}, got {mode!r}")
    return mode


def scatter2d_figure(title: str, series: str, scatter: Any, xaxis: str | None, yaxis: str | None,
                     labels: Sequence[str] | None, mode: str, comment: str | None,
                     extra_layout: Mapping[str, Any] | None) -> dict[str, Any]:
    """``report_scatter2d``: one ``scatter`` trace of the N x 2 points (x, y)."""
    return line_plot_figure(title, [SeriesInfo(series, _numbers("scatter", scatter), labels)], xaxis, yaxis, mode,
                            False, comment, extra_layout)


def line_plot_figure(title: str, series: Sequence[SeriesInfo | Mapping[str, Any]], xaxis: str | None,
                     yaxis: str | None, mode: str, reverse_xaxis: bool, comment: str | None,
                     extra_layout: Mapping[str, Any] | None) -> dict[str, Any]:
    """``report_line_plot``: a ``scatter`` trace per series (``SeriesInfo`` or its dict)."""
    _check_mode(mode)
    lines = [s if isinstance(s, SeriesInfo) else SeriesInfo(**s) for s in series]
    data = []
    for s in lines:
        trace: dict[str, Any] = {"type": "scatter", "name": str(s.name), "mode": mode,
                                 "x": _list(_numbers(f"series {s.name!r}", s.data[:, 0])),
                                 "y": _list(_numbers(f"series {s.name!r}", s.data[:, 1]))}
        if s.labels is not None:
            trace["text"] = [str(t) for t in s.labels]
        data.append(trace)
    layout: dict[str, Any] = {"title": {"text": _title(title, comment)}, "xaxis": _axis(xaxis), "yaxis": _axis(yaxis)}
    if reverse_xaxis:
        layout["xaxis"]["autorange"] = "reversed"
    return {"data": data, "layout": _merge(layout, extra_layout)}


def scatter3d_figure(title: str, series: str, scatter: Any, xaxis: str | None, yaxis: str | None,
                     zaxis: str | None, labels: Sequence[str] | None, mode: str, fill: bool, comment: str | None,
                     extra_layout: Mapping[str, Any] | None) -> dict[str, Any]:
    """``report_scatter3d``: a ``scatter3d`` trace of the N x 3 points, or one per N x 3 array of a list of them
    (named ``labels[i]`` when there is a label per array, else ``"<series> <i>"``); ``fill`` fills the area under
    the points (``surfaceaxis`` 2)."""
    _check_mode(mode)
    multi = isinstance(scatter, (list, tuple)) and bool(scatter) and np.asarray(scatter[0]).ndim == 2
    parts = [_numbers("scatter", s) for s in scatter] if multi else [_numbers("scatter", scatter)]
    data = []
    for i, pts in enumerate(parts):
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"scatter must be N x 3 (x, y, z), got shape {pts.shape}")
        name = series if not multi else (str(labels[i]) if labels is not None and len(labels) == len(parts)
                                         else f"{series} {i}")
        trace: dict[str, Any] = {"type": "scatter3d", "name": str(name), "mode": mode, "x": _list(pts[:, 0]),
                                 "y": _list(pts[:, 1]), "z": _list(pts[:, 2])}
        if not multi and labels is not None:
            if len(labels) != len(pts):
                raise ValueError(f"{len(labels)} labels for {len(pts)} points")
            trace["text"] = [str(t) for t in labels]
        if fill:
            trace["surfaceaxis"] = 2
        data.append(trace)
    layout = {"title": {"text": _title(title, comment)},
              "scene": {"xaxis": _axis(xaxis), "yaxis": _axis(yaxis), "zaxis": _axis(zaxis)}}
    return {"data": data, "layout": _merge(layout, extra_layout)}


def _matrix(what: str, matrix: Any) -> npt.NDArray[Any]:
    arr = _numbers(what, matrix)
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"{what} must be a non-empty 2-D matrix, got shape {arr.shape}")
    return arr


def _labels(what: str, labels: Sequence[Any] | None, n: int) -> list[str] | None:
    if labels is None:
        return None
    if len(labels) != n:
        raise ValueError(f"{what} has {len(labels)} entries for {n}")
    return [str(x) for x in labels]


def confusion_matrix_figure(title: str, series: str, matrix: Any, xaxis: str | None, yaxis: str | None,
                            xlabels: Sequence[Any] | None, ylabels: Sequence[Any] | None, yaxis_reversed: bool,
                            comment: str | None, extra_layout: Mapping[str, Any] | None) -> dict[str, Any]:
    """``report_confusion_matrix``: a ``heatmap`` trace, row i of ``matrix`` at y = i (``ylabels[i]``), column j
    at x = j (``xlabels[j]``); (0, 0) at the bottom left unless ``yaxis_reversed``; cells show their values."""
    arr = _matrix("matrix", matrix)
    trace: dict[str, Any] = {"type": "heatmap", "name": str(series), "z": _list(arr), "texttemplate": "%{z}"}
    x, y = _labels("xlabels", xlabels, arr.shape[1]), _labels("ylabels", ylabels, arr.shape[0])
    if x is not None:
        trace["x"] = x
    if y is not None:
        trace["y"] = y
    layout: dict[str, Any] = {"title": {"text": _title(title, comment)}, "xaxis": _axis(xaxis),
                              "yaxis": _axis(yaxis)}
    if yaxis_reversed:
        layout["yaxis"]["autorange"] = "reversed"
    return {"data": [trace], "layout": _merge(layout, extra_layout)}


def surface_figure(title: str, series: str, matrix: Any, xaxis: str | None, yaxis: str | None, zaxis: str | None,
                   xlabels: Sequence[Any] | None, ylabels: Sequence[Any] | None, camera: Sequence[float] | None,
                   comment: str | None, extra_layout: Mapping[str, Any] | None) -> dict[str, Any]:
    """``report_surface``: a ``surface`` trace of ``matrix`` (heights), the labels as axis ticks, ``camera`` as
    the eye position (x, y, z)."""
    arr = _matrix("matrix", matrix)
    scene: dict[str, Any] = {"xaxis": _axis(xaxis), "yaxis": _axis(yaxis), "zaxis": _axis(zaxis)}
    for axis, labels, n in (("xaxis", xlabels, arr.shape[1]), ("yaxis", ylabels, arr.shape[0])):
        ticks = _labels(f"{axis[0]}labels", labels, n)
        if ticks is not None:
            scene[axis].update({"ticktext": ticks, "tickvals": list(range(n))})
    if camera is not None:
        if len(camera) != 3:
            raise ValueError(f"camera must be (x, y, z), got {camera!r}")
        scene["camera"] = {"eye": {"x": float(camera[0]), "y": float(camera[1]), "z": float(camera[2])}}
    layout = {"title": {"text": _title(title, comment)}, "scene": scene}
    return {"data": [{"type": "surface", "name": str(series), "z": _list(arr)}], "layout": _merge(layout, extra_layout)}


def plotly_dict(series: str, figure: Any) -> dict[str, Any]:
    """``report_plotly``'s figure (a Plotly figure or its dict) as a dict whose layout title is ``series``, as
    ClearML sets it (a copy: the caller's dict is left as it is)."""
    if hasattr(figure, "to_json") and hasattr(figure, "to_plotly_json"):
        plot: dict[str, Any] = json.loads(figure.to_json())
    elif isinstance(figure, Mapping):
        plot = copy.deepcopy(dict(figure))
    else:
        raise TypeError(f"figure must be a Plotly figure or its dict, got {type(figure).__name__}")
    layout = plot.get("layout")
    if layout is None:
        plot["layout"] = layout = {}
    if isinstance(layout, dict):
        layout["title"] = {"text": str(series)}
    return plot


def matplotlib_figure(figure: Any) -> Any:
    """The figure to render: ``figure`` itself, or the current figure of ``matplotlib.pyplot`` when given the
    module (ClearML takes both)."""
    if hasattr(figure, "gcf"):  # matplotlib.pyplot (a Figure has no gcf)
        return figure.gcf()
    if not hasattr(figure, "savefig"):
        raise TypeError(f"figure must be a matplotlib figure or matplotlib.pyplot, got {type(figure).__name__}")
    return figure
