"""Raw-values files: the values of a histogram waiting for background binning, kept beside the segment.

``log_histogram`` of a CPU array of ``BACKGROUND_MIN_VALUES`` or more returns before the values are binned. With a
segment, the private copy the binning thread works from is made into ``<segment path>.raw<n>`` under /dev/shm
instead of process memory, so that a survivor can bin what a dead process accepted and never binned
(docs/segment.md, "Raw-values files"). The file is created and reserved (``posix_fallocate``: a full /dev/shm fails
here, not with SIGBUS later), its header and values written, and only when the binning thread takes the job in
order is it *committed*: its id (the order of jobs on the run's binning thread) written, then the magic, last.
Files are reused (``RawPool``): a settled one is marked uncommitted again and waits for the next values.

The binned histogram is queued with its file's id, and in the same locked section the segment's header records
``raw_done`` (cpp/segment.cpp ``settle_raw``); the binning thread then frees the file (uncommitted again). A
survivor therefore bins a committed file only when neither ``raw_done`` nor a queued entry names its id.
"""

from __future__ import annotations

import itertools
import mmap
import os
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from stepwire import _core, segment

MAGIC = 0x31574152_57505453
"""``STPWRAW1`` (u64, little-endian), written last: a file without it was never committed."""
VERSION = 1
HEADER = struct.Struct("<QIIQqQIBBBxqdQQ")
"""magic, version, values offset, id, pid, start time, series, k, item bytes, bfloat16, step, wall time, count,
values bytes."""
VALUES_OFFSET = 128
"""Where the values start (aligned for any float type)."""
SUFFIX = ".raw"
_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # the copy into it then takes no page faults
_DTYPES = {(2, False): "<f2", (2, True): "<u2", (4, False): "<f4", (8, False): "<f8"}


def raw_paths(segment_path: Path) -> list[Path]:
    """The raw-values files beside the segment at ``segment_path``, by id of creation."""
    try:
        found = [p for p in segment_path.parent.iterdir()
                 if p.name.startswith(segment_path.name + SUFFIX) and p.name[len(segment_path.name) + 4:].isdigit()]
    except OSError:
        return []
    return sorted(found, key=lambda p: int(p.name[len(segment_path.name) + 4:]))


class RawFile:
    """One raw-values file of this process, mapped; ``values`` is the array it holds now (see ``RawPool``)."""

    def __init__(self, path: Path, m: mmap.mmap) -> None:
        self.path, self._map = path, m
        self.values: npt.NDArray[Any] = np.zeros(0, np.float32)
        self.id = 0
        """Its place in the order of the run's background jobs (1, 2, ...), set by ``commit``; 0 while free."""
        self.wall_time = 0.0
        """The wall-clock time of the logging call whose values it holds (s)."""

    @classmethod
    def create(cls, path: Path, capacity: int) -> RawFile:
        """Create and map the file at ``path``, with room for ``capacity`` bytes of values, uncommitted; raises
        OSError when /dev/shm has no room for it (nothing is left behind then)."""
        size = VALUES_OFFSET + capacity
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
            m = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | _MAP_POPULATE)
        except BaseException:
            os.unlink(path)
            raise
        finally:
            os.close(fd)
        return cls(path, m)

    @property
    def capacity(self) -> int:
        """Bytes of values it can hold."""
        return len(self._map) - VALUES_OFFSET

    def fill(self, series: int, step: int, k: int, arr: npt.NDArray[Any], bf16: bool) -> None:
        """Write a copy of ``arr`` (at most ``capacity`` bytes) and what binning it takes; still uncommitted."""
        itemsize = arr.dtype.itemsize
        self.wall_time = time.time()
        HEADER.pack_into(self._map, 0, 0, VERSION, VALUES_OFFSET, 0, os.getpid(), _start_time(), series, k,
                         itemsize, bool(bf16), step, self.wall_time, arr.size, arr.nbytes)
        self.values = np.ndarray(arr.shape, _DTYPES[itemsize, bool(bf16) and itemsize == 2], self._map,
                                 VALUES_OFFSET)
        self.values[...] = arr

    def commit(self, raw_id: int) -> None:
        """Give the file its id in the order of jobs (the binning thread's lock held), then mark it whole."""
        self.id = raw_id
        struct.pack_into("<Q", self._map, 16, raw_id)
        struct.pack_into("<Q", self._map, 0, MAGIC)

    def release(self) -> None:
        """Uncommitted again (its histogram is settled, or was never queued): free for the next values."""
        struct.pack_into("<Q", self._map, 0, 0)
        self.id = 0
        self.values = np.zeros(0, np.float32)

    def remove(self) -> None:
        """Remove the file and release its memory."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.values = np.zeros(0, np.float32)
        try:
            self._map.close()
        except BufferError:  # a view of it is still alive somewhere: the mapping goes with it
            pass


class RawPool:
    """The raw-values files of one run (its binning thread's), reused: creating and reserving a file costs ten
    times what copying values into a mapped one does (tmpfs ``fallocate`` zeroes and accounts every page), so a
    file whose histogram is settled waits, uncommitted, for the next values that fit. At most ``FREE_BYTES`` of
    free files are kept."""

    FREE_BYTES = 64 << 20
    """Bytes of free files kept for reuse (the oldest beyond that are removed)."""
    MIN_CAPACITY = 256 << 10
    """Files are created with room for a power of two of bytes, at least this many, so that they fit again."""

    def __init__(self, segment_path: str) -> None:
        self._base = segment_path
        self._names = itertools.count(1)
        self._free: list[RawFile] = []
        self._lock = threading.Lock()

    def take(self, series: int, step: int, k: int, arr: npt.NDArray[Any], bf16: bool) -> RawFile:
        """A file holding a copy of ``arr``, uncommitted: a free one it fits in, or a new one (OSError when
        /dev/shm has no room for that)."""
        with self._lock:
            fits = [r for r in self._free if r.capacity >= arr.nbytes]
            raw = min(fits, key=lambda r: r.capacity) if fits else None
            if raw is not None:
                self._free.remove(raw)
        if raw is None:
            capacity = max(self.MIN_CAPACITY, 1 << (max(arr.nbytes, 1) - 1).bit_length())
            raw = RawFile.create(Path(f"{self._base}{SUFFIX}{next(self._names)}"), capacity)
        try:
            raw.fill(series, step, k, arr, bf16)
        except BaseException:
            self.give_back(raw)
            raise
        return raw

    def give_back(self, raw: RawFile) -> None:
        """``raw``'s histogram is settled (or it was never queued): uncommitted, kept for reuse or removed."""
        raw.release()
        with self._lock:
            self._free.append(raw)
            while sum(r.capacity for r in self._free) > self.FREE_BYTES:
                self._free.pop(0).remove()

    def close(self) -> None:
        """Remove the free files (every file is free once the binning thread is done)."""
        with self._lock:
            free, self._free = self._free, []
        for raw in free:
            raw.remove()


_START_TIME: tuple[int, int] = (0, 0)


def _start_time() -> int:
    """This process's start time (/proc clock ticks), read once per process."""
    global _START_TIME
    pid = os.getpid()
    if _START_TIME[0] != pid:
        _START_TIME = (pid, segment.start_time(pid) or 0)
    return _START_TIME[1]


@dataclass
class RawValues:
    """A committed raw-values file read by a survivor: one histogram's parameters and its values."""

    id: int
    pid: int
    series: int
    k: int
    bf16: bool
    step: int
    wall: float
    values: npt.NDArray[Any]


def read(path: Path) -> RawValues | None:
    """The committed raw-values file at ``path`` (values copied out), or None if it was never committed.
    Raises ValueError if it is damaged (a header that points outside it, an unknown version or type), OSError if
    it is not this user's regular file or is gone."""
    fd = segment.open_own(path)
    if fd is None:
        raise OSError(f"{path} is not this user's regular file (or is gone)")
    try:
        size = os.fstat(fd).st_size
        if size < HEADER.size:
            if size == 0 or all(b == 0 for b in os.pread(fd, 8, 0).ljust(8, b"\0")):
                return None  # killed while creating it
            raise ValueError(f"{path}: {size} bytes, shorter than its header")
        head = os.pread(fd, HEADER.size, 0)
        (magic, version, offset, raw_id, pid, _start, series, k, itemsize, bf16, step, wall, count,
         nbytes) = HEADER.unpack(head)
        if magic == 0:
            return None
        dtype = _DTYPES.get((itemsize, bool(bf16)))
        if (magic != MAGIC or version != VERSION or dtype is None or raw_id <= 0 or offset < HEADER.size
                or offset % 8 or nbytes != count * itemsize or offset + nbytes > size
                or not 0 <= k <= _core.SCHEME["max_k"]):
            raise ValueError(f"{path}: the header does not describe its file")
        values = np.zeros(0, dtype)
        if nbytes:
            with mmap.mmap(fd, offset + nbytes, prot=mmap.PROT_READ) as m:
                values = np.frombuffer(m, dtype, count, offset).copy()
        return RawValues(raw_id, pid, series, k, bool(bf16), step, wall, values)
    finally:
        os.close(fd)


def histogram(raw: RawValues) -> dict[str, Any]:
    """Bin ``raw`` as the binning thread would have (the same kernel and chunking: the same buckets and sums), in
    the form ``segment`` gives queued histograms."""
    (h,) = _core.bin_many([raw.values], [raw.bf16], raw.k, 0)
    return {"index": -1, "raw": raw.id, "series": raw.series, "k": raw.k, "step": raw.step, "wall": raw.wall,
            "count": h["count"], "sum": h["sum"], "min": h["min"], "max": h["max"], "nan": h["nan"],
            "pos_inf": h["pos_inf"], "neg_inf": h["neg_inf"], "indices": np.asarray(h["indices"], "<i4"),
            "counts": np.asarray(h["counts"], "<i8")}
