"""A training process killed with SIGKILL leaves no run "running" for ever: once its lease lapses the collector
marks the rank crashed, with the time of its last data as the run's end, as W&B does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import stepwire
from conftest import CollectorProcess, start_collector
from stepwire.api import RunView
from stepwire.collector.leases import LEASE_TTL_S

TRAIN = textwrap.dedent("""
    import sys, time, stepwire
    run = stepwire.init(project="crash", address=sys.argv[1] or None, dir=sys.argv[2], world_size=2,
                        rank=int(sys.argv[3]), run_id="crash-run")
    for i in range(1000):
        run.log({"loss": 1.0 / (i + 1)})
    run.flush(timeout=30)
    print("logged", time.time(), flush=True)
    if sys.argv[4] == "finish":
        run.finish()
    else:
        time.sleep(600)
""")


def train(address: str, directory: Path, rank: int, how: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", TRAIN, address, str(directory), str(rank), how],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.stdout.close()
    assert line.startswith("logged"), line
    return proc


def wait_status(api: stepwire.Api, run_id: str, status: str, timeout: float) -> RunView:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = api.run(run_id)
        if view.status == status:
            return view
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} is {api.run(run_id).status!r}, not {status!r}, after {timeout} s")


def test_a_killed_rank_ends_its_run_as_crashed_at_its_last_data(collector: CollectorProcess, tmp_path: Path) -> None:
    finished = train(collector.address, tmp_path / "client", 0, "finish")
    assert finished.wait(60) == 0
    killed = train(collector.address, tmp_path / "client", 1, "sleep")
    killed_at = time.time()
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    api = stepwire.Api(address=collector.address)
    assert api.run("crash-run").status == "running"  # the lease has not lapsed yet
    view = wait_status(api, "crash-run", "crashed", LEASE_TTL_S + 30)
    assert view.meta["ranks"] == {"0": "finished", "1": "crashed"}
    assert view.created <= view.finished <= killed_at  # the end is when its last data came, not when noticed
    assert len(view.scalars("loss")["step"]) == 2000


def test_a_crash_noticed_after_a_collector_restart(tmp_path: Path) -> None:
    first = start_collector(tmp_path / "server")
    port = first.address.rsplit(":", 1)[1]
    killed = train(first.address, tmp_path / "client", 0, "sleep")
    first.proc.send_signal(signal.SIGKILL)  # the collector dies first, the training process after it
    first.proc.wait()
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    second = start_collector(tmp_path / "server", "--listen", f"127.0.0.1:{port}")
    try:
        api = stepwire.Api(address=second.address)
        wait_status(api, "crash-run", "crashed", LEASE_TTL_S + 30)
    finally:
        second.stop()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX processes")
def test_the_embedded_collector_records_the_crash_before_it_exits(tmp_path: Path) -> None:
    data = tmp_path / "data"
    killed = train("", data, 0, "sleep")
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    deadline = time.monotonic() + LEASE_TTL_S + 60
    while (data / "collector.json").exists() and time.monotonic() < deadline:  # it exits once idle
        time.sleep(0.5)
    assert not (data / "collector.json").exists()
    assert stepwire.Api(dir=data).run("crash-run").status == "crashed"
