"""Artifact files: how the client, the collector and the store read them in pieces (no heavy imports)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

ARTIFACT_CHUNK_BYTES = 1 << 20


def read_file_chunks(path: Path) -> Iterator[bytes]:
    """The content of ``path`` in pieces of ARTIFACT_CHUNK_BYTES."""
    with open(path, "rb") as f:
        while chunk := f.read(ARTIFACT_CHUNK_BYTES):
            yield chunk


def stage_file(source: Path, staging: Path) -> Path:
    """``source`` captured as it is now into ``staging`` (a hard link, else a copy) under a fresh name, so that the
    caller may change or delete it at once; returns the staged path."""
    staging.mkdir(parents=True, exist_ok=True)
    staged = staging / uuid.uuid4().hex
    try:
        os.link(source, staged)
    except OSError:
        shutil.copyfile(source, staged)
    return staged
