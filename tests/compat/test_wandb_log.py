"""W&B-style scripts (stepwire.compat.wandb) against the embedded collector: steps, commit, nested names,
define_metric, config and summary read back through stepwire.Api; modes disabled and offline (+ stepwire sync)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from absl import flags

import stepwire
import stepwire.compat.wandb as wandb
from conftest import CollectorProcess, stop_embedded

pytestmark = pytest.mark.usefixtures("wandb_state")


def points(view: stepwire.RunView, name: str) -> list[tuple[int, float]]:
    """``[(step, value), ...]`` of scalar series ``name``."""
    s = view.scalars(name)
    return list(zip(s["step"].tolist(), s["value"].tolist(), strict=True))


def test_steps_commit_and_nesting_follow_wandb() -> None:
    run = wandb.init(project="wb", name="steps", config={"lr": 0.1})
    assert wandb.run is run and run.step == 0 and run.project == "wb" and run.name == "steps"
    wandb.log({"loss": 1.0, "val": {"acc": 0.5, "top": {"k5": 0.75}}})   # step 0, then 1
    wandb.log({"a": 2.0}, commit=False)                                 # accumulates into step 1
    wandb.log({"b": np.float32(3.0)})                                   # step 1 committed, then 2
    wandb.log({"c": 4.0}, step=10)                                      # jumps to 10, not committed
    wandb.log({"d": 5.0})                                               # merges into 10, then 11
    wandb.log({"e": 6.0}, step=11, commit=False)                        # the current step: merges
    wandb.log({"f": np.array(7.0), "g": True}, step=11)                 # still 11, not committed
    wandb.log({"late": 8.0}, step=3)                                    # lower: stored at 3, W&B drops it
    assert run.step == 11
    wandb.log({"h": 9.0}, commit=True)                                  # 11, then 12
    assert run.step == 12
    run_id = run.id
    wandb.finish()
    assert wandb.run is None
    view = stepwire.Api().run(run_id)
    got = {s.name: points(view, s.name) for s in view.series()}
    assert got == {"loss": [(0, 1.0)], "val.acc": [(0, 0.5)], "val.top.k5": [(0, 0.75)], "a": [(1, 2.0)],
                   "b": [(1, 3.0)], "c": [(10, 4.0)], "d": [(10, 5.0)], "e": [(11, 6.0)], "f": [(11, 7.0)],
                   "g": [(11, 1.0)], "late": [(3, 8.0)], "h": [(11, 9.0)]}
    assert view.status == "finished" and view.project == "wb" and view.name == "steps"


def test_define_metric_step_metric_and_summary() -> None:
    # W&B's documented pattern: each group of metrics against its own x-axis
    run = wandb.init(project="wb")
    wandb.define_metric("train/step", summary="best", goal="maximize")
    wandb.define_metric("train/*", step_metric="train/step")
    wandb.define_metric("validation/step")
    wandb.define_metric("validation/*", step_metric="validation/step", summary="max")
    wandb.define_metric("loss", summary="min,mean")
    wandb.define_metric("hidden", summary="none")
    for i in range(4):
        wandb.log({"train/step": 2 ** i, "train/loss": 1 / (i + 1), "loss": 4.0 - i, "hidden": float(i)})
        if i % 2:
            wandb.log({"validation/step": i, "validation/acc": i / 10})
    wandb.log({"validation/acc": 0.25})  # no x value in this call: the last one logged (step_sync)
    with pytest.raises(wandb.Error, match="glob suffixes only"):
        wandb.define_metric("a*b")
    with pytest.raises(wandb.Error, match="summary op"):
        wandb.define_metric("x", summary="median")
    wandb.summary["best_model"] = "epoch-3"
    wandb.summary.update({"final": 1.5})
    assert run.summary["loss"] == {"min": 1.0, "mean": 2.5} and run.summary.final == 1.5
    assert "hidden" not in run.summary
    run_id = run.id
    wandb.finish()
    view = stepwire.Api().run(run_id)
    assert points(view, "train/loss") == [(1, 1.0), (2, 0.5), (4, 1 / 3), (8, 0.25)]
    assert points(view, "train/step") == [(0, 1.0), (1, 2.0), (3, 4.0), (4, 8.0)]   # at the W&B step
    assert points(view, "validation/acc") == [(1, 0.1), (3, 0.3), (3, 0.25)]
    assert points(view, "validation/step") == [(2, 1.0), (5, 3.0)]
    assert points(view, "loss") == [(0, 4.0), (1, 3.0), (3, 2.0), (4, 1.0)]
    assert points(view, "hidden") == [(0, 0.0), (1, 1.0), (3, 2.0), (4, 3.0)]   # stored, left out of the summary
    assert view.meta["summary"] == {
        "best_model": "epoch-3", "final": 1.5, "train/step": {"best": 8.0}, "train/loss": 0.25,
        "loss": {"min": 1.0, "mean": 2.5},
        "validation/step": 3.0, "validation/acc": {"max": 0.3}}


def test_config_from_argparse_and_changes_reach_the_store() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args([])
    run = wandb.init(project="wb", config={"model": {"depth": 4, "act": "relu"}}, tags=["t1"], group="g",
                     job_type="train", notes="first try", entity="me")
    wandb.config.update(args)
    fv = flags.FlagValues()
    flags.DEFINE_integer("warmup", 100, "warm-up steps", flag_values=fv)
    flags.DEFINE_string("data", "mnist", "data set", flag_values=fv)
    fv(["train.py", "--warmup=50"])
    wandb.config.update(fv)   # absl flags, as W&B takes them
    wandb.config.epochs = 3
    wandb.config["opt"] = {"name": "sgd", "momentum": np.float64(0.9)}
    wandb.config.setdefaults({"epochs": 99, "seed": 1})
    with pytest.raises(ValueError, match="allow_val_change"):
        wandb.config.update({"lr": 0.5})
    wandb.config.update({"lr": 0.5}, allow_val_change=True)
    assert wandb.config.lr == 0.5 and wandb.config["batch_size"] == 64 and "seed" in wandb.config
    assert wandb.config.get("missing") is None and sorted(wandb.config.keys())[:3] == ["batch_size", "data", "epochs"]
    assert run.config is wandb.config and run.stepwire_run.config is wandb.config  # one object for both APIs
    run.stepwire_run.config.update({"seed": 1})
    run.name = "renamed"
    run.tags = ("t1", "t2")
    assert run.name == "renamed" and run.tags == ("t1", "t2")
    expected = {"model": {"depth": 4, "act": "relu"}, "batch_size": 64, "lr": 0.5, "warmup": 50, "data": "mnist",
                "epochs": 3,
                "opt": {"name": "sgd", "momentum": 0.9}, "seed": 1}
    assert wandb.config.as_dict() == expected and type(wandb.config.opt["momentum"]) is float
    run_id = run.id
    wandb.finish()
    view = stepwire.Api().run(run_id)
    assert view.config == expected and view.tags == ["t1"] and view.name == f"run-{run_id[:6]}"  # as stored at init
    assert view.meta["wandb"] == {"entity": "me", "group": "g", "job_type": "train", "notes": "first try",
                                  "name": "renamed", "tags": ["t1", "t2"]}


def test_init_on_one_rank_of_a_launched_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B scripts often call init on rank 0 only: no collective, a run of its own, the rank in the meta."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("STEPWIRE_RUN_ID", raising=False)
    for var in ("TORCHELASTIC_RUN_ID", "PMIX_NAMESPACE", "OMPI_MCA_orte_ess_jobid", "SLURM_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RuntimeError, match="cannot agree on a run id"):
        stepwire.init(project="wb", quiet=True)  # stepwire's own init wants every rank in one run
    run = wandb.init(project="wb", group="ddp")
    wandb.log({"loss": 0.5})
    assert run.stepwire_run.rank == 0 and run.stepwire_run.world_size == 1
    wandb.finish()
    view = stepwire.Api().run(run.id)
    assert view.meta["wandb"] == {"group": "ddp", "rank": 1, "world_size": 2} and view.status == "finished"
    assert points(view, "loss") == [(0, 0.5)]


def test_stepwire_run_config_and_summary() -> None:
    """The same objects on stepwire's own Run: changes allowed, explicit summary values in the meta."""
    with stepwire.init(project="sw", config={"lr": 0.1}, quiet=True) as run:
        run.config.lr = 0.2
        run.config.update({"layers": [1, 2]})
        run.summary["best"] = 0.75
        run.summary.note = "ok"
        assert run.config.as_dict() == {"lr": 0.2, "layers": [1, 2]} and dict(run.summary) == {"best": 0.75,
                                                                                                "note": "ok"}
        run.log({"x": 1.0})
    view = stepwire.Api().run(run.id)
    assert view.config == {"lr": 0.2, "layers": [1, 2]} and view.meta["summary"] == {"best": 0.75, "note": "ok"}


def test_values_texts_and_unsupported_ones() -> None:
    run = wandb.init(project="wb")
    wandb.log({"msg": "hello", "arr": np.arange(5.0)})
    with pytest.warns(wandb.UnsupportedWarning, match="logging a list"):
        wandb.log({"numbers": [1, 2, 3], "ok": 1.0})
    assert wandb.init(project="other") is run   # W&B's default: the run already going
    with pytest.warns(wandb.UnsupportedWarning, match=r"wandb.init\(magic=...\)"):
        second_run = wandb.init(project="wb", reinit="finish_previous", magic=True)
    assert run._finished and wandb.run is second_run
    beside = wandb.init(project="wb", reinit="create_new")
    assert wandb.run is beside and not second_run._finished
    beside.finish()
    assert wandb.run is None and wandb._live == [second_run]
    second_run.alert(title="diverged", text="loss is NaN", level="WARN")
    second = second_run.id
    second_run.finish()
    assert wandb._live == []
    first = stepwire.Api().run(run.id)
    assert [(t.name, t.step, t.text) for t in first.texts()] == [("msg", 0, "hello")]
    assert [h.count for h in first.histograms("arr")] == [5] and points(first, "ok") == [(1, 1.0)]
    assert {s.name for s in first.series()} == {"arr", "ok"} and first.meta["summary"] == {"msg": "hello",
                                                                                            "ok": 1.0}
    assert [(t.name, t.text) for t in stepwire.Api().run(second).texts()] == [("alert/diverged",
                                                                               "WARN: loss is NaN")]
    assert wandb.unsupported_counts() == {"logging a list (key 'numbers')": 1, "wandb.init(magic=...)": 1}


def test_before_init_and_disabled_mode(wandb_state: Path) -> None:
    assert wandb.run is None
    with pytest.raises(wandb.Error, match=r"wandb\.init\(\) before wandb\.log"):
        wandb.log({"a": 1.0})
    assert wandb.login() is True
    run = wandb.init(project="wb", mode="disabled", config={"a": 1})
    assert run.disabled and not run.stepwire_run.active
    wandb.log({"a": 1.0, "h": wandb.Histogram([1.0, 2.0]), "t": wandb.Table(columns=["x"], data=[[1]])})
    wandb.config.b = 2
    wandb.summary["s"] = 1
    wandb.log_artifact(__file__, type="code")
    assert run.step == 1 and wandb.config.as_dict() == {"a": 1, "b": 2}
    Path(run.dir, "x.txt").write_text("discarded")
    wandb.finish()
    assert not Path(run.dir).exists()
    assert not list(wandb_state.glob(f"spool/{run.id}-*"))
    with pytest.raises((KeyError, FileNotFoundError)):  # no such run (no store at all when run alone)
        stepwire.Api().run(run.id)


def test_offline_run_is_delivered_by_stepwire_sync(collector: CollectorProcess, monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    data = tmp_path / "offline"
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = wandb.init(project="wb", dir=str(data), config={"k": 1})
    assert run.offline
    for i in range(3):
        wandb.log({"loss": 1.0 / (i + 1)})
    Path(run.dir, "notes.txt").write_text("kept")
    wandb.finish()
    out = subprocess.run([sys.executable, "-m", "stepwire", "sync", str(data), "--address", collector.address,
                          "--quiet"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    view = stepwire.Api(address=collector.address).run(run.id)
    assert points(view, "loss") == [(0, 1.0), (1, 0.5), (2, 1 / 3)] and view.config == {"k": 1}
    assert [a.name for a in view.artifacts()] == ["notes.txt"]
    assert view.meta["summary"] == {"loss": 1 / 3}
    stop_embedded(data)


def test_remote_collector_run_dir_is_temporary(collector: CollectorProcess) -> None:
    run = wandb.init(project="wb", address=collector.address)
    files = Path(run.dir)
    (files / "ckpt").mkdir()
    (files / "ckpt" / "last.pt").write_bytes(b"w")
    wandb.log({"loss": 0.5})
    wandb.finish()
    assert not files.exists()  # a temporary directory: removed once its files are stored
    view = stepwire.Api(address=collector.address).run(run.id)
    assert [a.name for a in view.artifacts()] == ["ckpt/last.pt"] and points(view, "loss") == [(0, 0.5)]


SCRIPT = """
import stepwire.compat.wandb as wandb

wandb.init(project="script", config={"epochs": 3}, id="wb-script-run")
for epoch in range(wandb.config.epochs):
    wandb.log({"epoch": epoch, "train": {"loss": 1.0 / (epoch + 1)}})
with open(wandb.run.dir + "/model.txt", "w") as f:
    f.write("weights")
# no finish(): W&B finishes at exit, and so does this
"""


@pytest.mark.parametrize("crash", [False, True])
def test_script_without_finish_is_finished_at_exit(wandb_state: Path, tmp_path: Path, crash: bool) -> None:
    """At exit, or on an uncaught exception (status failed), the run is finished with run.dir's files stored."""
    path = tmp_path / "train.py"
    run_id = f"wb-script-{crash}".lower()
    path.write_text(SCRIPT.replace("wb-script-run", run_id) + ("raise RuntimeError('diverged')\n" if crash else ""))
    out = subprocess.run([sys.executable, "-W", "error", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == (1 if crash else 0), out.stderr
    assert ("RuntimeError: diverged" in out.stderr) == crash
    # on a loaded machine the collector may not have answered in time: what the script could not deliver waits
    # in the spool, and stepwire sync delivers it (a no-op otherwise)
    sync = subprocess.run([sys.executable, "-m", "stepwire", "sync", str(wandb_state), "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert sync.returncode == 0, sync.stderr
    view = stepwire.Api().run(run_id)
    assert view.status == ("failed" if crash else "finished"), (view.status, view.meta, out.stderr)
    assert view.config == {"epochs": 3}
    assert points(view, "train.loss") == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
    assert points(view, "epoch") == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert [a.name for a in view.artifacts()] == ["model.txt"]
    summary: dict[str, Any] = view.meta["summary"]
    assert json.loads(json.dumps(summary)) == {"epoch": 2.0, "train.loss": 1 / 3}
