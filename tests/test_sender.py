"""The sender thread and the bounds around it: one retry policy, a collector that stops answering or was never
there, a spool that cannot be written, an offline finish, and the memory the core and the side queue hold."""

from __future__ import annotations

import errno
import json
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from stepwire.v1 import ingest_pb2

import stepwire
from conftest import start_collector
from stepwire import _core, collector_link, sender, spool
from stepwire.retry import Backoff, retry
from stepwire.spool import Spool, spools
from stepwire.transport import open_channel

MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def balanced(s: dict[str, Any]) -> bool:
    """Every logged item is stored, refused, in the spool or counted lost."""
    return bool(s["logged"] == s["acknowledged"] + s["rejected"] + s["spooled"] + s["lost"])


# -- the retry policy --------------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_backoff_grows_to_its_cap_with_jitter_and_stops_at_the_deadline() -> None:
    clock = FakeClock()
    b = Backoff(initial=0.1, cap=1.0, deadline=3.0, jitter=0.5, clock=clock, rand=lambda: 1.0)
    assert [round(b.next_delay(), 6) for _ in range(6)] == [0.15, 0.3, 0.6, 1.2, 1.5, 1.5]  # base*(1+jitter)
    low = Backoff(initial=0.1, cap=1.0, jitter=0.5, clock=clock, rand=lambda: 0.0)
    assert [round(low.next_delay(), 6) for _ in range(3)] == [0.05, 0.1, 0.2]
    clock.now += 2.9
    assert b.remaining() == pytest.approx(0.1) and not b.expired()
    assert b.wait() is False  # the next delay would pass the deadline: no sleep
    clock.now += 0.2
    assert b.expired() and b.remaining() == 0.0
    b.reset()
    assert b.remaining() == pytest.approx(3.0) and b.attempts == 0


def test_backoff_as_a_gate() -> None:
    clock = FakeClock()
    gate = Backoff(initial=1.0, cap=4.0, jitter=0.0, clock=clock)
    assert gate.ready()
    gate.failed()
    assert not gate.ready()
    clock.now += 1.0
    assert gate.ready()
    gate.failed()  # 2 s now
    clock.now += 1.9
    assert not gate.ready()
    gate.succeeded()
    assert gate.ready()
    with pytest.raises(ValueError):
        Backoff(initial=2.0, cap=1.0)


def test_retry_retries_what_it_may_and_raises_the_last_error() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("not yet")
        return "ok"

    assert retry(flaky, lambda e: isinstance(e, ConnectionError), initial=0.001, cap=0.002) == "ok"
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(ConnectionError):
        retry(lambda: flaky() and (_ for _ in ()).throw(ConnectionError("never")),
              lambda e: isinstance(e, ConnectionError), initial=0.001, attempts=4)
    assert len(calls) == 4
    with pytest.raises(KeyError):
        retry(lambda: {}["x"], lambda e: isinstance(e, ConnectionError))
    stop = threading.Event()
    stop.set()
    with pytest.raises(ConnectionError):  # a stop set: no more waiting
        retry(lambda: (_ for _ in ()).throw(ConnectionError("down")), lambda e: True, initial=10.0, cap=10.0,
              stop=stop)


# -- the core's bounds -----------------------------------------------------------------------------------------
def test_the_core_holds_a_bounded_amount_and_a_blocked_producer_gives_up() -> None:
    stream = _core.Stream(ring_capacity=1 << 16, block_timeout=0.3, flush_interval=0.01)
    p = _core.Producer(stream)
    p._scalar_ids.update({f"k{j}": stream.define(f"k{j}", _core.KIND_SCALAR) for j in range(100)})
    attempts = 30_000 * 100  # ~84 MiB sealed: far more than the core may hold
    done = threading.Event()

    def produce() -> None:
        for i in range(attempts // 100):  # nobody takes batches
            p.log({f"k{j}": float(i) for j in range(100)})
        done.set()

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    assert done.wait(120), "a producer under the block policy waited without bound"
    stats = stream.stats()
    assert stats["held_bytes"] <= 32 * MiB  # sealed batches and the open one together (no histograms here)
    assert stats["timed_out"] > 0 and stats["dropped"] == stats["timed_out"]
    assert stats["logged"] + stats["dropped"] == attempts
    stream.close()
    kept = 0
    while (b := stream.next_batch(0.0)) is not None:
        kept += b.point_count
    assert kept == stats["logged"]  # what was accepted is all there


def test_queued_histograms_are_bounded_and_a_blocked_push_gives_up() -> None:
    stream = _core.Stream(max_histogram_bytes=MiB, block_timeout=0.2, max_sealed=1, max_sealed_bytes=1)
    sid = stream.define("h", _core.KIND_HISTOGRAM)
    values = (np.random.default_rng(0).standard_normal(20_000) * 1e6).astype(np.float32)
    results = [stream.push_histogram(sid, step, values, 8) for step in range(200)]  # k=8: big histograms
    dropped = sum(r is None for r in results)
    stats = stream.stats()
    assert dropped > 0 and stats["timed_out"] == dropped
    assert stats["held_bytes"] <= 48 * MiB  # sealed + open ≤ 32 MiB, queued histograms ≤ 1 MiB + one
    stream.close()


# -- a sender over a spool that cannot be written ------------------------------------------------------------------
class FailingSpool(Spool):
    """A spool whose appends fail (ENOSPC) while ``full`` is set, or raise ``boom`` once."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.full = True
        self.boom: Exception | None = None

    def append(self, kind: int, payload: bytes) -> None:
        if self.boom is not None:
            exc, self.boom = self.boom, None
            raise exc
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        super().append(kind, payload)


def test_offline_sender_counts_what_it_cannot_spool_survives_errors_and_resumes(tmp_path: Path) -> None:
    stream = _core.Stream(flush_interval=0.01)
    p = _core.Producer(stream)
    p._scalar_ids["a"] = stream.define("a", _core.KIND_SCALAR)
    sp = FailingSpool(tmp_path / "spool" / "r-r0-s")
    s = sender.Sender(stream, None, "r", 0, "s" * 32, sp, offline=True)
    s._spool_retry = Backoff(initial=0.01, cap=0.02)  # retry the spool often in this test
    for i in range(1000):
        p.log_scalar("a", float(i), step=i)
    assert s.wait(stream.flush(), 30, delivered=False)
    c = s.counts()
    assert c["lost"] == 1000 and c["spooled"] == 0 and "cannot be written (No space left on device)" in str(
        c["lost_reason"])
    sp.boom = RuntimeError("unexpected")  # not an OSError: the thread must survive it too
    s._spool_retry.succeeded()  # the next record tries the spool again
    p.log_scalar("a", 1000.0, step=1000)
    assert s.wait(stream.flush(), 30, delivered=False)
    assert s.counts()["sender_errors"] == 1 and s.counts()["lost"] == 1001
    sp.full = False  # room again: spooling resumes
    for i in range(1001, 2000):
        p.log_scalar("a", float(i), step=i)
        time.sleep(0.00001)
    assert s.wait(stream.flush(), 30, delivered=False)
    stream.close()
    assert s.join(30)
    c = s.counts()
    assert c["spooled"] > 0 and c["spooled"] == c["spooled_total"]
    assert c["lost"] + c["spooled"] == stream.stats()["logged"] == 2000
    assert s.spool_error is None


def test_what_follows_a_lost_batch_stays_deliverable(tmp_path: Path) -> None:
    """The first batch carried the series definitions and the run's OpenRun was lost too: both travel with
    the next record that reaches the spool, so a sync stores what was spooled."""
    data = tmp_path / "client"
    stream = _core.Stream(flush_interval=60.0)
    p = _core.Producer(stream)
    p._scalar_ids["a"] = stream.define("a", _core.KIND_SCALAR)
    sp = FailingSpool(data / "spool" / "run1-r0-s")
    s = sender.Sender(stream, None, "run1", 0, "s" * 32, sp, offline=True)
    s.submit(spool.OPEN_RUN, ingest_pb2.RunInfo(run_id="run1", project="carried", name="n", config_json="{}",
                                                 created=time.time(), status="running", rank=0, world_size=1))
    for i in range(100):
        p.log_scalar("a", float(i), step=i)
    assert s.wait(stream.flush(), 30, delivered=False)
    assert s.counts()["lost"] == 100
    sp.full = False
    s._spool_retry.succeeded()
    for i in range(100, 300):
        p.log_scalar("a", float(i), step=i)
    stream.close()
    assert s.join(30)
    assert s.counts()["spooled"] == 200 and s.counts()["side_lost"] == 0
    collector = start_collector(tmp_path / "server")
    try:
        out = subprocess.run([sys.executable, "-m", "stepwire", "sync", str(data), "--quiet", "--address",
                              collector.address], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        view = stepwire.Api(address=collector.address).run("run1")
        assert view.project == "carried"
        np.testing.assert_array_equal(view.scalars("a")["step"], np.arange(100, 300))
    finally:
        collector.stop()


def test_the_side_queue_is_bounded(tmp_path: Path) -> None:
    stream = _core.Stream()
    gate = threading.Event()

    class SlowSpool(Spool):
        def append(self, kind: int, payload: bytes) -> None:
            gate.wait(30)
            super().append(kind, payload)

    s = sender.Sender(stream, None, "r", 0, "s" * 32, SlowSpool(tmp_path / "sp"), offline=True,
                      side_bytes=64 * 1024, side_wait=0.05)
    text = "x" * 10_000
    accepted = [s.submit(spool.TEXT, ingest_pb2.TextRecord(run_id="r", name="t", text=text, sequence=i))
                for i in range(40)]
    assert not all(accepted) and s.counts()["side_lost"] == accepted.count(False)
    assert s._side_bytes <= 64 * 1024 + 11_000
    assert s.submit(spool.UPDATE_RUN, ingest_pb2.RunUpdate(run_id="r", status="finished"), force=True)
    gate.set()
    stream.close()
    assert s.join(30)
    assert Spool(tmp_path / "sp").count() == accepted.count(True) + 1
    assert "queue of run updates, texts and artifacts stayed full" in str(s.counts()["lost_reason"])


# -- a collector that does not answer ------------------------------------------------------------------------------
def test_a_run_that_delivered_everything_leaves_no_spool_behind(tmp_path: Path) -> None:
    collector = start_collector(tmp_path / "server")
    try:
        with stepwire.init(address=collector.address, dir=tmp_path / "client", quiet=True) as run:
            run.log({"x": 1.0})
            assert run.spool_dir.is_dir()  # locked while the run logs
        assert run.stats()["acknowledged"] == 1 and spools(tmp_path / "client") == []
    finally:
        collector.stop()


def test_a_run_starting_on_the_spool_has_its_opening_record_there_when_init_returns(tmp_path: Path) -> None:
    """Written by init itself, first: a process that dies at its first call leaves its run's project and name
    (the sender thread used to spool it later, behind the first batch)."""
    run = stepwire.init(project="opened", name="first", mode="offline", dir=tmp_path / "data", quiet=True,
                        config={"lr": 0.1})
    try:
        record = Spool(run.spool_dir).peek()
        assert record is not None and record[0] == spool.OPEN_RUN
        info = ingest_pb2.RunInfo.FromString(record[1])
        assert (info.run_id, info.project, info.name, json.loads(info.config_json)) == (
            run.id, "opened", "first", {"lr": 0.1})
    finally:
        run.finish()


def test_offline_finish_returns_promptly_with_everything_spooled(tmp_path: Path) -> None:
    run = stepwire.init(project="offline", mode="offline", dir=tmp_path / "data", finish_timeout=60.0, quiet=True)
    for i in range(20_000):
        run.log({"a": float(i), "b": 1.0})
    run.log_text("t", "hello")
    start = time.monotonic()
    assert run.flush(timeout=30)  # in the spool: an offline run has nothing more to wait for
    run.finish()
    assert time.monotonic() - start < 30  # it used to wait the whole finish_timeout
    s = run.stats()
    assert s["spooled"] == s["spooled_total"] == s["logged"] == 40_000 and s["lost"] == 0 and balanced(s)


def test_once_the_collector_stops_answering_records_go_straight_to_the_spool(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collector_link, "QUICK_RETRY_S", 0.3)
    attempts: list[int] = []
    real_deliver = collector_link.deliver

    def counting_deliver(*args: Any, **kwargs: Any) -> None:
        attempts.append(args[1])
        real_deliver(*args, **kwargs)

    monkeypatch.setattr(collector_link, "deliver", counting_deliver)
    port = free_port()
    collector = start_collector(tmp_path / "server", "--listen", f"127.0.0.1:{port}")
    run = stepwire.init(address=f"127.0.0.1:{port}", dir=tmp_path / "client", flush_interval=0.02, quiet=True)
    try:
        run.log({"x": 0.0}, step=0)
        assert run.flush(30)
        collector.proc.send_signal(signal.SIGKILL)
        collector.proc.wait()
        step = 1
        deadline = time.monotonic() + 60
        while run.stats()["spooled"] == 0 and time.monotonic() < deadline:  # the first unanswered RPC
            run.log({"x": float(step)}, step=step)
            step += 1
            time.sleep(0.01)
        assert run.stats()["spooled"] > 0 and not run._sender.answering
        tried = len(attempts)
        for _ in range(50):  # no more delivery attempts: each record goes straight to the spool
            run.log({"x": float(step)}, step=step)
            step += 1
            time.sleep(0.01)
        assert run._sender.wait(run._stream.flush(30) or 0, 30, delivered=False)
        assert len(attempts) == tried and run.stats()["spooled"] == step - 1
        collector = start_collector(tmp_path / "server", "--listen", f"127.0.0.1:{port}")
        assert run.flush(120)  # a probe finds it answering: the spool is replayed
        s = run.stats()
        assert s["acknowledged"] == s["logged"] == step and s["spooled"] == 0 and s["spooled_total"] >= 50
        run.finish()
        steps = stepwire.Api(address=collector.address).run(run.id).scalars("x")["step"]
        np.testing.assert_array_equal(steps, np.arange(step))
    finally:
        run.finish()
        collector.stop()


def test_a_spooled_record_that_is_no_message_is_set_aside_and_replay_goes_on(tmp_path: Path) -> None:
    collector = start_collector(tmp_path / "server")
    try:
        sp = Spool(tmp_path / "sp")
        sp.append(spool.OPEN_RUN, ingest_pb2.RunInfo(run_id="undecodable", project="p").SerializeToString())
        sp.append(spool.BATCH, b"\x0a\xff\xff\xff")  # intact checksums around a truncated Batch
        sp.append(spool.TEXT, ingest_pb2.TextRecord(run_id="undecodable", name="t", text="after").SerializeToString())
        sp.close()
        stream = _core.Stream()
        with open_channel(collector.address) as channel:
            s = sender.Sender(stream, channel, "undecodable", 0, "s" * 32, Spool(tmp_path / "sp"))
            stream.close()
            s.join(60)
        assert [t.text for t in stepwire.Api(address=collector.address).run("undecodable").texts()] == ["after"]
        assert [p.name for p in (tmp_path / "sp.damaged").iterdir()]  # kept aside, never deleted
    finally:
        collector.stop()


UNREACHABLE_THEN_KILLED = textwrap.dedent("""
    import json, sys, time
    import stepwire, stepwire.collector_link
    stepwire.collector_link.QUICK_RETRY_S = 600.0  # were a record retried before it is spooled, it would wait this long
    address, data, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    run = stepwire.init(project="killed", address=address, dir=data, connect_timeout=0.5, on_unreachable="spool",
                        flush_interval=0.05)
    for i in range(n // 10):
        run.log({f"k{j}": float(i) for j in range(10)}, step=i)
    deadline = time.monotonic() + 60  # bounds the wait; the spool normally has everything within ~0.1 s
    while run.stats()["spooled"] < n and time.monotonic() < deadline:
        time.sleep(0.01)
    print(json.dumps({"id": run.id, **run.stats()}), flush=True)
    time.sleep(600)
""")


def test_a_run_that_found_no_collector_spools_at_once_and_survives_sigkill(tmp_path: Path) -> None:
    port, data, n = free_port(), tmp_path / "client", 50_000
    proc = subprocess.Popen([sys.executable, "-c", UNREACHABLE_THEN_KILLED, f"127.0.0.1:{port}", str(data), str(n)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        stats = json.loads(line)
        assert stats["spooled"] == stats["logged"] == n  # on disk (fsync'd), not waiting in memory
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert spools(data)
    collector = start_collector(tmp_path / "server")
    try:
        out = subprocess.run([sys.executable, "-m", "stepwire", "sync", str(data), "--quiet", "--address",
                              collector.address], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        view = stepwire.Api(address=collector.address).run(stats["id"])
        assert view.project == "killed"
        for j in (0, 9):
            np.testing.assert_array_equal(view.scalars(f"k{j}")["step"], np.arange(n // 10))
    finally:
        collector.stop()
