"""A collector that pushes back (RESOURCE_EXHAUSTED) is busy, not gone: what a client spooled meanwhile is
replayed as soon as the collector takes it, and ``finish`` waits for that instead of leaving it to ``stepwire
sync`` (as it does for a collector that does not answer). Everything is stored once, exactly."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc

import stepwire
from stepwire.collector.server import Collector
from stepwire.transport import GRPC_OPTIONS

STEPS = 400


def held_slot(address: str, release: threading.Event) -> threading.Thread:
    """Take the collector's only RPC slot with an upload that sends nothing until ``release`` is set (it is then
    refused, as an upload without a chunk is); returns once the collector pushes back on other RPCs. An upload
    that came while another RPC (the run's heartbeat) held the slot is itself pushed back: it is started again."""

    def nothing() -> Iterator[ingest_pb2.ArtifactChunk]:
        release.wait(30)
        return
        yield  # a generator that yields nothing

    def upload() -> None:
        with grpc.insecure_channel(address, options=GRPC_OPTIONS) as channel:
            try:
                ingest_pb2_grpc.IngestStub(channel).PutArtifact(nothing(), timeout=60)
            except grpc.RpcError:
                pass

    thread = threading.Thread(target=upload, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    with grpc.insecure_channel(address, options=GRPC_OPTIONS) as probe_channel:
        probe = ingest_pb2_grpc.IngestStub(probe_channel)
        while True:
            if not thread.is_alive():
                thread = threading.Thread(target=upload, daemon=True)
                thread.start()
            try:
                probe.Heartbeat(ingest_pb2.Lease(client_id="probe"), timeout=5)
            except grpc.RpcError as exc:
                if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    return thread
            assert time.monotonic() < deadline, "the upload never took the collector's slot"
            time.sleep(0.02)


def test_what_a_busy_collector_pushed_back_is_delivered_by_finish(tmp_path: Path) -> None:
    collector = Collector(tmp_path / "collector", workers=4, max_concurrent_rpcs=1)
    collector.start(write_address_file=False)
    try:
        run = stepwire.init(project="pushback", name="busy", address=collector.address, quiet=True)
        run.log({"loss": 0.0}, step=0)
        assert run.flush(timeout=30)
        release = threading.Event()
        holder = held_slot(collector.address, release)
        try:
            for step in range(1, STEPS):
                run.log({"loss": step / 4}, step=step)
            run.flush(timeout=0)  # seal what is logged: the sender pushes it, is pushed back, and spools it
            deadline = time.monotonic() + 8  # well within the collector's 10 s stall limit for uploads
            while run.stats()["spooled_total"] == 0:
                assert time.monotonic() < deadline, "the client never spooled what the collector pushed back on"
                time.sleep(0.05)
        finally:
            release.set()
            holder.join(30)
        run.finish()  # at once: the collector answered all along, so finish delivers the spool
        stats = run.stats()
        assert stats["spooled_total"] > 0
        assert stats["spooled"] == 0 and stats["lost"] == 0
        assert stats["acknowledged"] == STEPS
        points = stepwire.Api(address=collector.address).run(run.id).scalars("loss")
        assert points["step"].tolist() == list(range(STEPS))
        assert points["value"].tolist() == [s / 4 for s in range(STEPS)]
    finally:
        collector.stop()
