"""Media records end to end: images, audio, video, HTML, Plotly figures and tables logged through the public API
against a real collector, read back exactly (through the Query service and from the store file), stored once
per content, and delivered from an offline run's spool by ``stepwire sync``."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PIL

import stepwire
from conftest import CollectorProcess
from stepwire import media_capture, media_images, media_thread
from stepwire.media_images import GRID_PAD, grid_shape, image_pixels, make_grid, to_hwc, to_uint8


def wav_bytes(n: int = 800, rate: int = 8000) -> bytes:
    """A mono 16-bit WAV of ``n`` samples."""
    samples = (np.sin(np.arange(n) / 5.0) * 3000).astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", len(samples))
    return header + samples


def gif_bytes() -> bytes:
    frames = [PIL.new("RGB", (8, 6), (i * 60, 0, 0)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    return buf.getvalue()


MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00\x00\x00\x08free"


def pixels(item: stepwire.MediaItem) -> np.ndarray:
    return np.asarray(item.image())


def test_images_of_every_kind_round_trip(collector: CollectorProcess, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    chw_float = rng.random((3, 9, 11)).astype(np.float32)
    gray = rng.random((5, 7))
    rgba = rng.integers(0, 256, (4, 6, 4), dtype=np.uint8)
    batch = rng.integers(0, 256, (5, 3, 8, 10), dtype=np.uint8)  # NCHW
    pil = PIL.fromarray(hwc[:, :, 0], mode="L")
    png_path = tmp_path / "given.png"
    PIL.fromarray(rgba, mode="RGBA").save(png_path)
    jpeg = io.BytesIO()
    PIL.fromarray(hwc).save(jpeg, format="JPEG")
    with stepwire.init(project="media", address=collector.address, quiet=True) as run:
        run.log_image("img/hwc", hwc, step=1, caption="a caption")
        hwc[:] = 0  # copied at the call: later changes do not reach what is logged
        run.log_image("img/chw", chw_float, step=1)
        run.log_image("img/gray", gray, step=2)
        run.log_image("img/pil", pil, step=2)
        run.log_image("img/path", png_path, step=3)
        run.log_image("img/jpeg", jpeg.getvalue(), step=3)
        run.log_image("img/grid", batch, step=4)
        run.log_image("img/each", batch, step=4, grid=False)
        run.log({"loss": 0.5, "img/in_log": stepwire.Image(rgba, caption="from log")}, step=5)
        run.flush()
        stats = run.stats()
        run_id = run.id
    assert stats["media_logged"] == 9 and stats["media_sent"] == 13 and stats["media_errors"] == 0
    expected_hwc = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    view = stepwire.Api(address=collector.address).run(run_id)
    items = {(m.name, m.step): m for m in view.media()}
    assert sorted(items) == sorted([("img/hwc", 1), ("img/chw", 1), ("img/gray", 2), ("img/pil", 2), ("img/path", 3),
                                    ("img/jpeg", 3), ("img/grid", 4), *((f"img/each/{i}", 4) for i in range(5)),
                                    ("img/in_log", 5)])
    hw = items[("img/hwc", 1)]
    assert (hw.kind, hw.mime, hw.caption, hw.width, hw.height, hw.rank) == ("image", "image/png", "a caption", 23, 17,
                                                                            0)
    assert np.array_equal(pixels(hw), expected_hwc)
    assert np.array_equal(pixels(items[("img/chw", 1)]), np.rint(np.moveaxis(chw_float, 0, -1) * 255).astype(np.uint8))
    assert np.array_equal(pixels(items[("img/gray", 2)]), np.rint(gray * 255).astype(np.uint8))
    assert np.array_equal(pixels(items[("img/pil", 2)]), expected_hwc[:, :, 0])
    assert items[("img/path", 3)].bytes() == png_path.read_bytes()  # stored as given
    assert items[("img/jpeg", 3)].mime == "image/jpeg" and items[("img/jpeg", 3)].bytes() == jpeg.getvalue()
    nhwc = np.moveaxis(batch, 1, -1)
    grid = pixels(items[("img/grid", 4)])
    assert grid.shape == (2 * 8 + GRID_PAD, 3 * 10 + 2 * GRID_PAD, 3)
    assert np.array_equal(grid, make_grid(nhwc))
    assert np.array_equal(grid[8 + GRID_PAD:, 10 + GRID_PAD:20 + GRID_PAD], nhwc[4])
    for i in range(5):
        assert np.array_equal(pixels(items[(f"img/each/{i}", 4)]), nhwc[i])
    in_log = items[("img/in_log", 5)]
    assert in_log.caption == "from log" and np.array_equal(pixels(in_log), rgba)
    assert view.scalars("loss")["step"].tolist() == [5]
    assert [m.name for m in view.media(step=1)] == ["img/chw", "img/hwc"]
    assert [m.step for m in view.media("img/gray")] == [2]


def test_audio_video_html_plots_and_tables(collector: CollectorProcess, tmp_path: Path) -> None:
    go = pytest.importorskip("plotly.graph_objects")
    wav = wav_bytes()
    wav_path = tmp_path / "sound.wav"
    wav_path.write_bytes(wav)
    gif = gif_bytes()
    html_path = tmp_path / "page.html"
    html_path.write_text("<h1>report</h1>", encoding="utf-8")
    figure = {"data": [{"type": "scatter", "x": np.arange(3), "y": np.array([1.5, 2.5, -1.0])}],
              "layout": {"title": {"text": "t"}}}
    with stepwire.init(project="media", address=collector.address, quiet=True) as run:
        run.log_media("audio/sine", wav_path, step=0, caption="sine")
        run.log_media("video/gif", gif, step=0, kind="video")
        run.log_media("video/mp4", MP4, step=0)
        run.log_media("report", html_path, step=1)
        run.log_media("inline", "<p>hello</p>", step=1)
        run.log_plot("plots/curve", figure, step=2)
        run.log_plot("plots/json", json.dumps({"data": []}), step=3)
        run.log_plot("plots/go", go.Figure(go.Bar(x=[1, 2], y=[3.5, 4.5])), step=3)
        run.log_table("tables/rows", [[1, "a", 0.5], [2, None, 1.5]], step=4, columns=["n", "s", "x"])
        run.log_table("tables/cols", {"a": np.arange(4), "b": ["w", "x", "y", "z"], "ok": [True, False, True, True]},
                      step=4)
        csv = tmp_path / "t.csv"
        csv.write_text("k,v\n1,2.5\n3,4.5\n")
        run.log_table("tables/csv", csv, step=5)
        run.flush()
        assert run.stats()["media_errors"] == 0, run.stats()["media_error"]
        run_id = run.id
    for where in ("query service", "store file"):
        if where == "store file":
            collector.stop()  # the store file, read without a collector, says the same
        api = stepwire.Api(address=collector.address) if where == "query service" else stepwire.Api(dir=collector.dir)
        view = api.run(run_id)
        audio = view.media("audio/sine")[0]
        assert (audio.kind, audio.mime, audio.caption, audio.bytes()) == ("audio", "audio/wav", "sine", wav)
        g = view.media("video/gif")[0]
        assert (g.kind, g.mime, g.bytes()) == ("video", "image/gif", gif)
        mp4 = view.media("video/mp4")[0]
        assert (mp4.kind, mp4.mime, mp4.bytes()) == ("video", "video/mp4", MP4)
        assert view.media("report")[0].bytes() == b"<h1>report</h1>" and view.media("report")[0].mime == "text/html"
        assert view.media("inline")[0].bytes() == b"<p>hello</p>"
        plots = view.plots()
        assert [p.name for p in plots] == ["plots/curve", "plots/go", "plots/json"]
        fig = plots[0].figure()
        assert fig["data"][0]["y"] == [1.5, 2.5, -1.0] and fig["layout"]["title"]["text"] == "t"
        bar = plots[1].figure()["data"][0]
        # plotly 6+ writes arrays as typed base64 ("bdata"), which Plotly.js reads as they are
        assert bar["type"] == "bar" and bar["y"] in ([3.5, 4.5], {"dtype": "f8", "bdata": _b64(3.5, 4.5)})
        assert plots[2].figure() == {"data": []}
        rows = view.table("tables/rows")
        assert _cells(rows) == {"n": [1, 2], "s": ["a", None], "x": [0.5, 1.5]}
        assert _cells(view.table("tables/cols")) == {"a": [0, 1, 2, 3], "b": ["w", "x", "y", "z"],
                                                     "ok": [True, False, True, True]}
        assert _cells(view.table("tables/csv")) == {"k": [1, 3], "v": [2.5, 4.5]}
        assert [t.name for t in view.tables()] == ["tables/cols", "tables/csv", "tables/rows"]


def _b64(*values: float) -> str:
    import base64

    return base64.b64encode(np.array(values, np.float64).tobytes()).decode()


def _cells(table: Any) -> dict[str, list[Any]]:
    if hasattr(table, "to_dict"):
        return {c: [None if v != v else v for v in table[c].tolist()] for c in table.columns}
    return {c: list(v.tolist()) for c, v in table.items()}


def test_the_same_content_is_stored_once(collector: CollectorProcess) -> None:
    image = np.full((32, 32, 3), 7, np.uint8)
    with stepwire.init(project="media", address=collector.address, quiet=True) as run:
        for step in range(3):
            run.log_image("same", image, step=step)
        run.log_image("other/name", image, step=0)
        run_id = run.id
    view = stepwire.Api(address=collector.address).run(run_id)
    entries = view.media()
    assert len(entries) == 4 and len({m.sha256 for m in entries}) == 1
    blobs = [p for p in (collector.dir / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 1 and blobs[0].name == entries[0].sha256


def test_offline_spool_delivers_media_through_sync(collector: CollectorProcess, tmp_path: Path) -> None:
    data = tmp_path / "data"
    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    run = stepwire.init(project="media", mode="offline", dir=data, quiet=True)
    run.log_image("offline/img", image, step=3, caption="c")
    run.log_table("offline/table", {"x": [1.0, 2.0]}, step=3)
    run.log_media("offline/audio", wav_bytes(), step=4)
    run.log_scalar("loss", 1.0, step=3)
    run.finish()
    out = subprocess.run([sys.executable, "-m", "stepwire", "sync", str(data), "--address", collector.address,
                          "--quiet"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    view = stepwire.Api(address=collector.address).run(run.id)
    img = view.media("offline/img")[0]
    assert img.caption == "c" and img.step == 3 and np.array_equal(pixels(img), image)
    assert _cells(view.table("offline/table")) == {"x": [1.0, 2.0]}
    assert view.media("offline/audio")[0].bytes() == wav_bytes()


def test_calls_refuse_bad_input_with_clear_errors(collector: CollectorProcess, tmp_path: Path) -> None:
    with stepwire.init(project="media", address=collector.address, quiet=True) as run:
        with pytest.raises(ValueError, match="HW, HWC or CHW"):
            run.log_image("bad", np.zeros((5, 5, 5)))
        with pytest.raises(ValueError, match="HW, HWC or CHW"):
            run.log_image("bad", np.zeros(5))
        with pytest.raises(TypeError, match="dtype"):
            run.log_image("bad", np.array([["a", "b"], ["c", "d"]]))
        with pytest.raises(ValueError, match="pixels"):
            run.log_image("huge", np.zeros((1 << 14, 1 << 13), np.uint8))
        with pytest.raises(ValueError, match="not a known type"):
            run.log_media("what", b"just some bytes")
        with pytest.raises(ValueError, match="which a audio cannot be"):
            run.log_media("what", gif_bytes(), kind="audio")
        with pytest.raises(FileNotFoundError):
            run.log_media("gone", tmp_path / "missing.wav")
        with pytest.raises(ValueError, match='"data"'):
            run.log_plot("fig", {"layout": {}})
        with pytest.raises(ValueError, match="differ in length"):
            run.log_table("t", {"a": [1, 2], "b": [1]})
        with pytest.raises(ValueError, match="row 1"):
            run.log_table("t", [[1, 2], [3]], columns=["a", "b"])
        with pytest.raises(ValueError, match="caption"):
            run.log_image("cap", np.zeros((2, 2)), caption="x" * 5000)
        with pytest.raises(ValueError, match="control"):
            run.log_image("bad\x00name", np.zeros((2, 2)))
        run.flush()
        assert run.stats()["media_logged"] == 0


def test_counted_errors_and_limits(collector: CollectorProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media_thread, "MAX_MEDIA_ITEMS", 2)
    with stepwire.init(project="media", address=collector.address, quiet=True) as run:
        run.log_media("broken", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, step=0)  # claims PNG, does not decode
        run.log_image("ok", np.zeros((2, 2)), step=0)
        with pytest.raises(ValueError, match="at most 2 media records"):
            run.log_image("third", np.zeros((2, 2)), step=0)
        run.flush()
        stats = run.stats()
        run_id = run.id
    assert stats["media_errors"] == 1 and "does not decode" in stats["media_error"]
    assert stats["media_sent"] == 1
    assert [m.name for m in stepwire.Api(address=collector.address).run(run_id).media()] == ["ok"]


def test_conversion_rules() -> None:
    assert to_uint8(np.array([-0.5, 0.0, 0.5, 1.0, 2.0, np.nan])).tolist() == [0, 0, 128, 255, 255, 0]
    assert to_uint8(np.array([-3, 0, 17, 255, 300])).tolist() == [0, 0, 17, 255, 255]
    assert to_uint8(np.array([True, False])).tolist() == [255, 0]
    assert to_hwc(np.zeros((3, 5, 7))).shape == (5, 7, 3)
    assert to_hwc(np.zeros((5, 7, 4))).shape == (5, 7, 4)
    assert image_pixels(np.zeros((1, 5, 7))).shape == (5, 7)
    assert grid_shape(5) == (2, 3) and grid_shape(1) == (1, 1) and grid_shape(9) == (3, 3)


def test_export_writes_images_to_tensorboard(collector: CollectorProcess, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    from stepwire.export import to_tensorboard

    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    gray = np.full((4, 5), 0.25)
    with stepwire.init(project="media", address=collector.address, quiet=True) as run:
        run.log_image("samples/rgb", rgb, step=1)
        run.log_image("samples/rgb", rgb[::-1].copy(), step=2)
        run.log_image("samples/gray", gray, step=1)
        run.log_scalar("loss", 1.0, step=1)
        run_id = run.id
    root = to_tensorboard(stepwire.Api(address=collector.address).run(run_id), tmp_path / "tb")
    acc = EventAccumulator(str(root), size_guidance={IMAGES: 0})
    acc.Reload()
    assert sorted(acc.Tags()["images"]) == ["samples/gray", "samples/rgb"]
    events = acc.Images("samples/rgb")
    assert [(e.step, e.width, e.height) for e in events] == [(1, 3, 2), (2, 3, 2)]
    assert np.array_equal(np.asarray(PIL.open(io.BytesIO(events[0].encoded_image_string))), rgb)
    assert np.array_equal(np.asarray(PIL.open(io.BytesIO(events[1].encoded_image_string))), rgb[::-1])
    g = acc.Images("samples/gray")[0]
    assert np.array_equal(np.asarray(PIL.open(io.BytesIO(g.encoded_image_string))), np.full((4, 5), 64, np.uint8))


def test_a_store_written_before_media_records_reads_and_gains_the_table(tmp_path: Path) -> None:
    import duckdb

    from stepwire.query_client import LocalReader
    from stepwire.store.base import MediaEntry, RunRecord
    from stepwire.store.duckdb_store import DuckDBStore

    store = DuckDBStore(tmp_path)
    store.open_run(RunRecord(id="old", project="p", name="n", tags=[], config={}, created=1.0, status="running",
                             finished=0.0, meta={}))
    store.close()
    with duckdb.connect(str(tmp_path / "stepwire.duckdb")) as con:
        con.execute("DROP TABLE media")  # as a store written before media records existed
    reader = LocalReader(tmp_path)
    assert reader.media("old") == []  # read-only: nothing created, nothing refused
    with pytest.raises(KeyError):
        reader.read_media("old", "0" * 64)
    store = DuckDBStore(tmp_path)  # a collector opening it adds the table; the run is still there
    content = io.BytesIO()
    PIL.new("L", (3, 2), 9).save(content, format="PNG")
    entry = store.put_media("old", MediaEntry("img", 0, 0, 1.0, "image", "image/png", "", 0, 0, 0, ""),
                            [content.getvalue()])
    assert (entry.width, entry.height, entry.size) == (3, 2, len(content.getvalue()))
    assert [r.id for r in store.runs()] == ["old"]
    store.close()
    assert [m.name for m in LocalReader(tmp_path).media("old")] == ["img"]
    assert b"".join(LocalReader(tmp_path).read_media("old", entry.sha256)) == content.getvalue()


def test_a_dataframe_round_trips_and_reads_as_columns_without_pandas(collector: CollectorProcess,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"epoch": [1, 2, 3], "acc": [0.5, 0.75, 0.875], "label": ["cat", "dog", None]})
    with stepwire.init(project="media", address=collector.address, quiet=True) as run:
        run.log_table("eval/table", df, step=7)
        run_id = run.id
    view = stepwire.Api(address=collector.address).run(run_id)
    back = view.table("eval/table")
    assert isinstance(back, pd.DataFrame) and list(back.columns) == ["epoch", "acc", "label"]
    assert _cells(back) == {"epoch": [1, 2, 3], "acc": [0.5, 0.75, 0.875], "label": ["cat", "dog", None]}
    monkeypatch.setitem(sys.modules, "pandas", None)  # as where pandas is not installed
    columns = view.table("eval/table")
    assert isinstance(columns, dict) and _cells(columns) == _cells(back)
    assert columns["epoch"].dtype == np.int64 and columns["acc"].dtype == np.float64


@pytest.mark.parametrize("policy", ["drop", "block"])
def test_a_full_media_queue_drops_and_counts(policy: str, collector: CollectorProcess,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    release = threading.Event()
    encode = media_images.encode_png

    def slow_encode(pixels: np.ndarray) -> bytes:
        release.wait(30)
        return encode(pixels)

    monkeypatch.setattr(media_capture, "encode_png", slow_encode)
    monkeypatch.setattr(media_thread, "QUEUE_BYTES", 100)
    with stepwire.init(project="media", address=collector.address, quiet=True, policy=policy,
                       block_timeout=0.2) as run:
        run.log_image("a", np.zeros((8, 8), np.uint8), step=0)  # held while its encoding waits
        run.log_image("b", np.zeros((8, 8), np.uint8), step=0)  # 64 + 64 bytes > 100: no room
        stats = run.stats()
        release.set()
        run.flush()
        after = run.stats()
        run_id = run.id
    assert stats["media_dropped"] == 1 and stats["media_held_bytes"] == 64
    assert (after["media_logged"], after["media_sent"], after["media_dropped"]) == (1, 1, 1)
    assert [m.name for m in stepwire.Api(address=collector.address).run(run_id).media()] == ["a"]


def test_a_blob_shared_by_an_artifact_and_a_media_record_outlives_either(tmp_path: Path) -> None:
    from stepwire.store.base import MediaEntry, RunRecord
    from stepwire.store.duckdb_store import DuckDBStore

    content = io.BytesIO()
    PIL.new("RGB", (2, 2), (1, 2, 3)).save(content, format="PNG")
    png = content.getvalue()
    store = DuckDBStore(tmp_path)
    store.open_run(RunRecord(id="r", project="p", name="n", tags=[], config={}, created=1.0, status="running",
                             finished=0.0, meta={}))
    art = store.put_artifact("r", "sample.png", 0, 0, 1.0, [png])
    media_entry = store.put_media("r", MediaEntry("img", 0, 0, 1.0, "image", "image/png", "", 0, 0, 0, ""), [png])
    assert art.sha256 == media_entry.sha256
    blob = tmp_path / "blobs" / art.sha256[:2] / art.sha256
    store.delete_artifact("r", "sample.png")
    assert blob.read_bytes() == png and b"".join(store.read_media("r", art.sha256)) == png
    other = io.BytesIO()
    PIL.new("RGB", (2, 2), (9, 9, 9)).save(other, format="PNG")
    store.put_media("r", MediaEntry("img", 0, 0, 2.0, "image", "image/png", "", 0, 0, 0, ""), [other.getvalue()])
    assert not blob.exists()  # replaced at the same (rank, name, step): the old content is referenced no more
    assert [m.sha256 for m in store.media("r")] != [art.sha256]
    store.close()


def test_media_calls_on_a_rank_that_does_not_log_are_cheap_no_ops(tmp_path: Path) -> None:
    run = stepwire.init(project="media", dir=tmp_path, rank=1, world_size=2, log_on_ranks=[0], run_id="ranks-run",
                        quiet=True)
    assert not run.active
    run.log_image("img", np.zeros((4, 4)), step=0)
    run.log_media("audio", wav_bytes(), step=0)
    run.log_plot("fig", {"data": []}, step=0)
    run.log_table("t", {"a": [1]}, step=0)
    run.log({"x": 1.0, "img2": stepwire.Image(np.zeros((2, 2)))})
    assert run.stats()["media_logged"] == 0 and not (tmp_path / "spool").exists()
    run.finish()


def test_a_matplotlib_figure_is_stored_as_a_png_image(collector: CollectorProcess) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(2, 1), dpi=50)
    plt.plot([0, 1], [1, 0])
    with stepwire.init(project="media", address=collector.address, quiet=True) as run:
        run.log_plot("plots/mpl", fig, step=7)
    plt.close(fig)
    item = stepwire.Api(address=collector.address).run(run.id).media("plots/mpl")[0]
    assert (item.kind, item.mime, item.step, item.width, item.height) == ("image", "image/png", 7, 100, 50)
    assert item.image().size == (100, 50)
