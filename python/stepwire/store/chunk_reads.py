"""The read side shared by the DuckDB and PostgreSQL stores: both keep the same tables (scalars as per-series chunk
rows of packed points), so every read is the same algorithm over two SQL dialects.

``ChunkReads`` holds the algorithms; an engine supplies ``_query`` (rows of one query), its placeholder (``_P``),
the name of its row key (``_ID``), and the few statements that differ (``_SERIES_SQL``, ``_SUMMARY_SQL``).
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

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

PAGE_POINTS = 1 << 18
"""Points per page of a paged read (about 7 MiB of points, read in one query)."""

KEYS_PER_QUERY = 16384
"""Chunk rows per query of a paged read's index pass (about 0.5 MiB of keys); an engine may set its own
(``ChunkReads._keys_per_query``)."""

RUN_COLUMNS = "run_id, project, name, tags, config, created, status, finished, meta"


def nan_if_none(v: float | None) -> float:
    """``v`` as a float, NaN for NULL."""
    return float("nan") if v is None else float(v)


def run_record(r: Sequence[Any]) -> RunRecord:
    """A ``runs`` row (``RUN_COLUMNS``) as a record."""
    return RunRecord(id=r[0], project=r[1], name=r[2], tags=json.loads(r[3]), config=json.loads(r[4]),
                     created=r[5], status=r[6], finished=r[7], meta=json.loads(r[8] or "{}"))


@dataclass
class Loaded:
    """Points of some chunk rows with their logged order (row key << 24 | position in the row)."""

    points: ScalarPoints
    order: npt.NDArray[np.int64]


class Pending:
    """Points of a paged read that were read but not given out yet, sorted by (step, rank, logged order)."""

    def __init__(self) -> None:
        self.points = ScalarPoints.empty()
        self.order = np.empty(0, np.int64)

    def add(self, loaded: Loaded, start_step: int | None, end_step: int | None) -> None:
        """Merge the points of ``loaded`` with ``start_step <= step < end_step`` into those pending."""
        pts, order = loaded.points, loaded.order
        if start_step is not None or end_step is not None:
            keep = np.ones(len(pts), dtype=bool)
            if start_step is not None:
                keep &= pts.step >= start_step
            if end_step is not None:
                keep &= pts.step < end_step
            pts, order = pts[keep], order[keep]
        pts, order = ScalarPoints.join([self.points, pts]), np.concatenate([self.order, order])
        if not _in_order(pts, order):
            idx = np.lexsort((order, pts.rank, pts.step))
            pts, order = pts[idx], order[idx]
        self.points, self.order = pts, order

    def take_before(self, frontier: int | None, page_points: int) -> Iterator[ScalarPoints]:
        """The points at steps before ``frontier`` (all with None), in pieces of ``page_points`` cut between
        steps (a piece is longer only where one step has more points)."""
        pts = self.points
        n = len(pts) if frontier is None else int(np.searchsorted(pts.step, frontier, side="left"))
        self.points, self.order = pts[n:], self.order[n:]
        a = 0
        while a < n:
            b = a + page_points
            if b < n:
                at = pts.step[b]
                cut = int(np.searchsorted(pts.step, at, side="left"))
                b = cut if cut > a else int(np.searchsorted(pts.step, at, side="right"))
            else:
                b = n
            yield pts[a:b]
            a = b


def _in_order(pts: ScalarPoints, order: npt.NDArray[np.int64]) -> bool:
    d = np.diff(pts.step)
    if np.all(d > 0):
        return True
    if np.any(d < 0):
        return False
    r = np.diff(pts.rank.astype(np.int64))
    return bool(np.all((d > 0) | (r > 0) | ((r == 0) & (np.diff(order) > 0))))


class ChunkReads:
    """The ``Reader`` methods of a store over stepwire's tables, for any SQL engine that implements ``_query``.

    Every query is bounded: paged reads ask page by page (``_keys_per_query`` keys, ``PAGE_POINTS`` points)."""

    _P: ClassVar[str] = "?"
    """The engine's query placeholder."""
    _ID: ClassVar[str] = "rowid"
    """The column that orders rows as they were stored (logged order among equal steps)."""
    _ID_RANGE: ClassVar[bool] = False
    """Whether fetches also bound ``_ID`` by the keys' smallest and largest (lets DuckDB skip row groups)."""
    _C: ClassVar[str] = ""
    """Appended to a name in ORDER BY so that names sort by their bytes (a collation, where the engine needs one)."""
    _TEXT_ORDER: ClassVar[str] = "step, rank, wall_time"
    _SERIES_SQL: ClassVar[str]
    """``name, kind, ranks, count`` of every series of the run given (as every parameter), by name."""
    _SUMMARY_SQL: ClassVar[str]
    """``name, last, min, max, count, last step`` of every scalar series of the run given (as every parameter)."""

    @abstractmethod
    def _query(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """Rows of one query, all at once (callers bound what they ask for); none before the schema exists."""

    def _keys_per_query(self) -> int:
        """Rows per query of a paged read."""
        return KEYS_PER_QUERY

    def _media_readable(self) -> bool:
        """Whether the store has a media table (one written before media records may not)."""
        return True

    def _rank_filter(self, ranks: Sequence[int] | None) -> tuple[str, list[Any]]:
        if not ranks:
            return "", []
        return f" AND rank IN ({','.join([self._P] * len(ranks))})", [int(r) for r in ranks]

    # -- runs, series and summaries ----------------------------------------------------------------------
    def _run(self, run_id: str) -> RunRecord:
        rows = self._query(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = {self._P}", [run_id])
        if not rows:
            raise KeyError(f"no run {run_id!r}")
        return run_record(rows[0])

    def runs(self, project: str | None = None) -> list[RunRecord]:
        """Runs, oldest first."""
        where, params = (f"WHERE project = {self._P}", [project]) if project else ("", [])
        rows = self._query(f"SELECT {RUN_COLUMNS} FROM runs {where} ORDER BY created, run_id{self._C}", params)
        return [run_record(r) for r in rows]

    def live_runs(self, run_ids: Collection[str] = ()) -> list[RunRecord]:
        """Runs whose meta holds the status "running" (a superset of those with a rank running: the JSON of
        ``meta["ranks"]`` spells it so), and the runs ``run_ids``, oldest first."""
        ids = sorted(set(run_ids))
        named = f" OR run_id IN ({', '.join([self._P] * len(ids))})" if ids else ""
        rows = self._query(f"SELECT {RUN_COLUMNS} FROM runs WHERE meta LIKE {self._P}{named} "
                           f"ORDER BY created, run_id{self._C}", ['%"running"%', *ids])
        return [run_record(r) for r in rows]

    def series(self, run_id: str) -> list[SeriesRecord]:
        """Series names of a run."""
        rows = self._query(self._SERIES_SQL, [run_id] * self._SERIES_SQL.count(self._P))
        return [SeriesRecord(r[0], r[1], [int(x) for x in r[2]], int(r[3])) for r in rows]

    def summary(self, run_id: str) -> list[SummaryEntry]:
        """Last (highest step; lowest rank, then latest logged on ties), min, max, count of every scalar series."""
        rows = self._query(self._SUMMARY_SQL, [run_id] * self._SUMMARY_SQL.count(self._P))
        return [SummaryEntry(r[0], nan_if_none(r[1]), nan_if_none(r[2]), nan_if_none(r[3]), int(r[4]), int(r[5]))
                for r in rows]

    # -- scalars -------------------------------------------------------------------------------------------
    def scalars(self, run_id: str, name: str, ranks: Sequence[int] | None = None, start_step: int | None = None,
                end_step: int | None = None) -> ScalarPoints:
        """Points of one scalar series (with ``start_step <= step < end_step``), all at once."""
        return ScalarPoints.join(list(self.scalar_pages(run_id, name, ranks, start_step, end_step)))

    def scalar_pages(self, run_id: str, name: str, ranks: Sequence[int] | None = None,
                     start_step: int | None = None, end_step: int | None = None,
                     page_points: int = PAGE_POINTS) -> Iterator[ScalarPoints]:
        """Points in (step, rank, logged order) as pieces of about ``page_points``, no step in two pieces.

        Chunk rows are read in step order, ``page_points`` at a time; a point is given out once no unread row
        can hold its step (every unread row starts at a later step). Memory: a page, plus the points of rows
        read but not given out yet (those of other ranks' rows overlapping the current step: one row per rank
        of at most a chunk's points when steps ascend)."""
        base, params = self._series_filter(run_id, name, ranks, start_step, end_step)
        pending = Pending()
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

    def _series_filter(self, run_id: str, name: str, ranks: Sequence[int] | None = None,
                       start_step: int | None = None, end_step: int | None = None) -> tuple[str, list[Any]]:
        p = self._P
        where, params = self._rank_filter(ranks)
        if start_step is not None:
            where += f" AND step_max >= {p}"
            params.append(int(start_step))
        if end_step is not None:
            where += f" AND step_min < {p}"
            params.append(int(end_step))
        return f"FROM scalar_chunks WHERE run_id = {p} AND name = {p}{where}", [run_id, name, *params]

    def _chunk_keys(self, base: str, params: list[Any], extra: str = "") -> Iterator[tuple[Any, ...]]:
        """``(step_min, rank, id, n[, extra columns])`` of the chunk rows ``base`` selects, in that order,
        ``_keys_per_query()`` rows per query (no blob is read)."""
        p, key, limit = self._P, f"(step_min, rank, {self._ID})", self._keys_per_query()
        after: list[Any] = []
        while True:
            more = f" AND {key} > ({p}, {p}, {p})" if after else ""
            rows = self._query(f"SELECT step_min, rank, {self._ID}, n{extra} {base}{more} "
                               f"ORDER BY step_min, rank, {self._ID} LIMIT {limit}", [*params, *after])
            yield from rows
            if len(rows) < limit:
                return
            after = list(rows[-1][:3])

    def _fetch(self, base: str, params: list[Any], keys: list[tuple[Any, ...]], columns: str, ordered: bool = True
               ) -> list[tuple[Any, ...]]:
        """``id, columns`` of the rows whose keys run from ``keys[0]`` to ``keys[-1]`` (in key order if
        ``ordered``)."""
        p, key = self._P, f"(step_min, rank, {self._ID})"
        bound, bounds = "", []
        if self._ID_RANGE:
            ids = [k[2] for k in keys]
            bound, bounds = f" AND {self._ID} BETWEEN {p} AND {p}", [min(ids), max(ids)]
        return self._query(f"SELECT {self._ID}, {columns} {base}{bound} AND {key} >= ({p}, {p}, {p}) "
                           f"AND {key} <= ({p}, {p}, {p})" + (f" ORDER BY {key[1:-1]}" if ordered else ""),
                           [*params, *bounds, *keys[0][:3], *keys[-1][:3]])

    def _load(self, base: str, params: list[Any], keys: list[tuple[Any, ...]]) -> Loaded:
        rows = self._fetch(base, params, keys, "rank, n, points")
        lengths = np.array([r[2] for r in rows], dtype=np.int64)
        packed = [np.frombuffer(r[3], np.int64).reshape(3, r[2]) for r in rows]

        def cat(i: int) -> npt.NDArray[np.int64]:
            return np.concatenate([q[i] for q in packed]) if packed else np.empty(0, np.int64)

        # logged order across rows and within one: row key, then position in the row
        starts = np.cumsum(lengths) - lengths
        position = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(starts, lengths)
        order = np.repeat(np.array([r[0] for r in rows], dtype=np.int64) << 24, lengths) + position
        pts = ScalarPoints(cat(0), cat(1).view(np.float64), cat(2).view(np.float64),
                           np.repeat(np.array([r[1] for r in rows], dtype=np.uint32), lengths))
        return Loaded(pts, order)

    def scalar_blocks(self, run_id: str, name: str, min_points: int = 0
                      ) -> tuple[int, int, dict[str, npt.NDArray[Any]]] | None:
        """(rank, points, block extremes in step order) of series ``name`` when one rank logged it, it has at
        least ``min_points`` points, and its steps and wall times ascend; else None, having read no points.
        Chunks stored without block extremes (short ones) get them computed here."""
        p = self._P
        ((ranks, total),) = self._query("SELECT count(DISTINCT rank), coalesce(sum(n), 0) FROM scalar_chunks "
                                        f"WHERE run_id = {p} AND name = {p}", [run_id, name]) or [(0, 0)]
        if ranks != 1 or total < max(min_points, 1):
            return None
        base, params = self._series_filter(run_id, name)
        parts: list[bytes] = []
        rank = 0

        def read(group: list[tuple[Any, ...]]) -> bool:
            # block extremes where stored; the points (only) of rows stored without (short ones, or out of order)
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

        # a page at a time, by what it reads: block extremes take ~1/70 of the bytes of the points they stand for
        group: list[tuple[Any, ...]] = []
        size = 0
        for key in self._chunk_keys(base, params, ", overview IS NULL"):
            cost = 24 * key[3] if key[4] else 8 * len(overview.FIELDS) * key[3] // overview.BLOCK + 1  # bytes
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
        for x in ("step", "wall"):  # chunk after chunk, the series must go on ascending
            if np.any(cols[f"first_{x}"][1:] < cols[f"last_{x}"][:-1]):
                return None
        return int(rank), int(total), cols

    # -- histograms, texts, artifacts, media ---------------------------------------------------------------
    def histograms(self, run_id: str, name: str, ranks: Sequence[int] | None = None) -> list[Histogram]:
        """Histograms of one series, by (step, rank), read page by page (the engine holds one page of the
        answer, not the whole series)."""
        p, key, limit = self._P, f"(step, rank, wall_time, {self._ID})", self._keys_per_query()
        where, params = self._rank_filter(ranks)
        rows: list[tuple[Any, ...]] = []
        after: list[Any] = []
        while True:
            more = f" AND {key} > ({p}, {p}, {p}, {p})" if after else ""
            page = self._query(
                f"""SELECT rank, step, wall_time, k, count, sum, min, max, nan, pos_inf, neg_inf, indices, counts,
                           {self._ID}
                    FROM histograms WHERE run_id = {p} AND name = {p}{where}{more}
                    ORDER BY {key[1:-1]} LIMIT {limit}""", [run_id, name, *params, *after])
            rows += page
            if len(page) < limit:
                break
            after = [page[-1][1], page[-1][0], page[-1][2], page[-1][13]]
        return [Histogram(step=r[1], k=r[3], indices=np.frombuffer(r[11], np.int32),
                          counts=np.frombuffer(r[12], np.int64), count=r[4], sum=r[5], min=nan_if_none(r[6]),
                          max=nan_if_none(r[7]), nan=r[8], pos_inf=r[9], neg_inf=r[10], rank=r[0], wall_time=r[2])
                for r in rows]

    def texts(self, run_id: str, name: str | None = None) -> list[TextEntry]:
        """Texts of a run (of ``name`` only, if given), by step."""
        p = self._P
        where, params = (f" AND name = {p}", [name]) if name else ("", [])
        rows = self._query(f"SELECT name, step, rank, wall_time, text FROM texts WHERE run_id = {p}{where} "
                           f"ORDER BY {self._TEXT_ORDER}", [run_id, *params])
        return [TextEntry(r[0], r[1], r[2], r[3], r[4] if isinstance(r[4], str) else bytes(r[4]).decode())
                for r in rows]

    def artifacts(self, run_id: str) -> list[ArtifactEntry]:
        """Files stored for a run, by name."""
        rows = self._query(f"SELECT name, size, step, rank, wall_time, sha256 FROM artifacts WHERE run_id = {self._P} "
                           f"ORDER BY name{self._C}", [run_id])
        return [ArtifactEntry(*r) for r in rows]

    def media(self, run_id: str, name: str | None = None, step: int | None = None,
              kind: str | None = None) -> list[MediaEntry]:
        """Media records of a run (of ``name``, at ``step``, of ``kind``, if given), by (name, step, rank)."""
        if not self._media_readable():
            return []
        where, params = "", []
        for column, value in (("name", name), ("step", step), ("kind", kind)):
            if value is not None:
                where += f" AND {column} = {self._P}"
                params.append(value)
        rows = self._query("SELECT name, step, rank, wall_time, kind, mime, caption, width, height, size, sha256 "
                           f"FROM media WHERE run_id = {self._P}{where} ORDER BY name{self._C}, step, rank",
                           [run_id, *params])
        return [MediaEntry(*r) for r in rows]
