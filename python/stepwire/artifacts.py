"""Artifact files: how the client, the collector and the store read them in pieces (no heavy imports)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

ARTIFACT_CHUNK_BYTES = 1 << 20


def read_file_chunks(path: Path) -> Iterator[bytes]:
    """The content of ``path`` in pieces of ARTIFACT_CHUNK_BYTES."""
    with open(path, "rb") as f:
        while chunk := f.read(ARTIFACT_CHUNK_BYTES):
            yield chunk
