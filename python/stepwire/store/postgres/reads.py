"""Reads of the PostgreSQL store: ``ChunkReads`` (shared with the DuckDB store, over the same chunk layout) in
PostgreSQL's dialect, on reader connections of their own (``ReadPool``): never behind the writer's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from stepwire.store.chunk_reads import RUN_COLUMNS, ChunkReads, run_record
from stepwire.store.postgres.connection import Conn, ReadPool

__all__ = ["KEYS_PER_QUERY", "RUN_COLUMNS", "Reads", "run_record"]

KEYS_PER_QUERY = 16384
"""Chunk rows per query of a paged read's index pass (about 0.5 MiB of keys)."""

C = ' COLLATE "C"'  # names sort by their bytes, as DuckDB sorts them, whatever the database's collation


class Reads(ChunkReads):
    """The read side (``Reader``) of ``PostgresStore``: every query bounded, one page at a time."""

    _reads: ReadPool

    _P = "%s"
    _ID = "id"
    _C = C
    _TEXT_ORDER = "step, rank, wall_time, id"
    _SERIES_SQL = f"""SELECT * FROM (
                SELECT name, 'scalar' AS kind, array_agg(DISTINCT rank ORDER BY rank), sum(n) FROM scalar_chunks
                    WHERE run_id = %s GROUP BY name
                UNION ALL
                SELECT name, 'histogram', array_agg(DISTINCT rank ORDER BY rank), count(*) FROM histograms
                    WHERE run_id = %s GROUP BY name) s
            ORDER BY name{C}, kind DESC"""
    _SUMMARY_SQL = f"""WITH agg AS (SELECT name, min(vmin) AS lo, max(vmax) AS hi, sum(n) AS count,
                                max(step_max) AS last_step
                         FROM scalar_chunks WHERE run_id = %s GROUP BY name),
                 lasts AS (SELECT DISTINCT ON (name) name, last FROM scalar_chunks WHERE run_id = %s
                           ORDER BY name, step_max DESC, rank ASC, sequence DESC, id DESC)
            SELECT agg.name, lasts.last, lo, hi, count, last_step FROM agg JOIN lasts USING (name)
            ORDER BY agg.name{C}"""

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one query, all at once (callers bound what they ask for); none from a database that has no
        stepwire schema yet (a reader opened before any collector made it)."""
        def query(c: Conn) -> list[tuple[Any, ...]]:
            try:
                return c.execute(sql, list(params)).fetchall()
            except psycopg.errors.UndefinedTable:
                return []
        return self._reads.run(query)

    def _keys_per_query(self) -> int:
        return KEYS_PER_QUERY
