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

from stepwire import mediatypes
from stepwire.collector.admission import Busy, ByteBudget, max_held_bytes, push_bytes
from stepwire.collector.decode import BatchError, decode_batch
from stepwire.collector.group_commit import GroupCommit
from stepwire.collector.group_commit import enabled as group_commit_enabled
from stepwire.collector.leases import Activity, mark_crashed
from stepwire.collector.query_service import QueryService, artifact_info, run_info
from stepwire.dashboard.server import Dashboard
from stepwire.names import check_artifact_name, check_id, check_label, check_name
from stepwire.segment import Recovered
from stepwire.store import open_store
from stepwire.store.base import ArtifactEntry, MediaEntry, RunRecord, Store, StoreUnavailable, TextEntry
from stepwire.survivor import Survivor
from stepwire.transport import ADDRESS_FILE, GRPC_OPTIONS, TokenCheck, is_loopback
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc, query_pb2_grpc

log = logging.getLogger("stepwire.collector")

WORKERS = 80
"""gRPC worker threads: each push holds one from its arrival until its batch committed (a push waits in the group
commit and for room in the byte budget), so a collector takes as many clients' pushes at once as it has workers
(less uploads and ``FREE_WORKERS``). With 20, 64 clients saw half their pushes refused, spooled and replayed
(docs/ingest.md); memory stays bounded by bytes (collector/admission.py), not by this."""

MAX_CONCURRENT_RPCS = 200
"""RPCs in progress or queued for a worker at once; more are answered RESOURCE_EXHAUSTED, which clients retry."""

MAX_UPLOADS = 2
"""Artifact and media uploads at once; more get RESOURCE_EXHAUSTED."""

FREE_WORKERS = 2
"""Worker threads pushes and uploads never take: heartbeats, run updates and queries are answered whatever the
store does."""


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

    def __init__(self, store: Store, activity: Activity, max_pushes: int = 6, max_uploads: int = 2,
                 group_commit: bool | None = None) -> None:
        self.store = store
        self.activity = activity
        # concurrent pushes stored in one transaction (None: unless $STEPWIRE_GROUP_COMMIT=0)
        self.commits = GroupCommit(store) if (group_commit_enabled() if group_commit is None else group_commit) \
            else None
        self.budget = ByteBudget(max_held_bytes())  # batches held from arrival to commit, in bytes
        self.pushes = threading.BoundedSemaphore(max_pushes)  # the other workers stay free for leases and queries
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
        return run_info(self.store.open_run(run, request.rank, max(request.world_size, 1)))

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
        if not self.pushes.acquire(blocking=False):  # heartbeats must not wait behind a stalled store's pushes
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "every push slot is storing a batch: retry later")
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
        finally:
            self.pushes.release()
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
        return artifact_info(e)

    def DeleteArtifact(self, request: ingest_pb2.ArtifactRef, context: grpc.ServicerContext) -> ingest_pb2.Empty:
        self.activity.touch()
        _checked(context, check_id, "run id", request.run_id)
        _checked(context, check_artifact_name, request.name)
        try:
            self.store.delete_artifact(request.run_id, request.name)
        except KeyError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return ingest_pb2.Empty()


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

    def __init__(self, directory: str | Path, listen: str = "127.0.0.1:0", workers: int = WORKERS,
                 max_concurrent_rpcs: int = MAX_CONCURRENT_RPCS, token: str | None = None, tls_cert: str | None = None,
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
        # pushes and uploads never take the last FREE_WORKERS workers: a store that stalls (a database cut
        # off for 15 s) must not starve the heartbeats that keep its clients' leases, nor queries
        self.ingest = IngestService(self.store, self.activity, max_pushes=max(1, workers - MAX_UPLOADS - FREE_WORKERS),
                                    max_uploads=MAX_UPLOADS, group_commit=group_commit)
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
        # the segments of this directory's dead processes (docs/segment.md): stored, then their ranks crashed
        self.survivor = Survivor(self.directory.resolve(), self.address, self._died, token) \
            if tls_cert is None else None

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
        if self.survivor is not None:
            self.survivor.start()

    def _died(self, rec: Recovered) -> None:
        """A process that logged here died and what it left is stored: its run rank is crashed (if running)."""
        run_id, rank = str(rec.meta.get("run_id", "")), int(rec.meta.get("rank", 0))
        self.activity.release(str(rec.meta.get("stream_id", "")))
        for run in self.store.runs():
            if run.id == run_id and dict(run.meta.get("ranks", {})).get(str(rank)) == "running":
                log.warning("run %s rank %d: its process %d died, marked crashed", run_id, rank, rec.pid)
                self.store.update_run(run_id, status="crashed", finished=self.store.last_data(run_id, rank), rank=rank)

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

    def request_stop(self) -> None:
        """Have ``serve`` stop (a signal handler's way: the handler runs on ``serve``'s thread, maybe inside a
        query of the crash check, and closing the store under it failed that query)."""
        self._stopped.set()

    def stop(self) -> None:
        """Stop serving, remove the address file if it is ours, and close the store."""
        if self._closed:
            return
        self._closed = True
        self._stopped.set()
        if self.survivor is not None:
            self.survivor.stop()
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
