"""Ignite's W&B logger with only the import changed (``stepwire.compat.ignite.wandb_logger``): real Ignite engines
training a small model through ``stepwire.compat.wandb``, read back with stepwire's Api."""

from __future__ import annotations

from pathlib import Path

import pytest
from ignite.engine import Engine, Events
from ignite.handlers import ModelCheckpoint
from ignite_mnist import example
from torch.optim import SGD

import stepwire
import torch
from stepwire.compat.ignite.tensorboard_logger import WeightsScalarHandler
from stepwire.compat.ignite.wandb_logger import OptimizerParamsHandler, OutputHandler, WandBLogger
from stepwire.compat.ignite.wandb_logger import global_step_from_engine as imported_global_step
from torch import nn


def test_mnist_example_stores_what_wandb_would(tmp_path: Path) -> None:
    ex = example()  # the examples' engines, model and data
    train_loader, model, optimizer, trainer = ex.train_loader, ex.model, ex.optimizer, ex.trainer
    train_evaluator, validation_evaluator = ex.train_evaluator, ex.validation_evaluator

    wandb_logger = WandBLogger(project="pytorch-ignite-integration", name="ignite-mnist-example",
                               config={"train_batch_size": 8, "epochs": 3, "lr": 0.01, "momentum": 0.5})
    wandb_logger.attach_output_handler(trainer, event_name=Events.ITERATION_COMPLETED(every=2), tag="training",
                                       output_transform=lambda loss: {"batchloss": loss})
    for tag, evaluator in [("training", train_evaluator), ("validation", validation_evaluator)]:
        wandb_logger.attach_output_handler(evaluator, event_name=Events.EPOCH_COMPLETED, tag=tag,
                                           metric_names=["loss", "accuracy"],
                                           global_step_transform=lambda *_: trainer.state.iteration)
    wandb_logger.attach_opt_params_handler(trainer, event_name=Events.ITERATION_COMPLETED(every=2),
                                           optimizer=optimizer)
    wandb_logger.watch(model, log="all")

    def score_function(engine: Engine) -> float:
        return float(engine.state.metrics["accuracy"])

    model_checkpoint = ModelCheckpoint(wandb_logger.run.dir, n_saved=2, filename_prefix="best",
                                       score_function=score_function, score_name="validation_accuracy",
                                       global_step_transform=imported_global_step(trainer))
    validation_evaluator.add_event_handler(Events.COMPLETED, model_checkpoint, {"model": model})
    trainer.run(train_loader, max_epochs=3)
    kept = sorted(p.name for p in Path(wandb_logger.run.dir).glob("*.pt"))
    assert wandb_logger.config["lr"] == 0.01  # falls through to the wandb module
    run_id = wandb_logger.run.id
    final_step = wandb_logger.run.step
    wandb_logger.close()

    view = stepwire.Api().run(run_id)
    assert view.project == "pytorch-ignite-integration" and view.name == "ignite-mnist-example"
    assert view.status == "finished" and view.config["momentum"] == 0.5
    ours = {"training/batchloss", "training/loss", "training/accuracy", "validation/loss", "validation/accuracy",
            "lr/group_0"}
    assert ours <= {s.name for s in view.series()}
    assert not {s.name for s in view.series()} - ours - {s.name for s in view.series()
                                                          if s.name.startswith(("parameters/", "gradients/"))}
    for name in ("training/batchloss", "lr/group_0"):
        assert view.scalars(name)["step"].tolist() == [2, 4, 6, 8, 10, 12], name
    for name in ("training/accuracy", "validation/loss"):
        assert view.scalars(name)["step"].tolist() == [4, 8, 12], name  # the trainer's iteration
    assert view.scalars("lr/group_0")["value"].tolist() == [0.01] * 6
    assert final_step == 12  # W&B's step followed the handlers' steps
    summary = view.meta["summary"]
    assert summary["validation/accuracy"] == pytest.approx(view.scalars("validation/accuracy")["value"][-1])
    assert len(kept) == 2 and all(n.startswith("best_model_") and "validation_accuracy=" in n for n in kept)
    assert sorted(a.name for a in view.artifacts() if a.name.endswith(".pt")) == kept  # run.dir's files


def test_sync_text_outputs_and_checks() -> None:
    wandb_logger = WandBLogger(project="p", name="checks")
    engine = Engine(lambda e, b: {"loss": torch.tensor(0.25), "phase": "warmup", "parts": [1.0, 2.0]})
    with pytest.warns(UserWarning, match="The sync argument for the WandBLoggers is no longer used"):
        handler = OutputHandler("train", output_transform=lambda o: o, sync=True)
    wandb_logger.attach(engine, handler, Events.ITERATION_COMPLETED)
    opt = SGD(nn.Linear(2, 1).parameters(), lr=0.3)
    with pytest.warns(UserWarning, match="sync argument"):
        wandb_logger.attach(engine, OptimizerParamsHandler(opt, tag="opt", sync=False), Events.EPOCH_COMPLETED)
    engine.run([0, 1], max_epochs=2)
    with pytest.raises(RuntimeError, match="works only with TensorboardLogger"):
        WeightsScalarHandler(nn.Linear(2, 1))(engine, wandb_logger, Events.ITERATION_COMPLETED)
    with pytest.raises(RuntimeError, match="works only with WandBLogger"):
        OutputHandler("x", output_transform=lambda o: o)(engine, object(), Events.ITERATION_COMPLETED)
    run_id = wandb_logger.run.id
    wandb_logger.close()
    view = stepwire.Api().run(run_id)
    assert {s.name for s in view.series()} == {"train/loss", "train/parts/0", "train/parts/1", "opt/lr/group_0"}
    assert view.scalars("train/loss")["step"].tolist() == [1, 2, 3, 4]
    assert view.scalars("train/parts/1")["value"].tolist() == [2.0] * 4
    # epochs 1, 2: lower than W&B's step then (2, 4), which W&B drops; stored where logged, as wandb.log here does
    assert view.scalars("opt/lr/group_0")["step"].tolist() == [1, 2]
    assert [(t.name, t.step, t.text) for t in view.texts("train/phase")] == [
        ("train/phase", i, "warmup") for i in range(1, 5)]
