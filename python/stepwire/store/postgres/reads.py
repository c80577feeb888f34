"""Reads of the PostgreSQL store: the same answers as the DuckDB store's, from the same chunk layout."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import psycopg

from stepwire.histogram import Histogram
from stepwire.store import overview
from stepwire.store.base import (
    ArtifactEntry,
    MediaEntry,
    RunRecord,
    ScalarPoints,
    SeriesRecord,
    SummaryEntry,
    TextEntry,
)
from stepwire.store.duckdb_store import _Loaded, _Pending
from stepwire.store.postgres.connection import Connection

PAGE_POINTS = 1 << 18
"""Points per page of a paged read (about 7 MiB of points, read in one query)."""

KEYS_PER_QUERY = 16384
"""Chunk rows per query of a paged read's index pass (about 0.5 MiB of keys)."""

RUN_COLUMNS = "run_id, project, name, tags, config, created, status, finished, meta"
C = ' COLLATE "C"'  # names sort by their bytes, as DuckDB sorts them, whatever the database's collation


def _nan_if_none(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def run_record(r: Sequence[Any]) -> RunRecord:
    """A ``runs`` row (``RUN_COLUMNS``) as a record."""
    return RunRecord(id=r[0], project=r[1], name=r[2], tags=json.loads(r[3]), config=json.loads(r[4]),
                     created=r[5], status=r[6], finished=r[7], meta=json.loads(r[8] or "{}"))


class Reads:
    """The read side (``Reader``) of ``PostgresStore``: every query bounded, one page at a time."""

    _db: Connection

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one query, all at once (callers bound what they ask for); none from a database that has no
        stepwire schema yet (a reader opened before any collector made it)."""
        try:
            return self._db.run(lambda c: c.execute(sql, list(params)).fetchall(), transaction=False)
        except psycopg.errors.UndefinedTable:
            return []

    def _run(self, run_id: str) -> RunRecord:
        rows = self._query(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = %s", [run_id])
        if not rows:
            raise KeyError(f"no run {run_id!r}")
        return run_record(rows[0])

    def runs(self, project: str | None = None) -> list[RunRecord]:
        """Runs, oldest first."""
        where, params = ("WHERE project = %s", [project]) if project else ("", [])
        rows = self._query(f"SELECT {RUN_COLUMNS} FROM runs {where} ORDER BY created, run_id{C}", params)
        return [run_record(r) for r in rows]

    def series(self, run_id: str) -> list[SeriesRecord]:
        """Series names of a run."""
        rows = self._query(
            f"""SELECT * FROM (
                    SELECT name, 'scalar' AS kind, array_agg(DISTINCT rank ORDER BY rank), sum(n) FROM scalar_chunks
                        WHERE run_id = %s GROUP BY name
                    UNION ALL
                    SELECT name, 'histogram', array_agg(DISTINCT rank ORDER BY rank), count(*) FROM histograms
                        WHERE run_id = %s GROUP BY name) s
                ORDER BY name{C}, kind DESC""", [run_id, run_id])
        return [SeriesRecord(r[0], r[1], [int(x) for x in r[2]], int(r[3])) for r in rows]

    def scalars(self, run_id: str, name: str, ranks: Sequence[int] | None = None, start_step: int | None = None,
                end_step: int | None = None) -> ScalarPoints:
        """Points of one scalar series (with ``start_step <= step < end_step``), all at once."""
        return ScalarPoints.join(list(self.scalar_pages(run_id, name, ranks, start_step, end_step)))

    def scalar_pages(self, run_id: str, name: str, ranks: Sequence[int] | None = None,
                     start_step: int | None = None, end_step: int | None = None,
                     page_points: int = PAGE_POINTS) -> Iterator[ScalarPoints]:
        """Points in (step, rank, logged order) as pieces of about ``page_points``, no step in two pieces (as the
        DuckDB store reads them: chunk rows in step order, a point given out once no unread row can hold its
        step)."""
        base, params = _series_filter(run_id, name, ranks, start_step, end_step)
        pending = _Pending()
        group: list[tuple[Any, ...]] = []
        points = 0
        for key in self._chunk_keys(base, params):
            if group and points + key[3] > page_points:
                pending.add(self._load(base, params, group), start_step, end_step)
                yield from pending.take_before(key[0], page_points)
                group, points = [], 0
            group.append(key)
            points += key[3]
        if group:
            pending.add(self._load(base, params, group), start_step, end_step)
        yield from pending.take_before(None, page_points)

    def _chunk_keys(self, base: str, params: list[Any], extra: str = "") -> Iterator[tuple[Any, ...]]:
        """``(step_min, rank, id, n[, extra columns])`` of the chunk rows ``base`` selects, in that order."""
        after: list[Any] = []
        while True:
            more = " AND (step_min, rank, id) > (%s, %s, %s)" if after else ""
            rows = self._query(f"SELECT step_min, rank, id, n{extra} {base}{more} "
                               f"ORDER BY step_min, rank, id LIMIT {KEYS_PER_QUERY}", [*params, *after])
            yield from rows
            if len(rows) < KEYS_PER_QUERY:
                return
            after = list(rows[-1][:3])

    def _fetch(self, base: str, params: list[Any], keys: list[tuple[Any, ...]], columns: str,
               ordered: bool = True) -> list[tuple[Any, ...]]:
        """``id, columns`` of the rows whose keys run from ``keys[0]`` to ``keys[-1]``."""
        return self._query(f"SELECT id, {columns} {base} AND (step_min, rank, id) >= (%s, %s, %s) "
                           "AND (step_min, rank, id) <= (%s, %s, %s)"
                           + (" ORDER BY step_min, rank, id" if ordered else ""),
                           [*params, *keys[0][:3], *keys[-1][:3]])

    def _load(self, base: str, params: list[Any], keys: list[tuple[Any, ...]]) -> _Loaded:
        rows = self._fetch(base, params, keys, "rank, n, points")
        lengths = np.array([r[2] for r in rows], dtype=np.int64)
        packed = [np.frombuffer(r[3], np.int64).reshape(3, r[2]) for r in rows]

        def cat(i: int) -> np.ndarray:
            return np.concatenate([p[i] for p in packed]) if packed else np.empty(0, np.int64)

        starts = np.cumsum(lengths) - lengths
        position = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(starts, lengths)
        order = np.repeat(np.array([r[0] for r in rows], dtype=np.int64) << 24, lengths) + position
        pts = ScalarPoints(cat(0), cat(1).view(np.float64), cat(2).view(np.float64),
                           np.repeat(np.array([r[1] for r in rows], dtype=np.uint32), lengths))
        return _Loaded(pts, order)

    def scalar_blocks(self, run_id: str, name: str, min_points: int = 0
                      ) -> tuple[int, int, dict[str, np.ndarray]] | None:
        """(rank, points, block extremes in step order) of series ``name`` when one rank logged it, it has at
        least ``min_points`` points, and its steps and wall times ascend; else None (as the DuckDB store)."""
        ((ranks, total),) = self._query("SELECT count(DISTINCT rank), coalesce(sum(n), 0) FROM scalar_chunks "
                                        "WHERE run_id = %s AND name = %s", [run_id, name]) or [(0, 0)]
        if ranks != 1 or total < max(min_points, 1):
            return None
        base, params = _series_filter(run_id, name)
        parts: list[bytes] = []
        rank = 0

        def read(group: list[tuple[Any, ...]]) -> bool:
            stored = {r[0]: r[1] for r in self._fetch(f"{base} AND overview IS NOT NULL", params, group, "overview",
                                                      ordered=False)} if not all(k[4] for k in group) else {}
            short = {r[0]: r[1:] for r in self._fetch(f"{base} AND overview IS NULL", params, group, "n, points",
                                                      ordered=False)} if any(k[4] for k in group) else {}
            for key in group:
                ov = stored.get(key[2])
                if ov is None and key[2] in short:
                    n, blob = short[key[2]]
                    packed = np.frombuffer(blob, np.int64).reshape(3, n)
                    (ov,) = overview.compute(packed[0], packed[1].view(np.float64), packed[2].view(np.float64),
                                             np.zeros(1, np.int64), np.full(1, n, np.int64), min_points=1)
                    if ov is None:
                        return False
                if ov is not None:
                    parts.append(bytes(ov))
            return True

        group: list[tuple[Any, ...]] = []
        size = 0
        for key in self._chunk_keys(base, params, ", overview IS NULL"):
            cost = 24 * key[3] if key[4] else 8 * len(overview.FIELDS) * key[3] // overview.BLOCK + 1
            if group and size + cost > 24 * PAGE_POINTS:
                if not read(group):
                    return None
                group, size = [], 0
            group.append(key)
            size += cost
            rank = key[1]
        if group and not read(group):
            return None
        cols = overview.unpack(parts)
        for x in ("step", "wall"):
            if np.any(cols[f"first_{x}"][1:] < cols[f"last_{x}"][:-1]):
                return None
        return int(rank), int(total), cols

    def histograms(self, run_id: str, name: str, ranks: Sequence[int] | None = None) -> list[Histogram]:
        """Histograms of one series, by (step, rank), read page by page."""
        where, params = _rank_filter(ranks)
        rows: list[tuple[Any, ...]] = []
        after: list[Any] = []
        while True:
            more = " AND (step, rank, wall_time, id) > (%s, %s, %s, %s)" if after else ""
            page = self._query(
                f"""SELECT rank, step, wall_time, k, count, sum, min, max, nan, pos_inf, neg_inf, indices, counts, id
                    FROM histograms WHERE run_id = %s AND name = %s{where}{more}
                    ORDER BY step, rank, wall_time, id LIMIT {KEYS_PER_QUERY}""", [run_id, name, *params, *after])
            rows += page
            if len(page) < KEYS_PER_QUERY:
                break
            after = [page[-1][1], page[-1][0], page[-1][2], page[-1][13]]
        return [Histogram(step=r[1], k=r[3], indices=np.frombuffer(r[11], np.int32),
                          counts=np.frombuffer(r[12], np.int64), count=r[4], sum=r[5], min=_nan_if_none(r[6]),
                          max=_nan_if_none(r[7]), nan=r[8], pos_inf=r[9], neg_inf=r[10], rank=r[0], wall_time=r[2])
                for r in rows]

    def summary(self, run_id: str) -> list[SummaryEntry]:
        """Last (highest step; lowest rank, then latest logged on ties), min, max, count of every scalar series."""
        rows = self._query(
            f"""WITH agg AS (SELECT name, min(vmin) AS lo, max(vmax) AS hi, sum(n) AS count,
                                    max(step_max) AS last_step
                             FROM scalar_chunks WHERE run_id = %s GROUP BY name),
                     lasts AS (SELECT DISTINCT ON (name) name, last FROM scalar_chunks WHERE run_id = %s
                               ORDER BY name, step_max DESC, rank ASC, sequence DESC, id DESC)
                SELECT agg.name, lasts.last, lo, hi, count, last_step FROM agg JOIN lasts USING (name)
                ORDER BY agg.name{C}""", [run_id, run_id])
        return [SummaryEntry(r[0], _nan_if_none(r[1]), _nan_if_none(r[2]), _nan_if_none(r[3]), int(r[4]), int(r[5]))
                for r in rows]

    def texts(self, run_id: str, name: str | None = None) -> list[TextEntry]:
        """Texts of a run (of ``name`` only, if given), by step."""
        where, params = (" AND name = %s", [name]) if name else ("", [])
        rows = self._query(f"SELECT name, step, rank, wall_time, text FROM texts WHERE run_id = %s{where} "
                           "ORDER BY step, rank, wall_time, id", [run_id, *params])
        return [TextEntry(r[0], r[1], r[2], r[3], bytes(r[4]).decode()) for r in rows]

    def artifacts(self, run_id: str) -> list[ArtifactEntry]:
        """Files stored for a run, by name."""
        rows = self._query("SELECT name, size, step, rank, wall_time, sha256 FROM artifacts WHERE run_id = %s "
                           f"ORDER BY name{C}", [run_id])
        return [ArtifactEntry(*r) for r in rows]

    def media(self, run_id: str, name: str | None = None, step: int | None = None,
              kind: str | None = None) -> list[MediaEntry]:
        """Media records of a run (of ``name``, at ``step``, of ``kind``, if given), by (name, step, rank)."""
        where, params = "", []
        for column, value in (("name", name), ("step", step), ("kind", kind)):
            if value is not None:
                where += f" AND {column} = %s"
                params.append(value)
        rows = self._query("SELECT name, step, rank, wall_time, kind, mime, caption, width, height, size, sha256 "
                           f"FROM media WHERE run_id = %s{where} ORDER BY name{C}, step, rank", [run_id, *params])
        return [MediaEntry(*r) for r in rows]


def _rank_filter(ranks: Sequence[int] | None) -> tuple[str, list[Any]]:
    if not ranks:
        return "", []
    return " AND rank = ANY(%s)", [[int(r) for r in ranks]]


def _series_filter(run_id: str, name: str, ranks: Sequence[int] | None = None, start_step: int | None = None,
                   end_step: int | None = None) -> tuple[str, list[Any]]:
    where, params = _rank_filter(ranks)
    if start_step is not None:
        where += " AND step_max >= %s"
        params.append(int(start_step))
    if end_step is not None:
        where += " AND step_min < %s"
        params.append(int(end_step))
    return f"FROM scalar_chunks WHERE run_id = %s AND name = %s{where}", [run_id, name, *params]
