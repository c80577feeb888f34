"""stepwire.compat.tensorboard.SummaryWriter against a real collector: torch's SummaryWriter calls with only the
import changed, read back with ``stepwire.Api`` (names, steps, values, pixels, media bytes)."""

from __future__ import annotations

import io
import json
import socket
import warnings
import wave
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

import stepwire
import torch
from conftest import CollectorProcess, start_collector
from stepwire.compat.tensorboard import SummaryWriter, unsupported, unsupported_counts

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def read(collector: CollectorProcess, run: stepwire.Run) -> stepwire.RunView:
    return stepwire.Api(address=collector.address).run(run.id)


def pixels(view: stepwire.RunView, name: str, step: int) -> np.ndarray:
    [item] = view.media(name, step=step)
    return np.asarray(item.image())


@pytest.fixture(autouse=True)
def _fresh_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the first use of every unsupported call (they warn once per process)."""
    monkeypatch.setattr(unsupported, "_counts", Counter())


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """One collector process for the module's tests (each test has a run of its own)."""
    c = start_collector(tmp_path_factory.mktemp("collector"))
    yield c
    c.stop()


@pytest.fixture
def run(collector: CollectorProcess) -> Iterator[stepwire.Run]:
    r = stepwire.init(project="tb", name="writer", address=collector.address)
    yield r
    r.finish()


def test_own_run_named_after_log_dir_no_event_files_finished_by_close(data_dir: Path, tmp_path: Path) -> None:
    log_dir = tmp_path / "runs" / "exp1"
    writer = SummaryWriter(log_dir)
    assert writer.get_logdir() == writer.log_dir == str(log_dir)
    for i in range(3):
        writer.add_scalar("loss/train", 1.0 / (i + 1), i)
    writer.add_scalar("lr", torch.tensor(0.5))          # no global_step: step 0, as TensorBoard
    writer.add_scalar("lr", np.float32(0.25), np.int64(7))
    writer.add_scalars("losses", {"train": 1.5, "val": torch.tensor([2.5])}, 4)
    writer.close()
    writer.close()  # idempotent
    assert not log_dir.exists()  # stepwire is the store: no event files
    with pytest.warns(UserWarning, match="after close"):  # its run is finished: warned, counted, not stored
        writer.add_scalar("loss/train", 2.0, 3)
    writer.add_image("img", np.zeros((3, 2, 2)), 3)  # counted, no second warning
    assert unsupported_counts() == {"SummaryWriter.add_* after close()": 2}
    view = stepwire.Api(dir=data_dir).run(writer.run.id)
    assert (view.project, view.name) == ("tensorboard", "exp1")
    assert view.meta["ranks"] == {"0": "finished"}
    assert sorted({s.name for s in view.series()}) == ["loss/train", "losses/train", "losses/val", "lr"]
    pts = view.scalars("loss/train")
    assert pts["step"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(pts["value"], [1.0, 0.5, 1 / 3])
    assert view.scalars("lr")["step"].tolist() == [0, 7]
    assert view.scalars("lr")["value"].tolist() == [0.5, 0.25]
    assert view.scalars("losses/val")["step"].tolist() == [4]
    assert view.scalars("losses/val")["value"].tolist() == [2.5]


def test_default_log_dir_as_torch_builds_it(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with SummaryWriter(comment="_lr0.1") as writer:
        writer.add_scalar("x", 1.0, 1)
    parts = Path(writer.log_dir).parts
    assert parts[0] == "runs" and parts[1].endswith("_" + socket.gethostname() + "_lr0.1")
    assert writer.run.name == parts[1]
    assert not (tmp_path / "runs").exists()


def test_given_run_is_only_flushed(collector: CollectorProcess, run: stepwire.Run) -> None:
    with SummaryWriter("runs/ignored", run=run) as writer:
        assert writer.run is run
        writer.add_scalar("a", 1.0, 3)
    assert not run._finished
    run.log_scalar("b", 2.0, 4)  # the run goes on after the writer closed
    writer.add_scalar("a", 5.0, 5)  # TensorBoard writers may be used after close
    run.finish()
    view = read(collector, run)
    assert view.scalars("a")["step"].tolist() == [3, 5]
    assert view.scalars("b")["value"].tolist() == [2.0]


def test_histograms_exact_and_raw(collector: CollectorProcess, run: stepwire.Run) -> None:
    writer = SummaryWriter(run=run)
    values = torch.linspace(-3, 3, 1001)
    writer.add_histogram("w", values, 2, bins="auto", max_bins=10)
    writer.add_histogram("w", np.arange(5.0), None)
    limits = [1.0, 2.0, 4.0, 8.0]
    writer.add_histogram_raw("raw", min=0.5, max=7.5, num=10, sum=30.0, sum_squares=120.0, bucket_limits=limits,
                             bucket_counts=[1, 2, 3, 4], global_step=6)
    with pytest.raises(ValueError, match="bucket_limits"):
        writer.add_histogram_raw("raw", 0, 1, 1, 1, 1, [1.0, 2.0], [1], 7)
    writer.close()
    view = read(collector, run)
    first, second = sorted(view.histograms("w"), key=lambda h: h.step)
    assert (second.step, first.step) == (2, 0)
    expected = stepwire.Histogram.from_values(values.numpy(), k=first.k)
    assert (second.count, second.min, second.max) == (1001, -3.0, 3.0)
    np.testing.assert_array_equal(second.counts, expected.counts)
    assert (first.count, first.sum) == (5, 10.0)
    [raw] = view.histograms("raw")
    assert (raw.step, raw.count, raw.sum, raw.min, raw.max) == (6, 10, 30.0, 0.5, 7.5)
    # each bucket's count sits at its middle: (0.5, 1] -> 0.75, (1, 2] -> 1.5, (2, 4] -> 3, (4, 7.5] -> 5.75
    lower, upper = raw.edges()
    for middle, count in zip([0.75, 1.5, 3.0, 5.75], [1, 2, 3, 4], strict=True):
        at = (lower <= middle) & (middle < upper)
        assert raw.counts[at].tolist() == [count]


def test_images_dataformats_batches_boxes_figures(collector: CollectorProcess, run: stepwire.Run) -> None:
    writer = SummaryWriter(run=run)
    rng = np.random.default_rng(0)
    chw = rng.random((3, 6, 10), dtype=np.float32)
    writer.add_image("chw", torch.from_numpy(chw), 1)
    hwc = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    writer.add_image("hwc", hwc, 1, dataformats="HWC")
    writer.add_image("hw", np.full((4, 5), 2.0), 1, dataformats="HW")  # clipped to 255
    writer.add_images("batch", rng.random((4, 3, 5, 5)), 2)
    writer.add_image_with_boxes("boxes", np.zeros((3, 40, 40)), torch.tensor([[5, 5, 30, 30]]), 3, labels=["cat"])
    fig = plt.figure(figsize=(2, 1), dpi=50)
    plt.plot([0, 1], [1, 0])
    writer.add_figure("fig", fig, 4)
    assert not plt.fignum_exists(fig.number)  # close=True closes it
    figs = [plt.figure(figsize=(1, 1), dpi=20) for _ in range(2)]
    writer.add_figure("figs", figs, 4, close=False)
    with pytest.raises(ValueError, match="dataformats"):
        writer.add_image("bad", np.zeros((3, 4, 4)), 1, dataformats="NCHW")
    writer.close()
    assert all(plt.fignum_exists(f.number) for f in figs)
    plt.close("all")
    view = read(collector, run)
    np.testing.assert_array_equal(pixels(view, "chw", 1), (np.moveaxis(chw, 0, -1) * 255).astype(np.uint8))
    np.testing.assert_array_equal(pixels(view, "hwc", 1), hwc)
    np.testing.assert_array_equal(pixels(view, "hw", 1), np.full((4, 5), 255, np.uint8))
    assert pixels(view, "batch", 2).shape[:2] == (12, 12)  # a 2x2 grid of 5x5 tiles, 2 pixels apart
    boxed = pixels(view, "boxes", 3)
    assert boxed.shape == (40, 40, 3)
    assert boxed[20, 5].tolist() == [255, 0, 0] and boxed[20, 20].tolist() == [0, 0, 0]
    assert pixels(view, "fig", 4).shape == (50, 100, 3)
    assert pixels(view, "figs", 4).shape == (20, 42, 3)


def test_audio_video_text_tensor(collector: CollectorProcess, run: stepwire.Run) -> None:
    writer = SummaryWriter(run=run)
    samples = np.sin(np.linspace(0, 20, 800))
    writer.add_audio("sound", torch.from_numpy(samples).reshape(1, -1), 1, sample_rate=8000)
    video = torch.rand(2, 3, 3, 8, 8)
    writer.add_video("clip", video, 2, fps=5)
    writer.add_video("clip_nchwt", video.permute(0, 2, 3, 4, 1), 2, fps=5, dataformats="NCHWT")  # tensorboardX's
    writer.add_text("notes", "**hello**", 3)
    writer.add_tensor("t", torch.arange(6).reshape(2, 3), 4)
    writer.close()
    view = read(collector, run)
    [sound] = view.media("sound")
    assert (sound.kind, sound.step) == ("audio", 1)
    with wave.open(io.BytesIO(sound.bytes())) as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (8000, 1, 800)
        stored = np.frombuffer(w.readframes(800), "<i2")
    np.testing.assert_array_equal(stored, (samples * 32767).astype("<i2"))
    [clip] = view.media("clip")
    assert (clip.kind, clip.step) == ("video", 2)
    gif = Image.open(io.BytesIO(clip.bytes()))
    assert gif.format == "GIF" and gif.n_frames == 3 and gif.size == (18, 8)
    assert view.media("clip_nchwt")[0].bytes() == clip.bytes()
    assert [(t.name, t.step, t.text) for t in view.texts("notes")] == [("notes", 3, "**hello**")]
    [tensor] = view.texts("t")
    assert json.loads(tensor.text) == {"shape": [2, 3], "dtype": "int64", "values": [[0, 1, 2], [3, 4, 5]]}


def test_hparams_pr_curve_mesh_embedding_custom_scalars(collector: CollectorProcess, run: stepwire.Run) -> None:
    writer = SummaryWriter(run=run)
    writer.add_hparams({"lr": 0.1, "optimizer": "sgd"}, {"hparam/accuracy": 0.75}, global_step=3)
    with pytest.raises(TypeError):
        writer.add_hparams([("lr", 0.1)], {})  # type: ignore[arg-type]
    labels = np.array([1, 0, 1, 1, 0])
    predictions = np.array([0.9, 0.8, 0.6, 0.2, 0.1])
    writer.add_pr_curve("pr", labels, predictions, 5, num_thresholds=3)
    writer.add_mesh("cloud", torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]]),
                    colors=torch.tensor([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]]), global_step=6)
    writer.add_mesh("tetra", torch.rand(1, 4, 3), faces=torch.tensor([[[0, 1, 2], [1, 2, 3]]]), global_step=6)
    writer.add_embedding(torch.eye(3), metadata=["a", "b", "c"], tag="words", global_step=7)
    writer.add_custom_scalars_multilinechart(["loss/train", "loss/val"], category="c", title="losses")
    writer.close()
    view = read(collector, run)
    assert view.config == {"lr": 0.1, "optimizer": "sgd"}
    assert view.scalars("hparam/accuracy")["step"].tolist() == [3]
    pr = view.table("pr", step=5)
    # thresholds 0, 0.5, 1: predictions at or above each
    assert pr["threshold"].tolist() == [0.0, 0.5, 1.0]
    assert pr["true_positives"].tolist() == [3, 2, 0] and pr["false_positives"].tolist() == [2, 1, 0]
    np.testing.assert_allclose(pr["precision"], [0.6, 2 / 3, 0.0])
    np.testing.assert_allclose(pr["recall"], [1.0, 2 / 3, 0.0])
    [cloud] = view.plots("cloud", step=6)
    trace = cloud.figure()["data"][0]
    assert trace["type"] == "scatter3d" and list(trace["x"]) == [0.0, 1.0, 0.0]
    assert list(trace["marker"]["color"]) == ["rgb(255,0,0)", "rgb(0,255,0)", "rgb(0,0,255)"]
    [tetra] = view.plots("tetra")
    assert tetra.figure()["data"][0]["type"] == "mesh3d" and list(tetra.figure()["data"][0]["k"]) == [2, 3]
    emb = view.table("embedding/words", step=7)
    assert list(emb.columns) == ["dim_0", "dim_1", "dim_2", "label"] and emb["label"].tolist() == ["a", "b", "c"]
    assert view.meta["tensorboard_custom_scalars"] == {"c": {"losses": ["Multiline", ["loss/train", "loss/val"]]}}


def test_unsupported_calls_warn_once_and_never_raise(collector: CollectorProcess, run: stepwire.Run) -> None:
    writer = SummaryWriter(run=run)
    with pytest.warns(UserWarning, match="add_graph is not supported"):
        writer.add_graph(torch.nn.Linear(2, 2), torch.zeros(1, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        writer.add_graph(torch.nn.Linear(2, 2))  # the second time: counted, no warning
    with pytest.warns(UserWarning, match="walltime"):
        writer.add_scalar("x", 1.0, 1, walltime=123.0)  # stored all the same, at the call's wall time
    with pytest.warns(UserWarning, match="purge_step"):
        SummaryWriter(run=run, purge_step=3)
    assert unsupported_counts() == {"SummaryWriter.add_graph": 2, "walltime=": 1, "SummaryWriter(purge_step=...)": 1}
    writer.close()
    assert read(collector, run).scalars("x")["value"].tolist() == [1.0]
