"""ClearML's Task API beyond reporting (artifacts, models, parameters, configuration, queries, continuing and
offline import), used the way ClearML's docs and examples use it, with only the import changed, against real
collector processes."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import stepwire
from conftest import CollectorProcess, stop_embedded
from stepwire.compat.clearml import OutputModel, Task, unsupported_counts

pytestmark = pytest.mark.usefixtures("clearml_task_state")

pd = pytest.importorskip("pandas")


@dataclasses.dataclass
class Opaque:
    """An object ClearML can only pickle."""

    name: str
    values: list[int]


def test_artifacts(collector: CollectorProcess, tmp_path: Path) -> None:
    address = collector.address
    task = Task.init(project_name="examples", task_name="artifacts example", address=address)
    df = pd.DataFrame({"num_legs": [2, 4, 8, 0], "num_wings": [2, 0, 0, 0], "num_specimen_seen": [10, 2, 1, 8]},
                      index=["falcon", "dog", "spider", "fish"])
    # a registered DataFrame is synced: what it holds at close is what is stored
    task.register_artifact("train", df, metadata={"counting": "legs", "max legs": 69})
    assert list(task.get_registered_artifacts()) == ["train"]
    Task.current_task().get_registered_artifacts()["train"].loc["bird"] = [2, 2, 1]  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="already registered"):
        task.upload_artifact("train", df)

    samples = tmp_path / "data_samples"
    samples.mkdir()
    (samples / "sample.json").write_text('{"list_of_ints": [1, 2, 3]}')
    (samples / "nested").mkdir()
    (samples / "nested" / "a.jpg").write_bytes(b"\xff\xd8jpeg-a")
    (samples / "b.jpg").write_bytes(b"\xff\xd8jpeg-b")
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    eye = np.eye(10, 10)
    config = {"layers": [64, 32], "dropout": 0.5, "name": "mlp"}

    assert task.upload_artifact("Pandas", artifact_object=df)
    task.upload_artifact("local file", artifact_object=str(samples / "sample.json"))
    task.upload_artifact("local folder", artifact_object=samples)
    task.upload_artifact("wildcard jpegs", artifact_object=str(samples / "*.jpg"))
    task.upload_artifact("dictionary", df.to_dict())
    task.upload_artifact("Numpy Eye", np.eye(10, 10), metadata={"shape": "10x10"})
    task.upload_artifact("pillow_image", image)
    task.upload_artifact("config yaml", config, extension_name=".yaml")
    task.upload_artifact("notes", "free text, not a path")
    task.upload_artifact("remote", "https://example.com/data/train.csv")
    task.upload_artifact("object", Opaque("x", [1, 2]))
    eye_copy = tmp_path / "eye.npy"
    np.save(eye_copy, eye)
    task.upload_artifact("gone after upload", str(eye_copy), delete_after_upload=True)
    assert not eye_copy.exists()
    live = task.artifacts  # a live task reads what it stored so far
    assert live["Numpy Eye"].metadata == {"shape": "10x10"}
    def train_entry() -> tuple[str, float]:
        entries = {a.name: a for a in stepwire.Api(address=address).run(task.id).artifacts()}
        entry = entries["clearml/artifacts/train/train.csv.gz"]
        return entry.sha256, entry.wall_time

    before = train_entry()
    assert task.flush()                  # the registered frame changed: stored again
    changed = train_entry()
    assert task.flush()                  # unchanged: not stored again
    assert changed[0] != before[0] and train_entry() == changed
    task.close()
    with pytest.raises(RuntimeError, match="closed"):
        task.upload_artifact("late", {"a": 1})

    ro = Task.get_task(project_name="examples", task_name="artifacts example", address=address)
    with pytest.raises(RuntimeError, match="read-only"):
        ro.upload_artifact("late", {"a": 1})
    arts = ro.artifacts
    assert sorted(arts) == sorted(["train", "Pandas", "local file", "local folder", "wildcard jpegs", "dictionary",
                                   "Numpy Eye", "pillow_image", "config yaml", "notes", "remote", "object",
                                   "gone after upload"])
    types = {name: a.type for name, a in arts.items()}
    assert types == {"train": "data-audit-table", "Pandas": "pandas", "local file": "custom",
                     "local folder": "archive", "wildcard jpegs": "archive", "dictionary": "dict",
                     "Numpy Eye": "numpy", "pillow_image": "image", "config yaml": "dict", "notes": "string",
                     "remote": "custom", "object": "pickle", "gone after upload": "custom"}

    train = arts["train"]
    assert train.metadata == {"counting": "legs", "max legs": "69"}
    pd.testing.assert_frame_equal(train.get(), df)          # the final state, bird included
    assert list(train.get().index) == ["falcon", "dog", "spider", "fish", "bird"]
    pd.testing.assert_frame_equal(arts["Pandas"].get(), df)
    assert arts["Pandas"].get_local_copy().endswith(".csv.gz")  # type: ignore[union-attr]
    assert json.loads(Path(arts["local file"].get_local_copy()).read_text()) == {"list_of_ints": [1, 2, 3]}
    assert arts["local file"].get() == Path(arts["local file"].get_local_copy())  # type: ignore[arg-type]
    folder = Path(arts["local folder"].get_local_copy())  # type: ignore[arg-type]
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "b.jpg", "nested/a.jpg", "sample.json"]
    assert (folder / "nested" / "a.jpg").read_bytes() == b"\xff\xd8jpeg-a"
    zipped = arts["local folder"].get_local_copy(extract_archive=False)
    assert zipfile.is_zipfile(zipped)  # type: ignore[arg-type]
    jpegs = Path(arts["wildcard jpegs"].get_local_copy())  # type: ignore[arg-type]
    assert sorted(p.relative_to(jpegs).as_posix() for p in jpegs.rglob("*") if p.is_file()) == ["b.jpg",
                                                                                               "nested/a.jpg"]
    assert arts["dictionary"].get() == json.loads(json.dumps(df.to_dict()))
    np.testing.assert_array_equal(arts["Numpy Eye"].get(), eye)
    np.testing.assert_array_equal(np.asarray(arts["pillow_image"].get()), np.asarray(image))
    assert arts["pillow_image"].content_type == "image/png"
    assert arts["config yaml"].get() == config and arts["config yaml"].content_type == "application/yaml"
    assert arts["notes"].get() == "free text, not a path"
    remote = arts["remote"]
    assert remote.url == "https://example.com/data/train.csv" and remote.get_local_copy() is None
    with pytest.raises(ValueError, match="link"):
        remote.get()
    assert arts["object"].get() == Opaque("x", [1, 2])
    np.testing.assert_array_equal(np.load(arts["gone after upload"].get_local_copy()), eye)  # type: ignore[arg-type]
    assert arts["Numpy Eye"].size and len(arts["Numpy Eye"].hash or "") == 64

    # stored as stepwire artifacts, described in the run meta
    view = stepwire.Api(address=address).run(task.id)
    stored = {a.name for a in view.artifacts()}
    assert {"clearml/artifacts/train/train.csv.gz", "clearml/artifacts/Numpy%20Eye/Numpy%20Eye.npz"} <= stored
    assert len(stored) == 12  # the link stores no file
    assert view.meta["clearml_artifacts"]["remote"]["url"] == "https://example.com/data/train.csv"


def test_connect_tracks_changes_args_configuration_and_user_properties(collector: CollectorProcess,
                                                                       tmp_path: Path) -> None:
    address = collector.address
    original = argparse.ArgumentParser.parse_known_args
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--secret", default="s")
    task = Task.init(project_name="params", task_name="capture", address=address,
                     auto_connect_arg_parser={"secret": False})
    args = parser.parse_args(["--lr", "0.5", "--secret", "hidden"])   # captured into Args/
    assert args.lr == 0.5
    params = {"batch_size": 32, "dropout": 0.1, "optimizer": {"name": "sgd"}}
    params = task.connect(params)
    params["batch_size"] = 64            # a change after connect
    params["optimizer"]["name"] = "adam"
    assert task.get_parameters()["General/batch_size"] == "32"
    assert task.flush()                  # flush records the changes
    assert Task.get_task(task_id=task.id, address=address).get_parameter("General/batch_size") == "64"
    params["dropout"] = 0.3              # recorded at close
    params["new_param"] = "this is new"  # a key added after connect is recorded too

    config = task.connect_configuration({"model": {"layers": 3, "act": "relu"}}, name="model config")
    assert config == {"model": {"layers": 3, "act": "relu"}}
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text("epochs: 5\naugment: [flip, crop]\n")
    assert task.connect_configuration(yaml_file, name="file config") == yaml_file
    assert task.connect_configuration(str(yaml_file)) == str(yaml_file)
    task.set_user_properties({"name": "owner", "value": "me", "description": "who ran it"}, backbone="resnet50")
    task.set_user_properties([("gpus", 4)])
    task.delete_user_properties("gpus")
    task.close()
    assert argparse.ArgumentParser.parse_known_args is original
    parser.parse_args(["--lr", "0.9"])   # after close: not captured

    ro = Task.get_task(project_name="params", task_name="capture", address=address)
    assert ro.get_parameters() == {"Args/lr": "0.5", "Args/epochs": "3", "General/batch_size": "64",
                                   "General/dropout": "0.3", "General/optimizer/name": "adam",
                                   "General/new_param": "this is new"}
    assert ro.get_parameters_as_dict() == {"Args": {"lr": "0.5", "epochs": "3"}, "General": {
        "batch_size": "64", "dropout": "0.3", "optimizer": {"name": "adam"}, "new_param": "this is new"}}
    assert ro.get_parameters_as_dict(cast=True)["Args"] == {"lr": 0.5, "epochs": 3}
    assert ro.get_configuration_object_as_dict("model config") == {"model": {"layers": 3, "act": "relu"}}
    assert json.loads(ro.get_configuration_object("model config") or "") == {"model": {"layers": 3, "act": "relu"}}
    assert ro.get_configuration_object("file config") == "epochs: 5\naugment: [flip, crop]\n"
    assert ro.get_configuration_object_as_dict("file config") == {"epochs": 5, "augment": ["flip", "crop"]}
    assert ro.get_configuration_object("General") == "epochs: 5\naugment: [flip, crop]\n"
    assert ro.get_configuration_object("missing") is None
    assert ro.get_user_properties(value_only=True) == {"owner": "me", "backbone": "resnet50"}
    assert ro.get_user_properties()["owner"] == {"section": "properties", "name": "owner", "value": "me",
                                                 "description": "who ran it"}

    # connect(Namespace) and connect(ArgumentParser); auto_connect_arg_parser=False captures nothing
    other = Task.init(project_name="params", task_name="namespace", address=address, auto_connect_arg_parser=False)
    assert argparse.ArgumentParser.parse_known_args is original
    ns = parser.parse_args(["--epochs", "7"])
    assert other.connect(ns) is ns
    ns.epochs = 9
    other.connect(parser, name="Parser")
    other.close()
    assert Task.get_task(task_id=other.id, address=address).get_parameters() == {
        "Args/lr": "0.1", "Args/epochs": "9", "Args/secret": "s", "Parser/lr": "0.1", "Parser/epochs": "3",
        "Parser/secret": "s"}


def test_output_models(collector: CollectorProcess, tmp_path: Path) -> None:
    address = collector.address
    task = Task.init(project_name="models", task_name="train", address=address)
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"epoch-5")
    output_model = OutputModel(task=task, name="resnet", framework="PyTorch", config_dict={"layers": 18},
                               label_enumeration={"cat": 0, "dog": 1}, tags=["best"])
    assert output_model.task == task.id
    url = output_model.update_weights(weights_filename=str(weights), iteration=5)
    assert url.startswith("stepwire-artifact://" + task.id)
    weights.write_bytes(b"epoch-10")     # a later checkpoint replaces the model's weights
    output_model.update_weights(weights_filename=str(weights), iteration=10)
    task.connect_label_enumeration({"plane": 1, "car": 2})
    design = OutputModel(task=task, framework="pytorch")   # model_config.py's way: the design, then the weights
    design.update_design(config_dict={"list_of_ints": [1, 2, 3, 4], "value": 13.37})
    design.update_weights(weights_filename=str(weights))
    final = tmp_path / "final.pt"
    final.write_bytes(b"final")
    task.update_output_model(model_path=str(final), name="final", comment="last epoch")
    default_named = OutputModel()        # the current task's; named after it
    assert default_named.name == "train"
    task.close()

    ro = Task.get_task(task_id=task.id, address=address)
    models = ro.models
    assert models["input"] == [] and [m.name for m in models["output"]] == ["resnet", "train", "final"]
    assert models["output"]["train"].labels == {"plane": 1, "car": 2} and ro.get_labels_enumeration() == {
        "plane": 1, "car": 2}
    assert models["output"]["train"].config_dict == {"list_of_ints": [1, 2, 3, 4], "value": 13.37}
    resnet = models["output"]["resnet"]
    assert resnet.framework == "PyTorch" and resnet.tags == ["best"] and resnet.iteration == 10
    assert resnet.config_dict == {"layers": 18} and resnet.labels == {"cat": 0, "dog": 1}
    assert resnet.id == output_model.id
    assert Path(resnet.get_local_copy()).read_bytes() == b"epoch-10"  # type: ignore[arg-type]
    assert models["output"][-1].comment == "last epoch"
    assert Path(models["output"][-1].get_weights()).read_bytes() == b"final"  # type: ignore[arg-type]
    assert ro.artifacts == {}            # models are not artifacts
    view = stepwire.Api(address=address).run(task.id)
    assert sorted(a.name for a in view.artifacts()) == ["clearml/models/final/final.pt",
                                                        "clearml/models/resnet/model.pt",
                                                        "clearml/models/train/model.pt"]
    assert view.meta["clearml_models"]["resnet"]["kind"] == "model"


def test_get_tasks_tag_operators_filter_and_order(collector: CollectorProcess) -> None:
    address = collector.address
    made = {}
    for name, tags, fail in (("a", ["best", "exp"], False), ("b", ["exp"], False), ("c", ["best", "debug"], True),
                             ("d", [], False)):
        t = Task.init("q", name, tags=tags, task_type="testing" if name == "d" else "training", address=address)
        t.get_logger().report_scalar("m", "v", 1.0, 0)
        if fail:
            t.mark_failed(status_reason="broken")
        else:
            t.close()
        made[name] = t.id

    def names(tasks: list[Task]) -> list[str]:
        return [t.name for t in tasks]

    def get(tags: list[str] | None = None, **kw: object) -> list[str]:
        return names(Task.get_tasks(project_name="q", tags=tags, address=address, **kw))  # type: ignore[arg-type]

    assert get(["best", "-debug"]) == ["a", "b", "c", "d"]     # OR: best, or no debug
    assert get(["__$all", "best", "exp"]) == ["a"]
    assert get(["__$all", "best", "__$not", "debug"]) == ["a"]
    assert get(["__$all", "exp", "__$or", "debug", "__$not", "best"]) == ["b"]   # exp AND (debug OR NOT best)
    assert get(["__$and", "best", "__$or", "debug", "exp"]) == ["a", "c"]
    assert get(["__$not", "exp"]) == ["c", "d"]
    assert get(task_filter={"status": ["completed"]}) == ["a", "b", "d"]
    assert get(task_filter={"status": ["failed"], "tags": ["best"]}) == ["c"]
    assert get(task_filter={"type": ["testing"]}) == ["d"]
    assert get(task_filter={"order_by": ["-created"]}) == ["d", "c", "b", "a"]
    assert get(task_filter={"order_by": ["-name"], "page_size": 2, "page": 1}) == ["b", "a"]
    assert get(task_filter={"order_by": ["-last_update"]})[0] == "d"
    assert Task.get_task(project_name="q", task_filter={"status": ["completed"]}, tags=["best"],
                         address=address).name == "a"
    first = Task.get_tasks(project_name="q", task_filter={"order_by": ["-last_update"]}, address=address)[0]
    assert first.get_last_scalar_metrics() == {"m": {"v": {"last": 1.0, "min": 1.0, "max": 1.0}}}


def test_unknown_filter_warns_once_and_counts(collector: CollectorProcess,
                                              caplog: pytest.LogCaptureFixture) -> None:
    Task.init("w", "one", address=collector.address).close()
    before = unsupported_counts().get("task_filter key 'user'", 0)
    with caplog.at_level(logging.WARNING, logger="stepwire.compat.clearml"):
        for _ in range(3):
            assert len(Task.get_tasks(project_name="w", task_filter={"user": ["me"]}, address=collector.address)) == 1
    assert unsupported_counts()["task_filter key 'user'"] == before + 3
    assert len([r for r in caplog.records if "'user'" in r.getMessage()]) == (1 if before == 0 else 0)


def test_continue_last_task(collector: CollectorProcess) -> None:
    address = collector.address
    first = Task.init("cont", "train", tags=["v1"], address=address)
    first.connect({"lr": 0.1})
    first.set_user_properties(stage="one")
    for it in range(5):
        first.get_logger().report_scalar("loss", "train", 1.0 / (it + 1), it)
    first.get_logger().report_single_value("acc", 0.5)
    first.close()

    again = Task.init("cont", "train", continue_last_task=True, address=address)
    assert again.id == first.id and again.get_initial_iteration() == 5 and again.get_tags() == ["v1"]
    assert again.get_parameters() == {"General/lr": "0.1"}
    assert again.get_user_properties(value_only=True) == {"stage": "one"}
    for it in range(3):                                  # the loop starts again at 0: stored after the old ones
        again.logger.report_scalar("loss", "train", 0.1, it)
    again.logger.report_single_value("acc", 0.9)
    assert again.get_last_iteration() == 7
    again.close()
    ro = Task.get_task(task_id=first.id, address=address)
    assert ro.get_reported_scalars()["loss"]["train"]["x"] == [0, 1, 2, 3, 4, 5, 6, 7]
    assert ro.get_reported_single_value("acc") == 0.9 and ro.get_status() == "completed"

    by_id = Task.init("ignored", "ignored", continue_last_task=first.id, address=address)
    assert by_id.id == first.id and by_id.name == "train" and by_id.get_initial_iteration() == 8
    by_id.close()
    offset = Task.init("cont", "train", reuse_last_task_id=first.id, continue_last_task=0, address=address)
    assert offset.id == first.id and offset.get_initial_iteration() == 0
    offset.close()
    fresh = Task.init("cont", "train", address=address)  # without continue_last_task: a new task
    assert fresh.id != first.id
    fresh.close()
    nothing = Task.init("cont", "never ran", continue_last_task=True, address=address)  # nothing to continue
    assert nothing.get_initial_iteration() == 0 and nothing.id not in (first.id, fresh.id)
    nothing.close()
    with pytest.raises(ValueError, match="could not be found"):
        Task.init("cont", "train", continue_last_task="nope", address=address)
    assert len(Task.get_tasks(project_name="cont", address=address)) == 3


def test_import_offline_session(collector: CollectorProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPWIRE_OFFLINE_DIR", str(tmp_path / "offline"))
    Task.set_offline(offline_mode=True)
    task = Task.init(project_name="examples", task_name="offline run", tags=["off"])
    folder = task.get_offline_mode_folder()
    assert folder is not None
    try:
        task.connect({"lr": 0.01})
        for it in range(4):
            task.get_logger().report_scalar("loss", "train", 1.0 - it / 10, it)
        task.get_logger().report_single_value("best", 0.6)
        task.get_logger().report_text("hello")
        task.upload_artifact("dictionary", {"a": 1})
        task.close()
    finally:
        stop_embedded(folder)
    Task.set_offline(False)
    archive = Path(shutil.make_archive(str(tmp_path / "session"), "zip", folder.parent, folder.name))

    imported = Task.import_offline_session(str(archive), address=collector.address)
    assert imported == task.id
    ro = Task.get_task(task_id=imported, address=collector.address)
    assert ro.name == "offline run" and ro.get_project_name() == "examples" and ro.get_tags() == ["off"]
    assert ro.get_reported_scalars() == {"loss": {"train": {"x": [0, 1, 2, 3], "y": [1.0, 0.9, 0.8, 0.7]}}}
    assert ro.get_reported_single_values() == {"best": 0.6}
    assert ro.get_parameters() == {"General/lr": "0.01"} and ro.get_status() == "completed"
    assert ro.get_reported_console_output() == ["hello"]
    assert ro.artifacts["dictionary"].get() == {"a": 1}
    # importing the folder again into another task, shifted, appends
    other = Task.import_offline_session(folder, previous_task_id=None, iteration_offset=100,
                                        dir=tmp_path / "second")
    try:
        again = Task.get_task(task_id=other, dir=tmp_path / "second")
        assert again.get_reported_scalars()["loss"]["train"]["x"] == [100, 101, 102, 103]
    finally:
        stop_embedded(tmp_path / "second")
    with pytest.raises(ValueError, match="no offline session"):
        Task.import_offline_session(tmp_path / "missing.zip", address=collector.address)


def test_task_parameters(collector: CollectorProcess) -> None:
    from stepwire.compat.clearml.task_parameters import TaskParameters, param, percent_param, range_validator

    class MyParams(TaskParameters):
        iterations = param(type=int, desc="Number of iterations to run", range=(0, 100000), default=10)
        target_accuracy = percent_param(desc="The target accuracy of the model", default=0.9)
        name = param(type=str, default="run", validator=[range_validator(None, "zzz")])

    params = MyParams(iterations=500)
    assert params.to_dict() == {"iterations": 500, "target_accuracy": 0.9, "name": "run"}
    with pytest.raises(ValueError, match=r"target_accuracy must be in range \[0, 1\]"):
        MyParams(target_accuracy=1.5)
    with pytest.raises(TypeError, match="iterations must be int"):
        MyParams(iterations="many")
    with pytest.raises(ValueError, match="Unknown key"):
        params.update_from_dict({"nope": 1})
    params.update_from_dict({"target_accuracy": 0.95})
    task = Task.init("tp", "params", address=collector.address)
    assert params.connect(task) is params
    params.iterations = 700
    task.close()
    assert Task.get_task(task_id=task.id, address=collector.address).get_parameters() == {
        "General/iterations": "700", "General/target_accuracy": "0.95", "General/name": "run"}


def test_what_stepwire_cannot_honour_is_counted(collector: CollectorProcess, tmp_path: Path) -> None:
    before = unsupported_counts()
    task = Task.init("w", "storage", output_uri="s3://bucket/models", reuse_last_task_id="abc",
                     address=collector.address)
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"w")
    OutputModel(task=task, name="m").update_weights(weights_filename=str(weights), upload_uri="s3://bucket/other")
    task.upload_artifact("arr", np.zeros(3), extension_name=".feather")
    task.close()
    after = unsupported_counts()
    for what in ("Task.init(output_uri=<storage>)", "Task.init(reuse_last_task_id=<task id>) without "
                 "continue_last_task", "OutputModel.update_weights(upload_uri=...)",
                 "upload_artifact(extension_name='.feather') for a numpy array"):
        assert after[what] == before.get(what, 0) + 1, what
    ro = Task.get_task(task_id=task.id, address=collector.address)
    np.testing.assert_array_equal(ro.artifacts["arr"].get(), np.zeros(3))   # stored with the default extension
    assert Path(ro.models["output"]["m"].get_weights()).read_bytes() == b"w"  # type: ignore[arg-type]


@pytest.mark.parametrize("monitor", [True, False])
def test_resource_monitoring_and_streams_follow_task_init(collector: CollectorProcess, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str], monitor: bool) -> None:
    """ClearML monitors resources and captures stdout/stderr unless Task.init turns them off: so does the shim."""
    monkeypatch.setenv("STEPWIRE_SYSTEM_METRICS", "1")
    monkeypatch.setenv("STEPWIRE_CONSOLE", "1")
    task = Task.init(project_name="examples", task_name=f"monitor {monitor}", address=collector.address,
                     auto_resource_monitoring=monitor,
                     auto_connect_streams=True if monitor else {"stdout": False, "stderr": False, "logging": True},
                     system_interval=0.1)
    print("hello from the training script")
    task.get_logger().report_scalar("loss", "train", 0.5, iteration=0)
    time.sleep(0.5)  # a few sampling intervals
    task.close()
    assert "hello from the training script" in capsys.readouterr().out  # still printed either way
    view = stepwire.Api(address=collector.address).run(task.id)
    names = {s.name for s in view.series()}
    assert ("system/rss_mib" in names) is monitor
    assert any("hello from the training script" in line.text for line in view.console()) is monitor
