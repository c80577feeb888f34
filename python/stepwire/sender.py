"""Hands sealed batches and run updates to the collector over gRPC, on its own thread; never on the training
thread. What the collector does not acknowledge goes to the spool (``stepwire.spool``) and is replayed in
order once it answers again, or later by ``stepwire sync``. What can be neither delivered nor spooled (the
collector does not answer and the disk is full) is counted as lost, never dropped silently.

The wire form and the RPCs are ``stepwire.ingest_rpc``; retries and probes of the collector are
``stepwire.collector_link``."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections import deque
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError, Message

from stepwire import _core, spool
from stepwire.collector_link import MAX_BACKOFF_S, CollectorLink
from stepwire.ingest_rpc import PAYLOAD_TYPES, batch_items
from stepwire.ingest_rpc import encode_batch as encode_batch  # also imported from here (tests)
from stepwire.retry import Backoff
from stepwire.run_connect import LocalRestart
from stepwire.spool import Spool
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc

log = logging.getLogger("stepwire.sender")

SIDE_QUEUE_BYTES = 8 << 20
"""Run updates, texts and artifact references waiting for the sender (artifact files are staged on disk)."""
SIDE_WAIT_S = 1.0
"""How long ``submit`` waits for room in a full side queue before it counts the record as lost."""


class Sender:
    """Drains ``stream``'s sealed batches and submitted run updates to the collector, in order.

    While the collector answers, each record is tried for up to ``QUICK_RETRY_S`` (``CollectorLink``); if it does
    not answer, or pushes back all that time (busy), the record goes to ``spool``, as does every later record
    while the spool holds anything or the collector does not answer, and the spool is replayed in order once a
    probe (with backoff and jitter) finds it answering again, or, from a busy collector, once its busy backoff
    (at most ``MAX_BUSY_S``) has passed. ``answering=False`` starts in that state (init could not reach the
    collector); ``offline`` sends everything to the spool. A record that can be neither delivered nor spooled
    (the collector does not answer and the spool cannot be written, e.g. a full disk) is counted in ``lost`` with
    the reason in ``lost_reasons``; the spool is tried again with backoff, so spooling resumes once there is
    room. The thread never dies of an error: it is logged once and counted in ``errors``, and the record in hand is
    counted as lost.

    Every item (scalar point or histogram) the sender took is, at any time, in exactly one of
    ``acknowledged``, ``rejected``, ``spooled`` (in the spool now; ``spooled_total`` counts every item ever
    written there) and ``lost``, or still in hand.
    """

    def __init__(self, stream: _core.Stream, channel: grpc.Channel | None, run_id: str, rank: int,
                 stream_id: str, spool_: Spool, offline: bool = False, answering: bool = True,
                 side_bytes: int = SIDE_QUEUE_BYTES, side_wait: float = SIDE_WAIT_S,
                 restart: LocalRestart | None = None) -> None:
        self._stream = stream
        self._run_id, self._rank, self._stream_id = run_id, rank, stream_id
        self.spool = spool_
        self._offline = offline or channel is None
        self._cv = threading.Condition()
        self._closing = threading.Event()
        self._link = CollectorLink(ingest_pb2_grpc.IngestStub(channel) if channel is not None else None, stream_id,
                                   answering and not self._offline, self._closing, spool_.directory, restart)
        self._restart = restart
        self._done = False
        self._abandoned = False
        self.sent = 0          # items (points + histograms) taken from the stream
        self.acknowledged = 0  # items the collector has committed
        self.rejected = 0      # items in batches the collector refused as invalid
        self.spooled = 0       # items in the spool now (written there and not replayed yet)
        self.spooled_total = 0  # items ever written to the spool
        self.lost = 0          # items neither delivered nor spooled
        self.side_failed = 0   # run updates, texts and artifacts the collector refused
        self.side_lost = 0     # run updates, texts and artifacts neither delivered nor spooled
        self.errors = 0        # unexpected exceptions caught on the sender thread
        self.lost_reasons: list[str] = []
        self.done_sequence = 0  # batches up to here are acknowledged, refused, spooled or lost
        self.spool_error: OSError | None = None
        """Why the last write to the spool failed; None once one succeeds."""
        self._warned: set[str] = set()
        self._spool_retry = Backoff(cap=MAX_BACKOFF_S)  # writes to a spool that failed
        self._carry_defs: dict[int, tuple[str, int]] = {}  # series defined in batches that were lost
        self._carry_open: Message | None = None  # the OpenRun record, if it was lost
        self._carry_open_reason = ""
        self._side: deque[tuple[int, Message, int]] = deque()
        self._side_bytes = 0
        self._side_limit, self._side_wait = side_bytes, side_wait
        self.backlog = 0  # records in the spool (only the sender thread touches the spool itself)
        try:
            spool_.lock()  # a sync running meanwhile leaves this stream's spool alone
            self.backlog = spool_.count()
        except OSError as exc:
            self._spool_failed(exc)
        self._thread = threading.Thread(target=self._loop, name="stepwire-sender", daemon=True)
        self._thread.start()

    # -- the training thread's side --------------------------------------------------------------------------
    def submit(self, kind: int, msg: Message, force: bool = False) -> bool:
        """Send ``msg`` (a run update, text or artifact) from the sender thread, in order with the batches. The
        queue holds ``side_bytes``: when it is full this waits up to ``side_wait`` seconds for room, then counts
        the record in ``side_lost`` and returns False (``force`` skips the bound: the final status)."""
        size = msg.ByteSize()
        with self._cv:
            deadline = time.monotonic() + self._side_wait
            while not force and self._side and self._side_bytes + size > self._side_limit:
                left = deadline - time.monotonic()
                if left <= 0 or self._done:
                    self.side_lost += 1
                    break
                self._cv.wait(min(left, 0.1))
            else:
                self._side.append((kind, msg, size))
                self._side_bytes += size
                return True
        self._note_loss(f"the sender's queue of run updates, texts and artifacts stayed full "
                        f"({self._side_limit >> 20} MiB) for {self._side_wait:g} s", 1, what="records")
        self._discard_staged(kind, msg)
        return False

    def wait(self, sequence: int, timeout: float, delivered: bool = True) -> bool:
        """Wait until batches up to ``sequence`` and every submitted record are handled (acknowledged, refused,
        spooled or lost) and, with ``delivered``, the spool is empty too; False on timeout, or at once if the
        thread has ended without that."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while not (self.done_sequence >= sequence and not self._side and not (delivered and self.backlog)):
                left = deadline - time.monotonic()
                if left <= 0 or self._done:
                    return False
                self._cv.wait(min(left, 0.1))
        return True

    def counts(self) -> dict[str, int | str]:
        """A consistent snapshot of the counters (``lost_reason``: the reasons, joined)."""
        with self._cv:
            return {"sent": self.sent, "acknowledged": self.acknowledged, "rejected": self.rejected,
                    "spooled": self.spooled, "spooled_total": self.spooled_total, "lost": self.lost,
                    "lost_reason": "; ".join(self.lost_reasons), "side_failed": self.side_failed,
                    "side_lost": self.side_lost, "sender_errors": self.errors}

    @property
    def answering(self) -> bool:
        """False since an RPC got no answer (or init found no collector), True again once one is answered."""
        return self._link.answering

    @property
    def comes_back(self) -> bool:
        """True while a collector that does not answer may answer again soon: it is the directory's local one,
        which the sender starts again (unless the last attempt could not)."""
        return self._restart is not None and not self._restart.gave_up

    @property
    def offline(self) -> bool:
        """True when everything goes to the spool (offline mode, or no collector address)."""
        return self._offline

    def close(self) -> None:
        """Stop waiting for the collector: from now on what it does not answer at once goes to the spool."""
        self._closing.set()
        with self._cv:
            self._cv.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to finish (after the stream is closed); False if it has not."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def abandon(self, logged: int, reason: str) -> int:
        """Give up on what the thread still holds (``finish`` timed out): of ``logged`` items, those not yet
        acknowledged, refused, spooled or lost are counted as lost for ``reason``, and the thread counts nothing
        more. Returns that number."""
        with self._cv:
            left = max(0, logged - self.acknowledged - self.rejected - self.spooled - self.lost)
            self.lost += left
            self._abandoned = True
        if left:
            self._note_loss(reason, left, force=True)
        return left

    # -- the sender thread ------------------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while not self._abandoned:
                try:
                    if not self._iterate():
                        break
                    self._link.heartbeat()
                except Exception as exc:  # never let the thread die: the record in hand was counted already
                    self._error(exc)
                    self._closing.wait(0.05)
        finally:
            if self._carry_open is not None and not self._abandoned:
                with self._cv:
                    self.side_lost += 1
                self._note_loss(self._carry_open_reason, 1, what="records")
            self._remove_if_delivered()
            try:
                self.spool.unlock()
            except OSError:
                pass
            with self._cv:
                self._done = True
                self._cv.notify_all()

    def _remove_if_delivered(self) -> None:
        """Leave no empty spool behind: once everything was delivered, the directory holds only its lock and
        cursor (and no staged file: each was uploaded, or discarded with its record)."""
        if self._abandoned or self.backlog or self.spooled:
            return
        try:
            if not self.spool.pending():
                shutil.rmtree(self.spool.directory)
        except OSError:
            pass

    def _iterate(self) -> bool:
        """One round: replay, submitted records, then the next batch; False once everything is done."""
        self._check_core()
        self._replay()
        while self._side and not self._abandoned:
            kind, msg, size = self._side[0]
            self._handle(kind, msg)
            with self._cv:
                self._side.popleft()
                self._side_bytes -= size
                self._cv.notify_all()
        batch = self._stream.next_batch(0.05 if self.backlog else 0.2)
        if batch is not None:
            self._handle_batch(batch)
            return True
        return not (self._stream.exhausted() and not self._side)

    def _handle_batch(self, batch: _core.SealedBatch) -> None:
        items = int(batch.point_count + batch.histogram_count)
        with self._cv:
            self.sent += items
        try:
            msg = encode_batch(batch, self._run_id, self._rank, self._stream_id)
        except Exception as exc:
            self._error(exc)
            msg = ingest_pb2.Batch(run_id=self._run_id, rank=self._rank, stream_id=self._stream_id,
                                   sequence=batch.sequence)
            for sid, name, kind in batch.defs:
                msg.series.add(id=sid, name=name, kind=kind)
            self._count(spool.BATCH, msg, "lost", f"the batch could not be encoded ({exc!r})", items)
        else:
            self._handle(spool.BATCH, msg)
        finally:
            # acknowledged, refused, spooled (the page cache outlives this process) or lost: the journal's copy
            # in shared memory is no longer needed by a survivor
            self._stream.retire(batch.sequence)
            with self._cv:
                self.done_sequence = batch.sequence
                self._cv.notify_all()

    def _handle(self, kind: int, msg: Message) -> None:
        """Deliver, spool or lose one record, and count which; never raises."""
        try:
            if self._carry_open is not None and kind != spool.OPEN_RUN:
                carried, self._carry_open = self._carry_open, None
                self._handle(spool.OPEN_RUN, carried)  # the collector must learn of the run before its data
            if kind == spool.BATCH and self._carry_defs:
                assert isinstance(msg, ingest_pb2.Batch)
                defined = {d.id for d in msg.series}
                for sid, (name, series_kind) in self._carry_defs.items():
                    if sid not in defined:
                        msg.series.add(id=sid, name=name, kind=series_kind)
            outcome, reason = self._send(kind, msg)
        except Exception as exc:
            self._error(exc)
            outcome, reason = "lost", f"an error in the sender ({exc!r})"
        self._count(kind, msg, outcome, reason)

    def _send(self, kind: int, msg: Message) -> tuple[str, str]:
        """(outcome, why it was lost): delivered to a collector that answers, else spooled, else lost."""
        if not self._offline and not self.backlog and self._link.answers():
            outcome = self._link.deliver_now(kind, msg)
            if outcome in ("acknowledged", "refused"):
                return outcome, ""
        if self._spool_write(kind, msg):
            return "spooled", ""
        err = self.spool_error
        why = (os.strerror(err.errno) if err.errno else str(err)) if err is not None else "unknown"
        if self._offline:
            return "lost", f"the spool {self.spool.directory} cannot be written ({why}) and the run is offline"
        return "lost", f"the spool {self.spool.directory} cannot be written ({why}) and the collector does not answer"

    def _spool_write(self, kind: int, msg: Message) -> bool:
        """Append ``msg`` to the spool; False if that failed (now, or recently: retried with backoff)."""
        if self.spool_error is not None and not self._spool_retry.ready():
            return False
        try:
            self.spool.append(kind, msg.SerializeToString())
        except OSError as exc:
            self._spool_failed(exc)
            return False
        if self.spool_error is not None:
            log.warning("the spool %s can be written again: spooling resumes", self.spool.directory)
            self.spool_error = None
            self._spool_retry.succeeded()
        with self._cv:
            self.backlog += 1
        return True

    def _spool_failed(self, exc: OSError) -> None:
        if self.spool_error is None:
            log.warning("cannot write the spool %s (%s): what the collector does not take now is lost, and counted "
                        "in stats()['lost']; retrying the spool with backoff", self.spool.directory, exc)
        self.spool_error = exc
        self._spool_retry.failed()

    def _count(self, kind: int, msg: Message, outcome: str, reason: str = "", items: int | None = None) -> None:
        if kind == spool.ARTIFACT and outcome != "spooled":
            self._discard_staged(kind, msg)  # uploaded, refused or lost: the staged copy is done with
        if kind == spool.BATCH:
            assert isinstance(msg, ingest_pb2.Batch)
            if outcome == "lost":  # later batches use these series: they travel with the next batch instead
                self._carry_defs.update({d.id: (d.name, d.kind) for d in msg.series})
            else:
                self._carry_defs.clear()
        elif kind == spool.OPEN_RUN and outcome == "lost":
            self._carry_open = msg  # tried again before the next record (counted lost only if it never goes)
            self._carry_open_reason = reason
            return
        n = batch_items(msg) if items is None and isinstance(msg, ingest_pb2.Batch) else (items or 0)
        with self._cv:
            if self._abandoned:
                return
            if kind == spool.BATCH:
                if outcome == "acknowledged":
                    self.acknowledged += n
                elif outcome == "refused":
                    self.rejected += n
                elif outcome == "spooled":
                    self.spooled += n
                    self.spooled_total += n
                else:
                    self.lost += n
            elif outcome == "refused":
                self.side_failed += 1
            elif outcome == "lost":
                self.side_lost += 1
        if outcome == "lost":
            self._note_loss(reason, n if kind == spool.BATCH else 1,
                            what="items" if kind == spool.BATCH else "records")

    def _note_loss(self, reason: str, n: int, what: str = "items", force: bool = False) -> None:
        """Record ``reason`` (once) and warn the first time it causes a loss."""
        with self._cv:
            if self._abandoned and not force:
                return
            new = reason not in self.lost_reasons
            if new:
                self.lost_reasons.append(reason)
        if new:
            log.warning("stepwire: logged data is being lost: %s (%d %s so far; counted in run.stats()['lost'] and "
                        "['side_lost'])", reason, n, what)

    def _discard_staged(self, kind: int, msg: Message) -> None:
        if kind == spool.ARTIFACT:
            assert isinstance(msg, ingest_pb2.ArtifactChunk)
            if msg.source_path:
                Path(msg.source_path).unlink(missing_ok=True)

    def _error(self, exc: Exception) -> None:
        with self._cv:
            self.errors += 1
            first = self.errors == 1
        if first:
            log.error("stepwire sender: unexpected error (the thread goes on; later ones are only counted in "
                      "stats()['sender_errors'])", exc_info=exc)

    def _check_core(self) -> None:
        """Warn once when the block policy started dropping (a logging call waited block_timeout for room)."""
        if "timed_out" in self._warned:
            return
        timed_out = self._stream.stats().get("timed_out", 0)
        if timed_out:
            self._warned.add("timed_out")
            log.warning("stepwire: a logging call waited block_timeout for room and dropped its data (%d items so "
                        "far): delivery is not keeping up (collector answering: %s, spool: %s); points are dropped "
                        "and counted in run.stats()['dropped'] and ['timed_out'] until it moves again", timed_out,
                        self.answering, "ok" if self.spool_error is None else self.spool_error)

    def _replay(self) -> None:
        """Deliver spooled records in order while the collector answers; probe it with backoff when it does not.
        Not once closing: what is left stays for ``stepwire sync``, and later records follow it into the spool."""
        if self._offline or not self.backlog:
            return
        while self.backlog and not self._abandoned and not self._closing.is_set() and self._link.answers():
            record = self.spool.peek()
            if record is None and self.spool.error is not None:  # a damaged record could not be set aside (a
                self._link.failed()  # full disk): the rest stays in the spool; try again with backoff
                return
            if record is None:  # the rest was damaged on disk (set aside by the spool): it will not come
                with self._cv:
                    gone, self.lost, self.spooled, self.backlog = self.spooled, self.lost + self.spooled, 0, 0
                    self._cv.notify_all()
                if gone:
                    self._note_loss(f"damaged in the spool {self.spool.directory}", gone)
                return
            kind, payload = record
            try:
                msg = PAYLOAD_TYPES[kind].FromString(payload)
            except DecodeError:  # intact checksums around no message of its kind: set it aside, go on
                try:
                    self.spool.reject(f"not a {spool.KIND_NAMES[kind]} message")
                except OSError:  # it stays in the spool for stepwire sync; try again with backoff
                    self._link.failed()
                    return
                log.error("spool %s: a record is no %s message: set aside", self.spool.directory,
                          spool.KIND_NAMES[kind])
                with self._cv:
                    self.backlog -= 1
                    self.side_failed += 1
                continue
            outcome = self._link.attempt(kind, msg)
            if outcome == "unanswered":
                self._link.failed()
                return
            if outcome == "busy":  # the collector pushed back: the next attempt is due after its busy backoff
                return
            try:
                self.spool.pop()
            except OSError as exc:  # the cursor is kept in memory: a crash may replay a few (deduplicated)
                log.warning("spool %s: cannot record the delivery (%s)", self.spool.directory, exc)
            self._discard_staged(kind, msg)  # an artifact's staged copy is done with
            with self._cv:
                self.backlog -= 1
                if kind == spool.BATCH and not self._abandoned:
                    assert isinstance(msg, ingest_pb2.Batch)
                    self.spooled -= batch_items(msg)
                    if outcome == "acknowledged":
                        self.acknowledged += batch_items(msg)
                    else:
                        self.rejected += batch_items(msg)
                elif outcome == "refused":
                    self.side_failed += 1
                self._cv.notify_all()
