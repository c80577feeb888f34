"""Readers for ``Api``: the Query service of a running collector, or a store file opened read-only."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc
import numpy as np

from stepwire.artifacts import read_file_chunks
from stepwire.histogram import Histogram
from stepwire.store.base import (
    ArtifactEntry,
    MediaEntry,
    RunRecord,
    ScalarPoints,
    SeriesRecord,
    SummaryEntry,
    TextEntry,
    whole_steps,
)
from stepwire.transport import open_channel
from stepwire.v1 import ingest_pb2, query_pb2, query_pb2_grpc

if TYPE_CHECKING:
    from stepwire.store.duckdb_store import DuckDBStore

T = TypeVar("T")
_KINDS = {ingest_pb2.SERIES_KIND_SCALAR: "scalar", ingest_pb2.SERIES_KIND_HISTOGRAM: "histogram"}


class RemoteReader:
    """Reads through the ``Query`` service at ``address``."""

    def __init__(self, address: str, timeout: float = 60.0, token: str | None = None,
                 tls_ca: str | os.PathLike[str] | None = None) -> None:
        self.address = address
        self._channel = open_channel(address, token, tls_ca)
        self._stub = query_pb2_grpc.QueryStub(self._channel)
        self._timeout = timeout

    def runs(self, project: str | None = None) -> list[RunRecord]:
        reply = self._stub.ListRuns(query_pb2.ListRunsRequest(project=project or ""), timeout=self._timeout)
        return [RunRecord(id=r.run_id, project=r.project, name=r.name, tags=list(r.tags),
                          config=json.loads(r.config_json or "{}"), created=r.created, status=r.status,
                          finished=r.finished, meta=json.loads(r.meta_json or "{}")) for r in reply.runs]

    def series(self, run_id: str) -> list[SeriesRecord]:
        reply = self._stub.ListSeries(query_pb2.RunRef(run_id=run_id), timeout=self._timeout)
        return [SeriesRecord(s.name, _KINDS[s.kind], list(s.ranks), s.items) for s in reply.series]

    def scalars(self, run_id: str, name: str, ranks: Sequence[int] | None = None, start_step: int | None = None,
                end_step: int | None = None) -> ScalarPoints:
        return ScalarPoints.join(list(self.scalar_pages(run_id, name, ranks, start_step, end_step)))

    def scalar_pages(self, run_id: str, name: str, ranks: Sequence[int] | None = None,
                     start_step: int | None = None, end_step: int | None = None) -> Iterator[ScalarPoints]:
        """The collector streams the series in order, slice by slice (it reads it page by page); the step range
        is applied here, as the slices arrive (the Query service has no range parameter)."""
        req = query_pb2.SeriesRequest(run_id=run_id, name=name, ranks=list(ranks or []))
        stream = self._stub.Scalars(req, timeout=SCALARS_TIMEOUT_S)
        try:
            yield from whole_steps(_in_range(_slice(p), start_step, end_step) for p in stream)
        finally:
            stream.cancel()  # the caller stopped reading: the collector stops too

    def histograms(self, run_id: str, name: str, ranks: Sequence[int] | None = None) -> list[Histogram]:
        req = query_pb2.SeriesRequest(run_id=run_id, name=name, ranks=list(ranks or []))
        return [Histogram(step=h.step, k=h.k, indices=np.frombuffer(h.indices, np.int32),
                          counts=np.frombuffer(h.counts, np.int64), count=h.count, sum=h.sum, min=h.min,
                          max=h.max, nan=h.nan, pos_inf=h.pos_inf, neg_inf=h.neg_inf, rank=h.rank,
                          wall_time=h.wall_time)
                for piece in self._stub.Histograms(req, timeout=self._timeout) for h in piece.histograms]

    def summary(self, run_id: str) -> list[SummaryEntry]:
        reply = self._stub.Summarize(query_pb2.RunRef(run_id=run_id), timeout=self._timeout)
        return [SummaryEntry(e.name, e.last, e.min, e.max, e.count, e.last_step) for e in reply.entries]

    def texts(self, run_id: str, name: str | None = None) -> list[TextEntry]:
        reply = self._stub.Texts(query_pb2.TextRequest(run_id=run_id, name=name or ""), timeout=self._timeout)
        return [TextEntry(t.name, t.step, t.rank, t.wall_time, t.text) for t in reply.texts]

    def artifacts(self, run_id: str) -> list[ArtifactEntry]:
        reply = self._stub.ListArtifacts(query_pb2.RunRef(run_id=run_id), timeout=self._timeout)
        return [ArtifactEntry(a.name, a.size, a.step, a.rank, a.wall_time, a.sha256) for a in reply.artifacts]

    def read_artifact(self, run_id: str, name: str) -> Iterator[bytes]:
        return _chunks(self._stub.GetArtifact(ingest_pb2.ArtifactRef(run_id=run_id, name=name), timeout=self._timeout))

    def media(self, run_id: str, name: str | None = None, step: int | None = None,
              kind: str | None = None) -> list[MediaEntry]:
        req = query_pb2.MediaRequest(run_id=run_id, name=name or "", has_step=step is not None, step=step or 0,
                                     kind=kind or "")
        reply = self._stub.ListMedia(req, timeout=self._timeout)
        return [MediaEntry(m.name, m.step, m.rank, m.wall_time, m.info.kind, m.info.mime, m.info.caption,
                           m.info.width, m.info.height, m.size, m.sha256) for m in reply.media]

    def read_media(self, run_id: str, sha256: str) -> Iterator[bytes]:
        return _chunks(self._stub.GetMedia(query_pb2.MediaRef(run_id=run_id, sha256=sha256), timeout=self._timeout))


def _chunks(stream: Iterator[ingest_pb2.ArtifactChunk]) -> Iterator[bytes]:
    """The data of a streamed blob; NOT_FOUND as KeyError."""
    try:
        for chunk in stream:
            yield chunk.data
    except grpc.RpcError as exc:
        if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.NOT_FOUND:
            raise KeyError(exc.details()) from None
        raise


SCALARS_TIMEOUT_S = 3600.0
"""Deadline of one streamed scalar read (the collector answers slice by slice, however long the series)."""


def _slice(p: query_pb2.ScalarPoints) -> ScalarPoints:
    return ScalarPoints(np.frombuffer(p.steps, np.int64), np.frombuffer(p.values, np.float64),
                        np.frombuffer(p.wall_times, np.float64), np.frombuffer(p.ranks, np.uint32))


def _in_range(pts: ScalarPoints, start_step: int | None, end_step: int | None) -> ScalarPoints:
    if start_step is None and end_step is None:
        return pts
    a = 0 if start_step is None else int(np.searchsorted(pts.step, start_step, side="left"))
    b = len(pts) if end_step is None else int(np.searchsorted(pts.step, end_step, side="left"))
    return pts[a:b]


STORE_FILE = "stepwire.duckdb"  # the embedded store's file in a data directory (see store.duckdb_store)


class LocalReader:
    """Reads the store file of a directory with no collector running; opens it read-only for each call,
    so that a collector can start meanwhile."""

    def __init__(self, directory: Path) -> None:
        if not (directory / STORE_FILE).exists():
            raise FileNotFoundError(f"no stepwire store in {directory} (expected {directory / STORE_FILE})")
        self.directory = directory

    def _with(self, fn: Callable[[DuckDBStore], T]) -> T:
        from stepwire.store.duckdb_store import DuckDBStore  # duckdb only where a store file is read

        store = DuckDBStore(self.directory, read_only=True)
        try:
            return fn(store)
        finally:
            store.close()

    def runs(self, project: str | None = None) -> list[RunRecord]:
        return self._with(lambda s: s.runs(project))

    def series(self, run_id: str) -> list[SeriesRecord]:
        return self._with(lambda s: s.series(run_id))

    def scalars(self, run_id: str, name: str, ranks: Sequence[int] | None = None, start_step: int | None = None,
                end_step: int | None = None) -> ScalarPoints:
        return self._with(lambda s: s.scalars(run_id, name, ranks, start_step, end_step))

    def scalar_pages(self, run_id: str, name: str, ranks: Sequence[int] | None = None,
                     start_step: int | None = None, end_step: int | None = None) -> Iterator[ScalarPoints]:
        """Page by page, with the store file open until the last page is read (or the iterator closed)."""
        from stepwire.store.duckdb_store import DuckDBStore

        store = DuckDBStore(self.directory, read_only=True)
        try:
            yield from store.scalar_pages(run_id, name, ranks, start_step, end_step)
        finally:
            store.close()

    def histograms(self, run_id: str, name: str, ranks: Sequence[int] | None = None) -> list[Histogram]:
        return self._with(lambda s: s.histograms(run_id, name, ranks))

    def summary(self, run_id: str) -> list[SummaryEntry]:
        return self._with(lambda s: s.summary(run_id))

    def texts(self, run_id: str, name: str | None = None) -> list[TextEntry]:
        return self._with(lambda s: s.texts(run_id, name))

    def artifacts(self, run_id: str) -> list[ArtifactEntry]:
        return self._with(lambda s: s.artifacts(run_id))

    def read_artifact(self, run_id: str, name: str) -> Iterator[bytes]:
        return read_file_chunks(self._with(lambda s: s.artifact_path(run_id, name)))

    def media(self, run_id: str, name: str | None = None, step: int | None = None,
              kind: str | None = None) -> list[MediaEntry]:
        return self._with(lambda s: s.media(run_id, name, step, kind))

    def read_media(self, run_id: str, sha256: str) -> Iterator[bytes]:
        return read_file_chunks(self._with(lambda s: s.media_path(run_id, sha256)))
