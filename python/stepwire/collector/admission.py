"""Admission of pushes by bytes: what the collector holds of batches stays within one budget.

A push holds its share of the budget from before its batch is decoded until the transaction storing it has
committed: the request's own bytes plus what its columns declare they inflate to (read from the LZ4 block headers,
before anything is inflated). Pushes that find no room wait for it, up to ``wait_s``, then get ``Busy`` (the
collector answers RESOURCE_EXHAUSTED, which clients retry, spooling meanwhile). One push larger than the whole
budget is let in alone, so that no batch a client may send is refused for ever.

This bounds the collector's memory by bytes rather than by RPCs: how many clients push at once then changes how
long they wait, not how much the collector holds. The requests of waiting pushes are in memory already, so they
are bounded too: a push that would make them hold more than the budget is answered at once.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

from stepwire.collector.decode import MAX_DECODED_BYTES, declared_bytes
from stepwire.v1 import ingest_pb2

MEMORY_ENV = "STEPWIRE_INGEST_MEMORY"
"""Overrides ``MAX_HELD_BYTES`` (bytes, an integer >= 1)."""

MAX_HELD_BYTES = 128 << 20
"""Bytes of batches (as received and as decoded) a collector holds at most between arrival and commit."""

WAIT_S = 20.0
"""How long a push waits for room before it is answered RESOURCE_EXHAUSTED: callers rather wait (within the
clients' 30 s RPC deadline) than retry, since a client spools what is pushed back for 2 s."""


def max_held_bytes() -> int:
    """``$STEPWIRE_INGEST_MEMORY`` if set, else ``MAX_HELD_BYTES``; ``ValueError`` if it is not an integer >= 1."""
    raw = os.environ.get(MEMORY_ENV, "").strip()
    if not raw:
        return MAX_HELD_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"${MEMORY_ENV} must be a number of bytes >= 1, got {raw!r:.40}")
    return value


def push_bytes(batch: ingest_pb2.Batch) -> int:
    """What a push of ``batch`` holds: its bytes as received plus what its columns declare they inflate to
    (capped at the largest batch the decoder accepts, which refuses anything declaring more)."""
    return int(batch.ByteSize()) + min(declared_bytes(batch), MAX_DECODED_BYTES)


class Busy(RuntimeError):
    """No room within ``wait_s``: the collector answers RESOURCE_EXHAUSTED."""


class ByteBudget:
    """A counting semaphore in bytes, first come first served."""

    def __init__(self, limit: int, wait_s: float = WAIT_S) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self.held = 0  # bytes held now
        self.peak = 0  # the most held at once
        self._cond = threading.Condition()
        self._waiting: list[object] = []  # tickets of waiting pushes, oldest first
        self.waiting_bytes = 0  # what the waiting pushes' requests hold already (received, not yet admitted)

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        """Inside: ``nbytes`` of the budget are held. Waits for room (oldest waiter first); raises ``Busy``, at once
        when the pushes already waiting hold the whole budget again: a waiting push's request is in memory too."""
        ticket = object()
        with self._cond:
            if self._waiting and self.waiting_bytes + nbytes > self.limit:
                raise Busy(f"pushes waiting for room hold {self.waiting_bytes >> 20} MiB already (the limit is "
                           f"{self.limit >> 20} MiB): retry later")
            deadline = time.monotonic() + self.wait_s
            self._waiting.append(ticket)
            self.waiting_bytes += nbytes
            try:
                while not (self._waiting[0] is ticket and (self.held == 0 or self.held + nbytes <= self.limit)):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise Busy(f"the collector holds {self.held >> 20} MiB of batches (its limit is "
                                   f"{self.limit >> 20} MiB): retry later")
                    self._cond.wait(left)
            finally:
                self._waiting.remove(ticket)
                self.waiting_bytes -= nbytes
                self._cond.notify_all()  # the next waiter may now be first
            self.held += nbytes
            self.peak = max(self.peak, self.held)
        try:
            yield
        finally:
            with self._cond:
                self.held -= nbytes
                self._cond.notify_all()
