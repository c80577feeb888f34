"""Ignite's ClearML logger with only the import changed (``stepwire.compat.ignite.clearml_logger``): real Ignite
engines training a small model, against a real collector, read back with stepwire's Api and the ClearML shim."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ignite.engine import Engine, Events, create_supervised_trainer
from ignite.handlers import Checkpoint
from ignite_mnist import Net, batches, example
from torch.optim import SGD

import stepwire
import torch
from conftest import CollectorProcess
from stepwire.compat.clearml import Task
from stepwire.compat.ignite.clearml_logger import (
    ClearMLLogger,
    ClearMLSaver,
    GradsHistHandler,
    GradsScalarHandler,
    WeightsHistHandler,
    WeightsScalarHandler,
    global_step_from_engine,
)
from stepwire.compat.ignite.tensorboard_logger import OutputHandler as TensorboardOutputHandler
from torch import nn

pytestmark = pytest.mark.usefixtures("clearml_task_state")


def test_mnist_example_stores_what_clearml_would(collector: CollectorProcess, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.delenv("CI", raising=False)  # Ignite's bypass mode follows $CI
    ex = example()  # the examples' engines, model and data
    train_loader, model, optimizer, trainer = ex.train_loader, ex.model, ex.optimizer, ex.trainer
    train_evaluator, validation_evaluator = ex.train_evaluator, ex.validation_evaluator

    clearml_logger = ClearMLLogger(project_name="examples", task_name="ignite", address=collector.address)
    clearml_logger.attach_output_handler(trainer, event_name=Events.ITERATION_COMPLETED(every=2), tag="training",
                                         output_transform=lambda loss: {"batchloss": loss})
    for tag, evaluator in [("training metrics", train_evaluator), ("validation metrics", validation_evaluator)]:
        clearml_logger.attach_output_handler(evaluator, event_name=Events.EPOCH_COMPLETED, tag=tag,
                                             metric_names=["loss", "accuracy"],
                                             global_step_transform=global_step_from_engine(trainer))
    clearml_logger.attach_opt_params_handler(trainer, event_name=Events.ITERATION_COMPLETED(every=2),
                                             optimizer=optimizer)
    clearml_logger.attach(trainer, log_handler=WeightsScalarHandler(model, whitelist=["fc1"]),
                          event_name=Events.ITERATION_COMPLETED(every=2))

    def is_conv(n: str, _: Any) -> bool:
        return "conv" in n

    clearml_logger.attach(trainer, log_handler=WeightsHistHandler(model, whitelist=is_conv),
                          event_name=Events.ITERATION_COMPLETED(every=2))
    clearml_logger.attach(trainer, log_handler=GradsScalarHandler(model),
                          event_name=Events.ITERATION_COMPLETED(every=2))
    clearml_logger.attach(trainer, log_handler=GradsHistHandler(model, whitelist=["fc2.weight"]),
                          event_name=Events.ITERATION_COMPLETED(every=2))
    with pytest.warns(UserWarning, match="ClearMLSaver created a temporary checkpoints directory"):
        saver = ClearMLSaver()
    handler = Checkpoint({"model": model}, saver, n_saved=1, score_function=lambda e: e.state.metrics["accuracy"],
                         score_name="val_acc", filename_prefix="best",
                         global_step_transform=global_step_from_engine(trainer))
    validation_evaluator.add_event_handler(Events.EPOCH_COMPLETED, handler)
    trainer.run(train_loader, max_epochs=3)
    best = Path(saver.dirname) / str(handler.last_checkpoint)
    task_id = clearml_logger.get_task().id
    clearml_logger.close()

    view = stepwire.Api(address=collector.address).run(task_id)
    assert view.project == "examples" and view.name == "ignite" and view.status == "finished"
    scalars = {s.name for s in view.series() if s.kind == "scalar"}
    grads = {f"grads_norm/{m}/{p}" for m in ("conv1", "conv2", "fc1", "fc2") for p in ("weight", "bias")}
    assert scalars == {"training/batchloss", "training metrics/loss", "training metrics/accuracy",
                       "validation metrics/loss", "validation metrics/accuracy", "lr/0",
                       "weights_norm/fc1/weight", "weights_norm/fc1/bias", *grads}
    assert {s.name for s in view.series() if s.kind == "histogram"} == {
        "weights_conv1/weight", "weights_conv1/bias", "weights_conv2/weight", "weights_conv2/bias",
        "grads_fc2/weight"}
    for name in ("training/batchloss", "lr/0", "weights_norm/fc1/bias", "grads_norm/conv2/weight"):
        assert view.scalars(name)["step"].tolist() == [2, 4, 6, 8, 10, 12], name
    assert [h.step for h in view.histograms("grads_fc2/weight")] == [2, 4, 6, 8, 10, 12]
    for name in ("training metrics/accuracy", "validation metrics/loss"):
        assert view.scalars(name)["step"].tolist() == [1, 2, 3], name  # the trainer's epochs
    assert view.scalars("lr/0")["value"].tolist() == [0.01] * 6

    task = Task.get_task(task_id=task_id, address=collector.address)
    reported = task.get_reported_scalars()
    assert set(reported) == {"training", "training metrics", "validation metrics", "lr", "weights_norm/fc1",
                             "grads_norm/conv1", "grads_norm/conv2", "grads_norm/fc1", "grads_norm/fc2"}
    assert set(reported["validation metrics"]) == {"loss", "accuracy"} and set(reported["lr"]) == {"0"}
    assert reported["training"]["batchloss"]["x"] == [2, 4, 6, 8, 10, 12]
    (model_entry,) = task.models["output"]  # n_saved=1: one model, the slot's, named after the best checkpoint
    assert model_entry.name == f"ignite: {best.name}" and best.name.startswith("best_model_")
    assert model_entry.comment is not None and "Checkpoint Metadata: basename=best_model" in model_entry.comment
    local = model_entry.get_local_copy()
    assert local is not None and Path(local).name == "best_model_0.pt"
    assert Path(local).read_bytes() == best.read_bytes()


def test_nested_outputs_offsets_and_checks(collector: CollectorProcess, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.delenv("CI", raising=False)
    engine = Engine(lambda e, b: {"loss": {"a": torch.tensor(0.5), "b": [1.0, 2.0]}, "note": "text"})
    task = Task.init(project_name="p", task_name="nested", address=collector.address)
    task.set_initial_iteration(100)
    logger = ClearMLLogger(project_name="p")  # takes the open task, as Ignite's does
    assert logger.get_task() is task
    logger.attach_output_handler(engine, Events.ITERATION_COMPLETED, tag="tag", output_transform=lambda o: o)
    with pytest.warns(UserWarning, match="can not log metrics value type <class 'str'>"):
        engine.run([0, 1], max_epochs=1)
    logger.report_scalar("direct", "series", 3.0, iteration=1)  # falls through to ClearML's Logger
    with pytest.raises(RuntimeError, match="works only with TensorboardLogger"):
        TensorboardOutputHandler("x", output_transform=lambda o: o)(engine, logger, Events.ITERATION_COMPLETED)
    with pytest.raises(TypeError, match="ClearMLLogger"):
        ClearMLSaver(logger=object())  # type: ignore[arg-type]
    with pytest.warns(UserWarning, match=r"ClearMLSaver\(output_uri=...\) is not supported"):
        ClearMLSaver(logger, output_uri="s3://bucket/models", dirname=str(tmp_path / "ckpt"))
    logger.close()
    with pytest.raises(RuntimeError, match="requires a ClearML Task"):
        ClearMLSaver(dirname="unused")
    reported = Task.get_task(task_id=task.id, address=collector.address).get_reported_scalars()
    assert reported == {
        "tag/loss": {"a": {"x": [101, 102], "y": [0.5, 0.5]}, "b/0": {"x": [101, 102], "y": [1.0, 1.0]},
                     "b/1": {"x": [101, 102], "y": [2.0, 2.0]}},
        "direct": {"series": {"x": [101], "y": [3.0]}}}


def test_checkpoint_slots_are_models_of_the_task(collector: CollectorProcess, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.delenv("CI", raising=False)
    torch.manual_seed(0)
    model = Net()
    trainer = create_supervised_trainer(model, SGD(model.parameters(), lr=0.05), nn.CrossEntropyLoss())
    clearml_logger = ClearMLLogger(project_name="examples", task_name="slots", address=collector.address)
    saver = ClearMLSaver(clearml_logger, dirname=str(tmp_path / "ckpt"))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, Checkpoint({"model": model}, saver, n_saved=2))
    trainer.run(batches(4, 3), max_epochs=4)
    final = {k: v.clone() for k, v in model.state_dict().items()}
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["model_12.pt", "model_16.pt"]
    local = saver.get_local_copy("model_16.pt")
    assert local is not None and Path(local).name == "model_1.pt"
    restored = torch.load(local, weights_only=True)
    assert all(torch.equal(restored[k], final[k]) for k in final)
    assert saver.get_local_copy("model_4.pt") is None  # reported, as Ignite does
    task = clearml_logger.get_task()
    clearml_logger.close()
    done = Task.get_task(task_id=task.id, address=collector.address)
    # 4 -> slot 0, 8 -> slot 1, 12 takes slot 0 (4 removed), 16 slot 1: ClearML's two models, renamed
    assert sorted(m.name for m in done.models["output"]) == ["slots: model_12.pt", "slots: model_16.pt"]
    files = {m.name: Path(str(m.get_local_copy())).name for m in done.models["output"]}
    assert files == {"slots: model_12.pt": "model_0.pt", "slots: model_16.pt": "model_1.pt"}
    view = stepwire.Api(address=collector.address).run(task.id)
    assert len(view.artifacts()) == 2  # the replaced weights files are gone
    assert "Can not find artifact model_4.pt" in [t.text for t in view.texts()]


def test_bypass_mode_is_clearml_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "1")
    assert ClearMLLogger.bypass_mode()  # Ignite's default: $CI
    monkeypatch.setattr(ClearMLLogger, "_bypass", False, raising=False)
    ClearMLLogger.set_bypass_mode(True)  # ClearML's offline mode
    assert ClearMLLogger.bypass_mode() and Task.is_offline()
    with pytest.warns(UserWarning, match="running in bypass mode"):
        clearml_logger = ClearMLLogger(project_name="examples", task_name="bypass")
    task = clearml_logger.get_task()
    folder = task.get_offline_mode_folder()
    engine = Engine(lambda e, b: 1.5)
    clearml_logger.attach_output_handler(engine, Events.ITERATION_COMPLETED, tag="t", output_transform=lambda o: o)
    engine.run([0, 1], max_epochs=1)
    clearml_logger.close()
    assert folder is not None and folder.is_dir()
    assert task.get_reported_scalars() == {"t": {"output": {"x": [1, 2], "y": [1.5, 1.5]}}}
