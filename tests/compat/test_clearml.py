"""ClearML-style Task and Logger (stepwire.compat.clearml) against real collector processes."""

from __future__ import annotations

import datetime
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import pytest

import stepwire
from conftest import CollectorProcess, stop_embedded
from stepwire.compat.clearml import Logger, Task, TaskTypes, split_name

pytestmark = pytest.mark.usefixtures("clearml_task_state")


def test_split_name() -> None:
    assert split_name("loss/train") == ("loss", "train")
    assert split_name("tag/key1/key2") == ("tag/key1", "key2")
    assert split_name("loss") == ("loss", "loss")
    assert split_name("loss/") == ("loss/", "loss/")
    assert split_name("/x") == ("/x", "/x")
    assert [t.value for t in TaskTypes] == ["training", "testing", "inference", "data_processing", "application",
                                            "monitor", "controller", "optimizer", "service", "qc", "custom"]
    assert str(Task.TaskTypes.qc) == "qc"


def test_report_and_read_back(collector: CollectorProcess, capsys: pytest.CaptureFixture[str]) -> None:
    address = collector.address
    task = Task.init(project_name="cml", task_name="train", tags=["a"], address=address)
    assert Task.current_task() is task
    assert task.task_type == "training" and task.get_project_name() == "cml" and task.name == "train"
    assert task.run is not None and task.id == task.run.id
    logger = task.get_logger()
    assert task.get_logger() is logger and Logger.current_logger() is logger
    for it in range(5):
        logger.report_scalar("loss", "train", 1.0 / (it + 1), it)
        logger.report_scalar(title="loss", series="val", value=np.float32(2 * it), iteration=it)
    logger.report_scalar("train/loss", "mean", 0.5, 0)     # a title with "/": the last-"/" split gives it back
    logger.report_scalar("grads", "layer1/w", 3, 7)        # a series with "/": recorded in the run meta
    logger.report_single_value("accuracy", 0.9)
    logger.report_single_value("accuracy", 0.95)           # the latest report is the value
    logger.report_single_value("a/b", 7.0)
    logger.report_histogram("weights", "fc1", [1, 2, 3], iteration=2, xlabels=["a", "b", "c"], xaxis="bucket",
                            yaxis="count")
    logger.report_histogram("weights", "fc1", np.array([[0.5, np.nan], [1.0, 2.25]]), iteration=5,
                            labels=["x", "y"], mode="stack")
    logger.report_text("hello", print_console=False)
    logger.report_text("world")
    assert capsys.readouterr().out == "world\n"
    assert logger.flush()
    # read through the live task (flushes first)
    assert task.get_reported_single_values() == {"accuracy": 0.95, "a/b": 7.0}
    assert task.get_status() == "in_progress"
    task.close()
    assert Task.current_task() is None and task.get_status() == "completed"
    with pytest.raises(RuntimeError, match="closed"):
        task.get_logger()

    expected_scalars = {
        "loss": {"train": {"x": [0, 1, 2, 3, 4], "y": [1.0, 0.5, 1 / 3, 0.25, 0.2]},
                 "val": {"x": [0, 1, 2, 3, 4], "y": [0.0, 2.0, 4.0, 6.0, 8.0]}},
        "train/loss": {"mean": {"x": [0], "y": [0.5]}},
        "grads": {"layer1/w": {"x": [7], "y": [3.0]}},
    }
    expected_last = {
        "loss": {"train": {"last": 0.2, "min": 0.2, "max": 1.0}, "val": {"last": 8.0, "min": 0.0, "max": 8.0}},
        "train/loss": {"mean": {"last": 0.5, "min": 0.5, "max": 0.5}},
        "grads": {"layer1/w": {"last": 3.0, "min": 3.0, "max": 3.0}},
        "Summary": {"accuracy": {"last": 0.95, "min": 0.9, "max": 0.95}, "a/b": {"last": 7.0, "min": 7.0, "max": 7.0}},
    }
    by_id = Task.get_task(task_id=task.id, address=address)
    by_name = Task.get_task(project_name="cml", task_name="train", address=address)
    for ro in (by_id, by_name, task):
        assert ro.id == task.id and ro.name == "train" and ro.get_project_name() == "cml"
        assert ro.get_tags() == ["a"] and ro.task_type == "training" and ro.get_status() == "completed"
        assert ro.get_reported_scalars() == expected_scalars
        assert ro.get_all_reported_scalars() == expected_scalars
        assert ro.get_last_scalar_metrics() == expected_last
        assert ro.get_reported_single_values() == {"accuracy": 0.95, "a/b": 7.0}
        assert ro.get_reported_single_value("accuracy") == 0.95 and ro.get_reported_single_value("nope") is None
        assert ro.get_reported_console_output() == ["world"]
        assert ro.get_reported_console_output(5) == ["hello", "world"]
        hists = ro.get_reported_histograms()
        assert list(hists) == ["weights"] and list(hists["weights"]) == ["fc1"]
        first, second = hists["weights"]["fc1"]
        assert first == {"iteration": 2, "values": [[1, 2, 3]], "labels": None, "xlabels": ["a", "b", "c"],
                         "xaxis": "bucket", "yaxis": "count", "mode": "group", "data_args": None,
                         "extra_layout": None}
        assert isinstance(first["values"][0][0], int)
        assert second["iteration"] == 5 and second["labels"] == ["x", "y"] and second["mode"] == "stack"
        np.testing.assert_array_equal(np.array(second["values"]), [[0.5, np.nan], [1.0, 2.25]])
    with pytest.raises(RuntimeError, match="read-only"):
        by_id.get_logger()
    with pytest.raises(RuntimeError, match="read-only"):
        by_id.set_progress(3)

    # the same data through stepwire's own Api
    view = stepwire.Api(address=address).run(task.id)
    assert (view.project, view.name, view.tags, view.status) == ("cml", "train", ["a"], "finished")
    assert view.meta["task_type"] == "training"
    assert view.meta["clearml_names"] == {"grads/layer1/w": ["grads", "layer1/w"], "Summary/a/b": ["Summary", "a/b"]}
    assert sorted(s.name for s in view.series()) == ["Summary/a/b", "Summary/accuracy", "grads/layer1/w",
                                                    "loss/train", "loss/val", "train/loss/mean"]
    loss = view.scalars("loss/train")
    assert loss["step"].tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(loss["value"], [1.0, 0.5, 1 / 3, 0.25, 0.2])
    acc = view.scalars("Summary/accuracy")
    assert acc["step"].tolist() == [0, 0] and acc["value"].tolist() == [0.9, 0.95]
    assert [t.text for t in view.texts("console")] == ["hello", "world"]
    records = view.texts("plots/weights/fc1")
    assert [r.step for r in records] == [2, 5]
    assert json.loads(records[0].text)["title"] == "weights" and json.loads(records[0].text)["kind"] == "histogram"


def test_x_axis_and_max_samples(collector: CollectorProcess) -> None:
    t0 = time.time()
    task = Task.init("cml", "axes", address=collector.address)
    logger = task.get_logger()
    for it in range(100):
        logger.report_scalar("m", "s", float(it), it * 10)
    task.close()
    t1 = time.time()
    ro = Task.get_task(task_id=task.id, address=collector.address)
    wall = stepwire.Api(address=collector.address).run(task.id).scalars("m/s")["wall_time"]

    graph = ro.get_reported_scalars()["m"]["s"]
    assert graph == {"x": [it * 10 for it in range(100)], "y": [float(it) for it in range(100)]}
    stamps = ro.get_reported_scalars(x_axis="timestamp")["m"]["s"]
    assert stamps["y"] == graph["y"]
    assert all(isinstance(x, int) for x in stamps["x"]) and stamps["x"] == [round(w * 1000) for w in wall]
    assert t0 * 1000 - 1 <= stamps["x"][0] <= stamps["x"][-1] <= t1 * 1000 + 1
    iso = ro.get_reported_scalars(x_axis="iso_time")["m"]["s"]["x"]
    parsed = [datetime.datetime.fromisoformat(x) for x in iso]
    assert all(p.tzinfo is not None for p in parsed)
    np.testing.assert_allclose([p.timestamp() for p in parsed], wall, atol=1e-5)

    sampled = ro.get_reported_scalars(max_samples=10)["m"]["s"]
    assert sampled["x"] == [round(i * 99 / 9) * 10 for i in range(10)]
    assert sampled["x"][0] == 0 and sampled["x"][-1] == 990 and sampled["y"] == [x / 10 for x in sampled["x"]]
    assert ro.get_reported_scalars(max_samples=1)["m"]["s"] == {"x": [990], "y": [99.0]}
    assert ro.get_reported_scalars(max_samples=500)["m"]["s"] == graph
    sampled_ts = ro.get_reported_scalars(max_samples=10, x_axis="timestamp")["m"]["s"]["x"]
    assert sampled_ts == [stamps["x"][round(i * 99 / 9)] for i in range(10)]
    with pytest.raises(ValueError, match="x-axis"):
        ro.get_reported_scalars(x_axis="epoch")
    with pytest.raises(ValueError, match="max_samples"):
        ro.get_reported_scalars(max_samples=-1)


def test_parameters_and_progress(collector: CollectorProcess, caplog: pytest.LogCaptureFixture) -> None:
    address = collector.address
    task = Task.init("cml", "params", address=address)
    params = {"lr": 0.1, "epochs": 3, "opt": {"name": "adam", "betas": [0.9, 0.999]}, "none": None}
    assert task.connect(params) is params

    class Config:
        batch = 32
        name = "x"
        _hidden = 1

    class Sub(Config):
        batch = 64

    cfg = Config()
    cfg.dropout = 0.5  # type: ignore[attr-defined]
    assert task.connect(cfg, name="Model") is cfg     # an instance: its own attributes
    assert task.connect(Sub, name="Cls") is Sub       # a class: its attributes and its bases', the subclass winning
    expected = {"General/lr": "0.1", "General/epochs": "3", "General/opt/name": "adam",
                "General/opt/betas": "[0.9, 0.999]", "General/none": "", "Model/dropout": "0.5",
                "Cls/batch": "64", "Cls/name": "x"}
    assert task.get_parameters() == expected
    task.set_parameters_as_dict({"Args": {"seed": 1}, "lr": 0.2})
    task.set_parameter("Args/flag", True)
    expected.update({"Args/seed": "1", "General/lr": "0.2", "Args/flag": "True"})
    assert task.get_parameters() == expected
    assert task.get_parameter("Args/seed") == "1" and task.get_parameter("missing", 5) == 5
    assert task.flush()
    assert Task.get_task(task_id=task.id, address=address).get_parameters() == expected

    assert task.get_progress() is None
    task.set_progress(50)
    with caplog.at_level(logging.WARNING, logger="stepwire.compat.clearml"):
        task.set_progress(101)
        task.set_progress(12.5)  # type: ignore[arg-type]
    assert len(caplog.records) == 2 and task.get_progress() == 50
    task.set_progress(75)

    task.set_parameters({"Args/epochs": 7, "lr": 0.5}, [("Args/list", [1, 2])], extra="e")
    replaced = {"Args/epochs": "7", "General/lr": "0.5", "Args/list": "[1, 2]", "General/extra": "e"}
    assert task.get_parameters() == replaced
    task.close()
    ro = Task.get_task(project_name="cml", task_name="params", address=address)
    assert ro.get_parameters() == replaced and ro.get_progress() == 75
    view = stepwire.Api(address=address).run(task.id)
    assert view.config == replaced and view.meta["progress"] == 75
    with pytest.raises(RuntimeError, match="closed"):
        task.connect({"a": 1})


def test_get_task_by_name_and_get_tasks(collector: CollectorProcess) -> None:
    address = collector.address
    a = Task.init("proj", "same", address=address)
    assert Task.init("proj", "same", address=address) is a and Task.init() is a   # an open task is returned
    with pytest.raises(RuntimeError, match="task name"):
        Task.init("proj", "other", address=address)
    with pytest.raises(RuntimeError, match="task type"):
        Task.init(task_type="testing")
    assert Task.init(task_type=None) is a
    a.get_logger().report_scalar("v", "v", 1.0, 0)
    a.close()
    b = Task.init("proj", "same", task_type=TaskTypes.testing, tags=["best"], address=address)
    b.get_logger().report_scalar("v", "v", 2.0, 0)
    b.close()
    c = Task.init("proj", "different", task_type="inference", tags=["x"], address=address)
    c.close()
    d = Task.init("other", "same", address=address)
    d.close()

    got = Task.get_task(project_name="proj", task_name="same", address=address)
    assert got.id == b.id and got.task_type == "testing" and got.get_tags() == ["best"]
    assert got.get_last_scalar_metrics() == {"v": {"v": {"last": 2.0, "min": 2.0, "max": 2.0}}}
    assert Task.get_task(task_name="same", address=address).id == d.id
    assert Task.get_task(project_name="proj", address=address).id == c.id
    assert Task.get_task(project_name="proj", task_name="same", tags=["-best"], address=address).id == a.id

    def ids(tasks: list[Task]) -> list[str]:
        return [t.id for t in tasks]

    assert ids(Task.get_tasks(address=address)) == [a.id, b.id, c.id, d.id]
    assert ids(Task.get_tasks(project_name="proj", address=address)) == [a.id, b.id, c.id]
    assert ids(Task.get_tasks(task_name="^same$", address=address)) == [a.id, b.id, d.id]
    assert ids(Task.get_tasks(task_name="diff", address=address)) == [c.id]
    assert ids(Task.get_tasks(tags=["best"], address=address)) == [b.id]
    assert ids(Task.get_tasks(tags=["-best"], address=address)) == [a.id, c.id, d.id]
    assert ids(Task.get_tasks(tags=["best", "x"], address=address)) == [b.id, c.id]
    assert ids(Task.get_tasks(task_ids=[c.id, a.id], project_name="ignored", address=address)) == [a.id, c.id]
    assert ids(Task.get_tasks(project_name=["proj", "other"], task_name="same", address=address)) == [a.id, b.id,
                                                                                                     d.id]
    assert Task.get_tasks(project_name="proj", task_name="same", address=address)[1].task_type == "testing"

    with pytest.raises(ValueError, match="could not be found"):
        Task.get_task(task_id="nope", address=address)
    with pytest.raises(ValueError, match="no task"):
        Task.get_task(project_name="proj", task_name="missing", address=address)
    with pytest.raises(ValueError, match="needs task_id"):
        Task.get_task(address=address)
    with pytest.raises(ValueError, match="tag operator"):
        Task.get_tasks(tags=["__$some", "best"], address=address)
    with pytest.raises(ValueError, match="nonsense"):
        Task.init("proj", "same", task_type="nonsense", address=address)
    assert Task.current_task() is None


def test_failures_and_bad_input(collector: CollectorProcess) -> None:
    address = collector.address
    with pytest.raises(ZeroDivisionError), Task.init("cml", "fails", address=address) as task:
        logger = task.get_logger()
        with pytest.raises(ValueError, match="1-D or 2-D"):
            logger.report_histogram("h", "s", np.zeros((2, 2, 2)))
        with pytest.raises(TypeError, match="numbers"):
            logger.report_histogram("h", "s", ["a", "b"])
        with pytest.raises(ValueError, match="mode"):
            logger.report_histogram("h", "s", [1, 2], mode="pie")
        with pytest.raises(ValueError, match="xlabels"):
            logger.report_histogram("h", "s", [1, 2], xlabels=["a"])
        with pytest.raises(ValueError, match="labels"):
            logger.report_histogram("h", "s", [[1, 2], [3, 4]], labels=["a"])
        with pytest.raises(ValueError, match="step"):
            logger.report_scalar("t", "s", 1.0, -1)
        logger.report_scalar("t", "s", math.inf, 3)
        1 / 0  # noqa: B018
    assert task.get_status() == "failed" and Task.current_task() is None
    ro = Task.get_task(task_id=task.id, address=address)
    assert ro.get_status() == "failed" and ro.get_reported_scalars() == {"t": {"s": {"x": [3], "y": [math.inf]}}}
    assert ro.get_reported_histograms() == {}
    meta = stepwire.Api(address=address).run(task.id).meta
    assert meta["status_reason"] == "ZeroDivisionError: division by zero"

    done = Task.init("cml", "marked", address=address)
    done.mark_completed()
    assert done.get_status() == "completed" and Task.current_task() is None
    assert Task.get_task(task_id=done.id, address=address).get_status() == "completed"


def test_offline_session_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "offline"
    monkeypatch.setenv("STEPWIRE_OFFLINE_DIR", str(base))
    assert not Task.is_offline()
    monkeypatch.setenv("CLEARML_OFFLINE_MODE", "1")
    assert Task.is_offline()
    Task.set_offline(False)
    assert not Task.is_offline()
    Task.set_offline(offline_mode=True)
    assert Task.is_offline()
    with pytest.raises(ValueError, match="session folder"):
        Task.init("off", "line", address="127.0.0.1:1")

    task = Task.init("off", "line")
    folder = task.get_offline_mode_folder()
    assert folder is not None and folder.parent == base.resolve() and len(folder.name) == 32
    try:
        with pytest.raises(RuntimeError, match="not been closed"):
            Task.set_offline(False)
        task.connect({"lr": 0.1})
        logger = task.get_logger()
        for it in range(3):
            logger.report_scalar("loss", "train", 1.0 - it / 10, it)
        logger.report_single_value("best", 0.7)
        task.close()
        assert (folder / "collector.json").exists()
        ro = Task.get_task(task_id=task.id, dir=folder)
        assert ro.get_reported_scalars() == {"loss": {"train": {"x": [0, 1, 2], "y": [1.0, 0.9, 0.8]}}}
        assert ro.get_reported_single_values() == {"best": 0.7}
        assert ro.get_parameters() == {"General/lr": "0.1"}
        assert ro.get_offline_mode_folder() is None
        stop_embedded(folder)  # the session folder also reads without a collector (store file read-only)
        view = stepwire.Api(dir=folder).run(task.id)
        assert view.project == "off" and view.scalars("loss/train")["value"].tolist() == [1.0, 0.9, 0.8]
    finally:
        stop_embedded(folder)
    Task.set_offline(False)
    online = Task.init("on", "line", dir=tmp_path / "online")
    try:
        assert online.get_offline_mode_folder() is None
        online.close()
    finally:
        stop_embedded(tmp_path / "online")
