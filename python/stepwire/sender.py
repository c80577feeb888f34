"""Hands sealed batches to the collector over gRPC, on its own thread; never on the training thread."""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable

import grpc
import lz4.block

from stepwire import _core
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc

log = logging.getLogger("stepwire.sender")

HEARTBEAT_S = 2.0
PUSH_TIMEOUT_S = 30.0
MAX_BACKOFF_S = 5.0


def _lz4(raw: bytes) -> bytes:
    return lz4.block.compress(raw, store_size=True) if raw else b""


def encode_batch(b: _core.SealedBatch, run_id: str, rank: int, stream_id: str) -> ingest_pb2.Batch:
    """The wire form of a sealed batch: each column one LZ4 block."""
    msg = ingest_pb2.Batch(run_id=run_id, rank=rank, stream_id=stream_id, sequence=b.sequence,
                           compression=ingest_pb2.COMPRESSION_LZ4_BLOCK)
    for sid, name, kind in b.defs:
        msg.series.add(id=sid, name=name, kind=kind)
    if b.point_count:
        sc = b.scalar_columns()
        msg.scalars.point_count = b.point_count
        for key, raw in sc.items():
            setattr(msg.scalars, key, _lz4(raw))
    if b.histogram_count:
        hc = b.histogram_columns()
        msg.histograms.histogram_count = b.histogram_count
        for key, raw in hc.items():
            setattr(msg.histograms, key, _lz4(raw))
    return msg


class Sender:
    """Drains ``stream``'s sealed batches into ``Ingest.Push``, retrying with backoff and jitter."""

    def __init__(self, stream: _core.Stream, channel: grpc.Channel, run_id: str, rank: int, stream_id: str) -> None:
        self._stream = stream
        self._stub = ingest_pb2_grpc.IngestStub(channel)
        self._run_id, self._rank, self._stream_id = run_id, rank, stream_id
        self._cv = threading.Condition()
        self._abandon = threading.Event()
        self.sent = 0          # items (points + histograms) pushed at least once
        self.acknowledged = 0  # items the collector has committed
        self.rejected = 0      # items in batches the collector refused as invalid
        self.undelivered = 0   # items given up on when finishing timed out
        self.done_sequence = 0  # batches up to here are acknowledged, rejected or given up
        self.side_failed = 0    # texts, artifacts and run updates the collector refused or that were given up
        self._side: collections.deque[tuple[str, Callable[[], object]]] = collections.deque()
        self._thread = threading.Thread(target=self._loop, name="stepwire-sender", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        last_beat = time.monotonic()
        while True:
            self._run_side_calls()
            batch = self._stream.next_batch(0.05 if self._side else 0.2)
            if batch is not None:
                self._deliver(batch)
            elif self._stream.exhausted() and not self._side:
                return
            if time.monotonic() - last_beat > HEARTBEAT_S:
                last_beat = time.monotonic()
                try:
                    self._stub.Heartbeat(ingest_pb2.Lease(client_id=self._stream_id), timeout=5.0)
                except grpc.RpcError:
                    pass  # the next push retries; a heartbeat only keeps an idle collector alive

    def _deliver(self, batch: _core.SealedBatch) -> None:
        items = batch.point_count + batch.histogram_count
        msg = encode_batch(batch, self._run_id, self._rank, self._stream_id)
        with self._cv:
            self.sent += items
        outcome = self._push(msg)
        with self._cv:
            if outcome == "acknowledged":
                self.acknowledged += items
            elif outcome == "rejected":
                self.rejected += items
            else:
                self.undelivered += items
            self.done_sequence = batch.sequence
            self._cv.notify_all()

    def _push(self, msg: ingest_pb2.Batch) -> str:
        return self._call(f"batch {msg.sequence}", lambda: self._stub.Push(msg, timeout=PUSH_TIMEOUT_S))

    def _call(self, what: str, fn: Callable[[], object]) -> str:
        """Run an RPC until it succeeds, is refused as invalid, or finishing gives up on it."""
        delay = 0.05
        while True:
            try:
                fn()
                return "acknowledged"
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                    log.error("collector refused %s: %s", what, exc.details() if isinstance(exc, grpc.Call) else exc)
                    return "rejected"
                if self._abandon.is_set():
                    return "undelivered"
                if delay == 0.05:
                    log.warning("%s failed (%s); retrying", what, code)
                self._abandon.wait(delay * (0.5 + random.random()))
                delay = min(delay * 2, MAX_BACKOFF_S)
            except Exception as exc:  # e.g. an artifact file that vanished: report it, never kill the thread
                log.error("%s failed: %s", what, exc)
                return "rejected"

    def submit(self, what: str, fn: Callable[[], object]) -> None:
        """Run RPC ``fn`` on the sender thread (retried like a batch); ``what`` names it in messages."""
        with self._cv:
            self._side.append((what, fn))

    def _run_side_calls(self) -> None:
        while self._side:
            what, fn = self._side[0]
            outcome = self._call(what, fn)
            with self._cv:
                self._side.popleft()
                if outcome != "acknowledged":
                    self.side_failed += 1
                self._cv.notify_all()

    def wait(self, sequence: int, timeout: float) -> bool:
        """Wait until batches up to ``sequence`` and every submitted call are done with; False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: self.done_sequence >= sequence and not self._side, timeout=timeout)

    def abandon(self) -> None:
        """Stop retrying: what is not acknowledged yet is counted as undelivered."""
        self._abandon.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to finish (after the stream is closed)."""
        self._thread.join(timeout)
