"""A stream's shared-memory segment, seen from outside the process that logs into it (docs/segment.md).

``init`` creates ``/dev/shm/stepwire-<uid>-<stream id>`` (the C++ core maps it); this module names it, reads
what a dead producer left there (``SegmentView``) and tells whether that producer is dead (``owner_dead``).
"""

from __future__ import annotations

import json
import mmap
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from stepwire import _core

SHM_DIR = Path("/dev/shm")
SHM_ENV = "STEPWIRE_SHM"
"""A run's rings, journal and series table live in shared memory, so that what it logged survives its crash
(docs/segment.md); ``$STEPWIRE_SHM=0`` keeps them in process memory instead."""
OFF_VALUES = ("0", "false", "no", "off")
"""Values of ``$STEPWIRE_SHM`` (and ``$STEPWIRE_AGENT``) that turn it off."""

RECORD = np.dtype([("series", "<u4"), ("reserved", "<u4"), ("step", "<i8"), ("value", "<f8"), ("wall", "<f8")])
"""One scalar record as the rings and the journal hold it (scheme.hpp's ``Record``)."""

_HEADER = struct.Struct("<QIIqQQIIQQQQQQQQQQQIIQQQQ")
_ENTRY_RECORDS, _ENTRY_SEAL, _ENTRY_HISTOGRAM = 1, 2, 3
_HIST_FIXED = struct.Struct("<QIB3xqdqdddqqqII")
_SLOT_HEADER = 256
_NO_SLOT = 0xFFFFFFFF
_META_OFFSET = 1024
_RAW_DONE_OFFSET = 176


def prefix() -> str:
    """The file name prefix of this user's segments."""
    return f"stepwire-{os.getuid()}-"


def segment_path(stream_id: str, remote: bool, agent_allowed: bool = True) -> tuple[str, str]:
    """(path, "") for a new stream's segment, or ("", why there is none): ``$STEPWIRE_SHM=0``, a run that logs
    to a remote collector with no node agent allowed (nothing on this node would drain it: ``stepwire.agent``),
    or no writable ``/dev/shm``."""
    if os.environ.get(SHM_ENV, "1").strip().lower() in OFF_VALUES:
        return "", f"${SHM_ENV}={os.environ[SHM_ENV]}"
    if remote and not agent_allowed:
        return "", "the run logs to a remote collector and $STEPWIRE_AGENT=0: nothing on this node would drain it"
    if not SHM_DIR.is_dir() or not os.access(SHM_DIR, os.W_OK):
        return "", f"{SHM_DIR} is not a writable directory"
    return str(SHM_DIR / f"{prefix()}{stream_id}"), ""


def segments() -> list[Path]:
    """This user's segment files, oldest first (not the raw-values files beside them: ``stepwire.segment_raw``)."""
    try:
        found = [p for p in SHM_DIR.iterdir() if p.name.startswith(prefix()) and ".raw" not in p.name]
    except OSError:
        return []
    return sorted(found, key=lambda p: p.name)


def start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot, /proc), or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == b"Z":  # exited, not reaped yet
        return None
    return int(fields[19])


def owner_dead(meta: dict[str, Any], pid: int) -> bool:
    """True once the process that created a segment is gone (its pid free, or reused by another process)."""
    if pid <= 0:
        return True
    started = start_time(pid)
    if started is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return start_time(pid) is None
    expected = meta.get("start_time")
    return isinstance(expected, int) and expected != started


@dataclass
class Recovered:
    """What a segment holds that may not be stored yet: ``sealed`` batches (sequence, records, histograms) the
    dead process sealed and never retired, then the records and histograms it took in but never sealed, under
    sequences from ``next_sequence`` on."""

    meta: dict[str, Any]
    pid: int
    state: int
    defs: list[tuple[int, str, int]]
    sealed: list[tuple[int, npt.NDArray[Any], list[dict[str, Any]]]] = field(default_factory=list)
    open_records: npt.NDArray[Any] = field(default_factory=lambda: np.zeros(0, RECORD))
    open_histograms: list[dict[str, Any]] = field(default_factory=list)
    next_sequence: int = 1
    retired_sequence: int = 0
    raw_done: int = 0
    """Raw-values files (``stepwire.segment_raw``) up to this id are settled: queued, sent or counted dropped."""
    raw_queued: set[int] = field(default_factory=set)
    """Ids of raw-values files whose histogram the histogram queue holds (``raw_done`` may not say so yet)."""
    raw_binned: int = 0
    """Raw-values files the survivor binned (their histograms are in ``open_histograms``)."""
    raw_damaged: int = 0
    """Raw-values files the survivor found damaged and removed without storing anything from them."""


DAMAGED = -1
"""``Recovered.state`` of a segment whose journal, rings or tables do not parse: nothing of it can be trusted."""


def open_own(path: Path, flags: int = os.O_RDONLY) -> int | None:
    """A descriptor of the segment file ``path`` if it is a regular file of this user (not a link, not another
    user's file planted under this user's prefix in the world-writable /dev/shm); None otherwise or if gone."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:  # gone meanwhile, a symbolic link (ELOOP), not ours to open
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
        os.close(fd)
        return None
    return fd


def read(path: Path) -> Recovered | None:
    """Parse the segment at ``path`` (the caller has made sure its producer is dead before trusting the data);
    None if it is not a segment of this version (or is being created), not this user's own file, or is gone. A
    segment that does not parse comes back with ``state`` ``DAMAGED`` and whatever of its header could be read."""
    fd = open_own(path)
    if fd is None:
        return None
    try:
        size = os.fstat(fd).st_size
        if size < 4096:
            return None
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as m:
            buf = memoryview(m)
            try:
                return _parse(buf)
            except (struct.error, ValueError, IndexError, OverflowError, MemoryError, TypeError, ZeroDivisionError):
                return _damaged(buf)
            finally:
                buf.release()
    finally:
        os.close(fd)


def read_meta(path: Path) -> tuple[dict[str, Any], int] | None:
    """The metadata and owner pid of the segment at ``path`` from its first page alone (cheap: for deciding
    whether to read it whole); None if it is not this user's segment file, too short, or gone."""
    fd = open_own(path)
    if fd is None:
        return None
    try:
        head = os.pread(fd, _META_OFFSET + 3072, 0)
    finally:
        os.close(fd)
    if len(head) < _META_OFFSET + 3072:
        return None
    return _meta(memoryview(head))


def _meta(buf: memoryview) -> tuple[dict[str, Any], int]:
    pid = struct.unpack_from("<q", buf, 16)[0]
    try:
        meta_bytes = struct.unpack_from("<I", buf, _HEADER.size - 36)[0]
        meta = json.loads(bytes(buf[_META_OFFSET:_META_OFFSET + min(meta_bytes, 3072)]))
    except (struct.error, ValueError):
        meta = {}
    return meta if isinstance(meta, dict) else {}, pid


def _damaged(buf: memoryview) -> Recovered:
    """What a segment that does not parse still says of its owner: its pid, and its metadata if that parses."""
    meta, pid = _meta(buf)
    return Recovered(meta=meta, pid=pid, state=DAMAGED, defs=[])


def _parse(buf: memoryview) -> Recovered | None:
    (magic, version, _hb, pid, _r0, _beat, slots, capacity, rings_off, slot_bytes, journal_off, journal_bytes,
     table_off, _table_bytes, write, retired, table_used, next_seq, retired_seq, state,
     meta_bytes, queue_off, queue_bytes, queue_write, queue_taken) = _HEADER.unpack_from(buf, 0)
    if magic != _core.SEGMENT_MAGIC or version != _core.SEGMENT_VERSION:
        return None
    size = len(buf)
    if not (0 < slots <= 64 and capacity > 0 and slot_bytes >= _SLOT_HEADER + capacity * RECORD.itemsize
            and rings_off + slots * slot_bytes <= size and 0 < journal_bytes and journal_off + journal_bytes <= size
            and table_off + table_used <= size and 0 < queue_bytes and queue_off + queue_bytes <= size
            and retired <= write <= retired + journal_bytes and queue_taken <= queue_write <= queue_taken + queue_bytes
            and meta_bytes <= 3072):
        raise ValueError("the segment's header points outside it")
    try:
        meta = json.loads(bytes(buf[_META_OFFSET:_META_OFFSET + meta_bytes]) or b"{}")
    except ValueError:
        meta = {}
    defs = _table(bytes(buf[table_off:table_off + table_used]))
    out = Recovered(meta=meta, pid=pid, state=state, defs=defs, retired_sequence=retired_seq,
                    raw_done=struct.unpack_from("<Q", buf, _RAW_DONE_OFFSET)[0])

    # the journal between the retired cursor and the write cursor, unrolled
    data = _unroll(buf, journal_off, journal_bytes, retired, write)
    covered: dict[int, int] = {}
    journaled: set[int] = set()
    records: list[npt.NDArray[Any]] = []
    hists: list[dict[str, Any]] = []
    last_seal = 0
    pos = 0
    while pos + 8 <= len(data):
        kind, count = struct.unpack_from("<II", data, pos)
        if kind == _ENTRY_RECORDS:
            slot, first = struct.unpack_from("<I4xQ", data, pos + 8)
            recs = np.frombuffer(data, RECORD, count, pos + 24).copy()
            records.append(recs)
            if slot != _NO_SLOT:
                covered[slot] = max(covered.get(slot, 0), first + count)
            pos += 24 + count * RECORD.itemsize
        elif kind == _ENTRY_SEAL:
            (seq,) = struct.unpack_from("<Q", data, pos + 8)
            out.sealed.append((seq, _concat(records), hists))
            records, hists, last_seal = [], [], seq
            pos += 16
        elif kind == _ENTRY_HISTOGRAM:
            hists.append(_histogram(data, pos + 8))
            journaled.add(hists[-1]["index"])
            pos += 8 + count
        else:  # cannot be: stop at what is certain
            break
    # what the rings hold beyond the journal's copy of them
    for slot in range(slots):
        base = rings_off + slot * slot_bytes
        head, = struct.unpack_from("<Q", buf, base)
        tail, = struct.unpack_from("<Q", buf, base + 64)
        in_use, = struct.unpack_from("<I", buf, base + 128)
        if not in_use:
            continue
        start = max(tail, covered.get(slot, tail))
        n = min(head - start, capacity) if head > start else 0
        if n:
            ring = np.frombuffer(buf, RECORD, capacity, base + _SLOT_HEADER)
            idx = (np.arange(start, start + n, dtype=np.uint64) % np.uint64(capacity)).astype(np.int64)
            records.append(ring[idx].copy())
    out.open_records = _concat(records)
    # binned histograms still queued for the drainer (those journaled since are in the journal)
    queued = _unroll(buf, queue_off, queue_bytes, queue_taken, queue_write)
    pos = 0
    while pos + 8 <= len(queued):
        kind, count = struct.unpack_from("<II", queued, pos)
        if kind != _ENTRY_HISTOGRAM:
            break
        h = _histogram(queued, pos + 8)
        if h["index"] not in journaled:
            hists.append(h)
        out.raw_queued.add(h["raw"])
        pos += 8 + count
    out.open_histograms = hists
    out.next_sequence = max(next_seq, last_seal + 1, retired_seq + 1)
    return out


def _unroll(buf: memoryview, offset: int, size: int, start: int, end: int) -> bytes:
    """The bytes of a byte ring (``size`` bytes at ``offset``) between the logical offsets start and end."""
    lo, live = start % size, end - start
    if lo + live <= size:
        return bytes(buf[offset + lo:offset + lo + live])
    return bytes(buf[offset + lo:offset + size]) + bytes(buf[offset:offset + (lo + live - size)])


def _concat(parts: list[npt.NDArray[Any]]) -> npt.NDArray[Any]:
    return np.concatenate(parts) if parts else np.zeros(0, RECORD)


def _table(raw: bytes) -> list[tuple[int, str, int]]:
    defs = []
    pos = 0
    while pos + 8 <= len(raw):
        sid, kind, length = struct.unpack_from("<IB1xH", raw, pos)
        defs.append((sid, raw[pos + 8:pos + 8 + length].decode("utf-8", "replace"), kind))
        pos += (8 + length + 7) & ~7
    return defs


def _histogram(data: bytes, pos: int) -> dict[str, Any]:
    (index, series, k, step, wall, count, total, lo, hi, nan, pos_inf, neg_inf,
     buckets, raw) = _HIST_FIXED.unpack_from(data, pos)
    at = pos + _HIST_FIXED.size
    indices = np.frombuffer(data, "<i4", buckets, at).copy()
    at += (buckets * 4 + 7) & ~7
    counts = np.frombuffer(data, "<i8", buckets, at).copy()
    return {"index": index, "raw": raw, "series": series, "k": k, "step": step, "wall": wall, "count": count,
            "sum": total, "min": lo, "max": hi, "nan": nan, "pos_inf": pos_inf, "neg_inf": neg_inf,
            "indices": indices, "counts": counts}
