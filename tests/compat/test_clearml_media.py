"""ClearML's Logger debug samples, plots and tables (stepwire.compat.clearml) against a real collector process.

Each test is a script written the way ClearML's own reporting examples call the Logger (``Task.init``,
``task.get_logger()`` or ``Logger.current_logger()``, ``report_*`` at several iterations), with only the import
changed; what is stored is read back with ``stepwire.Api``.
"""

from __future__ import annotations

import io
import json
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import stepwire
from conftest import CollectorProcess, stop_embedded
from stepwire.compat.clearml import Logger, Task, unsupported_counts

pytestmark = pytest.mark.usefixtures("clearml_task_state")

ITERATIONS = (0, 1, 2)


def wav_bytes(n: int = 400, rate: int = 8000) -> bytes:
    """A mono 16-bit WAV of ``n`` samples."""
    samples = (np.sin(np.arange(n) / 3.0) * 2000).astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", len(samples))
    return header + samples


def pixels(item: stepwire.MediaItem) -> np.ndarray:
    return np.asarray(item.image())


def view_of(collector: CollectorProcess, task: Task) -> stepwire.RunView:
    return stepwire.Api(address=collector.address).run(task.id)


def test_image_reporting(collector: CollectorProcess, tmp_path: Path) -> None:
    picture = np.random.default_rng(0).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    picture_path = tmp_path / "picture.png"
    Image.fromarray(picture).save(picture_path)
    task = Task.init(project_name="examples", task_name="Image reporting", address=collector.address)
    logger = task.get_logger()
    for iteration in ITERATIONS:
        logger.report_image("image", "image float", iteration=iteration, image=np.eye(16, 16, dtype=np.float64))
        m = np.eye(16, 16, dtype=np.uint8) * 255
        logger.report_image("image", "image uint8", iteration=iteration, image=m)
        red = np.concatenate((np.atleast_3d(m), np.zeros((16, 16, 2), dtype=np.uint8)), axis=2)
        logger.report_image("image", "image color red", iteration=iteration, image=red)
        logger.report_image("image", "image PIL", iteration=iteration, image=Image.open(picture_path))
        logger.report_media("image", "image with report media", iteration=iteration, local_path=str(picture_path),
                            file_extension="png")
    logger.report_image("image", "remote", iteration=1, url="https://example.com/sample.jpg")
    once = tmp_path / "once.png"
    Image.fromarray(picture[:, :, 0]).save(once)
    logger.report_image("image", "deleted", iteration=3, local_path=once, delete_after_upload=True)
    assert not once.exists()   # captured at the call, then deleted as ClearML does after the upload
    with pytest.warns(DeprecationWarning):
        logger.report_image("image/with slash", "series/with slash", iteration=0, matrix=m)
    logger.flush()
    task.close()

    view = view_of(collector, task)
    float_images = view.media("image/image float")
    assert [i.step for i in float_images] == list(ITERATIONS)
    assert all(i.kind == "image" for i in float_images)
    for item in float_images:
        np.testing.assert_array_equal(pixels(item), np.eye(16, 16, dtype=np.uint8) * 255)
    np.testing.assert_array_equal(pixels(view.media("image/image uint8", step=2)[0]), m)
    np.testing.assert_array_equal(pixels(view.media("image/image color red", step=1)[0]), red)
    np.testing.assert_array_equal(pixels(view.media("image/image PIL", step=0)[0]), picture)
    as_media = view.media("image/image with report media")
    assert len(as_media) == 3 and as_media[0].bytes() == picture_path.read_bytes()
    np.testing.assert_array_equal(pixels(view.media("image/deleted")[0]), picture[:, :, 0])
    np.testing.assert_array_equal(pixels(view.media("image/with slash/series/with slash")[0]), m)
    assert view.meta["clearml_names"]["image/with slash/series/with slash"] == ["image/with slash",
                                                                                "series/with slash"]
    links = view.texts("links/image/remote")
    assert [(t.step, json.loads(t.text)) for t in links] == [
        (1, {"kind": "image", "title": "image", "series": "remote", "iteration": 1,
             "url": "https://example.com/sample.jpg"})]
    assert not view.media("image/remote")   # a URL is a link, never fetched


def test_media_reporting(collector: CollectorProcess, tmp_path: Path) -> None:
    wav = wav_bytes()
    sample = tmp_path / "sample.wav"
    sample.write_bytes(wav)
    page = tmp_path / "periodic.html"
    page.write_text("<html><body><h1>table</h1></body></html>", encoding="utf-8")
    Task.init(project_name="examples", task_name="Audio and video reporting", address=collector.address)
    for iteration in ITERATIONS:
        Logger.current_logger().report_media("audio", "tada", iteration=iteration, local_path=str(sample))
    Logger.current_logger().report_media(
        "video", "big bunny", iteration=1, url="https://example.com/videos/bunny.mp4")
    logger = Logger.current_logger()
    logger.report_media("html", "periodic_html", iteration=0, local_path=str(page))
    logger.report_media("html", "stream_html", iteration=0, stream=io.StringIO("<p>from a stream</p>"),
                        file_extension="html")
    logger.report_media("audio", "stream", iteration=4, stream=io.BytesIO(wav), file_extension="wav")
    task = Task.current_task()
    assert task is not None
    task.close()

    view = view_of(collector, task)
    audio = view.media("audio/tada")
    assert [(a.step, a.kind, a.mime) for a in audio] == [(i, "audio", "audio/wav") for i in ITERATIONS]
    assert all(a.bytes() == wav for a in audio)
    assert len({a.sha256 for a in audio}) == 1   # the same content, stored once
    html = view.media("html/periodic_html")[0]
    assert (html.kind, html.mime, html.bytes()) == ("html", "text/html", page.read_bytes())
    assert view.media("html/stream_html")[0].bytes() == b"<p>from a stream</p>"
    streamed = view.media("audio/stream")[0]
    assert (streamed.step, streamed.kind, streamed.bytes()) == (4, "audio", wav)
    link = json.loads(view.texts("links/video/big bunny")[0].text)
    assert link["kind"] == "media" and link["url"] == "https://example.com/videos/bunny.mp4"


def _valid_plotly(figure: dict[str, Any]) -> None:
    """A Plotly figure dict: a data list and a layout; plotly's own validation accepts it when installed."""
    assert isinstance(figure["data"], list) and isinstance(figure["layout"], dict)
    try:
        import plotly.graph_objects as go
    except ImportError:
        return
    go.Figure(figure)   # raises ValueError on a property Plotly does not know


def test_plots_reporting(collector: CollectorProcess) -> None:
    confusion = np.arange(12).reshape(3, 4)
    scatter2d = np.hstack((np.atleast_2d(np.arange(0, 10)).T, (np.arange(10) % 4)[:, None]))
    scatter3d = np.arange(30).reshape(10, 3)
    surface = np.arange(20).reshape(4, 5) % 7
    task = Task.init(project_name="examples", task_name="2D plots reporting", address=collector.address)
    logger = task.get_logger()
    for iteration in ITERATIONS:
        logger.report_confusion_matrix("example_confusion", "ignored", iteration=iteration, matrix=confusion,
                                       xaxis="title X", yaxis="title Y", xlabels=list("abcd"),
                                       ylabels=["r0", "r1", "r2"])
        logger.report_matrix("example_confusion_0_0_at_top", "ignored", iteration=iteration, matrix=confusion,
                             xaxis="title X", yaxis="title Y", yaxis_reversed=True)
        for mode in ("lines", "markers", "lines+markers"):
            logger.report_scatter2d("example_scatter", f"series_{mode}", iteration=iteration, scatter=scatter2d,
                                    xaxis="title x", yaxis="title y", mode=mode)
        logger.report_scatter3d("example_scatter_3d", "series_xyz", iteration=iteration, scatter=scatter3d,
                                xaxis="title x", yaxis="title y", zaxis="title z")
        logger.report_surface("example_surface", "series1", iteration=iteration, matrix=surface, xaxis="title X",
                              yaxis="title Y", zaxis="title Z", camera=(1.5, 1.0, 0.5))
    logger.report_line_plot("lines", [Logger.SeriesInfo(name="a", data=[[0, 1], [1, 3]]),
                                      {"name": "b", "data": np.array([[0, 2.5], [1, -1.0]]), "labels": ["p", "q"]}],
                            xaxis="x", yaxis="y", mode="lines+markers", iteration=5, reverse_xaxis=True,
                            comment="two lines", extra_layout={"showlegend": True})
    logger.report_scatter2d("labelled", "pts", [(0, 1), (2, 3)], iteration=0, labels=["first", "second"],
                            mode="markers", extra_layout={"xaxis": {"type": "log"}})
    logger.report_plotly(title="iris", series="sepal", iteration=0,
                         figure={"data": [{"type": "bar", "x": ["a", "b"], "y": [1, 2]}], "layout": {}})
    go = pytest.importorskip("plotly.graph_objects")
    logger.report_plotly("iris", "go", go.Figure(go.Scatter(x=[1, 2], y=[3, 4])), iteration=1)
    task.close()

    view = view_of(collector, task)
    cm = view.plots("example_confusion/ignored")
    assert [p.step for p in cm] == list(ITERATIONS)
    fig = cm[0].figure()
    _valid_plotly(fig)
    trace = fig["data"][0]
    assert (trace["type"], trace["z"], trace["x"], trace["y"]) == ("heatmap", confusion.tolist(), list("abcd"),
                                                                   ["r0", "r1", "r2"])
    assert fig["layout"]["xaxis"]["title"]["text"] == "title X" and fig["layout"]["title"]["text"] == \
        "example_confusion"
    top = view.plots("example_confusion_0_0_at_top/ignored", step=2)[0].figure()
    _valid_plotly(top)
    assert top["layout"]["yaxis"]["autorange"] == "reversed" and top["data"][0]["type"] == "heatmap"
    for mode in ("lines", "markers", "lines+markers"):
        sc = view.plots(f"example_scatter/series_{mode}", step=1)[0].figure()
        _valid_plotly(sc)
        assert [(t["type"], t["mode"], t["name"]) for t in sc["data"]] == [("scatter", mode, f"series_{mode}")]
        assert sc["data"][0]["x"] == list(range(10)) and sc["data"][0]["y"] == (np.arange(10) % 4).tolist()
    s3 = view.plots("example_scatter_3d/series_xyz", step=0)[0].figure()
    _valid_plotly(s3)
    assert s3["data"][0]["type"] == "scatter3d" and s3["data"][0]["mode"] == "markers"
    assert [s3["data"][0][k] for k in "xyz"] == [scatter3d[:, i].tolist() for i in range(3)]
    assert s3["layout"]["scene"]["zaxis"]["title"]["text"] == "title z"
    sf = view.plots("example_surface/series1", step=2)[0].figure()
    _valid_plotly(sf)
    assert sf["data"][0]["type"] == "surface" and sf["data"][0]["z"] == surface.tolist()
    assert sf["layout"]["scene"]["camera"]["eye"] == {"x": 1.5, "y": 1.0, "z": 0.5}
    lines = view.plots("lines")[0]
    assert lines.step == 5
    lf = lines.figure()
    _valid_plotly(lf)
    assert [(t["name"], t["type"], t["mode"], t["y"]) for t in lf["data"]] == [
        ("a", "scatter", "lines+markers", [1, 3]), ("b", "scatter", "lines+markers", [2.5, -1.0])]
    assert lf["data"][1]["text"] == ["p", "q"] and lf["layout"]["xaxis"]["autorange"] == "reversed"
    assert lf["layout"]["title"]["text"] == "lines<br><sup>two lines</sup>" and lf["layout"]["showlegend"] is True
    lab = view.plots("labelled/pts")[0].figure()
    _valid_plotly(lab)
    assert lab["data"][0]["text"] == ["first", "second"] and lab["layout"]["xaxis"] == {"type": "log"}
    bar = view.plots("iris/sepal")[0].figure()
    _valid_plotly(bar)
    assert bar["data"][0]["type"] == "bar" and bar["layout"]["title"]["text"] == "sepal"   # as ClearML titles it
    from_go = view.plots("iris/go", step=1)[0].figure()
    _valid_plotly(from_go)
    assert from_go["data"][0]["type"] == "scatter" and from_go["layout"]["title"]["text"] == "go"


def _cells(table: Any) -> dict[str, list[Any]]:
    if hasattr(table, "to_dict"):
        return {c: table[c].tolist() for c in table.columns}
    return {c: list(v.tolist()) for c, v in table.items()}


def test_table_reporting(collector: CollectorProcess, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"num_legs": [2, 4, 8, 0], "num_wings": [2, 0, 0, 0], "num_specimen_seen": [10, 2, 1, 8]},
                      index=["falcon", "dog", "spider", "fish"])
    df.index.name = "id"
    csv = tmp_path / "data.csv"
    csv.write_text("name,score\nx,1.5\ny,2.5\n", encoding="utf-8")
    task = Task.init(project_name="examples", task_name="table reporting", address=collector.address)
    logger = task.get_logger()
    for iteration in ITERATIONS:
        logger.report_table("table pd", "PD with index", iteration=iteration, table_plot=df)
    logger.report_table("table pd", "plain", iteration=0, table_plot=pd.DataFrame({"a": [1, 2], "b": ["u", "v"]}))
    logger.report_table("table - list of lists", "List of lists", iteration=0,
                        table_plot=[["Last Name", "First Name", "Age"], ["Doe", "John", "25"],
                                    ["Smith", "Peter", "30"]])
    logger.report_table("table - csv", "local csv", iteration=1, csv=str(csv))
    logger.report_table("table - csv", "remote csv", iteration=0, url="https://example.com/Mining-BTC-180.csv")
    task.close()

    view = view_of(collector, task)
    assert [t.step for t in view.tables("table pd/PD with index")] == list(ITERATIONS)
    assert _cells(view.table("table pd/PD with index")) == {
        "id": ["falcon", "dog", "spider", "fish"], "num_legs": [2, 4, 8, 0], "num_wings": [2, 0, 0, 0],
        "num_specimen_seen": [10, 2, 1, 8]}
    assert _cells(view.table("table pd/plain")) == {"a": [1, 2], "b": ["u", "v"]}
    assert _cells(view.table("table - list of lists/List of lists")) == {
        "Last Name": ["Doe", "Smith"], "First Name": ["John", "Peter"], "Age": ["25", "30"]}
    assert _cells(view.table("table - csv/local csv")) == {"name": ["x", "y"], "score": [1.5, 2.5]}
    assert json.loads(view.texts("links/table - csv/remote csv")[0].text)["url"] == \
        "https://example.com/Mining-BTC-180.csv"


class _Figure:
    """Stands in for a matplotlib figure: ``savefig`` writes a PNG of fixed pixels."""

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels = pixels

    def get_axes(self) -> list[Any]:
        return []

    def savefig(self, fname: Any, format: str = "png") -> None:
        Image.fromarray(self.pixels).save(fname, format=format.upper())


class _Pyplot:
    """Stands in for ``matplotlib.pyplot``: ``gcf()`` is the current figure (ClearML's examples pass ``plt``)."""

    def __init__(self, figure: _Figure) -> None:
        self.figure = figure

    def gcf(self) -> _Figure:
        return self.figure

    def savefig(self, fname: Any, format: str = "png") -> None:
        self.figure.savefig(fname, format)


def test_matplotlib_figures_are_stored_as_png(collector: CollectorProcess) -> None:
    one = np.full((8, 10, 3), 40, dtype=np.uint8)
    two = np.full((6, 4, 3), 200, dtype=np.uint8)
    task = Task.init(project_name="examples", task_name="Manual Matplotlib example", address=collector.address)
    task.logger.report_matplotlib_figure(title="Manual Reporting", series="Just a plot", iteration=0,
                                         figure=_Pyplot(_Figure(one)))
    task.logger.report_matplotlib_figure(title="Manual Reporting", series="Plot as an image", iteration=0,
                                         figure=_Figure(two), report_image=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.figure(figsize=(2, 1), dpi=50)
    plt.plot([0, 1], [1, 0])
    task.logger.report_matplotlib_figure("Seaborn example", "real", iteration=10, figure=plt,
                                         report_interactive=False)
    plt.close("all")
    task.close()

    view = view_of(collector, task)
    np.testing.assert_array_equal(pixels(view.media("Manual Reporting/Just a plot")[0]), one)
    item = view.media("Manual Reporting/Plot as an image")[0]
    assert item.kind == "image" and item.mime == "image/png"
    np.testing.assert_array_equal(pixels(item), two)
    stored = view.media("Seaborn example/real")[0]
    assert (stored.step, stored.width, stored.height) == (10, 100, 50)


def test_bad_calls_raise_and_what_cannot_be_honoured_is_counted(collector: CollectorProcess, tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    task = Task.init(project_name="examples", task_name="bad calls", address=collector.address)
    logger = task.get_logger()
    with pytest.raises(ValueError, match="exactly one"):
        logger.report_image("t", "s", iteration=0)
    with pytest.raises(ValueError, match="exactly one"):
        logger.report_image("t", "s", iteration=0, local_path=str(path), image=np.zeros((4, 4)))
    with pytest.raises(ValueError, match="exactly one"):
        logger.report_media("t", "s", iteration=0, local_path=str(path), url="https://example.com/x.mp4")
    with pytest.raises(ValueError, match="file extension"):
        logger.report_media("t", "s", iteration=0, stream=io.BytesIO(b"x"))
    with pytest.raises(ValueError, match="exactly one"):
        logger.report_table("t", "s", iteration=0)
    with pytest.raises(ValueError, match="mode"):
        logger.report_scatter2d("t", "s", [(0, 1)], mode="bars")
    with pytest.raises(ValueError, match="N x 3"):
        logger.report_scatter3d("t", "s", np.zeros((3, 2)))
    with pytest.raises(ValueError, match="xlabels"):
        logger.report_confusion_matrix("t", "s", np.zeros((2, 2)), xlabels=["a"])
    before = unsupported_counts()
    caplog.set_level("WARNING", logger="stepwire.compat.clearml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no DeprecationWarning: max_image_history is not deprecated
        for it in range(2):
            logger.report_image("t", "hist", iteration=it, local_path=str(path), max_image_history=3)
    logger.report_image("t", "unlimited", iteration=0, local_path=str(path), max_image_history=-1)  # as stepwire
    logger.report_media("t", "media", iteration=0, local_path=str(path), max_history=2)
    logger.report_table("t", "layout", iteration=0, table_plot=[["a"], [1]], extra_layout={"height": 600})
    logger.set_default_debug_sample_history(10)
    logger.set_default_upload_destination("s3://bucket/debug")
    assert logger.get_default_upload_destination() == "s3://bucket/debug"
    after = unsupported_counts()
    for what, n in (("Logger.report_image(max_image_history=...)", 2), ("Logger.report_media(max_history=...)", 1),
                    ("Logger.report_table(extra_layout=...)", 1), ("Logger.set_default_debug_sample_history", 1),
                    ("Logger.set_default_upload_destination", 1)):
        assert after[what] == before.get(what, 0) + n, what
    if not before.get("Logger.report_image(max_image_history=...)"):
        assert sum("max_image_history" in r.getMessage() for r in caplog.records) == 1   # warned once
    task.close()
    view = view_of(collector, task)
    assert [i.step for i in view.media("t/hist")] == [0, 1]   # stored all the same
    assert _cells(view.table("t/layout")) == {"a": [1]}


def test_offline_session_import_carries_media(collector: CollectorProcess, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    monkeypatch.setenv("STEPWIRE_OFFLINE_DIR", str(tmp_path / "offline"))
    Task.set_offline(offline_mode=True)
    task = Task.init(project_name="examples", task_name="offline media")
    folder = task.get_offline_mode_folder()
    assert folder is not None
    try:
        logger = task.get_logger()
        for iteration in ITERATIONS:
            logger.report_image("debug", "sample", iteration=iteration, image=image + iteration)
        logger.report_confusion_matrix("cm", "ignored", [[1, 2], [3, 4]], iteration=1)
        logger.report_table("t", "rows", iteration=0, table_plot=[["k", "v"], ["a", 1.5], ["b", 2.5]])
        logger.report_media("html", "page", iteration=0, stream=io.StringIO("<b>offline</b>"), file_extension="html")
        task.close()
    finally:
        stop_embedded(folder)
    Task.set_offline(False)

    imported = Task.import_offline_session(folder, iteration_offset=10, address=collector.address)
    view = stepwire.Api(address=collector.address).run(imported)
    samples = view.media("debug/sample")
    assert [s.step for s in samples] == [10, 11, 12]
    for it, item in zip(ITERATIONS, samples, strict=True):
        np.testing.assert_array_equal(pixels(item), image + it)
    cm = view.plots("cm/ignored")[0]
    assert cm.step == 11 and cm.figure()["data"][0]["z"] == [[1, 2], [3, 4]]
    assert _cells(view.table("t/rows")) == {"k": ["a", "b"], "v": [1.5, 2.5]}
    assert view.media("html/page")[0].bytes() == b"<b>offline</b>"


def test_plot_values_are_strict_json_and_a_list_of_arrays_is_one_trace_each(collector: CollectorProcess) -> None:
    task = Task.init(project_name="examples", task_name="3D plot reporting", address=collector.address)
    logger = task.get_logger()
    logger.report_scatter2d("gaps", "y", np.array([[0, 1.0], [1, np.nan], [2, np.inf]]), iteration=0)
    logger.report_scatter3d("multi", "xyz", [np.zeros((2, 3)), np.ones((3, 3))], iteration=0, labels=["a", "b"],
                            fill=True)
    logger.report_surface("ticks", "s", [[1, 2, 3], [4, 5, 6]], xlabels=["x0", "x1", "x2"], ylabels=["y0", "y1"],
                          comment="note")
    task.close()

    view = view_of(collector, task)

    def strict(raw: bytes) -> dict[str, Any]:
        def refuse(constant: str) -> None:
            raise AssertionError(f"{constant} is not JSON")
        figure: dict[str, Any] = json.loads(raw, parse_constant=refuse)
        _valid_plotly(figure)
        return figure

    gaps = strict(view.plots("gaps/y")[0].bytes())
    assert gaps["data"][0]["y"] == [1.0, None, None]   # NaN and infinities are Plotly's gaps
    multi = strict(view.plots("multi/xyz")[0].bytes())
    assert [(t["type"], t["name"], len(t["x"]), t["surfaceaxis"]) for t in multi["data"]] == [
        ("scatter3d", "a", 2, 2), ("scatter3d", "b", 3, 2)]
    ticks = strict(view.plots("ticks/s")[0].bytes())
    scene = ticks["layout"]["scene"]
    assert (scene["xaxis"]["ticktext"], scene["xaxis"]["tickvals"]) == (["x0", "x1", "x2"], [0, 1, 2])
    assert (scene["yaxis"]["ticktext"], scene["yaxis"]["tickvals"]) == (["y0", "y1"], [0, 1])
    assert ticks["layout"]["title"]["text"] == "ticks<br><sup>note</sup>"


def test_a_continued_task_shifts_media_iterations(collector: CollectorProcess) -> None:
    first = Task.init("examples", "continued media", address=collector.address)
    for it in range(4):
        first.get_logger().report_scalar("loss", "train", 1.0, it)
    first.get_logger().report_image("debug", "img", iteration=0, image=np.zeros((2, 2), np.uint8))
    first.close()
    again = Task.init("examples", "continued media", continue_last_task=True, address=collector.address)
    assert again.get_initial_iteration() == 4
    again.logger.report_image("debug", "img", iteration=0, image=np.full((2, 2), 9, np.uint8))
    again.logger.report_scatter2d("pts", "s", [(0, 1)], iteration=1)
    again.close()
    view = view_of(collector, first)
    assert [(i.step, int(pixels(i)[0, 0])) for i in view.media("debug/img")] == [(0, 0), (4, 9)]
    assert [p.step for p in view.plots("pts/s")] == [5]
