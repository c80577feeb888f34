"""``stepwire.compat.itwinai.loggers`` behaves as ``itwinai.loggers`` 0.4: the scenarios of itwinai's own logger
tests (each upstream logger logging a metric, a collection of all of them, Prov4ML's rank-1 context) against
real stepwire runs, a user's ``Logger`` subclass inside a ``LoggersCollection``, rank filtering with
``start_logging(rank=1)`` in one process, and itwinai's warning and error texts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import stepwire
import stepwire.logger_kinds
from conftest import CollectorProcess
from stepwire.compat.itwinai import loggers as itw
from stepwire.compat.itwinai.loggers import (
    ConsoleLogger,
    EmptyLogger,
    Logger,
    LoggersCollection,
    MLFlowLogger,
    Prov4MLLogger,
    StepwireLogger,
    TensorBoardLogger,
    WandBLogger,
    check_initialized,
    check_not_initialized,
    get_mlflow_logger,
)


def only_run(api: stepwire.Api, project: str) -> stepwire.RunView:
    (view,) = api.runs(project=project)
    return view


def metric_points(view: stepwire.RunView, name: str) -> list[tuple[int, float]]:
    got = view.scalars(name)
    return list(zip(got["step"].tolist(), got["value"].tolist(), strict=True))


def test_the_mirror_is_the_shared_implementation() -> None:
    assert Logger is stepwire.loggers.BaseLogger and StepwireLogger is stepwire.loggers.StepwireLogger
    assert issubclass(LoggersCollection, stepwire.loggers.LoggersCollection)
    for cls in (ConsoleLogger, MLFlowLogger, WandBLogger, TensorBoardLogger, Prov4MLLogger):
        assert issubclass(cls, StepwireLogger) and cls.supported_kinds == stepwire.logger_kinds.KINDS
    with pytest.raises(TypeError, match="abstract"):
        Logger()  # type: ignore[abstract]


def test_each_upstream_logger_logs_a_metric(collector: CollectorProcess, caplog: pytest.LogCaptureFixture) -> None:
    """itwinai's test_{console,mlflow,wandb,tensorboard}_logger_log: create, log 0.5 at step 1, destroy."""
    address = collector.address
    cases: list[tuple[itw.StepwireLogger, str]] = [
        (ConsoleLogger(log_freq=1, address=address), "default"),
        (MLFlowLogger(experiment_name="test_experiment", run_name="mlf", address=address), "test_experiment"),
        (WandBLogger(project_name="test_project", address=address), "test_project"),
        (TensorBoardLogger(framework="pytorch", address=address, experiment_id="tb"), "tb"),
    ]
    with caplog.at_level(logging.INFO, logger="stepwire"):
        for logger, _ in cases:
            logger.create_logger_context()
            assert logger.is_initialized and logger.run is not None
            logger.log(0.5, "test_metric", kind="metric", step=1)
            logger.destroy_logger_context()
            assert not logger.is_initialized and logger.run is None
    assert "ConsoleLogger: test_metric = 0.5" in caplog.messages
    api = stepwire.Api(address=address)
    for _, project in cases:
        view = only_run(api, project)
        assert metric_points(view, "test_metric") == [(1, 0.5)] and view.status == "finished"
    assert only_run(api, "test_experiment").name == "mlf"


def test_tensorboard_logger_logs_scalar_image_and_text(collector: CollectorProcess) -> None:
    torch = pytest.importorskip("torch")
    logger = TensorBoardLogger(address=collector.address)
    with logger.start_logging():
        logger.log(0.5, "test_scalar", kind="metric", step=1)
        logger.log(torch.zeros([3, 10, 10]), "test_image", kind="image", step=1)
        logger.log("test text", "test_text", kind="text", step=1)
    view = only_run(stepwire.Api(address=collector.address), "default")  # itwinai's has no experiment name
    assert metric_points(view, "test_scalar") == [(1, 0.5)]
    assert [(m.name, m.step, m.kind, m.width, m.height) for m in view.media()] == [
        ("test_image", 1, "image", 10, 10)]
    assert [(t.name, t.step, t.text) for t in view.texts()] == [("test_text", 1, "test text")]
    with pytest.raises(ValueError, match=r"Accepted values for TensorBoardLogger framework are 'tensorflow' and "
                                         r"'pytorch'\. Received jax"):
        TensorBoardLogger(framework="jax")  # type: ignore[arg-type]


def test_collection_of_every_upstream_logger(collector: CollectorProcess, caplog: pytest.LogCaptureFixture) -> None:
    """itwinai's test_loggers_collection_log: one of each type, one metric reaching them all."""
    address = collector.address
    members: list[Logger] = [ConsoleLogger(log_freq=1, address=address),
                             MLFlowLogger(experiment_name="mlflow", address=address),
                             WandBLogger(project_name="wandb", address=address),
                             TensorBoardLogger(address=address, experiment_id="tensorboard"),
                             Prov4MLLogger(experiment_name="prov", address=address)]
    collection = LoggersCollection(members)
    with caplog.at_level(logging.INFO, logger="stepwire"):
        collection.create_logger_context()
        collection.log(0.5, "test_metric", kind="metric", step=1)
        collection.destroy_logger_context()
    assert "ConsoleLogger: test_metric = 0.5" in caplog.messages
    views = stepwire.Api(address=address).runs()
    assert sorted(v.project for v in views) == ["default", "mlflow", "prov", "tensorboard", "wandb"]
    assert all(metric_points(v, "test_metric") == [(1, 0.5)] and v.status == "finished" for v in views)
    assert get_mlflow_logger(collection) is members[1] and get_mlflow_logger(members[1]) is members[1]
    assert get_mlflow_logger(members[0]) is None and get_mlflow_logger(None) is None

    with pytest.raises(ValueError, match=r"LoggersCollection does not allow for multiple loggers of the same type\. "
                                         r"Received: \[<class '.*\.WandBLogger'>, <class '.*\.WandBLogger'>\]"):
        LoggersCollection([WandBLogger(), WandBLogger()])
    two = stepwire.loggers.LoggersCollection([StepwireLogger(), StepwireLogger()])  # stepwire's own allows it
    assert len(two.loggers) == 2


class RecordingLogger(Logger):
    """A user's logger written against itwinai's ``Logger``: it records every call it gets."""

    supported_kinds = ("metric",)

    def __init__(self, savedir: str = "mllogs", log_freq: Any = "epoch", log_on_workers: Any = 0) -> None:
        super().__init__(savedir=savedir, log_freq=log_freq, log_on_workers=log_on_workers)
        self.calls: list[tuple[str, Any]] = []

    @check_not_initialized
    def create_logger_context(self, rank: int = 0, **kwargs: Any) -> None:
        self.worker_rank = rank
        self.calls.append(("create", {"rank": rank, **kwargs}))
        self.is_initialized = True

    @check_initialized
    def destroy_logger_context(self) -> None:  # itwinai's signature: no status
        self.calls.append(("destroy", None))
        self.is_initialized = False

    @check_initialized
    def save_hyperparameters(self, params: dict[str, Any]) -> None:
        self.calls.append(("params", params))

    @check_initialized
    def log(self, item: Any, identifier: Any, kind: str = "metric", step: int | None = None,
            batch_idx: int | None = None, **kwargs: Any) -> None:
        if self.should_log(batch_idx):
            self.calls.append(("log", (item, identifier, kind, step, batch_idx, kwargs)))


def test_a_user_subclass_inside_a_collection(collector: CollectorProcess) -> None:
    mine = RecordingLogger(log_freq=2)
    ours = StepwireLogger(address=collector.address, experiment_id="with-user", log_freq="batch")
    collection = LoggersCollection([mine, ours])
    with collection.start_logging(rank=0) as same:
        assert same is collection
        collection.save_hyperparameters({"lr": 0.1})
        for batch_idx in range(3):
            collection.log(float(batch_idx), "loss", step=batch_idx, batch_idx=batch_idx, context="training")
        collection.log("a note", "notes", kind="text", step=3)
    assert mine.calls == [
        ("create", {"rank": 0}), ("params", {"lr": 0.1}),
        ("log", (0.0, "loss", "metric", 0, 0, {"context": "training"})),
        ("log", (2.0, "loss", "metric", 2, 2, {"context": "training"})),
        ("log", ("a note", "notes", "text", 3, None, {})),  # every kind reaches every member, as in itwinai
        ("destroy", None)]
    view = only_run(stepwire.Api(address=collector.address), "with-user")
    assert metric_points(view, "loss") == [(0, 0.0), (1, 1.0), (2, 2.0)] and view.config == {"lr": 0.1}
    assert view.status == "finished"

    mine.calls.clear()
    with pytest.raises(KeyError), collection.start_logging(rank=0):
        collection.log(1.0, "loss", step=0)
        raise KeyError("boom")
    assert mine.calls[-1] == ("destroy", None) and not collection.is_initialized
    failed = [v for v in stepwire.Api(address=collector.address).runs(project="with-user") if v.status == "failed"]
    assert len(failed) == 1 and metric_points(failed[0], "loss") == [(0, 1.0)]


def test_rank_1_in_one_process_selects_what_logs(collector: CollectorProcess) -> None:
    """Prov4ML's tests create the context with rank=1 in a single process: the rank is a number to filter on."""
    api = stepwire.Api(address=collector.address)
    quiet = Prov4MLLogger(experiment_name="rank1", address=collector.address)  # log_on_workers=0
    quiet.create_logger_context(rank=1)
    assert quiet.is_initialized and quiet.worker_rank == 1 and quiet.run is None and not quiet.should_log()
    quiet.log(123, "number", kind="metric")
    quiet.save_hyperparameters({"learning_rate": 0.01})
    quiet.destroy_logger_context()
    assert api.runs() == []

    for workers in (1, [1, 3], -1):
        logger = Prov4MLLogger(experiment_name="rank1", address=collector.address, log_on_workers=workers)
        with logger.start_logging(rank=1):
            assert logger.run is not None and logger.worker_rank == 1
            logger.save_hyperparameters({"learning_rate": 0.01, "batch_size": 32})
            logger.log(item=0.95, identifier="accuracy", kind="metric", step=1)
    views = api.runs(project="rank1")
    assert len(views) == 3
    for view in views:
        assert metric_points(view, "accuracy") == [(1, 0.95)]
        assert view.config == {"learning_rate": 0.01, "batch_size": 32} and view.status == "finished"


def test_in_a_launched_job_the_rank_is_the_job_rank(collector: CollectorProcess,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a launcher (torchrun's variables here) the rank is passed on: the run is the job's, rank 1 of 2."""
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "job-7",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    logger = MLFlowLogger(experiment_name="job", address=collector.address, log_on_workers=-1)
    with logger.start_logging(rank=1):
        assert logger.run is not None and (logger.run.rank, logger.run.world_size) == (1, 2)
        logger.log(0.5, "loss", step=0)
    view = only_run(stepwire.Api(address=collector.address), "job")
    assert view.scalars("loss")["rank"].tolist() == [1] and view.scalars("loss")["value"].tolist() == [0.5]


def test_double_initialization_warns_with_itwinai_text(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    logger = MLFlowLogger(savedir=tmp_path, log_on_workers=1)  # rank 0 does not log: no collector needed
    collection = LoggersCollection([RecordingLogger()])
    with caplog.at_level(logging.WARNING, logger="stepwire"):
        logger.create_logger_context()
        assert logger.create_logger_context(rank=1) is None and logger.worker_rank == 0
        with collection.start_logging():
            collection.create_logger_context()
            with logger.start_logging():  # already initialized: skipped, and the context still ends it
                pass
    assert caplog.messages == ["Trying to initialize MLFlowLogger twice.. Skipping initialization.",
                               "Trying to initialize LoggersCollection twice.. Skipping initialization.",
                               "Trying to initialize MLFlowLogger twice.. Skipping initialization."]
    assert not logger.is_initialized and not collection.is_initialized


def test_calls_outside_the_context_raise_itwinai_error(tmp_path: Path) -> None:
    message = ("MLFlowLogger has not been initialized. Use either the ``start_logging`` context or the "
               "``create_logger_context`` method.")
    logger = MLFlowLogger(savedir=tmp_path, log_on_workers=1)
    for call in (lambda: logger.log(1.0, "x"), lambda: logger.save_hyperparameters({}),
                 logger.destroy_logger_context):
        with pytest.raises(RuntimeError) as err:
            call()
        assert str(err.value) == message
    collection = LoggersCollection([logger])
    with pytest.raises(RuntimeError, match=r"^LoggersCollection has not been initialized"):
        collection.log(1.0, "x")
    with pytest.raises(ValueError) as bad:
        MLFlowLogger(log_freq=0)
    assert str(bad.value) == "Wrong value for 'log_freq'. Supported values are: ['epoch', 'batch'] or int > 0. " \
                             "Received: 0"


def test_upstream_only_arguments_and_empty_logger(collector: CollectorProcess, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stepwire.logger_kinds, "_warned", set())
    with pytest.warns(UserWarning, match=r"MLFlowLogger\(tracking_uri=\.\.\.\) is not supported"):
        logger = MLFlowLogger(tracking_uri="file:///tmp/mlruns", run_description="baseline", address=collector.address)
    MLFlowLogger(tracking_uri="http://elsewhere:5000", address=collector.address)  # warned once
    with logger.start_logging():
        logger.log(0.1, "x", step=0)
    view = only_run(stepwire.Api(address=collector.address), "unnamed-experiment")
    assert view.meta["description"] == "baseline"

    offline = WandBLogger(savedir=tmp_path / "data", offline_mode=True, project_name="off")
    with offline.start_logging():
        assert offline.run is not None
        offline.log(1.0, "loss", step=0)
    assert list((tmp_path / "data" / "spool").iterdir())  # written to the spool only, for ``stepwire sync``

    empty = EmptyLogger()
    with empty.start_logging():
        empty.log(1.0, "x")
        empty.save_hyperparameters({"a": 1})
    assert not empty.is_initialized
    assert Path(empty.serialize({"a": 1}, str(tmp_path / "obj.pkl"))).is_file()
