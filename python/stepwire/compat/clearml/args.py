"""Argparse capture into the ``Args`` section, as ClearML does, while a task from ``Task.init`` is open.

ClearML patches ``ArgumentParser.parse_args`` when ``clearml`` is imported; here ``parse_known_args`` (which
``parse_args`` calls) is patched by ``Task.init`` (unless ``auto_connect_arg_parser=False``) and restored by
``close``: arguments parsed before ``Task.init`` are not seen (connect the namespace instead:
``task.connect(args)``).
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

ARGS_SECTION = "Args"
"""ClearML's parameter section of argparse arguments."""

_lock = threading.Lock()
_original: Callable[..., tuple[argparse.Namespace, list[str]]] | None = None
_sink: Callable[[dict[str, Any]], None] | None = None


def selected(values: Mapping[str, Any], switches: bool | Mapping[str, bool]) -> dict[str, Any]:
    """The arguments ``auto_connect_arg_parser`` lets through (a mapping: ``{dest: False}`` leaves one out,
    ``"*"`` sets the default)."""
    if not isinstance(switches, Mapping):
        return dict(values) if switches else {}
    default = bool(switches.get("*", True))
    return {k: v for k, v in values.items() if bool(switches.get(k, default))}


def parser_defaults(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """``{dest: default}`` of a parser's arguments (help and suppressed ones left out)."""
    return {a.dest: a.default for a in parser._actions
            if a.dest != argparse.SUPPRESS and a.default != argparse.SUPPRESS and not isinstance(
                a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction))}


def install(sink: Callable[[dict[str, Any]], None]) -> None:
    """Send the namespace of every ``parse_known_args``/``parse_args`` (as a dict) to ``sink`` until ``uninstall``."""
    global _original, _sink
    with _lock:
        _sink = sink
        if _original is not None:
            return
        original = argparse.ArgumentParser.parse_known_args
        _original = original

        def parse_known_args(self: argparse.ArgumentParser, args: Sequence[str] | None = None,
                             namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
            parsed, extra = original(self, args, namespace)
            target = _sink
            if target is not None and isinstance(parsed, argparse.Namespace):
                target(dict(vars(parsed)))
            return parsed, extra

        argparse.ArgumentParser.parse_known_args = parse_known_args  # type: ignore[assignment,method-assign]


def uninstall() -> None:
    """Restore ``ArgumentParser.parse_known_args``."""
    global _original, _sink
    with _lock:
        if _original is not None:
            argparse.ArgumentParser.parse_known_args = _original  # type: ignore[assignment,method-assign]
        _original, _sink = None, None
