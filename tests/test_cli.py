"""The ``stepwire`` command, run as a user would."""

from __future__ import annotations

import os
import socket
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
    assert out.returncode == 1 and out.stderr == "stepwire show: no run 'nope'\n"


def test_run_ids_by_unique_prefix(data_dir: Path) -> None:
    for run_id in ("abc123", "abd456"):
        with stepwire.init(run_id=run_id, quiet=True) as run:
            run.log({"a": 1.0})
    show = stepwire_cli("show", "abc", env_dir=data_dir)
    assert show.returncode == 0 and "(abc123)" in show.stdout
    both = stepwire_cli("show", "ab", env_dir=data_dir)
    assert both.returncode == 1
    assert both.stderr == "stepwire show: run id prefix 'ab' matches 2 runs (abc123, abd456): give more of it\n"
    assert stepwire.Api(dir=data_dir).run("abd").id == "abd456"


def test_runs_table_keeps_ids_whole_at_80_columns(data_dir: Path) -> None:
    with stepwire.init(project="a-rather-long-project-name", name="and-a-long-run-name-too", tags=["x" * 30]) as run:
        run.log({"a": 1.0})
    env = {**os.environ, "STEPWIRE_DIR": str(data_dir), "COLUMNS": "80"}
    out = subprocess.run([sys.executable, "-m", "stepwire", "runs"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0 and run.id in out.stdout


def test_version() -> None:
    out = subprocess.run([sys.executable, "-m", "stepwire", "--version"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout == f"stepwire {stepwire.__version__}\n"


def test_errors_are_one_line_saying_what_to_do(data_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    unreachable = stepwire_cli("runs", "--address", f"127.0.0.1:{port}", env_dir=data_dir)
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith(f"stepwire runs: 127.0.0.1:{port} does not answer")
    assert unreachable.stderr.count("\n") == 1 and "stepwire collector" in unreachable.stderr

    with socket.socket() as taken:  # the dashboard's port is in use
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = stepwire_cli("ui", "--http", f"127.0.0.1:{taken.getsockname()[1]}", env_dir=data_dir)
    assert busy.returncode == 2 and busy.stderr.count("\n") == 1 and "--http" in busy.stderr

    with stepwire.init(quiet=True) as run:
        run.log({"a": 1.0})
    code = ("import sys; sys.modules['tensorboard'] = None; from stepwire.cli import main; "
            f"sys.exit(main(['export', {run.id!r}, '--tensorboard', {str(tmp_path / 'tb')!r}]))")
    no_tb = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "STEPWIRE_DIR": str(data_dir)})
    assert no_tb.returncode == 1
    assert no_tb.stderr == "stepwire export: TensorBoard export needs the tensorboard package: pip install " \
                           "'stepwire[tensorboard]'\n"


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
