"""``wandb.plot``: W&B's preset charts as Plotly figures. Logged under ``key``, a chart is stored as the Plotly
figure ``key`` (``RunView.plots(key)``) and its data as the table ``key_table`` (W&B keeps the table under that
name too). ``line``, ``scatter``, ``bar``, ``histogram``, ``line_series`` and ``confusion_matrix`` build the same
table as W&B; ``pr_curve``, ``roc_curve`` and ``plot_table`` (custom Vega specs) are not supported (warn once,
nothing is stored)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from stepwire.compat.wandb.data_types import Table, WBValue
from stepwire.compat.wandb.unsupported import unsupported

if TYPE_CHECKING:
    from stepwire.run import Run


class CustomChart(WBValue):
    """A chart ``log`` stores: a Plotly figure (``figure``) and the W&B table it was made from (``table``)."""

    def __init__(self, table: Table | None, figure: dict[str, Any] | None) -> None:
        self.table = table
        self.figure = figure

    def _log(self, run: Run, name: str, step: int) -> None:
        if self.figure is None or self.table is None:
            return
        run.log_plot(name, self.figure, step=step)
        self.table._log(run, f"{name}_table", step)


def _column(table: Table, name: str) -> list[Any]:
    values = table.get_column(name)
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def _figure(traces: list[dict[str, Any]], title: str, **layout: Any) -> dict[str, Any]:
    return {"data": traces, "layout": {"title": {"text": title}, **layout}}


def line(table: Table, x: str, y: str, stroke: str | None = None, title: str = "",
         split_table: bool = False) -> CustomChart:
    """A line of column ``y`` against column ``x`` (one line per value of column ``stroke`` when given)."""
    if stroke is None:
        traces = [{"type": "scatter", "mode": "lines", "x": _column(table, x), "y": _column(table, y)}]
    else:
        xs, ys, keys = _column(table, x), _column(table, y), _column(table, stroke)
        traces = [{"type": "scatter", "mode": "lines", "name": str(k),
                   "x": [a for a, kk in zip(xs, keys, strict=True) if kk == k],
                   "y": [b for b, kk in zip(ys, keys, strict=True) if kk == k]} for k in dict.fromkeys(keys)]
    return CustomChart(table, _figure(traces, title, xaxis={"title": {"text": x}}, yaxis={"title": {"text": y}}))


def scatter(table: Table, x: str, y: str, title: str = "", split_table: bool = False) -> CustomChart:
    """Points of column ``y`` against column ``x``."""
    traces = [{"type": "scatter", "mode": "markers", "x": _column(table, x), "y": _column(table, y)}]
    return CustomChart(table, _figure(traces, title, xaxis={"title": {"text": x}}, yaxis={"title": {"text": y}}))


def bar(table: Table, label: str, value: str, title: str = "", split_table: bool = False) -> CustomChart:
    """A bar per row: column ``value`` labelled by column ``label``."""
    traces = [{"type": "bar", "x": _column(table, label), "y": _column(table, value)}]
    return CustomChart(table, _figure(traces, title))


def histogram(table: Table, value: str, title: str = "", split_table: bool = False) -> CustomChart:
    """The histogram of column ``value`` (binned by Plotly when shown)."""
    traces = [{"type": "histogram", "x": _column(table, value)}]
    return CustomChart(table, _figure(traces, title, xaxis={"title": {"text": value}}))


def line_series(xs: Iterable[Iterable[Any]] | Iterable[Any], ys: Iterable[Iterable[Any]],
                keys: Iterable[str] | None = None, title: str = "", xname: str = "x",
                split_table: bool = False) -> CustomChart:
    """Several lines: ``ys[i]`` against ``xs[i]`` (or every one against ``xs`` when it is one sequence), named
    ``keys[i]`` (default ``line_{i}``); the table has W&B's columns ``step``, ``lineKey``, ``lineVal``."""
    y_list = [list(y) for y in ys]
    x_list = list(xs)
    if not x_list or not isinstance(x_list[0], Iterable) or isinstance(x_list[0], (str, bytes)):
        x_list = [x_list] * len(y_list)
    x_series = [list(x) for x in x_list]
    if len(x_series) != len(y_list):
        raise ValueError(f"Number of x-series ({len(x_series)}) must match y-series ({len(y_list)}).")
    names = list(keys) if keys is not None else [f"line_{i}" for i in range(len(y_list))]
    if len(names) != len(y_list):
        raise ValueError(f"Number of keys ({len(names)}) must match y-series ({len(y_list)}).")
    data = [[x, names[i], y] for i, (xx, yy) in enumerate(zip(x_series, y_list, strict=True))
            for x, y in zip(xx, yy, strict=False)]
    traces = [{"type": "scatter", "mode": "lines", "name": names[i], "x": xx[:len(yy)], "y": yy[:len(xx)]}
              for i, (xx, yy) in enumerate(zip(x_series, y_list, strict=True))]
    return CustomChart(Table(columns=["step", "lineKey", "lineVal"], data=data),
                       _figure(traces, title, xaxis={"title": {"text": xname}}))


def confusion_matrix(probs: Sequence[Sequence[float]] | None = None, y_true: Sequence[Any] | None = None,
                     preds: Sequence[Any] | None = None, class_names: Sequence[str] | None = None,
                     title: str = "Confusion Matrix Curve", split_table: bool = False) -> CustomChart:
    """Counts of (actual, predicted) classes from ``preds`` or the argmax of ``probs``, as W&B computes them: a
    table ``Actual``, ``Predicted``, ``nPredictions`` and a heatmap."""
    if probs is not None and preds is not None:
        raise ValueError("Only one of `probs` or `preds` should be provided, not both.")
    if probs is not None:
        preds = np.argmax(np.asarray(probs), axis=1).tolist()
    if preds is None or y_true is None or len(preds) != len(y_true):
        raise ValueError("The number of predictions and true labels must be equal.")
    if class_names is not None:
        n = len(class_names)
        idx: Iterable[Any] = range(n)
        if len(set(preds)) > n or len(set(y_true)) > n:
            raise ValueError("The number of unique classes exceeds the number of class names.")
    else:
        idx = set(preds) | set(y_true)
        n = len(set(idx))
        class_names = [f"Class_{i + 1}" for i in range(n)]
    mapping = {v: i for i, v in enumerate(sorted(idx))}
    counts = np.zeros((n, n))
    for actual, pred in zip(y_true, preds, strict=True):
        counts[mapping[actual], mapping[pred]] += 1
    data = [[class_names[i], class_names[j], float(counts[i, j])] for i in range(n) for j in range(n)]
    trace = {"type": "heatmap", "x": list(class_names), "y": list(class_names), "z": counts.tolist()}
    figure = _figure([trace], title, xaxis={"title": {"text": "Predicted"}}, yaxis={"title": {"text": "Actual"}})
    return CustomChart(Table(columns=["Actual", "Predicted", "nPredictions"], data=data), figure)


def pr_curve(*args: Any, **kwargs: Any) -> CustomChart:
    """Not supported: warns once; logging the result stores nothing."""
    unsupported("wandb.plot.pr_curve")
    return CustomChart(None, None)


def roc_curve(*args: Any, **kwargs: Any) -> CustomChart:
    """Not supported: warns once; logging the result stores nothing."""
    unsupported("wandb.plot.roc_curve")
    return CustomChart(None, None)


def plot_table(*args: Any, **kwargs: Any) -> CustomChart:
    """Custom Vega charts are not supported: warns once; logging the result stores nothing."""
    unsupported("wandb.plot_table (custom Vega charts)")
    return CustomChart(None, None)
