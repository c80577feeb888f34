"""The bounds around the sender: one retry policy, the memory the core holds and how long a blocked producer
waits."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from stepwire import _core
from stepwire.retry import Backoff, retry

MiB = 1 << 20


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
