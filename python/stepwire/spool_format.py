"""The spool's segment file format: records, their checksums, and reading a segment back (finding damage and
the next intact record after it).

A segment (``00000001.spool``, ``00000002.spool``, ... in a stream's spool directory) is a sequence of records

    b"SWR2" | kind (1 byte) | length (4 bytes LE) | crc32 of the payload (4 bytes LE)
            | crc32 of the 13 header bytes before it (4 bytes LE) | payload

The header checksum covers the kind and the length and, through the payload checksum, the payload: a changed
byte anywhere in a record is found. Records of the first format (``b"SW" | kind | length | crc32 of the
payload``, written by stepwire before this one) are still read; their kind and length are not covered by a
checksum. ``read_record`` returns the record at an offset, or the damage found there (bad checksums, a record
cut short, bytes that are no record) reaching up to the next record that checks out (``resync``).
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"SWR2"
HEADER = struct.Struct("<4sBIII")
"""magic, kind, payload length, crc32 of the payload, crc32 of the header bytes before this field."""
V1_MAGIC = b"SW"
V1_HEADER = struct.Struct("<2sBII")
"""The first record format: magic, kind, payload length, crc32 of the payload (read, no longer written)."""
WINDOW = 1 << 20
"""Bytes a segment is read in at a time for small records."""
CUT_SHORT = "a record cut short"
"""What ``Damage.what`` says of a record that ends past the end of its segment."""

# What a record holds (a serialized message of stepwire.v1): the RPC replaying it.
OPEN_RUN, BATCH, UPDATE_RUN, TEXT, ARTIFACT, DELETE_ARTIFACT = 1, 2, 3, 4, 5, 6
KIND_NAMES = {OPEN_RUN: "OpenRun", BATCH: "Push", UPDATE_RUN: "UpdateRun", TEXT: "LogText", ARTIFACT: "PutArtifact",
              DELETE_ARTIFACT: "DeleteArtifact"}
"""The kinds of record, by the name of the RPC that replays each."""


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
class Record:
    """A record that checks out: its span in the segment, its kind and (when read) its payload."""

    start: int
    end: int
    kind: int
    payload: bytes | None


@dataclass(frozen=True)
class Damage:
    """A damaged stretch of a segment (``what`` says how), up to the next record that checks out."""

    start: int
    end: int
    what: str


class Segment:
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
        """The size of the file now."""
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
        """A record's ``n`` payload bytes at ``offset`` (a large one leaves the next header to be read alone)."""
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
        """Close the file (a second call does nothing)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def read_record(seg: Segment, offset: int, size: int, mode: str) -> Record | Damage | None:
    """The record at ``offset`` of a segment ``size`` bytes long, the damage found there (up to the next record
    that checks out), or None at the end. ``mode``: "payload" (checked and returned), "verify" (checked) or
    "header" (only the header is read and checked)."""
    if offset >= size:
        return None
    head = seg.read(offset, HEADER.size)
    v1 = False
    if head.startswith(MAGIC) or (len(head) < len(MAGIC) and MAGIC.startswith(head)):
        if len(head) < HEADER.size:
            return Damage(offset, size, CUT_SHORT)
        _, kind, length, crc, head_crc = HEADER.unpack(head)
        if zlib.crc32(head[:HEADER.size - 4]) != head_crc:
            return Damage(offset, resync(seg, offset + 1, size), "a damaged record header")
        body = offset + HEADER.size
        end = body + length
        if end > size:
            return Damage(offset, size, CUT_SHORT)
    elif head[:2] == V1_MAGIC and len(head) >= 3 and head[2] in KIND_NAMES:
        v1 = True
        if len(head) < V1_HEADER.size:
            return Damage(offset, size, CUT_SHORT)
        _, kind, length, crc = V1_HEADER.unpack_from(head)
        body = offset + V1_HEADER.size
        end = body + length
        if end > size:  # no header checksum: a damaged length looks like this too
            nxt = resync(seg, offset + 1, size)
            return Damage(offset, nxt, CUT_SHORT if nxt == size else "a damaged record (first format)")
    else:
        return Damage(offset, resync(seg, offset + 1, size), "bytes that are not a record")
    if kind not in KIND_NAMES:
        return Damage(offset, end, f"a record of unknown kind {kind}")
    if mode == "header":
        return Record(offset, end, kind, None)
    payload = seg.payload(body, length)
    if zlib.crc32(payload) != crc:
        if v1:  # the length is not covered by a checksum: find the next record
            return Damage(offset, resync(seg, offset + 1, size), "a bad checksum (first format)")
        return Damage(offset, end, "a bad payload checksum")
    return Record(offset, end, kind, payload if mode == "payload" else None)


def starts_record(seg: Segment, offset: int, size: int) -> bool:
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


def resync(seg: Segment, start: int, size: int) -> int:
    """The offset of the first record that checks out at or after ``start``, or ``size``."""
    pos = start
    while pos < size:
        chunk = seg.read(pos, WINDOW + HEADER.size, window=False)
        i = chunk.find(V1_MAGIC)  # both formats start so
        while 0 <= i < WINDOW:
            if starts_record(seg, pos + i, size):
                return pos + i
            i = chunk.find(V1_MAGIC, i + 1)
        pos += WINDOW
    return size


def segment_path(directory: Path, segment: int) -> Path:
    """The file of segment number ``segment`` in a spool directory."""
    return directory / f"{segment:08d}.spool"


def segment_numbers(directory: Path) -> list[int]:
    """The numbers of the segments in a spool directory, in order (none when it does not exist)."""
    if not directory.exists():
        return []
    return sorted(int(p.stem) for p in directory.glob("*.spool") if p.stem.isdigit())
