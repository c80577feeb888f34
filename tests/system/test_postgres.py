"""The PostgreSQL store end to end: collectors started with ``--store postgresql://...`` (and the embedded one under
``$STEPWIRE_STORE``) store what runs log exactly as the DuckDB store does; two collectors given the same batches
at once store each once; a lost connection or a restarted server loses and doubles nothing; the schema is made
once by collectors starting together and never rolled back; passwords never appear in messages.

Every test here needs a PostgreSQL server (``$STEPWIRE_TEST_PG_URL``: ``.ci/postgres.sh``) and skips without."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psycopg
import pytest
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc

import stepwire
from conftest import CollectorProcess, start_collector, stop_embedded
from stepwire import _core
from stepwire.collector.decode import BatchError
from stepwire.sender import encode_batch
from stepwire.store.base import RunRecord, StoreDamaged, StoreUnavailable
from stepwire.store.postgres import PostgresStore
from stepwire.store.postgres.schema import SCHEMA_VERSION
from stepwire.transport import GRPC_OPTIONS
from test_store_limits import batch


@pytest.fixture
def pg_collector(tmp_path: Path, pg_url: str) -> Any:
    c = start_collector(tmp_path / "collector", "--store", pg_url, "--blob-dir", str(tmp_path / "blobs"))
    yield c
    c.stop()


def log_run(run: stepwire.Run, n: int, source: Path) -> None:
    for i in range(n):
        run.log({"loss": 1.0 / (i + 1), "lr": 0.1}, step=i)
    run.log_histogram("w", np.arange(100, dtype=np.float32), step=3)
    run.log_text("notes", "hello", step=2)
    source.write_bytes(b"weights" * 1000)
    run.log_artifact(source, name="model.bin", step=5)
    run.log_params({"lr": 0.1})


def test_a_collector_on_postgres_stores_what_a_run_logs(tmp_path: Path, pg_url: str,
                                                        pg_collector: CollectorProcess) -> None:
    out = subprocess.run([sys.executable, "-m", "stepwire", "runs", "--store", pg_url], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    run = stepwire.init(project="pg", name="e2e", address=pg_collector.address, dir=tmp_path / "client")
    log_run(run, 3000, tmp_path / "model.bin")
    run.finish()
    stored = stepwire.Api(store=pg_url, blob_dir=tmp_path / "blobs").run(run.id)
    served = stepwire.Api(address=pg_collector.address).run(run.id)  # the same answers through the Query service
    assert (stored.project, stored.name, stored.status, stored.config) == ("pg", "e2e", "finished", {"lr": 0.1})
    loss = stored.scalars("loss")
    assert np.array_equal(loss["step"], np.arange(3000)) and np.array_equal(loss["value"], 1.0 / np.arange(1, 3001))
    assert np.array_equal(served.scalars("loss")["value"], loss["value"])
    assert stored.summary() == served.summary() == {"loss": {"last": 1 / 3000, "min": 1 / 3000, "max": 1.0},
                                                     "lr": {"last": 0.1, "min": 0.1, "max": 0.1}}
    (h,) = stored.histograms("w")
    assert (h.step, h.count, h.min, h.max) == (3, 100, 0.0, 99.0)
    assert [(t.name, t.step, t.text) for t in stored.texts()] == [("notes", 2, "hello")]
    (a,) = stored.artifacts()
    assert (a.name, a.size, a.step) == ("model.bin", 7000, 5)
    assert stored.download_artifact("model.bin", tmp_path / "back.bin").read_bytes() == b"weights" * 1000
    assert (tmp_path / "blobs" / a.sha256[:2] / a.sha256).exists()
    assert not (pg_collector.dir / "stepwire.duckdb").exists()  # nothing went to a DuckDB file
    out = subprocess.run([sys.executable, "-m", "stepwire", "show", run.id, "--store", pg_url], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "loss" in out.stdout, out.stderr


def test_the_embedded_collector_writes_to_STEPWIRE_STORE(tmp_path: Path, pg_url: str, data_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPWIRE_STORE", pg_url)
    monkeypatch.setenv("STEPWIRE_BLOB_DIR", str(tmp_path / "shared-blobs"))
    runs = [stepwire.init(project="nodes", run_id="one-run", rank=r, world_size=2) for r in (0, 1)]
    for r, run in enumerate(runs):
        for i in range(500):
            run.log({"x": float(100 * r + i)}, step=i)
    for run in runs:
        run.finish()
    stop_embedded(data_dir)
    assert not (data_dir / "stepwire.duckdb").exists()
    view = stepwire.Api().run("one-run")  # $STEPWIRE_STORE: the database itself (no collector runs now)
    assert view.status == "finished"
    x = view.scalars("x")
    assert len(x["step"]) == 1000 and sorted(set(x["rank"].tolist())) == [0, 1]
    assert np.array_equal(view.scalars("x", agg="mean")["value"], np.arange(500) + 50.0)
    with pytest.raises(FileNotFoundError):  # a directory given is read as given: it holds no store file
        stepwire.Api(dir=data_dir)


def sealed_batches(n_points: int) -> list[_core.SealedBatch]:
    """Batches of one stream holding scalar "x" = 0, 1, ... (one per 1000 points)."""
    stream = _core.Stream(flush_interval=60.0, max_sealed=10_000)
    p = _core.Producer(stream)
    p._scalar_ids["x"] = stream.define("x", _core.KIND_SCALAR)
    for i in range(n_points):
        p.log_scalar("x", float(i))
        if i % 1000 == 999:
            stream.flush()
    stream.flush()
    stream.close()
    out = []
    while (b := stream.next_batch(0.0)) is not None:
        out.append(b)
    return out


def test_two_collectors_given_the_same_batches_at_once_store_each_once(tmp_path: Path, pg_url: str) -> None:
    collectors = [start_collector(tmp_path / f"c{i}", "--store", pg_url) for i in range(2)]
    try:
        channels = [grpc.insecure_channel(c.address, options=GRPC_OPTIONS) for c in collectors]
        stubs = [ingest_pb2_grpc.IngestStub(ch) for ch in channels]
        run_id = uuid.uuid4().hex[:16]
        for stub in stubs:
            stub.OpenRun(ingest_pb2.RunInfo(run_id=run_id, project="twice"))
        streams = {uuid.uuid4().hex: [] for _ in range(4)}
        for stream_id in streams:
            streams[stream_id] = [encode_batch(b, run_id, 0, stream_id) for b in sealed_batches(20_000)]
        msgs = [m for ms in streams.values() for m in ms]
        assert len(msgs) > 20
        acks: list[list[Any]] = [[], []]
        start = threading.Barrier(2)

        def push(i: int) -> None:  # both the same batches in the same order (a stream's in sequence, as clients do)
            start.wait()
            acks[i] = [(m.stream_id, m.sequence, stubs[i].Push(m, timeout=60)) for m in msgs]

        threads = [threading.Thread(target=push, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stored = {(s, q): 0 for s, q, _ in acks[0]}
        for side in acks:
            for s, q, ack in side:
                stored[(s, q)] += not ack.duplicate
        assert len(acks[1]) == len(msgs) and set(stored.values()) == {1}  # each stored by exactly one of the two
        x = stepwire.Api(store=pg_url).run(run_id).scalars("x")
        assert len(x["step"]) == 4 * 20_000
        assert np.array_equal(np.sort(x["value"]), np.repeat(np.arange(20_000, dtype=np.float64), 4))
        for ch in channels:
            ch.close()
    finally:
        for c in collectors:
            c.stop()


def terminate_backends(admin_url: str, database: str) -> int:
    with psycopg.connect(admin_url, autocommit=True) as c:
        return len(c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                             "AND pid <> pg_backend_pid()", [database]).fetchall())


def test_a_lost_connection_fails_a_write_once_then_reconnects(tmp_path: Path, pg_url: str) -> None:
    store = PostgresStore(pg_url, tmp_path / "blobs")
    store.open_run(RunRecord("run", "p", "n"))
    values = np.arange(10, dtype=np.float64)
    assert store.append(batch("s", 0, 1, {0: ("x", np.arange(10), values)}, True))
    assert terminate_backends(pg_url, pg_url.rsplit("/", 1)[1]) == 1
    with pytest.raises(StoreUnavailable, match="cannot take this now"):
        store.append(batch("s", 0, 2, {0: ("x", np.arange(10, 20), values)}, False))
    assert store.append(batch("s", 0, 2, {0: ("x", np.arange(10, 20), values)}, False))  # reconnected
    assert not store.append(batch("s", 0, 1, {0: ("x", np.arange(10), values)}, True))  # still known: duplicate
    assert store.reconnected == 1
    assert np.array_equal(store.scalars("run", "x").step, np.arange(20))  # on a reader connection of its own
    assert terminate_backends(pg_url, pg_url.rsplit("/", 1)[1]) == 2  # the writer's and the reader's
    assert np.array_equal(store.scalars("run", "x").step, np.arange(20))  # a read reconnects at once
    assert store.reconnected == 2
    store.close()


def test_append_many_is_one_transaction_skipping_duplicates_and_refusing_wrong_batches_alone(
        tmp_path: Path, pg_url: str) -> None:
    store = PostgresStore(pg_url, tmp_path / "blobs")
    one = np.ones(3)
    good = [batch("s", 0, q, {0: ("x", np.arange(3) + 3 * q, one)}, q == 1) for q in (1, 2)]
    wrong = batch("t", 0, 1, {0: ("x", np.arange(3), one)}, False)  # uses a series it never defined
    results = store.append_many([good[0], wrong, good[1], good[0]])
    assert results[0] is True and isinstance(results[1], BatchError) and results[2:] == [True, False]
    assert np.array_equal(store.scalars("run", "x").step, np.arange(3, 9))
    assert [s.items for s in store.series("run")] == [6]
    store.close()


def test_collectors_starting_together_make_the_schema_once_and_keep_data(tmp_path: Path, pg_url: str) -> None:
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            stores.append(PostgresStore(pg_url, tmp_path / "blobs"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(stores) == 8
    stores[0].open_run(RunRecord("kept", "p", "n"))
    for s in stores:
        s.close()
    with psycopg.connect(pg_url) as c:
        assert c.execute("SELECT version FROM schema_version ORDER BY version").fetchall() == [
            (v,) for v in range(1, SCHEMA_VERSION + 1)]  # each step once
        c.execute("INSERT INTO schema_version VALUES (%s)", [SCHEMA_VERSION + 1])
    with pytest.raises(StoreDamaged, match="upgrade stepwire"):  # written by a newer stepwire: left as it is
        PostgresStore(pg_url, tmp_path / "blobs")
    with psycopg.connect(pg_url) as c:
        c.execute("DELETE FROM schema_version WHERE version > %s", [SCHEMA_VERSION])
    again = PostgresStore(pg_url, tmp_path / "blobs")
    assert [r.id for r in again.runs()] == ["kept"]
    again.close()


def test_passwords_never_appear_in_messages(tmp_path: Path, pg_url: str) -> None:
    wrong = pg_url.replace("://stepwire_test:stepwire_test@", "://stepwire_test:Secret-Pw-42@") \
        if "://stepwire_test:stepwire_test@" in pg_url else None
    for url in filter(None, [wrong, "postgresql://someone:Secret-Pw-42@127.0.0.1:1/nothing"]):
        out = subprocess.run([sys.executable, "-m", "stepwire", "collector", "--listen", "127.0.0.1:0", "--dir",
                              str(tmp_path / "c"), "--store", url], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2
        assert "Secret-Pw-42" not in out.stdout + out.stderr and ":***@" in out.stderr, out.stderr


def cluster() -> tuple[str, str]:
    """(version, name) of the local PostgreSQL cluster, for pg_ctlcluster (skips unless root with one)."""
    import os

    if os.geteuid() != 0 or shutil.which("pg_lsclusters") is None:
        pytest.skip("restarting PostgreSQL needs root and Debian's pg_ctlcluster")
    lines = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True).stdout.split("\n")
    online = [line.split() for line in lines if "online" in line]
    if not online:
        pytest.skip("no PostgreSQL cluster online")
    return online[0][0], online[0][1]


def test_postgres_restarted_mid_run_loses_and_doubles_nothing(tmp_path: Path, pg_url: str,
                                                              pg_collector: CollectorProcess) -> None:
    version, name = cluster()
    run = stepwire.init(project="restart", address=pg_collector.address, dir=tmp_path / "client",
                        flush_interval=0.02, finish_timeout=120)
    restarted = threading.Event()

    def restart() -> None:
        subprocess.run(["pg_ctlcluster", version, name, "restart"], check=True, timeout=120)
        restarted.set()

    n = 0
    for _ in range(10_000):  # before
        run.log({"x": float(n)}, step=n)
        n += 1
    assert run.flush(timeout=60)
    restarter = threading.Thread(target=restart)
    restarter.start()
    while not restarted.is_set():  # while PostgreSQL stops and starts again
        run.log({"x": float(n)}, step=n)
        n += 1
        time.sleep(0.0005)
    restarter.join()
    for _ in range(10_000):  # after
        run.log({"x": float(n)}, step=n)
        n += 1
    run.finish()
    assert run.stats()["lost"] == 0 and n > 20_000
    x = stepwire.Api(store=pg_url).run(run.id).scalars("x")
    assert np.array_equal(x["step"], np.arange(n)) and np.array_equal(x["value"], np.arange(n, dtype=np.float64))
    log = (pg_collector.dir / "test-collector.log").read_text()
    assert "reconnected to the store postgresql://" in log  # the connection did break and was replaced
    assert "stepwire_test:stepwire_test@" not in log


def test_a_reader_of_a_database_without_the_schema_finds_no_runs_and_creates_nothing(pg_url: str) -> None:
    api = stepwire.Api(store=pg_url)
    assert api.runs() == []
    with pytest.raises(KeyError, match="no run"):
        api.run("anything")
    with psycopg.connect(pg_url) as c:  # read-only: no schema made
        assert c.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)


def test_ui_and_export_read_a_postgres_store(tmp_path: Path, pg_url: str, pg_collector: CollectorProcess) -> None:
    import json
    import urllib.request

    run = stepwire.init(project="pg", name="charted", address=pg_collector.address, dir=tmp_path / "client")
    for i in range(5000):  # long enough for the chart to use the stored block extremes
        run.log({"loss": float(i % 7)}, step=i)
    run.finish()
    with subprocess.Popen([sys.executable, "-m", "stepwire", "ui", "--store", pg_url, "--http", "127.0.0.1:0",
                           "--dir", str(tmp_path / "ui")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert "stepwire_test:stepwire_test@" not in line
            url = next(word for word in line.split() if word.startswith("http://"))

            def get(path: str) -> Any:
                with urllib.request.urlopen(url + path, timeout=30) as r:
                    return json.loads(r.read())

            assert [r["name"] for r in get("api/runs")] == ["charted"]
            chart = get(f"api/scalars?run={run.id}&name=loss&points=100")
            assert chart["total"] == 5000 and min(chart["ranks"][0]["y"]) == 0 and max(chart["ranks"][0]["y"]) == 6
        finally:
            proc.terminate()
    out = subprocess.run([sys.executable, "-m", "stepwire", "export", run.id, "--store", pg_url, "--csv",
                          str(tmp_path / "csv")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = (tmp_path / "csv" / "scalars.csv").read_text().splitlines()
    assert len(lines) == 5001


def store_all(start: threading.Barrier, store: PostgresStore, group: list[Any], results: list[bool | BatchError],
              errors: list[BaseException]) -> None:
    start.wait()
    try:
        results += store.append_many(group)
    except BaseException as exc:  # a deadlock would be StoreUnavailable here
        errors.append(exc)


def test_two_stores_given_one_group_in_opposite_orders_store_each_batch_once(tmp_path: Path, pg_url: str) -> None:
    stores = [PostgresStore(pg_url, tmp_path / "blobs") for _ in range(2)]
    one = np.ones(4)
    for round_ in range(3):
        group = [batch(f"r{round_}s{k}", k % 3, q, {0: ("x", np.arange(4) + 4 * q, one)}, q == 1)
                 for k in range(10) for q in range(1, 6)]
        results: list[list[bool | BatchError]] = [[], []]
        errors: list[BaseException] = []
        start = threading.Barrier(2)
        threads = [threading.Thread(target=store_all, args=(start, stores[i], order, results[i], errors))
                   for i, order in enumerate((group, group[::-1]))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert [a + b for a, b in zip(results[0], results[1][::-1], strict=True)] == [1] * len(group)
    x = stores[0].scalars("run", "x")
    assert len(x) == 3 * 10 * 5 * 4 and np.array_equal(np.bincount(x.rank), [3 * 4 * 20, 3 * 3 * 20, 3 * 3 * 20])
    for s in stores:
        s.close()


def test_a_second_collector_leaves_ranks_it_never_served_alone(tmp_path: Path, pg_url: str) -> None:
    """Two nodes' collectors on one store: the one a rank does not log to never hears its lease, and must not mark
    it crashed (nor flip it back) while the rank lives on the other node; the rank's own collector still would."""
    from stepwire.collector.leases import LEASE_TTL_S

    a = start_collector(tmp_path / "a", "--store", pg_url, "--blob-dir", str(tmp_path / "blobs"))
    b = start_collector(tmp_path / "b", "--store", pg_url, "--blob-dir", str(tmp_path / "blobs"))
    try:
        run = stepwire.init(project="nodes", address=a.address, run_id="two-nodes", quiet=True)
        api = stepwire.Api(store=pg_url, blob_dir=tmp_path / "blobs")
        deadline = time.monotonic() + LEASE_TTL_S + 5  # past the lease time-out, checked every half second
        while time.monotonic() < deadline:
            run.log({"loss": 1.0})
            assert api.run("two-nodes").meta["ranks"] == {"0": "running"}
            time.sleep(0.5)
        run.finish()
        assert api.run("two-nodes").status == "finished"
    finally:
        a.stop()
        b.stop()
    assert "marked crashed" not in (tmp_path / "b" / "test-collector.log").read_text()
