"""Real Ignite engines training a small model, logged with stepwire's Ignite handlers and read back via Api."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ignite.engine import Engine, Events, create_supervised_evaluator, create_supervised_trainer
from ignite.handlers import Checkpoint, global_step_from_engine
from ignite.metrics import Loss

import stepwire
import torch
from conftest import CollectorProcess
from reference import reference_histogram
from stepwire.ignite import (
    GradsHistHandler,
    GradsScalarHandler,
    OptimizerParamsHandler,
    OutputHandler,
    StepwireLogger,
    StepwireSaver,
    WeightsHistHandler,
    WeightsScalarHandler,
)


def setup(seed: int = 0):  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    data = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]  # 4 iterations per epoch
    return model, opt, data


def test_handlers_log_what_ignites_clearml_handlers_name(collector: CollectorProcess, tmp_path: Path) -> None:
    model, opt, data = setup()
    trainer = create_supervised_trainer(model, opt, torch.nn.functional.mse_loss)
    evaluator = create_supervised_evaluator(model, metrics={"mse": Loss(torch.nn.functional.mse_loss)})
    grads: dict[int, dict[str, np.ndarray]] = {}
    weights: dict[int, dict[str, np.ndarray]] = {}

    @trainer.on(Events.ITERATION_COMPLETED)
    def capture(engine: Engine) -> None:  # after the optimizer step, before the handlers below
        it = engine.state.iteration
        grads[it] = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
        weights[it] = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}

    with StepwireLogger(project="ignite", name="mlp", address=collector.address) as logger:
        logger.attach_output_handler(trainer, Events.ITERATION_COMPLETED, tag="training",
                                     output_transform=lambda loss: {"batch_loss": loss})
        logger.attach_opt_params_handler(trainer, Events.ITERATION_STARTED, optimizer=opt)
        logger.attach_output_handler(evaluator, Events.EPOCH_COMPLETED, tag="validation", metric_names=["mse"],
                                     global_step_transform=global_step_from_engine(trainer))
        logger.attach(trainer, WeightsScalarHandler(model), Events.ITERATION_COMPLETED)
        logger.attach(trainer, GradsScalarHandler(model, reduction=torch.mean, tag="t"), Events.ITERATION_COMPLETED)
        logger.attach(trainer, WeightsHistHandler(model, whitelist=["0."]), Events.ITERATION_COMPLETED)
        logger.attach(trainer, GradsHistHandler(model), Events.ITERATION_COMPLETED)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: evaluator.run(data))
        trainer.run(data, max_epochs=3)
        run_id = logger.id
    view = stepwire.Api(address=collector.address).run(run_id)
    assert view.status == "finished" and view.project == "ignite"
    names = {s.name for s in view.series()}
    assert {"training/batch_loss", "lr/0", "validation/mse", "weights_norm/0/weight", "weights_norm/2/bias",
            "t/grads_mean/0/weight", "weights_0/weight", "weights_0/bias", "grads_0/weight", "grads_2/bias"} <= names
    assert "weights_2/weight" not in names  # not whitelisted
    assert view.scalars("training/batch_loss")["step"].tolist() == list(range(1, 13))
    assert view.scalars("validation/mse")["step"].tolist() == [1, 2, 3]  # the trainer's epochs
    assert view.scalars("lr/0")["value"].tolist() == [0.05] * 12
    for it in (1, 7, 12):
        w = view.scalars("weights_norm/0/weight")
        assert w["value"][w["step"] == it][0] == pytest.approx(np.linalg.norm(weights[it]["0.weight"]), rel=1e-5)
        g = view.scalars("t/grads_mean/2/bias")
        assert g["value"][g["step"] == it][0] == pytest.approx(grads[it]["2.bias"].mean(), rel=1e-5)
        (h,) = [h for h in view.histograms("grads_0/weight") if h.step == it]
        assert dict(zip(h.indices.tolist(), h.counts.tolist(), strict=True)) == reference_histogram(
            grads[it]["0.weight"])
        (hw,) = [h for h in view.histograms("weights_0/bias") if h.step == it]
        assert dict(zip(hw.indices.tolist(), hw.counts.tolist(), strict=True)) == reference_histogram(
            weights[it]["0.bias"])


def test_checkpoints_become_artifacts(collector: CollectorProcess, tmp_path: Path) -> None:
    model, opt, data = setup()
    trainer = create_supervised_trainer(model, opt, torch.nn.functional.mse_loss)
    with StepwireLogger(address=collector.address) as logger:
        saver = StepwireSaver(logger, dirname=tmp_path / "ckpt")
        trainer.add_event_handler(Events.EPOCH_COMPLETED, Checkpoint({"model": model}, saver, n_saved=2))
        trainer.run(data, max_epochs=4)
        final = {k: v.clone() for k, v in model.state_dict().items()}
        run_id = logger.id
    view = stepwire.Api(address=collector.address).run(run_id)
    arts = view.artifacts()
    assert [a.name for a in arts] == ["checkpoints/model_12.pt", "checkpoints/model_16.pt"]
    assert all(a.size > 0 for a in arts)
    path = view.download_artifact("checkpoints/model_16.pt", tmp_path)
    restored = torch.load(path, weights_only=True)
    assert all(torch.equal(restored[k], final[k]) for k in final)


def test_handlers_check_their_logger_and_arguments(collector: CollectorProcess) -> None:
    model, _, _ = setup()
    engine = Engine(lambda e, b: 0.0)
    with pytest.raises(RuntimeError, match="works only with StepwireLogger"):
        OutputHandler("tag", output_transform=lambda x: x)(engine, object(), Events.ITERATION_COMPLETED)
    with pytest.raises(ValueError, match="metric_names"):
        OutputHandler("tag")
    with pytest.raises(TypeError, match="model"):
        WeightsHistHandler(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reduction"):
        WeightsScalarHandler(model, reduction=lambda t: t)
    with pytest.raises(TypeError, match="optimizer"):
        OptimizerParamsHandler(object())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="StepwireSaver needs"):
        StepwireSaver()
    with StepwireLogger(address=collector.address) as logger:
        engine.state.iteration = 1
        handler = OutputHandler("x", output_transform=lambda o: o,
                                global_step_transform=lambda e, ev: 1.5)  # type: ignore[arg-type,return-value]
        with pytest.raises(TypeError, match="global_step must be int"):
            handler(engine, logger, Events.ITERATION_COMPLETED)
