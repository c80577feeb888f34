"""The PostgreSQL store under faults, through a real collector process: reads wait for the database on reader
connections of their own, never holding up a commit; every error of the database reaches clients as UNAVAILABLE
(which they retry, spooling meanwhile) and nothing is lost once it passes, while a batch whose values the
database refuses is refused alone (INVALID_ARGUMENT). The faults are real: a table locked by another session, a
terminated backend, a privilege revoked, and a cluster of the test's own stopped and started again.

Every test here needs a PostgreSQL server (``$STEPWIRE_TEST_PG_URL``: ``.ci/postgres.sh``) and skips without."""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psycopg
import pytest
from pg_cluster import Cluster
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc, query_pb2, query_pb2_grpc
from test_postgres import sealed_batches, terminate_backends

import stepwire
from conftest import CollectorProcess, start_collector
from stepwire.sender import encode_batch
from stepwire.transport import GRPC_OPTIONS


@pytest.fixture
def pg_collector(tmp_path: Path, pg_url: str) -> Iterator[CollectorProcess]:
    c = start_collector(tmp_path / "collector", "--store", pg_url, "--blob-dir", str(tmp_path / "blobs"))
    yield c
    c.stop()


def wait_for(condition: Any, what: str, timeout: float = 60.0) -> None:
    """Poll ``condition()`` until true (fails the test after ``timeout`` seconds, saying ``what``)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def waiting_on_lock(url: str, text: str) -> bool:
    """True once a session of the database waits for a lock in a query containing ``text``."""
    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
                        "wait_event_type = 'Lock' AND position(%s in query) > 0", [text]).fetchone()
        return bool(row and row[0])


def test_a_read_waiting_in_the_database_holds_up_no_commit(tmp_path: Path, pg_url: str,
                                                           pg_collector: CollectorProcess) -> None:
    run = stepwire.init(project="reads", name="r", address=pg_collector.address, dir=tmp_path / "client",
                        quiet=True, flush_interval=0.02)
    run.log({"x": 0.0}, step=0)
    assert run.flush(timeout=60)
    answers: list[list[str]] = []
    with psycopg.connect(pg_url) as locker:
        locker.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")  # a read of runs now waits until rollback
        reader = threading.Thread(target=lambda: answers.append(
            [r.id for r in stepwire.Api(address=pg_collector.address).runs()]))
        reader.start()
        wait_for(lambda: waiting_on_lock(pg_url, "FROM runs"), "the collector's read to wait on the lock")
        for step in range(1, 200):  # committed (flush returns once acknowledged) while the read waits
            run.log({"x": float(step)}, step=step)
            if step % 50 == 0:
                assert run.flush(timeout=30)
        assert run.flush(timeout=30)
        assert reader.is_alive() and not answers  # the read still waits: the commits did not wait for it
        locker.rollback()
    reader.join(timeout=60)
    assert answers == [[run.id]]
    run.finish()
    x = stepwire.Api(store=pg_url).run(run.id).scalars("x")
    assert np.array_equal(x["step"], np.arange(200)) and np.array_equal(x["value"], np.arange(200.0))


def stubs(address: str) -> tuple[grpc.Channel, Any, Any]:
    channel = grpc.insecure_channel(address, options=GRPC_OPTIONS)
    return channel, ingest_pb2_grpc.IngestStub(channel), query_pb2_grpc.QueryStub(channel)


def code_of(call: Any) -> grpc.StatusCode:
    """The status a call ends with (OK if it returns)."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return, attr-defined]
    return grpc.StatusCode.OK


def test_a_batch_the_database_refuses_is_refused_alone_and_database_errors_are_unavailable(
        tmp_path: Path, pg_url: str, pg_collector: CollectorProcess) -> None:
    channel, ingest, query = stubs(pg_collector.address)
    run_id, stream = uuid.uuid4().hex[:16], uuid.uuid4().hex
    ingest.OpenRun(ingest_pb2.RunInfo(run_id=run_id, project="errors"), timeout=30)
    batches = [encode_batch(b, run_id, 0, stream) for b in sealed_batches(6000)]
    assert [b.sequence for b in batches] == [1, 2, 3, 4, 5, 6]
    assert ingest.Push(batches[0], timeout=30).items == 1000
    too_far = ingest_pb2.Batch()
    too_far.CopyFrom(batches[1])
    too_far.sequence = 2**63 + 5  # a uint64 the store's BIGINT key cannot hold: this batch's data, not the store
    with pytest.raises(grpc.RpcError) as refused:
        ingest.Push(too_far, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert "out of range" in (refused.value.details() or "")

    # a terminated backend: the write on the lost connection is UNAVAILABLE, the retry stores it, a read reconnects.
    # The collector's crash check writes its heartbeat on the same connection every second: when that meets the
    # lost connection first (and reconnects), the push goes through and the backends are terminated again
    pending = iter(batches[1:5])
    for lost in pending:
        assert terminate_backends(pg_url, pg_url.rsplit("/", 1)[1]) >= 1
        if code_of(functools.partial(ingest.Push, lost, timeout=30)) == grpc.StatusCode.UNAVAILABLE:
            break
    else:
        raise AssertionError("the collector's own heartbeat met every lost connection before the push did")
    assert ingest.Push(lost, timeout=30).duplicate is False
    assert [r.run_id for r in query.ListRuns(query_pb2.ListRunsRequest(), timeout=30).runs] == [run_id]
    revoked = next(pending, batches[5])

    # a privilege revoked (an operator's mistake): UNAVAILABLE, retried until it is granted again, then stored
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("REVOKE INSERT ON scalar_chunks FROM current_user")
        try:
            for _ in range(2):
                assert code_of(lambda: ingest.Push(revoked, timeout=30)) == grpc.StatusCode.UNAVAILABLE
        finally:
            admin.execute("GRANT INSERT ON scalar_chunks TO current_user")
    assert ingest.Push(revoked, timeout=30).duplicate is False
    assert ingest.Push(lost, timeout=30).duplicate is True
    for rest in batches:  # what the loop above did not need
        ingest.Push(rest, timeout=30)
    channel.close()
    x = stepwire.Api(store=pg_url).run(run_id).scalars("x")
    assert np.array_equal(x["value"], np.arange(6000.0))
    log = (pg_collector.dir / "test-collector.log").read_text()
    assert "permission denied" in log  # an error that needs an operator is logged


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    from conftest import pg_admin_url

    pg_admin_url()  # the PostgreSQL tests run where the suite is given a server
    cluster = Cluster()
    yield cluster
    cluster.remove()


def test_a_stopped_cluster_is_unavailable_to_every_call_and_nothing_is_lost(tmp_path: Path,
                                                                            own_cluster: Cluster) -> None:
    collector = start_collector(tmp_path / "collector", "--store", own_cluster.url, "--blob-dir",
                                str(tmp_path / "blobs"))
    try:
        run = stepwire.init(project="stopped", address=collector.address, dir=tmp_path / "client", quiet=True,
                            flush_interval=0.02, finish_timeout=120)
        for step in range(1000):
            run.log({"x": float(step)}, step=step)
        assert run.flush(timeout=60)
        channel, ingest, query = stubs(collector.address)
        own_cluster.stop()
        (message,) = [encode_batch(b, "other", 0, uuid.uuid4().hex) for b in sealed_batches(500)]
        calls = {"Push": lambda: ingest.Push(message, timeout=30),
                 "OpenRun": lambda: ingest.OpenRun(ingest_pb2.RunInfo(run_id="other", project="p"), timeout=30),
                 "ListRuns": lambda: query.ListRuns(query_pb2.ListRunsRequest(), timeout=30),
                 "Scalars": lambda: list(query.Scalars(query_pb2.SeriesRequest(run_id=run.id, name="x"),
                                                       timeout=30))}
        assert {name: code_of(call) for name, call in calls.items()} == dict.fromkeys(calls,
                                                                                      grpc.StatusCode.UNAVAILABLE)
        for step in range(1000, 2000):  # the client spools while the database is down
            run.log({"x": float(step)}, step=step)
        own_cluster.start()
        run.finish()
        assert run.stats()["lost"] == 0
        assert ingest.Push(message, timeout=30).duplicate is False
        channel.close()
        x = stepwire.Api(store=own_cluster.url).run(run.id).scalars("x")
        assert np.array_equal(x["step"], np.arange(2000)) and np.array_equal(x["value"], np.arange(2000.0))
    finally:
        collector.stop()
