"""The collector process: gRPC ``Ingest`` and ``Query`` services over a store, plus its lifetime rules."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import duckdb
import grpc
import numpy as np

from stepwire import mediatypes
from stepwire.collector.admission import Busy, ByteBudget, max_held_bytes, push_bytes
from stepwire.collector.decode import BatchError, decode_batch
from stepwire.collector.group_commit import GroupCommit
from stepwire.collector.group_commit import enabled as group_commit_enabled
from stepwire.collector.leases import Activity, mark_crashed
from stepwire.dashboard.server import Dashboard
from stepwire.names import check_artifact_name, check_id, check_label, check_name
from stepwire.store import open_store
from stepwire.store.base import ArtifactEntry, MediaEntry, RunRecord, Store, StoreUnavailable, TextEntry
from stepwire.transport import ADDRESS_FILE, GRPC_OPTIONS, TokenCheck, is_loopback
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc, query_pb2, query_pb2_grpc

log = logging.getLogger("stepwire.collector")

SCALAR_SLICE_POINTS = 1 << 17
"""Points per streamed ``ScalarPoints`` message (~3.5 MiB)."""

HISTOGRAM_PIECE_BYTES = 4 << 20
"""Bytes of histograms per streamed ``HistogramList`` message."""


def _run_info(r: RunRecord) -> ingest_pb2.RunInfo:
    return ingest_pb2.RunInfo(run_id=r.id, project=r.project, name=r.name, tags=r.tags,
                              config_json=json.dumps(r.config), created=r.created, status=r.status,
                              finished=r.finished, meta_json=json.dumps(r.meta))


def _artifact_info(a: ArtifactEntry) -> ingest_pb2.ArtifactInfo:
    return ingest_pb2.ArtifactInfo(name=a.name, size=a.size, step=a.step, wall_time=a.wall_time, sha256=a.sha256,
                                   rank=a.rank)


def _media_entry(m: MediaEntry) -> query_pb2.MediaEntry:
    return query_pb2.MediaEntry(name=m.name, rank=m.rank, step=m.step, wall_time=m.wall_time, size=m.size,
                                sha256=m.sha256, info=ingest_pb2.MediaInfo(kind=m.kind, mime=m.mime,
                                                                           caption=m.caption, width=m.width,
                                                                           height=m.height))


def _json_object(raw: str, context: grpc.ServicerContext, what: str = "config_json") -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nested deeper than Python can parse
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{what} is not JSON: {exc!s:.200}")
    if not isinstance(value, dict):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{what} must be a JSON object")
    return value


UPLOAD_STALL_S = 10.0
"""An upload that sends no chunk for this long is cancelled: a stalled client never keeps a worker thread."""
MAX_QUERY_RANKS = 65_536
"""Ranks one query may name."""


class StallWatch:
    """Cancels RPCs whose client stopped sending: one thread checks every watched call twice a second."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self._lock = threading.Lock()
        self._calls: dict[int, tuple[float, grpc.ServicerContext]] = {}
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watch(self, context: grpc.ServicerContext) -> Iterator[Callable[[], None]]:
        """While inside, ``context`` is cancelled once ``stall_s`` pass without a call of the yielded function."""
        key = id(context)

        def alive() -> None:
            with self._lock:
                self._calls[key] = (time.monotonic() + self.stall_s, context)

        alive()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="stepwire-stall-watch", daemon=True)
                self._thread.start()
        try:
            yield alive
        finally:
            with self._lock:
                self._calls.pop(key, None)

    def _loop(self) -> None:
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            with self._lock:
                stalled = [ctx for deadline, ctx in self._calls.values() if deadline < now]
            for ctx in stalled:
                log.warning("cancelling an upload whose client sent nothing for %.0f s", self.stall_s)
                ctx.cancel()  # type: ignore[no-untyped-call]


STATUSES = ("running", "finished", "failed")
"""What a client may report of its rank (the collector itself marks a silent rank "crashed": ``mark_crashed``)."""


def _checked(context: grpc.ServicerContext, check: Callable[..., str], *args: object) -> str:
    """``check(*args)``, or INVALID_ARGUMENT with its message: every identifier is checked where it arrives."""
    try:
        return check(*args)
    except (TypeError, ValueError) as exc:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    raise AssertionError("unreachable")  # context.abort raises


class IngestService(ingest_pb2_grpc.IngestServicer):
    """Receives runs and batches; a batch is acknowledged only once it is committed to the store."""

    def __init__(self, store: Store, activity: Activity, max_uploads: int = 2,
                 group_commit: bool | None = None) -> None:
        self.store = store
        self.activity = activity
        # concurrent pushes stored in one transaction (None: unless $STEPWIRE_GROUP_COMMIT=0)
        self.commits = GroupCommit(store) if (group_commit_enabled() if group_commit is None else group_commit) \
            else None
        self.budget = ByteBudget(max_held_bytes())  # batches held from arrival to commit, in bytes
        self.uploads = threading.BoundedSemaphore(max_uploads)
        self.stalls = StallWatch(UPLOAD_STALL_S)

    def OpenRun(self, request: ingest_pb2.RunInfo, context: grpc.ServicerContext) -> ingest_pb2.RunInfo:
        _checked(context, check_id, "run id", request.run_id)
        if request.client_id:
            _checked(context, check_id, "client id", request.client_id)
        for what, label in [("project", request.project), ("run name", request.name),
                            *(("tag", t) for t in request.tags)]:
            if label or what == "tag":
                _checked(context, check_label, what, label)
        if request.world_size and request.rank >= request.world_size:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"rank {request.rank} is outside world size "
                          f"{request.world_size}")
        self.activity.touch(request.client_id, (request.run_id, request.rank))
        run = RunRecord(id=request.run_id, project=request.project or "default", name=request.name or request.run_id,
                        tags=list(request.tags), config=_json_object(request.config_json, context),
                        created=request.created or time.time(), status=request.status or "running",
                        meta=_json_object(request.meta_json, context, "meta_json"))
        return _run_info(self.store.open_run(run, request.rank, max(request.world_size, 1)))

    def UpdateRun(self, request: ingest_pb2.RunUpdate, context: grpc.ServicerContext) -> ingest_pb2.Empty:
        self.activity.touch()
        _checked(context, check_id, "run id", request.run_id)
        if request.status and request.status not in STATUSES:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"status {request.status!r:.40} is not one of {STATUSES}")
        try:
            self.store.update_run(request.run_id, _json_object(request.config_json, context),
                                  request.status or None, request.finished or None, request.replace_config,
                                  _json_object(request.meta_json, context, "meta_json"), request.rank)
        except KeyError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return ingest_pb2.Empty()

    def Push(self, request: ingest_pb2.Batch, context: grpc.ServicerContext) -> ingest_pb2.Ack:
        self.activity.touch()
        try:
            with self.budget.hold(push_bytes(request)):
                if self.commits is None:
                    batch = decode_batch(request)
                    stored = self.store.append(batch)
                else:  # decoded here, in this worker thread, then stored with the pushes queued meanwhile
                    with self.commits.arriving():
                        batch = decode_batch(request)
                    stored = self.commits.append(batch)
        except BatchError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"rejected batch {request.sequence}: {exc}")
        except Busy as exc:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        self.activity.touch(batch.stream_id, (batch.run_id, batch.rank))
        return ingest_pb2.Ack(sequence=request.sequence, duplicate=not stored, items=batch.items)

    def Heartbeat(self, request: ingest_pb2.Lease, context: grpc.ServicerContext) -> ingest_pb2.Empty:
        _checked(context, check_id, "client id", request.client_id)
        if request.release:
            self.activity.release(request.client_id)
        else:
            self.activity.touch(request.client_id)
        return ingest_pb2.Empty()

    def LogText(self, request: ingest_pb2.TextRecord, context: grpc.ServicerContext) -> ingest_pb2.Empty:
        self.activity.touch()
        _checked(context, check_id, "run id", request.run_id)
        _checked(context, check_name, request.name)
        if request.stream_id:
            _checked(context, check_id, "stream id", request.stream_id)
        if request.step < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"step must be >= 0, got {request.step}")
        try:
            self.store.add_text(request.run_id, TextEntry(request.name, request.step, request.rank,
                                                          request.wall_time, request.text),
                                (request.stream_id, request.sequence) if request.stream_id else None)
        except KeyError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return ingest_pb2.Empty()

    def PutArtifact(self, request_iterator: Iterator[ingest_pb2.ArtifactChunk], context: grpc.ServicerContext
                    ) -> ingest_pb2.ArtifactInfo:
        self.activity.touch()
        if not self.uploads.acquire(blocking=False):  # the other workers stay free for ingest
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many uploads at once: retry later")
        try:
            with self.stalls.watch(context) as alive:
                first = next(request_iterator, None)
                if first is None:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an artifact upload needs at least one chunk")
                _checked(context, check_id, "run id", first.run_id)
                media = first.HasField("media")
                _checked(context, check_name if media else check_artifact_name, first.name)
                if media:
                    if first.step < 0:
                        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"step must be >= 0, got {first.step}")
                    _checked(context, mediatypes.check_info, first.media.kind, first.media.mime,
                             first.media.caption)

                def pieces() -> Iterator[bytes]:
                    chunk: ingest_pb2.ArtifactChunk | None = first
                    while chunk is not None:
                        yield chunk.data
                        if chunk.last:
                            return
                        chunk = next(request_iterator, None)
                        alive()
                    # a client that died or was cancelled mid-way: store nothing
                    raise ValueError(f"the upload of {first.name!r} ended before its last chunk")

                try:
                    if media:
                        m = self.store.put_media(first.run_id, MediaEntry(
                            first.name, first.step, first.rank, first.wall_time, first.media.kind, first.media.mime,
                            first.media.caption, 0, 0, 0, ""), pieces())
                        e = ArtifactEntry(m.name, m.size, m.step, m.rank, m.wall_time, m.sha256)
                    else:
                        e = self.store.put_artifact(first.run_id, first.name, first.step, first.rank,
                                                    first.wall_time, pieces())
                except KeyError as exc:
                    context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
                except ValueError as exc:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        finally:
            self.uploads.release()
        return _artifact_info(e)

    def DeleteArtifact(self, request: ingest_pb2.ArtifactRef, context: grpc.ServicerContext) -> ingest_pb2.Empty:
        self.activity.touch()
        _checked(context, check_id, "run id", request.run_id)
        _checked(context, check_artifact_name, request.name)
        try:
            self.store.delete_artifact(request.run_id, request.name)
        except KeyError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return ingest_pb2.Empty()


class QueryService(query_pb2_grpc.QueryServicer):
    """Answers reads from the store; arrays travel as raw little-endian bytes."""

    def __init__(self, store: Store, activity: Activity) -> None:
        self.store = store
        self.activity = activity

    def ListRuns(self, request: query_pb2.ListRunsRequest, context: grpc.ServicerContext) -> query_pb2.RunList:
        self.activity.touch()
        return query_pb2.RunList(runs=[_run_info(r) for r in self.store.runs(request.project or None)])

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
        return query_pb2.ArtifactList(artifacts=[_artifact_info(a) for a in self.store.artifacts(request.run_id)])

    def GetArtifact(self, request: ingest_pb2.ArtifactRef, context: grpc.ServicerContext
                    ) -> Iterator[ingest_pb2.ArtifactChunk]:
        self.activity.touch()
        try:
            pieces = self.store.read_artifact(request.run_id, request.name)
        except KeyError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        for data in pieces:
            yield ingest_pb2.ArtifactChunk(run_id=request.run_id, name=request.name, data=data)

    def ListMedia(self, request: query_pb2.MediaRequest, context: grpc.ServicerContext) -> query_pb2.MediaList:
        self.activity.touch()
        entries = self.store.media(request.run_id, request.name or None,
                                   request.step if request.has_step else None, request.kind or None)
        return query_pb2.MediaList(media=[_media_entry(m) for m in entries])

    def GetMedia(self, request: query_pb2.MediaRef, context: grpc.ServicerContext
                 ) -> Iterator[ingest_pb2.ArtifactChunk]:
        self.activity.touch()
        try:
            pieces = self.store.read_media(request.run_id, request.sha256)
        except KeyError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        for data in pieces:
            yield ingest_pb2.ArtifactChunk(run_id=request.run_id, data=data)


def _ranks(request: query_pb2.SeriesRequest, context: grpc.ServicerContext) -> list[int] | None:
    """The distinct ranks a query names (None: all), at most ``MAX_QUERY_RANKS``."""
    ranks = sorted(set(request.ranks))
    if len(ranks) > MAX_QUERY_RANKS:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"a query names at most {MAX_QUERY_RANKS} ranks")
    return ranks or None


def _first_line(exc: Exception) -> str:
    return str(exc).split("\n", 1)[0]


class StoreErrors(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Answers UNAVAILABLE where the store failed (``StoreUnavailable``: out of memory, reopening after a failure;
    or any DuckDB error): clients retry that, spooling meanwhile, and never take it for a refusal."""

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None

        def unary(behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
            def run(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    return behavior(request, context)
                except (StoreUnavailable, duckdb.Error) as exc:
                    context.abort(grpc.StatusCode.UNAVAILABLE, _first_line(exc))
            return run

        def streaming(behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]]) -> Callable[..., Any]:
            def run(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                try:
                    yield from behavior(request, context)
                except (StoreUnavailable, duckdb.Error) as exc:
                    context.abort(grpc.StatusCode.UNAVAILABLE, _first_line(exc))
            return run

        codec = {"request_deserializer": handler.request_deserializer,
                 "response_serializer": handler.response_serializer}
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **codec)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **codec)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **codec)
        return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **codec)


class Collector:
    """A running collector: store, gRPC server, and (for the embedded default) its address file. Concurrent
    pushes are stored in one transaction per group (``group_commit``; None: unless $STEPWIRE_GROUP_COMMIT=0)."""

    def __init__(self, directory: str | Path, listen: str = "127.0.0.1:0", workers: int = 8,
                 max_concurrent_rpcs: int = 32, token: str | None = None, tls_cert: str | None = None,
                 tls_key: str | None = None, insecure: bool = False, http: str | None = None,
                 store: str | None = None, blob_dir: str | None = None, group_commit: bool | None = None) -> None:
        if not is_loopback(listen) and not token and not insecure:
            raise PermissionError(f"refusing to listen on {listen} (not loopback) without a token: pass --token "
                                  "(or set $STEPWIRE_TOKEN), or --insecure to accept anyone who can connect")
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("TLS needs both a certificate and its key")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        # DuckDB within $STEPWIRE_DUCKDB_MEMORY_LIMIT (1 GiB); a database it cannot open for memory is retried,
        # answering UNAVAILABLE meanwhile (see DuckDBStore); a postgresql:// ``store`` is shared by collectors
        self.store = open_store(store, self.directory, blob_dir=blob_dir)
        self.activity = Activity()
        # batches held from arrival to commit stay within the ingest budget (collector/admission.py); RPCs beyond
        # max_concurrent_rpcs get RESOURCE_EXHAUSTED, which clients retry (spooling meanwhile)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=GRPC_OPTIONS,
                                  maximum_concurrent_rpcs=max_concurrent_rpcs,
                                  interceptors=[*([TokenCheck(token)] if token else []), StoreErrors()])
        self.ingest = IngestService(self.store, self.activity, group_commit=group_commit)
        ingest_pb2_grpc.add_IngestServicer_to_server(self.ingest, self.server)
        query_pb2_grpc.add_QueryServicer_to_server(QueryService(self.store, self.activity), self.server)
        if tls_cert is not None and tls_key is not None:
            creds = grpc.ssl_server_credentials([(Path(tls_key).read_bytes(), Path(tls_cert).read_bytes())])
            port = self.server.add_secure_port(listen, creds)
        else:
            port = self.server.add_insecure_port(listen)
        if port == 0:
            raise OSError(f"cannot listen on {listen}")
        host = listen.rsplit(":", 1)[0]
        self.address = f"{host}:{port}"
        self.dashboard: Dashboard | None = None
        if http is not None:  # the web dashboard reads the same store, in this process
            self.dashboard = Dashboard(self.store, http, token=token, insecure=insecure, on_request=self.activity.touch,
                                       tls_cert=tls_cert, tls_key=tls_key)  # TLS on both, so the cookie is Secure
        self._stopped = threading.Event()
        self._closed = False

    def start(self, write_address_file: bool = True) -> None:
        """Start serving; with ``write_address_file`` clients of the same directory can find it."""
        self.server.start()
        if self.dashboard is not None:
            self.dashboard.start()
        if write_address_file:
            tmp = self.directory / f".{ADDRESS_FILE}.{os.getpid()}"
            tmp.write_text(json.dumps({"address": self.address, "pid": os.getpid(), "http": self.http_url}))
            os.replace(tmp, self.directory / ADDRESS_FILE)
        log.info("collector for %s listening on %s", self.directory, self.address)

    def serve(self, exit_when_idle: float | None = None) -> None:
        """Serve until stopped, or until idle (no lease, no RPC) for ``exit_when_idle`` seconds."""
        next_check = 0.0
        while not self._stopped.wait(0.25):
            if time.monotonic() >= next_check:  # before an idle exit, so that a crash is recorded first
                next_check = time.monotonic() + 1.0
                try:
                    mark_crashed(self.store, self.activity)
                except Exception:  # the store may be busy or failing: try again next time, never stop serving
                    log.exception("checking for crashed runs failed")
            if exit_when_idle is not None and self.activity.idle_for() >= exit_when_idle:
                log.info("idle for %.1f s: exiting", exit_when_idle)
                break
        self.stop()

    def stop(self) -> None:
        """Stop serving, remove the address file if it is ours, and close the store."""
        if self._closed:
            return
        self._closed = True
        self._stopped.set()
        path = self.directory / ADDRESS_FILE
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError):
            pass
        if self.dashboard is not None:
            self.dashboard.stop()
        self.server.stop(grace=2.0).wait()
        self.store.close()

    @property
    def http_url(self) -> str | None:
        """The dashboard's URL, if it serves one."""
        return self.dashboard.url if self.dashboard is not None else None
