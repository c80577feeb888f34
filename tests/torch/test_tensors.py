"""Torch tensors through the public API: CPU zero-copy binning, the device reduction algorithm, watch."""

from __future__ import annotations

import numpy as np
import pytest

import stepwire
import torch
from conftest import CollectorProcess
from reference import nasty_values, reference_histogram
from stepwire.torch import reduce_tensors
from stepwire.torch.device import DeviceWaiter, _log_reduction

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def as_dict(h: stepwire.Histogram) -> dict[int, int]:
    return dict(zip(h.indices.tolist(), h.counts.tolist(), strict=True))


def widened(t: torch.Tensor) -> np.ndarray:
    """The exact values of a tensor as float64 numpy (bfloat16 and float16 widen exactly)."""
    return t.to(torch.float64).numpy()


@pytest.mark.parametrize("dtype", DTYPES)
def test_reduction_algorithm_matches_numpy_reference(dtype: torch.dtype) -> None:
    """The tensor-op reduction that runs on GPUs, run here on CPU tensors, chunk boundaries inside tensors."""
    rng = np.random.default_rng(1)
    tensors = [torch.from_numpy(nasty_values(rng, n, np.float32)).to(dtype) for n in (5000, 17, 12000)]
    r = reduce_tensors(tensors, k=3, chunk_elements=4096)
    for i, t in enumerate(tensors):
        h = r.histogram(i)
        x = widened(t)
        finite = x[np.isfinite(x)]
        assert dict(zip(h["indices"].tolist(), h["counts"].tolist(), strict=True)) == reference_histogram(x)
        assert (h["count"], h["nan"], h["pos_inf"], h["neg_inf"]) == (
            len(x), np.isnan(x).sum(), np.isposinf(x).sum(), np.isneginf(x).sum())
        assert (h["min"], h["max"]) == (finite.min(), finite.max())
    plain = [torch.from_numpy(rng.standard_normal(n)).to(dtype) for n in (5000, 12000)]
    r = reduce_tensors(plain, k=3, chunk_elements=4096)
    for i, t in enumerate(plain):
        x = widened(t)
        assert r.histogram(i)["sum"] == pytest.approx(x.sum(), rel=1e-9, abs=1e-9)
        assert r.histogram(i)["sumsq"] == pytest.approx((x**2).sum(), rel=1e-9)


def test_log_and_log_histogram_accept_cpu_tensors(collector: CollectorProcess) -> None:
    rng = np.random.default_rng(2)
    data = {dt: torch.from_numpy(nasty_values(rng, 10_000, np.float32)).to(dt) for dt in DTYPES}
    with stepwire.init(address=collector.address) as run:
        for dt, t in data.items():
            run.log_histogram(f"h/{str(dt)[6:]}", t, step=1)
        run.log({"loss": torch.tensor(0.25), "w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(3)}, step=2)
        with pytest.raises(TypeError, match="'c'"):
            run.log_histogram("c", torch.ones(3, dtype=torch.complex64))
    view = stepwire.Api(address=collector.address).run(run.id)
    for dt, t in data.items():
        (h,) = view.histograms(f"h/{str(dt)[6:]}")
        assert as_dict(h) == reference_histogram(widened(t)) and h.count == 10_000
    assert view.scalars("loss")["value"].tolist() == [0.25]
    assert view.scalars("n")["value"].tolist() == [3.0]
    (w,) = view.histograms("w")
    assert w.count == 6 and w.max == 5.0 and w.step == 2


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def test_watch_logs_gradients_and_parameters_every_n_steps(collector: CollectorProcess) -> None:
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(64, 8), torch.randn(64, 2)
    grads_at: dict[int, dict[str, np.ndarray]] = {}
    params_at: dict[int, dict[str, np.ndarray]] = {}
    with stepwire.init(address=collector.address) as run:
        handle = run.watch(model, log="all", every=2)
        for it in range(6):
            params_at[run.step] = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            grads_at[run.step] = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
            opt.step()
            run.log({"loss": loss.detach()})  # a CPU 0-d tensor: the step advances here
            assert run.step == it + 1
        handle.remove()
        run.log({"after": 1.0})
        run.log_model_stats(model, step=100, log="parameters")
    view = stepwire.Api(address=collector.address).run(run.id)
    for name in ("0.weight", "0.bias", "2.weight"):
        g = view.histograms(f"gradients/{name}")
        assert [h.step for h in g] == [0, 2, 4]
        for h in g:
            assert as_dict(h) == reference_histogram(grads_at[h.step][name])
        norms = view.scalars(f"gradients/{name}/norm")
        np.testing.assert_allclose(norms["value"], [np.linalg.norm(grads_at[s][name]) for s in (0, 2, 4)],
                                   rtol=1e-5)
        means = view.scalars(f"gradients/{name}/mean")["value"]
        np.testing.assert_allclose(means, [grads_at[s][name].mean() for s in (0, 2, 4)], rtol=1e-4, atol=1e-7)
        p = view.histograms(f"parameters/{name}")
        assert [h.step for h in p] == [0, 2, 4, 100]
        for h in p[:3]:
            assert as_dict(h) == reference_histogram(params_at[h.step][name])
        assert view.scalars(f"gradients/{name}/nonfinite")["value"].tolist() == [0.0, 0.0, 0.0]


def test_device_results_path_through_the_waiter(collector: CollectorProcess) -> None:
    """What a GPU reduction goes through after it is computed: the waiter thread logs it, exactly."""
    rng = np.random.default_rng(3)
    tensors = {f"dev/{i}": torch.from_numpy(nasty_values(rng, 3000, np.float32)) for i in range(3)}
    with stepwire.init(address=collector.address) as run:
        waiter = DeviceWaiter()
        names = list(tensors)
        r = reduce_tensors(list(tensors.values()), run._k, chunk_elements=2500)
        waiter.submit(r, lambda red: _log_reduction(run, red, names, 7, True))
        waiter.close()
    view = stepwire.Api(address=collector.address).run(run.id)
    for name, t in tensors.items():
        (h,) = view.histograms(name)
        assert h.step == 7 and as_dict(h) == reference_histogram(t.numpy())
        assert view.scalars(f"{name}/nonfinite")["value"][0] == (~np.isfinite(t.numpy())).sum()


def test_watch_rejects_bad_arguments(collector: CollectorProcess) -> None:
    with stepwire.init(address=collector.address) as run:
        with pytest.raises(ValueError, match="log must be"):
            run.watch(make_model(), log="weights")
        with pytest.raises(TypeError, match=r"nn\.Module"):
            run.log_model_stats(object())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="every"):
            run.watch(make_model(), every=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_logs_without_synchronising(collector: CollectorProcess) -> None:
    model = make_model().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(64, 8, device="cuda"), torch.randn(64, 2, device="cuda")
    captured: dict[int, dict[str, torch.Tensor]] = {}
    with stepwire.init(address=collector.address) as run:
        run.watch(model, log="gradients")
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(4):
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(model(x), y)
                loss.backward()
                captured[run.step] = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
                opt.step()
                run.log({"loss": loss.detach(), "act": model[0].weight.detach()})
        finally:
            torch.cuda.set_sync_debug_mode(0)
    view = stepwire.Api(address=collector.address).run(run.id)
    assert len(view.scalars("loss")["step"]) == 4
    for step, grads in captured.items():
        for name, g in grads.items():
            (h,) = [h for h in view.histograms(f"gradients/{name}") if h.step == step]
            assert as_dict(h) == reference_histogram(g.cpu().numpy())
