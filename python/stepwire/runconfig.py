"""``Run.config``: a run's hyper-parameters as an object with attribute and item access, every change stored
with the run (``Run.log_params``), readable back as ``RunView.config``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stepwire.run import Run


def config_dict(params: object) -> dict[str, Any]:
    """``params`` as a plain dict: a mapping, an ``argparse.Namespace``, absl/TensorFlow flags (anything with
    ``flag_values_dict()``), or an object with attributes (its ``vars``); ``TypeError`` otherwise."""
    if params is None:
        return {}
    if isinstance(params, Mapping):
        return dict(params)
    if isinstance(params, argparse.Namespace):
        return dict(vars(params))
    flags = getattr(params, "FLAGS", None)  # the absl.flags module itself
    if flags is not None and hasattr(flags, "flag_values_dict"):
        params = flags
    if hasattr(params, "flag_values_dict"):
        values: dict[str, Any] = params.flag_values_dict()
        return dict(values)
    if hasattr(params, "__dict__") and not isinstance(params, type):
        return {k: v for k, v in vars(params).items() if not k.startswith("_")}
    raise TypeError(f"config must be a dict, an argparse.Namespace or absl flags, got {type(params).__name__}")


def json_value(value: Any) -> Any:
    """``value`` as it is stored: JSON types as they are (tuples as lists), numpy and torch scalars as numbers,
    arrays as lists, anything else as its ``str``."""
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if value is None or type(value) in (bool, int, float, str):
        return value
    tolist = getattr(value, "tolist", None)  # numpy and torch scalars and arrays
    if callable(tolist):
        try:
            return json_value(tolist())
        except (TypeError, ValueError, RuntimeError):
            pass
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


class RunConfig(MutableMapping[str, Any]):
    """A run's config: ``config.lr``, ``config["lr"]``, ``config.update({...})``, nested dicts as values.

    Each change is sent to the run as it happens (``Run.log_params``: merged into the stored config, read back
    with ``RunView.config``). Values are stored as JSON (``json_value``: numpy scalars as numbers, other objects
    as their ``str``). Changing a key's value is allowed here; ``stepwire.compat.wandb``'s config refuses it
    unless ``allow_val_change=True``, as W&B does (``strict_changes``).
    """

    strict_changes = False
    """Whether changing the value of a key already set raises ``ValueError`` (unless ``allow_val_change``)."""

    def __init__(self, run: Run | None, initial: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_run", run)
        object.__setattr__(self, "_items", {str(k): json_value(v) for k, v in (initial or {}).items()})

    # -- what every change goes through ---------------------------------------------------------------------
    def _store(self, items: Mapping[str, Any], allow_val_change: bool | None) -> dict[str, Any]:
        clean: dict[str, Any] = {}
        for key, value in items.items():
            if not isinstance(key, str):
                raise TypeError(f"config keys must be str, got {type(key).__name__}: {key!r:.80}")
            key = key.strip("-")  # "--lr" from an argument parser is "lr", as in W&B
            value = json_value(value)
            if (self.strict_changes and not allow_val_change and key in self._items
                    and self._items[key] != value):
                raise ValueError(f"config key {key!r} is already {self._items[key]!r:.80}; changing it to "
                                 f"{value!r:.80} needs update(..., allow_val_change=True)")
            clean[key] = value
        self._items.update(clean)
        if clean and self._run is not None and not self._run._finished:
            self._run.log_params(clean)
        return clean

    # -- the mapping ------------------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._store({key: value}, None)

    def __delitem__(self, key: str) -> None:
        raise TypeError("config keys cannot be deleted (the stored config keeps every key set)")

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        try:
            return self._items[key]
        except KeyError:
            raise AttributeError(f"config has no key {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self._store({key: value}, None)

    def update(self, d: object = None, allow_val_change: bool | None = None,  # type: ignore[override]
               **kwargs: Any) -> None:
        """Merge ``d`` (a dict, ``argparse.Namespace`` or absl flags) and ``kwargs`` into the config."""
        self._store({**config_dict(d), **kwargs}, allow_val_change)

    def setdefaults(self, d: object) -> None:
        """Set the keys of ``d`` that the config does not have yet."""
        self._store({k: v for k, v in config_dict(d).items() if k not in self._items}, None)

    def as_dict(self) -> dict[str, Any]:
        """A copy of the config as a plain dict."""
        return dict(self._items)

    def __repr__(self) -> str:
        return repr(self._items)
