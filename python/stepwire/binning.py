"""Histogram binning off the caller's thread: one background thread per run bins what logging calls hand it.

A ``Job`` holds the arrays of one logging call. Two kinds:

- *private* arrays (a copy, or an array stepwire made while converting the caller's values): binned and queued
  in the background at once;
- *guarded* tensors (``watch``'s gradients and parameters, still live in the model): binned in the background
  while the training step goes on, and queued only once a *fence* on the training thread has seen every
  tensor's version counter unchanged since the job was made. At a fence the training thread runs no tensor
  operation, so a binning that ended before it and versions unchanged at it mean the values binned are those of
  the step. A changed version drops the job's histograms (counted in ``changed``): its values may be mixed.
  A *barrier* fence also waits until the job is binned (``waits``, ``wait_s``): the training loop calls it just
  before code that may change the tensors (an optimizer step).

With a shared-memory segment (docs/segment.md), the private copy of a ``log_histogram`` array is made into a
raw-values file beside it (``stepwire.segment_raw``) instead of process memory, so that a survivor bins what a
crashed process accepted and never binned; where /dev/shm has no room for it, the caller bins it on its own thread
(counted in ``shm_full``).

At most ``max_bytes`` of arrays wait; beyond that ``submit`` waits for room, or with ``drop`` refuses the job
(counted in ``dropped``). A job larger than ``max_bytes`` alone is refused under either policy: the caller bins it
itself. One thread per run; the binning itself spreads over the native core's persistent pool, on the cores torch's
threads leave free (``spare_cores``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from stepwire import _core
from stepwire.segment_raw import RawFile, RawPool
from stepwire.tensors import cpu_view

if TYPE_CHECKING:
    from stepwire.run import Run

log = logging.getLogger("stepwire")

DEFAULT_MAX_BYTES = 1 << 30
"""Bytes of arrays that may wait for the background thread (1 GiB)."""
BACKGROUND_MIN_VALUES = 1 << 16
"""``log_histogram`` bins smaller arrays on the caller's thread: handing them over would cost more."""

_COUNTS = ("background", "changed", "dropped", "errors", "waits", "wait_s", "shm_full")
ScalarsOf = Callable[[str, dict[str, Any]], dict[str, float]]


@dataclass(eq=False)
class Job:
    """The histograms of one logging call: series ids, names, step, the arrays to bin and how to read them."""

    series: list[int]
    names: list[str]
    step: int
    arrays: list[npt.NDArray[Any]]
    bf16: list[bool]
    tensors: list[Any] | None = None
    """CPU tensors to bin instead of ``arrays``, viewed as arrays on the binning thread (``cpu_view``)."""
    scalars_of: ScalarsOf | None = None
    """When given, the scalars it returns for each histogram are logged beside it (``watch``)."""
    guards: list[tuple[Any, int]] | None = None
    """Tensors and their ``_version`` when the job was made: the job is guarded (see the module docstring)."""
    kind: str = ""
    """What the job holds (``watch`` uses "gradients" and "parameters"), for barriers to choose by."""
    on_changed: Callable[[], None] | None = None
    raw: RawFile | None = None
    """The raw-values file ``arrays`` lives in (one histogram), committed when the job is queued."""
    nbytes: int = 0
    results: _core.BinnedSet | None = None
    approved: bool = False
    dropped: bool = False
    binned_at: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self.nbytes = self.nbytes or sum(a.nbytes for a in self.arrays) + sum(
            t.numel() * t.element_size() for t in self.tensors or ())

    def changed(self) -> bool:
        """True if a guarded tensor was modified in place since the job was made."""
        return any(t._version != v for t, v in self.guards or ())


class Binner:
    """The background binning thread of one run (see the module docstring)."""

    def __init__(self, run: Run, max_bytes: int = DEFAULT_MAX_BYTES, drop: bool = False, threads: int = 0) -> None:
        """``threads``: how many of the pool's threads one job may use (0: ``spare_cores()``)."""
        self._run = run
        self._max_bytes = max_bytes
        self._drop = drop
        self._threads = threads
        self._jobs: deque[Job] = deque()
        info = run._stream.segment_info()
        self._raw = RawPool(info["path"]) if info["survives_crash"] and info["path"] else None
        self._raw_id = 0
        self._held = 0
        self._cond = threading.Condition()
        self._closed = False
        self.counts: dict[str, float] = dict.fromkeys(_COUNTS, 0)
        """``background``: histograms binned here and queued; ``changed``: dropped because a guarded tensor changed
        before its fence; ``dropped``: refused by ``policy="drop"`` with ``max_bytes`` waiting; ``errors``:
        binning failures (the first message in ``error``); ``waits``/``wait_s``: times and seconds a caller
        waited (for room, or at a barrier); ``shm_full``: histograms binned on the caller's thread because /dev/shm
        had no room for their raw-values file."""
        self.error = ""
        self.approvable = False
        """True when a guarded job was binned since the last fence: a cheap check before calling ``fence``."""
        self._thread = threading.Thread(target=self._loop, name="stepwire-binner", daemon=True)
        self._thread.start()

    @property
    def held_bytes(self) -> int:
        """Bytes of arrays waiting now."""
        return self._held

    def submit(self, job: Job) -> bool:
        """Hand ``job`` to the thread (or, with no room under ``drop``, count it dropped); False if it is larger
        than ``max_bytes``, or if room depends on a guarded job a fence has yet to approve: the caller bins it
        itself."""
        if job.nbytes > self._max_bytes:
            return False
        with self._cond:
            if self._closed:
                raise RuntimeError("the binning thread is closed")
            if self._held + job.nbytes > self._max_bytes:
                if self._drop:
                    self.counts["dropped"] += len(job.series)
                    return True
                if any(j.guards is not None and not (j.approved or j.dropped) for j in self._jobs):
                    return False  # room would wait for a fence, which only this (training) thread reaches
                self._wait(lambda: self._held + job.nbytes <= self._max_bytes)
            if job.raw is not None:  # ids in the order jobs are queued: a survivor's "done up to" is a max
                self._raw_id += 1
                job.raw.commit(self._raw_id)
            self._jobs.append(job)
            self._held += job.nbytes
            self._cond.notify_all()
        return True

    def submit_copy(self, series: int, name: str, step: int, arr: npt.NDArray[Any], bf16: bool,
                    source: object) -> bool:
        """Bin a private copy of ``arr`` (values of ``source``, a caller's logging call) in the background: in a
        raw-values file beside the run's segment when it has one, else in process memory (``private_copy``).
        False when the caller bins it itself (as ``submit``; or no room in /dev/shm for the copy)."""
        if self._raw is None:
            return self.submit(Job([series], [name], step, [private_copy(arr, source)], [bf16]))
        if arr.nbytes > self._max_bytes:
            return False
        try:
            raw = self._raw.take(series, step, self._run._k, arr, bf16)
        except OSError as exc:
            if not self.counts["shm_full"]:
                log.warning("no room in /dev/shm for the values of histogram %r (%s): histograms that find none "
                            "are binned on the logging thread (stats()['binning_shm_full'])", name, exc)
            self.counts["shm_full"] += 1
            return False
        try:
            accepted = self.submit(Job([series], [name], step, [raw.values], [bf16], raw=raw))
        finally:
            if raw.id == 0:  # refused or dropped: never queued
                self._raw.give_back(raw)
        return accepted

    def fence(self, barrier: Callable[[Job], bool] | None = None) -> None:
        """On the training thread, where it runs no tensor operation: approve guarded jobs that are binned and
        unchanged, drop changed ones. ``barrier``: first wait until the jobs it returns True for are binned,
        because what follows may change their tensors."""
        with self._cond:
            self.approvable = False
            for job in list(self._jobs):
                if job.guards is None or job.approved or job.dropped:
                    continue  # (the thread drops its references: freeing gradients costs the training thread)
                if job.changed():
                    self._drop_changed(job)
                    continue
                if job.results is None and barrier is not None and barrier(job):
                    self._wait(lambda j=job: j.results is not None or j.dropped)  # type: ignore[misc]
                if job.results is not None:
                    job.approved = True
            self._cond.notify_all()

    def join(self) -> None:
        """Fence with a barrier for everything, then wait until every job is queued or dropped, and its arrays
        released (a raw-values file free for the next call)."""
        self.fence(lambda job: True)
        with self._cond:
            self._wait(lambda: not self._jobs and self._held == 0)

    def close(self) -> None:
        """``join``, then stop the thread."""
        self.join()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        if self._raw is not None:
            self._raw.close()

    def stats(self) -> dict[str, Any]:
        """The counts as ``run.stats()`` reports them (``binning_*``)."""
        return {**{f"binning_{k}": v for k, v in self.counts.items()}, "binning_held_bytes": self._held,
                "binning_error": self.error}

    def _wait(self, ready: Callable[[], bool]) -> None:
        if ready():
            return
        t = time.perf_counter()
        self.counts["waits"] += 1
        while not ready():
            self._cond.wait()
        self.counts["wait_s"] += time.perf_counter() - t

    def _drop_changed(self, job: Job) -> None:
        job.dropped = True
        self.counts["changed"] += len(job.series)
        if job.on_changed is not None:
            job.on_changed()

    def _next(self) -> tuple[Job | None, Job | None]:
        """(a job to queue or discard, a job to bin); waits until there is one. (None, None): closed and done."""
        while True:
            head = self._jobs[0] if self._jobs else None
            if head is not None and (head.dropped or (head.results is not None
                                                      and (head.guards is None or head.approved))):
                self._jobs.popleft()
                return head, None
            todo = next((j for j in self._jobs if j.results is None and not j.dropped), None)
            if todo is not None:
                return None, todo
            if self._closed and not self._jobs:
                return None, None
            self._cond.wait()

    def _loop(self) -> None:
        while True:
            with self._cond:
                done, todo = self._next()
                if done is None and todo is None:
                    return
            if todo is not None:
                results = self._bin(todo)
                with self._cond:
                    self.approvable = self.approvable or todo.guards is not None
                    todo.results = results
                    todo.dropped = todo.dropped or results is None
                    self._cond.notify_all()
            elif done is not None:
                try:
                    if not done.dropped and done.results is not None:
                        self._queue(done, done.results)
                except Exception as exc:
                    self._failed(done, exc)
                done.arrays, done.tensors, done.guards = [], None, None  # freed here, not on the training thread
                if done.raw is not None and self._raw is not None:
                    self._raw.give_back(done.raw)  # after the push: queued (or counted), and the segment says so
                with self._cond:
                    self._held -= done.nbytes
                    self._cond.notify_all()

    def _bin(self, job: Job) -> _core.BinnedSet | None:
        try:
            if job.tensors is not None:
                views = [cpu_view(name, t) for name, t in zip(job.names, job.tensors, strict=True)]
                job.arrays, job.bf16 = [v for v, _ in views], [b for _, b in views]
            return _core.bin_many_held(job.arrays, job.bf16, self._run._k, self._threads or spare_cores())
        except Exception as exc:
            self._failed(job, exc)
            return None

    def _failed(self, job: Job, exc: Exception) -> None:
        self.counts["errors"] += len(job.series)
        if not self.error:
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("binning histograms %s failed: %s", job.names[:3], self.error)

    def _queue(self, job: Job, results: _core.BinnedSet) -> None:
        """Queue the histograms (one native call, the GIL released once) and the scalars beside them."""
        run = self._run
        stats = results.stats() if job.scalars_of is not None else []
        if job.raw is not None:
            run._stream.push_binned_set(job.series, job.step, results, raw=job.raw.id, wall_time=job.raw.wall_time)
        else:
            run._stream.push_binned_set(job.series, job.step, results)
        if job.scalars_of is not None:
            scalars: dict[str, float] = {}
            for name, h in zip(job.names, stats, strict=True):
                scalars.update(job.scalars_of(name, h))
            run._log_stats(scalars, job.step)
        self.counts["background"] += len(job.series)


def spare_cores() -> int:
    """Cores torch's intra-op threads leave free (at least one): what background binning uses by default, so
    that it slows the training step's own threads as little as it can."""
    torch = sys.modules.get("torch")
    used = torch.get_num_threads() if torch is not None else 1
    return max(1, (os.cpu_count() or 1) - used)


def idle_stats() -> dict[str, Any]:
    """``Binner.stats()`` of a run that never started the thread."""
    return {**{f"binning_{k}": 0 for k in _COUNTS}, "binning_held_bytes": 0, "binning_error": ""}


def private_copy(arr: npt.NDArray[Any], source: object) -> npt.NDArray[Any]:
    """``arr`` if stepwire made it while converting ``source`` (no one else can change it), else a copy."""
    if isinstance(source, (list, tuple)):
        return arr  # numbers converted by stepwire
    if isinstance(source, np.ndarray):
        shared = np.may_share_memory(arr, source)
    else:  # a tensor (its data pointer says whether the view is its memory), or any other array-like: copied
        data_ptr = getattr(source, "data_ptr", None)
        shared = data_ptr is None or arr.__array_interface__["data"][0] == data_ptr()
    return arr.copy() if shared else arr
