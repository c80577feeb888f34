"""Group commit: concurrent pushes stored in one transaction, each acknowledged only once that committed;
exactly once by (stream, sequence) within and across groups; a wrong batch fails alone; a store failure fails
its whole group (nothing stored, UNAVAILABLE to each push) and the retries store each batch once."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import grpc
import numpy as np
import pytest
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc

import stepwire
from conftest import start_collector
from stepwire import _core
from stepwire.collector.decode import BatchError, DecodedBatch, decode_batch
from stepwire.collector.group_commit import GroupCommit
from stepwire.collector.server import Collector
from stepwire.store.duckdb_store import DuckDBStore
from stepwire.transport import GRPC_OPTIONS

POINTS = 50


def batch(run_id: str, stream_id: str, sequence: int, name: str = "x", points: int = POINTS) -> ingest_pb2.Batch:
    """A raw batch of series ``name`` (id 0): steps ``(sequence - 1) * points`` onwards, values = steps / 2."""
    steps = np.arange((sequence - 1) * points, sequence * points, dtype=np.int64)
    msg = ingest_pb2.Batch(run_id=run_id, rank=0, stream_id=stream_id, sequence=sequence,
                           compression=ingest_pb2.COMPRESSION_NONE)
    msg.series.add(id=0, name=name, kind=_core.KIND_SCALAR)
    msg.scalars.point_count = points
    msg.scalars.series_ids = np.zeros(1, np.uint32).tobytes()
    msg.scalars.group_lengths = np.array([points], np.uint32).tobytes()
    msg.scalars.steps = steps.tobytes()
    msg.scalars.values = (steps / 2).tobytes()
    msg.scalars.wall_times = np.full(points, 1.0e9).tobytes()
    return msg


def steps_of(address: str, run_id: str, name: str = "x") -> list[int]:
    view = stepwire.Api(address=address).run(run_id)
    return [int(s) for s in view.scalars(name)["step"]] if any(s.name == name for s in view.series()) else []


@contextlib.contextmanager
def in_process_collector(directory: Path) -> Iterator[tuple[Collector, ingest_pb2_grpc.IngestStub]]:
    collector = Collector(directory, workers=40, max_concurrent_rpcs=80, group_commit=True)
    collector.start(write_address_file=False)
    try:
        with grpc.insecure_channel(collector.address, options=GRPC_OPTIONS) as channel:
            yield collector, ingest_pb2_grpc.IngestStub(channel)
    finally:
        collector.stop()


def commits(collector: Collector) -> GroupCommit:
    assert collector.ingest.commits is not None
    return collector.ingest.commits


def push(stub: ingest_pb2_grpc.IngestStub, m: ingest_pb2.Batch) -> ingest_pb2.Ack | grpc.RpcError:
    try:
        return stub.Push(m, timeout=60)
    except grpc.RpcError as exc:
        return exc


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "the pushes never got there"
        time.sleep(0.01)


def pushed_as_one_group(collector: Collector, stub: ingest_pb2_grpc.IngestStub, blocker: ingest_pb2.Batch,
                        msgs: list[ingest_pb2.Batch]) -> tuple[Any, list[ingest_pb2.Ack | grpc.RpcError]]:
    """Push ``blocker``, and while its commit waits for the store (held busy here, as a long commit would) push
    ``msgs``: they queue behind it and are then stored as one group. Returns the results of both."""
    store = collector.store
    assert isinstance(store, DuckDBStore)
    c = commits(collector)
    groups = c.groups
    with ThreadPoolExecutor(len(msgs) + 1) as pool:
        with store._lock:
            first = pool.submit(push, stub, blocker)
            wait_until(lambda: c._committing)
            rest = [pool.submit(push, stub, m) for m in msgs]
            wait_until(lambda: len(c._queue) == len(msgs))
        results = [f.result() for f in rest]
        blocked = first.result()
    assert c.groups - groups == 2  # the blocker alone, then all of msgs together
    return blocked, results


def push_all(stub: ingest_pb2_grpc.IngestStub, msgs: list[ingest_pb2.Batch], threads: int = 16
             ) -> list[ingest_pb2.Ack | grpc.RpcError]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda m: push(stub, m), msgs))


def code(result: ingest_pb2.Ack | grpc.RpcError) -> grpc.StatusCode:
    return result.code() if isinstance(result, grpc.RpcError) else grpc.StatusCode.OK


# -- the store's append_many -------------------------------------------------------------------------------------
def decoded(run_id: str, stream_id: str, sequence: int, name: str = "x") -> DecodedBatch:
    return decode_batch(batch(run_id, stream_id, sequence, name))


def test_append_many_skips_duplicates_within_the_group_and_refuses_a_wrong_batch_alone(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path)
    try:
        assert store.append(decoded("r1", "s1", 1))
        group = [decoded("r1", "s1", 1), decoded("r1", "s1", 2), decoded("r2", "s2", 1), decoded("r1", "s1", 2),
                 decoded("r1", "s1", 3, name="y"),  # series id 0 of s1 is "x": this batch alone is wrong
                 decoded("r2", "s2", 2), decoded("r2", "s2", 1)]
        results = store.append_many(group)
        assert results[:4] == [False, True, True, False] and results[5:] == [True, False]
        assert isinstance(results[4], BatchError) and "redefined" in str(results[4])
        assert store.scalars("r1", "x").step.tolist() == list(range(2 * POINTS))
        assert store.scalars("r2", "x").step.tolist() == list(range(2 * POINTS))
        assert store.scalars("r2", "x").value.tolist() == [s / 2 for s in range(2 * POINTS)]
        assert [s.name for s in store.series("r1")] == ["x"]
        # s1 sequence 3 was not stored: it can come again, right
        assert store.append_many([decoded("r1", "s1", 3), decoded("r1", "s1", 3)]) == [True, False]
        assert store.scalars("r1", "x").step.tolist() == list(range(3 * POINTS))
    finally:
        store.close()


# -- through the collector ---------------------------------------------------------------------------------------
def test_concurrent_pushes_of_many_streams_are_stored_exactly_once(tmp_path: Path) -> None:
    streams = {uuid.uuid4().hex: uuid.uuid4().hex[:16] for _ in range(24)}  # stream -> its run
    msgs = [batch(run, stream, seq) for stream, run in streams.items() for seq in range(1, 11)]
    with in_process_collector(tmp_path / "collector") as (collector, stub):
        # duplicates in one group: copies of the first batches, queued behind a busy store, commit together
        first = msgs[:8] + msgs[:8] + msgs[8:12]
        blocked, acks = pushed_as_one_group(collector, stub, msgs[12], first)
        assert code(blocked) == grpc.StatusCode.OK
        assert all(code(a) == grpc.StatusCode.OK for a in acks)
        fresh = [not a.duplicate for a in acks if isinstance(a, ingest_pb2.Ack)]
        assert [a + b for a, b in zip(fresh[:8], fresh[8:16], strict=True)] == [1] * 8 and all(fresh[16:])
        # then retries across groups: every batch two or three times, shuffled, from 16 threads at once
        rng = random.Random(0)
        again = [m for m in msgs for _ in range(rng.choice([2, 3]))]
        rng.shuffle(again)
        acks += push_all(stub, again)
        assert all(code(a) == grpc.StatusCode.OK for a in acks)
        stored: dict[tuple[str, int], int] = {(msgs[12].stream_id, msgs[12].sequence): 1}
        for m, a in zip(first + again, acks, strict=True):
            assert isinstance(a, ingest_pb2.Ack) and a.sequence == m.sequence and a.items == POINTS
            stored[(m.stream_id, m.sequence)] = stored.get((m.stream_id, m.sequence), 0) + (not a.duplicate)
        assert stored == {(m.stream_id, m.sequence): 1 for m in msgs}  # one push of each stored it, once
        c = commits(collector)
        assert c.batches == len(acks) + 1 and c.groups < c.batches  # pushes were grouped
        for run in streams.values():
            assert steps_of(collector.address, run) == list(range(10 * POINTS))


def test_a_wrong_batch_in_a_group_fails_alone(tmp_path: Path) -> None:
    run, stream = uuid.uuid4().hex[:16], uuid.uuid4().hex
    others = {uuid.uuid4().hex: uuid.uuid4().hex[:16] for _ in range(6)}
    with in_process_collector(tmp_path / "collector") as (collector, stub):
        assert not stub.Push(batch(run, stream, 1)).duplicate
        wrong = batch(run, stream, 2, name="renamed")  # well formed, but series id 0 of the stream is "x"
        group = [batch(r, s, 1) for s, r in others.items()]
        group[3:3] = [wrong]
        blocked, results = pushed_as_one_group(collector, stub, batch(run, uuid.uuid4().hex, 1, "z"), group)
        assert code(blocked) == grpc.StatusCode.OK
        assert [code(r) for r in results] == [grpc.StatusCode.OK] * 3 + [grpc.StatusCode.INVALID_ARGUMENT] + \
            [grpc.StatusCode.OK] * 3
        assert isinstance(results[3], grpc.RpcError) and "redefined" in str(results[3].details())
        for s, r in others.items():
            assert steps_of(collector.address, r) == list(range(POINTS)), s
        assert steps_of(collector.address, run) == list(range(POINTS))
        assert not stub.Push(batch(run, stream, 2)).duplicate  # the right batch 2 is still welcome
        assert steps_of(collector.address, run) == list(range(2 * POINTS))


def test_a_store_failure_mid_group_fails_every_push_of_it_and_stores_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    streams = {uuid.uuid4().hex: uuid.uuid4().hex[:16] for _ in range(8)}
    msgs = [batch(run, stream, seq) for stream, run in streams.items() for seq in (1, 2)]
    with in_process_collector(tmp_path / "collector") as (collector, stub):
        store = collector.store
        assert isinstance(store, DuckDBStore)
        insert: Callable[..., None] = store._insert
        failing = threading.Event()
        failing.set()
        inserted: list[str] = []

        def disk_full(con: duckdb.DuckDBPyConnection, table: str, select: str, rows: dict[str, Any]) -> None:
            # the disk fills up at the last insert of the transaction: the chunks are in, then the batches fail
            if failing.is_set() and table == "batches":
                raise duckdb.IOException("could not write file: No space left on device (injected)")
            inserted.append(table)
            insert(con, table, select, rows)

        monkeypatch.setattr(store, "_insert", disk_full)
        blocked, results = pushed_as_one_group(collector, stub, batch(uuid.uuid4().hex[:16], uuid.uuid4().hex, 1),
                                               msgs)
        assert code(blocked) == grpc.StatusCode.UNAVAILABLE
        assert "scalar_chunks" in inserted  # it did fail midway
        assert [code(r) for r in results] == [grpc.StatusCode.UNAVAILABLE] * len(msgs)
        assert all("No space left" in str(r.details()) for r in results if isinstance(r, grpc.RpcError))
        assert [r.id for r in store.runs()] == []  # nothing stored, not even a placeholder run

        failing.clear()  # the disk has room again: the clients' retries store each batch once
        retried = push_all(stub, msgs + msgs)
        assert all(code(r) == grpc.StatusCode.OK for r in retried)
        assert sum(not r.duplicate for r in retried if isinstance(r, ingest_pb2.Ack)) == len(msgs)
        for run in streams.values():
            assert steps_of(collector.address, run) == list(range(2 * POINTS))


def test_acknowledged_batches_survive_a_sigkill_right_after(tmp_path: Path) -> None:
    directory = tmp_path / "collector"
    collector = start_collector(directory)
    streams = {uuid.uuid4().hex: uuid.uuid4().hex[:16] for _ in range(16)}
    acked: set[tuple[str, str, int]] = set()
    lock = threading.Lock()
    enough = threading.Event()

    def client(stream: str, run: str) -> None:
        with grpc.insecure_channel(collector.address, options=GRPC_OPTIONS) as channel:
            stub = ingest_pb2_grpc.IngestStub(channel)
            seq = 1
            while seq < 1000:
                try:
                    ack = stub.Push(batch(run, stream, seq, points=2000), timeout=30)
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:  # busy: retried, as clients do
                        time.sleep(0.01)
                        continue
                    return  # the collector is gone
                seq += 1
                with lock:
                    acked.add((run, stream, ack.sequence))
                    if len(acked) >= 200:
                        enough.set()

    threads = [threading.Thread(target=client, args=item) for item in streams.items()]
    try:
        for t in threads:
            t.start()
        assert enough.wait(60)
        os.kill(collector.proc.pid, signal.SIGKILL)  # while every client has a push in flight
        for t in threads:
            t.join(60)
        collector.proc.wait()
    finally:
        collector.stop()
    with lock:
        survivors = set(acked)
    restarted = start_collector(directory)
    try:
        for stream, run in streams.items():
            last = max((seq for r, s, seq in survivors if s == stream), default=0)
            got = steps_of(restarted.address, run)
            # every acknowledged batch is there (each client's batches are acknowledged in order)
            assert got[:last * 2000] == list(range(last * 2000)), stream
            assert len(got) % 2000 == 0 and got == list(range(len(got)))  # and whole batches only, once
    finally:
        restarted.stop()
