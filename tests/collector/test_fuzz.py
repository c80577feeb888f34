"""Fuzzing the collector's decoder: random and mutated batches get an error status, never a crash, and the
data stored before and after stays intact."""

from __future__ import annotations

import uuid

import grpc
import lz4.block
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc
from test_ingest import count, open_run, sealed_batches

from conftest import CollectorProcess
from stepwire.collector.decode import BatchError, decode_batch
from stepwire.sender import encode_batch
from stepwire.transport import open_channel

COLUMNS = ["series_ids", "group_lengths", "steps", "values", "wall_times"]


@pytest.fixture(scope="module")
def valid() -> ingest_pb2.Batch:
    (b,) = sealed_batches(200, hist=True)
    return encode_batch(b, "fuzz-run", 0, "fuzz-stream")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    try:
        msg = ingest_pb2.Batch.FromString(data)
    except Exception:
        return  # not even protobuf: gRPC would refuse it before the decoder
    try:
        decode_batch(msg)
    except BatchError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(column=st.sampled_from(COLUMNS), raw=st.binary(max_size=512), compressed=st.booleans(),
       count_delta=st.integers(-3, 3))
def test_mutated_columns_are_refused_or_consistent(valid: ingest_pb2.Batch, column: str, raw: bytes,
                                                   compressed: bool, count_delta: int) -> None:
    m = ingest_pb2.Batch()
    m.CopyFrom(valid)
    setattr(m.scalars, column, lz4.block.compress(raw) if compressed else raw)
    m.scalars.point_count = max(0, m.scalars.point_count + count_delta)
    try:
        d = decode_batch(m)
    except BatchError:
        return
    # whatever decodes is self-consistent: the store can slice it without reading out of bounds
    assert int(d.group_lengths.sum()) == len(d.steps) == len(d.values) == len(d.wall_times)
    assert len(d.group_series) == len(d.group_lengths)


def test_mutants_against_a_live_collector_keep_stored_data_intact(collector: CollectorProcess) -> None:
    with open_channel(collector.address) as channel:
        stub = ingest_pb2_grpc.IngestStub(channel)
        run_id = open_run(stub)
        before = encode_batch(sealed_batches(500)[0], run_id, 0, uuid.uuid4().hex)
        stub.Push(before)
        rng = np.random.default_rng(0)
        raw = before.SerializeToString()
        codes = set()
        for _ in range(300):
            buf = bytearray(raw)
            for _ in range(int(rng.integers(1, 16))):
                buf[int(rng.integers(len(buf)))] = int(rng.integers(256))
            try:
                m = ingest_pb2.Batch.FromString(bytes(buf))
            except Exception:
                continue
            m.run_id, m.stream_id = "fuzz-target", uuid.uuid4().hex  # never over the real stream
            try:
                stub.Push(m)
                codes.add("OK")
            except grpc.RpcError as exc:
                codes.add(exc.code().name)
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "INVALID_ARGUMENT" in codes
        assert collector.proc.poll() is None
        after = encode_batch(sealed_batches(300)[0], run_id, 0, uuid.uuid4().hex)
        stub.Push(after)
    assert count(collector, run_id) == 800
