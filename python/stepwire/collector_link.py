"""The sender's link to the collector: whether it answers, delivery with quick retries while it does, probes with
backoff and jitter once it stops, and the heartbeat that keeps an idle collector's lease alive.

A collector that pushes back (RESOURCE_EXHAUSTED: too many RPCs at once, or no room to queue a batch) answers: it
is busy, not gone. What it pushes back on for ``QUICK_RETRY_S`` is spooled as before, but the link stays
answering: the spool is replayed as soon as the next attempt is due (``busy_backoff``, at most ``MAX_BUSY_S``
apart), not after probes backing off to ``MAX_BACKOFF_S``, and ``finish`` waits for it instead of leaving it to
``stepwire sync``. At 64 clients pushing into one collector, that was 60% of the points (docs/ingest.md)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from google.protobuf.message import Message

from stepwire import spool
from stepwire.ingest_rpc import deliver, refused
from stepwire.retry import Backoff
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc

log = logging.getLogger("stepwire.sender")

HEARTBEAT_S = 2.0
"""How often an idle link to a collector that answers sends a Heartbeat."""
QUICK_RETRY_S = 2.0
"""How long an RPC to a collector that was answering is retried before its record goes to the spool (and later
ones after it)."""
PROBE_TIMEOUT_S = 1.0
"""How long a probe (a Heartbeat) of a collector that stopped answering may take."""
MAX_BACKOFF_S = 5.0
"""The longest pause between probes of a collector that does not answer, or retries of a spool that cannot
be written."""
MAX_BUSY_S = 1.0
"""The longest pause between attempts at a collector that pushed back (RESOURCE_EXHAUSTED): it answers, and its
load can drop at any moment."""


def pushed_back(exc: grpc.RpcError) -> bool:
    """The collector answered RESOURCE_EXHAUSTED: it is there, but busy (retry later, with backoff)."""
    return isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


class CollectorLink:
    """Delivery to the collector behind ``stub`` for the stream ``stream_id``, as seen from the sender thread.

    ``answering`` is False since an RPC got no answer (or, given so, since init found no collector) and True again
    once one is answered; meanwhile ``answers`` probes the collector at most on the backoff schedule. ``closing``
    set: a record is tried once, not retried. ``spool_dir`` only names where unanswered records go, in a warning.
    ``relocate``, given for a directory's local collector, is called when a probe finds it silent: it returns a
    channel to the collector serving that directory now (started again if none runs), or None.
    """

    def __init__(self, stub: ingest_pb2_grpc.IngestStub | None, stream_id: str, answering: bool,
                 closing: threading.Event, spool_dir: Path,
                 relocate: Callable[[], grpc.Channel | None] | None = None) -> None:
        self.stub = stub
        self.relocate = relocate
        self.answering = answering
        """False since an RPC got no answer (or init found no collector), True again once one is answered."""
        self._stream_id = stream_id
        self._closing = closing
        self._spool_dir = spool_dir
        self._probes = Backoff(cap=MAX_BACKOFF_S)  # probes of a collector that does not answer
        self.busy_backoff = Backoff(cap=MAX_BUSY_S)
        """Attempts at a collector that pushed back: the next one is due when ``ready()``."""
        self.pushed_back = 0
        """Attempts the collector answered RESOURCE_EXHAUSTED (for tests and benchmarks)."""
        self._warned_busy = False
        if not answering:
            self._probes.failed()  # it was just found unreachable: the first probe waits a delay
        self._last_beat = time.monotonic()

    def failed(self) -> None:
        """Note that the collector did not answer: the next probe waits for the backoff."""
        self._probes.failed()

    def heartbeat(self) -> None:
        """Keep an idle collector's lease alive: a Heartbeat every ``HEARTBEAT_S`` while it answers (a failure
        is ignored: delivery has its own retries)."""
        if self.stub is not None and self.answering and time.monotonic() - self._last_beat > HEARTBEAT_S:
            self._last_beat = time.monotonic()
            try:
                self.stub.Heartbeat(ingest_pb2.Lease(client_id=self._stream_id), timeout=5.0)
            except grpc.RpcError:
                pass

    def answers(self) -> bool:
        """Whether to send to the collector now: it answered the last RPC (and, if it pushed back, the next
        attempt is due), or a probe (made at most on the backoff schedule) finds it answering."""
        if self.stub is None:
            return False
        if self.answering:
            return self.busy_backoff.ready()
        if not self._probes.ready():
            return False
        answered = self._probe()
        if not answered and self.relocate is not None:
            channel = self.relocate()
            if channel is not None:
                self.stub = ingest_pb2_grpc.IngestStub(channel)
                answered = self._probe()
        if not answered:
            self._probes.failed()
            return False
        log.info("the collector answers again")
        self.answering = True
        self._probes.succeeded()
        return True

    def _probe(self) -> bool:
        assert self.stub is not None
        try:
            self.stub.Heartbeat(ingest_pb2.Lease(client_id=self._stream_id), timeout=PROBE_TIMEOUT_S)
            return True
        except grpc.RpcError as exc:
            return refused(exc) or pushed_back(exc)

    def deliver_now(self, kind: int, msg: Message) -> str:
        """Try ``msg`` for up to ``QUICK_RETRY_S`` (once when closing): "acknowledged", "refused", "busy" (the
        collector pushed back at the last attempt) or "unanswered"."""
        backoff = Backoff(cap=MAX_BACKOFF_S, deadline=QUICK_RETRY_S)
        while True:
            outcome = self.attempt(kind, msg)
            if outcome in ("acknowledged", "refused"):
                return outcome
            if self._closing.is_set():
                retry = False
            elif outcome == "busy":  # due again after busy_backoff (which attempt advanced), within the deadline
                retry = self.busy_backoff.wait_ready(backoff.remaining(), self._closing)
            else:
                retry = backoff.wait(self._closing)
            if retry:
                continue
            if outcome == "unanswered":
                self._probes.failed()
                log.warning("collector does not answer: spooling to %s (replayed when it answers again, or by "
                            "stepwire sync)", self._spool_dir)
            elif not self._warned_busy:
                self._warned_busy = True
                log.warning("the collector is busy (it pushed back for %g s): spooling to %s, replayed as soon as "
                            "it takes more", QUICK_RETRY_S, self._spool_dir)
            return outcome

    def attempt(self, kind: int, msg: Message) -> str:
        """One delivery of ``msg``: "acknowledged", "refused" (also a staged file that vanished), "busy" (the
        collector pushed back: the next attempt is due after ``busy_backoff``) or "unanswered"."""
        assert self.stub is not None
        try:
            deliver(self.stub, kind, msg)
            self.answering = True
            self.busy_backoff.succeeded()
            return "acknowledged"
        except grpc.RpcError as exc:
            if refused(exc):
                self.answering = True
                self.busy_backoff.succeeded()
                log.error("collector refused %s: %s", spool.KIND_NAMES[kind],
                          exc.details() if isinstance(exc, grpc.Call) else exc)
                return "refused"
            if pushed_back(exc):
                self.answering = True
                self.pushed_back += 1
                self.busy_backoff.failed()
                return "busy"
            self.answering = False
            return "unanswered"
        except OSError as exc:  # a staged artifact that vanished: report it, never kill the thread
            log.error("%s failed: %s", spool.KIND_NAMES[kind], exc)
            return "refused"
