"""One adapter per logger, each doing what that logger's users write, plus a read-back of what it stored.

Every adapter logs through its library's public API the way its documentation shows (W&B ``log`` and
``watch``, MLflow ``log_metric(s)``, TensorBoard ``SummaryWriter``, ClearML ``Logger.report_*``) and then
counts what actually reached its storage, so that a logger that drops data cannot win. What a library cannot
do (MLflow has no histograms) is reported as unsupported, never faked.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np


class Unsupported(Exception):
    """The library has no way to do this workload."""


class Peer:
    """A logger under test. ``start`` opens a run in ``workdir``; ``stored`` counts the scalar points and
    histograms that reached storage after ``finish``."""

    name = ""
    module = ""  # the import that must succeed for the peer to run
    items_per_watched_parameter = 1  # what watching logs per parameter and step (a histogram)

    @classmethod
    def available(cls) -> bool:
        """Whether the library is installed."""
        return not cls.module or importlib.util.find_spec(cls.module) is not None

    def start(self, workdir: Path) -> None:
        """Open a run writing under ``workdir``."""

    def scalar(self, name: str, value: float, step: int) -> None:
        """Log one scalar."""

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Log several scalars at one step."""

    def histogram(self, name: str, values: np.ndarray, step: int) -> None:
        """Log the histogram of ``values``."""
        raise Unsupported

    def watch(self, model: Any) -> None:
        """Arrange for every parameter's gradient histogram to be logged at every step."""
        raise Unsupported

    def after_backward(self, model: Any, step: int) -> None:
        """Called after each backward pass (for peers that log gradients by hand)."""

    def finish(self) -> None:
        """Close the run, flushing everything."""

    def stored(self) -> int | None:
        """Scalar points plus histograms found in storage, or None if it cannot be read back."""
        return None


class Baseline(Peer):
    """No logging at all: the floor every overhead is measured against."""

    name = "baseline"

    def histogram(self, name: str, values: np.ndarray, step: int) -> None:
        pass

    def watch(self, model: Any) -> None:
        pass


class Stepwire(Peer):
    """stepwire through the embedded default in ``workdir``."""

    name = "stepwire"
    items_per_watched_parameter = 6  # a histogram plus norm, min, max, mean and non-finite count

    def start(self, workdir: Path) -> None:
        import stepwire

        self.dir = workdir
        self.run = stepwire.init(project="bench", dir=workdir, quiet=True)
        self.scalar = self.run.log_scalar  # type: ignore[method-assign]  # the call users make, unwrapped

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def histogram(self, name: str, values: np.ndarray, step: int) -> None:
        self.run.log_histogram(name, values, step=step)

    def watch(self, model: Any) -> None:
        self.run.watch(model, log="gradients", every=1)

    def finish(self) -> None:
        self.run.finish()

    def stored(self) -> int | None:
        import stepwire

        return sum(s.items for s in stepwire.Api(dir=self.dir).run(self.run.id).series())


class TensorBoard(Peer):
    """``torch.utils.tensorboard.SummaryWriter``; histograms binned by TensorBoard (numpy)."""

    name = "tensorboard"
    module = "tensorboard"

    def start(self, workdir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = workdir / "tb"
        self.writer = SummaryWriter(str(self.logdir))
        self.scalar = self.writer.add_scalar  # type: ignore[assignment]

    def scalars(self, values: dict[str, float], step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def histogram(self, name: str, values: np.ndarray, step: int) -> None:
        self.writer.add_histogram(name, values, step)

    def watch(self, model: Any) -> None:
        self.model = model

    def after_backward(self, model: Any, step: int) -> None:
        for n, p in model.named_parameters():  # what TensorBoard users write: one add_histogram per parameter
            self.writer.add_histogram(f"gradients/{n}", p.grad, step)

    def finish(self) -> None:
        self.writer.close()

    def stored(self) -> int | None:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(self.logdir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
        acc.Reload()
        tags = acc.Tags()
        return (sum(len(acc.Scalars(t)) for t in tags.get("scalars", []))
                + sum(len(acc.Histograms(t)) for t in tags.get("histograms", []))
                + sum(len(acc.Tensors(t)) for t in tags.get("tensors", [])))


class WandB(Peer):
    """W&B in offline mode (``wandb.init(mode="offline")``); histograms as ``wandb.Histogram``, gradients
    through ``wandb.watch(log="gradients", log_freq=1)``."""

    name = "wandb (offline)"
    module = "wandb"

    def start(self, workdir: Path) -> None:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self.wandb = wandb
        self.dir = workdir
        self.run = wandb.init(mode="offline", dir=str(workdir), project="bench",
                              settings=wandb.Settings(console="off", x_disable_stats=True, x_disable_meta=True))

    def scalar(self, name: str, value: float, step: int) -> None:
        self.run.log({name: value}, step=step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def histogram(self, name: str, values: np.ndarray, step: int) -> None:
        self.run.log({name: self.wandb.Histogram(values)}, step=step)

    def watch(self, model: Any) -> None:
        self.run.watch(model, log="gradients", log_freq=1)

    def finish(self) -> None:
        self.run.finish()

    def stored(self) -> int | None:
        from wandb.proto import wandb_internal_pb2

        files = glob.glob(str(self.dir / "wandb" / "offline-run-*" / "*.wandb"))
        if not files:
            return None
        n = 0
        for data in _leveldb_log_records(Path(files[0]).read_bytes()):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(data)
            if rec.WhichOneof("record_type") == "history":  # one entry per logged key (a histogram has parts)
                keys = {item.key or (item.nested_key[0] if item.nested_key else "") for item in rec.history.item}
                n += sum(1 for k in keys if k and not k.startswith("_"))
        return n


def _leveldb_log_records(raw: bytes) -> list[bytes]:
    """Records of a W&B transaction log (``.wandb``): a 7-byte file header, then LevelDB-log 32 KiB blocks of
    chunks ``crc32 (4) | length (2) | type (1: full, 2: first, 3: middle, 4: last) | data``."""
    block, pos, out, pending = 32768, 7, [], b""
    while pos + 7 <= len(raw):
        room = block - pos % block
        if room < 7:  # block trailer padding
            pos += room
            continue
        length = int.from_bytes(raw[pos + 4:pos + 6], "little")
        kind = raw[pos + 6]
        data = raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        if kind == 1:
            out.append(data)
        elif kind == 2:
            pending = data
        elif kind == 3:
            pending += data
        elif kind == 4:
            out.append(pending + data)
            pending = b""
    return out


class MLflow(Peer):
    """MLflow with a local SQLite store; ``synchronous`` False is its asynchronous logging."""

    module = "mlflow"

    def __init__(self, synchronous: bool = True) -> None:
        self.synchronous = synchronous
        self.name = "mlflow (sync)" if synchronous else "mlflow (async)"

    def start(self, workdir: Path) -> None:
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
        self.run = mlflow.start_run()

    def scalar(self, name: str, value: float, step: int) -> None:
        self.mlflow.log_metric(name, value, step=step, synchronous=self.synchronous)

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(values, step=step, synchronous=self.synchronous)

    def finish(self) -> None:
        self.mlflow.end_run()

    def stored(self) -> int | None:
        client = self.mlflow.tracking.MlflowClient()
        run = client.get_run(self.run.info.run_id)
        return sum(len(client.get_metric_history(run.info.run_id, key)) for key in run.data.metrics)


class ClearML(Peer):
    """ClearML in offline mode; histograms binned with numpy (32 bins) and reported as bars, as its docs show."""

    name = "clearml (offline)"
    module = "clearml"

    def start(self, workdir: Path) -> None:
        from clearml import Task

        os.environ["CLEARML_CACHE_DIR"] = str(workdir / "clearml-cache")
        os.environ.setdefault("CLEARML_SKIP_REPO_DETECTION", "1")
        Task.set_offline(True)
        self.task = Task.init(project_name="bench", task_name="bench", auto_connect_frameworks=False,
                              auto_resource_monitoring=False, auto_connect_streams=False, reuse_last_task_id=False)
        self.logger = self.task.get_logger()

    def scalar(self, name: str, value: float, step: int) -> None:
        self.logger.report_scalar(name, name, value, step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for k, v in values.items():
            self.logger.report_scalar(k, k, v, step)

    def histogram(self, name: str, values: np.ndarray, step: int) -> None:
        counts, _ = np.histogram(values, bins=32)
        self.logger.report_histogram(name, name, counts, step)

    def watch(self, model: Any) -> None:
        pass

    def after_backward(self, model: Any, step: int) -> None:
        for n, p in model.named_parameters():
            self.histogram(f"gradients/{n}", p.grad.numpy(), step)

    def finish(self) -> None:
        self.folder = Path(self.task.get_offline_mode_folder())
        self.task.close()

    def stored(self) -> int | None:
        n = 0
        for path in self.folder.glob("*.json*"):
            for line in path.read_text().splitlines():
                try:
                    events = json.loads(line)
                except ValueError:
                    continue
                for e in events if isinstance(events, list) else [events]:
                    if isinstance(e, dict) and e.get("type") in ("training_stats_scalar", "plot"):
                        n += 1
        return n


def all_peers() -> list[Peer]:
    """Every logger of the comparison, the baseline first."""
    return [Baseline(), Stepwire(), WandB(), MLflow(True), MLflow(False), TensorBoard(), ClearML()]
