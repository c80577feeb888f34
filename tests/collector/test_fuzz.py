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
from stepwire import _core
from stepwire.collector.decode import MAX_DECODED_BYTES, BatchError, DecodedBatch, decode_batch
from stepwire.sender import encode_batch
from stepwire.transport import open_channel

SCALAR_COLUMNS = ["series_ids", "group_lengths", "steps", "values", "wall_times"]
HIST_COLUMNS = ["series_ids", "steps", "wall_times", "k", "count", "sum", "min", "max", "nan", "pos_inf", "neg_inf",
                "bucket_lengths", "bucket_indices", "bucket_counts"]
COLUMNS = [("scalars", c) for c in SCALAR_COLUMNS] + [("histograms", c) for c in HIST_COLUMNS]


@pytest.fixture(scope="module")
def valid() -> ingest_pb2.Batch:
    (b,) = sealed_batches(200, hist=True)
    return encode_batch(b, "fuzz-run", 0, "fuzz-stream")


def assert_consistent(d: DecodedBatch) -> None:
    """What decodes can be stored: every slice the store takes stays inside its column."""
    assert int(d.group_lengths.sum()) == len(d.steps) == len(d.values) == len(d.wall_times)
    assert len(d.group_series) == len(d.group_lengths)
    assert not len(d.steps) or d.steps.min() >= 0
    if d.hist:
        m = d.histogram_count
        assert all(len(d.hist[c]) == m for c in HIST_COLUMNS if not c.startswith("bucket_") or c == "bucket_lengths")
        buckets = int(d.hist["bucket_lengths"].sum())
        assert len(d.hist["bucket_indices"]) == len(d.hist["bucket_counts"]) == buckets
        assert not m or (d.hist["k"].max() <= _core.MAX_K and d.hist["steps"].min() >= 0)
    nbytes = sum(a.nbytes for a in (d.group_series, d.group_lengths, d.steps, d.values, d.wall_times,
                                    *d.hist.values()))
    assert nbytes <= MAX_DECODED_BYTES


def decode_or_refuse(msg: ingest_pb2.Batch) -> str:
    """"ok" if ``msg`` decodes to a consistent batch, else the refusal up to its first colon (which check)."""
    try:
        assert_consistent(decode_batch(msg))
        return "ok"
    except BatchError as exc:
        return str(exc).split(":")[0]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_random_bytes_are_refused_or_consistent(data: bytes) -> None:
    try:
        msg = ingest_pb2.Batch.FromString(data)
    except Exception:
        return  # not even protobuf: gRPC would refuse it before the decoder
    decode_or_refuse(msg)


def test_mutated_batches_reach_every_check(valid: ingest_pb2.Batch) -> None:
    """Byte flips in a valid batch: each mutant is refused or decodes consistently, and together they get past
    the first checks into the column checks (a fuzzer that only ever meets the first check proves nothing)."""
    raw = valid.SerializeToString()
    rng = np.random.default_rng(1)
    refusals: set[str] = set()
    decoded = 0
    for _ in range(3000):
        buf = bytearray(raw)
        for _ in range(int(rng.integers(1, 4))):
            buf[int(rng.integers(len(buf)))] = int(rng.integers(256))
        try:
            m = ingest_pb2.Batch.FromString(bytes(buf))
        except Exception:
            continue
        outcome = decode_or_refuse(m)
        decoded += outcome == "ok"
        refusals.add(outcome)
    assert decoded > 0
    assert len(refusals - {"ok"}) >= 8, refusals


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(column=st.sampled_from(COLUMNS), raw=st.binary(max_size=512), compressed=st.booleans(),
       count_delta=st.integers(-3, 3), count_field=st.sampled_from(["point_count", "histogram_count"]))
def test_mutated_columns_are_refused_or_consistent(valid: ingest_pb2.Batch, column: tuple[str, str], raw: bytes,
                                                   compressed: bool, count_delta: int, count_field: str) -> None:
    m = ingest_pb2.Batch()
    m.CopyFrom(valid)
    group = getattr(m, column[0])
    setattr(group, column[1], lz4.block.compress(raw) if compressed else raw)
    counts = m.scalars if count_field == "point_count" else m.histograms
    setattr(counts, count_field, max(0, getattr(counts, count_field) + count_delta))
    decode_or_refuse(m)


@pytest.mark.parametrize("column", COLUMNS)
def test_a_column_that_inflates_past_its_count_is_refused_before_inflating(valid: ingest_pb2.Batch,
                                                                          column: tuple[str, str]) -> None:
    m = ingest_pb2.Batch()
    m.CopyFrom(valid)
    setattr(getattr(m, column[0]), column[1], lz4.block.compress(bytes(MAX_DECODED_BYTES + 8)))
    with pytest.raises(BatchError, match=f"column {column[0]}.{column[1]}: .* items where the batch states"):
        decode_batch(m)


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
