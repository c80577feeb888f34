"""``stepwire sync``: deliver what runs left in a data directory's spool (offline runs, unreachable collectors).

Idempotent: delivered records leave the spool, and the collector deduplicates batches and texts by
(stream, sequence), so syncing twice, or a sync interrupted and run again, stores nothing twice.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from rich.progress import Progress

from stepwire import spool
from stepwire.collector.embedded import local_collector
from stepwire.sender import PAYLOAD_TYPES, batch_items, deliver, refused
from stepwire.spool import Spool
from stepwire.transport import open_channel
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc

ATTEMPTS = 5


@dataclass
class SyncReport:
    """What a sync did: records delivered (``items`` scalar points and histograms among them), refused as
    invalid, damaged records skipped, and the spools emptied."""

    records: int = 0
    items: int = 0
    refused: int = 0
    corrupt: int = 0
    spools: int = 0


def sync(directory: Path, address: str | None = None, show_progress: bool = True,
         tls_ca: str | None = None) -> SyncReport:
    """Replay every spool under ``directory`` to ``address`` (default: the directory's own collector); the
    token comes from ``$STEPWIRE_TOKEN``, TLS from ``tls_ca``."""
    report = SyncReport()
    pending = []
    for path in spool.spools(directory):
        sp = Spool(path)
        if sp.lock():  # a spool still held belongs to a run that is logging right now: leave it to that run
            pending.append((path, sp))
    if not pending:
        return report
    total = sum(s.count() for _, s in pending)
    target = address or local_collector(directory)
    with open_channel(target, tls_ca=tls_ca if address else None) as channel, \
            Progress(disable=not show_progress, transient=True) as progress:
        stub = ingest_pb2_grpc.IngestStub(channel)
        task = progress.add_task(f"syncing to {target}", total=total)
        for path, sp in pending:
            while (record := sp.peek()) is not None:
                kind, payload = record
                msg = PAYLOAD_TYPES[kind].FromString(payload)
                if _deliver_with_retries(stub, kind, msg, target):
                    report.records += 1
                    if kind == spool.BATCH:
                        assert isinstance(msg, ingest_pb2.Batch)
                        report.items += batch_items(msg)
                else:
                    report.refused += 1
                sp.pop()
                progress.advance(task)
            report.corrupt += sp.corrupt
            shutil.rmtree(path, ignore_errors=True)  # delivered: staged artifact copies included
            sp.unlock()
            report.spools += 1
    return report


def _deliver_with_retries(stub: ingest_pb2_grpc.IngestStub, kind: int, msg: object, target: str) -> bool:
    """True once delivered, False if refused as invalid; ``ConnectionError`` if the collector does not answer."""
    delay = 0.2
    for attempt in range(ATTEMPTS):
        try:
            deliver(stub, kind, msg)  # type: ignore[arg-type]
            return True
        except grpc.RpcError as exc:
            if refused(exc):
                return False
            if attempt == ATTEMPTS - 1:
                raise ConnectionError(f"the stepwire collector at {target} does not answer: {exc}") from None
        except OSError:  # a staged artifact that is gone cannot be uploaded
            return False
        time.sleep(delay)
        delay *= 2
    return False
