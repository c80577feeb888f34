"""Stores behind the collector: the interface, the embedded DuckDB default and the PostgreSQL store.

``open_store`` picks the engine from a store spec: a ``postgresql://`` URL opens the PostgreSQL store (blobs in
``blob_dir``, else ``{data dir}/blobs``); a path or nothing opens the DuckDB file of a data directory. Nothing
outside this package depends on which engine is behind the ``Store`` interface.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from stepwire.store.base import (
    ArtifactEntry,
    MediaEntry,
    Reader,
    RunRecord,
    ScalarPoints,
    SeriesRecord,
    Store,
    StoreDamaged,
    StoreUnavailable,
    SummaryEntry,
    TextEntry,
)

BLOB_DIR_ENV = "STEPWIRE_BLOB_DIR"
"""Where a database store's artifacts and media live unless told otherwise (default ``{data dir}/blobs``)."""

STORE_ENV = "STEPWIRE_STORE"
"""The store a collector writes to (and readers read) unless told otherwise: a ``postgresql://`` URL or a data
directory."""


def is_url(spec: str | os.PathLike[str] | None) -> bool:
    """True if ``spec`` is a database URL (``postgresql://`` or ``postgres://``), not a path."""
    return isinstance(spec, str) and spec.startswith(("postgresql://", "postgres://"))


def mask(text: str) -> str:
    """``text`` with the password of every database URL (or ``password=``) in it replaced by ``***``."""
    text = re.sub(r"(password\s*=\s*)(\S+)", r"\1***", text)
    return re.sub(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)


def store_spec(spec: str | os.PathLike[str] | None = None) -> str | None:
    """``spec``, else ``$STEPWIRE_STORE``, else None (the data directory's DuckDB file)."""
    if spec is not None and str(spec):
        return str(spec)
    return os.environ.get(STORE_ENV) or None


def open_store(spec: str | os.PathLike[str] | None, directory: str | os.PathLike[str], read_only: bool = False,
               blob_dir: str | os.PathLike[str] | None = None) -> Store:
    """The store ``spec`` names: a PostgreSQL URL (blobs in ``blob_dir``, else ``$STEPWIRE_BLOB_DIR``, else
    ``directory/blobs``), else the DuckDB store of the data directory ``spec`` (a path), else of ``directory``."""
    if spec is not None and is_url(str(spec)):
        try:
            from stepwire.store.postgres import PostgresStore
        except ImportError as exc:
            raise ImportError(f"a PostgreSQL store needs psycopg: pip install 'stepwire[postgres]' ({exc})") from None
        blobs = blob_dir or os.environ.get(BLOB_DIR_ENV) or Path(directory) / "blobs"
        return PostgresStore(str(spec), blobs, read_only=read_only)
    from stepwire.store.duckdb_store import DuckDBStore

    return DuckDBStore(Path(spec) if spec else Path(directory), read_only=read_only)


def describe(store: Store) -> str:
    """Where a store keeps its data, for messages (a URL without its password, or the DuckDB file)."""
    location = getattr(store, "location", None) or getattr(store, "path", None)
    return mask(str(location)) if location is not None else type(store).__name__


__all__ = ["BLOB_DIR_ENV", "STORE_ENV", "ArtifactEntry", "MediaEntry", "Reader", "RunRecord", "ScalarPoints",
           "SeriesRecord", "Store", "StoreDamaged", "StoreUnavailable", "SummaryEntry", "TextEntry", "describe",
           "is_url", "mask", "open_store", "store_spec"]
