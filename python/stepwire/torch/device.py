"""Tensors on a device logged without synchronising: reductions queued there, results taken by a waiter thread.

The training thread queues the reduction (``reduce_tensors``) and hands it to the run's ``DeviceWaiter``; the
waiter thread, not the training thread, waits for the results to reach the host and gives them to the core.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from stepwire import _core
from stepwire.torch.reduce import DEFAULT_CHUNK_ELEMENTS, DeviceReduction, reduce_tensors
from stepwire.torch.statistics import scalars_of

if TYPE_CHECKING:
    from stepwire.run import Run

log = logging.getLogger("stepwire.torch")


class DeviceWaiter:
    """A thread that waits for device reductions and logs their results, so the training thread never waits.

    At most ``max_pending`` reductions are in flight; beyond that ``submit`` waits for the oldest (back-pressure
    like a full ring under the block policy) or, with ``drop=True``, drops and counts.
    """

    def __init__(self, max_pending: int = 8, drop: bool = False) -> None:
        self._queue: queue.Queue[tuple[DeviceReduction, Callable[[DeviceReduction], None]] | None] = queue.Queue(
            max_pending)
        self._drop = drop
        self.dropped = 0
        self._thread = threading.Thread(target=self._loop, name="stepwire-device-waiter", daemon=True)
        self._thread.start()

    def submit(self, reduction: DeviceReduction, done: Callable[[DeviceReduction], None]) -> None:
        """Call ``done(reduction)`` on the waiter thread once the reduction's results are on the host."""
        if self._drop:
            try:
                self._queue.put_nowait((reduction, done))
            except queue.Full:
                self.dropped += 1
        else:
            self._queue.put((reduction, done))

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            reduction, done = item
            try:
                reduction.wait()
                done(reduction)
            except Exception as exc:  # a failure here must not stop later results from being logged
                log.error("logging device statistics failed: %s", exc)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def join(self) -> None:
        """Wait until everything submitted so far is logged."""
        self._queue.join()

    def close(self) -> None:
        """Log what is pending, then stop the thread."""
        self._queue.put(None)
        self._thread.join()


def log_on_device(run: Run, items: Sequence[tuple[str, torch.Tensor]], step: int, scalars: bool,
                  chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> None:
    """Queue the histograms (and, with ``scalars``, the statistics) of tensors on one device at ``step``."""
    reduction = reduce_tensors([t for _, t in items], run._k, chunk_elements)
    names = [n for n, _ in items]
    run._device_waiter().submit(reduction, lambda r: _log_reduction(run, r, names, step, scalars))


def _log_reduction(run: Run, r: DeviceReduction, names: list[str], step: int, scalars: bool) -> None:
    out: dict[str, float] = {}
    for i, name in enumerate(names):
        h = r.histogram(i)
        run._stream.push_binned(run._define(name, _core.KIND_HISTOGRAM), step, h["k"], h["indices"],
                                h["counts"], h["count"], h["sum"], h["min"], h["max"], h["nan"], h["pos_inf"],
                                h["neg_inf"])
        if scalars:
            out.update(scalars_of(name, h))
    if out:
        run._log_stats(out, step)


def log_device_values(run: Run, scalars: dict[str, torch.Tensor], hists: dict[str, torch.Tensor], step: int) -> None:
    """Log GPU tensors without synchronising: one-element tensors as scalars (copied to pinned memory without
    blocking), the others as histograms (reduced on the device); the waiter thread logs them when ready."""
    if hists:
        log_on_device(run, list(hists.items()), step, scalars=False)
    if scalars:
        names = list(scalars)
        values = torch.stack([t.detach().reshape(()).to(torch.float64) for t in scalars.values()])
        host = torch.empty(values.shape, dtype=torch.float64, pin_memory=True)
        host.copy_(values, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        reduction = DeviceReduction(0, [], host, host, event)
        run._device_waiter().submit(reduction, lambda r: run._log_stats(dict(zip(names, r.stats.tolist(),
                                                                                 strict=True)), step))
