"""Group commit: concurrent pushes stored together, one store transaction for all of them.

Each Push RPC decodes its batch in its own gRPC worker thread, then queues it here and waits. The first waiter
to find no commit in progress becomes the leader: it takes what is queued (up to ``max_group_bytes``), stores it
with one ``Store.append_many`` outside the queue's lock, hands every waiter its own result and steps down; while
it commits, the next pushes queue up and the next leader takes them all. Nobody waits for a fixed time: a leader
waits (at most ``window_s``) only while other pushes are still being decoded, so one client alone is never
slowed. A batch is acknowledged only after the transaction holding it committed.

What is queued is bounded by the collector's byte budget (``stepwire.collector.admission``), which every push holds
until its group committed; a group holds at most ``max_group_bytes``, since storing it takes about twice its size
again while its chunk rows are packed.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy.typing as npt

from stepwire.collector.decode import BatchError, DecodedBatch
from stepwire.store.base import Store

GROUP_COMMIT_ENV = "STEPWIRE_GROUP_COMMIT"
"""``0`` turns group commit off: each push is stored in its own transaction (kept to compare, see
bench/bench_ingest.py)."""

WINDOW_S = 0.005
"""How long a leader waits at most for pushes still being decoded, to store them in the same transaction."""

MAX_GROUP_BYTES = 16 << 20
"""Decoded bytes stored in one transaction at most (one batch, if it alone is larger): hundreds of thousands of
points, enough to make a commit's fixed cost small."""


def enabled() -> bool:
    """Whether group commit is on (``$STEPWIRE_GROUP_COMMIT`` is not ``0``/``false``/``off``/``no``)."""
    return os.environ.get(GROUP_COMMIT_ENV, "1").strip().lower() not in ("0", "false", "off", "no")


def batch_bytes(batch: DecodedBatch) -> int:
    """Memory the decoded arrays of ``batch`` hold."""
    arrays: list[npt.NDArray[Any]] = [batch.group_series, batch.group_lengths, batch.steps, batch.values,
                                      batch.wall_times, *batch.hist.values()]
    return sum((int(a.nbytes) for a in arrays), 64 * len(batch.defs))


class _Entry:
    """A queued batch and, once its group committed, its result."""

    __slots__ = ("batch", "done", "error", "nbytes", "result")

    def __init__(self, batch: DecodedBatch, nbytes: int) -> None:
        self.batch = batch
        self.nbytes = nbytes
        self.done = False
        self.result: bool | BatchError = False
        self.error: BaseException | None = None


class GroupCommit:
    """Coalesces concurrent ``append`` calls into one ``store.append_many`` per group (leader/follower)."""

    def __init__(self, store: Store, window_s: float = WINDOW_S, max_group_bytes: int = MAX_GROUP_BYTES) -> None:
        self.store = store
        self.window_s = window_s
        self.max_group_bytes = max_group_bytes
        self._cond = threading.Condition()
        self._queue: deque[_Entry] = deque()
        self._queued_bytes = 0
        self._arriving = 0  # pushes being decoded, soon to be queued
        self._committing = False
        self.groups = 0  # transactions committed or failed, for tests and benchmarks
        self.batches = 0  # batches they held

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Inside: a push is being decoded, so that a leader may wait (at most ``window_s``) to take it along."""
        with self._cond:
            self._arriving += 1
        try:
            yield
        finally:
            with self._cond:
                self._arriving -= 1
                self._cond.notify_all()

    def append(self, batch: DecodedBatch) -> bool:
        """Store ``batch`` with whatever else is queued; True stored, False a duplicate, once committed. Raises
        the batch's own ``BatchError`` or the group's store failure (nothing of the group stored)."""
        entry = _Entry(batch, batch_bytes(batch))
        with self._cond:
            self._queue.append(entry)
            self._queued_bytes += entry.nbytes
            self._cond.notify_all()
            while not entry.done:
                if self._committing:
                    self._cond.wait()
                    continue
                self._committing = True
                try:
                    group = self._take()
                    self._cond.release()
                    try:
                        self._commit(group)
                    finally:
                        self._cond.acquire()
                finally:
                    self._committing = False
                    self._cond.notify_all()
        if entry.error is not None:
            raise entry.error
        if isinstance(entry.result, BatchError):
            raise entry.result
        return entry.result

    def _take(self) -> list[_Entry]:
        """The next group, oldest first (call holding the lock, as the leader): after waiting up to ``window_s``
        for pushes still being decoded, while the group has room."""
        deadline = time.monotonic() + self.window_s
        while self._arriving and self._queued_bytes < self.max_group_bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)
        group: list[_Entry] = []
        size = 0
        while self._queue and (not group or size + self._queue[0].nbytes <= self.max_group_bytes):
            e = self._queue.popleft()
            group.append(e)
            size += e.nbytes
        self._queued_bytes -= size
        return group

    def _commit(self, group: list[_Entry]) -> None:
        """Store ``group`` in one transaction (outside the lock) and give each entry its result."""
        try:
            if len(group) == 1:
                try:
                    results: list[bool | BatchError] = [self.store.append(group[0].batch)]
                except BatchError as exc:
                    results = [exc]
            else:
                results = self.store.append_many([e.batch for e in group])
        except BaseException as exc:  # the store failed: nothing of the group is stored; every push says so
            for e in group:
                e.error = exc
        else:
            for e, r in zip(group, results, strict=True):
                e.result = r
        finally:
            self.groups += 1
            self.batches += len(group)
            for e in group:
                e.done = True
