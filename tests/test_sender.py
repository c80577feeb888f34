"""The bounds around the sender: the memory the core holds and how long a blocked producer waits."""

from __future__ import annotations

import threading

import numpy as np

from stepwire import _core

MiB = 1 << 20


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
