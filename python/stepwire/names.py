"""Rules for series names: ``section/name`` strings, checked once when a name is first used."""

from __future__ import annotations

import re

from stepwire import _core

MAX_NAME_BYTES: int = _core.MAX_NAME_BYTES
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def check_name(name: object) -> str:
    """Return ``name`` if it is a valid series name, else raise ``TypeError``/``ValueError`` naming it.

    A valid name is a non-empty ``str`` of at most ``MAX_NAME_BYTES`` UTF-8 bytes without control characters.
    """
    if not isinstance(name, str):
        raise TypeError(f"series name must be a str, got {type(name).__name__}: {name!r:.80}")
    if not name:
        raise ValueError("series name must not be empty")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValueError(f"series name {name!r:.80} is not valid UTF-8: {exc}") from None
    if size > MAX_NAME_BYTES:
        raise ValueError(f"series name {name[:60]!r}... is {size} UTF-8 bytes; the limit is {MAX_NAME_BYTES}")
    control = _CONTROL.search(name)
    if control:
        raise ValueError(f"series name {name!r:.80} contains the control character {control.group()!r}")
    return name
