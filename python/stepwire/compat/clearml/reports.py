"""What a task reported: the stepwire names of ClearML's ``(title, series)`` pairs, and reading reports back."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from stepwire.api import RunView

SUMMARY_TITLE = "Summary"
"""Title of single values (``Logger.report_single_value``), as in ClearML."""
CONSOLE_TEXT = "console"
"""stepwire text name of ``Logger.report_text``."""
PLOTS_PREFIX = "plots/"
"""Prefix of the stepwire text names holding ``Logger.report_histogram`` records."""
NAMES_META = "clearml_names"
"""Run meta key: ``{stepwire name: [title, series]}`` for pairs that the last-"/" split does not give back."""

X_AXES = ("iter", "timestamp", "iso_time")
"""ClearML's ``x_axis`` choices of ``get_reported_scalars``."""

ScalarGraphs = dict[str, dict[str, dict[str, list[Any]]]]
"""``{title: {series: {"x": [...], "y": [...]}}}``."""


def split_name(name: str) -> tuple[str, str]:
    """``(title, series)`` of a stepwire scalar name: split at the last ``"/"``; else both are ``name``."""
    title, sep, series = name.rpartition("/")
    return (title, series) if sep and title and series else (name, name)



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



def title_map(meta: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """The exact ``(title, series)`` pairs a task recorded in its meta."""
    recorded = meta.get(NAMES_META)
    if not isinstance(recorded, Mapping):
        return {}
    return {str(name): (str(pair[0]), str(pair[1])) for name, pair in recorded.items()
            if isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2}



def titles(view: RunView, names: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``{stepwire name: (title, series)}`` of ``names`` in the run ``view`` (exact pairs from its meta first)."""
    exact = title_map(view.meta)
    return {name: exact.get(name) or split_name(name) for name in names}


def reported_scalars(view: RunView, max_samples: int = 0, x_axis: str = "iter") -> ScalarGraphs:
    """``{title: {series: {"x": [...], "y": [...]}}}`` of every scalar of ``view`` but the single values."""
    if x_axis not in X_AXES:
        raise ValueError("Scalar x-axis supported values are: 'iter', 'timestamp', 'iso_time'")
    if max_samples < 0:
        raise ValueError(f"max_samples must be >= 0, got {max_samples}")
    names = [s.name for s in view.series() if s.kind == "scalar"]
    out: ScalarGraphs = {}
    for name, (title, series) in titles(view, names).items():
        if title == SUMMARY_TITLE:
            continue
        pts = view.scalars(name)
        idx = _sample(len(pts["step"]), max_samples)
        out.setdefault(title, {})[series] = {"x": _x_values(pts["step"][idx], pts["wall_time"][idx], x_axis),
                                             "y": pts["value"][idx].tolist()}
    return out


def last_scalar_metrics(view: RunView) -> dict[str, dict[str, dict[str, float]]]:
    """``{title: {series: {"last", "min", "max"}}}`` of every scalar of ``view`` (single values included)."""
    summary = view.summary()
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, (title, series) in titles(view, summary).items():
        out.setdefault(title, {})[series] = dict(summary[name])
    return out


def single_values(view: RunView) -> dict[str, float]:
    """``{name: value}`` of every single value of ``view`` (its latest report)."""
    names = [s.name for s in view.series() if s.kind == "scalar"]
    out: dict[str, float] = {}
    for name, (title, series) in titles(view, names).items():
        if title == SUMMARY_TITLE:
            values = view.scalars(name)["value"]
            if len(values):
                out[series] = float(values[-1])
    return out


def histograms(view: RunView) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``{title: {series: [record, ...]}}`` of the ``report_histogram`` records of ``view``, by iteration."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for entry in view.texts():
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


def console_output(view: RunView, number_of_reports: int = 1) -> list[str]:
    """The last ``number_of_reports`` texts of ``report_text`` in ``view``, oldest first."""
    texts = [t.text for t in view.texts(CONSOLE_TEXT)]
    return texts[-number_of_reports:] if number_of_reports > 0 else []
