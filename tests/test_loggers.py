"""itwinai-style loggers (``stepwire.loggers``): every kind round-trips, log_freq / log_on_workers filtering,
the logging context, and ``LoggersCollection`` fan-out; against a collector process and the embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

import stepwire
from conftest import CollectorProcess
from readback import only_run, same_histogram
from stepwire.loggers import BaseLogger, Logger, LoggersCollection, StepwireLogger


def test_every_kind_round_trips_through_a_collector(collector: CollectorProcess, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    weights = rng.standard_normal(5_000).astype(np.float32)
    tensor = torch.linspace(-3.0, 3.0, 1_001)
    report = tmp_path / "report.txt"
    report.write_bytes(b"epoch 0: ok\n" * 100)
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(bytes(range(256)) * 10)

    logger = Logger(address=collector.address, experiment_id="itw", run_id="baseline", tags=["a"],
                    config={"seed": 1})
    assert isinstance(logger, StepwireLogger)
    with logger.start_logging(rank=0) as same:
        assert same is logger and logger.run is not None and logger.run.name == "baseline"
        logger.save_hyperparameters({"lr": 0.1, "optimizer": "adam"})
        logger.log(64, "batch_size", kind="param")
        for epoch in range(3):
            logger.log(1.0 / (epoch + 1), "train/loss", kind="metric", step=epoch)
        logger.log(weights, "weights/fc1", kind="torch", step=2)
        logger.log(tensor, "weights/fc2", kind="torch", step=2)
        logger.log({"acc": 0.75, "f1": np.float32(0.5), "per_class": {"cat": 1, "dog": 0.25}}, "val", kind="dict",
                   step=2)
        logger.log("all good", "notes", kind="text", step=2)
        logger.log(str(report), "reports/epoch.txt", kind="artifact", step=2)  # a valid name: stored as given
        logger.log(checkpoint, "../best", kind="artifact")  # not a valid artifact name: the file's name
        run_id = logger.run.id
    assert logger.run is None and not logger.is_initialized

    view = only_run(stepwire.Api(address=collector.address), "itw")
    assert (view.id, view.name, view.tags, view.status) == (run_id, "baseline", ["a"], "finished")
    assert view.config == {"seed": 1, "lr": 0.1, "optimizer": "adam", "batch_size": 64}
    loss = view.scalars("train/loss")
    assert loss["step"].tolist() == [0, 1, 2] and loss["value"].tolist() == [1.0, 0.5, 1.0 / 3]
    assert {name: view.scalars(name)["value"].tolist() for name in ("val/acc", "val/f1", "val/per_class/cat",
                                                                      "val/per_class/dog")} == {
        "val/acc": [0.75], "val/f1": [0.5], "val/per_class/cat": [1.0], "val/per_class/dog": [0.25]}
    assert view.scalars("val/acc")["step"].tolist() == [2]
    (h1,) = view.histograms("weights/fc1")
    (h2,) = view.histograms("weights/fc2")
    assert h1.step == h2.step == 2
    assert same_histogram(h1, weights) and same_histogram(h2, tensor.numpy())
    assert [(t.name, t.step, t.text) for t in view.texts()] == [("notes", 2, "all good")]
    assert [(a.name, a.size) for a in view.artifacts()] == [("model.ckpt", 2560), ("reports/epoch.txt", 1200)]
    assert view.download_artifact("reports/epoch.txt", tmp_path / "got.txt").read_bytes() == report.read_bytes()
    assert view.download_artifact("model.ckpt", tmp_path / "got.ckpt").read_bytes() == checkpoint.read_bytes()


def test_embedded_default_stores_in_savedir_with_auto_steps(data_dir: Path) -> None:
    logger = StepwireLogger(savedir=data_dir, experiment_id="emb")
    with logger.start_logging():
        assert logger.run is not None and logger.run.dir == data_dir.resolve()
        for i in range(5):
            logger.log(float(i), "loss")  # step=None: the run's auto step
        logger.log(np.arange(10), "w", kind="torch")
    view = only_run(stepwire.Api(dir=data_dir), "emb")
    assert view.scalars("loss")["step"].tolist() == [0, 1, 2, 3, 4]
    assert view.scalars("loss")["value"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    (h,) = view.histograms("w")
    assert h.step == 5 and same_histogram(h, np.arange(10))


def test_failure_in_the_context_marks_the_run_failed(collector: CollectorProcess) -> None:
    logger = StepwireLogger(address=collector.address, experiment_id="boom")
    with pytest.raises(ZeroDivisionError), logger.start_logging():
        logger.log(1.0, "loss", step=0)
        _ = 1 / 0
    assert not logger.is_initialized and logger.run is None
    view = only_run(stepwire.Api(address=collector.address), "boom")
    assert view.status == "failed" and view.scalars("loss")["value"].tolist() == [1.0]


def epoch_loop(logger: BaseLogger, batches: int = 10, epochs: int = 2) -> None:
    """A training loop as itwinai's trainers write it: per-batch calls with ``batch_idx``, per-epoch without."""
    step = 0
    for epoch in range(epochs):
        for batch_idx in range(batches):
            logger.log(float(step), "train/loss", step=step, batch_idx=batch_idx)
            step += 1
        logger.log(float(epoch), "val/loss", step=epoch)


@pytest.mark.parametrize(("log_freq", "train_steps"), [
    ("batch", list(range(20))),
    (3, [0, 3, 6, 9, 10, 13, 16, 19]),  # batch_idx 0, 3, 6, 9 of each epoch
    ("epoch", []),
])
def test_log_freq_filters_batch_level_calls(collector: CollectorProcess, log_freq: Any,
                                            train_steps: list[int]) -> None:
    logger = StepwireLogger(address=collector.address, experiment_id="freq", log_freq=log_freq)
    with logger.start_logging():
        epoch_loop(logger)
    view = only_run(stepwire.Api(address=collector.address), "freq")
    assert view.scalars("val/loss")["step"].tolist() == [0, 1]
    assert view.scalars("train/loss")["step"].tolist() == train_steps
    assert view.scalars("train/loss")["value"].tolist() == [float(s) for s in train_steps]


def test_should_log_follows_itwinai() -> None:
    batch, every3, epoch = (StepwireLogger(log_freq=f) for f in ("batch", 3, "epoch"))
    assert [every3.should_log(i) for i in range(7)] == [True, False, False, True, False, False, True]
    assert all(batch.should_log(i) for i in range(7)) and not any(epoch.should_log(i) for i in range(7))
    assert batch.should_log() and every3.should_log() and epoch.should_log()

    def ranks_logging(log_on_workers: Any) -> list[int]:
        logger = StepwireLogger(log_on_workers=log_on_workers, log_freq="batch")
        out = []
        for rank in range(4):
            logger.worker_rank = rank
            if logger.should_log() and logger.should_log(batch_idx=5):
                out.append(rank)
        return out

    assert ranks_logging(0) == [0]
    assert ranks_logging(2) == [2]
    assert ranks_logging(-1) == [0, 1, 2, 3]
    assert ranks_logging([1, 3]) == [1, 3]
    assert ranks_logging([]) == []


def test_ranks_not_in_log_on_workers_log_nothing_and_create_no_run(collector: CollectorProcess, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPWIRE_RUN_ID", "workers-job")  # what the ranks of one job agree on
    artifact = tmp_path / "a.bin"
    artifact.write_bytes(b"x")
    api = stepwire.Api(address=collector.address)
    for rank in (0, 3):
        logger = StepwireLogger(address=collector.address, experiment_id="workers", log_on_workers=[1, 2],
                                log_freq="batch")
        with logger.start_logging(rank=rank):
            assert logger.worker_rank == rank and logger.run is None and not logger.should_log()
            logger.save_hyperparameters({"lr": 1})
            for kind, item in [("metric", 1.0), ("torch", np.ones(3)), ("param", 1), ("dict", {"a": 1}),
                               ("text", "t"), ("artifact", artifact), ("image", np.zeros((4, 4))),
                               ("dataset", [1, 2]), ("no-such-kind", object())]:
                logger.log(item, "x", kind=kind, step=0, batch_idx=0)
    assert api.runs() == []

    logger = StepwireLogger(address=collector.address, experiment_id="workers", log_on_workers=[1, 2])
    with logger.start_logging(rank=2):
        assert logger.run is not None and logger.run.rank == 2
        logger.log(1.5, "x", step=0)
    view = only_run(api, "workers")
    assert view.scalars("x")["value"].tolist() == [1.5] and view.scalars("x")["rank"].tolist() == [2]


def test_logging_outside_the_context_raises() -> None:
    logger = StepwireLogger(log_on_workers=5)  # rank 0 does not log: no collector is needed
    with pytest.raises(RuntimeError, match="not been initialized"):
        logger.log(1.0, "loss")
    with pytest.raises(RuntimeError, match="not been initialized"):
        logger.save_hyperparameters({"lr": 1})
    with pytest.raises(RuntimeError, match="not been initialized"):
        logger.destroy_logger_context()
    with logger.start_logging():
        logger.log(1.0, "loss")
    with pytest.raises(RuntimeError, match="not been initialized"):
        logger.log(1.0, "loss")
    logger.create_logger_context(rank=0)
    logger.create_logger_context(rank=5)  # a second create is ignored (with a warning), as in itwinai
    assert logger.worker_rank == 0 and logger.run is None
    logger.destroy_logger_context()
    assert not logger.is_initialized


def test_kinds_itwinai_does_not_name_are_ignored_as_itwinai_does(collector: CollectorProcess) -> None:
    logger = StepwireLogger(address=collector.address, experiment_id="unknown")
    collection = LoggersCollection([StepwireLogger(log_on_workers=1)])  # rank 0 does not log: no run
    with logger.start_logging(), collection.start_logging():
        logger.log(object(), "fig", kind="no-such-kind", step=0)
        collection.log(object(), "fig", kind="no-such-kind", step=0)
        logger.log(None, None, kind="prov_documents", step=0)  # Prov4ML's only: ignored by the others
        logger.log(2.0, "loss", step=0)
    view = only_run(stepwire.Api(address=collector.address), "unknown")
    assert [s.name for s in view.series()] == ["loss"]
    assert view.texts() == [] and view.media() == [] and view.artifacts() == []


def test_items_that_do_not_fit_their_kind_raise(collector: CollectorProcess, tmp_path: Path) -> None:
    logger = StepwireLogger(address=collector.address)
    with logger.start_logging():
        with pytest.raises(TypeError, match="'loss'"):
            logger.log("high", "loss")
        with pytest.raises(TypeError, match="needs a dict"):
            logger.log(1.0, "d", kind="dict")
        with pytest.raises(TypeError, match="must be a str"):
            logger.log(3, "notes", kind="text")
        with pytest.raises(TypeError, match="needs a file path"):
            logger.log(b"bytes", "file", kind="artifact")
        with pytest.raises(FileNotFoundError):
            logger.log(tmp_path / "missing", "file", kind="artifact")


@pytest.mark.parametrize("log_freq", [0, -1, "step", 1.5, True, None])
def test_bad_log_freq_is_a_value_error(log_freq: Any) -> None:
    with pytest.raises(ValueError, match="log_freq"):
        StepwireLogger(log_freq=log_freq)


@pytest.mark.parametrize(("log_on_workers", "error"), [
    (-2, ValueError), ([0, -1], ValueError), ("0", TypeError), (1.0, TypeError), (True, TypeError),
    (None, TypeError), ([0, "1"], TypeError), ({0}, TypeError),
])
def test_bad_log_on_workers_raises(log_on_workers: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="log_on_workers"):
        StepwireLogger(log_on_workers=log_on_workers)


def test_init_kwargs_are_checked_up_front() -> None:
    assert StepwireLogger(log_on_workers=(0, 2)).log_on_workers == [0, 2]
    assert StepwireLogger(log_freq=cast(Any, np.int64(4))).log_freq == 4
    with pytest.raises(TypeError, match="experiment_id"):
        StepwireLogger(project="p")
    with pytest.raises(TypeError, match="run_id"):
        StepwireLogger(name="n")
    with pytest.raises(TypeError, match="savedir"):
        StepwireLogger(dir="d")
    with pytest.raises(TypeError, match="rank"):
        StepwireLogger(rank=1)
    with pytest.raises(TypeError, match="colour"):
        StepwireLogger(colour="red")
    with pytest.raises(ValueError, match="rank"), StepwireLogger().start_logging(rank=-1):
        pass


def test_collection_fans_out_and_each_member_filters(collector: CollectorProcess) -> None:
    every_batch = StepwireLogger(address=collector.address, experiment_id="batch", log_freq="batch")
    every_5 = StepwireLogger(address=collector.address, experiment_id="five", log_freq=5)
    per_epoch = StepwireLogger(address=collector.address, experiment_id="epoch")  # log_freq="epoch"
    elsewhere = StepwireLogger(address=collector.address, experiment_id="rank1", log_on_workers=1)
    collection = LoggersCollection([every_batch, every_5, per_epoch, elsewhere])
    assert collection.supported_kinds == StepwireLogger.supported_kinds
    with collection.start_logging(rank=0):
        assert all(logger.is_initialized for logger in collection.loggers) and elsewhere.run is None
        collection.save_hyperparameters({"lr": 0.01})
        epoch_loop(collection)
    assert not any(logger.is_initialized for logger in (collection, *collection.loggers))

    api = stepwire.Api(address=collector.address)
    assert sorted(view.project for view in api.runs()) == ["batch", "epoch", "five"]
    for project, train_steps in [("batch", list(range(20))), ("five", [0, 5, 10, 15]), ("epoch", [])]:
        view = only_run(api, project)
        assert view.config == {"lr": 0.01} and view.status == "finished"
        assert view.scalars("train/loss")["step"].tolist() == train_steps
        assert view.scalars("val/loss")["value"].tolist() == [0.0, 1.0]

    with pytest.raises(ValueError, match="more than once"):
        LoggersCollection([every_5, every_5])
    with pytest.raises(RuntimeError, match="not been initialized"):
        collection.log(1.0, "x")
