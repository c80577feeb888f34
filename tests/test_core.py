"""The native stream: rings, drainer, sealing, back-pressure, and the per-point entry points."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from stepwire import _core


def drain(stream: _core.Stream) -> list[_core.SealedBatch]:
    out = []
    while (b := stream.next_batch(0.0)) is not None:
        out.append(b)
    return out


def scalar_points(batches: list[_core.SealedBatch]) -> dict[int, list[tuple[int, float]]]:
    """series id -> [(step, value)] in logged order."""
    points: dict[int, list[tuple[int, float]]] = {}
    for b in batches:
        if not b.point_count:
            continue
        c = b.scalar_columns()
        ids = np.frombuffer(c["series_ids"], np.uint32)
        lengths = np.frombuffer(c["group_lengths"], np.uint32)
        steps = np.frombuffer(c["steps"], np.int64)
        values = np.frombuffer(c["values"], np.float64)
        start = 0
        for sid, n in zip(ids.tolist(), lengths.tolist(), strict=True):
            points.setdefault(sid, []).extend(zip(steps[start:start + n].tolist(), values[start:start + n].tolist(),
                                                  strict=True))
            start += n
    return points


def test_flush_seals_everything_with_definitions_first() -> None:
    stream = _core.Stream(flush_interval=60.0)
    p = _core.Producer(stream)
    p._scalar_ids["a"] = stream.define("a", _core.KIND_SCALAR)
    p._scalar_ids["b"] = stream.define("b", _core.KIND_SCALAR)
    for i in range(1000):
        p.log({"a": i, "b": -i})
    p.log_scalar("a", 0.5, step=5000)
    seq = stream.flush()
    batches = drain(stream)
    assert [b.sequence for b in batches] == list(range(1, seq + 1))
    assert sorted(batches[0].defs) == [(0, "a", _core.KIND_SCALAR), (1, "b", _core.KIND_SCALAR)]
    pts = scalar_points(batches)
    assert pts[0] == [(i, float(i)) for i in range(1000)] + [(5000, 0.5)]
    assert pts[1] == [(i, float(-i)) for i in range(1000)]
    assert p.step == 5001
    stream.close()
    assert stream.exhausted()


def test_batches_grow_from_batch_bytes_to_max_batch_bytes_while_the_sender_is_busy() -> None:
    stream = _core.Stream(batch_bytes=4096, max_batch_bytes=16384, flush_interval=60.0, max_sealed=1000)
    p = _core.Producer(stream)
    p._scalar_ids["x"] = stream.define("x", _core.KIND_SCALAR)
    for i in range(10_000):
        p.log_scalar("x", float(i))
    stream.flush()
    batches = drain(stream)  # nobody took batches meanwhile: after the first, each grew to the maximum
    assert 4096 // 28 <= batches[0].point_count <= 16384 // 28
    assert max(b.point_count for b in batches) == 16384 // 28
    assert sum(b.point_count for b in batches) == 10_000
    assert [b.sequence for b in batches] == list(range(1, len(batches) + 1))
    stream.close()


def test_an_idle_sender_gets_batch_bytes_batches() -> None:
    stream = _core.Stream(batch_bytes=4096, max_batch_bytes=1 << 20, flush_interval=60.0)
    p = _core.Producer(stream)
    p._scalar_ids["x"] = stream.define("x", _core.KIND_SCALAR)
    sizes = []
    for i in range(2000):
        p.log_scalar("x", float(i))
        if (b := stream.next_batch(0.0)) is not None:
            sizes.append(b.point_count)
    stream.close()
    while (b := stream.next_batch(0.0)) is not None:
        sizes.append(b.point_count)
    assert sum(sizes) == 2000
    assert max(sizes) < 1000  # taken promptly, batches stay near batch_bytes instead of growing


def test_block_policy_is_lossless_across_threads() -> None:
    stream = _core.Stream(ring_capacity=1024, batch_bytes=8192, max_sealed=2)
    p = _core.Producer(stream)
    ids = {f"t{t}": stream.define(f"t{t}", _core.KIND_SCALAR) for t in range(4)}
    p._scalar_ids.update(ids)
    received: list[_core.SealedBatch] = []
    done = threading.Event()

    def consume() -> None:
        while not (done.is_set() and stream.exhausted()):
            b = stream.next_batch(0.05)
            if b is not None:
                received.append(b)

    consumer = threading.Thread(target=consume)
    consumer.start()

    def produce(t: int) -> None:
        for i in range(50_000):
            p.log_scalar(f"t{t}", float(i), step=i)

    producers = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
    for th in producers:
        th.start()
    for th in producers:
        th.join()
    stream.close()
    done.set()
    consumer.join()
    stats = stream.stats()
    assert stats["logged"] == 200_000 and stats["dropped"] == 0
    assert stats["blocked"] > 0  # the tiny ring and queue forced producers to wait
    pts = scalar_points(received)
    for t in range(4):
        assert pts[ids[f"t{t}"]] == [(i, float(i)) for i in range(50_000)]


def test_drop_policy_counts_what_it_drops() -> None:
    stream = _core.Stream(ring_capacity=1024, drop_when_full=True, batch_bytes=4096, max_sealed=1)
    p = _core.Producer(stream)
    p._scalar_ids["x"] = stream.define("x", _core.KIND_SCALAR)
    for i in range(100_000):  # nobody takes batches: the queue and the ring fill, then points drop
        p.log_scalar("x", float(i))
    stats = stream.stats()
    assert stats["dropped"] > 0
    stream.close()
    kept = sum(b.point_count for b in drain(stream))
    assert kept + stats["dropped"] == 100_000
    assert stats["logged"] == kept


def test_closed_stream_refuses_points() -> None:
    stream = _core.Stream()
    p = _core.Producer(stream)
    p._scalar_ids["x"] = stream.define("x", _core.KIND_SCALAR)
    stream.close()
    with pytest.raises(RuntimeError, match="finished"):
        p.log_scalar("x", 1.0)
    assert stream.push_histogram(0, 0, np.ones(3, np.float32)) is None


def test_histogram_records_travel_in_batches() -> None:
    stream = _core.Stream()
    sid = stream.define("h", _core.KIND_HISTOGRAM)
    values = np.array([1.0, -1.0, 0.0, np.nan, np.inf], np.float32)
    stats = stream.push_histogram(sid, 7, values, 3)
    assert stats is not None and stats["sumsq"] == 2.0 and stats["count"] == 5
    stream.flush()
    (b,) = drain(stream)
    c = b.histogram_columns()
    assert b.histogram_count == 1
    assert np.frombuffer(c["steps"], np.int64).tolist() == [7]
    assert np.frombuffer(c["count"], np.int64).tolist() == [5]
    assert np.frombuffer(c["nan"], np.int64).tolist() == [1]
    assert np.frombuffer(c["bucket_counts"], np.int64).sum() == 3
    stream.close()


def test_step_argument_checks() -> None:
    stream = _core.Stream()
    p = _core.Producer(stream)
    p._scalar_ids["x"] = stream.define("x", _core.KIND_SCALAR)
    with pytest.raises(ValueError, match="between 0 and"):
        p.log_scalar("x", 1.0, step=-1)
    with pytest.raises(TypeError, match="step must be an int"):
        p.log_scalar("x", 1.0, step=1.5)
    p.log_scalar("x", 1.0, step=np.int64(3))
    assert p._take_step() == 4
    stream.close()


def test_many_queued_histograms_are_spread_over_batches_under_the_size_limit() -> None:
    stream = _core.Stream(batch_bytes=4096, max_batch_bytes=1 << 16, flush_interval=60.0, max_sealed=1000)
    sid = stream.define("h", _core.KIND_HISTOGRAM)
    rng = np.random.default_rng(0)
    for step in range(200):  # each histogram has hundreds of buckets: ~10 KiB in a batch
        values = (rng.standard_normal(5000) * 10.0 ** rng.integers(-9, 9, 5000)).astype(np.float32)
        stream.push_histogram(sid, step, values)
    stream.flush()
    batches = drain(stream)
    assert sum(b.histogram_count for b in batches) == 200
    assert len(batches) > 1
    for b in batches:
        c = b.histogram_columns()
        size = sum(len(v) for v in c.values())
        assert size < (1 << 16) + 80 + 12 * 4000  # at most one histogram past the limit
    stream.close()
