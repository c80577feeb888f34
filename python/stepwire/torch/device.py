"""Tensors on a device logged without synchronising: reductions queued there, results taken by a waiter thread.

The training thread queues the reduction (``reduce_tensors``) or the copy of scalars (``copy_values``) on the
tensors' device and hands it to the run's ``DeviceWaiter``; the waiter thread, not the training thread, waits for
the results to reach the host and gives them to the core. Tensors on several devices are handled per device.

What waits is bounded in bytes of host result buffers (``max_bytes``, and in number, ``max_items``). When a new
reduction would go beyond, the run's policy decides before any device work is queued: under ``policy="block"``
the training thread waits for the waiter to catch up (counted in ``Run.stats()`` as ``device_waited``, the
seconds in ``device_waited_s``); under ``policy="drop"`` the reduction is not made and is counted in
``device_dropped``. A failure on the waiter thread is logged, counted (``device_errors``) and the first message
kept (``device_error``); later results are still logged.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

import torch
from stepwire import _core
from stepwire.torch.reduce import (
    DEFAULT_CHUNK_ELEMENTS,
    DeviceReduction,
    HostResults,
    copy_values,
    reduce_tensors,
    result_bytes,
)
from stepwire.torch.statistics import scalars_of

if TYPE_CHECKING:
    from stepwire.run import Run

log = logging.getLogger("stepwire.torch")

DEFAULT_MAX_BYTES = 256 << 20
"""Host bytes of results that may wait for the waiter thread at once (one larger reduction may wait alone)."""
DEFAULT_MAX_ITEMS = 1024
"""Reductions and scalar copies that may wait at once."""

R = TypeVar("R", bound=HostResults)
_Item = tuple[HostResults, Callable[[HostResults], None], int]


class DeviceWaiter:
    """A thread that waits for device results and logs them, so the training thread never waits for a device.

    At most ``max_bytes`` of host result buffers (and ``max_items`` results) wait at once; one result larger than
    ``max_bytes`` is let through when nothing else waits. Beyond that, ``queue`` waits until the waiter has caught
    up (``drop=False``, counted in ``waited`` and ``waited_s``) or drops the new result (``drop=True``, counted in
    ``dropped``). ``errors`` counts results whose waiting or logging failed; ``first_error`` keeps the first message.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, drop: bool = False,
                 max_items: int = DEFAULT_MAX_ITEMS) -> None:
        if max_bytes < 1 or max_items < 1:
            raise ValueError(f"max_bytes and max_items must be at least 1, got {max_bytes} and {max_items}")
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._cond = threading.Condition()
        self._max_bytes, self._max_items, self._drop = max_bytes, max_items, drop
        self._bytes = 0  # host bytes of results queued and not yet logged
        self._items = 0
        self._closed = False
        self.dropped = 0
        """Results not made because too much waited (``drop=True``)."""
        self.waited = 0
        """Times ``queue`` waited for room (``drop=False``)."""
        self.waited_s = 0.0
        """Seconds ``queue`` waited for room in all."""
        self.errors = 0
        """Results whose waiting or logging raised on the waiter thread."""
        self.first_error = ""
        """The first of those errors, as ``"Type: message"`` ("" if none)."""
        self._thread = threading.Thread(target=self._loop, name="stepwire-device-waiter", daemon=True)
        self._thread.start()

    @property
    def pending_bytes(self) -> int:
        """Host bytes of results waiting now."""
        return self._bytes

    def _room(self, nbytes: int) -> bool:
        return self._items == 0 or (self._items < self._max_items and self._bytes + nbytes <= self._max_bytes)

    def queue(self, nbytes: int, start: Callable[[], R], done: Callable[[R], None]) -> bool:
        """Make room for ``nbytes`` of host results (waiting, or with ``drop`` dropping: then False), call ``start()``
        on this thread to queue the device work, and have ``done(results)`` called on the waiter thread once the
        results are on the host."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the device waiter is closed (the run is finished)")
            if not self._room(nbytes):
                if self._drop:
                    self.dropped += 1
                    return False
                t0 = time.monotonic()
                while not self._room(nbytes) and not self._closed:
                    self._cond.wait()
                self.waited += 1
                self.waited_s += time.monotonic() - t0
            self._bytes += nbytes
            self._items += 1
        try:
            results = start()
        except BaseException:
            self._release(nbytes)
            raise
        self._queue.put((results, done, nbytes))  # type: ignore[arg-type]
        return True

    def submit(self, results: R, done: Callable[[R], None]) -> bool:
        """``queue`` for results already queued on the device (False if dropped)."""
        return self.queue(results.nbytes, lambda: results, done)

    def _release(self, nbytes: int) -> None:
        with self._cond:
            self._bytes -= nbytes
            self._items -= 1
            self._cond.notify_all()

    def _error(self, exc: Exception) -> None:
        with self._cond:
            self.errors += 1
            if not self.first_error:
                self.first_error = f"{type(exc).__name__}: {exc}"
        log.error("logging device statistics failed: %s: %s", type(exc).__name__, exc)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            results, done, nbytes = item
            try:
                results.wait()
                done(results)
            except Exception as exc:  # a failure here must not stop later results from being logged
                self._error(exc)
            finally:
                del item, results, done  # host buffers go before their bytes are released
                self._release(nbytes)
                self._queue.task_done()
        self._queue.task_done()

    def join(self) -> None:
        """Wait until everything queued so far is logged."""
        self._queue.join()

    def close(self) -> None:
        """Log what is pending, then stop the thread."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._queue.put(None)
        self._thread.join()


def _by_device(items: Iterable[tuple[str, torch.Tensor]]) -> dict[torch.device, list[tuple[str, torch.Tensor]]]:
    out: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for name, t in items:
        out.setdefault(t.device, []).append((name, t))
    return out


def log_on_device(run: Run, items: Sequence[tuple[str, torch.Tensor]], step: int, scalars: bool,
                  chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> None:
    """Queue the histograms (and, with ``scalars``, the statistics) of tensors at ``step``, per device."""
    for group in _by_device(items).values():
        _queue_reduction(run, group, step, scalars, chunk_elements)


def _queue_reduction(run: Run, group: list[tuple[str, torch.Tensor]], step: int, scalars: bool,
                     chunk_elements: int) -> None:
    tensors = [t for _, t in group]
    names = [n for n, _ in group]
    run._device_waiter().queue(result_bytes(tensors, run._k), lambda: reduce_tensors(tensors, run._k, chunk_elements),
                               lambda r: _log_reduction(run, r, names, step, scalars))


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
    """Log device tensors without synchronising: one-element tensors in ``scalars`` as scalars (copied to the host
    without blocking), the tensors in ``hists`` (0-d ones included) as histograms (reduced on their device); per
    device, the waiter thread logs them when ready."""
    if hists:
        log_on_device(run, list(hists.items()), step, scalars=False)
    for group in _by_device(scalars.items()).values():
        _queue_values(run, group, step)


def _queue_values(run: Run, group: list[tuple[str, torch.Tensor]], step: int) -> None:
    values = [t for _, t in group]
    names = [n for n, _ in group]
    run._device_waiter().queue(8 * len(values), lambda: copy_values(values),
                               lambda r: run._log_stats(dict(zip(names, r.values.tolist(), strict=True)), step))
