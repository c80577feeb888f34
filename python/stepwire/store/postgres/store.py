"""``PostgresStore``: stepwire's store in a PostgreSQL database shared by any number of collectors.

The layout is the DuckDB store's (one chunk row per series per batch, points packed as bytea), loaded with
``COPY ... FROM STDIN (FORMAT BINARY)``. A batch's (stream, sequence) key is inserted in the transaction that
stores its data, under a unique constraint: whichever collector commits it first stores it, every other copy
is a duplicate. Artifact and media content lives in a blob directory beside the URL (shared by the collectors).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg

from stepwire import mediatypes
from stepwire.artifacts import read_file_chunks
from stepwire.collector.decode import BatchError, DecodedBatch
from stepwire.names import check_artifact_name
from stepwire.store import run_merge
from stepwire.store.base import ArtifactEntry, MediaEntry, RunRecord, Store, TextEntry
from stepwire.store.blobs import BlobDir, Staged
from stepwire.store.postgres import rows
from stepwire.store.postgres.collectors import Collectors
from stepwire.store.postgres.connection import Conn, Connection, ReadPool
from stepwire.store.postgres.reads import RUN_COLUMNS, Reads, run_record

MAX_SERIES_PER_STREAM = 1_000_000
READERS = 3
"""Reader connections a store opens at most (as reads need them), apart from its writer's."""
_LAST_DATA_SQL = """SELECT greatest((SELECT max(b.received) FROM batches b JOIN streams s USING (stream_id)
                                     WHERE s.run_id = %s AND s.rank = %s),
                                    (SELECT max(wall_time) FROM texts WHERE run_id = %s AND rank = %s),
                                    (SELECT created FROM runs WHERE run_id = %s))"""


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().split("\n", 1)[0]


def _blob_lock(c: Conn, sha256: str) -> None:
    """Serialise, across collectors, putting a blob in place with recording it and releasing it."""
    c.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"stepwire blob {sha256}"])


class PostgresStore(Reads, Store):
    """A store in the PostgreSQL database at ``url`` (``postgresql://user@host/db``; credentials from the URL or
    libpq's variables and ``~/.pgpass``), with blobs under ``blob_dir``. ``read_only`` never changes the schema."""

    shared = True

    def __init__(self, url: str, blob_dir: str | os.PathLike[str], read_only: bool = False,
                 connect_timeout: float = 10.0, readers: int = READERS) -> None:
        self.url = url
        self.read_only = read_only
        self.blobs = BlobDir(blob_dir)
        self._db = Connection(url, connect_timeout, migrate_schema=not read_only)  # writes (and their reads)
        self._db.on_reconnect = self._forget
        self._reads = ReadPool(url, connect_timeout, readers)  # reads: never waiting for a commit, nor it for them
        self._defs: dict[str, dict[int, tuple[str, int]]] = {}  # stream -> series id -> (name, kind)
        self._streams: dict[str, tuple[str, int]] = {}  # stream -> (run, rank)
        self.collectors = Collectors()  # this collector's heartbeat
        # connect (and migrate) now: a bad URL fails at start
        (self._reads.run if read_only else lambda fn: self._db.run(fn, transaction=False))(lambda c: None)

    @property
    def location(self) -> str:
        """The URL without its password."""
        return self._db.masked_url

    @property
    def reconnected(self) -> int:
        """Times a broken connection (the writer's or a reader's) was replaced."""
        return self._db.reconnected + self._reads.reconnected

    def _forget(self) -> None:
        self._defs.clear()
        self._streams.clear()

    # -- runs ----------------------------------------------------------------------------------------------
    def open_run(self, run: RunRecord, rank: int = 0, world_size: int = 1) -> RunRecord:
        """Create the run or join it (as ``Store.open_run``), in one transaction with the run's row locked."""
        def tx(c: Conn) -> RunRecord:
            created = c.execute(
                "INSERT INTO runs VALUES (%s, %s, %s, %s, %s, %s, 'running', 0, %s) ON CONFLICT DO NOTHING",
                [run.id, run.project, run.name, json.dumps(run.tags), json.dumps(run.config), run.created,
                 json.dumps(run.meta)]).rowcount == 1
            current = self._locked_run(c, run.id)
            run_merge.join(current, run, rank, world_size, created)
            self._save_run(c, current)
            return self._locked_run(c, run.id)
        return self._db.run(tx)

    @staticmethod
    def _locked_run(c: Conn, run_id: str) -> RunRecord:
        row = c.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = %s FOR UPDATE", [run_id]).fetchone()
        if row is None:
            raise KeyError(f"no run {run_id!r}")
        return run_record(row)

    @staticmethod
    def _save_run(c: Conn, r: RunRecord) -> None:
        c.execute("UPDATE runs SET project = %s, name = %s, tags = %s, config = %s, created = %s, status = %s, "
                  "finished = %s, meta = %s WHERE run_id = %s",
                  [r.project, r.name, json.dumps(r.tags), json.dumps(r.config), r.created, r.status, r.finished,
                   json.dumps(r.meta), r.id])

    def update_run(self, run_id: str, config: dict[str, Any] | None = None, status: str | None = None,
                   finished: float | None = None, replace_config: bool = False,
                   meta: dict[str, Any] | None = None, rank: int = 0) -> None:
        """Merge config/meta and ``rank``'s status into the run (as ``Store.update_run``), its row locked."""
        def tx(c: Conn) -> None:
            current = self._locked_run(c, run_id)
            run_merge.update(current, config, status, finished, replace_config, meta, rank)
            self._save_run(c, current)
        self._db.run(tx)

    def last_data(self, run_id: str, rank: int) -> float:
        """When data of ``rank`` of the run last arrived (the run's start if none)."""
        rows_ = self._query(_LAST_DATA_SQL, [run_id, rank] * 2 + [run_id])
        return float(rows_[0][0]) if rows_ and rows_[0][0] is not None else time.time()

    def heartbeat(self, serving: Collection[tuple[str, int]], ttl_s: float) -> list[tuple[str, int]]:
        """Record that this collector lives and serves the ranks ``serving`` (run id, rank), and mark crashed the
        running ranks of collectors not seen for ``ttl_s``, once, in one transaction (see ``collectors``).
        Returns the (run id, rank) pairs marked."""
        def tx(c: Conn) -> list[tuple[str, int]]:
            marked = []
            for _, run_id, rank in self.collectors.claim_dead(c, ttl_s):
                try:
                    current = self._locked_run(c, run_id)
                except KeyError:
                    continue
                if current.meta.get("ranks", {}).get(str(rank)) != "running":
                    continue
                row = c.execute(_LAST_DATA_SQL, [run_id, rank] * 2 + [run_id]).fetchone()
                finished = float(row[0]) if row and row[0] is not None else time.time()
                run_merge.update(current, None, "crashed", finished, False, None, rank)
                self._save_run(c, current)
                marked.append((run_id, rank))
            # after the claim: a survivor waiting on another's claim holds no row that claim deletes
            self.collectors.beat(c, serving)
            return marked
        return self._db.run(tx)

    def switch_rank(self, run_id: str, rank: int, expected: str, status: str, finished: float | None) -> bool:
        """Set ``rank``'s status to ``status`` (and the run's end to at least ``finished``) only if it is
        ``expected``, the run's row locked: a rank that finished since a collector read it stays finished."""
        def tx(c: Conn) -> bool:
            current = self._locked_run(c, run_id)
            if current.meta.get("ranks", {}).get(str(rank)) != expected:
                return False
            run_merge.update(current, None, status, finished, False, None, rank)
            self._save_run(c, current)
            return True
        return self._db.run(tx)

    # -- batches -------------------------------------------------------------------------------------------
    def append(self, batch: DecodedBatch) -> bool:
        """Store a batch in one transaction; False (nothing stored) if its (stream, sequence) is stored already,
        by this collector or any other. ``BatchError`` for a wrong batch, ``StoreUnavailable`` on failure."""
        (result,) = self.append_many([batch])
        if isinstance(result, BatchError):
            raise result
        return result

    def append_many(self, batches: Sequence[DecodedBatch]) -> list[bool | BatchError]:
        """Store ``batches`` in ONE transaction: True stored, False a duplicate (stored before, or earlier in
        ``batches``), or the ``BatchError`` that refused that batch alone (rolled back to its savepoint). A
        database failure raises ``StoreUnavailable`` with none stored."""
        staged_defs: dict[str, dict[int, tuple[str, int]]] = {}
        staged_streams: dict[str, tuple[str, int]] = {}

        def tx(c: Conn) -> list[bool | BatchError]:
            staged_defs.clear()
            staged_streams.clear()
            results: list[bool | BatchError] = [False] * len(batches)
            chunks: list[tuple[Any, ...]] = []
            hists: list[tuple[Any, ...]] = []
            now = time.time()
            # keys taken in one order by every collector: two groups holding the same batches wait for each
            # other instead of deadlocking
            for i in sorted(range(len(batches)), key=lambda i: (batches[i].stream_id, batches[i].sequence)):
                try:
                    with c.transaction():
                        results[i] = self._stage(c, batches[i], now, chunks, hists, staged_defs, staged_streams)
                except BatchError as exc:
                    results[i] = exc
                except psycopg.DataError as exc:  # a value the columns cannot hold (SQLSTATE class 22): this batch's
                    results[i] = BatchError(f"the store refuses it: {_first_line(exc)}")
            self._copy(c, "scalar_chunks", rows.CHUNK_COLUMNS, rows.CHUNK_TYPES, chunks)
            self._copy(c, "histograms", rows.HIST_COLUMNS, rows.HIST_TYPES, hists)
            return results

        with self._db.lock:
            results = self._db.run(tx)
            self._defs.update(staged_defs)
            self._streams.update(staged_streams)
        return results

    def _stage(self, c: Conn, batch: DecodedBatch, now: float, chunks: list[tuple[Any, ...]],
               hists: list[tuple[Any, ...]], staged_defs: dict[str, dict[int, tuple[str, int]]],
               staged_streams: dict[str, tuple[str, int]]) -> bool:
        """Insert the batch's key, stream and new series (in the caller's savepoint) and add its rows to
        ``chunks``/``hists``; False if the key is stored already."""
        if c.execute("INSERT INTO batches VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                     [batch.stream_id, batch.sequence, batch.items, now]).rowcount != 1:
            return False
        self._ensure_stream(c, batch, staged_streams)
        defs = dict(staged_defs.get(batch.stream_id) or self._stream_defs(c, batch.stream_id))
        new = [(sid, name, kind) for sid, name, kind in batch.defs if sid not in defs]
        for sid, name, kind in batch.defs:
            known = defs.get(sid)
            if known is not None and known != (name, kind):
                raise BatchError(f"series id {sid} redefined from {known[0]!r} to {name!r}")
        if len(defs) + len(new) > MAX_SERIES_PER_STREAM:
            raise BatchError(f"stream {batch.stream_id} defines more than {MAX_SERIES_PER_STREAM} series")
        if new:
            with c.cursor() as cur:
                cur.executemany("INSERT INTO series VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                                [(batch.stream_id, sid, name, kind) for sid, name, kind in new])
            defs.update({sid: (name, kind) for sid, name, kind in new})
        try:
            batch_chunks, batch_hists = rows.chunk_rows(batch, defs), rows.histogram_rows(batch, defs)
        except BatchError:  # another collector may have stored definitions this one has not seen
            defs = self._stream_defs(c, batch.stream_id, cached=False)
            batch_chunks, batch_hists = rows.chunk_rows(batch, defs), rows.histogram_rows(batch, defs)
        chunks += batch_chunks
        hists += batch_hists
        staged_defs[batch.stream_id] = defs
        return True

    def _ensure_stream(self, c: Conn, batch: DecodedBatch, staged: dict[str, tuple[str, int]]) -> None:
        known = staged.get(batch.stream_id) or self._streams.get(batch.stream_id)
        if known is None:
            row = c.execute("SELECT run_id, rank FROM streams WHERE stream_id = %s", [batch.stream_id]).fetchone()
            if row is None:
                # a batch can outlive its OpenRun (replayed later): keep the data under a placeholder run
                c.execute("INSERT INTO runs VALUES (%s, 'default', %s, '[]', '{}', %s, 'running', 0, '{}') "
                          "ON CONFLICT DO NOTHING", [batch.run_id, batch.run_id, time.time()])
                c.execute("INSERT INTO streams VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                          [batch.stream_id, batch.run_id, batch.rank])
                row = c.execute("SELECT run_id, rank FROM streams WHERE stream_id = %s",
                                [batch.stream_id]).fetchone()
                assert row is not None
            known = (str(row[0]), int(row[1]))
        if known != (batch.run_id, batch.rank):
            raise BatchError(f"stream {batch.stream_id} belongs to run {known[0]} rank {known[1]}")
        staged[batch.stream_id] = known

    def _stream_defs(self, c: Conn, stream_id: str, cached: bool = True) -> dict[int, tuple[str, int]]:
        defs = self._defs.get(stream_id) if cached else None
        if defs is None:
            found = c.execute("SELECT series_id, name, kind FROM series WHERE stream_id = %s", [stream_id]).fetchall()
            defs = {int(r[0]): (str(r[1]), int(r[2])) for r in found}
        return defs

    @staticmethod
    def _copy(c: Conn, table: str, columns: Sequence[str], types: Sequence[str], data: list[tuple[Any, ...]]
              ) -> None:
        if not data:
            return
        with c.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(list(types))
            for row in data:
                cp.write_row(row)

    # -- texts, artifacts, media ---------------------------------------------------------------------------
    def add_text(self, run_id: str, entry: TextEntry, dedup: tuple[str, int] | None = None) -> bool:
        """Store one text; False (nothing stored) if ``dedup`` = (stream, sequence) was stored already."""
        def tx(c: Conn) -> bool:
            if c.execute("SELECT 1 FROM runs WHERE run_id = %s", [run_id]).fetchone() is None:
                raise KeyError(f"no run {run_id!r}")
            if dedup is not None and c.execute(
                    "INSERT INTO batches VALUES (%s, %s, 1, %s) ON CONFLICT DO NOTHING",
                    [f"{dedup[0]}/text", dedup[1], time.time()]).rowcount != 1:
                return False
            c.execute("INSERT INTO texts (run_id, rank, name, step, wall_time, text) VALUES (%s, %s, %s, %s, %s, %s)",
                      [run_id, entry.rank, entry.name, entry.step, entry.wall_time, entry.text.encode()])
            return True
        return self._db.run(tx)

    def _record_blob(self, staged: Staged[Any], sql: str, params: list[Any], previous_sql: str,
                     previous_params: list[Any]) -> None:
        """Put ``staged`` in place and record it (``sql``), releasing the blob the record replaces, under the
        blob's advisory lock so that no other collector removes it meanwhile."""
        def tx(c: Conn) -> str | None:
            row = c.execute(previous_sql, previous_params).fetchone()
            _blob_lock(c, staged.sha256)
            self.blobs.place(staged)
            c.execute(sql, params)
            return str(row[0]) if row else None
        try:
            previous = self._db.run(tx)
        finally:
            self.blobs.discard(staged)
        if previous is not None and previous != staged.sha256:
            self._release_blob(previous)

    def _release_blob(self, sha256: str) -> None:
        """Remove a blob that no artifact or media record refers to any more."""
        def tx(c: Conn) -> None:
            _blob_lock(c, sha256)
            if c.execute("SELECT 1 FROM media WHERE sha256 = %s UNION ALL SELECT 1 FROM artifacts WHERE sha256 = %s "
                         "LIMIT 1", [sha256, sha256]).fetchone() is None:
                self.blobs.remove(sha256)
        self._db.run(tx)

    def put_artifact(self, run_id: str, name: str, step: int, rank: int, wall_time: float,
                     chunks: Iterable[bytes]) -> ArtifactEntry:
        """Store a file under ``name`` (replacing one of that name) from its pieces."""
        check_artifact_name(name)
        self._run(run_id)
        staged: Staged[None] = self.blobs.stage(chunks)
        entry = ArtifactEntry(name, staged.size, step, rank, wall_time, staged.sha256)
        self._record_blob(staged, "INSERT INTO artifacts VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, name)"
                          " DO UPDATE SET rank = EXCLUDED.rank, step = EXCLUDED.step, wall_time = EXCLUDED.wall_time,"
                          " size = EXCLUDED.size, sha256 = EXCLUDED.sha256",
                          [run_id, name, rank, step, wall_time, entry.size, entry.sha256],
                          "SELECT sha256 FROM artifacts WHERE run_id = %s AND name = %s FOR UPDATE", [run_id, name])
        return entry

    def delete_artifact(self, run_id: str, name: str) -> None:
        """Remove an artifact (``KeyError`` if there is none)."""
        def tx(c: Conn) -> str | None:
            row = c.execute("DELETE FROM artifacts WHERE run_id = %s AND name = %s RETURNING sha256",
                            [run_id, name]).fetchone()
            return str(row[0]) if row else None
        sha256 = self._db.run(tx)
        if sha256 is None:
            raise KeyError(f"run {run_id} has no artifact {name!r}")
        self._release_blob(sha256)

    def artifact_path(self, run_id: str, name: str) -> Path:
        """The file holding artifact ``name`` of ``run_id`` (``KeyError`` if there is none)."""
        found = self._query("SELECT sha256 FROM artifacts WHERE run_id = %s AND name = %s", [run_id, name])
        if not found:
            raise KeyError(f"run {run_id} has no artifact {name!r}")
        return self.blobs.path(str(found[0][0]))

    def read_artifact(self, run_id: str, name: str) -> Iterator[bytes]:
        """The content of one artifact, in pieces (``KeyError`` if there is none)."""
        return read_file_chunks(self.artifact_path(run_id, name))

    def put_media(self, run_id: str, entry: MediaEntry, chunks: Iterable[bytes]) -> MediaEntry:
        """Store a media record (checked by ``mediatypes.check_content``), replacing one at (rank, name, step)."""
        mediatypes.check_entry(entry)
        self._run(run_id)
        staged = self.blobs.stage(chunks, mediatypes.MAX_MEDIA_BYTES,
                                  lambda p: mediatypes.check_content(entry.kind, entry.mime, p))
        assert staged.checked is not None
        s = dataclasses.replace(entry, size=staged.size, sha256=staged.sha256, width=staged.checked[0],
                                height=staged.checked[1])
        self._record_blob(staged, "INSERT INTO media VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                          "ON CONFLICT (run_id, rank, name, step) DO UPDATE SET wall_time = EXCLUDED.wall_time, "
                          "kind = EXCLUDED.kind, mime = EXCLUDED.mime, caption = EXCLUDED.caption, "
                          "width = EXCLUDED.width, height = EXCLUDED.height, size = EXCLUDED.size, "
                          "sha256 = EXCLUDED.sha256",
                          [run_id, s.rank, s.name, s.step, s.wall_time, s.kind, s.mime, s.caption, s.width, s.height,
                           s.size, s.sha256],
                          "SELECT sha256 FROM media WHERE run_id = %s AND rank = %s AND name = %s AND step = %s "
                          "FOR UPDATE", [run_id, s.rank, s.name, s.step])
        return s

    def media_path(self, run_id: str, sha256: str) -> Path:
        """The file holding a media record's content (``KeyError`` unless the run has one with ``sha256``)."""
        if not self._query("SELECT 1 FROM media WHERE run_id = %s AND sha256 = %s LIMIT 1", [run_id, sha256]):
            raise KeyError(f"run {run_id} has no media record with content {sha256:.80}")
        return self.blobs.path(sha256)

    def read_media(self, run_id: str, sha256: str) -> Iterator[bytes]:
        """The content of a media record of the run, in pieces (``KeyError`` if the run has none with it)."""
        return read_file_chunks(self.media_path(run_id, sha256))

    def close(self) -> None:
        """Close the connections."""
        self._db.close()
        self._reads.close()

