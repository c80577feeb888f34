"""The rules for every identifier that crosses a process boundary: run ids, stream ids, series names, artifact
names and run labels (project, run name, tags). Clients check them before sending and the collector checks them
again where they arrive, with these same functions: the collector trusts no client."""

from __future__ import annotations

import re

from stepwire import _core

MAX_NAME_BYTES: int = _core.MAX_NAME_BYTES
MAX_ID_CHARS = 64
MAX_LABEL_BYTES = 256
# C0/C1 controls and the Unicode bidirectional controls (which can make a name display as another one)
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _check_text(what: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}: {value!r:.80}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} {value!r:.80} is not valid UTF-8: {exc}") from None
    if size > limit:
        raise ValueError(f"{what} {value[:60]!r}... is {size} UTF-8 bytes; the limit is {limit}")
    bad = _FORBIDDEN.search(value)
    if bad:
        raise ValueError(f"{what} {value!r:.80} contains the control character {bad.group()!r}")
    return value


def check_name(name: object) -> str:
    """Return ``name`` if it is a valid series or text name, else raise ``TypeError``/``ValueError`` naming it.

    A valid name is a non-empty ``str`` of at most ``MAX_NAME_BYTES`` UTF-8 bytes without control or
    bidirectional-control characters.
    """
    return _check_text("series name", name, MAX_NAME_BYTES)


def check_label(what: str, value: object) -> str:
    """Return ``value`` if it can be a project, run name or tag (``what`` says which): as a series name, at most
    ``MAX_LABEL_BYTES`` bytes."""
    return _check_text(what, value, MAX_LABEL_BYTES)


def check_id(what: str, value: object) -> str:
    """Return ``value`` if it is a valid run or stream id (``what`` says which), else raise ``ValueError``.

    An id is 1 to ``MAX_ID_CHARS`` ASCII letters, digits, ``.``, ``_`` or ``-``, starting with a letter or digit,
    so that it can never name a path, hide a character or look like another id.
    """
    if not isinstance(value, str) or len(value) > MAX_ID_CHARS or not _ID.fullmatch(value):
        raise ValueError(f"{what} {value!r:.80} must be 1 to {MAX_ID_CHARS} ASCII letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return value


def check_artifact_name(name: object) -> str:
    """Return ``name`` if it is a safe relative path for an artifact, else raise ``ValueError``.

    Components separated by "/" must be non-empty, not "." or "..", and free of backslashes, control and
    bidirectional-control characters; at most 256 UTF-8 bytes in all.
    """
    if (not isinstance(name, str) or not name or _FORBIDDEN.search(name) or "\\" in name
            or len(name.encode("utf-8", "replace")) > 256 or any(p in ("", ".", "..") for p in name.split("/"))):
        raise ValueError(f"artifact name {name!r:.80} must be a relative path (no '..', empty parts, backslashes or "
                         "control characters; at most 256 bytes)")
    return name
