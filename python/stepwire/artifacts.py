"""Artifact names and files: the rules shared by the client, the collector and the store (no heavy imports)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

ARTIFACT_CHUNK_BYTES = 1 << 20


def read_file_chunks(path: Path) -> Iterator[bytes]:
    """The content of ``path`` in pieces of ARTIFACT_CHUNK_BYTES."""
    with open(path, "rb") as f:
        while chunk := f.read(ARTIFACT_CHUNK_BYTES):
            yield chunk


def check_artifact_name(name: str) -> str:
    """Return ``name`` if it is a safe relative path for an artifact, else raise ``ValueError``.

    Components separated by "/" must be non-empty, not "." or "..", and free of backslashes and control
    characters; at most 256 UTF-8 bytes in all.
    """
    parts = name.split("/") if isinstance(name, str) else []
    if (not parts or len(name.encode("utf-8", "replace")) > 256
            or any(p in ("", ".", "..") for p in parts)
            or any(ord(c) < 0x20 or ord(c) == 0x7F or c == "\\" for c in name)):
        raise ValueError(f"artifact name {name!r} must be a relative path (no '..', empty parts, backslashes or "
                         "control characters; at most 256 bytes)")
    return name
