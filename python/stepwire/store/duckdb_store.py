"""The embedded default store: one DuckDB file per data directory, scalars kept as per-series chunks.

A chunk is one row per series per batch holding the packed step/value/wall-time arrays plus their step range
and min/max/last, which inserts several times faster than one row per point and keeps series reads cheap.

This module holds the connection (opening, failures, reopening) and what is stored beside the batches (texts,
artifacts, media); the file's schema and settings are in ``duckdb_schema``, the writes of batches and runs in
``duckdb_writes``, the reads (shared with the PostgreSQL store) in ``chunk_reads``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import duckdb

from stepwire import mediatypes
from stepwire.artifacts import read_file_chunks
from stepwire.names import check_artifact_name, check_id
from stepwire.store.base import (
    ArtifactEntry,
    MediaEntry,
    Store,
    StoreDamaged,
    StoreUnavailable,
    TextEntry,
)
from stepwire.store.blobs import BlobDir
from stepwire.store.chunk_reads import ChunkReads
from stepwire.store.duckdb_schema import (
    DEFAULT_MEMORY_LIMIT,
    MEMORY_LIMIT_ENV,
    MIN_MEMORY_LIMIT,
    ROW_GROUP_ROWS,
    SCHEMA,
    STORE_FILE,
    check_schema,
    checkpoint_threshold,
    memory_limit,
    parse_bytes,
    sql_string,
    store_uncompressed,
)
from stepwire.store.duckdb_writes import MAX_CHUNK_POINTS, MAX_SERIES_PER_STREAM, DuckDBWrites
from stepwire.store.sequence_set import SequenceSet

log = logging.getLogger("stepwire.store")
T = TypeVar("T")

__all__ = ["DEFAULT_MEMORY_LIMIT", "MAX_CHUNK_POINTS", "MAX_SERIES_PER_STREAM", "MEMORY_LIMIT_ENV",
           "MIN_MEMORY_LIMIT", "ROW_GROUP_ROWS", "STORE_FILE", "DuckDBStore", "checkpoint_threshold", "memory_limit",
           "parse_bytes"]

_KEYS_PER_QUERY = 16384
"""Chunk rows per query of a paged read's index pass (about 0.5 MiB of keys)."""

_memory_limit = memory_limit  # DuckDBStore.__init__ has a parameter of that name


class DuckDBStore(ChunkReads, DuckDBWrites, Store):
    """A store in ``directory/stepwire.duckdb``. ``read_only`` opens an existing file without writing."""

    _ID_RANGE = True
    _SERIES_SQL = """SELECT name, 'scalar', list(DISTINCT rank ORDER BY rank), sum(n) FROM scalar_chunks
                         WHERE run_id = ? GROUP BY name
                     UNION ALL
                     SELECT name, 'histogram', list(DISTINCT rank ORDER BY rank), count(*) FROM histograms
                         WHERE run_id = ? GROUP BY name
                     ORDER BY 1"""
    _SUMMARY_SQL = """SELECT name,
                             arg_max(last, [step_max, -rank, sequence, rowid]) AS last,
                             min(vmin) FILTER (WHERE NOT isnan(vmin)),
                             max(vmax) FILTER (WHERE NOT isnan(vmax)),
                             sum(n), max(step_max)
                      FROM scalar_chunks WHERE run_id = ? GROUP BY name ORDER BY name"""

    def __init__(self, directory: str | Path, read_only: bool = False, open_timeout: float = 10.0,
                 memory_limit: int | str | None = None) -> None:
        self.path = Path(directory) / STORE_FILE
        self.read_only = read_only
        self.memory_limit = _memory_limit(memory_limit)
        self.checkpoint_threshold = checkpoint_threshold(self.memory_limit)
        self._lock = threading.RLock()
        self._defs: dict[str, dict[int, tuple[str, int]]] = {}  # stream -> series id -> (name, kind)
        self._streams: dict[str, tuple[str, int]] = {}  # stream -> (run, rank)
        self._sequences: dict[str, SequenceSet] = {}  # stream -> the batch sequences stored
        self._failure: str | None = None  # why the database is closed, while it is (see _reopen)
        self._retry_at = 0.0
        self._backoff = 0.0
        self._schema = False
        self.reopened = 0  # times the database was reopened after DuckDB invalidated it
        self._con = self._connect(open_timeout)
        if not read_only:
            with self._lock:
                try:  # what the WAL holds (a crash's), now: if it cannot be checkpointed, retry, answering meanwhile
                    self._con.execute("CHECKPOINT")
                except duckdb.Error as exc:
                    try:
                        self._fail(exc)
                    except StoreUnavailable as unavailable:
                        log.error("%s", unavailable)

    def _settings(self) -> dict[str, str]:
        """Connection settings, given at connect time so that they hold while DuckDB replays its WAL."""
        settings = {
            "memory_limit": f"{self.memory_limit}B",
            # what DuckDB cannot keep within its limit it spills here (by default it would fail instead)
            "temp_directory": str(self.path.with_name(self.path.name + ".tmp")),
            "threads": str(max(1, min(4, os.cpu_count() or 1))),  # each thread takes memory of its own
        }
        if not self.read_only:
            settings["checkpoint_threshold"] = f"{self.checkpoint_threshold}B"
        return settings

    def _connect(self, open_timeout: float) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + open_timeout
        while True:
            try:
                con = duckdb.connect(config=self._settings())
                try:
                    options = f"ROW_GROUP_SIZE {ROW_GROUP_ROWS}" + (", READ_ONLY" if self.read_only else "")
                    con.execute(f"ATTACH {sql_string(str(self.path))} AS store ({options})")
                    con.execute("USE store")
                    # points are stored uncompressed and read back row by row (duckdb_schema.UNCOMPRESSED: ZSTD
                    # reads 1,024 rows at a time, DICT_FSST made each checkpoint cost 150 times as much CPU)
                    store_uncompressed(con)
                except BaseException:
                    con.close()
                    raise
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():  # not another process holding it: the file itself is bad
                    raise StoreDamaged(f"{self.path} cannot be opened as a stepwire store ({exc}); if it is "
                                       "damaged, move it aside to start a new, empty store") from None
                # another process holds the file (a reader closing, or a collector exiting): wait briefly
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        try:
            con.execute("BEGIN TRANSACTION")  # a file that is no stepwire store is left as it was
            if not self.read_only:
                con.execute(SCHEMA)
            check_schema(con, self.path)
            con.execute("COMMIT")
        except BaseException:
            con.close()
            raise
        return con
    # -- failures -----------------------------------------------------------------------------------------
    def _live(self) -> duckdb.DuckDBPyConnection:
        """The connection; while the database is closed after a failure, reopen it (at most every few seconds)
        or raise ``StoreUnavailable``. Call with the lock held."""
        if self._failure is not None:
            if time.monotonic() < self._retry_at:
                raise StoreUnavailable(f"the store is reopening after a failure: {self._failure}")
            self._reopen()
        return self._con

    def _fail(self, exc: duckdb.Error) -> NoReturn:
        """Raise ``exc`` as ``StoreUnavailable`` where it is DuckDB's (out of memory, I/O, a failed commit or
        checkpoint), reopening the database first if DuckDB invalidated it. Call with the lock held."""
        message = str(exc).split("\n", 1)[0]
        if isinstance(exc, duckdb.FatalException) or "invalidated" in message:
            log.error("the store failed (%s): reopening %s", message, self.path)
            self._failure, self._retry_at, self._backoff = message, 0.0, 0.0
            try:
                self._con.close()
            except duckdb.Error:
                pass
            try:
                self._live()
            except StoreUnavailable:
                pass
            raise StoreUnavailable(f"the store failed ({message}); it is being reopened") from exc
        if isinstance(exc, (duckdb.OutOfMemoryException, duckdb.TransactionException, duckdb.IOException)):
            raise StoreUnavailable(f"the store cannot take this now: {message}") from exc
        raise exc

    def _reopen(self) -> None:
        """Open the database again (DuckDB replays its WAL: everything committed is back) and checkpoint it."""
        self._defs.clear()
        self._streams.clear()
        self._sequences.clear()
        try:
            con = self._connect(open_timeout=0.0)
        except duckdb.Error as exc:
            self._reopen_failed(exc)
        try:
            if not self.read_only:
                con.execute("CHECKPOINT")  # fails now, not at the next write, if the WAL cannot be checkpointed
        except duckdb.Error as exc:
            try:
                con.close()
            except duckdb.Error:
                pass
            self._reopen_failed(exc)
        self._con = con
        self._failure = None
        self.reopened += 1
        log.warning("reopened the store %s", self.path)

    def _reopen_failed(self, exc: duckdb.Error) -> NoReturn:
        self._failure = str(exc).split("\n", 1)[0]
        self._backoff = min(30.0, max(1.0, 2 * self._backoff))
        self._retry_at = time.monotonic() + self._backoff
        wal = self.path.with_name(self.path.name + ".wal")
        size = wal.stat().st_size if wal.exists() else 0
        log.error("cannot reopen the store %s (%s; WAL %d MiB, memory limit %d MiB): retrying in %.0f s; if this "
                  "persists, start the collector once with a larger $%s", self.path, self._failure, size >> 20,
                  self.memory_limit >> 20, self._backoff, MEMORY_LIMIT_ENV)
        raise StoreUnavailable(f"the store cannot be reopened: {self._failure}") from exc
    # -- reads ----------------------------------------------------------------------------------------------
    def _query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of one query, all at once: every caller bounds what it asks for (paged reads ask page by page,
        never holding the lock between pages, so that writes go on meanwhile)."""
        with self._lock:
            con = self._live()
            try:
                if not self._has_schema(con):
                    return []
                rows: list[tuple[Any, ...]] = con.execute(sql, params or []).fetchall()
                return rows
            except duckdb.Error as exc:
                self._fail(exc)

    def _keys_per_query(self) -> int:
        return _KEYS_PER_QUERY

    def _media_readable(self) -> bool:
        with self._lock:
            return self._has_media_table(self._live())

    def _has_schema(self, con: duckdb.DuckDBPyConnection) -> bool:
        if not self._schema:  # once there, it stays
            self._schema = bool(con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'runs'").fetchone()[0])
        return self._schema

    # -- texts and artifacts -------------------------------------------------------------------------------
    def add_text(self, run_id: str, entry: TextEntry, dedup: tuple[str, int] | None = None) -> bool:
        with self._lock:
            self._run(run_id)
            con = self._con
            con.execute("BEGIN TRANSACTION")
            try:
                if dedup is not None:
                    key = [f"{dedup[0]}/text", dedup[1]]
                    if con.execute("SELECT 1 FROM batches WHERE stream_id = ? AND sequence = ?", key).fetchone():
                        con.execute("ROLLBACK")
                        return False
                    con.execute("INSERT INTO batches VALUES (?, ?, 1, ?)", [*key, time.time()])
                con.execute("INSERT INTO texts VALUES (?, ?, ?, ?, ?, ?)",
                            [run_id, entry.rank, entry.name, entry.step, entry.wall_time, entry.text])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return True

    def _blob(self, sha256: str) -> Path:
        """Where the content with this digest lives: paths derive from content, never from ids or names."""
        return BlobDir(self.path.parent / "blobs").path(sha256)

    def _sha256(self, run_id: str, name: str) -> str:
        rows = self._query("SELECT sha256 FROM artifacts WHERE run_id = ? AND name = ?", [run_id, name])
        if not rows:
            raise KeyError(f"run {run_id} has no artifact {name!r}")
        return str(rows[0][0])

    def _release_blob(self, sha256: str) -> None:
        """Remove a blob that no artifact or media record refers to any more (call with the lock held)."""
        if self._has_media_table(self._con) and self._con.execute(
                "SELECT 1 FROM media WHERE sha256 = ?", [sha256]).fetchone():
            return
        if not self._con.execute("SELECT 1 FROM artifacts WHERE sha256 = ?", [sha256]).fetchone():
            self._blob(sha256).unlink(missing_ok=True)

    def _write_blob(self, chunks: Iterable[bytes], limit: int | None = None,
                    check: Callable[[Path], T] | None = None) -> tuple[str, int, T | None]:
        """Store content once by its sha256 (``BlobDir.write``, shared with the other stores)."""
        return BlobDir(self.path.parent / "blobs").write(chunks, limit, check)

    def put_artifact(self, run_id: str, name: str, step: int, rank: int, wall_time: float,
                     chunks: Iterable[bytes]) -> ArtifactEntry:
        check_artifact_name(name)
        self._run(run_id)
        sha256, size, _ = self._write_blob(chunks)
        entry = ArtifactEntry(name, size, step, rank, wall_time, sha256)
        with self._lock:
            previous = self._query("SELECT sha256 FROM artifacts WHERE run_id = ? AND name = ?", [run_id, name])
            self._con.execute("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?, ?, ?, ?)",
                              [run_id, name, rank, step, wall_time, size, entry.sha256])
            if previous and previous[0][0] != entry.sha256:
                self._release_blob(str(previous[0][0]))
        return entry

    def delete_artifact(self, run_id: str, name: str) -> None:
        with self._lock:
            sha256 = self._sha256(run_id, name)
            self._con.execute("DELETE FROM artifacts WHERE run_id = ? AND name = ?", [run_id, name])
            self._release_blob(sha256)

    def artifact_path(self, run_id: str, name: str) -> Path:
        """The file holding artifact ``name`` of ``run_id`` (``KeyError`` if there is none)."""
        blob = self._blob(self._sha256(run_id, name))
        if not blob.exists():  # stored before content addressing: artifacts/<run id>/<name>, both checked
            legacy = self.path.parent / "artifacts" / check_id("run id", run_id) / check_artifact_name(name)
            if legacy.exists():
                return legacy
        return blob

    def read_artifact(self, run_id: str, name: str) -> Iterator[bytes]:
        return read_file_chunks(self.artifact_path(run_id, name))

    # -- media ----------------------------------------------------------------------------------------------
    _media_table = False

    def _has_media_table(self, con: duckdb.DuckDBPyConnection) -> bool:
        """A store written before media records has no media table (read-only readers do not create it)."""
        if not self._media_table:  # once there, it stays
            self._media_table = bool(con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'media'").fetchone()[0])
        return self._media_table

    def put_media(self, run_id: str, entry: MediaEntry, chunks: Iterable[bytes]) -> MediaEntry:
        mediatypes.check_entry(entry)
        self._run(run_id)
        sha256, size, dims = self._write_blob(chunks, mediatypes.MAX_MEDIA_BYTES,
                                              lambda p: mediatypes.check_content(entry.kind, entry.mime, p))
        assert dims is not None
        stored = dataclasses.replace(entry, size=size, sha256=sha256, width=dims[0], height=dims[1])
        with self._lock:
            con = self._live()
            try:
                previous = con.execute("SELECT sha256 FROM media WHERE run_id = ? AND rank = ? AND name = ? "
                                       "AND step = ?", [run_id, entry.rank, entry.name, entry.step]).fetchone()
                con.execute("INSERT OR REPLACE INTO media VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [run_id, stored.rank, stored.name, stored.step, stored.wall_time, stored.kind,
                             stored.mime, stored.caption, stored.width, stored.height, stored.size, stored.sha256])
                if previous and previous[0] != sha256:
                    self._release_blob(str(previous[0]))
            except duckdb.Error as exc:
                self._fail(exc)
        return stored

    def media_path(self, run_id: str, sha256: str) -> Path:
        """The file holding a media record's content (``KeyError`` unless the run has one with ``sha256``)."""
        with self._lock:
            known = self._has_media_table(self._live())
        if not known or not self._query("SELECT 1 FROM media WHERE run_id = ? AND sha256 = ? LIMIT 1",
                                        [run_id, sha256]):
            raise KeyError(f"run {run_id} has no media record with content {sha256:.80}")
        return self._blob(sha256)

    def read_media(self, run_id: str, sha256: str) -> Iterator[bytes]:
        return read_file_chunks(self.media_path(run_id, sha256))

    def close(self) -> None:
        with self._lock:
            self._con.close()
