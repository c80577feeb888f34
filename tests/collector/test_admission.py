"""Admission by bytes: a push holds the request's bytes plus what its columns declare they inflate to, from
arrival until its commit; pushes past the budget wait their turn (oldest first), one larger than the whole budget
is let in alone, and a push that finds no room in time is answered RESOURCE_EXHAUSTED, then stored on retry."""

from __future__ import annotations

import platform
import random
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import lz4.block
import pytest
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc
from test_group_commit import batch, code, commits, in_process_collector, push, steps_of, wait_until

from stepwire.collector.admission import MEMORY_ENV, Busy, ByteBudget, max_held_bytes, push_bytes
from stepwire.collector.decode import decode_batch
from stepwire.collector.server import Collector
from stepwire.store.duckdb_store import DuckDBStore
from stepwire.transport import GRPC_OPTIONS


def compressed(msg: ingest_pb2.Batch) -> ingest_pb2.Batch:
    """``msg`` with every scalar column an LZ4 block (4-byte size header), as clients send them."""
    out = ingest_pb2.Batch()
    out.CopyFrom(msg)
    out.compression = ingest_pb2.COMPRESSION_LZ4_BLOCK
    for name in ("series_ids", "group_lengths", "steps", "values", "wall_times"):
        setattr(out.scalars, name, lz4.block.compress(getattr(msg.scalars, name), store_size=True))
    return out


def test_a_push_holds_its_bytes_and_what_its_columns_inflate_to() -> None:
    raw = batch("r1", "s1", 1, points=10_000)
    lz4_batch = compressed(raw)
    decoded = decode_batch(lz4_batch)
    inflated = sum(a.nbytes for a in (decoded.group_series, decoded.group_lengths, decoded.steps, decoded.values,
                                      decoded.wall_times))
    assert inflated == 4 + 4 + 3 * 8 * 10_000
    assert push_bytes(lz4_batch) == lz4_batch.ByteSize() + inflated
    assert lz4_batch.ByteSize() < inflated / 2  # columns compress: the bytes received are not the measure
    assert push_bytes(raw) == raw.ByteSize()  # uncompressed columns are decoded as views of the request's bytes
    forged = compressed(raw)
    forged.scalars.steps = (1 << 30).to_bytes(4, "little") + forged.scalars.steps[4:]  # claims 1 GiB
    assert push_bytes(forged) == forged.ByteSize() + (64 << 20)  # capped at what the decoder would accept


def test_the_budget_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MEMORY_ENV, raising=False)
    assert max_held_bytes() == 128 << 20
    monkeypatch.setenv(MEMORY_ENV, "1000")
    assert max_held_bytes() == 1000
    for bad in ("0", "-5", "lots", "1e9"):
        monkeypatch.setenv(MEMORY_ENV, bad)
        with pytest.raises(ValueError, match=MEMORY_ENV):
            max_held_bytes()


def test_pushes_past_the_budget_wait_their_turn_oldest_first() -> None:
    budget = ByteBudget(100, wait_s=30)
    order: list[str] = []
    released = threading.Event()

    def take(name: str, nbytes: int) -> None:
        with budget.hold(nbytes):
            order.append(name)
            released.wait()

    with budget.hold(60):
        big = threading.Thread(target=take, args=("big", 90))
        big.start()
        while not budget._waiting:
            time.sleep(0.001)
        small = threading.Thread(target=take, args=("small", 10))  # would fit now, but "big" came first
        small.start()
        while len(budget._waiting) < 2:
            time.sleep(0.001)
        time.sleep(0.05)
        assert order == [] and budget.held == 60
    big.join(0.05)
    while len(order) < 2:
        time.sleep(0.001)
    assert order == ["big", "small"] and budget.held == 100 and budget.peak == 100
    released.set()
    big.join()
    small.join()
    assert budget.held == 0


def test_a_push_larger_than_the_budget_goes_in_alone_and_a_full_budget_says_busy() -> None:
    budget = ByteBudget(100, wait_s=0.2)
    with budget.hold(500):
        assert budget.held == 500
        with pytest.raises(Busy, match="retry later"):
            with budget.hold(1):
                pass
    assert budget.held == 0 and not budget._waiting
    with budget.hold(100), pytest.raises(Busy):
        with budget.hold(1):
            pass


def test_a_collector_with_a_tiny_budget_stores_every_batch_once(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MEMORY_ENV, "1")  # every push is alone in the collector: one at a time
    run_id, stream = f"r{uuid.uuid4().hex[:8]}", "s1"
    msgs = [compressed(batch(run_id, stream, seq)) for seq in range(1, 41)] * 2
    random.Random(5).shuffle(msgs)
    with in_process_collector(tmp_path) as (collector, stub):
        stub.OpenRun(ingest_pb2.RunInfo(run_id=run_id, project="p"))

        def retrying(msg: ingest_pb2.Batch) -> ingest_pb2.Ack | grpc.RpcError:
            while code(result := push(stub, msg)) == grpc.StatusCode.RESOURCE_EXHAUSTED:  # as clients retry
                time.sleep(0.01)  # one push waits already, holding more than the whole budget
            return result

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(retrying, msgs))
        assert [code(r) for r in results] == [grpc.StatusCode.OK] * len(msgs)
        assert sum(not r.duplicate for r in results if isinstance(r, ingest_pb2.Ack)) == 40
        assert collector.ingest.budget.peak == max(push_bytes(m) for m in msgs)  # never two at once
        assert steps_of(collector.address, run_id) == list(range(40 * 50))


def test_a_push_finding_no_room_is_answered_resource_exhausted_and_stored_on_retry(tmp_path: Path) -> None:
    run_id = f"r{uuid.uuid4().hex[:8]}"
    with in_process_collector(tmp_path) as (collector, stub):
        stub.OpenRun(ingest_pb2.RunInfo(run_id=run_id, project="p"))
        budget = collector.ingest.budget
        budget.wait_s = 0.3
        with budget.hold(budget.limit):  # as if other pushes held all of it
            refused = push(stub, batch(run_id, "s1", 1))
        assert isinstance(refused, grpc.RpcError) and refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "retry later" in (refused.details() or "")
        assert steps_of(collector.address, run_id) == []
        ack = push(stub, batch(run_id, "s1", 1))
        assert isinstance(ack, ingest_pb2.Ack) and not ack.duplicate
        assert steps_of(collector.address, run_id) == list(range(50)) and budget.held == 0


def test_the_collector_process_tunes_glibc_malloc_to_return_freed_batches() -> None:
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    code = "from stepwire.collector import malloc_tuning; print(malloc_tuning.tune())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_pushes_never_take_the_workers_that_answer_heartbeats(tmp_path: Path) -> None:
    collector = Collector(tmp_path, workers=5, group_commit=True)  # 5 - 2 uploads - 2 kept free: 1 push at a time
    collector.start(write_address_file=False)
    run_id = f"r{uuid.uuid4().hex[:8]}"
    try:
        with grpc.insecure_channel(collector.address, options=GRPC_OPTIONS) as channel, \
                ThreadPoolExecutor(4) as pool:
            stub = ingest_pb2_grpc.IngestStub(channel)
            stub.OpenRun(ingest_pb2.RunInfo(run_id=run_id, project="p"))
            store = collector.store
            assert isinstance(store, DuckDBStore)
            with store._lock:  # the store stalls: the push in its slot waits for it
                stalled = pool.submit(push, stub, batch(run_id, "s1", 1))
                wait_until(lambda: commits(collector)._committing)
                refused = push(stub, batch(run_id, "s2", 1))
                assert isinstance(refused, grpc.RpcError) and refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                for _ in range(8):  # more than the workers: each heartbeat is answered while the store stalls
                    stub.Heartbeat(ingest_pb2.Lease(client_id="c1"), timeout=5)
            assert code(stalled.result()) == grpc.StatusCode.OK
            assert code(push(stub, batch(run_id, "s2", 1))) == grpc.StatusCode.OK  # the retry is stored
            assert len(steps_of(collector.address, run_id)) == 2 * 50
    finally:
        collector.stop()


def test_pushes_waiting_for_room_hold_at_most_the_budget_again() -> None:
    """A waiting push's request is in memory already: past a budget's worth of them, a push is answered at once."""
    budget = ByteBudget(100, wait_s=30)
    admitted: list[int] = []
    release = threading.Event()

    def take(nbytes: int) -> None:
        with budget.hold(nbytes):
            admitted.append(nbytes)
            release.wait()

    with budget.hold(80):
        waiting = [threading.Thread(target=take, args=(n,)) for n in (50, 40)]
        for i, t in enumerate(waiting):
            t.start()
            while len(budget._waiting) <= i:
                time.sleep(0.001)
        assert budget.waiting_bytes == 90
        with pytest.raises(Busy, match="pushes waiting for room"):  # 110 would wait: refused, not after 30 s
            with budget.hold(20):
                pass
        assert budget.waiting_bytes == 90
        extra = threading.Thread(target=take, args=(10,))  # 100 may wait
        extra.start()
        while len(budget._waiting) < 3:
            time.sleep(0.001)
    while len(admitted) < 3:
        time.sleep(0.001)
    release.set()
    for t in [*waiting, extra]:
        t.join()
    assert sorted(admitted) == [10, 40, 50] and budget.held == 0 and budget.waiting_bytes == 0
