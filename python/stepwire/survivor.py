"""The survivor: stores what a dead training process left in its shared-memory segments (docs/segment.md).

The node's collector runs ``Survivor`` on a thread (and ``stepwire sync`` calls ``recover_all`` once): for each
segment of this user whose creating process is dead and whose data directory is the caller's, it takes the
segment's lock, replays that stream's spool first (what the dead sender spooled), then delivers the batches it
sealed and never retired under their own sequence numbers (a batch the sender had delivered is a duplicate the
collector ignores), then what it took in and never sealed under the next sequence numbers, and removes the
segment. The dead process can never send again, so no batch goes out twice under different sequences.

Histograms the process accepted and had not binned yet are in raw-values files beside the segment
(``stepwire.segment_raw``): those the segment does not say are settled are binned here with the binning thread's
kernel and delivered with the unsealed rest; all of them are removed with the segment.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import lz4.block
import numpy as np
import numpy.typing as npt

from stepwire import segment, segment_raw, spool
from stepwire.segment import Recovered
from stepwire.spool import Spool
from stepwire.sync import SyncReport, _deliver_with_retries, replay
from stepwire.transport import open_channel
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc

log = logging.getLogger("stepwire.survivor")

SCAN_INTERVAL_S = 0.5
"""How often the collector looks for segments of dead processes."""
POINTS_PER_BATCH = 200_000
"""Unsealed records are delivered in batches of at most this many points."""


def recover_all(directory: Path, stub: ingest_pb2_grpc.IngestStub, target: str,
                on_recovered: Callable[[Recovered], None] | None = None, remote: str | None = "") -> list[Path]:
    """Recover every segment of a dead process logging to ``directory``; returns the segments removed. A segment
    that cannot be finished now (the collector does not answer, another survivor holds it) stays for later.
    ``remote``: only the segments of runs that logged to that remote collector ("": the directory's own, the
    embedded default; None: any)."""
    done = []
    for path in segment.segments():
        try:
            if recover(path, directory, stub, target, on_recovered, remote):
                done.append(path)
        except (OSError, grpc.RpcError) as exc:
            log.warning("segment %s: cannot recover it now (%s); trying again later", path, exc)
    return done


def _ours(meta: dict[str, Any], directory: Path, remote: str | None) -> bool:
    """True if a segment's metadata names ``directory`` (and ``remote``, unless None) as where its run logs."""
    return Path(str(meta.get("directory", ""))) == directory.resolve() and (
        remote is None or str(meta.get("remote", "")) == remote)


def recover(path: Path, directory: Path, stub: ingest_pb2_grpc.IngestStub, target: str,
            on_recovered: Callable[[Recovered], None] | None = None, remote: str | None = "") -> bool:
    """Recover one segment if its producer is dead and it logs to ``directory`` (and ``remote``, see
    ``recover_all``); True once it is removed."""
    head = segment.read_meta(path)  # the first page only: a live process's segment is not read whole
    if head is None or not _ours(head[0], directory, remote) or not segment.owner_dead(*head):
        return False
    fd = segment.open_own(path, os.O_RDWR)  # this user's regular file only: /dev/shm is world-writable
    if fd is None:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # another survivor has it
        if not path.exists():  # removed while we waited for it
            return False
        rec = segment.read(path)
        if rec is None or not _ours(rec.meta, directory, remote):
            return False
        if not segment.owner_dead(rec.meta, rec.pid):
            return False
        # read it again now that nothing writes it: the first read may predate the death by moments, and a stale
        # read sent under the next sequences would collide with batches the process sealed and sent meanwhile
        rec = segment.read(path)
        if rec is None:
            return False
        raws = segment_raw.raw_paths(path)
        if rec.state == 1:  # it finished and was removing the segment when it died
            _remove(raws)
            path.unlink(missing_ok=True)
            return True
        if rec.state != 0:
            log.error("segment %s is damaged or marked broken: its journal cannot be trusted; removed without "
                      "recovering it", path)
            _remove(raws)
            path.unlink(missing_ok=True)
            return True
        _bin_raw(rec, raws)
        spool_dir = Path(str(rec.meta.get("spool_dir", "")))
        if spool_dir.name and spool_dir.is_dir():
            sp = Spool(spool_dir)
            if not sp.lock():
                return False
            try:
                replay(stub, spool_dir, sp, target, SyncReport())
            finally:
                sp.unlock()
        delivered = _deliver(rec, stub, target)
        log.warning("run %s rank %s: its process %d died; stored the %d items it left in %s (%d histograms binned "
                    "from its raw-values files, %d damaged ones removed)", rec.meta.get("run_id"),
                    rec.meta.get("rank"), rec.pid, delivered, path, rec.raw_binned, rec.raw_damaged)
        if on_recovered is not None:
            on_recovered(rec)
        _remove(raws)  # first: a survivor that dies here leaves the segment, delivered again (duplicates) later
        path.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def _bin_raw(rec: Recovered, raws: list[Path]) -> None:
    """Add to ``rec``'s unsealed histograms those of the raw-values files ``raws`` that it does not hold yet."""
    for raw_path in raws:
        try:
            raw = segment_raw.read(raw_path)
        except ValueError as exc:  # damaged: nothing of it can be trusted
            log.error("%s", exc)
            rec.raw_damaged += 1
            continue
        except OSError:  # gone, a link, or another user's file: not ours to read
            continue
        if raw is None or raw.id <= rec.raw_done or raw.id in rec.raw_queued:
            continue  # never committed (its call had not returned), or queued, sent or counted already
        rec.open_histograms.append(segment_raw.histogram(raw))
        rec.raw_binned += 1


def _remove(raws: list[Path]) -> None:
    """Remove raw-values files: those ``segment.open_own`` would not open (links, another user's) are left."""
    for raw_path in raws:
        fd = segment.open_own(raw_path)
        if fd is not None:
            os.close(fd)
            raw_path.unlink(missing_ok=True)


def _deliver(rec: Recovered, stub: ingest_pb2_grpc.IngestStub, target: str) -> int:
    """Deliver the sealed batches under their sequences, then the unsealed rest under new ones; items sent."""
    known = {sid for sid, _, _ in rec.defs}
    items = 0
    batches: list[tuple[int, npt.NDArray[Any], list[dict[str, Any]]]] = [
        b for b in rec.sealed if b[0] > rec.retired_sequence]
    seq = rec.next_sequence
    records, hists = rec.open_records, rec.open_histograms
    while len(records) or hists:
        batches.append((seq, records[:POINTS_PER_BATCH], hists))
        records, hists = records[POINTS_PER_BATCH:], []
        seq += 1
    for sequence, recs, hs in batches:
        keep = np.isin(recs["series"], np.fromiter(known, np.uint32, len(known)))
        hs = [h for h in hs if h["series"] in known]
        if not keep.all():
            log.warning("segment of run %s: %d points of series missing from its table are left out",
                        rec.meta.get("run_id"), int((~keep).sum()))
        msg = batch_message(rec, sequence, recs[keep], hs)
        if _deliver_with_retries(stub, spool.BATCH, msg, target):
            items += int(keep.sum()) + len(hs)
        else:
            log.error("run %s: the collector refused batch %d recovered from a dead process", rec.meta.get("run_id"),
                      sequence)
    return items


def _lz4(a: npt.NDArray[Any]) -> bytes:
    raw = a.tobytes()
    return lz4.block.compress(raw, store_size=True) if raw else b""


def batch_message(rec: Recovered, sequence: int, recs: npt.NDArray[Any],
                  hists: list[dict[str, Any]]) -> ingest_pb2.Batch:
    """The wire form of recovered records and histograms (every series of the table defined in it)."""
    msg = ingest_pb2.Batch(run_id=str(rec.meta["run_id"]), rank=int(rec.meta["rank"]),
                           stream_id=str(rec.meta["stream_id"]), sequence=sequence,
                           compression=ingest_pb2.COMPRESSION_LZ4_BLOCK)
    for sid, name, kind in rec.defs:
        msg.series.add(id=sid, name=name, kind=kind)
    if len(recs):
        ordered = recs[np.argsort(recs["series"], kind="stable")]
        series, lengths = np.unique(ordered["series"], return_counts=True)
        msg.scalars.point_count = len(ordered)
        msg.scalars.series_ids = _lz4(series.astype("<u4"))
        msg.scalars.group_lengths = _lz4(lengths.astype("<u4"))
        msg.scalars.steps = _lz4(np.ascontiguousarray(ordered["step"]))
        msg.scalars.values = _lz4(np.ascontiguousarray(ordered["value"]))
        msg.scalars.wall_times = _lz4(np.ascontiguousarray(ordered["wall"]))
    if hists:
        h = msg.histograms
        h.histogram_count = len(hists)
        col = {key: np.array([x[key] for x in hists], dtype) for key, dtype in [
            ("series", "<u4"), ("step", "<i8"), ("wall", "<f8"), ("k", "u1"), ("count", "<i8"), ("sum", "<f8"),
            ("min", "<f8"), ("max", "<f8"), ("nan", "<i8"), ("pos_inf", "<i8"), ("neg_inf", "<i8")]}
        h.series_ids, h.steps, h.wall_times = _lz4(col["series"]), _lz4(col["step"]), _lz4(col["wall"])
        h.k, h.count, h.sum = _lz4(col["k"]), _lz4(col["count"]), _lz4(col["sum"])
        h.min, h.max, h.nan = _lz4(col["min"]), _lz4(col["max"]), _lz4(col["nan"])
        h.pos_inf, h.neg_inf = _lz4(col["pos_inf"]), _lz4(col["neg_inf"])
        h.bucket_lengths = _lz4(np.array([len(x["indices"]) for x in hists], "<u4"))
        h.bucket_indices = _lz4(np.concatenate([x["indices"] for x in hists]).astype("<i4"))
        h.bucket_counts = _lz4(np.concatenate([x["counts"] for x in hists]).astype("<i8"))
    return msg


class Survivor:
    """A thread of the collector serving ``directory`` at ``address``: every ``SCAN_INTERVAL_S`` it recovers the
    segments of dead processes (``recover_all``) and calls ``on_recovered`` for each (marking the rank crashed)."""

    def __init__(self, directory: Path, address: str, on_recovered: Callable[[Recovered], None],
                 token: str | None = None, tls_ca: str | None = None) -> None:
        self._directory, self._address, self._on_recovered = directory, address, on_recovered
        self._token, self._tls_ca = token, tls_ca
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stepwire-survivor", daemon=True)

    def start(self) -> None:
        """Start scanning."""
        self._thread.start()

    def stop(self) -> None:
        """Stop scanning (a recovery in progress finishes first)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30.0)

    def _loop(self) -> None:
        with open_channel(self._address, self._token, self._tls_ca) as channel:
            stub = ingest_pb2_grpc.IngestStub(channel)
            while True:
                try:
                    recover_all(self._directory, stub, self._address, self._on_recovered)
                except Exception:  # never stop scanning over one bad segment
                    log.exception("recovering segments of dead processes failed")
                if self._stop.wait(SCAN_INTERVAL_S):
                    return
