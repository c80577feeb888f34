"""Hands sealed batches and run updates to the collector over gRPC, on its own thread; never on the training
thread. What the collector does not acknowledge goes to the spool (``stepwire.spool``) and is replayed in
order once it answers again, or later by ``stepwire sync``."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import grpc
import lz4.block
from google.protobuf.message import Message

from stepwire import _core, spool
from stepwire.spool import Spool
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc

log = logging.getLogger("stepwire.sender")

HEARTBEAT_S = 2.0
RPC_TIMEOUT_S = 30.0
QUICK_RETRY_S = 2.0
"""How long an RPC is retried before its record goes to the spool (and later ones after it)."""
MAX_BACKOFF_S = 5.0
PAYLOAD_TYPES: dict[int, type[Message]] = {
    spool.OPEN_RUN: ingest_pb2.RunInfo, spool.BATCH: ingest_pb2.Batch, spool.UPDATE_RUN: ingest_pb2.RunUpdate,
    spool.TEXT: ingest_pb2.TextRecord, spool.ARTIFACT: ingest_pb2.ArtifactChunk,
    spool.DELETE_ARTIFACT: ingest_pb2.ArtifactRef,
}


def _lz4(raw: bytes) -> bytes:
    return lz4.block.compress(raw, store_size=True) if raw else b""


def encode_batch(b: _core.SealedBatch, run_id: str, rank: int, stream_id: str) -> ingest_pb2.Batch:
    """The wire form of a sealed batch: each column one LZ4 block."""
    msg = ingest_pb2.Batch(run_id=run_id, rank=rank, stream_id=stream_id, sequence=b.sequence,
                           compression=ingest_pb2.COMPRESSION_LZ4_BLOCK)
    for sid, name, kind in b.defs:
        msg.series.add(id=sid, name=name, kind=kind)
    if b.point_count:
        msg.scalars.point_count = b.point_count
        for key, raw in b.scalar_columns().items():
            setattr(msg.scalars, key, _lz4(raw))
    if b.histogram_count:
        msg.histograms.histogram_count = b.histogram_count
        for key, raw in b.histogram_columns().items():
            setattr(msg.histograms, key, _lz4(raw))
    return msg


def batch_items(msg: ingest_pb2.Batch) -> int:
    """Scalar points plus histograms in a batch."""
    return int(msg.scalars.point_count + msg.histograms.histogram_count)


def artifact_chunks(first: ingest_pb2.ArtifactChunk) -> Iterator[ingest_pb2.ArtifactChunk]:
    """The upload of a staged file: ``first`` (metadata, ``source_path``) with its first piece, then the rest, the
    final chunk marked ``last``."""
    from stepwire.artifacts import ARTIFACT_CHUNK_BYTES

    chunk = ingest_pb2.ArtifactChunk()
    chunk.CopyFrom(first)
    chunk.ClearField("source_path")
    with open(first.source_path, "rb") as f:
        chunk.data = f.read(ARTIFACT_CHUNK_BYTES)
        while data := f.read(ARTIFACT_CHUNK_BYTES):
            yield chunk
            chunk = ingest_pb2.ArtifactChunk(data=data)
    chunk.last = True  # the collector stores an upload only once it has seen its end
    yield chunk


def deliver(stub: ingest_pb2_grpc.IngestStub, kind: int, msg: Message, timeout: float = RPC_TIMEOUT_S) -> None:
    """Make the RPC that ``kind`` stands for (raises ``grpc.RpcError``); replaying is idempotent."""
    if kind == spool.OPEN_RUN:
        stub.OpenRun(msg, timeout=timeout)
    elif kind == spool.BATCH:
        stub.Push(msg, timeout=timeout)
    elif kind == spool.UPDATE_RUN:
        stub.UpdateRun(msg, timeout=timeout)
    elif kind == spool.TEXT:
        stub.LogText(msg, timeout=timeout)
    elif kind == spool.ARTIFACT:
        assert isinstance(msg, ingest_pb2.ArtifactChunk)
        stub.PutArtifact(artifact_chunks(msg), timeout=max(timeout, 600.0))
    elif kind == spool.DELETE_ARTIFACT:
        try:
            stub.DeleteArtifact(msg, timeout=timeout)
        except grpc.RpcError as exc:  # already gone (a replay): nothing to do
            if not (isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.NOT_FOUND):
                raise
    else:
        raise ValueError(f"unknown spool record kind {kind}")


def refused(exc: grpc.RpcError) -> bool:
    """The collector understood and refused (retrying cannot help), as opposed to not answering."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    return code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.FAILED_PRECONDITION)


class Sender:
    """Drains ``stream``'s sealed batches and submitted run updates to the collector, in order.

    Each record is tried for up to ``QUICK_RETRY_S``; if the collector does not answer it goes to ``spool``, as
    does every later record while the spool holds anything, and the spool is replayed with backoff and jitter
    once the collector answers. ``offline`` sends everything to the spool.
    """

    def __init__(self, stream: _core.Stream, channel: grpc.Channel | None, run_id: str, rank: int,
                 stream_id: str, spool_: Spool, offline: bool = False) -> None:
        self._stream = stream
        self._stub = ingest_pb2_grpc.IngestStub(channel) if channel is not None else None
        self._run_id, self._rank, self._stream_id = run_id, rank, stream_id
        self.spool = spool_
        spool_.lock()  # a sync running meanwhile leaves this stream's spool alone
        self._offline = offline or channel is None
        if self._offline:
            self.answering = False
        self._cv = threading.Condition()
        self._closing = threading.Event()
        self.sent = 0          # items (points + histograms) pushed at least once
        self.acknowledged = 0  # items the collector has committed
        self.rejected = 0      # items in batches the collector refused as invalid
        self.spooled = 0       # items written to the spool
        self.side_failed = 0   # run updates, texts and artifacts the collector refused
        self.done_sequence = 0  # batches up to here are acknowledged, refused or spooled
        self.backlog = spool_.count()  # records in the spool (only the sender thread touches the spool itself)
        self._side: deque[tuple[int, Message]] = deque()
        self.answering = True  # False since an RPC got no answer, True again after one succeeds
        self._replay_at = 0.0
        self._replay_delay = 0.05
        self._thread = threading.Thread(target=self._loop, name="stepwire-sender", daemon=True)
        self._thread.start()

    def submit(self, kind: int, msg: Message) -> None:
        """Send ``msg`` (a run update, text or artifact) from the sender thread, in order with the batches."""
        with self._cv:
            self._side.append((kind, msg))

    def _loop(self) -> None:
        last_beat = time.monotonic()
        while True:
            self._replay()
            while self._side:
                kind, msg = self._side[0]
                self._send(kind, msg)
                with self._cv:
                    self._side.popleft()
                    self._cv.notify_all()
            batch = self._stream.next_batch(0.05 if self.backlog else 0.2)
            if batch is not None:
                msg = encode_batch(batch, self._run_id, self._rank, self._stream_id)
                with self._cv:
                    self.sent += batch_items(msg)
                self._send(spool.BATCH, msg)
                with self._cv:
                    self.done_sequence = batch.sequence
                    self._cv.notify_all()
            elif self._stream.exhausted() and not self._side:
                self.spool.unlock()
                return
            if self._stub is not None and time.monotonic() - last_beat > HEARTBEAT_S:
                last_beat = time.monotonic()
                try:
                    self._stub.Heartbeat(ingest_pb2.Lease(client_id=self._stream_id), timeout=5.0)
                except grpc.RpcError:
                    pass  # only keeps an idle collector alive; delivery has its own retries

    def _count(self, kind: int, msg: Message, outcome: str) -> None:
        if kind == spool.ARTIFACT and outcome != "spooled":
            assert isinstance(msg, ingest_pb2.ArtifactChunk)
            Path(msg.source_path).unlink(missing_ok=True)  # uploaded (or refused): the staged copy is done with
        with self._cv:
            if kind == spool.BATCH:
                assert isinstance(msg, ingest_pb2.Batch)
                n = batch_items(msg)
                if outcome == "acknowledged":
                    self.acknowledged += n
                elif outcome == "refused":
                    self.rejected += n
                else:
                    self.spooled += n
            elif outcome == "refused":
                self.side_failed += 1

    def _send(self, kind: int, msg: Message) -> None:
        if self._offline or self.backlog:
            self._to_spool(kind, msg)
            return
        deadline = time.monotonic() + QUICK_RETRY_S
        delay = 0.05
        while True:
            outcome = self._try(kind, msg)
            if outcome != "unanswered":
                self._count(kind, msg, outcome)
                return
            if time.monotonic() + delay > deadline or self._closing.is_set():
                log.warning("collector does not answer: spooling to %s (stepwire sync replays it)",
                            self.spool.directory)
                self._to_spool(kind, msg)
                return
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, MAX_BACKOFF_S)

    def _to_spool(self, kind: int, msg: Message) -> None:
        self.spool.append(kind, msg.SerializeToString())
        with self._cv:
            self.backlog += 1
        self._count(kind, msg, "spooled")

    def _try(self, kind: int, msg: Message) -> str:
        assert self._stub is not None
        try:
            deliver(self._stub, kind, msg)
            self.answering = True
            return "acknowledged"
        except grpc.RpcError as exc:
            if refused(exc):
                self.answering = True
                log.error("collector refused %s: %s", spool.KIND_NAMES[kind],
                          exc.details() if isinstance(exc, grpc.Call) else exc)
                return "refused"
            self.answering = False
            return "unanswered"
        except OSError as exc:  # a staged artifact that vanished: report it, never kill the thread
            log.error("%s failed: %s", spool.KIND_NAMES[kind], exc)
            return "refused"

    def _replay(self) -> None:
        """Deliver spooled records in order while the collector answers; back off when it does not."""
        if self._offline or time.monotonic() < self._replay_at:
            return
        while (record := self.spool.peek()) is not None:
            kind, payload = record
            msg = PAYLOAD_TYPES[kind].FromString(payload)
            outcome = self._try(kind, msg)
            if outcome == "unanswered":
                self._replay_at = time.monotonic() + self._replay_delay * (0.5 + random.random())
                self._replay_delay = min(self._replay_delay * 2, MAX_BACKOFF_S)
                return
            self.spool.pop()
            if kind == spool.ARTIFACT:
                assert isinstance(msg, ingest_pb2.ArtifactChunk)
                Path(msg.source_path).unlink(missing_ok=True)
            with self._cv:
                self.backlog -= 1
                if kind == spool.BATCH:
                    assert isinstance(msg, ingest_pb2.Batch)
                    self.spooled -= batch_items(msg)
                    if outcome == "acknowledged":
                        self.acknowledged += batch_items(msg)
                    else:
                        self.rejected += batch_items(msg)
                self._cv.notify_all()
        self._replay_delay = 0.05

    def wait(self, sequence: int, timeout: float, delivered: bool = True) -> bool:
        """Wait until batches up to ``sequence`` and every submitted record are handled (acknowledged, refused
        or spooled) and, with ``delivered``, the spool is empty too; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while not (self.done_sequence >= sequence and not self._side and not (delivered and self.backlog)):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.1))
        return True

    def close(self) -> None:
        """Stop waiting for the collector: from now on what it does not answer at once goes to the spool."""
        self._closing.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to finish (after the stream is closed)."""
        self._thread.join(timeout)
