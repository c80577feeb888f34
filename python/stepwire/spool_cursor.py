"""The spool's ``cursor`` file: 64 bytes of JSON (segment, byte offset and a crc32 of the two) naming the first
record not yet delivered.

It is overwritten in place after each delivery (no new file and no rename per record, so no new disk block once
it exists: a full disk) but not fsync'd, so a crash can replay a few delivered records, which the collector's
deduplication by (stream, sequence) makes harmless. A cursor that is not to be trusted (torn, so its checksum
does not match; past the end of its segment; inside a record or garbage; at a segment that is gone) is ignored:
reading starts again at the first segment, which replays what was delivered of it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import zlib
from pathlib import Path

from stepwire.spool_format import Position, Segment, segment_numbers, segment_path, starts_record

log = logging.getLogger("stepwire.spool")

CURSOR_BYTES = 64
"""The size of the cursor file (JSON padded with spaces, then a newline)."""


class CursorFile:
    """The cursor file of the spool in ``directory``, kept open for writing once written."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        """The cursor file."""
        return self.directory / "cursor"

    def read(self) -> Position:
        """The cursor, if it points at a record (or at the end of its segment); else the first segment."""
        segments = segment_numbers(self.directory)
        first = Position(segments[0] if segments else 1, 0)
        try:
            c = json.loads(self.path.read_text())
            pos = Position(int(c["segment"]), int(c["offset"]))
            if "crc" in c and int(c["crc"]) != _crc(pos):  # a torn write (cursors of old have none)
                raise ValueError("its checksum does not match")
        except FileNotFoundError:
            return first
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("spool %s: unreadable cursor (%s): replaying from the first segment", self.directory, exc)
            return first
        if pos == first or not segments:
            return first
        try:
            seg = Segment(pos.segment, segment_path(self.directory, pos.segment))
            try:
                size = seg.size()
                ok = 0 <= pos.offset <= size and (pos.offset == size or starts_record(seg, pos.offset, size))
            finally:
                seg.close()
        except OSError:  # its segment is gone
            ok = False
        if not ok:
            log.warning("spool %s: the cursor (segment %d, byte %d) does not point at a record: replaying from the "
                        "first segment (the collector ignores what it already has)", self.directory, pos.segment,
                        pos.offset)
            return first
        return pos

    def write(self, pos: Position) -> None:
        """Overwrite the cursor file in place (64 bytes of JSON with a checksum of its own, so that a torn write
        is found): no new file and no rename per record, and no new block once it exists (a full disk)."""
        line = json.dumps({"segment": pos.segment, "offset": pos.offset, "crc": _crc(pos)})
        data = (line.ljust(CURSOR_BYTES - 1) + "\n").encode()
        if self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size > len(data):
                    os.ftruncate(fd, len(data))
            except OSError:
                os.close(fd)
                raise
            self._fd = fd
        try:
            if os.pwrite(self._fd, data, 0) != len(data):
                raise OSError(errno.EIO, "short write")
        except OSError:
            if os.fstat(self._fd).st_size == 0:  # it was just made and nothing fits: leave no empty file
                with contextlib.suppress(OSError):
                    self.path.unlink()
                os.close(self._fd)
                self._fd = None
            raise

    def close(self) -> None:
        """Close the file kept open for writing (``write`` opens it again)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _crc(pos: Position) -> int:
    """The checksum a cursor file holds of its position."""
    return zlib.crc32(f"{pos.segment}:{pos.offset}".encode())
