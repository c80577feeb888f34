"""``watch`` on CPU bins in the background once an optimizer step shows it safe, and logs the values of the step.

Every test trains a real model with a real optimizer against a real collector, takes copies of the tensors at
the moment the hooks see them, and compares what the collector stored with histograms of those copies.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import stepwire
import torch
from conftest import CollectorProcess
from reference import reference_histogram
from stepwire.binning import Binner, Job, private_copy

NAMES = ("0.weight", "0.bias", "2.weight", "2.bias")


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(32, 300), torch.nn.ReLU(), torch.nn.Linear(300, 4))


def as_dict(h: stepwire.Histogram) -> dict[int, int]:
    return dict(zip(h.indices.tolist(), h.counts.tolist(), strict=True))


def train(run: stepwire.Run, steps: int, after_backward: Callable[[torch.nn.Module, int], None] | None = None,
          micro_batches: int = 1, set_to_none: bool = True, log: str = "all"
          ) -> tuple[dict[int, dict[str, np.ndarray]], dict[int, dict[str, np.ndarray]]]:
    """Train with watch(log="all"); return copies of gradients (as the last backward left them, before
    ``after_backward``) and parameters (before the forward pass) per step."""
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(64, 32), torch.randn(64, 4)
    grads: dict[int, dict[str, np.ndarray]] = {}
    params: dict[int, dict[str, np.ndarray]] = {}
    handle = run.watch(model, log=log)
    for it in range(steps):
        opt.zero_grad(set_to_none=set_to_none)
        for _ in range(micro_batches):
            params[run.step] = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
            torch.nn.functional.mse_loss(model(x), y).backward()
            grads[run.step] = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
            run.log({"micro": 1.0})
        if after_backward is not None:
            after_backward(model, it)
        opt.step()
    handle.remove()
    return grads, params


def assert_logged(view: stepwire.RunView, kind: str, copies: dict[int, dict[str, np.ndarray]],
                  missing: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    for name in NAMES:
        hists = view.histograms(f"{kind}/{name}")
        assert [h.step for h in hists] == sorted(set(copies) - missing), name
        for h in hists:
            assert as_dict(h) == reference_histogram(copies[h.step][name]), (name, h.step)
        norms = view.scalars(f"{kind}/{name}/norm")
        np.testing.assert_allclose(norms["value"], [np.linalg.norm(copies[s][name]) for s in norms["step"]],
                                   rtol=1e-5)


def test_gradients_and_parameters_go_to_the_background_and_stay_exact(collector: CollectorProcess) -> None:
    with stepwire.init(address=collector.address, quiet=True) as run:
        grads, params = train(run, steps=8)
    stats = run.stats()  # after finish: every job is queued
    view = stepwire.Api(address=collector.address).run(run.id)
    assert_logged(view, "gradients", grads)
    assert_logged(view, "parameters", params)
    # the first step is binned on the training thread (the probe), every later one in the background
    assert stats["binning_background"] == 7 * 2 * len(NAMES)
    assert stats["binning_changed"] == stats["binning_errors"] == stats["binning_held_bytes"] == 0


def test_gradients_changed_in_place_after_the_hook_are_logged_as_they_were(collector: CollectorProcess) -> None:
    """clip_grad_norm_ and a multiplication change every gradient after backward: the probe step sees it and
    gradients stay on the training thread, where the values logged are those before the change."""

    def clip(model: torch.nn.Module, it: int) -> None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e-3)
        for p in model.parameters():
            p.grad.mul_(3.0)

    with stepwire.init(address=collector.address, quiet=True) as run:
        grads, params = train(run, steps=5, after_backward=clip)
    stats = run.stats()  # after finish: every job is queued
    view = stepwire.Api(address=collector.address).run(run.id)
    assert_logged(view, "gradients", grads)
    assert_logged(view, "parameters", params)
    assert stats["binning_changed"] == 0
    assert stats["binning_background"] == 4 * len(NAMES)  # the parameters only


def test_a_change_the_probe_did_not_see_drops_that_step_counted(collector: CollectorProcess,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """A loop that changes gradients in place only now and then: the step it happens is dropped and counted
    (its binned values could be mixed), never logged wrong, and watch returns to the training thread."""

    def sometimes(model: torch.nn.Module, it: int) -> None:
        if it == 4:
            for p in model.parameters():
                p.grad.mul_(0.5)

    with stepwire.init(address=collector.address, quiet=True) as run:
        grads, _ = train(run, steps=8, after_backward=sometimes, log="gradients")
    stats = run.stats()  # after finish: every job is queued
    view = stepwire.Api(address=collector.address).run(run.id)
    assert_logged(view, "gradients", grads, missing={4})
    assert stats["binning_changed"] == len(NAMES)
    assert stats["binning_background"] == 3 * len(NAMES)  # steps 1-3; step 4 dropped, 5-7 on the thread
    assert "changed in place" in caplog.text


def test_accumulated_and_zeroed_in_place_gradients(collector: CollectorProcess) -> None:
    """Gradient accumulation (backward adds into .grad in place) and zero_grad(set_to_none=False) (zeroes it in
    place after the step): the fences before the next forward pass and after the step wait for the binning."""
    with stepwire.init(address=collector.address, quiet=True) as run:
        grads, params = train(run, steps=6, micro_batches=3, set_to_none=False)
    stats = run.stats()  # after finish: every job is queued
    view = stepwire.Api(address=collector.address).run(run.id)
    assert_logged(view, "gradients", grads)
    assert_logged(view, "parameters", params)
    assert stats["binning_changed"] == 0 and stats["binning_background"] > 0


def test_hooks_of_a_finished_run_log_nothing_and_say_so(collector: CollectorProcess,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with stepwire.init(address=collector.address, quiet=True) as run:
        run.watch(model, log="all")
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(8, 32)).sum().backward()
            opt.step()
            run.log({"x": 1.0})
    for _ in range(2):  # training goes on after finish(): no error inside backward or forward
        opt.zero_grad()
        model(torch.randn(8, 32)).sum().backward()
        opt.step()
    assert "is finished; its hooks log nothing" in caplog.text
    assert len(stepwire.Api(address=collector.address).run(run.id).histograms("gradients/0.weight")) == 3


def test_background_false_keeps_binning_on_the_training_thread(collector: CollectorProcess) -> None:
    with stepwire.init(address=collector.address, quiet=True) as run:
        model = make_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        run.watch(model, background=False)
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(8, 32)).sum().backward()
            opt.step()
            run.log({"x": 1.0})
        assert run.stats()["binning_background"] == 0
    assert len(stepwire.Api(address=collector.address).run(run.id).histograms("gradients/0.weight")) == 3


def test_log_histogram_of_a_large_array_returns_before_binning_and_logs_the_values_of_the_call(
        collector: CollectorProcess) -> None:
    rng = np.random.default_rng(5)
    values = rng.standard_normal(1 << 20).astype(np.float32)
    original = values.copy()
    tensor = torch.from_numpy(rng.standard_normal(1 << 18))
    tensor_before = tensor.numpy().copy()
    with stepwire.init(address=collector.address, quiet=True) as run:
        run.log_histogram("big", values, step=1)
        values[:] = 7.0  # the caller changes its array right after the call
        run.log_histogram("t", tensor, step=1)
        tensor.mul_(-2.0)
        run.log_histogram("listed", rng.standard_normal(1 << 17).tolist(), step=2)
    view = stepwire.Api(address=collector.address).run(run.id)
    assert as_dict(view.histograms("big")[0]) == reference_histogram(original)
    assert as_dict(view.histograms("t")[0]) == reference_histogram(tensor_before)
    assert view.histograms("listed")[0].count == 1 << 17
    assert run.stats()["binning_background"] == 3


def test_private_copy_copies_only_what_the_caller_can_change() -> None:
    arr = np.ones(10, np.float32)
    assert private_copy(arr, arr) is not arr
    assert private_copy(arr[2:], arr) is not arr
    made = np.asarray([1.0, 2.0])
    assert private_copy(made, [1.0, 2.0]) is made  # stepwire converted a list: no one else holds it
    t = torch.ones(10)
    assert not np.shares_memory(private_copy(t.numpy(), t), t.numpy())
    widened = torch.arange(10).double().numpy()
    assert private_copy(widened, torch.arange(10)) is widened


def test_binner_bounds_bytes_by_policy_and_counts_errors(collector: CollectorProcess) -> None:
    with stepwire.init(address=collector.address, quiet=True) as run:
        sid = run._define("h", stepwire._core.KIND_HISTOGRAM)
        block = Binner(run, max_bytes=1 << 20)
        big = np.ones(1 << 19, np.float32)  # 2 MiB: more than the bound alone
        assert not block.submit(Job([sid], ["h"], 1, [big], [False]))
        for step in range(2, 12):  # each fits; together they do not: submit waits for room
            assert block.submit(Job([sid], ["h"], step, [np.ones(200_000, np.float32)], [False]))
        assert block.submit(Job([sid], ["h"], 20, [np.ones(4, np.int8)], [False]))  # fails in the thread
        block.close()
        assert block.counts["background"] == 10 and block.counts["errors"] == 1
        assert "int8" in block.error or "format" in block.error
        drop = Binner(run, max_bytes=1 << 20, drop=True)
        gate = Job([sid], ["h"], 30, [np.ones(200_000, np.float32)], [False],
                   guards=[(torch.ones(1), 0)])  # guarded: held until a fence approves it
        assert drop.submit(gate)
        for step in range(31, 41):
            drop.submit(Job([sid], ["h"], step, [np.ones(200_000, np.float32)], [False]))
        assert drop.counts["dropped"] >= 1
        drop.close()
        block = Binner(run, max_bytes=1 << 20)
        assert block.submit(Job([sid], ["h"], 50, [np.ones(200_000, np.float32)], [False],
                                guards=[(torch.ones(1), 0)]))
        # no room until a fence approves the guarded job: the caller bins this one itself instead of waiting
        assert not block.submit(Job([sid], ["h"], 51, [np.ones(200_000, np.float32)], [False]))
        block.close()
    hists = stepwire.Api(address=collector.address).run(run.id).histograms("h")
    assert {h.step for h in hists} >= set(range(2, 12)) | {30, 50}
    assert all(h.count == 200_000 for h in hists)
