"""A task's configuration objects, user properties and label enumeration (the ``Task`` methods, as a mixin).

Stored in the run meta: ``clearml_configurations`` ``{name: {"type", "text", "description"}}``,
``clearml_user_properties`` ``{name: {"section", "name", "value", "description"}}`` (a deleted one is None) and
``clearml_labels`` ``{label: index}``. A writable task keeps a local copy; a read-only one reads the meta.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from stepwire.api import RunView
from stepwire.compat.clearml.parameters import DEFAULT_SECTION
from stepwire.run import Run

CONFIGS_META = "clearml_configurations"
"""Run meta key: ``{name: {"type", "text", "description"}}`` of configuration objects."""
USER_PROPS_META = "clearml_user_properties"
"""Run meta key: ``{name: {"section", "name", "value", "description"}}`` of user properties."""
LABELS_META = "clearml_labels"
"""Run meta key: the label enumeration ``{label: index}``."""


class TaskConfiguration:
    """``Task``'s configuration objects, user properties and label enumeration."""

    _run: Run | None
    _configs: dict[str, dict[str, Any]]
    _user_props: dict[str, dict[str, Any]]
    _labels: dict[str, int]

    def _writable(self) -> Run:
        raise NotImplementedError  # Task's

    def _view(self) -> RunView:
        raise NotImplementedError  # Task's

    def _resume_configuration(self, meta: Mapping[str, Any]) -> None:
        """Take over the configuration objects, user properties and labels of a run being continued."""
        self._configs = dict(meta.get(CONFIGS_META) or {})
        self._user_props = {k: v for k, v in (meta.get(USER_PROPS_META) or {}).items() if v is not None}
        self._labels = {str(k): int(v) for k, v in (meta.get(LABELS_META) or {}).items()}

    def connect_configuration(self, configuration: Mapping[str, Any] | str | os.PathLike[str],
                              name: str | None = None, description: str | None = None,
                              ignore_remote_overrides: bool = False) -> Any:
        """Record a configuration dict (as JSON text) or file (its text) as configuration object ``name``
        (default ``"General"``); returns the dict, or the file's path, as ClearML does when run locally."""
        run = self._writable()
        key = name or DEFAULT_SECTION
        if isinstance(configuration, Mapping):
            record = {"type": "dictionary", "text": json.dumps(dict(configuration), indent=2, default=str),
                      "description": description}
        else:
            path = Path(configuration)
            if not path.is_file():
                raise ValueError(f"connect_configuration: no file at {str(path)!r}")
            record = {"type": path.suffix.lstrip(".") or "text", "text": path.read_text(encoding="utf-8"),
                      "description": description}
        self._configs[key] = record
        run.update_meta({CONFIGS_META: {key: record}})
        return configuration

    def set_configuration_object(self, name: str, config_text: str | None = None, description: str | None = None,
                                 config_type: str | None = None, config_dict: Mapping[str, Any] | None = None) -> None:
        """Record configuration object ``name`` from text, or from a dict (as JSON text)."""
        run = self._writable()
        text = config_text if config_dict is None else json.dumps(dict(config_dict), indent=2, default=str)
        record = {"type": config_type or ("dictionary" if config_dict is not None else "text"), "text": text or "",
                  "description": description}
        self._configs[name] = record
        run.update_meta({CONFIGS_META: {name: record}})

    def _configurations(self) -> dict[str, dict[str, Any]]:
        if self._run is not None:
            return self._configs
        found = self._view().meta.get(CONFIGS_META)
        return dict(found) if isinstance(found, Mapping) else {}

    def get_configuration_object(self, name: str) -> str | None:
        """The text of configuration object ``name`` (a dict's as JSON), or None."""
        record = self._configurations().get(name)
        return None if record is None else str(record.get("text", ""))

    def get_configuration_object_as_dict(self, name: str) -> dict[str, Any] | None:
        """Configuration object ``name`` read as a dict (JSON or YAML text), or None."""
        text = self.get_configuration_object(name)
        if text is None:
            return None
        try:
            loaded = json.loads(text)
        except ValueError:
            try:
                import yaml
            except ImportError:
                return None
            loaded = yaml.safe_load(text)
        return loaded if isinstance(loaded, dict) else None

    def get_configuration_objects(self) -> dict[str, str]:
        """``{name: text}`` of every configuration object."""
        return {k: str(v.get("text", "")) for k, v in self._configurations().items()}

    def set_user_properties(self, *iterables: Mapping[str, Any] | Iterable[Any], **properties: Any) -> bool:
        """Add or update user properties: dicts ``{"name", "value", "description"?}`` (or a ``{name: value}``
        dict), ``(name, value[, description])`` tuples, or keywords ``name=value``; values become strings."""
        run = self._writable()
        added: dict[str, dict[str, Any]] = {}

        def put(key: Any, value: Any, description: Any = None) -> None:
            added[str(key)] = {"section": "properties", "name": str(key), "value": str(value),
                               "description": None if description is None else str(description)}

        for arg in iterables:
            if isinstance(arg, Mapping):
                if "name" in arg and "value" in arg:
                    put(arg["name"], arg["value"], arg.get("description"))
                else:
                    for key, value in arg.items():
                        put(key, value)
                continue
            for item in arg:
                if isinstance(item, Mapping):
                    put(item["name"], item["value"], item.get("description"))
                else:
                    put(*item)
        for key, value in properties.items():
            put(key, value)
        self._user_props.update(added)
        run.update_meta({USER_PROPS_META: added})
        return True

    def get_user_properties(self, value_only: bool = False) -> dict[str, Any]:
        """``{name: {"section", "name", "value", "description"}}``, or ``{name: value}`` with ``value_only``."""
        if self._run is not None:
            props = self._user_props
        else:
            found = self._view().meta.get(USER_PROPS_META)
            props = {k: v for k, v in found.items() if v is not None} if isinstance(found, Mapping) else {}
        if value_only:
            return {k: v["value"] for k, v in props.items()}
        return {k: dict(v) for k, v in props.items()}

    def delete_user_properties(self, *iterables: Iterable[Any] | str) -> bool:
        """Remove user properties by name."""
        run = self._writable()
        names = [str(i) for it in iterables for i in ([it] if isinstance(it, str) else it)]
        for key in names:
            self._user_props.pop(key, None)
        run.update_meta({USER_PROPS_META: dict.fromkeys(names)})
        return True

    def connect_label_enumeration(self, enumeration: Mapping[str, int]) -> Mapping[str, int]:
        """Record the label enumeration ``{label: index}`` (run meta ``clearml_labels``); output models created
        afterwards without ``label_enumeration`` take it. Returns ``enumeration``."""
        run = self._writable()
        self._labels = {str(k): int(v) for k, v in enumeration.items()}
        run.update_meta({LABELS_META: self._labels})
        return enumeration

    def get_labels_enumeration(self) -> dict[str, int]:
        """The label enumeration (``{}`` if none was connected)."""
        if self._run is not None:
            return dict(self._labels)
        found = self._view().meta.get(LABELS_META)
        return {str(k): int(v) for k, v in found.items()} if isinstance(found, Mapping) else {}
