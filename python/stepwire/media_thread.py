"""The run's media thread: it runs each logging call's ``Job`` (conversion, encoding), writes each record to the
run's staging directory and hands it to the sender thread as an artifact upload carrying ``MediaInfo``; it holds at
most ``QUEUE_BYTES`` of copies meanwhile."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stepwire import mediatypes, spool
from stepwire.v1 import ingest_pb2

if TYPE_CHECKING:
    from stepwire.run import Run

log = logging.getLogger("stepwire.media")

MAX_MEDIA_ITEMS = 100_000
"""Media records one process may log in a run; the next call raises ``ValueError``."""

QUEUE_BYTES = 256 << 20
"""Bytes of copied arrays and given bytes waiting for the media thread; beyond that a logging call waits for room
(``policy="block"``, at most ``block_timeout``) or drops the record (``policy="drop"``), counted in
``run.stats()["media_dropped"]``. A single larger record goes through alone."""


@dataclass
class Encoded:
    """One record ready for the sender: ``payload`` is bytes, or a staged file the record takes over."""

    name: str
    kind: str
    mime: str
    payload: bytes | Path
    checked: bool  # encoded by stepwire (else the content is checked like the collector does, first)


@dataclass
class Job:
    """A logging call's work for the media thread: ``make`` converts and encodes."""

    step: int
    wall_time: float
    caption: str
    nbytes: int
    make: Callable[[], list[Encoded]]


class MediaEncoder:
    """The run's media thread: runs each call's ``Job`` (conversion, encoding), stages the result and hands it to
    the sender. Holds at most ``QUEUE_BYTES`` of copies; under ``drop`` a call that finds it full drops its
    record (counted), else it waits up to ``block_timeout`` for room, then drops and counts."""

    def __init__(self, run: Run, drop: bool, block_timeout: float) -> None:
        self._run = run
        self._drop = drop
        self._block_timeout = block_timeout
        self._cv = threading.Condition()
        self._jobs: deque[Job] = deque()
        self._held = 0
        self._busy = False
        self._closed = False
        self.logged = 0    # records accepted by logging calls
        self.encoded = 0   # records handed to the sender
        self.dropped = 0   # records dropped: the queue stayed full
        self.errors = 0    # records that failed to encode, or whose content was not what it claimed
        self.first_error = ""
        self._thread = threading.Thread(target=self._loop, name="stepwire-media", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> bool:
        """Queue ``job``; False (and counted in ``dropped``) if there is no room within the policy."""
        with self._cv:
            if self.logged >= MAX_MEDIA_ITEMS:
                raise ValueError(f"a run holds at most {MAX_MEDIA_ITEMS} media records per process")
            deadline = time.monotonic() + (0.0 if self._drop else self._block_timeout)
            while self._held and self._held + job.nbytes > QUEUE_BYTES and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.dropped += 1
                    if self.dropped == 1:
                        log.warning("stepwire: media records are being dropped: more than %d MiB of images wait "
                                    "for the media thread (counted in run.stats()['media_dropped'])",
                                    QUEUE_BYTES >> 20)
                    return False
                self._cv.wait(min(left, 0.1))
            self.logged += 1
            self._held += job.nbytes
            self._jobs.append(job)
            self._cv.notify_all()
            return True

    def join(self) -> None:
        """Wait until every queued record is handed to the sender (or failed)."""
        with self._cv:
            while self._jobs or self._busy:
                self._cv.wait(0.1)

    def close(self) -> None:
        """Finish the queued records, then stop the thread."""
        self.join()
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join()

    def stats(self) -> dict[str, Any]:
        """The ``media_*`` counts of ``Run.stats()``."""
        with self._cv:
            return {"media_logged": self.logged, "media_sent": self.encoded, "media_dropped": self.dropped,
                    "media_errors": self.errors, "media_error": self.first_error, "media_held_bytes": self._held}

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._closed:
                    self._cv.wait()
                if not self._jobs:
                    return
                job = self._jobs.popleft()
                self._busy = True
            try:
                self._handle(job)
            except Exception as exc:
                self._error(f"{type(exc).__name__}: {exc}")
            finally:
                with self._cv:
                    self._busy = False
                    self._held -= job.nbytes
                    self._cv.notify_all()

    def _error(self, message: str) -> None:
        with self._cv:
            self.errors += 1
            first = self.errors == 1
            if first:
                self.first_error = message
        if first:
            log.warning("stepwire: a media record could not be logged: %s (later ones are counted in "
                        "run.stats()['media_errors'])", message)

    def _handle(self, job: Job) -> None:
        run = self._run
        for item in job.make():
            staged = run._staging / uuid.uuid4().hex
            try:
                if isinstance(item.payload, bytes):
                    run._staging.mkdir(parents=True, exist_ok=True)
                    staged.write_bytes(item.payload)
                else:
                    os.replace(item.payload, staged)
                width, height = (_png_size(item.payload) if item.checked and isinstance(item.payload, bytes)
                                 else mediatypes.check_content(item.kind, item.mime, staged))
            except (OSError, ValueError) as exc:
                staged.unlink(missing_ok=True)
                self._error(f"{item.name!r} at step {job.step}: {exc}")
                continue
            chunk = ingest_pb2.ArtifactChunk(
                run_id=run.id, rank=run.rank, name=item.name, step=job.step, wall_time=job.wall_time,
                source_path=str(staged), media=ingest_pb2.MediaInfo(kind=item.kind, mime=item.mime,
                                                                    caption=job.caption, width=width, height=height))
            run._sender.submit(spool.ARTIFACT, chunk)
            with self._cv:
                self.encoded += 1


def _png_size(content: bytes) -> tuple[int, int]:
    """(width, height) of a PNG stepwire encoded (read from its header); (0, 0) for other content."""
    if content.startswith(b"\x89PNG\r\n\x1a\n") and len(content) >= 24:
        return int.from_bytes(content[16:20], "big"), int.from_bytes(content[20:24], "big")
    return 0, 0


IDLE_STATS: dict[str, Any] = {"media_logged": 0, "media_sent": 0, "media_dropped": 0, "media_errors": 0,
                              "media_error": "", "media_held_bytes": 0}
"""``MediaEncoder.stats()`` of a run that logged no media."""
