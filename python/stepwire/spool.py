"""An append-only, checksummed spool of RPCs the collector has not acknowledged yet, replayed in order.

Layout: a directory per stream holding segment files ``00000001.spool``, ``00000002.spool``, ... (a new one
once a segment reaches 64 MiB) of checksummed records (the format: ``stepwire.spool_format``) and a ``cursor``
file naming the first record not yet delivered (``stepwire.spool_cursor``).

Fsync policy: every append is written and fsync'd before the call returns (and the directory is fsync'd when
a segment is created), so a record in the spool survives a crash of the process or the machine. An append that
fails (a full disk: ``OSError``) truncates the segment back to its previous size, so it leaves nothing half
written. The cursor is overwritten in place after each delivery but not fsync'd: a crash can replay a few
delivered records, which the collector's deduplication by (stream, sequence) makes harmless.

Damage is never fatal and never deleted. A record whose checksums do not match, that is cut short, or that
``reject`` is called on (it checks out but is no message of its kind) is copied to
``<spool>.damaged/segment<N>-offset<M>.bin`` beside the spool directory (fsync'd), counted in ``corrupt`` and
skipped: reading resynchronises at the next record header whose checksum matches, so the intact records after
it are still delivered. A record cut short at the very end of the spool is what a crash while appending
leaves; the next process that appends sets it aside the same way and truncates it, so later appends are
readable.

Reading is incremental: each record is read once (through a 1 MiB window for small records), from the
cursor on; ``count()`` reads the spool once and is then kept up to date by ``append`` and ``pop``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

from stepwire.spool_cursor import CursorFile
from stepwire.spool_format import (
    ARTIFACT,
    BATCH,
    CUT_SHORT,
    DELETE_ARTIFACT,
    KIND_NAMES,
    OPEN_RUN,
    TEXT,
    UPDATE_RUN,
    WINDOW,
    Damage,
    Position,
    Record,
    Segment,
    pack,
    read_record,
    segment_numbers,
    segment_path,
)

# The record kinds live with the format (stepwire.spool_format); spool.BATCH and so on name them everywhere.
__all__ = ["ARTIFACT", "BATCH", "DAMAGED_SUFFIX", "DELETE_ARTIFACT", "KIND_NAMES", "OPEN_RUN", "SEGMENT_BYTES", "TEXT",
           "UPDATE_RUN", "Spool", "spools"]

log = logging.getLogger("stepwire.spool")

SEGMENT_BYTES = 64 << 20
"""A segment this large is followed by a new one."""
DAMAGED_SUFFIX = ".damaged"
"""The suffix of the folder beside a spool that damaged records are copied to."""


class Spool:
    """The spool of one stream in ``directory`` (created on first append)."""

    def __init__(self, directory: Path, segment_bytes: int | None = None) -> None:
        self.directory = directory
        self.segment_bytes = SEGMENT_BYTES if segment_bytes is None else segment_bytes
        """A segment this large is followed by a new one."""
        self.corrupt = 0
        """Damaged records found, set aside (``set_aside``) and skipped."""
        self.set_aside: list[Path] = []
        """Where the damaged records found were copied."""
        self.error: OSError | None = None
        """Why ``peek`` stopped short of the end (a damaged record could not be set aside); None when it did not."""
        self.cursor_error: OSError | None = None
        """Why the last ``pop`` could not record the new cursor (it is kept in memory); None when it could."""
        self._lock_file: int | None = None
        self._reader: Segment | None = None
        self._cursor_file = CursorFile(directory)
        self._cursor = self._cursor_file.read()  # what the cursor file says (validated)
        self._pos = self._cursor  # where reading goes on: the head when one was peeked, past damage set aside
        self._head: tuple[Record, Position] | None = None
        self._count: int | None = None
        self._write: tuple[int, int] | None = None  # segment, size of the segment being appended to
        self._bytes_read = 0
        self._aside: set[tuple[int, int]] = set()  # (segment, offset) of the damage set aside by this object
        self._swept = 0  # the segments before this one were removed

    @property
    def damaged_dir(self) -> Path:
        """Where damaged records are set aside: beside the spool, so removing the spool keeps them."""
        return self.directory.with_name(self.directory.name + DAMAGED_SUFFIX)

    @property
    def bytes_read(self) -> int:
        """Bytes read from segment files so far by ``peek`` (the cost of replaying)."""
        return self._bytes_read + (self._reader.bytes_read if self._reader else 0)

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
        """Release the spool (and the segment open for reading)."""
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None
        self.close()

    def close(self) -> None:
        """Close the files kept open (``peek`` and ``pop`` open them again)."""
        self._close_reader()
        self._cursor_file.close()

    # -- writing ----------------------------------------------------------------------------------------
    def append(self, kind: int, payload: bytes) -> None:
        """Append one record, durable (fsync'd) when this returns; ``OSError`` (a full disk) leaves the spool
        as it was."""
        if self._write is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._write = self._open_for_append()
        segment, size = self._write
        if size >= self.segment_bytes:
            segment, size = segment + 1, 0
        record = pack(kind, payload)
        path = self._path(segment)
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            before = os.fstat(fd).st_size
            try:
                view = memoryview(record)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
                if created:
                    _fsync_dir(self.directory)
            except OSError as exc:
                try:
                    os.ftruncate(fd, before)  # nothing half written stays behind
                except OSError:
                    log.error("spool %s: could not truncate %s back to %d bytes", self.directory, path, before)
                raise OSError(exc.errno, f"cannot append to the spool {path}: {exc.strerror}") from exc
        finally:
            os.close(fd)
        self._write = (segment, before + len(record))
        if self._count is not None:
            self._count += 1
        if self._reader is not None and self._reader.number == segment:
            self._reader.invalidate()

    def _open_for_append(self) -> tuple[int, int]:
        """The last segment and its size, after setting aside and truncating a record cut short at its end (what
        a crash while appending leaves)."""
        segments = self._segments()
        if not segments:
            return max(self._cursor.segment, 1), 0
        last = segments[-1]
        seg = Segment(last, self._path(last))
        try:
            size = seg.size()
            offset = self._cursor.offset if self._cursor.segment == last else 0
            while (item := read_record(seg, offset, size, "header")) is not None:
                if isinstance(item, Damage) and item.what == CUT_SHORT and item.end == size:
                    self._set_aside(seg, item, "cut short at the end of the spool (a crash while appending)")
                    os.truncate(seg.path, item.start)
                    self._close_reader()
                    if self._pos.segment == last and self._pos.offset > item.start:  # the reader skipped it
                        self._pos = Position(last, item.start)
                    return last, item.start
                offset = item.end  # damage in the middle is left to the reader, which sets it aside
        finally:
            seg.close()
        return last, size

    # -- reading ----------------------------------------------------------------------------------------
    def peek(self) -> tuple[int, bytes] | None:
        """The oldest undelivered record as (kind, payload), or None when everything was delivered (or when
        reading cannot go on: ``error`` says why)."""
        if self._head is None:
            try:
                self._head = self._next()
            except OSError as exc:
                if self.error is None or str(self.error) != str(exc):
                    log.warning("spool %s: %s; the records after it stay in the spool", self.directory, exc)
                self.error = exc
                return None
            self.error = None
        if self._head is None:
            return None
        record = self._head[0]
        assert record.payload is not None
        return record.kind, record.payload

    def pop(self) -> None:
        """Mark the record returned by ``peek`` delivered."""
        if self._head is None and self.peek() is None:
            return
        assert self._head is not None
        nxt = self._head[1]
        self._head = None
        self._pos = self._cursor = nxt
        if self._count is not None:
            self._count = max(self._count - 1, 0)
        try:
            self._cursor_file.write(nxt)
        except OSError as exc:  # kept in memory: replaying a few delivered records later is harmless
            if self.cursor_error is None:
                log.warning("spool %s: cannot write the cursor (%s); delivered records may be replayed",
                            self.directory, exc.strerror)
            self.cursor_error = exc
        else:
            self.cursor_error = None
        if nxt.segment != self._swept:  # the first pop, or one in a new segment: remove the ones before
            for segment in self._segments():
                if segment < nxt.segment:
                    self._path(segment).unlink(missing_ok=True)  # fully delivered (damage in it set aside)
            self._swept = nxt.segment

    def reject(self, what: str) -> None:
        """Set aside the record returned by ``peek`` as damaged (``what`` says how: it checks out but cannot be
        replayed) and go on past it; ``OSError`` if it cannot be set aside (then it stays)."""
        if self._head is None and self.peek() is None:
            return
        assert self._head is not None
        record, nxt = self._head
        seg = self._open_reader(nxt.segment)
        if seg is None:
            raise FileNotFoundError(f"spool {self.directory}: segment {nxt.segment} is gone")
        self._set_aside(seg, Damage(record.start, record.end, what), what)
        self.pop()

    def pending(self) -> bool:
        """True while some record is not delivered."""
        return self.peek() is not None

    def count(self, verify: bool = True) -> int:
        """Undelivered records that check out. The first call reads the spool once; later ones are kept up to
        date by ``append`` and ``pop``. ``verify=False`` reads only the headers (a damaged payload is counted)."""
        if verify and self._count is not None:
            return self._count
        n = 0
        pos = self._pos
        for number in self._segments():
            if number < pos.segment:
                continue
            try:
                seg = Segment(number, self._path(number))
            except FileNotFoundError:
                continue
            try:
                size = seg.size()
                offset = pos.offset if number == pos.segment else 0
                while (item := read_record(seg, offset, size, "verify" if verify else "header")) is not None:
                    n += isinstance(item, Record)
                    offset = item.end
            finally:
                seg.close()
        if verify:
            self._count = n
        return n

    def _next(self) -> tuple[Record, Position] | None:
        """The next record that checks out from ``_pos`` on, setting aside damage on the way."""
        while True:
            seg = self._open_reader(self._pos.segment)
            item = None if seg is None else read_record(seg, self._pos.offset, seg.size(), "payload")
            if item is None:  # the end of this segment (or a segment that is gone): go on with the next one
                later = [s for s in self._segments() if s > self._pos.segment]
                if not later:
                    return None
                self._pos = Position(later[0], 0)
                continue
            assert seg is not None
            if isinstance(item, Damage):
                last = not any(s > seg.number for s in self._segments())
                self._set_aside(seg, item, "cut short at the end of the spool (a crash while appending)"
                                if item.what == CUT_SHORT and last else item.what)
                self._pos = Position(seg.number, item.end)
                continue
            return item, Position(seg.number, item.end)

    def _set_aside(self, seg: Segment, damage: Damage, what: str) -> None:
        """Copy a damaged stretch of a segment beside the spool (fsync'd); ``OSError`` if that fails."""
        if (seg.number, damage.start) in self._aside:
            return
        folder = self.damaged_dir
        dest = folder / f"segment{seg.number:08d}-offset{damage.start}.bin"
        tmp = folder / f".{dest.name}.tmp"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                offset = damage.start
                while offset < damage.end:
                    chunk = seg.read(offset, min(WINDOW, damage.end - offset), window=False)
                    if not chunk:
                        break
                    f.write(chunk)
                    offset += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
            _fsync_dir(folder)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise OSError(exc.errno, f"a damaged record in {seg.path} at byte {damage.start} cannot be set aside "
                                     f"in {folder}: {exc.strerror}") from exc
        self._aside.add((seg.number, damage.start))
        self.corrupt += 1
        self.set_aside.append(dest)
        log.error("spool %s: %s in segment %d at byte %d (%d bytes), set aside in %s; the records after it are "
                  "replayed", self.directory, what, seg.number, damage.start, damage.end - damage.start, dest)

    def _open_reader(self, number: int) -> Segment | None:
        if self._reader is not None and self._reader.number == number:
            return self._reader
        self._close_reader()
        try:
            self._reader = Segment(number, self._path(number))
        except FileNotFoundError:
            return None
        return self._reader

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._bytes_read += self._reader.bytes_read
            self._reader.close()
            self._reader = None

    def _segments(self) -> list[int]:
        return segment_numbers(self.directory)

    def _path(self, segment: int) -> Path:
        return segment_path(self.directory, segment)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def spools(directory: Path) -> list[Path]:
    """The stream spools under a data directory's ``spool/`` folder (not the folders of damaged records)."""
    root = directory / "spool"
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.endswith(DAMAGED_SUFFIX))
