"""MONAI's TensorBoard handlers on stepwire: ``TensorBoardStatsHandler``/``TensorBoardImageHandler`` given
``stepwire.compat.tensorboard.SummaryWriter``, and ``ClearMLStatsHandler``/``ClearMLImageHandler`` against the
stepwire ClearML shim, on real MONAI engines (SupervisedTrainer/SupervisedEvaluator) with synthetic data.

MONAI's ClearML handlers ``import clearml`` themselves; the ClearML test maps ``sys.modules["clearml"]`` to
``stepwire.compat.clearml`` for its own duration only (monkeypatch), which is how a user without ClearML installed
would point them at stepwire."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import stepwire
import torch
from conftest import CollectorProcess, start_collector
from stepwire.compat import tensorboard
from stepwire.compat.tensorboard import SummaryWriter

pytest.importorskip("monai", reason="MONAI is not installed (pip install monai; it is in the test extra)")
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import (
    MeanSquaredError,
    TensorBoardImageHandler,
    TensorBoardStatsHandler,
    ValidationHandler,
    from_engine,
)

EPOCHS = 2
TRAIN_ITERATIONS = 3  # per epoch: 6 samples, batches of 2


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """One collector process for the module's tests."""
    c = start_collector(tmp_path_factory.mktemp("collector"))
    yield c
    c.stop()


def samples(n: int, shape: tuple[int, ...], seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.rand(1, *shape, generator=g), "label": torch.rand(1, *shape, generator=g)}
            for _ in range(n)]


def engines(shape: tuple[int, ...], train_handlers: list[object], val_handlers: list[object],
            epochs: int = EPOCHS) -> tuple[SupervisedTrainer, SupervisedEvaluator, list[dict[str, torch.Tensor]]]:
    """A trainer of a one-layer network on random images and an evaluator run after each epoch."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d if len(shape) == 2 else torch.nn.Conv3d
    net = conv(1, 1, 3, padding=1)
    val_data = samples(2, shape, seed=2)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=DataLoader(val_data, batch_size=2), network=net,
        key_val_metric={"val_mse": MeanSquaredError(output_transform=from_engine(["pred", "label"]))},
        val_handlers=val_handlers)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=epochs, train_data_loader=DataLoader(samples(6, shape, 1), batch_size=2),
        network=net, optimizer=torch.optim.SGD(net.parameters(), 0.1), loss_function=torch.nn.MSELoss(),
        train_handlers=[ValidationHandler(validator=evaluator, interval=1, epoch_level=True), *train_handlers])
    return trainer, evaluator, val_data


def stats_and_images(writer: object, trainer_epoch: list[SupervisedTrainer]) -> tuple[list[object], list[object]]:
    """MONAI's tutorial set-up: loss per iteration on the trainer; metrics and images per epoch on the evaluator,
    at the trainer's epoch."""
    train = [TensorBoardStatsHandler(summary_writer=writer, tag_name="Loss",
                                     output_transform=from_engine(["loss"], first=True))]
    val = [TensorBoardStatsHandler(summary_writer=writer, output_transform=lambda x: None,
                                   global_epoch_transform=lambda x: trainer_epoch[0].state.epoch),
           TensorBoardImageHandler(summary_writer=writer, batch_transform=from_engine(["image", "label"]),
                                   output_transform=from_engine(["pred"]),
                                   global_iter_transform=lambda x: trainer_epoch[0].state.epoch)]
    return train, val


def test_monai_tensorboard_handlers_on_stepwire_writer(collector: CollectorProcess) -> None:
    run = stepwire.init(project="monai", name="unet", address=collector.address)
    writer = SummaryWriter(run=run)
    holder: list[SupervisedTrainer] = []
    train, val = stats_and_images(writer, holder)
    trainer, evaluator, val_data = engines((8, 8), train, val)
    holder.append(trainer)
    trainer.run()
    run.finish()

    view = stepwire.Api(address=collector.address).run(run.id)
    assert sorted(s.name for s in view.series()) == ["Loss", "val_mse"]
    assert view.scalars("Loss")["step"].tolist() == list(range(1, EPOCHS * TRAIN_ITERATIONS + 1))
    assert view.scalars("val_mse")["step"].tolist() == [1, 2]
    assert view.scalars("val_mse")["value"][-1] == pytest.approx(evaluator.state.metrics["val_mse"])
    assert sorted({(m.name, m.step) for m in view.media()}) == [
        (name, epoch) for name in ("input_0_HW_0", "input_1_HW_0", "output_HW_0") for epoch in (1, 2)]
    # MONAI rescales each 2-D image to [0, 1]; TensorBoard's rule makes it uint8 (x 255, truncated)
    image = val_data[0]["image"][0].numpy()
    expected = ((image - image.min()) / (image.max() - image.min()) * 255).astype(np.uint8)
    [stored] = view.media("input_0_HW_0", step=2)
    np.testing.assert_allclose(np.asarray(stored.image()), expected, atol=1)


def test_monai_3d_images_go_through_the_file_writer(collector: CollectorProcess) -> None:
    run = stepwire.init(project="monai", name="3d", address=collector.address)
    writer = SummaryWriter(run=run)
    handler = TensorBoardImageHandler(summary_writer=writer, batch_transform=from_engine(["image", "label"]),
                                      output_transform=from_engine(["pred"]))
    trainer, _, _ = engines((8, 8, 4), [handler], [], epochs=1)
    trainer.run()
    run.finish()
    view = stepwire.Api(address=collector.address).run(run.id)
    # add_animated_gif writes one GIF per channel with writer._get_file_writer().add_summary(...)
    names = sorted({m.name for m in view.media()})
    assert names == ["input_0_HWD/image", "input_1_HWD/image", "output_HWD/image"]
    [gif] = view.media("input_0_HWD/image", step=1)
    frames = Image.open(io.BytesIO(gif.bytes()))
    assert (frames.format, frames.n_frames, frames.size) == ("GIF", 8, (4, 8))  # frame_dim=-3: 8 frames of 8x4


@pytest.mark.usefixtures("clearml_task_state")
def test_monai_clearml_handlers_on_the_clearml_shim(collector: CollectorProcess, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import stepwire.compat.clearml as clearml_shim

    monkeypatch.setitem(sys.modules, "clearml", clearml_shim)
    from monai.handlers import ClearMLImageHandler, ClearMLStatsHandler

    task = clearml_shim.Task.init(project_name="MONAI", task_name="monai_experiment", address=collector.address)
    holder: list[SupervisedTrainer] = []
    log_dir = str(tmp_path / "runs")
    train = [ClearMLStatsHandler(log_dir=log_dir, tag_name="Loss", output_transform=from_engine(["loss"], first=True))]
    val = [ClearMLStatsHandler(log_dir=log_dir, output_transform=lambda x: None,
                               global_epoch_transform=lambda x: holder[0].state.epoch),
           ClearMLImageHandler(log_dir=log_dir, batch_transform=from_engine(["image", "label"]),
                               output_transform=from_engine(["pred"]),
                               global_iter_transform=lambda x: holder[0].state.epoch)]
    assert all(h.clearml_task is task for h in (*train, *val))  # MONAI reuses the current task
    trainer, _, _ = engines((8, 8), train, val)
    holder.append(trainer)
    trainer.run()
    for h in (*train, *val):
        h.close()
    graphs = task.get_reported_scalars()
    assert {t: sorted(s) for t, s in graphs.items()} == {"Loss": ["Loss"], "val_mse": ["val_mse"]}
    assert graphs["Loss"]["Loss"]["x"] == list(range(1, EPOCHS * TRAIN_ITERATIONS + 1))
    assert graphs["val_mse"]["val_mse"]["x"] == [1, 2]
    task.close()
    assert not tensorboard.is_patched()
    view = stepwire.Api(address=collector.address).run(task.id)
    assert sorted({(m.name, m.step) for m in view.media()}) == [
        (f"Images/{name}", epoch) for name in ("input_0_HW_0", "input_1_HW_0", "output_HW_0") for epoch in (1, 2)]
    assert (Path(log_dir)).is_dir()  # MONAI's own SummaryWriter still wrote its event files
