"""Task parameters as ClearML shows them: flat ``{"Section/name": "value as a string"}``."""

from __future__ import annotations

import argparse
import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from stepwire import values

DEFAULT_SECTION = "General"
"""Parameter section of keys given without one, as in ClearML."""

_PARAM_TYPES = (str, int, float, list, tuple, dict, type(None), enum.Enum)


def stringify(value: Any) -> str:
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


def flatten(data: Mapping[Any, Any]) -> dict[str, Any]:
    """Nested mappings flattened with ``"/"``, any key as ``str`` (an empty nested mapping stays as a value)."""
    return values.flatten(data, keep_empty=True, key_check=None)


def sectioned(flat: Mapping[str, Any], section: str | None = None) -> dict[str, str]:
    """Keys as ``"Section/name"`` (under ``section``, else ``General`` for keys without one), values as strings."""
    if section is not None:
        prefix = section.strip("/")
        return {f"{prefix}/{key}": stringify(value) for key, value in flat.items()}
    return {(key if "/" in key else f"{DEFAULT_SECTION}/{key}"): stringify(value) for key, value in flat.items()}


def object_params(obj: object) -> dict[str, Any]:
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


def pairs_from_args(args: Sequence[Mapping[str, Any] | Iterable[tuple[str, Any]]],
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


def connected_values(obj: Any, section: str) -> dict[str, str]:
    """The parameters ``connect(obj, name=section)`` records: a mapping's items (nested ones flattened with "/"),
    a namespace's attributes, or a class's/instance's public attributes."""
    if isinstance(obj, Mapping):
        items = flatten(obj)
    elif isinstance(obj, argparse.Namespace):
        items = dict(vars(obj))
    else:
        items = object_params(obj)
    return sectioned(items, section)


class Connected:
    """Objects given to ``connect``, read again at every ``changes`` (ClearML records their final values)."""

    def __init__(self) -> None:
        self._items: list[tuple[Any, str, dict[str, str]]] = []

    def add(self, obj: Any, section: str) -> dict[str, str]:
        """Track ``obj`` under ``section``; returns its parameters now."""
        values = connected_values(obj, section)
        self._items = [item for item in self._items if item[0] is not obj or item[1] != section]
        self._items.append((obj, section, values))
        return values

    def changes(self) -> dict[str, str]:
        """Parameters whose value changed (or appeared) in a tracked object since it was last read."""
        changed: dict[str, str] = {}
        for i, (obj, section, before) in enumerate(self._items):
            now = connected_values(obj, section)
            changed.update({k: v for k, v in now.items() if before.get(k) != v})
            self._items[i] = (obj, section, now)
        return changed


def cast_value(text: str) -> Any:
    """A parameter string as the value it reads as (JSON, or ``True``/``False``/``None``), else the string."""
    special = {"True": True, "False": False, "None": None}
    if text in special:
        return special[text]
    try:
        return json.loads(text)
    except ValueError:
        return text
