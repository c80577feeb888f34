"""Every itwinai kind logged through ``stepwire.compat.itwinai.loggers`` and read back with ``stepwire.Api``:
figures and images as media, models as state-dict artifacts that ``torch.load`` reads back equal, ``watch`` as
gradient histograms after real backward passes, datasets as text records, FLOPs counted on a real model."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import stepwire
import stepwire.logger_kinds
from conftest import CollectorProcess
from readback import only_run, same_histogram
from stepwire.compat.itwinai.loggers import Prov4MLLogger, StepwireLogger

torch = pytest.importorskip("torch")
matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402


def test_figures_images_models_and_datasets_are_stored(collector: CollectorProcess, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    best = torch.nn.Linear(2, 2)
    fig, ax = plt.subplots(figsize=(2, 2), dpi=50)
    ax.plot([0, 1, 2], [1, 0, 1])
    plotly_figure = {"data": [{"type": "scatter", "x": [0, 1], "y": [1, 2]}], "layout": {"title": "loss"}}
    image_hwc = np.zeros((6, 8, 3), dtype=np.uint8)
    image_hwc[:, :, 0] = 255
    dataset = torch.utils.data.TensorDataset(torch.zeros(8, 4), torch.zeros(8))
    loader = torch.utils.data.DataLoader(dataset, batch_size=4)

    logger = StepwireLogger(address=collector.address, experiment_id="kinds")
    with logger.start_logging():
        logger.log(fig, "plots/curve", kind="figure", step=1)
        logger.log(plotly_figure, "plots/loss", kind="figure", step=1)
        logger.log(image_hwc, "samples/red", kind="image", step=2)
        logger.log(torch.zeros([3, 10, 10]), "samples/black", kind="image", step=2)  # CHW, as itwinai's TB test
        logger.log(model, "model_v1", kind="model", step=3)
        logger.log(best, "checkpoints/best", kind="best_model", step=3)
        logger.log(dataset, "train_set", kind="dataset", step=0)
        logger.log(loader, "train_loader", kind="torch", step=0)  # Prov4ML's torch kind: a DataLoader
        logger.log(best, "whole_module", kind="torch", step=0)  # another torch object: torch.save-d as it is
    plt.close(fig)

    view = only_run(stepwire.Api(address=collector.address), "kinds")
    media = {(m.name, m.step): m for m in view.media()}
    assert sorted(media) == [("plots/curve", 1), ("plots/loss", 1), ("samples/black", 2), ("samples/red", 2)]
    curve = media["plots/curve", 1]
    assert (curve.kind, curve.mime, curve.width, curve.height) == ("image", "image/png", 100, 100)
    assert media["plots/loss", 1].figure() == plotly_figure
    red = media["samples/red", 2].image()
    assert red.size == (8, 6) and red.convert("RGB").getpixel((3, 3)) == (255, 0, 0)
    black = media["samples/black", 2].image()
    assert black.size == (10, 10) and black.convert("RGB").getpixel((0, 0)) == (0, 0, 0)

    artifacts = {a.name: a for a in view.artifacts()}
    assert sorted(artifacts) == ["checkpoints/best", "model_v1", "whole_module"]
    for name, module in (("model_v1", model), ("checkpoints/best", best)):
        path = view.download_artifact(name, tmp_path / name.replace("/", "_"))
        state = torch.load(path, weights_only=True)
        assert list(state) == list(module.state_dict())
        assert all(torch.equal(state[key], value) for key, value in module.state_dict().items())
    whole = torch.load(view.download_artifact("whole_module", tmp_path / "whole"), weights_only=False)
    assert isinstance(whole, torch.nn.Linear) and torch.equal(whole.weight, best.weight)

    texts = {t.name: (t.step, json.loads(t.text)) for t in view.texts()}
    assert texts["train_set"] == (0, {"type": "torch.utils.data.dataset.TensorDataset", "len": 8,
                                      "repr": repr(dataset)})
    assert texts["train_loader"] == (0, {"type": "torch.utils.data.dataset.TensorDataset", "len": 8,
                                         "repr": repr(dataset), "batch_size": 4})


def test_watch_logs_gradient_histograms_after_real_backward_passes(collector: CollectorProcess) -> None:
    torch.manual_seed(1)
    model = torch.nn.Linear(5, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 5), torch.randn(16, 2)
    grads: list[dict[str, Any]] = []
    logger = StepwireLogger(address=collector.address, experiment_id="watch", log_freq="batch")
    with logger.start_logging():
        logger.log(model, "model", kind="watch")
        logger.log(model, "model", kind="watch")  # once per model: no second set of hooks
        for step in range(3):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            grads.append({name: p.grad.detach().clone() for name, p in model.named_parameters()
                          if p.grad is not None})
            optimizer.step()
            logger.log(loss.item(), "train/loss", step=step, batch_idx=step)
    assert logger.run is None

    view = only_run(stepwire.Api(address=collector.address), "watch")
    for name in ("weight", "bias"):
        hists = view.histograms(f"gradients/{name}")
        assert len(hists) == 3
        for hist, grad in zip(hists, grads, strict=True):
            assert same_histogram(hist, grad[name].numpy())
        norms = view.scalars(f"gradients/{name}/norm")["value"]
        assert norms.tolist() == pytest.approx([float(g[name].norm()) for g in grads], rel=1e-6)


def test_prov4ml_kinds_are_scalars(collector: CollectorProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stepwire.logger_kinds, "_warned", set())  # the carbon warning is once per process
    model = torch.nn.Linear(4, 3)
    batch = (torch.zeros(2, 4), torch.zeros(2))
    dataset = torch.utils.data.TensorDataset(torch.zeros(8, 4), torch.zeros(8))
    logger = Prov4MLLogger(address=collector.address, experiment_name="prov", log_freq="batch")
    with logger.start_logging():
        logger.log((model, batch), "flops/batch", kind="flops_pb", step=1, context="training")
        logger.log((model, dataset), "flops/epoch", kind="flops_pe", step=1)
        logger.log(1.5e9, "flops/given", kind="flops_pb", step=1)
        logger.log(0.25, "carbon/kg", kind="carbon", step=1)
        logger.log({"kg": 0.5, "kwh": 2}, "energy", kind="carbon", step=2)
        with pytest.warns(UserWarning, match="kind 'carbon' without a value"):
            logger.log(None, None, kind="carbon", step=3)
        logger.log(None, None, kind="carbon", step=4)  # warned once
        logger.log(12.5, "epoch_time", kind="execution_time", step=1)
        logger.log(None, "execution_time", kind="execution_time", step=2)
        logger.log(55.0, "gpu_util", kind="system", step=1)
        logger.log(None, None, kind="system", step=1)  # Prov4ML's "sample now": the run's sampler does it
        logger.log(None, None, kind="prov_documents", step=1)
    view = only_run(stepwire.Api(address=collector.address), "prov")

    def points(name: str) -> list[tuple[int, float]]:
        got = view.scalars(name)
        return list(zip(got["step"].tolist(), got["value"].tolist(), strict=True))

    assert points("flops/batch") == [(1, 48.0)]  # 2 samples x 4 in x 3 out, a multiply and an add each
    assert points("flops/epoch") == [(1, 192.0)]  # one sample's 24 FLOPs x 8 samples
    assert points("flops/given") == [(1, 1.5e9)]
    assert points("carbon/kg") == [(1, 0.25)]
    assert points("energy/kg") == [(2, 0.5)] and points("energy/kwh") == [(2, 2.0)]
    assert points("epoch_time") == [(1, 12.5)]
    ((step, seconds),) = points("execution_time")
    assert step == 2 and seconds >= 0.0
    assert points("system/gpu_util") == [(1, 55.0)]
    assert sorted(s.name for s in view.series()) == [
        "carbon/kg", "energy/kg", "energy/kwh", "epoch_time", "execution_time", "flops/batch", "flops/epoch",
        "flops/given", "system/gpu_util"]


def test_model_kind_with_something_else_warns_once_and_stores_nothing(collector: CollectorProcess,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stepwire.logger_kinds, "_warned", set())
    logger = StepwireLogger(address=collector.address, experiment_id="notamodel")
    with logger.start_logging():
        with pytest.warns(UserWarning, match="needs a torch.nn.Module or a state dict, got bytes"):
            logger.log(b"weights", "model", kind="model", step=0)
        logger.log(b"weights", "model", kind="best_model", step=1)  # the same warning is not repeated
        with pytest.warns(UserWarning, match="got BytesIO"):  # a different type: its own warning
            logger.log(io.BytesIO(), "model", kind="model", step=1)
    assert only_run(stepwire.Api(address=collector.address), "notamodel").artifacts() == []
