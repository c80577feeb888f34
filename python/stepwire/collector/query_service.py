"""The collector's ``Query`` service: reads from the store, arrays as raw little-endian bytes, long answers streamed
in bounded pieces."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator

import grpc
import numpy as np

from stepwire.collector.leases import Activity
from stepwire.store.base import ArtifactEntry, MediaEntry, RunRecord, Store
from stepwire.v1 import ingest_pb2, query_pb2, query_pb2_grpc

SCALAR_SLICE_POINTS = 1 << 17
"""Points per streamed ``ScalarPoints`` message (~3.5 MiB)."""

HISTOGRAM_PIECE_BYTES = 4 << 20
"""Bytes of histograms per streamed ``HistogramList`` message."""

MAX_QUERY_RANKS = 65_536
"""Ranks one query may name."""



def run_info(r: RunRecord) -> ingest_pb2.RunInfo:
    """``r`` as the wire's ``RunInfo``."""
    return ingest_pb2.RunInfo(run_id=r.id, project=r.project, name=r.name, tags=r.tags,
                              config_json=json.dumps(r.config), created=r.created, status=r.status,
                              finished=r.finished, meta_json=json.dumps(r.meta))


def artifact_info(a: ArtifactEntry) -> ingest_pb2.ArtifactInfo:
    """``a`` as the wire's ``ArtifactInfo``."""
    return ingest_pb2.ArtifactInfo(name=a.name, size=a.size, step=a.step, wall_time=a.wall_time, sha256=a.sha256,
                                   rank=a.rank)


def _media_entry(m: MediaEntry) -> query_pb2.MediaEntry:
    return query_pb2.MediaEntry(name=m.name, rank=m.rank, step=m.step, wall_time=m.wall_time, size=m.size,
                                sha256=m.sha256, info=ingest_pb2.MediaInfo(kind=m.kind, mime=m.mime,
                                                                           caption=m.caption, width=m.width,
                                                                           height=m.height))


class QueryService(query_pb2_grpc.QueryServicer):
    """Answers reads from the store; arrays travel as raw little-endian bytes."""

    def __init__(self, store: Store, activity: Activity) -> None:
        self.store = store
        self.activity = activity

    def ListRuns(self, request: query_pb2.ListRunsRequest, context: grpc.ServicerContext) -> query_pb2.RunList:
        self.activity.touch()
        return query_pb2.RunList(runs=[run_info(r) for r in self.store.runs(request.project or None)])

    def ListSeries(self, request: query_pb2.RunRef, context: grpc.ServicerContext) -> query_pb2.SeriesList:
        self.activity.touch()
        kinds = {"scalar": ingest_pb2.SERIES_KIND_SCALAR, "histogram": ingest_pb2.SERIES_KIND_HISTOGRAM}
        return query_pb2.SeriesList(series=[
            query_pb2.SeriesInfo(name=s.name, kind=kinds[s.kind], ranks=s.ranks, items=s.items)
            for s in self.store.series(request.run_id)])

    def Scalars(self, request: query_pb2.SeriesRequest, context: grpc.ServicerContext
                ) -> Iterator[query_pb2.ScalarPoints]:
        """The series in order, read from the store page by page and sent slice by slice: memory stays at a page
        however long the series (gRPC's flow control holds the next slice back until the client reads)."""
        self.activity.touch()
        sent = False
        for pts in self.store.scalar_pages(request.run_id, request.name, _ranks(request, context)):
            for a in range(0, len(pts), SCALAR_SLICE_POINTS):
                b = a + SCALAR_SLICE_POINTS
                yield query_pb2.ScalarPoints(steps=pts.step[a:b].tobytes(), values=pts.value[a:b].tobytes(),
                                             wall_times=pts.wall_time[a:b].tobytes(),
                                             ranks=pts.rank[a:b].tobytes())
                sent = True
            self.activity.touch()
        if not sent:
            yield query_pb2.ScalarPoints()

    def Histograms(self, request: query_pb2.SeriesRequest, context: grpc.ServicerContext
                   ) -> Iterator[query_pb2.HistogramList]:
        """The series in pieces of about ``HISTOGRAM_PIECE_BYTES``: no message nears the gRPC limit however many
        histograms the series holds."""
        self.activity.touch()
        piece = query_pb2.HistogramList()
        for h in self.store.histograms(request.run_id, request.name, _ranks(request, context)):
            piece.histograms.append(query_pb2.HistogramEntry(
                rank=h.rank or 0, step=h.step, wall_time=h.wall_time, k=h.k, count=h.count, sum=h.sum, min=h.min,
                max=h.max, nan=h.nan, pos_inf=h.pos_inf, neg_inf=h.neg_inf,
                indices=np.ascontiguousarray(h.indices).tobytes(), counts=np.ascontiguousarray(h.counts).tobytes()))
            if piece.ByteSize() >= HISTOGRAM_PIECE_BYTES:
                yield piece
                piece = query_pb2.HistogramList()
        yield piece

    def Summarize(self, request: query_pb2.RunRef, context: grpc.ServicerContext) -> query_pb2.Summary:
        self.activity.touch()
        return query_pb2.Summary(entries=[
            query_pb2.SummaryEntry(name=e.name, last=e.last, min=e.min, max=e.max, count=e.count,
                                   last_step=e.last_step)
            for e in self.store.summary(request.run_id)])

    def Texts(self, request: query_pb2.TextRequest, context: grpc.ServicerContext) -> query_pb2.TextList:
        self.activity.touch()
        return query_pb2.TextList(texts=[
            ingest_pb2.TextRecord(run_id=request.run_id, rank=t.rank, name=t.name, step=t.step,
                                  wall_time=t.wall_time, text=t.text)
            for t in self.store.texts(request.run_id, request.name or None)])

    def ListArtifacts(self, request: query_pb2.RunRef, context: grpc.ServicerContext) -> query_pb2.ArtifactList:
        self.activity.touch()
        return query_pb2.ArtifactList(artifacts=[artifact_info(a) for a in self.store.artifacts(request.run_id)])

    def GetArtifact(self, request: ingest_pb2.ArtifactRef, context: grpc.ServicerContext
                    ) -> Iterator[ingest_pb2.ArtifactChunk]:
        self.activity.touch()
        return _chunks(context, lambda: self.store.read_artifact(request.run_id, request.name), request.run_id,
                       request.name)

    def ListMedia(self, request: query_pb2.MediaRequest, context: grpc.ServicerContext) -> query_pb2.MediaList:
        self.activity.touch()
        entries = self.store.media(request.run_id, request.name or None,
                                   request.step if request.has_step else None, request.kind or None)
        return query_pb2.MediaList(media=[_media_entry(m) for m in entries])

    def GetMedia(self, request: query_pb2.MediaRef, context: grpc.ServicerContext
                 ) -> Iterator[ingest_pb2.ArtifactChunk]:
        self.activity.touch()
        return _chunks(context, lambda: self.store.read_media(request.run_id, request.sha256), request.run_id)


def _chunks(context: grpc.ServicerContext, read: Callable[[], Iterable[bytes]], run_id: str, name: str = ""
            ) -> Iterator[ingest_pb2.ArtifactChunk]:
    """The pieces ``read()`` gives, as chunks; NOT_FOUND if it raises ``KeyError``."""
    try:
        pieces = read()
    except KeyError as exc:
        context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
    for data in pieces:
        yield ingest_pb2.ArtifactChunk(run_id=run_id, name=name, data=data)


def _ranks(request: query_pb2.SeriesRequest, context: grpc.ServicerContext) -> list[int] | None:
    """The distinct ranks a query names (None: all), at most ``MAX_QUERY_RANKS``."""
    ranks = sorted(set(request.ranks))
    if len(ranks) > MAX_QUERY_RANKS:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"a query names at most {MAX_QUERY_RANKS} ranks")
    return ranks or None
