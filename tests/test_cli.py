"""The ``stepwire`` command, run as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import stepwire


def stepwire_cli(*args: str, env_dir: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STEPWIRE_DIR": str(env_dir), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "stepwire", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_ignite_demo(data_dir: Path) -> None:
    demo = stepwire_cli("demo", "--epochs", "2", env_dir=data_dir)  # torch and ignite are installed: ignite
    assert demo.returncode == 0, demo.stderr
    assert "(ignite)" in demo.stdout and "grads_0/weight" in demo.stdout and "checkpoints/model_" in demo.stdout
    assert f"stepwire ui --dir {data_dir}" in demo.stdout and "Dashboard: http://127.0.0.1:" in demo.stdout
    (run,) = stepwire.Api(dir=data_dir).runs(project="demo")
    iterations = 2 * len(range(0, int(0.8 * 1797), 64))
    assert len(run.scalars("train/loss")["step"]) == iterations
    assert len(run.histograms("grads_0/weight")) == iterations
    assert len(run.scalars("val/accuracy")["step"]) == 2
    assert len(run.artifacts()) == 2


def test_numpy_demo_then_runs_and_show(data_dir: Path) -> None:
    demo = stepwire_cli("demo", "--epochs", "2", "--backend", "numpy", env_dir=data_dir)
    assert demo.returncode == 0, demo.stderr
    assert "train/loss" in demo.stdout and "grads/w1" in demo.stdout
    (run,) = stepwire.Api(dir=data_dir).runs(project="demo")
    assert run.status == "finished" and run.config["epochs"] == 2
    steps = len(run.scalars("train/loss")["step"])
    assert steps == 2 * len(range(0, int(0.8 * 1797), 64))
    assert len(run.histograms("grads/w1")) == steps
    assert run.summary()["val/accuracy"]["last"] > 0.5  # it did learn something

    runs = stepwire_cli("runs", env_dir=data_dir)
    assert runs.returncode == 0 and run.id in runs.stdout and "digits-mlp" in runs.stdout
    show = stepwire_cli("show", run.id, env_dir=data_dir)
    assert show.returncode == 0
    assert "train/loss" in show.stdout and "grads/w1" in show.stdout and str(steps) in show.stdout


def test_show_unknown_run_fails_cleanly(data_dir: Path) -> None:
    with stepwire.init() as run:
        run.log({"a": 1.0})
    out = stepwire_cli("show", "nope", env_dir=data_dir)
    assert out.returncode == 1 and "no run 'nope'" in out.stderr


def test_collector_command_serves_until_terminated(tmp_path: Path) -> None:
    from conftest import start_collector

    c = start_collector(tmp_path / "c")
    try:
        with stepwire.init(address=c.address) as run:
            run.log_scalar("x", 1.0)
        out = stepwire_cli("runs", "--address", c.address, env_dir=tmp_path)
        assert run.id in out.stdout
    finally:
        c.stop()
    assert c.proc.returncode == 0
