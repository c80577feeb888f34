"""Histogram binning in the native core against an independent numpy reference."""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import os
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest

from reference import bucket_indices, nasty_values, reference_histogram
from stepwire import Histogram, _core
from stepwire.histogram import bucket_edges


def as_dict(h: Histogram) -> dict[int, int]:
    return dict(zip(h.indices.tolist(), h.counts.tolist(), strict=True))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("k", [0, 3, 7])
def test_counts_match_reference(dtype: type, k: int) -> None:
    rng = np.random.default_rng(k)
    x = nasty_values(rng, 50_000, dtype)
    h = Histogram.from_values(x, k=k)
    assert as_dict(h) == reference_histogram(x, k)
    finite = x[np.isfinite(x)].astype(np.float64)
    assert h.count == len(x)
    assert h.nan == int(np.isnan(x).sum())
    assert h.pos_inf == int(np.isposinf(x).sum())
    assert h.neg_inf == int(np.isneginf(x).sum())
    assert int(h.counts.sum()) == len(finite)
    assert h.min == finite.min() and h.max == finite.max()
    moderate = finite[np.abs(finite) < 1e30]  # +-max of the dtype make the sum order-dependent (overflow)
    assert Histogram.from_values(moderate.astype(dtype)).sum == pytest.approx(moderate.sum(), rel=1e-5, abs=1e-3)
    assert np.all(np.diff(h.indices) > 0)


def test_bfloat16_bits() -> None:
    rng = np.random.default_rng(1)
    x = nasty_values(rng, 10_000, np.float32)
    bf16 = (x.view(np.uint32) >> 16).astype(np.uint16)  # truncation is exactly bfloat16's bit pattern
    widened = (bf16.astype(np.uint32) << 16).view(np.float32)
    d = _core.bin_values(bf16, 3, bfloat16=True)
    assert dict(zip(d["indices"].tolist(), d["counts"].tolist(), strict=True)) == reference_histogram(widened)
    assert d["nan"] == int(np.isnan(widened).sum())


def test_float64_beyond_float32_range() -> None:
    x = np.array([1e300, -1e300, 1e-300, 3.5e38, 3.4e38], dtype=np.float64)
    h = Histogram.from_values(x)
    assert as_dict(h) == reference_histogram(x)
    lo, hi = bucket_edges(h.indices, h.k)
    for v in x:
        i = int(bucket_indices(np.array([v]))[0])
        j = h.indices.tolist().index(i)
        assert abs(lo[j]) <= abs(v) <= abs(hi[j]) or (lo[j] <= v < hi[j]) or (lo[j] < v <= hi[j])


def test_edges_bracket_values() -> None:
    rng = np.random.default_rng(2)
    x = nasty_values(rng, 20_000, np.float32)
    x = x[np.isfinite(x)]
    idx = bucket_indices(x)
    lo, hi = bucket_edges(idx, 3)
    v = x.astype(np.float64)
    assert np.all(lo <= v) and np.all(v <= hi)
    pos = idx > 0
    assert np.all(v[pos] < hi[pos])
    neg = idx <= 0
    assert np.all(lo[neg] < v[neg])


def test_downscale_equals_binning_at_lower_k() -> None:
    x = nasty_values(np.random.default_rng(3), 30_000, np.float32)
    fine = Histogram.from_values(x, k=5)
    for k in (4, 3, 0):
        assert as_dict(fine.downscale(k)) == as_dict(Histogram.from_values(x, k=k))
    with pytest.raises(ValueError):
        fine.downscale(6)


def test_merge_is_exact_and_to_bins_keeps_counts() -> None:
    rng = np.random.default_rng(4)
    parts = [nasty_values(rng, 5_000, np.float32) for _ in range(4)]
    merged = Histogram.merge([Histogram.from_values(p) for p in parts])
    whole = Histogram.from_values(np.concatenate(parts))
    assert as_dict(merged) == as_dict(whole)
    assert (merged.count, merged.nan, merged.pos_inf, merged.neg_inf) == (
        whole.count, whole.nan, whole.pos_inf, whole.neg_inf)
    assert (merged.min, merged.max) == (whole.min, whole.max)
    edges, counts = whole.to_bins(50)
    assert len(edges) == 51 and len(counts) == 50
    assert counts.sum() == whole.counts.sum()


def test_rejects_other_dtypes_and_layouts() -> None:
    with pytest.raises(TypeError, match="float16, bfloat16, float32 or float64"):
        _core.bin_values(np.arange(10, dtype=np.int32))
    with pytest.raises(ValueError, match="contiguous"):
        _core.bin_values(np.zeros((10, 10), np.float32)[:, ::2])
    with pytest.raises(ValueError, match="k must be"):
        _core.bin_values(np.zeros(3, np.float32), 11)


def test_all_nan_histogram() -> None:
    h = Histogram.from_values(np.full(7, np.nan, np.float32))
    assert h.count == 7 and h.nan == 7 and len(h.indices) == 0
    assert np.isnan(h.min) and np.isnan(h.max)
    _edges, counts = h.to_bins(4)
    assert counts.sum() == 0


def scheme_nasty_float64() -> np.ndarray:
    """Finite float64 values at every edge of the scheme: +-0, float32 and float64 denormals, the float32
    normal/denormal boundary, float32 max, 2^128 and beyond up to float64 max, and values just around each."""
    f32, f64 = np.finfo(np.float32), np.finfo(np.float64)
    edges = [0.0, f64.smallest_subnormal, 1e-300, float(f32.smallest_subnormal), float(f32.smallest_subnormal) * 1.5,
             float(f32.smallest_normal), float(f32.smallest_normal) * (1 - 2**-30), 1.0, 1.0 + 2**-30, 1.125,
             float(f32.max), float(np.nextafter(f32.max, np.inf, dtype=np.float64)), 2.0**128, 2.0**128 * 1.2,
             1e300, float(f64.max)]
    around = [np.nextafter(v, np.inf) for v in edges[:-1]] + [np.nextafter(v, -np.inf) for v in edges[1:]]
    v = np.array(edges + around, dtype=np.float64)
    rng = np.random.default_rng(12)
    wide = np.ldexp(rng.uniform(0.5, 1.0, 4_000), rng.integers(-1074, 1024, 4_000))  # every float64 exponent
    v = np.concatenate([v, wide])
    return np.concatenate([v, -v])


def test_scheme_constants() -> None:
    s = _core.SCHEME
    assert s["mantissa_bits"] == 23 and s["float64_mantissa_bits"] == 52 and s["exponent_bias"] == 127
    assert s["exponent_rebase"] == 1023 - 127 and s["first_normal_exponent"] == s["exponent_rebase"] + 1
    assert s["finite_exponents"] == 255 and s["beyond_float32_exponent"] == s["exponent_rebase"] + 255
    assert 2.0 ** -s["denormal_scale_log2"] == float(np.finfo(np.float32).smallest_subnormal)
    assert 2.0 ** s["smallest_normal_log2"] == float(np.finfo(np.float32).smallest_normal)
    assert (s["default_k"], s["max_k"]) == (_core.DEFAULT_K, _core.MAX_K)


@pytest.mark.parametrize("k", [0, 3, 10])
def test_bucket_indices_agree_with_bucket_index_reference_and_edges(k: int) -> None:
    v = scheme_nasty_float64()
    idx = _core.bucket_indices(v, k)
    assert idx.dtype == np.int32 and idx.shape == v.shape
    assert idx.tolist() == [_core.bucket_index(float(x), k) for x in v]
    np.testing.assert_array_equal(idx, bucket_indices(v, k))
    with np.errstate(over="ignore"):  # the bucket of float64's largest values ends at 2^1024: inf
        lo, hi = bucket_edges(idx, k)
    assert np.all(lo <= v) and np.all(v <= hi)
    pos, neg = idx > 0, idx < 0
    assert np.all(v[pos] < hi[pos]) and np.all(lo[neg] < v[neg])
    zero = idx == 0
    assert np.all((lo[zero] < v[zero]) & (v[zero] < hi[zero]))
    # the same values through bin_values, as float64 and (where float32 holds them) as float32
    assert as_dict(Histogram.from_values(v, k=k)) == dict(
        zip(*np.unique(idx, return_counts=True), strict=True))
    small = v[np.abs(v) <= np.finfo(np.float32).max]
    assert as_dict(Histogram.from_values(small.astype(np.float32), k=k)) == reference_histogram(
        small.astype(np.float32), k)


def test_bucket_indices_shapes_and_rejections() -> None:
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    np.testing.assert_array_equal(_core.bucket_indices(x), bucket_indices(x))
    np.testing.assert_array_equal(_core.bucket_indices(x.astype(np.float32)), bucket_indices(x))
    assert _core.bucket_indices(np.zeros(0)).shape == (0,)
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="finite"):
            _core.bucket_indices(np.array([1.0, bad]))
    with pytest.raises(ValueError, match="k must be"):
        _core.bucket_indices(x, 11)


# --- bin_many on the persistent pool: concurrency, fork, errors, thread counts, reused accumulators ---

BIG = 700_000  # above bin_many's 2 x 2^18 values: calls this size use the pool


def reference_dict(x: np.ndarray, k: int = 3) -> dict[str, object]:
    """What bin_values must return for ``x`` (buckets, count, NaN/Inf counts, min, max), from the numpy reference."""
    v = np.asarray(x).astype(np.float64)
    finite = v[np.isfinite(v)]
    idx, counts = np.unique(bucket_indices(finite, k), return_counts=True)
    return {"indices": idx.tolist(), "counts": counts.tolist(), "count": len(v), "nan": int(np.isnan(v).sum()),
            "pos_inf": int(np.isposinf(v).sum()), "neg_inf": int(np.isneginf(v).sum()),
            "min": float(finite.min()) if len(finite) else None, "max": float(finite.max()) if len(finite) else None}


def exact_part(d: dict[str, Any]) -> dict[str, object]:
    """The fields of a bin_values result that any thread count must reproduce exactly (sum aside)."""
    lo, hi = float(d["min"]), float(d["max"])
    return {"indices": np.asarray(d["indices"]).tolist(), "counts": np.asarray(d["counts"]).tolist(),
            "count": d["count"], "nan": d["nan"], "pos_inf": d["pos_inf"], "neg_inf": d["neg_inf"],
            "min": None if np.isnan(lo) else lo, "max": None if np.isnan(hi) else hi}


def pool_arrays(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [nasty_values(rng, BIG, np.float32), nasty_values(rng, 16, np.float32), nasty_values(rng, 3_000, np.float64),
            nasty_values(rng, 300_000, np.float16), np.zeros(0, np.float32), nasty_values(rng, BIG, np.float64)]


def test_many_concurrent_callers_are_exact() -> None:
    datasets = [pool_arrays(seed) for seed in range(4)]
    expected = [[reference_dict(x) for x in arrays] for arrays in datasets]
    errors: list[BaseException] = []

    def caller(i: int) -> None:
        try:
            for r in range(4):
                j = (i + r) % len(datasets)
                got = _core.bin_many(datasets[j], [False] * len(datasets[j]), 3, 0)
                assert [exact_part(d) for d in got] == expected[j]
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors


def test_results_identical_with_one_and_many_threads() -> None:
    arrays = pool_arrays(7)
    bf16 = (nasty_values(np.random.default_rng(8), BIG, np.float32).view(np.uint32) >> 16).astype(np.uint16)
    values, flags = [*arrays, bf16], [False] * len(arrays) + [True]
    one = _core.bin_many(values, flags, 3, 1)
    for threads in (2, 4, 16, 0):
        many = _core.bin_many(values, flags, 3, threads)
        for a, b in zip(one, many, strict=True):
            assert exact_part(a) == exact_part(b)
            assert a["sum"] == b["sum"] or (np.isnan(a["sum"]) and np.isnan(b["sum"]))  # same chunks, same order
            assert a["sumsq"] == b["sumsq"] or (np.isnan(a["sumsq"]) and np.isnan(b["sumsq"]))
    widened = (bf16.astype(np.uint32) << 16).view(np.float32)
    for x, d in zip([*arrays, widened], one, strict=True):
        assert exact_part(d) == reference_dict(x)
    if (os.cpu_count() or 1) > 1:
        assert _core.pool_workers() >= 1


def fork_child_bins(queue: multiprocessing.queues.Queue[object]) -> None:
    x = pool_arrays(3)
    got = _core.bin_many(x, [False] * len(x), 3, 0)
    runs, threads = _core._pool_selftest(200, 2, sleep_us=2_000)  # long enough for a live worker to join
    queue.put(([exact_part(d) for d in got] == [reference_dict(v) for v in x] and runs.tolist() == [1] * 200,
               _core.pool_workers(), threads))


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # Python >= 3.12: fork with threads running
def test_bin_many_in_a_forked_child_after_the_pool_started() -> None:
    x = pool_arrays(2)
    _core.bin_many(x, [False] * len(x), 3, 0)  # the pool is running in this process now
    workers = _core.pool_workers()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=fork_child_bins, args=(queue,))
    proc.start()
    exact, child_workers, child_threads = queue.get(timeout=120)
    proc.join(timeout=60)
    assert proc.exitcode == 0
    assert exact
    assert child_workers == workers  # the child started a pool of its own, as large as ours
    if workers > 0:
        assert child_threads == 2  # and its worker ran tasks: the parent's (absent there) would not have


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_fork_while_another_thread_is_inside_the_pool() -> None:
    x = pool_arrays(5)
    expected = [reference_dict(v) for v in x]
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            _core.bin_many(x, [False] * len(x), 3, 0)

    background = threading.Thread(target=busy)
    background.start()
    try:
        for _ in range(5):
            pid = os.fork()
            if pid == 0:  # the child: bin on a fresh pool, then leave without running pytest's teardown
                code = 1
                try:
                    got = _core.bin_many(x, [False] * len(x), 3, 0)
                    code = 0 if [exact_part(d) for d in got] == expected else 2
                finally:
                    os._exit(code)
            deadline = time.monotonic() + 120
            while (waited := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            if waited[0] == 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the forked child hung in bin_many")
            assert os.waitstatus_to_exitcode(waited[1]) == 0
    finally:
        stop.set()
        background.join()


def test_a_failing_task_raises_on_the_caller_and_the_pool_goes_on() -> None:
    for threads in (1, 2, 8):
        with pytest.raises(RuntimeError, match="task 37 failed"):
            _core._pool_selftest(200, threads, fail_at=37, sleep_us=50)
        runs, _ = _core._pool_selftest(200, threads, sleep_us=10)
        assert runs.tolist() == [1] * 200  # every task exactly once, after a failed call
    runs, _ = _core._pool_selftest(0, 4)
    assert len(runs) == 0
    big = np.ones(BIG, np.float32)
    with pytest.raises(TypeError, match="float16, bfloat16, float32 or float64"):
        _core.bin_many([big, np.arange(10, dtype=np.int32)], [False, False], 3, 0)
    with pytest.raises(ValueError, match="k must be"):
        _core.bin_many([big, big], [False, False], 11, 0)
    assert _core.bin_many([big, big], [False, False], 3, 0)[1]["counts"].tolist() == [BIG]


def test_failing_tasks_from_concurrent_callers() -> None:
    errors: list[str] = []

    def caller() -> None:
        for _ in range(20):
            try:
                _core._pool_selftest(64, 4, fail_at=5, sleep_us=20)
            except RuntimeError as e:
                errors.append(str(e))

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == ["task 5 failed"] * 80


def test_reused_accumulators_start_clean() -> None:
    """Each thread reuses its accumulators: what one histogram touched must not leak into the next."""
    rng = np.random.default_rng(9)
    f32 = np.finfo(np.float32)
    sequence = [
        nasty_values(rng, 50_000, np.float32),                       # every slot, NaN/Inf slots included
        np.array([1.5, -2.5, 3.0], np.float32),                      # a few slots in the middle
        np.array([np.nan, np.inf, -np.inf, np.nan], np.float32),     # only the NaN/Inf slots
        np.array([f32.smallest_subnormal, -0.0, 0.0], np.float32),   # bucket 0 only
        np.array([1e300, -1e-300, 2.0, np.nan], np.float64),         # beyond float32's range
        np.array([4.0], np.float64),
        np.array([f32.max, -f32.max], np.float32),                   # the top finite slots
        np.zeros(0, np.float32),
        np.array([0.75], np.float32),
    ]
    for k in (3, 0, 8, 3, 10, 3):
        for x in sequence:
            assert exact_part(_core.bin_values(x, k)) == reference_dict(x, k), (k, x[:4])
    got = _core.bin_many(sequence, [False] * len(sequence), 3, 1)
    assert [exact_part(d) for d in got] == [reference_dict(x) for x in sequence]
