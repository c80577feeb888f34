"""Writes of the DuckDB store: batches as chunk rows (several batches in one transaction), runs and their
status, each stream's series definitions."""

from __future__ import annotations

import json
import threading
import time
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import duckdb
import numpy as np
import numpy.typing as npt

from stepwire import _core
from stepwire.collector.decode import BatchError, DecodedBatch
from stepwire.store import overview, run_merge
from stepwire.store.base import RunRecord
from stepwire.store.sequence_set import SequenceSet

MAX_SERIES_PER_STREAM = 1_000_000

MAX_CHUNK_POINTS = 1024
"""Points per stored chunk row at most (a longer run of one series in a batch is stored as several rows). Each
row's blob then stays at 24 KiB: DuckDB keeps blobs of more than about 50 KiB in buffers of their own, which
its checkpoint must hold all at once, so that a store of a few long series outgrew any memory limit."""

_VALUES_ROWS = 64
"""Rows inserted as parameters of the statement at most; more are registered as a view of their numpy columns."""

_KIND_NAMES = {_core.KIND_SCALAR: "scalar", _core.KIND_HISTOGRAM: "histogram"}


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


def _key_columns(batch: DecodedBatch, names: npt.NDArray[Any]) -> dict[str, npt.NDArray[Any]]:
    """The columns that every data row of ``batch`` begins with (run, rank, series name, stream, sequence)."""
    g = len(names)
    return {
        "run_id": np.full(g, batch.run_id, dtype=object),
        "rank": np.full(g, batch.rank, dtype=np.int32),
        "name": names,
        "stream_id": np.full(g, batch.stream_id, dtype=object),
        "sequence": np.full(g, batch.sequence, dtype=np.uint64),
    }


class DuckDBWrites:
    """The write side of ``DuckDBStore`` (which supplies the connection, its lock and its failure handling)."""

    path: Path
    checkpoint_threshold: int
    _lock: threading.RLock
    _con: duckdb.DuckDBPyConnection
    _defs: dict[str, dict[int, tuple[str, int]]]  # stream -> series id -> (name, kind)
    _streams: dict[str, tuple[str, int]]  # stream -> (run, rank)
    _sequences: dict[str, SequenceSet]  # stream -> the batch sequences stored (what is in memory of it)

    @abstractmethod
    def _live(self) -> duckdb.DuckDBPyConnection:
        """The connection, reopened if it failed (call with the lock held)."""

    @abstractmethod
    def _fail(self, exc: duckdb.Error) -> NoReturn:
        """Raise ``exc`` as the store's failure (call with the lock held)."""

    @abstractmethod
    def _run(self, run_id: str) -> RunRecord:
        """The run ``run_id`` (``KeyError`` if there is none)."""

    @abstractmethod
    def _query(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """Rows of one query."""

    def open_run(self, run: RunRecord, rank: int = 0, world_size: int = 1) -> RunRecord:
        """Create the run or join it (as ``Store.open_run``) in one transaction: one commit, not one per
        statement (a commit is most of an OpenRun's cost, and every rank of a job sends one)."""
        with self._lock:
            con = self._live()
            try:
                con.execute("BEGIN TRANSACTION")
                try:
                    row = con.execute("SELECT run_id FROM runs WHERE run_id = ?", [run.id]).fetchone()
                    if row is None:
                        con.execute(
                            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [run.id, run.project, run.name, json.dumps(run.tags), json.dumps(run.config),
                             run.created, "running", 0.0, json.dumps(run.meta)])
                    current = self._run(run.id)
                    run_merge.join(current, run, rank, world_size, created=row is None)
                    self._save_run(current)
                    opened = self._run(run.id)
                    con.execute("COMMIT")
                except BaseException:
                    _rollback(con)
                    raise
            except duckdb.Error as exc:
                self._fail(exc)
            return opened

    def _save_run(self, r: RunRecord) -> None:
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
            run_merge.update(current, config, status, finished, replace_config, meta, rank)
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
            self._sequences.clear()  # whatever a failed COMMIT left, the database says it: read it again
            raise
        self._defs.update(staged)
        for batch, ok in zip(group, stored, strict=True):
            if ok:
                self._sequences[batch.stream_id].add(batch.sequence)
        return stored

    def _load_sequences(self, con: duckdb.DuckDBPyConnection, streams: set[str]) -> None:
        """Read the stored sequences of ``streams`` (none in memory yet) as ranges, in one query: the first
        transaction of a stream since the store opened asks the database, the next ones ask ``_sequences``."""
        if not streams:
            return
        ordered = sorted(streams)
        for stream in ordered:
            self._sequences[stream] = SequenceSet()
        rows = con.execute(
            "SELECT stream_id, min(sequence), max(sequence) FROM (SELECT stream_id, sequence, CAST(sequence AS "
            "HUGEINT) - row_number() OVER (PARTITION BY stream_id ORDER BY sequence) AS island FROM batches "
            f"WHERE stream_id IN ({', '.join(['?'] * len(ordered))})) GROUP BY stream_id, island",
            ordered).fetchall()
        ranges: dict[str, list[tuple[int, int]]] = {}
        for stream, lo, hi in rows:
            ranges.setdefault(str(stream), []).append((int(lo), int(hi)))
        for stream, found in ranges.items():
            self._sequences[stream] = SequenceSet(found)

    def _stage_group(self, con: duckdb.DuckDBPyConnection, group: list[DecodedBatch],
                     staged: dict[str, dict[int, tuple[str, int]]], touched: set[str]) -> list[bool]:
        # statements with parameters, not registered numpy views: a view costs about 2 ms CPU to register and
        # scan, twice per transaction (docs/ingest.md)
        self._load_sequences(con, {b.stream_id for b in group} - self._sequences.keys())
        seen = {(b.stream_id, b.sequence) for b in group if b.sequence in self._sequences[b.stream_id]}
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
        """``INSERT INTO table <select> FROM rows`` (numpy columns). Up to ``_VALUES_ROWS`` rows go as parameters
        of one statement: registering them as a view costs more (about 2 ms CPU) than the insert itself."""
        n = len(next(iter(rows.values())))
        if n <= _VALUES_ROWS:
            columns = [c.tolist() for c in rows.values()]
            con.execute(f"INSERT INTO {table} {select} FROM (VALUES "
                        + ", ".join(["(" + ", ".join(["?"] * len(rows)) + ")"] * n)
                        + f") AS _rows({', '.join(rows)})", [v for row in zip(*columns, strict=True) for v in row])
            return
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

    def _scalar_rows(self, batch: DecodedBatch, defs: dict[int, tuple[str, int]]) -> dict[str, npt.NDArray[Any]]:
        """The batch's scalar chunk rows as columns of ``scalar_chunks`` (none if it has no scalars)."""
        if len(batch.group_series) == 0:
            return {}
        names = self._names(batch.group_series, defs, _core.KIND_SCALAR)
        chunks = _pack_chunks(batch)
        parts = chunks["parts"]
        if parts is not None:
            names = np.repeat(names, parts)
        rows = _key_columns(batch, names)
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
            **_key_columns(batch, names),
            "step": h["steps"], "wall_time": h["wall_times"], "k": h["k"], "count": h["count"], "sum": h["sum"],
            "min": h["min"], "max": h["max"], "nan": h["nan"], "pos_inf": h["pos_inf"], "neg_inf": h["neg_inf"],
            "indices": np.array([idx[a:b].tobytes() for a, b in zip(starts, ends, strict=True)], dtype=object),
            "counts": np.array([cnt[a:b].tobytes() for a, b in zip(starts, ends, strict=True)], dtype=object),
        }
        return rows
