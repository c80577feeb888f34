"""Console capture: what a rank prints to ``sys.stdout``/``sys.stderr``, kept with the run as lines.

``init`` (``console=True``, the default; ``console=False`` or ``$STEPWIRE_CONSOLE=0`` turns it off) replaces
``sys.stdout`` and ``sys.stderr`` with tees that pass every write on to the original stream unchanged (so the
output is printed as before) and note it, with its wall time and the run's current step (``run.step``), for the
run's console thread. That thread splits the notes into lines, and at least every second (at once when a Python
traceback starts on stderr) hands them to the run's sender as text records named ``stepwire/console`` (a JSON
list of lines per record), which the sender delivers or spools like any other record: what was printed up to a
second before a crash (SIGKILL included) is in the store, or in the spool for ``stepwire sync``. ``Run.finish``
ships the rest and puts the original streams back. Read the lines with ``RunView.console(rank=None)`` or
``stepwire logs RUN [--rank N] [--follow]``.

Captured is what goes through ``sys.stdout``/``sys.stderr`` (``print``, ``logging``'s stream handlers,
tracebacks, tqdm): output written to file descriptors 1 and 2 directly (C libraries, subprocesses) is not.
Carriage returns keep what a terminal would show (a progress bar's last state); a line that stays open longer
than ``PARTIAL_LINE_S`` is shipped as it is.

Limits, per process: a line longer than ``MAX_LINE_CHARS`` (16 Ki characters) is truncated
(``run.stats()["console_truncated"]``); at most ``MAX_BYTES`` (32 MiB of UTF-8 text) is kept, and lines beyond it
are counted in ``stats()["console_dropped"]``, as are writes made while more than ``MAX_PENDING_CHARS`` (4 Mi
characters) wait for the console thread.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from stepwire import spool
from stepwire.store.base import TextEntry
from stepwire.v1 import ingest_pb2

if TYPE_CHECKING:
    from stepwire.run import Run

log = logging.getLogger("stepwire")

ENV = "STEPWIRE_CONSOLE"
CONSOLE_NAME = "stepwire/console"
"""The name of the text records that hold console lines."""
MAX_LINE_CHARS = 16 * 1024
MAX_BYTES = 32 << 20
MAX_PENDING_CHARS = 4 << 20
FLUSH_S = 1.0
PARTIAL_LINE_S = 5.0
RECORD_BYTES = 1 << 20
_TRACEBACK = "Traceback (most recent call last)"
STREAMS = ("stdout", "stderr")
IDLE_STATS = {"console_lines": 0, "console_bytes": 0, "console_dropped": 0, "console_truncated": 0}
"""``Run.stats()``'s console counters of a run that does not capture its console."""


@dataclass(frozen=True)
class ConsoleLine:
    """One line a rank printed: ``stream`` is "stdout" or "stderr", ``step`` the run's step when it was written."""

    rank: int
    stream: str
    step: int
    wall_time: float
    text: str


def enabled(console: bool | None) -> bool:
    """``console`` if given, else ``$STEPWIRE_CONSOLE`` (``0``/``false``/``no``/``off`` turn it off)."""
    if console is not None:
        return bool(console)
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


class _Tee:
    """Stands in for ``sys.stdout``/``sys.stderr``: writes go to the original stream, then to the capture."""

    def __init__(self, original: TextIO, capture: ConsoleCapture, code: int) -> None:
        self._original = original
        self._capture: ConsoleCapture | None = capture
        self._code = code

    def write(self, s: str) -> int:
        n = self._original.write(s)
        capture = self._capture
        if capture is not None:
            capture.add(self._code, s)
        return n

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # never ask the original for our own attributes (copy, pickle)
            if name.startswith("__") or name in ("_original", "_capture", "_code"):
                raise AttributeError(name)
        return getattr(self._original, name)


_captures: weakref.WeakSet[ConsoleCapture] = weakref.WeakSet()


def _after_fork() -> None:
    """A forked child (a data loader worker) has no console thread: its writes are only printed."""
    for capture in list(_captures):
        capture._forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _display(line: str) -> str:
    """What a terminal shows of text written with carriage returns (the last non-empty overwrite)."""
    if "\r" not in line:
        return line
    parts = [p for p in line.split("\r") if p]
    return parts[-1] if parts else ""


class _Open:
    """The line a stream is writing now."""

    def __init__(self) -> None:
        self.text = ""
        self.wall = 0.0
        self.step = 0
        self.since = 0.0


class ConsoleCapture:
    """Tees ``sys.stdout``/``sys.stderr`` into ``run`` as console lines until ``close``."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self._pending: deque[tuple[float, int, int, str]] = deque()  # appended by writers, popped by the thread
        self._pending_chars = 0  # approximate (updated without a lock): only bounds what waits
        self._forked = False
        self._dropped_writes = 0  # lines of writes refused by add (the writers' count; the thread keeps its own)
        self._wake = threading.Event()
        self._urgent = False
        self._closing = False
        self._open = [_Open(), _Open()]
        self._lines: list[list[Any]] = []
        self._record_bytes = 0
        self._sequence = 0
        self._stream_id = f"{run._stream_id}-console"
        self.lines = 0
        """Lines handed to the sender."""
        self.bytes = 0
        self.dropped = 0
        self.truncated = 0
        self._tees: list[_Tee] = []
        for code, attr in enumerate(STREAMS):
            current = getattr(sys, attr)
            if isinstance(current, _Tee) and current._capture is not None:
                continue  # another run of this process captures this stream already
            tee = _Tee(current, self, code)
            setattr(sys, attr, tee)
            self._tees.append(tee)
        self._thread = threading.Thread(target=self._loop, name="stepwire-console", daemon=True)
        self._thread.start()
        _captures.add(self)

    # -- the writing threads ------------------------------------------------------------------------------
    def add(self, code: int, s: str) -> None:
        """Note a write (any thread; no lock: a deque append is atomic)."""
        if not s or self._closing or self._forked:
            return
        if self._pending_chars > MAX_PENDING_CHARS:
            self._dropped_writes += s.count("\n") or 1
            return
        self._pending.append((time.time(), self._run.step, code, s))
        self._pending_chars += len(s)
        if code == 1 and _TRACEBACK in s:
            self._urgent = True
            self._wake.set()

    def add_exception(self, tp: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        """Note the traceback of an uncaught exception as stderr lines (``sys.excepthook`` prints it only after
        the runs have finished)."""
        self.add(1, "".join(traceback.format_exception(tp, value, tb)))

    def stats(self) -> dict[str, int]:
        """``console_lines`` shipped, ``console_bytes`` of text, ``console_dropped`` and ``console_truncated``."""
        return {"console_lines": self.lines, "console_bytes": self.bytes,
                "console_dropped": self.dropped + self._dropped_writes, "console_truncated": self.truncated}

    def close(self, timeout: float = 10.0) -> None:
        """Put the original streams back (or make the tees pass-through when something wrapped them since), ship
        every line, and stop the thread."""
        for tee in self._tees:
            attr = STREAMS[tee._code]
            if getattr(sys, attr) is tee:
                setattr(sys, attr, tee._original)
            tee._capture = None
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)

    # -- the console thread ---------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            self._wake.wait(FLUSH_S)
            self._wake.clear()
            closing = self._closing
            if self._urgent and not closing:
                time.sleep(0.1)  # let the traceback finish
            self._urgent = False
            try:
                self._ship(final=closing)
            except Exception as exc:  # never let the thread die: count what it held
                log.error("console capture failed: %s", exc)
            if closing:
                return

    def _ship(self, final: bool) -> None:
        pending = self._pending
        while True:
            try:
                wall, step, code, s = pending.popleft()
            except IndexError:
                break
            self._pending_chars -= len(s)
            self._take(code, s, wall, step)
        now = time.monotonic()
        for code, line in enumerate(self._open):
            if line.text and (final or now - line.since >= PARTIAL_LINE_S):
                self._emit(code, line.wall, line.step, line.text)
                line.text = ""
        self._send()

    def _take(self, code: int, s: str, wall: float, step: int) -> None:
        line = self._open[code]
        pieces = s.split("\n")
        for i, piece in enumerate(pieces):
            if i > 0:
                self._emit(code, line.wall, line.step, line.text)
                line.text = ""
            if piece:
                if not line.text:
                    line.wall, line.step, line.since = wall, step, time.monotonic()
                line.text += piece
                if len(line.text) > 4 * MAX_LINE_CHARS:  # bound what an open line holds
                    back = "\r" if line.text.endswith("\r") else ""
                    line.text = _display(line.text)[:MAX_LINE_CHARS + 1] + back

    def _emit(self, code: int, wall: float, step: int, text: str) -> None:
        text = _display(text)
        if len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS]
            self.truncated += 1
        size = len(text.encode("utf-8", "replace"))
        if self.bytes + size > MAX_BYTES:
            self.dropped += 1
            return
        self.bytes += size
        self._lines.append([wall, step, code, text])
        self._record_bytes += size + 32
        if self._record_bytes >= RECORD_BYTES:
            self._send()

    def _send(self) -> None:
        if not self._lines:
            return
        lines, self._lines, self._record_bytes = self._lines, [], 0
        self._sequence += 1
        run = self._run
        record = ingest_pb2.TextRecord(run_id=run.id, rank=run.rank, name=CONSOLE_NAME, step=int(lines[0][1]),
                                       wall_time=float(lines[0][0]),
                                       text=json.dumps({"seq": self._sequence, "lines": lines}),
                                       stream_id=self._stream_id, sequence=self._sequence)
        run._sender.submit(spool.TEXT, record)
        self.lines += len(lines)


def parse(entries: Iterable[TextEntry], rank: int | None = None) -> list[ConsoleLine]:
    """The console lines held by text records ``entries`` (of ``rank`` only, if given): each rank's in the order
    printed, the ranks merged by wall time."""
    by_rank: dict[int, list[tuple[float, int, list[Any]]]] = {}
    for e in entries:
        if e.name != CONSOLE_NAME or (rank is not None and e.rank != rank):
            continue
        try:
            body = json.loads(e.text)
            chunk = (e.wall_time, int(body.get("seq", 0)), list(body["lines"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # not written by this module
        by_rank.setdefault(e.rank, []).append(chunk)
    per_rank: list[list[ConsoleLine]] = []
    for r, chunks in sorted(by_rank.items()):
        chunks.sort(key=lambda c: (c[0], c[1]))
        out = []
        for _, _, lines in chunks:
            for item in lines:
                try:
                    wall, step, code, text = item
                    out.append(ConsoleLine(r, STREAMS[int(code)], int(step), float(wall), str(text)))
                except (ValueError, TypeError, IndexError):
                    continue
        per_rank.append(out)
    return list(heapq.merge(*per_rank, key=lambda line: line.wall_time))
