"""Content-addressed blobs (artifact files, media records): ``root/<sha256[:2]>/<sha256>``, written once per content.

Every store keeps its blobs this way: the DuckDB store under ``{data dir}/blobs``, the PostgreSQL store under the
``--blob-dir`` beside its URL (a shared filesystem on a cluster, where every collector writes the same paths).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Staged(Generic[T]):
    """Content written to ``tmp``, not yet in place: its ``sha256``, ``size`` and what the check said of it."""

    tmp: Path
    sha256: str
    size: int
    checked: T | None


class BlobDir:
    """Blobs under ``root``: paths derive from the content's sha256, never from ids or names."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        """Where the content with this digest lives."""
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise KeyError(f"not a sha256 digest: {sha256:.80}")
        return self.root / sha256[:2] / sha256

    def write(self, chunks: Iterable[bytes], limit: int | None = None,
              check: Callable[[Path], T] | None = None) -> tuple[str, int, T | None]:
        """Store content once by its sha256 (the same bytes again replace a blob with identical bytes, atomically,
        so that collectors on several nodes may write the same one); returns (sha256, size, what ``check`` said of
        the complete file before it was put in place). More than ``limit`` bytes, or a ``check`` that raises,
        store nothing (``ValueError``, or what ``check`` raised)."""
        staged = self.stage(chunks, limit, check)
        self.place(staged)
        return staged.sha256, staged.size, staged.checked

    def stage(self, chunks: Iterable[bytes], limit: int | None = None,
              check: Callable[[Path], T] | None = None) -> Staged[T]:
        """Write the content to a temporary file beside the blobs, to be put in place by ``place`` (or removed
        by ``discard``): a store that must put it in place while it records it (under a lock) does so."""
        tmp = self.root / f".{uuid.uuid4().hex}.part"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "wb") as f:
                for chunk in chunks:
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise ValueError(f"the content is larger than {limit} bytes")
                    f.write(chunk)
                    digest.update(chunk)
                f.flush()
                os.fsync(f.fileno())
            checked = check(tmp) if check is not None else None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return Staged(tmp, digest.hexdigest(), size, checked)

    def place(self, staged: Staged[T]) -> Path:
        """Put a staged file in place as its blob (replacing identical bytes)."""
        blob = self.path(staged.sha256)
        try:
            blob.parent.mkdir(exist_ok=True)
            os.replace(staged.tmp, blob)
        finally:
            staged.tmp.unlink(missing_ok=True)
        return blob

    @staticmethod
    def discard(staged: Staged[T]) -> None:
        """Remove a staged file that was not put in place."""
        staged.tmp.unlink(missing_ok=True)

    def remove(self, sha256: str) -> None:
        """Remove a blob (call only once no record refers to it)."""
        self.path(sha256).unlink(missing_ok=True)
