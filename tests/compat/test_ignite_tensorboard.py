"""Ignite's TensorBoard logger with only the import changed (``stepwire.compat.ignite.tensorboard_logger``): real
Ignite engines training a small model, read back with stepwire's Api."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ignite.engine import Engine, Events
from ignite.handlers import ModelCheckpoint
from ignite_mnist import example
from torch.optim import SGD

import stepwire
import torch
from conftest import CollectorProcess
from reference import reference_histogram
from stepwire.compat.ignite.clearml_logger import OutputHandler as ClearMLOutputHandler
from stepwire.compat.ignite.tensorboard_logger import (
    GradsHistHandler,
    GradsScalarHandler,
    OptimizerParamsHandler,
    OutputHandler,
    TensorboardLogger,
    WeightsHistHandler,
    WeightsScalarHandler,
    global_step_from_engine,
)
from torch import nn


def test_mnist_example_stores_what_tensorboard_would(tmp_path: Path) -> None:
    log_dir = str(tmp_path / "tensorboard_logs")
    ex = example()  # the examples' engines, model and data
    train_loader, model, optimizer, trainer = ex.train_loader, ex.model, ex.optimizer, ex.trainer
    train_evaluator, validation_evaluator = ex.train_evaluator, ex.validation_evaluator
    grads: dict[int, np.ndarray] = {}

    @trainer.on(Events.ITERATION_COMPLETED(every=2))
    def capture(engine: Engine) -> None:  # before the handlers below, after the optimizer step
        grads[engine.state.iteration] = model.fc2.weight.grad.numpy().copy()  # type: ignore[union-attr]

    tb_logger = TensorboardLogger(log_dir=log_dir)
    tb_logger.attach_output_handler(trainer, event_name=Events.ITERATION_COMPLETED(every=2), tag="training",
                                    output_transform=lambda loss: {"batchloss": loss}, metric_names="all")
    for tag, evaluator in [("training", train_evaluator), ("validation", validation_evaluator)]:
        tb_logger.attach_output_handler(evaluator, event_name=Events.EPOCH_COMPLETED, tag=tag,
                                        metric_names=["loss", "accuracy"],
                                        global_step_transform=global_step_from_engine(trainer))
    tb_logger.attach_opt_params_handler(trainer, event_name=Events.ITERATION_COMPLETED(every=2), optimizer=optimizer)
    tb_logger.attach(trainer, log_handler=WeightsScalarHandler(model, whitelist=["fc1"]),
                     event_name=Events.ITERATION_COMPLETED(every=2))

    def is_conv(n: str, _: Any) -> bool:
        return "conv" in n

    tb_logger.attach(trainer, log_handler=WeightsHistHandler(model, whitelist=is_conv),
                     event_name=Events.ITERATION_COMPLETED(every=2))
    tb_logger.attach(trainer, log_handler=GradsScalarHandler(model), event_name=Events.ITERATION_COMPLETED(every=2))
    tb_logger.attach(trainer, log_handler=GradsHistHandler(model, whitelist=["fc2.weight"]),
                     event_name=Events.ITERATION_COMPLETED(every=2))

    def score_function(engine: Engine) -> float:
        return float(engine.state.metrics["accuracy"])

    model_checkpoint = ModelCheckpoint(log_dir, n_saved=2, filename_prefix="best", score_function=score_function,
                                       score_name="validation_accuracy",
                                       global_step_transform=global_step_from_engine(trainer))
    validation_evaluator.add_event_handler(Events.COMPLETED, model_checkpoint, {"model": model})
    trainer.run(train_loader, max_epochs=3)
    run = tb_logger.writer.run
    tb_logger.close()

    view = stepwire.Api().run(run.id)
    assert view.project == "tensorboard" and view.name == "tensorboard_logs" and view.status == "finished"
    grad_names = {f"grads_norm/{m}/{p}" for m in ("conv1", "conv2", "fc1", "fc2") for p in ("weight", "bias")}
    assert {s.name for s in view.series() if s.kind == "scalar"} == {
        "training/batchloss", "training/loss", "training/accuracy", "validation/loss", "validation/accuracy",
        "lr/group_0", "weights_norm/fc1/weight", "weights_norm/fc1/bias", *grad_names}
    assert {s.name for s in view.series() if s.kind == "histogram"} == {
        "weights/conv1/weight", "weights/conv1/bias", "weights/conv2/weight", "weights/conv2/bias",
        "grads/fc2/weight"}
    for name in ("training/batchloss", "lr/group_0", "weights_norm/fc1/weight", "grads_norm/fc2/bias"):
        assert view.scalars(name)["step"].tolist() == [2, 4, 6, 8, 10, 12], name
    for name in ("training/accuracy", "validation/loss"):
        assert view.scalars(name)["step"].tolist() == [1, 2, 3], name
    assert view.scalars("lr/group_0")["value"].tolist() == [0.01] * 6
    for h in view.histograms("grads/fc2/weight"):
        assert dict(zip(h.indices.tolist(), h.counts.tolist(), strict=True)) == reference_histogram(grads[h.step])
    assert len(list(Path(log_dir).glob("best_model_*_validation_accuracy=*.pt"))) == 2


def test_nested_outputs_params_and_checks(collector: CollectorProcess) -> None:
    run = stepwire.init(project="tb", address=collector.address)
    tb_logger = TensorboardLogger(log_dir="unused", run=run)  # a given run: close() leaves it open
    model = nn.Sequential(nn.Linear(2, 2))
    opt = SGD([{"params": model[0].weight, "lr": 0.1}, {"params": model[0].bias, "lr": 0.2}])
    engine = Engine(lambda e, b: {"loss": {"a": torch.tensor(0.5), "b": torch.tensor([1.0, 2.0])}, "s": "x"})
    tb_logger.attach(engine, OutputHandler("train", output_transform=lambda o: o), Events.ITERATION_COMPLETED)
    tb_logger.attach(engine, OptimizerParamsHandler(opt, tag="opt"), Events.EPOCH_STARTED)
    tb_logger.attach(engine, WeightsScalarHandler(model, reduction=torch.mean, tag="m"), Events.EPOCH_COMPLETED)
    with pytest.warns(UserWarning, match="can not log metrics value type <class 'str'>"):
        engine.run([0, 1, 2], max_epochs=2)
    with pytest.raises(RuntimeError, match="works only with ClearMLLogger"):
        ClearMLOutputHandler("x", output_transform=lambda o: o)(engine, tb_logger, Events.ITERATION_COMPLETED)
    with pytest.raises(RuntimeError, match="works only with TensorboardLogger"):
        OutputHandler("x", output_transform=lambda o: o)(engine, object(), Events.ITERATION_COMPLETED)
    assert tb_logger.get_logdir() == "unused"  # falls through to the writer
    tb_logger.close()
    run.finish()
    view = stepwire.Api(address=collector.address).run(run.id)
    assert {s.name for s in view.series()} == {"train/loss/a", "train/loss/b/0", "train/loss/b/1", "opt/lr/group_0",
                                               "opt/lr/group_1", "m/weights_mean/0/weight", "m/weights_mean/0/bias"}
    assert view.scalars("train/loss/b/1")["step"].tolist() == list(range(1, 7))
    assert view.scalars("train/loss/b/1")["value"].tolist() == [2.0] * 6
    assert view.scalars("opt/lr/group_1")["step"].tolist() == [1, 2]  # epochs
    assert view.scalars("opt/lr/group_1")["value"].tolist() == pytest.approx([0.2, 0.2])
    w = view.scalars("m/weights_mean/0/weight")
    assert w["step"].tolist() == [1, 2] and w["value"][-1] == pytest.approx(float(model[0].weight.detach().mean()))
