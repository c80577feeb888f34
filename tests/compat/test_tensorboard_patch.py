"""stepwire.compat.tensorboard.patch: torch's own SummaryWriter keeps writing its event files (read back with
TensorBoard's EventAccumulator) and the same data is stored in a stepwire run (read back with ``stepwire.Api``);
ClearML's Task.init captures it under ClearML's names."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from ignite.engine import Engine, Events
from ignite.handlers.tensorboard_logger import OptimizerParamsHandler, TensorboardLogger, WeightsHistHandler
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter, summary

import stepwire
import torch
from conftest import CollectorProcess, start_collector
from stepwire.compat import tensorboard
from stepwire.compat.tensorboard import unsupported, unsupported_counts

matplotlib.use("Agg")
import matplotlib.pyplot as plt


@pytest.fixture(autouse=True)
def _unpatched(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts and ends with torch's SummaryWriter as torch made it; warn-once counts start afresh."""
    monkeypatch.setattr(unsupported, "_counts", Counter())
    originals = dict(vars(SummaryWriter))
    yield
    tensorboard.unpatch()
    assert dict(vars(SummaryWriter)) == originals


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """One collector process for the module's tests (each test has runs of its own)."""
    c = start_collector(tmp_path_factory.mktemp("collector"))
    yield c
    c.stop()


def events(log_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def test_patched_writers_keep_event_files_and_store_the_same(collector: CollectorProcess, tmp_path: Path) -> None:
    older = SummaryWriter(tmp_path / "tb" / "older")  # created before patch: captured too
    run = stepwire.init(project="tb", name="patched", address=collector.address)
    tensorboard.patch(run)
    writer = SummaryWriter(tmp_path / "tb" / "newer")
    older.add_scalar("loss", 1.5, 1)
    for step in (2, 3):
        writer.add_scalar("loss", 1.0 / step, global_step=step, walltime=1000.0 + step)
    writer.add_scalars("pair", {"a": 1.0, "b": 2.0}, 4)
    values = np.linspace(-1, 1, 101)
    writer.add_histogram("weights", values, 5)
    image = np.random.default_rng(1).random((3, 6, 8))
    writer.add_image("sample", image, 6)
    fig = plt.figure(figsize=(2, 1), dpi=40)
    writer.add_figure("figure", fig, 7)
    writer.add_hparams({"lr": 0.1}, {"hp/accuracy": 0.9})  # a nested writer's add_scalar: stored once
    writer._get_file_writer().add_summary(summary.scalar("direct", 4.0), 8)  # as MONAI's 3-D images do
    writer.add_graph  # noqa: B018 - left to TensorBoard alone, never warned about
    older.close()
    writer.close()
    tensorboard.unpatch()
    run.finish()

    newer = events(tmp_path / "tb" / "newer")
    assert [(e.step, e.value, e.wall_time) for e in newer.Scalars("loss")] == [(2, 0.5, 1002.0),
                                                                            (3, pytest.approx(1 / 3), 1003.0)]
    assert set(newer.Tags()["images"]) == {"sample", "figure"} and newer.Tags()["histograms"] == ["weights"]
    assert [e.value for e in events(tmp_path / "tb" / "newer" / "pair_a").Scalars("pair")] == [1.0]
    assert [e.value for e in events(tmp_path / "tb" / "older").Scalars("loss")] == [1.5]

    view = stepwire.Api(address=collector.address).run(run.id)
    assert sorted(s.name for s in view.series()) == ["direct", "hp/accuracy", "loss", "pair/a",
                                                                 "pair/b", "weights"]
    assert view.scalars("loss")["step"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(view.scalars("loss")["value"], [1.5, 0.5, 1 / 3], rtol=1e-6)
    assert view.scalars("pair/b")["value"].tolist() == [2.0]
    assert (view.scalars("direct")["step"].tolist(), view.scalars("direct")["value"].tolist()) == ([8], [4.0])
    assert view.scalars("hp/accuracy")["step"].tolist() == [0]
    assert view.config == {"lr": 0.1}
    [hist] = view.histograms("weights")
    assert (hist.step, hist.count, hist.min, hist.max) == (5, 101, -1.0, 1.0)
    [stored] = view.media("sample", step=6)
    tb_png = newer.Images("sample")[0].encoded_image_string
    np.testing.assert_array_equal(np.asarray(stored.image()), np.asarray(Image.open(io.BytesIO(tb_png))))
    [figure] = view.media("figure", step=7)
    assert np.asarray(figure.image()).shape == (40, 80, 3)


def test_run_choice_live_run_else_own_run(data_dir: Path, tmp_path: Path) -> None:
    tensorboard.patch()  # no run: the writer's first call finds one
    live = stepwire.init(project="p", name="live")
    writer = SummaryWriter(tmp_path / "runs" / "first")
    writer.add_scalar("x", 1.0, 1)
    writer.close()
    assert not live._finished  # a run the writer found is only flushed
    live.finish()
    alone = SummaryWriter(tmp_path / "runs" / "second")  # no live run now: one is started for it
    alone.add_scalar("y", 2.0, 2)
    alone.close()  # ... and finished with it
    api = stepwire.Api(dir=data_dir)
    assert api.run(live.id).scalars("x")["value"].tolist() == [1.0]
    [started] = api.runs(project="tensorboard")
    assert (started.project, started.name, started.meta["ranks"]) == ("tensorboard", "second", {"0": "finished"})
    assert started.scalars("y")["step"].tolist() == [2]


def test_unpatch_stops_storing_and_failures_never_break_training(collector: CollectorProcess,
                                                                 tmp_path: Path) -> None:
    run = stepwire.init(project="tb", name="failures", address=collector.address)
    tensorboard.patch(run)
    writer = SummaryWriter(tmp_path / "tb")
    with pytest.warns(UserWarning, match="storing a captured SummaryWriter call"):
        writer.add_scalar("bad\x01tag", 1.0, 1)  # TensorBoard takes it, stepwire's names refuse control characters
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        writer.add_scalar("bad\x02tag", 1.0, 1)  # counted, not warned again
    writer.add_scalar("good", 1.0, 1)
    tensorboard.unpatch()
    assert SummaryWriter.add_scalar.__module__ == "torch.utils.tensorboard.writer"
    writer.add_scalar("good", 2.0, 2)  # TensorBoard only now
    writer.close()
    run.finish()
    assert unsupported_counts() == {"storing a captured SummaryWriter call": 2}
    assert [e.value for e in events(tmp_path / "tb").Scalars("good")] == [1.0, 2.0]
    assert stepwire.Api(address=collector.address).run(run.id).scalars("good")["value"].tolist() == [1.0]


def test_writer_module_imported_after_patch(data_dir: Path, tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        import stepwire
        from stepwire.compat import tensorboard
        run = stepwire.init(project="p", name="late import")
        tensorboard.patch(run)
        assert "torch" not in sys.modules  # patch imports neither torch nor tensorboard
        from torch.utils.tensorboard import SummaryWriter, summary
        writer = SummaryWriter({str(tmp_path / "late")!r})
        writer.add_scalar("loss", 0.25, 3)
        writer.close()
        run.finish()
        print(run.id)
    """)
    env = {**os.environ, "STEPWIRE_DIR": str(data_dir)}
    out = subprocess.run([sys.executable, "-W", "error", "-c", script], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    run_id = out.stdout.split()[-1]
    assert stepwire.Api(dir=data_dir).run(run_id).scalars("loss")["step"].tolist() == [3]
    assert [e.value for e in events(tmp_path / "late").Scalars("loss")] == [0.25]


@pytest.mark.usefixtures("clearml_task_state")
def test_clearml_task_captures_tensorboard_under_clearml_names(collector: CollectorProcess, tmp_path: Path) -> None:
    from stepwire.compat.clearml import Task

    task = Task.init(project_name="examples", task_name="tensorboard", address=collector.address)
    writer = SummaryWriter(tmp_path / "tb")
    writer.add_scalar("Loss", 0.5, 1)
    writer.add_scalar("train/loss", 0.25, 2)
    writer.add_scalar("a/b/c", 0.125, 2)
    writer.add_scalars("loss", {"train": 1.0, "val": 2.0}, 3)
    writer.add_histogram("weights", np.arange(8.0), 4)
    writer.add_image("sample", np.zeros((3, 4, 4)), 5)
    writer.add_image("val/input/sample", np.zeros((3, 4, 4)), 5)
    writer.add_text("notes", "hi", 6)
    writer.add_hparams({"lr": 0.1}, {"hp/accuracy": 0.9})
    graphs = task.get_reported_scalars()
    assert {t: sorted(s) for t, s in graphs.items()} == {
        "Loss": ["Loss"], "train": ["loss"], "a_b": ["c"], "loss": ["train", "val"], "hp": ["accuracy"]}
    assert graphs["a_b"]["c"] == {"x": [2], "y": [0.125]}
    assert task.get_parameters()["TB_hparams/lr"] == "0.1"
    task.close()
    assert not tensorboard.is_patched()  # closing the task stops the capture
    writer.add_scalar("after", 1.0, 9)
    writer.close()
    view = stepwire.Api(address=collector.address).run(task.id)
    assert [h.step for h in view.histograms("Histograms/weights")] == [4]
    assert sorted((m.name, m.step) for m in view.media()) == [("Images/sample", 5), ("val/input_sample", 5)]
    assert [(t.name, t.text) for t in view.texts("Text/notes")] == [("Text/notes", "hi")]
    assert "after" not in {s.name for s in view.series()}


@pytest.mark.usefixtures("clearml_task_state")
@pytest.mark.parametrize("frameworks", [False, {"tensorboard": False}, {}])
def test_clearml_auto_connect_frameworks_off(collector: CollectorProcess, frameworks: object) -> None:
    from stepwire.compat.clearml import Task

    task = Task.init(project_name="examples", task_name="no tensorboard", address=collector.address,
                     auto_connect_frameworks=frameworks)
    assert not tensorboard.is_patched()
    task.close()


def test_tensorboardx_writer_captured_too(collector: CollectorProcess, tmp_path: Path) -> None:
    tbx = pytest.importorskip("tensorboardX", reason="tensorboardX is not installed (it is captured when importable)")
    originals = dict(vars(tbx.SummaryWriter))
    run = stepwire.init(project="tb", name="tensorboardX", address=collector.address)
    tensorboard.patch(run)
    writer = tbx.SummaryWriter(str(tmp_path / "tbx"))
    writer.add_scalar("loss", 0.5, 1)
    writer.add_scalars("pair", {"a": 1.0}, 2)
    writer.add_histogram("weights", np.arange(4.0), 3)
    writer.add_image("sample", np.zeros((3, 4, 4)), 4)
    writer.close()
    tensorboard.unpatch()
    assert dict(vars(tbx.SummaryWriter)) == originals
    run.finish()
    assert [e.value for e in events(tmp_path / "tbx").Scalars("loss")] == [0.5]
    view = stepwire.Api(address=collector.address).run(run.id)
    assert sorted(s.name for s in view.series()) == ["loss", "pair/a", "weights"]
    assert [h.step for h in view.histograms("weights")] == [3]
    assert [(m.name, m.step) for m in view.media()] == [("sample", 4)]


def test_ignite_tensorboard_logger_under_patch(collector: CollectorProcess, tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    trainer = Engine(lambda engine, batch: 0.1 * engine.state.iteration)
    run = stepwire.init(project="tb", name="ignite", address=collector.address)
    tensorboard.patch(run)
    tb_logger = TensorboardLogger(log_dir=str(tmp_path / "ignite"))
    tb_logger.attach_output_handler(trainer, Events.ITERATION_COMPLETED, tag="training",
                                    output_transform=lambda loss: {"loss": loss})
    tb_logger.attach(trainer, OptimizerParamsHandler(optimizer), Events.ITERATION_STARTED)
    tb_logger.attach(trainer, WeightsHistHandler(model), Events.EPOCH_COMPLETED)
    trainer.run([0, 1, 2], max_epochs=2)
    tb_logger.close()
    run.finish()
    assert [e.step for e in events(tmp_path / "ignite").Scalars("training/loss")] == [1, 2, 3, 4, 5, 6]
    view = stepwire.Api(address=collector.address).run(run.id)
    assert sorted(s.name for s in view.series()) == ["lr/group_0", "training/loss", "weights/bias", "weights/weight"]
    assert view.scalars("training/loss")["step"].tolist() == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(view.scalars("training/loss")["value"], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], rtol=1e-6)
    assert [h.step for h in view.histograms("weights/weight")] == [1, 2]
