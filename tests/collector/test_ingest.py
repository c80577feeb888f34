"""The Ingest service against raw batches: exactly-once by (stream, sequence), corrupt batches refused."""

from __future__ import annotations

import random
import uuid

import grpc
import lz4.block
import numpy as np
import pytest
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc

import stepwire
from conftest import CollectorProcess
from stepwire import _core
from stepwire.sender import encode_batch
from stepwire.transport import GRPC_OPTIONS


def sealed_batches(n_points: int, hist: bool = False) -> list[_core.SealedBatch]:
    stream = _core.Stream(flush_interval=60.0, max_sealed=1000)
    p = _core.Producer(stream)
    p._scalar_ids["x"] = stream.define("x", _core.KIND_SCALAR)
    for i in range(n_points):
        p.log_scalar("x", float(i))
    if hist:
        stream.push_histogram(stream.define("h", _core.KIND_HISTOGRAM), 0, np.arange(100, dtype=np.float32))
    stream.flush()
    stream.close()
    out = []
    while (b := stream.next_batch(0.0)) is not None:
        out.append(b)
    return out


@pytest.fixture
def collector(store_collector: CollectorProcess) -> CollectorProcess:
    """The collector under test, over each store in turn (DuckDB, PostgreSQL)."""
    return store_collector


@pytest.fixture
def stub(collector: CollectorProcess):  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(collector.address, options=GRPC_OPTIONS) as channel:
        yield ingest_pb2_grpc.IngestStub(channel)


def open_run(stub: ingest_pb2_grpc.IngestStub) -> str:
    run_id = uuid.uuid4().hex[:16]
    stub.OpenRun(ingest_pb2.RunInfo(run_id=run_id, project="raw"))
    return run_id


def count(collector: CollectorProcess, run_id: str, name: str = "x") -> int:
    return len(stepwire.Api(address=collector.address).run(run_id).scalars(name)["step"])


def test_replayed_batches_are_stored_once(collector: CollectorProcess, stub: ingest_pb2_grpc.IngestStub) -> None:
    run_id = open_run(stub)
    stream_id = uuid.uuid4().hex
    msgs = [encode_batch(b, run_id, 0, stream_id) for b in sealed_batches(5000, hist=True)]
    acks = [stub.Push(m) for m in msgs]
    assert not any(a.duplicate for a in acks)
    assert sum(a.items for a in acks) == 5001
    replays = [stub.Push(m) for m in reversed(msgs)]
    assert all(a.duplicate for a in replays)
    assert count(collector, run_id) == 5000
    assert len(stepwire.Api(address=collector.address).run(run_id).histograms("h")) == 1


def corruptions(msg: ingest_pb2.Batch) -> list[tuple[str, ingest_pb2.Batch]]:
    out = []

    def variant(label: str, mutate) -> None:  # type: ignore[no-untyped-def]
        m = ingest_pb2.Batch()
        m.CopyFrom(msg)
        m.sequence = 1000 + len(out)
        mutate(m)
        out.append((label, m))

    variant("bad lz4", lambda m: setattr(m.scalars, "values", b"\x10\x00\x00\x00garbage-garbage"))
    variant("huge size prefix", lambda m: setattr(m.scalars, "steps", (1 << 31).to_bytes(4, "little") + b"xx"))
    variant("wrong count", lambda m: setattr(m.scalars, "point_count", m.scalars.point_count + 1))
    variant("ragged column", lambda m: setattr(m.scalars, "steps", lz4.block.compress(b"\x01\x02\x03")))
    variant("undefined series", lambda m: (m.ClearField("series"), setattr(
        m.scalars, "series_ids", lz4.block.compress(np.array([77], np.uint32).tobytes()))))
    variant("no run id", lambda m: setattr(m, "run_id", ""))
    variant("sequence zero", lambda m: setattr(m, "sequence", 0))
    variant("unknown compression", lambda m: setattr(m, "compression", 9))
    variant("unknown kind", lambda m: setattr(m.series[0], "kind", 7))
    variant("kind mismatch", lambda m: setattr(m.series[0], "kind", _core.KIND_HISTOGRAM))
    variant("zero-length group", lambda m: setattr(
        m.scalars, "group_lengths", lz4.block.compress(np.array([0], np.uint32).tobytes())))
    variant("bad histogram k", lambda m: setattr(m.histograms, "k", lz4.block.compress(b"\x63")))
    return out


def test_corrupt_batches_are_rejected_and_the_collector_keeps_serving(
        collector: CollectorProcess, stub: ingest_pb2_grpc.IngestStub) -> None:
    run_id = open_run(stub)
    stream_id = uuid.uuid4().hex
    good = [encode_batch(b, run_id, 0, stream_id) for b in sealed_batches(300, hist=True)]
    assert len(good) == 1
    for label, bad in corruptions(good[0]):
        with pytest.raises(grpc.RpcError) as info:
            stub.Push(bad)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, label
    rng = random.Random(0)
    raw = good[0].SerializeToString()
    for _ in range(200):  # random byte flips: either a clean refusal or a well-formed batch, never a crash
        buf = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        try:
            m = ingest_pb2.Batch.FromString(bytes(buf))
        except Exception:
            continue
        m.stream_id = uuid.uuid4().hex  # a valid mutant goes to its own stream and run, not over the real batch
        m.run_id = "fuzz"
        try:
            stub.Push(m)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert collector.proc.poll() is None
    stub.Push(good[0])
    assert count(collector, run_id) == 300
    assert len(stepwire.Api(address=collector.address).run(run_id).histograms("h")) == 1


def test_a_stream_cannot_switch_runs(collector: CollectorProcess, stub: ingest_pb2_grpc.IngestStub) -> None:
    a, b = open_run(stub), open_run(stub)
    stream_id = uuid.uuid4().hex
    first, second = sealed_batches(10), sealed_batches(10)
    stub.Push(encode_batch(first[0], a, 0, stream_id))
    msg = encode_batch(second[0], b, 0, stream_id)
    msg.sequence = 2
    with pytest.raises(grpc.RpcError) as info:
        stub.Push(msg)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
