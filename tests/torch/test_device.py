"""The device path (``stepwire.torch.reduce`` and ``stepwire.torch.device``): what holds on every device.

Most of the logic runs on CPU tensors here (the reduction, the waiter, the protocol of streams and events through
a recording stand-in for a device module); the tests marked ``cuda`` check on a real GPU what only a GPU can:
that no synchronisation happens and that work queued after a call cannot change the values it logs.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from ignite.engine import Engine, Events
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import stepwire
import torch
from conftest import CollectorProcess
from reference import nasty_values, reference_histogram
from stepwire import _core
from stepwire.ignite import OptimizerParamsHandler, StepwireLogger
from stepwire.torch import reduce as reduce_module
from stepwire.torch.device import DeviceWaiter, log_device_values
from stepwire.torch.reduce import Backend, DeviceValues, reduce_tensors, result_bytes, window

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def as_dict(indices: Any, counts: Any) -> dict[int, int]:
    return dict(zip(np.asarray(indices).tolist(), np.asarray(counts).tolist(), strict=True))


@contextlib.contextmanager
def no_sync() -> Iterator[None]:
    """Any synchronisation with a CUDA device inside raises."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


# -- one scheme with the core ----------------------------------------------------------------------------------

NASTY = [0.0, -0.0, 2.0**-149, -(2.0**-149), 2.0**-150, 5e-324, -5e-324, 1e-310, 2.0**-126, -(2.0**-126),
         1.0, -3.5, 65504.0, float(np.finfo(np.float32).max), -float(np.finfo(np.float32).max), 2.0**128,
         -(2.0**128), 1e300, -1e308, float(np.finfo(np.float64).max), math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("k", [0, 3, 10])
@pytest.mark.parametrize("dtype", DTYPES)
def test_device_path_bins_every_value_as_the_core_does(dtype: torch.dtype, k: int) -> None:
    """±0, denormals, float32's max, 2^128, 1e300, -1e308, NaN, ±inf: same buckets and statistics as the core."""
    t = torch.tensor(NASTY, dtype=torch.float64).to(dtype)
    exact = t.to(torch.float64).numpy()  # every dtype widens exactly
    r = reduce_tensors([t, t.flip(0)], k=k, chunk_elements=7)  # chunk boundaries everywhere
    for i in range(2):
        h = r.histogram(i)
        for core in (stepwire.Histogram.from_values(exact, k),
                     *([stepwire.Histogram.from_values(t.numpy(), k)] if dtype != torch.bfloat16 else [])):
            assert as_dict(h["indices"], h["counts"]) == as_dict(core.indices, core.counts)
            assert h["indices"].tolist() == core.indices.tolist()  # the same order too
            assert (h["count"], h["nan"], h["pos_inf"], h["neg_inf"]) == (core.count, core.nan, core.pos_inf,
                                                                          core.neg_inf)
            assert (h["min"], h["max"]) == (core.min, core.max)
            # the sum, up to the order of additions (summation error bound: n * eps * sum of |x|)
            scale = sum(abs(v) for v in exact[np.isfinite(exact)].tolist())  # inf when it overflows
            if math.isfinite(scale):
                assert abs(h["sum"] - core.sum) <= len(exact) * np.finfo(np.float64).eps * scale
    if dtype == torch.float64:  # doubles beyond float32's range keep their own buckets, as the core gives them
        h = r.histogram(0)
        for x in (2.0**128, -(2.0**128), 1e300, -1e308, float(np.finfo(np.float64).max)):
            idx = _core.bucket_index(x, k)
            assert abs(idx) >= _core.SCHEME["finite_exponents"] << k and idx in h["indices"].tolist()


def test_a_float64_tensor_widens_the_window_for_the_whole_call() -> None:
    rng = np.random.default_rng(5)
    small = torch.from_numpy(nasty_values(rng, 3000, np.float32))
    big = torch.tensor([1e300, -1e308, 2.0**128, 1.0], dtype=torch.float64)
    r = reduce_tensors([small, big], k=3)
    assert r.counts.shape[1] == window(3, wide=True) > window(3)
    assert as_dict(r.histogram(0)["indices"], r.histogram(0)["counts"]) == reference_histogram(small.numpy())
    core = stepwire.Histogram.from_values(big.numpy(), 3)
    assert as_dict(r.histogram(1)["indices"], r.histogram(1)["counts"]) == as_dict(core.indices, core.counts)
    assert r.nbytes == result_bytes([small, big], 3)


# -- bounded device memory, nothing kept ------------------------------------------------------------------------

class Allocations(TorchDispatchMode):
    """Records every tensor an op returns that is not a view of another: (numel, its storage's address)."""

    def __init__(self) -> None:
        super().__init__()
        self.created: list[tuple[int, int]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and not t._is_view():
                self.created.append((t.numel(), t.untyped_storage().data_ptr()))
        return out


def tensors_in(value: Any, depth: int = 0) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if depth > 3:
        return []
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in tensors_in(k, depth + 1) + tensors_in(v, depth + 1)]
    if isinstance(value, (list, tuple, set)):
        return [t for v in value for t in tensors_in(v, depth + 1)]
    return []


def test_temporaries_are_bounded_by_chunk_elements_and_nothing_is_kept() -> None:
    """A large layout: every tensor the reduction creates but its two result buffers holds at most
    ``chunk_elements`` elements (segment ids included), and the module keeps no tensor afterwards."""
    rng = np.random.default_rng(6)
    layout = [1_000_003, 1, 7, 300_000, 4096, 5]
    tensors = [torch.from_numpy(nasty_values(rng, n, np.float32)) if n > 1 else torch.tensor([2.5]) for n in layout]
    tensors.append(torch.from_numpy(rng.standard_normal((64, 48)).astype(np.float32)).t())  # non-contiguous
    chunk = 1 << 14
    with Allocations() as seen:
        r = reduce_tensors(tensors, k=3, chunk_elements=chunk)
    known = {t.untyped_storage().data_ptr() for t in (r.counts, r.stats, *tensors)}  # results, inputs (detach)
    largest = max(n for n, ptr in seen.created if ptr not in known)
    assert largest <= chunk  # nothing of the model's size, nothing per element beyond a chunk
    for i, t in enumerate(tensors):
        h = r.histogram(i)
        assert as_dict(h["indices"], h["counts"]) == reference_histogram(t.contiguous().numpy())
        assert h["count"] == t.numel()
    kept = [t for value in vars(reduce_module).values() for t in tensors_in(value)]
    assert kept == []  # no plan, no segment ids, no buffer cached per layout or per element
    assert not hasattr(reduce_module, "_PLANS")


def test_counts_of_many_tensors_are_made_in_groups_that_fit_a_chunk() -> None:
    tensors = [torch.full((3,), float(i)) for i in range(40)]
    w = window(3)
    with Allocations() as seen:
        r = reduce_tensors(tensors, k=3, chunk_elements=5 * w)
    known = {t.untyped_storage().data_ptr() for t in (r.counts, r.stats, *tensors)}
    assert max(n for n, ptr in seen.created if ptr not in known) <= 5 * w
    for i in range(40):
        assert r.histogram(i)["count"] == 3 and r.histogram(i)["max"] == float(i)


# -- the protocol of streams and events, checked on CPU through a recording device module ------------------------

class RecordingDevice:
    """Stands in for ``torch.cuda``/``torch.xpu``: its streams and events append what is asked of them to ``log``."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []
        log = self.log

        class Stream:
            def __init__(self, device: Any = None, name: str = "side") -> None:
                self.name = name

            def wait_stream(self, other: Stream) -> None:
                log.append(("wait_stream", self.name, other.name))

            def wait_event(self, event: Event) -> None:
                log.append(("wait_event", self.name, event.id))

        class Event:
            made = 0

            def __init__(self) -> None:
                Event.made += 1
                self.id = Event.made

            def record(self, stream: Stream) -> None:
                log.append(("record", self.id, stream.name))

            def synchronize(self) -> None:
                log.append(("synchronize", self.id))

        self.Stream, self.Event = Stream, Event
        self.current = Stream(name="current")

    def current_stream(self, device: Any = None) -> Any:
        return self.current

    @contextlib.contextmanager
    def stream(self, s: Any) -> Iterator[None]:
        self.log.append(("enter", s.name))
        yield
        self.log.append(("exit", s.name))


class Reads(TorchDispatchMode):
    """Appends ("read", op) to ``log`` for every op that touches the storage of ``inputs``."""

    def __init__(self, log: list[tuple[Any, ...]], inputs: list[torch.Tensor]) -> None:
        super().__init__()
        self.log, self.ptrs = log, {t.untyped_storage().data_ptr() for t in inputs}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if any(isinstance(a, torch.Tensor) and a.untyped_storage().data_ptr() in self.ptrs
               for a in tree_flatten((args, kwargs))[0]):
            self.log.append(("read", str(func)))
        return func(*args, **(kwargs or {}))


def test_later_work_on_the_tensors_stream_waits_for_the_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The side stream waits for the current one before reading; an event recorded on it after the last read is
    waited for by the current stream (on the device) before anything the caller queues next; results are copied
    to the host after the final event, by ``wait``; the allocator is told the side stream uses the tensors."""
    dev = RecordingDevice()
    monkeypatch.setattr(reduce_module, "backend", lambda device: Backend(dev, pinned=False, float64=True))
    monkeypatch.setattr(reduce_module, "_SIDE_STREAMS", {})
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda t, s: dev.log.append(("record_stream", s.name)))
    rng = np.random.default_rng(7)
    tensors = [torch.from_numpy(nasty_values(rng, n, np.float32)) for n in (5000, 300, 9000)]
    with Reads(dev.log, tensors):
        r = reduce_tensors(tensors, k=3, chunk_elements=4096)
    log = dev.log
    reads = [i for i, e in enumerate(log) if e[0] == "read"]
    assert log[0] == ("wait_stream", "side", "current") and reads and reads[0] > 0
    assert [e for e in log[:reads[0]] if e[0] == "record_stream"] == [("record_stream", "side")] * 3
    enter, leave = log.index(("enter", "side")), log.index(("exit", "side"))
    assert enter < reads[0] and reads[-1] < leave  # every read on the side stream
    waits = [i for i, e in enumerate(log) if e[0] == "wait_event"]
    assert len(waits) == 1 and log[waits[0]][1] == "current" and waits[0] > reads[-1]
    recorded = log[waits[0] - 1]
    assert recorded == ("record", log[waits[0]][2], "side")  # recorded on the side stream after the last read
    assert log[leave - 1] == ("record", r.event.id, "side")  # the final event, after the copies were queued
    assert r.deferred and not any(e[0] == "synchronize" for e in log)
    final = r.event.id
    r.wait()
    assert log[-1] == ("synchronize", final) and not r.deferred
    for i, t in enumerate(tensors):
        assert as_dict(r.histogram(i)["indices"], r.histogram(i)["counts"]) == reference_histogram(t.numpy())


def test_scalars_are_copied_on_their_devices_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    dev = RecordingDevice()
    monkeypatch.setattr(reduce_module, "backend", lambda device: Backend(dev, pinned=False, float64=True))
    v = reduce_module.copy_values([torch.tensor(1.5), torch.tensor([2], dtype=torch.int32)])
    assert dev.log == [("record", v.event.id, "current")]
    v.wait()
    assert v.values.tolist() == [1.5, 2.0]


def test_a_device_without_streams_or_float64_still_logs_the_values_at_the_call(monkeypatch: pytest.MonkeyPatch
                                                                                ) -> None:
    """The fallback for MPS-like devices: reduced on the device's own queue, copied by ``wait`` (blocking, on the
    waiter thread), statistics in float32."""
    monkeypatch.setattr(reduce_module, "backend", lambda device: Backend(None, pinned=False, float64=False))
    rng = np.random.default_rng(8)
    tensors = [torch.from_numpy(nasty_values(rng, n, np.float32)) for n in (5000, 12000)]
    tensors.append(torch.from_numpy(rng.standard_normal(7000).astype(np.float32)))
    r = reduce_tensors(tensors, k=3, chunk_elements=4096)
    assert r.event is None and r.deferred  # copied to the host by wait()
    snapshot = [t.clone() for t in tensors]
    for t in tensors:
        t.mul_(3)  # later changes: the reduction was queued before them on the same queue
    r.wait()
    for i, t in enumerate(snapshot):
        h, x = r.histogram(i), t.numpy().astype(np.float64)
        finite = x[np.isfinite(x)]
        assert as_dict(h["indices"], h["counts"]) == reference_histogram(x)
        assert (h["min"], h["max"]) == (finite.min(), finite.max())
    plain = snapshot[2].numpy().astype(np.float64)  # float32 sums: close, not exact (and float32's max overflows)
    assert r.histogram(2)["sum"] == pytest.approx(plain.sum(), rel=1e-3, abs=1e-2)
    assert r.histogram(2)["sumsq"] == pytest.approx((plain**2).sum(), rel=1e-4)


def test_reduce_tensors_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="nothing"):
        reduce_tensors([])
    with pytest.raises(ValueError, match="k must"):
        reduce_tensors([torch.ones(2)], k=11)
    with pytest.raises(ValueError, match="one device"):
        reduce_tensors([torch.ones(2), torch.empty(2, device="meta")])


# -- the waiter: bounded in bytes, the run's policy, errors counted --------------------------------------------

class Gated(DeviceValues):
    """Results whose ``wait`` blocks until ``gate`` is set."""

    def __init__(self, nbytes: int, gate: threading.Event) -> None:
        super().__init__(torch.zeros(nbytes // 8, dtype=torch.float64))
        self.gate = gate

    def wait(self) -> None:
        assert self.gate.wait(30)


def test_waiter_drops_beyond_its_bytes_under_drop() -> None:
    gate = threading.Event()
    waiter = DeviceWaiter(max_bytes=1000, drop=True)
    done: list[int] = []
    started: list[int] = []

    def start(n: int) -> Gated:
        started.append(n)
        return Gated(n, gate)

    assert waiter.queue(4000, lambda: start(4000), lambda r: done.append(r.nbytes))  # alone: let through
    assert not waiter.queue(8, lambda: start(8), lambda r: done.append(r.nbytes))
    assert waiter.dropped == 1 and started == [4000]  # dropped before any device work was queued
    gate.set()
    waiter.join()
    assert waiter.pending_bytes == 0
    assert waiter.queue(600, lambda: start(600), lambda r: done.append(r.nbytes))
    assert waiter.queue(400, lambda: start(400), lambda r: done.append(r.nbytes))
    waiter.close()
    assert done == [4000, 600, 400] and waiter.dropped == 1 and waiter.waited == 0


def test_waiter_makes_the_caller_wait_under_block() -> None:
    gate = threading.Event()
    waiter = DeviceWaiter(max_bytes=1000, max_items=100)
    done: list[int] = []
    assert waiter.queue(800, lambda: Gated(800, gate), lambda r: done.append(r.nbytes))
    second = threading.Event()

    def caller() -> None:
        waiter.queue(800, lambda: Gated(800, gate), lambda r: done.append(r.nbytes))
        second.set()

    thread = threading.Thread(target=caller)
    thread.start()
    assert not second.wait(0.3)  # still waiting for room: nothing was dropped
    gate.set()
    thread.join(30)
    waiter.close()
    assert second.is_set() and done == [800, 800]
    assert waiter.waited == 1 and waiter.waited_s > 0 and waiter.dropped == 0


def test_waiter_bounds_the_number_waiting_too() -> None:
    gate = threading.Event()
    waiter = DeviceWaiter(max_bytes=1 << 30, drop=True, max_items=3)
    results = [waiter.queue(8, lambda: Gated(8, gate), lambda r: None) for _ in range(5)]
    assert results == [True, True, True, False, False] and waiter.dropped == 2
    gate.set()
    waiter.close()


def test_waiter_counts_errors_keeps_the_first_and_goes_on() -> None:
    waiter = DeviceWaiter()
    logged: list[float] = []

    def fail(r: DeviceValues) -> None:
        raise ValueError(f"broken {len(logged)}")

    waiter.submit(reduce_module.copy_values([torch.tensor(1.0)]), fail)
    waiter.submit(reduce_module.copy_values([torch.tensor(2.0)]), fail)
    waiter.submit(reduce_module.copy_values([torch.tensor(3.0)]), lambda r: logged.extend(r.values.tolist()))
    with pytest.raises(RuntimeError, match="boom"):
        waiter.queue(8, lambda: (_ for _ in ()).throw(RuntimeError("boom")), lambda r: None)
    waiter.join()
    assert waiter.pending_bytes == 0  # a failed start gave its bytes back
    waiter.close()
    assert waiter.errors == 2 and waiter.first_error == "ValueError: broken 0" and logged == [3.0]


def test_run_stats_count_what_the_waiter_dropped_waited_and_failed(collector: CollectorProcess) -> None:
    with stepwire.init(address=collector.address, policy="drop") as run:
        assert {k: v for k, v in run.stats().items() if k.startswith("device_")} == {
            "device_dropped": 0, "device_waited": 0, "device_waited_s": 0.0, "device_errors": 0, "device_error": ""}
        gate = threading.Event()
        run._waiter = DeviceWaiter(max_bytes=64, drop=True)
        run._waiter.queue(64, lambda: Gated(64, gate), lambda r: None)
        log_device_values(run, {"s": torch.tensor(1.0)}, {"h": torch.ones(3)}, 1)  # no room: both dropped
        gate.set()
        run.flush()
        log_device_values(run, {"s": torch.tensor(2.0)}, {}, 2)
        run._waiter.submit(reduce_module.copy_values([torch.tensor(0.0)]),
                           lambda r: (_ for _ in ()).throw(KeyError("lost")))
        run.flush()
        stats = run.stats()
        assert (stats["device_dropped"], stats["device_errors"], stats["device_error"]) == (2, 1, "KeyError: 'lost'")
    view = stepwire.Api(address=collector.address).run(run.id)
    assert view.scalars("s")["value"].tolist() == [2.0]
    assert view.scalars("s")["step"].tolist() == [2]


# -- the device path's inputs --------------------------------------------------------------------------------------

def test_device_values_are_grouped_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scalars on different devices are never stacked together (``torch.stack`` refuses that on GPUs)."""
    from stepwire.torch import device as device_module

    groups: list[list[str]] = []

    def fake_copy(values: list[torch.Tensor]) -> DeviceValues:
        groups.append(sorted({str(v.device) for v in values}))
        return DeviceValues(torch.zeros(len(values), dtype=torch.float64))

    monkeypatch.setattr(device_module, "copy_values", fake_copy)

    class FakeRun:
        _k = 3

        def __init__(self) -> None:
            self.waiter = DeviceWaiter()

        def _device_waiter(self) -> DeviceWaiter:
            return self.waiter

        def _log_stats(self, values: dict[str, float], step: int) -> None:
            pass

    run = FakeRun()
    log_device_values(run, {"a": torch.tensor(1.0), "b": torch.empty((), device="meta"),  # type: ignore[arg-type]
                            "c": torch.tensor(2.0)}, {}, 0)
    run.waiter.close()
    assert sorted(groups) == [["cpu"], ["meta"]]


def test_zero_d_tensors_are_histograms_and_scalars_take_the_device_path(collector: CollectorProcess) -> None:
    with stepwire.init(address=collector.address) as run:
        log_device_values(run, {"s/a": torch.tensor(0.5), "s/b": torch.tensor([3], dtype=torch.int64)},
                          {"h/zero_d": torch.tensor(-2.0), "h/w": torch.arange(4.0)}, 5)
        run.log_histogram("h/cpu_zero_d", torch.tensor(7.0), step=6)
    view = stepwire.Api(address=collector.address).run(run.id)
    assert view.scalars("s/a")["value"].tolist() == [0.5] and view.scalars("s/b")["value"].tolist() == [3.0]
    (z,) = view.histograms("h/zero_d")
    assert (z.step, z.count, z.min, z.max) == (5, 1, -2.0, -2.0)
    (w,) = view.histograms("h/w")
    assert w.count == 4 and as_dict(w.indices, w.counts) == reference_histogram(np.arange(4.0))
    (c,) = view.histograms("h/cpu_zero_d")
    assert (c.count, c.max) == (1, 7.0)


def test_errors_describe_a_tensor_without_formatting_its_values(collector: CollectorProcess) -> None:
    """Formatting a device tensor reads it back (a synchronisation): error messages give shape, dtype, device."""

    class NoRepr(torch.Tensor):
        def __repr__(self, *args: Any, **kwargs: Any) -> str:
            raise AssertionError("the tensor was formatted")

    with stepwire.init(address=collector.address) as run:
        with pytest.raises(TypeError, match=r"'x'.*shape \(3,\) \(torch.float32 on cpu\)"):
            run.log_scalar("x", torch.ones(3).as_subclass(NoRepr))
        run.log_scalar("one", torch.tensor([4.0]), step=1)
    assert stepwire.Api(address=collector.address).run(run.id).scalars("one")["value"].tolist() == [4.0]


def test_ignite_logs_a_tensor_learning_rate(collector: CollectorProcess) -> None:
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.param_groups[0]["lr"] = torch.tensor(0.25)
    engine = Engine(lambda e, b: None)
    engine.state.iteration = 3
    logger = StepwireLogger(address=collector.address)
    OptimizerParamsHandler(opt)(engine, logger, Events.ITERATION_COMPLETED)
    logger.close()
    values = stepwire.Api(address=collector.address).run(logger.run.id).scalars("lr/0")
    assert values["value"].tolist() == [0.25] and values["step"].tolist() == [3]


# -- on a GPU ------------------------------------------------------------------------------------------------------

@cuda
def test_cuda_values_logged_are_those_at_the_hook_despite_later_in_place_changes(collector: CollectorProcess) -> None:
    """Gradients changed in place right after the hook (clipped to a tiny norm, then scaled) while the side stream
    may still be reading them: what is logged equals copies taken at the hook, and nothing synchronises."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2048, 4096), torch.nn.Linear(4096, 2048)).cuda()  # 16.8 M params
    x = torch.randn(256, 2048, device="cuda")
    captured: dict[int, dict[str, torch.Tensor]] = {}
    with stepwire.init(address=collector.address) as run:
        handle = run.watch(model, log="gradients")
        with no_sync():
            for it in range(3):
                model.zero_grad()
                model(x).square().mean().backward()  # the hook queues the reduction of every gradient
                captured[run.step] = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e-6)
                for p in model.parameters():
                    p.grad.mul_(3.0)
                run.log({"it": it})
        handle.remove()
    view = stepwire.Api(address=collector.address).run(run.id)
    for step, grads in captured.items():
        for name, g in grads.items():
            (h,) = [h for h in view.histograms(f"gradients/{name}") if h.step == step]
            core = stepwire.Histogram.from_values(g.cpu().numpy())
            assert as_dict(h.indices, h.counts) == as_dict(core.indices, core.counts) and h.count == g.numel()
            norm = view.scalars(f"gradients/{name}/norm")
            assert norm["value"][norm["step"].tolist().index(step)] == pytest.approx(g.double().norm().item())


@cuda
def test_cuda_device_path_bins_float64_as_the_core_does() -> None:
    t = torch.tensor(NASTY, dtype=torch.float64, device="cuda")
    with no_sync():
        r = reduce_tensors([t, t.float(), t.half(), t.bfloat16()], k=3)
    r.wait()
    for i, u in enumerate([t, t.float(), t.half(), t.bfloat16()]):
        core = stepwire.Histogram.from_values(u.double().cpu().numpy(), 3)
        h = r.histogram(i)
        assert h["indices"].tolist() == core.indices.tolist() and h["counts"].tolist() == core.counts.tolist()
        assert (h["min"], h["max"], h["nan"], h["pos_inf"], h["neg_inf"]) == (core.min, core.max, core.nan,
                                                                             core.pos_inf, core.neg_inf)


@cuda
def test_cuda_scalars_and_zero_d_histograms_without_synchronising(collector: CollectorProcess) -> None:
    with stepwire.init(address=collector.address) as run:
        with no_sync():  # torch.full, not torch.tensor(..., device="cuda"): its copy from the host synchronises
            run.log_scalar("lr", torch.full((), 0.5, device="cuda"), step=1)
            run.log_scalar("one", torch.full((1,), 1.5, device="cuda"), step=1)
            run.log_histogram("h", torch.full((), 2.0, device="cuda"), step=1)
            run.log({"loss": torch.full((), 0.25, device="cuda"), "w": torch.ones(5, device="cuda")}, step=2)
            with pytest.raises(TypeError, match=r"shape \(3,\)"):  # described, not formatted: no read back
                run.log_scalar("bad", torch.ones(3, device="cuda"))
    view = stepwire.Api(address=collector.address).run(run.id)
    assert view.scalars("lr")["value"].tolist() == [0.5] and view.scalars("one")["value"].tolist() == [1.5]
    assert view.scalars("loss")["value"].tolist() == [0.25]
    (h,) = view.histograms("h")
    assert (h.count, h.max) == (1, 2.0)
    (w,) = view.histograms("w")
    assert w.count == 5


@cuda
def test_cuda_ignite_learning_rate_tensor_without_synchronising(collector: CollectorProcess) -> None:
    model = torch.nn.Linear(2, 1).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.param_groups[0]["lr"] = torch.tensor(0.125, device="cuda")
    engine = Engine(lambda e, b: None)
    engine.state.iteration = 2
    logger = StepwireLogger(address=collector.address)
    with no_sync():
        OptimizerParamsHandler(opt)(engine, logger, Events.ITERATION_COMPLETED)
    logger.close()
    assert stepwire.Api(address=collector.address).run(logger.run.id).scalars("lr/0")["value"].tolist() == [0.125]


@cuda
@two_gpus
def test_cuda_values_on_another_gpu_wait_for_that_gpus_stream(collector: CollectorProcess) -> None:
    """Scalars on two GPUs in one call (no stack across devices); the value on cuda:1 is written after a long
    kernel there while cuda:0 is current: the event must be on cuda:1's stream, or the host reads it too early."""
    with stepwire.init(address=collector.address) as run:
        torch.cuda.set_device(0)
        with no_sync():
            with torch.cuda.device(1):
                torch.cuda._sleep(2_000_000_000)  # about a second of work queued on cuda:1
            late = torch.full((), 7.0, device="cuda:1")
            run.log({"a": torch.full((), 1.0, device="cuda:0"), "b": late, "hb": torch.ones(3, device="cuda:1"),
                     "ha": torch.ones(2, device="cuda:0")}, step=1)
    view = stepwire.Api(address=collector.address).run(run.id)
    assert view.scalars("a")["value"].tolist() == [1.0] and view.scalars("b")["value"].tolist() == [7.0]
    assert view.histograms("hb")[0].count == 3 and view.histograms("ha")[0].count == 2
