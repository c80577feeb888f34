"""The DuckDB store's file: its schema, its connection settings (memory limit, checkpoint threshold) and the
check that a file is a stepwire store."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from stepwire.store.base import StoreDamaged

STORE_FILE = "stepwire.duckdb"  # also named in query_client, which must not import duckdb

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

UNCOMPRESSED = ("zstd", "dict_fsst", "fsst", "dictionary")
"""DuckDB's compression methods for strings and blobs, all turned off: points are stored as they are.

ZSTD decompresses 1,024 rows at a time (24 MiB of points per scanning thread, whichever row is read). DICT_FSST
(DuckDB 1.3 on; FSST and dictionary before it) trains its symbol table on every blob at each checkpoint: with it,
checkpointing 7.8 M points (180 MiB of chunk rows) took 31.6 CPU-s, without it 0.2 CPU-s, for a file 1.6 times
as large (docs/ingest.md). Names, run and stream ids lose their dictionary too, a few percent of a chunk row."""


def store_uncompressed(con: duckdb.DuckDBPyConnection) -> None:
    """Turn off ``UNCOMPRESSED`` on ``con``: those this DuckDB knows (one before 1.3 lacks DICT_FSST)."""
    known = []
    for method in UNCOMPRESSED:
        try:
            con.execute(f"SET disabled_compression_methods = {sql_string(method)}")
        except duckdb.Error:
            continue
        known.append(method)
    con.execute(f"SET disabled_compression_methods = {sql_string(','.join(known))}")


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


SCHEMA = """
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
"""The tables of a store (created where missing; the PostgreSQL store keeps the same layout)."""


def sql_string(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _columns(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for table, column in con.execute("SELECT table_name, column_name FROM information_schema.columns "
                                     "WHERE table_catalog = current_database()").fetchall():
        found.setdefault(table, set()).add(column)
    return found


def check_schema(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Raise ``StoreDamaged`` unless every table of the schema that exists has the columns this code reads (a
    file written by something else, or tampered with, is refused at open instead of failing every request)."""
    with duckdb.connect() as scratch:
        scratch.execute(SCHEMA)
        expected = _columns(scratch)
    found = _columns(con)
    for table, columns in expected.items():
        if table in found and not columns <= found[table]:
            raise StoreDamaged(f"{path} is not a stepwire store: its table {table} lacks the columns "
                               f"{sorted(columns - found[table])}")

