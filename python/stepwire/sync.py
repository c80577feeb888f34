"""``stepwire sync``: deliver what runs left in a data directory's spool (offline runs, unreachable collectors).

First, what processes that died while logging to the directory left in shared memory is stored
(``stepwire.survivor``). Idempotent: delivered records leave the spool, and the collector deduplicates batches and
texts by (stream, sequence), so syncing twice, or a sync interrupted and run again, stores nothing twice. Damaged
records are set aside beside their spool (``<spool>.damaged/``), counted and skipped; a spool is removed only once
everything in it was delivered, refused or set aside. A sync that cannot write (a full disk) stops with an
``OSError`` and leaves the spool as it was, less what it already delivered.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError
from rich.progress import Progress

from stepwire import spool
from stepwire.collector.embedded import local_collector
from stepwire.ingest_rpc import PAYLOAD_TYPES, batch_items, deliver, refused
from stepwire.retry import retry
from stepwire.spool import Spool
from stepwire.transport import open_channel
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc

ATTEMPTS = 5


@dataclass
class SyncReport:
    """What a sync did: records delivered (``items`` scalar points and histograms among them), refused as
    invalid, damaged records set aside (in ``set_aside``) and skipped, and the spools emptied."""

    records: int = 0
    items: int = 0
    refused: int = 0
    corrupt: int = 0
    spools: int = 0
    set_aside: list[Path] = field(default_factory=list)


def sync(directory: Path, address: str | None = None, show_progress: bool = True,
         tls_ca: str | None = None) -> SyncReport:
    """Replay every spool under ``directory`` to ``address`` (default: the directory's own collector); the
    token comes from ``$STEPWIRE_TOKEN``, TLS from ``tls_ca``. ``OSError`` (``ConnectionError`` among them)
    when it cannot go on: what it has not delivered stays in the spool."""
    report = SyncReport()
    _recover_segments(directory, address, tls_ca)
    pending = []
    try:
        for path in spool.spools(directory):
            sp = Spool(path)
            if sp.lock():  # a spool still held belongs to a run that is logging right now: leave it to that run
                pending.append((path, sp))
        if pending:
            _sync(pending, directory, address, show_progress, tls_ca, report)
    finally:
        for _, sp in pending:
            sp.unlock()
    return report


def _recover_segments(directory: Path, address: str | None, tls_ca: str | None) -> None:
    """Store what dead processes logging to ``directory`` left in shared memory (``stepwire.survivor``), their
    spools first; a segment another survivor holds (the collector's) is left to it."""
    from stepwire import segment
    from stepwire.survivor import recover_all

    if not segment.segments():
        return
    target = address or local_collector(directory)
    with open_channel(target, tls_ca=tls_ca if address else None) as channel:
        # to the directory's collector: the embedded default's segments; to an address: any (as with spools)
        recover_all(directory.resolve(), ingest_pb2_grpc.IngestStub(channel), target, remote=None if address else "")


def _sync(pending: list[tuple[Path, Spool]], directory: Path, address: str | None, show_progress: bool,
          tls_ca: str | None, report: SyncReport) -> None:
    total = sum(s.count(verify=False) for _, s in pending)  # headers only: for the progress bar
    target = address or local_collector(directory)
    with open_channel(target, tls_ca=tls_ca if address else None) as channel, \
            Progress(disable=not show_progress, transient=True) as progress:
        stub = ingest_pb2_grpc.IngestStub(channel)
        task = progress.add_task(f"syncing to {target}", total=total)
        for path, sp in pending:
            replay(stub, path, sp, target, report, lambda: progress.advance(task))


def replay(stub: ingest_pb2_grpc.IngestStub, path: Path, sp: Spool, target: str, report: SyncReport,
           advance: Callable[[], None] = lambda: None) -> None:
    """Deliver the spool ``sp`` (locked by the caller, who unlocks it) at ``path`` in order, then remove it;
    ``OSError`` (``ConnectionError`` among them) when it cannot go on: the rest stays in the spool."""
    try:
        while (record := sp.peek()) is not None:
            kind, payload = record
            try:
                msg = PAYLOAD_TYPES[kind].FromString(payload)
            except DecodeError:  # checks out, yet is no message of its kind: damaged all the same
                sp.reject(f"a record that is no {spool.KIND_NAMES[kind]} message")
            else:
                if _deliver_with_retries(stub, kind, msg, target):
                    report.records += 1
                    if kind == spool.BATCH:
                        assert isinstance(msg, ingest_pb2.Batch)
                        report.items += batch_items(msg)
                else:
                    report.refused += 1
                sp.pop()
            if sp.cursor_error is not None:  # a full disk: stop (what was delivered since the cursor
                # was last written is replayed next time, and the collector ignores it)
                raise OSError(sp.cursor_error.errno, f"cannot record what was delivered from {path}: "
                              f"{sp.cursor_error.strerror}; the rest stays in the spool (sync again "
                              f"once there is room)")
            advance()
        if sp.error is not None:  # a damaged record that could not be set aside: keep the spool
            raise OSError(sp.error.errno, f"{sp.error.strerror}; the rest stays in the spool")
    finally:
        report.corrupt += sp.corrupt
        report.set_aside += sp.set_aside
    shutil.rmtree(path, ignore_errors=True)  # delivered or set aside: staged artifact copies included
    report.spools += 1


def _deliver_with_retries(stub: ingest_pb2_grpc.IngestStub, kind: int, msg: object, target: str) -> bool:
    """True once delivered, False if refused as invalid; ``ConnectionError`` if the collector does not answer."""
    def unanswered(exc: Exception) -> bool:
        return isinstance(exc, grpc.RpcError) and not refused(exc)

    try:
        retry(lambda: deliver(stub, kind, msg), unanswered, initial=0.2, attempts=ATTEMPTS)  # type: ignore[arg-type]
        return True
    except grpc.RpcError as exc:
        if refused(exc):
            return False
        raise ConnectionError(f"the stepwire collector at {target} does not answer: {exc}") from None
    except OSError:  # a staged artifact that is gone cannot be uploaded
        return False
