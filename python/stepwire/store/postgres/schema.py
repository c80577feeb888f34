"""The PostgreSQL store's schema and its migrations, applied on start under an advisory lock.

``schema_version`` holds the version the database is at; each migration brings it one step further and never
drops data. Collectors starting at once take the same transaction-scoped advisory lock first, so one of them
migrates and the others find the work done.
"""

from __future__ import annotations

import psycopg

from stepwire.store.base import StoreDamaged

LOCK_KEY = 0x73746570_77697265 & 0x7FFF_FFFF_FFFF_FFFF
"""The advisory lock key of schema changes ("stepwire" as a number)."""

MIGRATIONS: tuple[str, ...] = (
    # 1: the layout of the DuckDB store (store/duckdb_store.py), one chunk row per series per batch
    """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY, project TEXT NOT NULL, name TEXT NOT NULL, tags TEXT NOT NULL,
        config TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, status TEXT NOT NULL,
        finished DOUBLE PRECISION NOT NULL, meta TEXT NOT NULL);
    CREATE INDEX runs_by_project ON runs (project, created);
    CREATE TABLE streams (stream_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, rank INTEGER NOT NULL);
    CREATE INDEX streams_by_run ON streams (run_id, rank);
    CREATE TABLE series (
        stream_id TEXT NOT NULL, series_id BIGINT NOT NULL, name TEXT NOT NULL, kind SMALLINT NOT NULL,
        PRIMARY KEY (stream_id, series_id));
    -- exactly-once: a batch's key is inserted in the transaction that stores its data
    CREATE TABLE batches (
        stream_id TEXT NOT NULL, sequence BIGINT NOT NULL, items BIGINT NOT NULL,
        received DOUBLE PRECISION NOT NULL, PRIMARY KEY (stream_id, sequence));
    CREATE TABLE scalar_chunks (
        id BIGSERIAL PRIMARY KEY,  -- logged order of rows (DuckDB's rowid)
        run_id TEXT NOT NULL, rank INTEGER NOT NULL, name TEXT NOT NULL, stream_id TEXT NOT NULL,
        sequence BIGINT NOT NULL, n INTEGER NOT NULL, step_min BIGINT NOT NULL, step_max BIGINT NOT NULL,
        vmin DOUBLE PRECISION, vmax DOUBLE PRECISION, last DOUBLE PRECISION,
        points BYTEA NOT NULL,  -- n int64 steps, then n float64 values, then n float64 wall times
        overview BYTEA);  -- block extremes (store/overview.py) of chunks of >= BLOCK points that ascend
    ALTER TABLE scalar_chunks ALTER COLUMN points SET STORAGE EXTERNAL;  -- packed floats do not compress
    CREATE INDEX scalar_chunks_by_series ON scalar_chunks (run_id, name, step_min, rank, id);
    CREATE TABLE histograms (
        id BIGSERIAL PRIMARY KEY, run_id TEXT NOT NULL, rank INTEGER NOT NULL, name TEXT NOT NULL,
        stream_id TEXT NOT NULL, sequence BIGINT NOT NULL, step BIGINT NOT NULL,
        wall_time DOUBLE PRECISION NOT NULL, k SMALLINT NOT NULL, count BIGINT NOT NULL,
        sum DOUBLE PRECISION NOT NULL, min DOUBLE PRECISION, max DOUBLE PRECISION, nan BIGINT NOT NULL,
        pos_inf BIGINT NOT NULL, neg_inf BIGINT NOT NULL, indices BYTEA NOT NULL, counts BYTEA NOT NULL);
    CREATE INDEX histograms_by_series ON histograms (run_id, name, step, rank, wall_time, id);
    CREATE TABLE texts (
        id BIGSERIAL PRIMARY KEY, run_id TEXT NOT NULL, rank INTEGER NOT NULL, name TEXT NOT NULL,
        step BIGINT NOT NULL, wall_time DOUBLE PRECISION NOT NULL,
        text BYTEA NOT NULL);  -- UTF-8: a text may hold NUL, which PostgreSQL's TEXT cannot
    CREATE INDEX texts_by_run ON texts (run_id, step, rank, wall_time);
    CREATE TABLE artifacts (
        run_id TEXT NOT NULL, name TEXT NOT NULL, rank INTEGER NOT NULL, step BIGINT NOT NULL,
        wall_time DOUBLE PRECISION NOT NULL, size BIGINT NOT NULL, sha256 TEXT NOT NULL,
        PRIMARY KEY (run_id, name));
    CREATE INDEX artifacts_by_sha ON artifacts (sha256);
    CREATE TABLE media (
        run_id TEXT NOT NULL, rank INTEGER NOT NULL, name TEXT NOT NULL, step BIGINT NOT NULL,
        wall_time DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL, mime TEXT NOT NULL, caption TEXT NOT NULL,
        width INTEGER NOT NULL, height INTEGER NOT NULL, size BIGINT NOT NULL, sha256 TEXT NOT NULL,
        PRIMARY KEY (run_id, rank, name, step));
    CREATE INDEX media_by_sha ON media (sha256, run_id);
    """,
    # 2: collectors' heartbeats and the ranks each serves (store/postgres/collectors.py): a dead collector's
    # running ranks are marked crashed by the others
    """
    CREATE TABLE collectors (
        collector_id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL,
        started DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION NOT NULL);  -- the database's clock
    CREATE TABLE collector_ranks (
        run_id TEXT NOT NULL, rank INTEGER NOT NULL, collector_id TEXT NOT NULL, PRIMARY KEY (run_id, rank));
    CREATE INDEX collector_ranks_by_collector ON collector_ranks (collector_id);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """Bring the database to ``SCHEMA_VERSION`` in one transaction under the advisory lock; returns the version
    found. A database at a later version (a newer stepwire wrote it) raises ``StoreDamaged`` unchanged."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        found = int(row[0]) if row and row[0] is not None else 0  # type: ignore[call-overload]
        if found > SCHEMA_VERSION:
            raise StoreDamaged(f"the database is at stepwire schema version {found}; this stepwire knows up to "
                               f"{SCHEMA_VERSION}: upgrade stepwire")
        for version in range(found + 1, SCHEMA_VERSION + 1):
            conn.execute(MIGRATIONS[version - 1])
            conn.execute("INSERT INTO schema_version VALUES (%s)", [version])
    return found
