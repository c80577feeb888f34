"""``Run.summary``: a run's summary values (one value, or a dict of them, per key), stored with the run as the
``"summary"`` entry of its meta (``RunView.meta["summary"]``).

A key set explicitly (``summary["best_acc"] = 0.9``, ``summary.update({...})``) is sent to the run at once.
Logging surfaces that keep W&B's semantics also feed it what they log (``observe``): then a key not set
explicitly holds the last value logged, or, for keys whose metric asks for them, the ``min``/``max``/``mean``/
``first``/``last``/``best`` of the values logged (``{"min": 0.1}``; none at all for ``"none"``); ``store`` writes
that whole view to the run (``stepwire.compat.wandb`` does at ``finish``). ``RunView.summary()`` is another thing:
last/min/max of every scalar series, computed by the store.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from stepwire.runconfig import json_value

if TYPE_CHECKING:
    from stepwire.run import Run

MODES = ("min", "max", "mean", "first", "last", "best", "none")
"""What a metric's summary may keep (W&B's ``define_metric(summary=...)``)."""


class _Track:
    """The aggregates of one key's logged values."""

    __slots__ = ("count", "first", "last", "max", "min", "sum")

    def __init__(self) -> None:
        self.count, self.sum, self.min, self.max, self.last = 0, 0.0, math.inf, -math.inf, math.nan
        self.first = math.nan

    def add(self, value: float) -> None:
        if not self.count:
            self.first = value
        self.count += 1
        self.sum += value
        self.min, self.max, self.last = min(self.min, value), max(self.max, value), value


class RunSummary(MutableMapping[str, Any]):
    """Summary values of a run: item and attribute access, ``update``; explicit values stored in the run's meta.

    ``modes(key)`` (given by a logging surface) says which aggregates a key keeps: ``None`` for the default
    (the last value logged), else a sequence of ``MODES`` (``"best"`` with ``goal(key)`` "minimize" or
    "maximize").
    """

    def __init__(self, run: Run | None) -> None:
        object.__setattr__(self, "_run", run)
        object.__setattr__(self, "_explicit", {})
        object.__setattr__(self, "_logged", {})
        object.__setattr__(self, "_tracks", {})
        object.__setattr__(self, "_modes", lambda key: None)
        object.__setattr__(self, "_goal", lambda key: None)

    def set_policy(self, modes: Any, goal: Any) -> None:
        """Use ``modes(key) -> Sequence[str] | None`` and ``goal(key) -> str | None`` for the keys logged."""
        object.__setattr__(self, "_modes", modes)
        object.__setattr__(self, "_goal", goal)

    def observe(self, values: Mapping[str, Any]) -> None:
        """Record values just logged (numbers as float, texts): the last of each key, and the aggregates its
        metric asks for (from the time the metric is defined on, as in W&B)."""
        self._logged.update(values)
        for key, value in values.items():
            if type(value) is float and self._modes(key):
                track = self._tracks.get(key)
                if track is None:
                    track = self._tracks[key] = _Track()
                track.add(value)

    def _computed(self, key: str) -> Any:
        modes: Sequence[str] | None = self._modes(key)
        if not modes:
            return json_value(self._logged[key])
        if "none" in modes:
            raise KeyError(key)
        track = self._tracks.get(key)
        if track is None:
            return json_value(self._logged[key])
        out: dict[str, float] = {}
        for mode in modes:
            if mode == "min":
                out["min"] = track.min
            elif mode == "max":
                out["max"] = track.max
            elif mode == "mean":
                out["mean"] = track.sum / track.count
            elif mode == "first":
                out["first"] = track.first
            elif mode == "last":
                out["last"] = track.last
            elif mode == "best":
                out["best"] = track.max if self._goal(key) == "maximize" else track.min
        return out

    def _keys(self) -> list[str]:
        keys = list(self._explicit)
        for key in self._logged:
            if key not in self._explicit and "none" not in (self._modes(key) or ()):
                keys.append(key)
        return keys

    # -- the mapping ---------------------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if key in self._explicit:
            return self._explicit[key]
        if key not in self._logged:
            raise KeyError(key)
        return self._computed(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __delitem__(self, key: str) -> None:
        found = self._explicit.pop(key, None) is not None
        found = self._logged.pop(key, None) is not None or found
        self._tracks.pop(key, None)
        if not found:
            raise KeyError(key)
        self._send({key: None})

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"summary has no key {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def update(self, d: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:  # type: ignore[override]
        """Set the keys of ``d`` and ``kwargs`` explicitly (they no longer follow what is logged)."""
        items = {str(k): json_value(v) for k, v in {**dict(d or {}), **kwargs}.items()}
        self._explicit.update(items)
        self._send(items)

    def as_dict(self) -> dict[str, Any]:
        """Every key with its value: explicit ones as set, the others computed from what was logged."""
        return {key: self[key] for key in self._keys()}

    def store(self) -> None:
        """Write ``as_dict()`` to the run (its meta's ``"summary"``)."""
        self._send(self.as_dict())

    def _send(self, items: Mapping[str, Any]) -> None:
        run = self._run
        if items and run is not None and not run._finished:
            run.update_meta({"summary": {k: _finite(v) for k, v in items.items()}})

    def __repr__(self) -> str:
        return repr(self.as_dict())


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they are stored as the strings "NaN", "Infinity", "-Infinity"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value
