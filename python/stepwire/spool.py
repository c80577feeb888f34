"""An append-only, checksummed spool of RPCs the collector has not acknowledged yet, replayed in order.

Layout: a directory per stream holding segment files ``00000001.spool``, ``00000002.spool``, ... (a new one
once a segment reaches 64 MiB) of records

    b"SWR2" | kind (1 byte) | length (4 bytes LE) | crc32 of the payload (4 bytes LE)
            | crc32 of the 13 header bytes before it (4 bytes LE) | payload

and a ``cursor`` file (64 bytes of JSON: segment, byte offset and a crc32 of the two) naming the first record
not yet delivered. The header checksum covers the kind and the length and, through the payload checksum, the
payload: a changed byte anywhere in a record is found. Records of the first format (``b"SW" | kind | length |
crc32 of the payload``, written by stepwire before this one) are still read; their kind and length are not
covered by a checksum.

Fsync policy: every append is written and fsync'd before the call returns (and the directory is fsync'd when
a segment is created), so a record in the spool survives a crash of the process or the machine. An append that
fails (a full disk: ``OSError``) truncates the segment back to its previous size, so it leaves nothing half
written. The cursor is overwritten in place after each delivery (no new file, so no new disk block once it
exists) but not fsync'd, so a crash can replay a few delivered records, which the collector's deduplication by
(stream, sequence) makes harmless. A cursor that is not to be trusted (torn, so its checksum does not match;
past the end of its segment; inside a record or garbage; at a segment that is gone) is ignored: reading starts
again at the first segment, which replays what was delivered of it.

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
import errno
import fcntl
import json
import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("stepwire.spool")

MAGIC = b"SWR2"
HEADER = struct.Struct("<4sBIII")
"""magic, kind, payload length, crc32 of the payload, crc32 of the header bytes before this field."""
V1_MAGIC = b"SW"
V1_HEADER = struct.Struct("<2sBII")
"""The first record format: magic, kind, payload length, crc32 of the payload (read, no longer written)."""
SEGMENT_BYTES = 64 << 20
DAMAGED_SUFFIX = ".damaged"
WINDOW = 1 << 20
CURSOR_BYTES = 64
CUT_SHORT = "a record cut short"

# What a record holds (a serialized message of stepwire.v1): the RPC replaying it.
OPEN_RUN, BATCH, UPDATE_RUN, TEXT, ARTIFACT, DELETE_ARTIFACT = 1, 2, 3, 4, 5, 6
KIND_NAMES = {OPEN_RUN: "OpenRun", BATCH: "Push", UPDATE_RUN: "UpdateRun", TEXT: "LogText", ARTIFACT: "PutArtifact",
              DELETE_ARTIFACT: "DeleteArtifact"}


@dataclass(frozen=True)
class Position:
    """Where a record starts: segment number and byte offset."""

    segment: int
    offset: int


def pack(kind: int, payload: bytes) -> bytes:
    """One record as it is written to a segment."""
    head = struct.pack("<4sBII", MAGIC, kind, len(payload), zlib.crc32(payload))
    return head + struct.pack("<I", zlib.crc32(head)) + payload


@dataclass(frozen=True)
class _Record:
    start: int
    end: int
    kind: int
    payload: bytes | None


@dataclass(frozen=True)
class _Damage:
    start: int
    end: int
    what: str


class _Segment:
    """A segment file open for reading, read through a window so that small records cost one read per window
    and large ones one read each; ``bytes_read`` counts what came from the file."""

    def __init__(self, number: int, path: Path) -> None:
        self.number = number
        self.path = path
        self.fd = -1
        self.fd = os.open(path, os.O_RDONLY)
        self.bytes_read = 0
        self._buf = b""
        self._base = 0
        self._large = False  # the last record read was large: read the next header alone

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def read(self, offset: int, n: int, window: bool = True) -> bytes:
        """Up to ``n`` bytes at ``offset`` (fewer at the end of the file)."""
        rel = offset - self._base
        if 0 <= rel and rel + n <= len(self._buf):
            return self._buf[rel:rel + n]
        if not window or n >= WINDOW // 2 or self._large:
            return self._pread(offset, n)
        self._buf, self._base = self._pread(offset, WINDOW), offset
        return self._buf[:n]

    def payload(self, offset: int, n: int) -> bytes:
        self._large = n >= WINDOW // 4
        return self.read(offset, n)

    def _pread(self, offset: int, n: int) -> bytes:
        parts = []
        while n > 0:
            chunk = os.pread(self.fd, min(n, 1 << 30), offset)
            if not chunk:
                break
            parts.append(chunk)
            offset += len(chunk)
            n -= len(chunk)
        data = b"".join(parts)
        self.bytes_read += len(data)
        return data

    def invalidate(self) -> None:
        """Forget the window (the file changed under it)."""
        self._buf = b""

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _read(seg: _Segment, offset: int, size: int, mode: str) -> _Record | _Damage | None:
    """The record at ``offset`` of a segment ``size`` bytes long, the damage found there (up to the next record
    that checks out), or None at the end. ``mode``: "payload" (checked and returned), "verify" (checked) or
    "header" (only the header is read and checked)."""
    if offset >= size:
        return None
    head = seg.read(offset, HEADER.size)
    v1 = False
    if head.startswith(MAGIC) or (len(head) < len(MAGIC) and MAGIC.startswith(head)):
        if len(head) < HEADER.size:
            return _Damage(offset, size, CUT_SHORT)
        _, kind, length, crc, head_crc = HEADER.unpack(head)
        if zlib.crc32(head[:HEADER.size - 4]) != head_crc:
            return _Damage(offset, _resync(seg, offset + 1, size), "a damaged record header")
        body = offset + HEADER.size
        end = body + length
        if end > size:
            return _Damage(offset, size, CUT_SHORT)
    elif head[:2] == V1_MAGIC and len(head) >= 3 and head[2] in KIND_NAMES:
        v1 = True
        if len(head) < V1_HEADER.size:
            return _Damage(offset, size, CUT_SHORT)
        _, kind, length, crc = V1_HEADER.unpack_from(head)
        body = offset + V1_HEADER.size
        end = body + length
        if end > size:  # no header checksum: a damaged length looks like this too
            nxt = _resync(seg, offset + 1, size)
            return _Damage(offset, nxt, CUT_SHORT if nxt == size else "a damaged record (first format)")
    else:
        return _Damage(offset, _resync(seg, offset + 1, size), "bytes that are not a record")
    if kind not in KIND_NAMES:
        return _Damage(offset, end, f"a record of unknown kind {kind}")
    if mode == "header":
        return _Record(offset, end, kind, None)
    payload = seg.payload(body, length)
    if zlib.crc32(payload) != crc:
        if v1:  # the length is not covered by a checksum: find the next record
            return _Damage(offset, _resync(seg, offset + 1, size), "a bad checksum (first format)")
        return _Damage(offset, end, "a bad payload checksum")
    return _Record(offset, end, kind, payload if mode == "payload" else None)


def _starts_record(seg: _Segment, offset: int, size: int) -> bool:
    """Whether a record that checks out starts at ``offset`` (a header whose checksum matches; for the first
    format, which has none, the whole record)."""
    head = seg.read(offset, HEADER.size, window=False)
    if head.startswith(MAGIC):
        return len(head) == HEADER.size and zlib.crc32(head[:HEADER.size - 4]) == int(HEADER.unpack(head)[4])
    if len(head) < V1_HEADER.size or head[:2] != V1_MAGIC or head[2] not in KIND_NAMES:
        return False
    _, _, length, crc = V1_HEADER.unpack_from(head)
    end = offset + V1_HEADER.size + length
    return end <= size and zlib.crc32(seg.read(offset + V1_HEADER.size, length, window=False)) == int(crc)


def _resync(seg: _Segment, start: int, size: int) -> int:
    """The offset of the first record that checks out at or after ``start``, or ``size``."""
    pos = start
    while pos < size:
        chunk = seg.read(pos, WINDOW + HEADER.size, window=False)
        i = chunk.find(V1_MAGIC)  # both formats start so
        while 0 <= i < WINDOW:
            if _starts_record(seg, pos + i, size):
                return pos + i
            i = chunk.find(V1_MAGIC, i + 1)
        pos += WINDOW
    return size


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
        self._reader: _Segment | None = None
        self._cursor = self._read_cursor()  # what the cursor file says (validated)
        self._pos = self._cursor  # where reading goes on: the head when one was peeked, past damage set aside
        self._head: tuple[_Record, Position] | None = None
        self._count: int | None = None
        self._write: tuple[int, int] | None = None  # segment, size of the segment being appended to
        self._bytes_read = 0
        self._aside: set[tuple[int, int]] = set()  # (segment, offset) of the damage set aside by this object
        self._swept = 0  # the segments before this one were removed
        self._cursor_fd: int | None = None

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
        if self._cursor_fd is not None:
            os.close(self._cursor_fd)
            self._cursor_fd = None

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
        seg = _Segment(last, self._path(last))
        try:
            size = seg.size()
            offset = self._cursor.offset if self._cursor.segment == last else 0
            while (item := _read(seg, offset, size, "header")) is not None:
                if isinstance(item, _Damage) and item.what == CUT_SHORT and item.end == size:
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
            self._write_cursor(nxt)
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

    def _write_cursor(self, pos: Position) -> None:
        """Overwrite the cursor file in place (64 bytes of JSON with a checksum of its own, so that a torn write
        is found): no new file and no rename per record, and no new block once it exists (a full disk)."""
        line = json.dumps({"segment": pos.segment, "offset": pos.offset, "crc": _cursor_crc(pos)})
        data = (line.ljust(CURSOR_BYTES - 1) + "\n").encode()
        if self._cursor_fd is None:
            fd = os.open(self.directory / "cursor", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size > len(data):
                    os.ftruncate(fd, len(data))
            except OSError:
                os.close(fd)
                raise
            self._cursor_fd = fd
        try:
            if os.pwrite(self._cursor_fd, data, 0) != len(data):
                raise OSError(errno.EIO, "short write")
        except OSError:
            if os.fstat(self._cursor_fd).st_size == 0:  # it was just made and nothing fits: leave no empty file
                with contextlib.suppress(OSError):
                    (self.directory / "cursor").unlink()
                os.close(self._cursor_fd)
                self._cursor_fd = None
            raise

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
        self._set_aside(seg, _Damage(record.start, record.end, what), what)
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
                seg = _Segment(number, self._path(number))
            except FileNotFoundError:
                continue
            try:
                size = seg.size()
                offset = pos.offset if number == pos.segment else 0
                while (item := _read(seg, offset, size, "verify" if verify else "header")) is not None:
                    n += isinstance(item, _Record)
                    offset = item.end
            finally:
                seg.close()
        if verify:
            self._count = n
        return n

    def _next(self) -> tuple[_Record, Position] | None:
        """The next record that checks out from ``_pos`` on, setting aside damage on the way."""
        while True:
            seg = self._open_reader(self._pos.segment)
            item = None if seg is None else _read(seg, self._pos.offset, seg.size(), "payload")
            if item is None:  # the end of this segment (or a segment that is gone): go on with the next one
                later = [s for s in self._segments() if s > self._pos.segment]
                if not later:
                    return None
                self._pos = Position(later[0], 0)
                continue
            assert seg is not None
            if isinstance(item, _Damage):
                last = not any(s > seg.number for s in self._segments())
                self._set_aside(seg, item, "cut short at the end of the spool (a crash while appending)"
                                if item.what == CUT_SHORT and last else item.what)
                self._pos = Position(seg.number, item.end)
                continue
            return item, Position(seg.number, item.end)

    def _set_aside(self, seg: _Segment, damage: _Damage, what: str) -> None:
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

    def _open_reader(self, number: int) -> _Segment | None:
        if self._reader is not None and self._reader.number == number:
            return self._reader
        self._close_reader()
        try:
            self._reader = _Segment(number, self._path(number))
        except FileNotFoundError:
            return None
        return self._reader

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._bytes_read += self._reader.bytes_read
            self._reader.close()
            self._reader = None

    def _segments(self) -> list[int]:
        if not self.directory.exists():
            return []
        return sorted(int(p.stem) for p in self.directory.glob("*.spool") if p.stem.isdigit())

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:08d}.spool"

    def _read_cursor(self) -> Position:
        """The cursor, if it points at a record (or at the end of its segment); else the first segment."""
        segments = self._segments()
        first = Position(segments[0] if segments else 1, 0)
        path = self.directory / "cursor"
        try:
            c = json.loads(path.read_text())
            pos = Position(int(c["segment"]), int(c["offset"]))
            if "crc" in c and int(c["crc"]) != _cursor_crc(pos):  # a torn write (cursors of old have none)
                raise ValueError("its checksum does not match")
        except FileNotFoundError:
            return first
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("spool %s: unreadable cursor (%s): replaying from the first segment", self.directory, exc)
            return first
        if pos == first or not segments:
            return first
        try:
            seg = _Segment(pos.segment, self._path(pos.segment))
            try:
                size = seg.size()
                ok = 0 <= pos.offset <= size and (pos.offset == size or _starts_record(seg, pos.offset, size))
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


def _cursor_crc(pos: Position) -> int:
    return zlib.crc32(f"{pos.segment}:{pos.offset}".encode())


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
