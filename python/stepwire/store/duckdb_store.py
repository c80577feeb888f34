"""The embedded default store: one DuckDB file per data directory, scalars kept as per-series chunks.

A chunk is one row per series per batch holding the packed step/value/wall-time arrays plus their step range
and min/max/last, which inserts several times faster than one row per point and keeps series reads cheap.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import duckdb
import numpy as np
import numpy.typing as npt

from stepwire import _core, mediatypes
from stepwire.artifacts import read_file_chunks
from stepwire.collector.decode import BatchError, DecodedBatch
from stepwire.names import check_artifact_name, check_id, check_name
from stepwire.store import overview
from stepwire.store.base import (
    ArtifactEntry,
    MediaEntry,
    RunRecord,
    Store,
    StoreDamaged,
    StoreUnavailable,
    TextEntry,
)
from stepwire.store.blobs import BlobDir
from stepwire.store.chunk_reads import ChunkReads

log = logging.getLogger("stepwire.store")
T = TypeVar("T")

STORE_FILE = "stepwire.duckdb"  # also named in query_client, which must not import duckdb
MAX_SERIES_PER_STREAM = 1_000_000

MEMORY_LIMIT_ENV = "STEPWIRE_DUCKDB_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = 1 << 30
"""DuckDB's memory limit unless ``$STEPWIRE_DUCKDB_MEMORY_LIMIT`` says otherwise (DuckDB's own default is 80% of
RAM: a collector shares the machine with training)."""

MIN_MEMORY_LIMIT = 64 << 20
"""The smallest memory limit taken: below it DuckDB cannot hold a checkpoint of 16 MiB batches (at 48 MiB it fails
after about 100 MB stored)."""

MAX_CHUNK_POINTS = 1024
"""Points per stored chunk row at most (a longer run of one series in a batch is stored as several rows). Each
row's blob then stays at 24 KiB: DuckDB keeps blobs of more than about 50 KiB in buffers of their own, which
its checkpoint must hold all at once, so that a store of a few long series outgrew any memory limit."""

ROW_GROUP_ROWS = 16384
"""Rows per DuckDB row group (its default is 122,880): a checkpoint that fills a row group needs memory growing
with it, which at DuckDB's default size and rows of 24 KiB took more than 64 MiB; at 16,384 rows (at most 400 MB
of points) it stays within ``MIN_MEMORY_LIMIT``, and checkpoints rewrite less."""

_KEYS_PER_QUERY = 16384
"""Chunk rows per query of a paged read's index pass (about 0.5 MiB of keys)."""


def parse_bytes(text: str) -> int:
    """``"512MB"``, ``"1 GiB"``, ``"1073741824"`` as bytes (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024)."""
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}
    raw = text.strip().upper()
    number = raw.rstrip("KMGTIB ")
    unit = raw[len(number):].strip()
    try:
        value = float(number) * units[unit]
    except (KeyError, ValueError):
        raise ValueError(f"not an amount of memory: {text!r} (say e.g. 512MB or 1GiB)") from None
    if value < 1:
        raise ValueError(f"not an amount of memory: {text!r}")
    return int(value)


def memory_limit(value: int | str | None = None) -> int:
    """DuckDB's memory limit in bytes: ``value``, else ``$STEPWIRE_DUCKDB_MEMORY_LIMIT``, else 1 GiB; at least
    ``MIN_MEMORY_LIMIT``."""
    if value is None:
        value = os.environ.get(MEMORY_LIMIT_ENV) or DEFAULT_MEMORY_LIMIT
    limit = parse_bytes(value) if isinstance(value, str) else int(value)
    return max(limit, MIN_MEMORY_LIMIT)


def checkpoint_threshold(limit: int) -> int:
    """The WAL size that triggers a checkpoint: a quarter of the memory limit, between 8 and 256 MiB.

    Until its checkpoint, what the WAL holds is also held by DuckDB (spilled to the temporary directory under
    pressure), and the checkpoint needs memory of its own: measured to hold at half the limit (at 64 MiB, 256 MiB
    and 1 GiB, over GBs of rows of 1024 points), so a quarter leaves room. Larger is cheaper: each checkpoint
    rewrites the row group it appends to, so fewer of them cost less in all (but each blocks writes longer)."""
    return min(256 << 20, max(8 << 20, limit // 4))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, project VARCHAR, name VARCHAR, tags VARCHAR, config VARCHAR,
    created DOUBLE, status VARCHAR, finished DOUBLE, meta VARCHAR);
CREATE TABLE IF NOT EXISTS texts (
    run_id VARCHAR, rank INTEGER, name VARCHAR, step BIGINT, wall_time DOUBLE, text VARCHAR);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id VARCHAR, name VARCHAR, rank INTEGER, step BIGINT, wall_time DOUBLE, size UBIGINT, sha256 VARCHAR,
    PRIMARY KEY (run_id, name));
CREATE TABLE IF NOT EXISTS media (
    run_id VARCHAR, rank INTEGER, name VARCHAR, step BIGINT, wall_time DOUBLE, kind VARCHAR, mime VARCHAR,
    caption VARCHAR, width INTEGER, height INTEGER, size UBIGINT, sha256 VARCHAR,
    PRIMARY KEY (run_id, rank, name, step));  -- content in blobs/, shared with artifacts of the same bytes
CREATE TABLE IF NOT EXISTS streams (stream_id VARCHAR PRIMARY KEY, run_id VARCHAR, rank INTEGER);
CREATE TABLE IF NOT EXISTS series (
    stream_id VARCHAR, series_id UINTEGER, name VARCHAR, kind TINYINT, PRIMARY KEY (stream_id, series_id));
CREATE TABLE IF NOT EXISTS batches (
    stream_id VARCHAR, sequence UBIGINT, items UBIGINT, received DOUBLE, PRIMARY KEY (stream_id, sequence));
CREATE TABLE IF NOT EXISTS scalar_chunks (
    run_id VARCHAR, rank INTEGER, name VARCHAR, stream_id VARCHAR, sequence UBIGINT, n INTEGER,
    step_min BIGINT, step_max BIGINT, vmin DOUBLE, vmax DOUBLE, last DOUBLE,
    points BLOB,  -- n int64 steps, then n float64 values, then n float64 wall times
    overview BLOB);  -- block extremes (store/overview.py) of chunks of >= BLOCK points that ascend; else NULL
ALTER TABLE scalar_chunks ADD COLUMN IF NOT EXISTS overview BLOB;  -- stores written before it existed
CREATE TABLE IF NOT EXISTS histograms (
    run_id VARCHAR, rank INTEGER, name VARCHAR, stream_id VARCHAR, sequence UBIGINT, step BIGINT,
    wall_time DOUBLE, k UTINYINT, count BIGINT, sum DOUBLE, min DOUBLE, max DOUBLE,
    nan BIGINT, pos_inf BIGINT, neg_inf BIGINT, indices BLOB, counts BLOB);
"""

_KIND_NAMES = {_core.KIND_SCALAR: "scalar", _core.KIND_HISTOGRAM: "histogram"}


_memory_limit = memory_limit  # DuckDBStore.__init__ has a parameter of that name


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _unregister(con: duckdb.DuckDBPyConnection, name: str) -> None:
    try:
        con.unregister(name)
    except duckdb.Error:
        pass  # the transaction failed (its error is the one to raise); the next register replaces the view


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass  # a COMMIT that failed has rolled back already (or the database is invalidated)


class _Refused(Exception):
    """Batch ``index`` of a group is wrong (``error``): the group's transaction is rolled back."""

    def __init__(self, index: int, error: BatchError) -> None:
        super().__init__(index, error)
        self.index = index
        self.error = error


def _concat(parts: list[dict[str, npt.NDArray[Any]]]) -> dict[str, npt.NDArray[Any]]:
    """Columns of several row sets, one after the other."""
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _pack_chunks(batch: DecodedBatch) -> dict[str, Any]:
    """The scalar chunk rows of a batch with scalars, all columns but the names (``parts``: rows per group of
    the batch where a group is longer than ``MAX_CHUNK_POINTS``, else None). Needs nothing of the store."""
    group_ends = np.cumsum(batch.group_lengths, dtype=np.int64)
    group_starts = group_ends - batch.group_lengths
    # a group longer than MAX_CHUNK_POINTS becomes several rows, in order (readers order rows by rowid)
    parts = -(-batch.group_lengths.astype(np.int64) // MAX_CHUNK_POINTS)
    g = len(batch.group_series)
    split = int(parts.sum()) != g
    if split:
        first = np.repeat(np.cumsum(parts) - parts, parts)
        starts = np.repeat(group_starts, parts) + (np.arange(int(parts.sum())) - first) * MAX_CHUNK_POINTS
        ends = np.minimum(starts + MAX_CHUNK_POINTS, np.repeat(group_ends, parts))
    else:
        starts, ends = group_starts, group_ends
    lengths_g = (ends - starts).astype(np.uint32)
    steps, values, walls = batch.steps, batch.values, batch.wall_times
    step_max = np.maximum.reduceat(steps, starts)
    with np.errstate(invalid="ignore"):
        vmin = np.fmin.reduceat(values, starts)
        vmax = np.fmax.reduceat(values, starts)
    last_idx = ends - 1
    # "last" is the value at the highest step; logged steps are usually ascending, so check before searching
    for gi in np.flatnonzero(steps[last_idx] != step_max).tolist():
        seg = steps[starts[gi]:ends[gi]]
        last_idx[gi] = starts[gi] + len(seg) - 1 - int(np.argmax(seg[::-1]))
    # one blob per chunk: its steps, values and wall times back to back (one object per row, not three)
    packed = np.empty(3 * len(steps), dtype=np.int64)
    pos = np.arange(len(steps)) + 2 * np.repeat(starts, lengths_g)
    lengths = np.repeat(lengths_g.astype(np.int64), lengths_g)
    packed[pos] = steps
    packed[pos + lengths] = values.view(np.int64)
    packed[pos + 2 * lengths] = walls.view(np.int64)
    raw = packed.view(np.uint8).data
    blobs = np.array([bytes(raw[24 * a:24 * b]) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)],
                     dtype=object)
    overviews = np.array(overview.compute(steps, values, walls, starts, ends), dtype=object)
    return {
        "parts": parts if split else None,
        "n": lengths_g.astype(np.int32),
        "step_min": np.minimum.reduceat(steps, starts),
        "step_max": step_max,
        "vmin": vmin,
        "vmax": vmax,
        "last": values[last_idx],
        "points": blobs,
        "overview": overviews,
    }


def _columns(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for table, column in con.execute("SELECT table_name, column_name FROM information_schema.columns "
                                     "WHERE table_catalog = current_database()").fetchall():
        found.setdefault(table, set()).add(column)
    return found


def _check_schema(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Raise ``StoreDamaged`` unless every table of the schema that exists has the columns this code reads (a
    file written by something else, or tampered with, is refused at open instead of failing every request)."""
    with duckdb.connect() as scratch:
        scratch.execute(_SCHEMA)
        expected = _columns(scratch)
    found = _columns(con)
    for table, columns in expected.items():
        if table in found and not columns <= found[table]:
            raise StoreDamaged(f"{path} is not a stepwire store: its table {table} lacks the columns "
                               f"{sorted(columns - found[table])}")


class DuckDBStore(ChunkReads, Store):
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
                    con.execute(f"ATTACH {_sql_string(str(self.path))} AS store ({options})")
                    con.execute("USE store")
                    # DuckDB's ZSTD for blobs decompresses 1,024 rows at a time (24 MiB of points per scanning
                    # thread, whichever row is read; gigabytes for rows of the old layout): points are stored
                    # uncompressed and read back row by row
                    con.execute("SET disabled_compression_methods = 'zstd'")
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
                con.execute(_SCHEMA)
            _check_schema(con, self.path)
            con.execute("COMMIT")
        except BaseException:
            con.close()
            raise
        return con

    # -- writes -------------------------------------------------------------------------------------------
    def open_run(self, run: RunRecord, rank: int = 0, world_size: int = 1) -> RunRecord:
        with self._lock:
            row = self._con.execute("SELECT run_id FROM runs WHERE run_id = ?", [run.id]).fetchone()
            if row is None:
                self._con.execute(
                    "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [run.id, run.project, run.name, json.dumps(run.tags), json.dumps(run.config), run.created,
                     "running", 0.0, json.dumps(run.meta)])
                current = self._run(run.id)
            else:
                current = self._run(run.id)
                current.meta.update(run.meta)
                if rank == 0:  # the other ranks join; rank 0 describes the run
                    current.project, current.name, current.tags = run.project, run.name, run.tags
                    current.config.update(run.config)
                current.created = min(current.created, run.created)
            current.meta["world_size"] = max(int(current.meta.get("world_size", 1)), world_size)
            current.meta.setdefault("ranks", {})[str(rank)] = "running"
            self._save_run(current)
            return self._run(run.id)

    def _save_run(self, r: RunRecord) -> None:
        ranks = r.meta.get("ranks", {})
        statuses = list(ranks.values())
        if "failed" in statuses:
            r.status = "failed"
        elif "crashed" in statuses:
            r.status = "crashed"
        elif statuses and all(v == "finished" for v in statuses) and len(statuses) >= r.meta.get("world_size", 1):
            r.status = "finished"
        elif statuses:
            r.status = "running"
        self._con.execute(
            "UPDATE runs SET project = ?, name = ?, tags = ?, config = ?, created = ?, status = ?, finished = ?,"
            " meta = ? WHERE run_id = ?",
            [r.project, r.name, json.dumps(r.tags), json.dumps(r.config), r.created, r.status, r.finished,
             json.dumps(r.meta), r.id])

    def update_run(self, run_id: str, config: dict[str, Any] | None = None, status: str | None = None,
                   finished: float | None = None, replace_config: bool = False,
                   meta: dict[str, Any] | None = None, rank: int = 0) -> None:
        with self._lock:
            current = self._run(run_id)
            if replace_config:
                current.config = dict(config or {})
            elif config:
                current.config.update(config)
            for key, value in (meta or {}).items():  # one level deep, so ranks add to a dict, not replace it
                if isinstance(value, dict) and isinstance(current.meta.get(key), dict):
                    current.meta[key].update(value)
                else:
                    current.meta[key] = value
            if status:
                current.meta.setdefault("ranks", {})[str(rank)] = status
                current.status = status
            if finished is not None:
                current.finished = max(current.finished, finished)
            self._save_run(current)

    def last_data(self, run_id: str, rank: int) -> float:
        rows = self._query("""SELECT greatest(
                                  (SELECT max(b.received) FROM batches b JOIN streams s USING (stream_id)
                                   WHERE s.run_id = ? AND s.rank = ?),
                                  (SELECT max(wall_time) FROM texts WHERE run_id = ? AND rank = ?),
                                  (SELECT created FROM runs WHERE run_id = ?))""", [run_id, rank] * 2 + [run_id])
        return float(rows[0][0]) if rows and rows[0][0] is not None else time.time()

    def append(self, batch: DecodedBatch) -> bool:
        """Store a batch in one transaction. A DuckDB failure (out of memory, a full disk, a failed checkpoint)
        raises ``StoreUnavailable`` with nothing stored, after reopening the database if DuckDB invalidated it;
        a batch that is wrong raises ``BatchError``."""
        (result,) = self.append_many([batch])
        if isinstance(result, BatchError):
            raise result
        return result

    def append_many(self, batches: Sequence[DecodedBatch]) -> list[bool | BatchError]:
        """Store ``batches`` in ONE transaction (see ``Store.append_many``): duplicates by (stream, sequence),
        stored before or earlier in the group, are skipped; a batch found wrong is left out and the transaction
        retried without it, so that it fails alone; a DuckDB failure raises ``StoreUnavailable`` with none stored."""
        results: list[bool | BatchError] = [False] * len(batches)
        todo = list(range(len(batches)))
        with self._lock:
            while todo:
                con = self._live()
                try:
                    stored = self._append_group(con, [batches[i] for i in todo])
                except _Refused as refused:
                    results[todo.pop(refused.index)] = refused.error
                    continue
                except duckdb.Error as exc:
                    self._fail(exc)
                for i, ok in zip(todo, stored, strict=True):
                    results[i] = ok
                try:
                    if any(stored):
                        self._checkpoint_if_needed(con)
                except duckdb.Error as exc:
                    self._fail(exc)
                break
        return results

    def _append_group(self, con: duckdb.DuckDBPyConnection, group: list[DecodedBatch]) -> list[bool]:
        """One transaction storing ``group``; ``_Refused`` (nothing stored) names the first wrong batch."""
        con.execute("BEGIN TRANSACTION")
        staged: dict[str, dict[int, tuple[str, int]]] = {}  # stream -> its definitions once this group commits
        touched: set[str] = set()
        try:
            stored = self._stage_group(con, group, staged, touched)
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            for stream in touched:  # streams _ensure_run_and_stream learnt in the rolled-back transaction
                self._streams.pop(stream, None)
            raise
        self._defs.update(staged)
        return stored

    def _stage_group(self, con: duckdb.DuckDBPyConnection, group: list[DecodedBatch],
                     staged: dict[str, dict[int, tuple[str, int]]], touched: set[str]) -> list[bool]:
        keys = {"stream_id": np.array([b.stream_id for b in group], dtype=object),
                "sequence": np.array([b.sequence for b in group], dtype=np.uint64)}
        con.register("_keys", keys)
        try:
            seen = {(str(r[0]), int(r[1])) for r in con.execute(
                "SELECT b.stream_id, b.sequence FROM batches b JOIN _keys k USING (stream_id, sequence)").fetchall()}
        finally:
            _unregister(con, "_keys")
        stored: list[bool] = []
        series: list[tuple[str, int, str, int]] = []
        scalars: list[dict[str, npt.NDArray[Any]]] = []
        hists: list[dict[str, npt.NDArray[Any]]] = []
        now = time.time()
        for index, batch in enumerate(group):
            key = (batch.stream_id, batch.sequence)
            if key in seen:
                stored.append(False)
                continue
            seen.add(key)
            stored.append(True)
            try:
                if batch.stream_id not in self._streams:
                    touched.add(batch.stream_id)
                self._ensure_run_and_stream(batch)
                defs = staged.get(batch.stream_id)
                if defs is None:
                    defs = dict(self._stream_defs(batch.stream_id))
                for sid, name, kind in batch.defs:
                    known = defs.get(sid)
                    if known is not None and known != (name, kind):
                        raise BatchError(f"series id {sid} redefined from {known[0]!r} to {name!r}")
                new_defs = {sid: (name, kind) for sid, name, kind in batch.defs if sid not in defs}
                if len(defs) + len(new_defs) > MAX_SERIES_PER_STREAM:
                    raise BatchError(f"stream {batch.stream_id} defines more than {MAX_SERIES_PER_STREAM} series")
                scalar_rows = self._scalar_rows(batch, {**defs, **new_defs})
                hist_rows = self._histogram_rows(batch, {**defs, **new_defs})
            except BatchError as exc:
                raise _Refused(index, exc) from None
            defs.update(new_defs)
            staged[batch.stream_id] = defs
            series.extend((batch.stream_id, sid, name, kind) for sid, (name, kind) in new_defs.items())
            if scalar_rows:
                scalars.append(scalar_rows)
            if hist_rows:
                hists.append(hist_rows)
        if series:
            self._insert(con, "series", "SELECT stream_id, series_id, name, kind", {
                "stream_id": np.array([d[0] for d in series], dtype=object),
                "series_id": np.array([d[1] for d in series], dtype=np.uint32),
                "name": np.array([d[2] for d in series], dtype=object),
                "kind": np.array([d[3] for d in series], dtype=np.int8)})
        if scalars:
            self._insert(con, "scalar_chunks", "SELECT run_id, rank, name, stream_id, sequence, n, step_min, "
                         "step_max, vmin, vmax, last, points, overview", _concat(scalars))
        if hists:
            self._insert(con, "histograms", "SELECT *", _concat(hists))
        fresh = [b for b, ok in zip(group, stored, strict=True) if ok]
        if fresh:
            self._insert(con, "batches", "SELECT *", {
                "stream_id": np.array([b.stream_id for b in fresh], dtype=object),
                "sequence": np.array([b.sequence for b in fresh], dtype=np.uint64),
                "items": np.array([b.items for b in fresh], dtype=np.uint64),
                "received": np.full(len(fresh), now, dtype=np.float64)})
        return stored

    @staticmethod
    def _insert(con: duckdb.DuckDBPyConnection, table: str, select: str, rows: dict[str, npt.NDArray[Any]]) -> None:
        """``INSERT INTO table <select> FROM rows`` (numpy columns)."""
        con.register("_rows", rows)
        try:
            con.execute(f"INSERT INTO {table} {select} FROM _rows")
        finally:
            _unregister(con, "_rows")

    def _checkpoint_if_needed(self, con: duckdb.DuckDBPyConnection) -> None:
        """Checkpoint now if the WAL has grown past twice its threshold (DuckDB skips its own checkpoint while
        another transaction is open): what a checkpoint must hold stays within the memory limit."""
        try:
            size = self.path.with_name(self.path.name + ".wal").stat().st_size
        except OSError:
            return
        if size > 2 * self.checkpoint_threshold:
            con.execute("CHECKPOINT")

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

    def _ensure_run_and_stream(self, batch: DecodedBatch) -> None:
        known = self._streams.get(batch.stream_id)
        if known is None:
            # fetchall, not fetchone: DuckDB refuses register() while a result is unfinished
            rows = self._con.execute("SELECT run_id, rank FROM streams WHERE stream_id = ?",
                                     [batch.stream_id]).fetchall()
            row = rows[0] if rows else None
            if row is None:
                if not self._con.execute("SELECT 1 FROM runs WHERE run_id = ?", [batch.run_id]).fetchall():
                    # a batch can outlive its OpenRun (replayed later): keep the data under a placeholder run
                    self._con.execute("INSERT INTO runs VALUES (?, 'default', ?, '[]', '{}', ?, 'running', 0, '{}')",
                                      [batch.run_id, batch.run_id, time.time()])
                self._con.execute("INSERT INTO streams VALUES (?, ?, ?)",
                                  [batch.stream_id, batch.run_id, batch.rank])
                row = (batch.run_id, batch.rank)
            known = (str(row[0]), int(row[1]))
            self._streams[batch.stream_id] = known
        if known != (batch.run_id, batch.rank):
            raise BatchError(f"stream {batch.stream_id} belongs to run {known[0]} rank {known[1]}")

    def _stream_defs(self, stream_id: str) -> dict[int, tuple[str, int]]:
        defs = self._defs.get(stream_id)
        if defs is None:
            rows = self._con.execute("SELECT series_id, name, kind FROM series WHERE stream_id = ?",
                                     [stream_id]).fetchall()
            defs = {int(r[0]): (str(r[1]), int(r[2])) for r in rows}
            self._defs[stream_id] = defs
        return defs

    @staticmethod
    def _names(ids: np.ndarray, defs: dict[int, tuple[str, int]], kind: int) -> np.ndarray:
        names = np.empty(len(ids), dtype=object)
        for i, sid in enumerate(ids.tolist()):
            d = defs.get(sid)
            if d is None:
                raise BatchError(f"series id {sid} is used before it is defined")
            if d[1] != kind:
                raise BatchError(f"series {d[0]!r} is a {_KIND_NAMES[d[1]]}, not a {_KIND_NAMES[kind]}")
            names[i] = d[0]
        return names

    @staticmethod
    def prepare(batch: DecodedBatch) -> None:
        """Compute the batch's chunk rows ahead (all but their series names), in the caller's thread and outside
        the store's lock: the collector calls it in each push's own worker thread, so that this work (numpy,
        mostly without the GIL) runs for several pushes at once and beside the commit in progress."""
        if "duckdb.chunks" not in batch.prepared:
            batch.prepared["duckdb.chunks"] = _pack_chunks(batch)

    def _scalar_rows(self, batch: DecodedBatch, defs: dict[int, tuple[str, int]]) -> dict[str, npt.NDArray[Any]]:
        """The batch's scalar chunk rows as columns of ``scalar_chunks`` (none if it has no scalars)."""
        if len(batch.group_series) == 0:
            return {}
        names = self._names(batch.group_series, defs, _core.KIND_SCALAR)
        chunks: dict[str, npt.NDArray[Any]] | None = batch.prepared.get("duckdb.chunks")
        if chunks is None:
            chunks = _pack_chunks(batch)
        parts = chunks["parts"]
        if parts is not None:
            names = np.repeat(names, parts)
        g = len(names)
        rows = {
            "run_id": np.full(g, batch.run_id, dtype=object),
            "rank": np.full(g, batch.rank, dtype=np.int32),
            "name": names,
            "stream_id": np.full(g, batch.stream_id, dtype=object),
            "sequence": np.full(g, batch.sequence, dtype=np.uint64),
        }
        rows.update({k: v for k, v in chunks.items() if k != "parts"})
        return rows

    def _histogram_rows(self, batch: DecodedBatch, defs: dict[int, tuple[str, int]]
                        ) -> dict[str, npt.NDArray[Any]]:
        """The batch's histogram rows as columns of ``histograms`` (none if it has no histograms)."""
        h = batch.hist
        m = batch.histogram_count
        if m == 0:
            return {}
        names = self._names(h["series_ids"], defs, _core.KIND_HISTOGRAM)
        ends = np.cumsum(h["bucket_lengths"], dtype=np.int64)
        starts = ends - h["bucket_lengths"]
        idx, cnt = h["bucket_indices"], h["bucket_counts"]
        rows = {
            "run_id": np.full(m, batch.run_id, dtype=object),
            "rank": np.full(m, batch.rank, dtype=np.int32),
            "name": names,
            "stream_id": np.full(m, batch.stream_id, dtype=object),
            "sequence": np.full(m, batch.sequence, dtype=np.uint64),
            "step": h["steps"], "wall_time": h["wall_times"], "k": h["k"], "count": h["count"], "sum": h["sum"],
            "min": h["min"], "max": h["max"], "nan": h["nan"], "pos_inf": h["pos_inf"], "neg_inf": h["neg_inf"],
            "indices": np.array([idx[a:b].tobytes() for a, b in zip(starts, ends, strict=True)], dtype=object),
            "counts": np.array([cnt[a:b].tobytes() for a, b in zip(starts, ends, strict=True)], dtype=object),
        }
        return rows

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
        check_name(entry.name)
        mediatypes.check_info(entry.kind, entry.mime, entry.caption)
        if entry.step < 0:
            raise ValueError(f"step must be >= 0, got {entry.step}")
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
