"""W&B media types, artifacts, ``save`` and ``run.dir`` (stepwire.compat.wandb) against the embedded collector,
read back exactly through stepwire.Api."""

from __future__ import annotations

import io
import os
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PIL

import stepwire
import stepwire.compat.wandb as wandb
import torch

pytestmark = pytest.mark.usefixtures("wandb_state")


def pixels(item: stepwire.MediaItem) -> np.ndarray:
    return np.asarray(item.image())


def test_histograms_exact_and_prebinned() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=1000).astype(np.float32)
    counts, edges = np.histogram(rng.normal(size=500), bins=20)
    run = wandb.init(project="wbm")
    wh = wandb.Histogram(values, num_bins=32)
    assert len(wh.histogram) == 32 and len(wh.bins) == 33 and sum(wh.histogram) == 1000
    wandb.log({"weights": wh, "pre": wandb.Histogram(np_histogram=(counts, edges))})
    density, dedges = np.histogram(values, bins=4, density=True)
    changed = np.arange(4.0)
    early = wandb.Histogram(changed)
    changed[:] = 100.0  # W&B bins at construction: the values then are those stored
    wandb.log({"density": wandb.Histogram(np_histogram=(density, dedges)), "torch": torch.arange(6.0),
               "early": early})
    with pytest.raises(ValueError, match="maximum length"):
        wandb.Histogram(values, num_bins=513)
    run_id = run.id
    wandb.finish()
    view = stepwire.Api().run(run_id)
    [h] = view.histograms("weights")
    exact = stepwire.Histogram.from_values(values)
    assert h.step == 0 and h.count == 1000 and np.array_equal(h.indices, exact.indices)
    assert np.array_equal(h.counts, exact.counts) and (h.min, h.max) == (exact.min, exact.max)
    # already binned: each bin's count in the bucket of its centre
    [p] = view.histograms("pre")
    centres = (edges[:-1] + edges[1:]) / 2
    same = stepwire.Histogram.from_values(np.repeat(centres, counts))
    assert p.count == 500 and np.array_equal(p.indices, same.indices) and np.array_equal(p.counts, same.counts)
    assert p.sum == pytest.approx(float((centres * counts).sum()))
    nonzero = np.flatnonzero(counts)
    assert (p.min, p.max) == (edges[nonzero[0]], edges[nonzero[-1] + 1])
    # densities are no counts: a table of the bins
    table = view.table("density")
    assert table["bin_start"].tolist() == dedges[:-1].tolist() and table["count"].tolist() == density.tolist()
    assert [(t.step, t.count) for t in view.histograms("torch")] == [(1, 6)]
    assert [(t.step, t.min, t.max) for t in view.histograms("early")] == [(1, 0.0, 3.0)]


def test_images_tables_audio_html(tmp_path: Path) -> None:
    rgb = np.linspace(0, 1, 4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
    chw = torch.linspace(-1, 1, 2 * 3).reshape(1, 2, 3)          # a torch image in [-1, 1], CHW
    png = tmp_path / "in.png"
    PIL.fromarray(np.full((3, 3), 7, np.uint8)).save(png)
    run = wandb.init(project="wbm")
    wandb.log({"img": wandb.Image(rgb, caption="rgb"), "loss": 0.5})
    wandb.log({"examples": [wandb.Image(chw, caption="Pred: 1"), wandb.Image(str(png), caption="file")]})
    table = wandb.Table(columns=["id", "pred", "ok"])
    table.add_data(1, "cat", True)
    table.add_data(2, "dog", False)
    table.add_column("score", [0.25, 0.75])
    assert table.get_column("pred") == ["cat", "dog"]
    with pytest.raises(ValueError, match="expects 4 columns"):
        table.add_data(3, "x")
    samples = np.sin(np.arange(400) / 7.0).astype(np.float32) * 0.5
    wandb.log({"preds": table, "audio": wandb.Audio(samples, sample_rate=8000, caption="tone"),
               "page": wandb.Html("<p>hello</p>")})
    with pytest.warns(wandb.UnsupportedWarning, match="Object3D"):
        wandb.log({"cloud": wandb.Object3D(np.zeros((4, 3)))})
    with pytest.warns(wandb.UnsupportedWarning, match="Video of frames"):
        wandb.Video(np.zeros((2, 3, 8, 8), np.uint8))
    run_id = run.id
    wandb.finish()
    view = stepwire.Api().run(run_id)
    [img] = view.media("img")
    assert (img.step, img.caption, img.kind) == (0, "rgb", "image")
    assert np.array_equal(pixels(img), (rgb * 255).astype(np.uint8))  # W&B: [0, 1] scaled by 255, truncated
    first, second = view.media("examples/0")[0], view.media("examples/1")[0]
    assert (first.step, first.caption, second.caption) == (1, "Pred: 1", "file")
    assert np.array_equal(pixels(first), (255 * 0.5 * (chw[0].numpy() + 1)).astype(np.uint8))  # [-1, 1] mapped
    assert second.bytes() == png.read_bytes()
    got = view.table("preds")
    assert got.to_dict("list") == {"id": [1, 2], "pred": ["cat", "dog"], "ok": [True, False], "score": [0.25, 0.75]}
    [audio] = view.media("audio")
    assert audio.step == 2 and audio.caption == "tone" and audio.kind == "audio"
    with wave.open(io.BytesIO(audio.bytes())) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        frames = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert np.array_equal(frames, (samples * 32767).astype("<i2"))
    [page] = view.media("page")
    assert page.kind == "html" and page.bytes() == b"<p>hello</p>"
    assert view.media("cloud") == [] and {s.name for s in view.series()} == {"loss"}


def test_artifacts_save_and_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "weights.bin").write_bytes(b"\x00\x01")
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "a.csv").write_text("x\n1\n")
    (tmp_path / "data" / "sub" / "b.csv").write_text("y\n2\n")
    run = wandb.init(project="wbm")
    assert Path(run.dir).is_dir() and Path(run.dir).name == "files" and run.id in Path(run.dir).parent.name
    art = wandb.Artifact("mnist-model", type="model", description="a net", metadata={"acc": 0.9})
    art.add_file("weights.bin")
    art.add_dir("data", name="dataset")
    with art.new_file("notes.txt") as f:
        f.write("trained")
    with pytest.warns(wandb.UnsupportedWarning, match="add_reference"):
        art.add_reference("s3://bucket/key")
    with pytest.raises(ValueError, match="Invalid name"):
        wandb.Artifact("bad/name", type="x")
    wandb.log({"loss": 1.0})
    run.log_artifact(art, aliases=["best"])
    wandb.log_artifact("weights.bin", type="model")      # a path: W&B names it run-{id}-{file name}
    (tmp_path / "src" / ".hidden").mkdir(parents=True)
    (tmp_path / "src" / "train.py").write_text("print(1)\n")
    (tmp_path / "src" / "README.md").write_text("no\n")
    (tmp_path / "src" / ".hidden" / "x.py").write_text("no\n")
    code = run.log_code("src")
    assert code is not None and code.files() == ["train.py"] and code.type == "code"
    run.log_model("weights.bin", name="net")
    (tmp_path / "ckpt" / "now.pt").write_bytes(b"now")
    assert wandb.save("ckpt/now.pt", policy="now") == ["now.pt"]
    assert wandb.save("ckpt/*.pt", base_path=".") == ["ckpt/now.pt"]
    (tmp_path / "ckpt" / "later.pt").write_bytes(b"later")  # matches the live glob by the end
    (Path(run.dir) / "checkpoints").mkdir()
    (Path(run.dir) / "checkpoints" / "epoch_1.pt").write_bytes(b"e1")
    (Path(run.dir) / "config.yaml").write_text("lr: 0.1\n")
    run_id = run.id
    wandb.finish()
    view = stepwire.Api().run(run_id)
    stored = {a.name: a.step for a in view.artifacts()}
    assert stored == {"mnist-model/weights.bin": 1, "mnist-model/dataset/a.csv": 1, "mnist-model/dataset/sub/b.csv": 1,
                      "mnist-model/notes.txt": 1, f"run-{run_id}-weights.bin/weights.bin": 1, "now.pt": 1,
                      "ckpt/now.pt": 1, "ckpt/later.pt": 1, "checkpoints/epoch_1.pt": 1, "config.yaml": 1,
                      f"source-{run_id}/train.py": 1, "net/weights.bin": 1}
    out = tmp_path / "out"
    out.mkdir()
    assert view.download_artifact("mnist-model/notes.txt", out).read_text() == "trained"
    assert view.download_artifact("checkpoints/epoch_1.pt", out).read_bytes() == b"e1"
    assert view.download_artifact("ckpt/later.pt", out).read_bytes() == b"later"
    assert view.meta["artifacts"]["mnist-model"] == {
        "type": "model", "aliases": ["best", "latest"], "tags": [], "description": "a net", "metadata": {"acc": 0.9},
        "files": ["dataset/a.csv", "dataset/sub/b.csv", "notes.txt", "weights.bin"]}
    assert view.meta["artifacts"][f"run-{run_id}-weights.bin"]["type"] == "model"
    assert view.meta["artifacts"]["net"]["type"] == "model" and view.meta["artifacts"][f"source-{run_id}"] == {
        "type": "code", "aliases": ["latest"], "tags": [], "description": None, "metadata": {}, "files": ["train.py"]}
    assert not os.path.exists(art._tmp or "") and art._tmp is None


def test_plot_presets_as_plotly_figures_and_tables() -> None:
    run = wandb.init(project="wbm")
    table = wandb.Table(data=[[1, 0.5], [2, 0.25], [3, 0.125]], columns=["epoch", "loss"])
    wandb.log({"curve": wandb.plot.line(table, "epoch", "loss", title="Loss")})
    wandb.log({"series": wandb.plot.line_series(xs=[0, 1, 2], ys=[[10, 20, 30], [1, 2, 3]], keys=["a", "b"],
                                                title="Two", xname="step"),
               "cm": wandb.plot.confusion_matrix(y_true=[0, 1, 1, 2], preds=[0, 1, 2, 2],
                                                 class_names=["cat", "dog", "fox"])})
    with pytest.warns(wandb.UnsupportedWarning, match="pr_curve"):
        wandb.log({"pr": wandb.plot.pr_curve([0, 1], [[0.9, 0.1], [0.2, 0.8]])})
    run_id = run.id
    wandb.finish()
    view = stepwire.Api().run(run_id)
    [curve] = view.plots("curve")
    assert curve.step == 0 and curve.figure()["data"][0]["x"] == [1, 2, 3]
    assert curve.figure()["data"][0]["y"] == [0.5, 0.25, 0.125] and curve.figure()["layout"]["title"]["text"] == "Loss"
    assert view.table("curve_table").to_dict("list") == {"epoch": [1, 2, 3], "loss": [0.5, 0.25, 0.125]}
    [series] = view.plots("series")
    assert [(t["name"], t["y"]) for t in series.figure()["data"]] == [("a", [10, 20, 30]), ("b", [1, 2, 3])]
    assert view.table("series_table").to_dict("list") == {"step": [0, 1, 2, 0, 1, 2], "lineKey": list("aaabbb"),
                                                          "lineVal": [10, 20, 30, 1, 2, 3]}
    [cm] = view.plots("cm")
    assert cm.step == 1 and cm.figure()["data"][0]["z"] == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    cells = view.table("cm_table")
    assert cells["nPredictions"].tolist() == [1, 0, 0, 0, 1, 1, 0, 0, 1] and cells["Actual"].tolist()[:3] == ["cat"] * 3
    assert view.media("pr") == [] and view.media("pr_table") == []
