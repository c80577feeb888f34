"""An append-only, checksummed spool of RPCs the collector has not acknowledged yet, replayed in order.

Layout: a directory per stream holding segment files ``00000001.spool``, ... of records
``b"SW" | kind (1 byte) | length (4 bytes LE) | crc32 (4 bytes LE) | payload`` and a ``cursor`` file naming the
first record not yet delivered. Fsync policy: every append is flushed and fsync'd before the call returns (a
record in the spool survives a crash of the process or the machine); the cursor is replaced atomically after
each delivery but not fsync'd, so a crash can replay a few delivered records, which the collector's
deduplication by (stream, sequence) makes harmless. A record with a bad checksum or cut short (a write torn
by a crash) ends the readable spool: it is reported and counted, never fatal.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("stepwire.spool")

MAGIC = b"SW"
HEADER = struct.Struct("<2sBII")
SEGMENT_BYTES = 64 << 20

# What a record holds (a serialized message of stepwire.v1): the RPC replaying it.
OPEN_RUN, BATCH, UPDATE_RUN, TEXT, ARTIFACT, DELETE_ARTIFACT = 1, 2, 3, 4, 5, 6
KIND_NAMES = {OPEN_RUN: "OpenRun", BATCH: "Push", UPDATE_RUN: "UpdateRun", TEXT: "LogText", ARTIFACT: "PutArtifact",
              DELETE_ARTIFACT: "DeleteArtifact"}


@dataclass(frozen=True)
class Position:
    """Where a record starts: segment number and byte offset."""

    segment: int
    offset: int


class Spool:
    """The spool of one stream in ``directory`` (created on first append)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.corrupt = 0
        """Records found damaged (bad checksum or cut short) and skipped, with everything after them."""
        self._cursor = self._read_cursor()
        self._head: tuple[Position, int, bytes, Position] | None = None
        self._write: tuple[int, int] | None = None  # segment, size of the segment being appended to
        self._lock_file: int | None = None

    def lock(self) -> bool:
        """Take the spool for this process (its writer, or a sync); False if another process holds it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_file = fd
        return True

    def unlock(self) -> None:
        """Release the spool."""
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    # -- writing ----------------------------------------------------------------------------------------
    def append(self, kind: int, payload: bytes) -> None:
        """Append one record, durable (fsync'd) when this returns."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._write is None:
            segments = self._segments()
            last = segments[-1] if segments else max(self._cursor.segment, 1)
            self._write = (last, self._path(last).stat().st_size if self._path(last).exists() else 0)
        segment, size = self._write
        if size >= SEGMENT_BYTES:
            segment, size = segment + 1, 0
        record = HEADER.pack(MAGIC, kind, len(payload), zlib.crc32(payload)) + payload
        with open(self._path(segment), "ab") as f:
            f.write(record)
            f.flush()
            os.fsync(f.fileno())
        self._write = (segment, size + len(record))

    # -- reading ----------------------------------------------------------------------------------------
    def peek(self) -> tuple[int, bytes] | None:
        """The oldest undelivered record as (kind, payload), or None when everything was delivered."""
        if self._head is None:
            self._head = next(self._records(self._cursor), None)
        return None if self._head is None else (self._head[1], self._head[2])

    def pop(self) -> None:
        """Mark the record returned by ``peek`` delivered."""
        if self._head is None and self.peek() is None:
            return
        assert self._head is not None
        nxt = self._head[3]
        for segment in self._segments():
            if segment < nxt.segment:
                self._path(segment).unlink(missing_ok=True)  # fully delivered
        self._cursor = nxt
        self._head = None
        tmp = self.directory / ".cursor.tmp"
        tmp.write_text(json.dumps({"segment": nxt.segment, "offset": nxt.offset}))
        os.replace(tmp, self.directory / "cursor")

    def pending(self) -> bool:
        """True while some record is not delivered."""
        return self.peek() is not None

    def count(self) -> int:
        """Undelivered records (reads the spool)."""
        return sum(1 for _ in self._records(self._cursor))

    def _records(self, start: Position) -> Iterator[tuple[Position, int, bytes, Position]]:
        segments = self._segments()
        for segment in segments:
            if segment < start.segment:
                continue
            offset = start.offset if segment == start.segment else 0
            try:
                data = self._path(segment).read_bytes()
            except FileNotFoundError:
                continue
            while offset < len(data):
                if len(data) - offset < HEADER.size:
                    self._damaged(segment, offset, "a cut-short header")
                    return
                magic, kind, length, crc = HEADER.unpack_from(data, offset)
                body = data[offset + HEADER.size:offset + HEADER.size + length]
                if magic != MAGIC or len(body) != length or zlib.crc32(body) != crc or kind not in KIND_NAMES:
                    self._damaged(segment, offset, "a bad record")
                    return
                end = offset + HEADER.size + length
                nxt = Position(segment, end) if end < len(data) or segment == segments[-1] else Position(
                    segment + 1, 0)
                yield Position(segment, offset), kind, body, nxt
                offset = end

    def _damaged(self, segment: int, offset: int, what: str) -> None:
        self.corrupt += 1
        log.error("spool %s: %s in segment %d at byte %d; the records after it are not replayed",
                  self.directory, what, segment, offset)

    def _segments(self) -> list[int]:
        if not self.directory.exists():
            return []
        return sorted(int(p.stem) for p in self.directory.glob("*.spool") if p.stem.isdigit())

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:08d}.spool"

    def _read_cursor(self) -> Position:
        try:
            c = json.loads((self.directory / "cursor").read_text())
            return Position(int(c["segment"]), int(c["offset"]))
        except (OSError, ValueError, KeyError, TypeError):
            segments = self._segments()
            return Position(segments[0] if segments else 1, 0)


def spools(directory: Path) -> list[Path]:
    """The stream spools under a data directory's ``spool/`` folder."""
    root = directory / "spool"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []
