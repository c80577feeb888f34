"""A task's hyperparameters: ``connect``, ``set_parameters``/``get_parameters`` and the argparse capture (the
``Task`` methods, as a mixin). Stored as the run's config, flat ``{"Section/name": "value as a string"}``
(``stepwire.compat.clearml.parameters``)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from typing import Any

from stepwire.api import RunView
from stepwire.compat.clearml import args
from stepwire.compat.clearml.artifacts import TaskArtifacts
from stepwire.compat.clearml.model import OutputModel
from stepwire.compat.clearml.parameters import (
    DEFAULT_SECTION,
    Connected,
    cast_value,
    flatten,
    pairs_from_args,
    sectioned,
)
from stepwire.run import Run


class TaskHyperparameters:
    """``Task``'s hyperparameters."""

    _run: Run | None
    _closed: bool
    _params: dict[str, str]
    _connected: Connected
    _arg_switches: Any
    _artifacts: TaskArtifacts | None

    def _writable(self) -> Run:
        raise NotImplementedError  # Task's

    def _view(self) -> RunView:
        raise NotImplementedError  # Task's

    def _update_params(self, params: dict[str, str], replace: bool = False) -> None:
        run = self._writable()
        if replace:
            self._params = dict(params)
        else:
            self._params.update(params)
        run.log_params(params, replace=replace)

    def _record_args(self, values: dict[str, Any]) -> None:
        """Record parsed argparse arguments into ``Args`` (the capture ``Task.init`` installs)."""
        if self._closed or self._run is None:
            return
        chosen = args.selected(values, self._arg_switches)
        if chosen:
            self._update_params(sectioned(chosen, args.ARGS_SECTION))

    def connect(self, mutable: Any, name: str | None = None, ignore_remote_overrides: bool = False) -> Any:
        """Record a dict's items (nested dicts flattened with "/"), an ``argparse.Namespace``'s or
        ``ArgumentParser``'s arguments (section ``Args``), or a class's/instance's public attributes.

        They become parameters ``"<name or General>/<key>"`` with string values; returns ``mutable`` itself.
        Changes made to it later are recorded at every ``flush`` and at ``close`` (ClearML records the final
        values); a parser's defaults are recorded and its ``parse_args`` result is captured. An
        ``OutputModel`` is already the task's: returned as it is.
        """
        self._writable()
        if isinstance(mutable, OutputModel):
            return mutable
        if isinstance(mutable, argparse.ArgumentParser):
            self._update_params(sectioned(args.parser_defaults(mutable), name or args.ARGS_SECTION))
            if not self._arg_switches:
                self._arg_switches = True
                args.install(self._record_args)
            return mutable
        section = name or (args.ARGS_SECTION if isinstance(mutable, argparse.Namespace) else DEFAULT_SECTION)
        self._update_params(self._connected.add(mutable, section))
        return mutable

    def _sync_connected(self) -> None:
        """Record what changed in connected objects and the registered DataFrames' current state."""
        if self._run is None or self._closed:
            return
        changed = self._connected.changes()
        if changed:
            self._update_params(changed)
        if self._artifacts is not None:
            self._artifacts.sync()

    def set_parameters(self, *args: Mapping[str, Any] | Iterable[tuple[str, Any]], **kwargs: Any) -> None:
        """Replace all parameters with ``{"Section/name": value}`` (keys without a section go under General)."""
        self._update_params(sectioned(pairs_from_args(args, kwargs)), replace=True)

    def set_parameters_as_dict(self, dictionary: Mapping[str, Any]) -> None:
        """Add or update parameters from a dict (nested dicts flattened with "/"); the others stay."""
        self._update_params(sectioned(flatten(dictionary)))

    def set_parameter(self, name: str, value: Any, description: str | None = None,
                      value_type: Any = None) -> None:
        """Add or update one parameter ``"Section/name"`` (``description``/``value_type`` are not stored)."""
        self._update_params(sectioned({name: value}))

    def get_parameters(self) -> dict[str, str]:
        """All parameters, flat: ``{"Section/name": "value"}``."""
        if self._run is not None:
            return dict(self._params)
        return sectioned(flatten(self._view().config))

    def get_parameters_as_dict(self, cast: bool = False) -> dict[str, Any]:
        """The parameters nested at every ``"/"``: ``{"General": {"lr": "0.1"}, "Args": {...}}``; ``cast``
        turns values that read as JSON (numbers, booleans as ``true``/``True``, lists, dicts) into them."""
        out: dict[str, Any] = {}
        for key, value in self.get_parameters().items():
            *parents, leaf = key.split("/")
            node = out
            for part in parents:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    child = node[part] = {"": child}
                node = child
            node[leaf] = cast_value(value) if cast else value
        return out

    def get_parameter(self, name: str, default: Any = None) -> Any:
        """The parameter ``"Section/name"`` as a string, or ``default``."""
        return self.get_parameters().get(name, default)
