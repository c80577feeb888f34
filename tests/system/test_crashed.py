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
from stepwire.store import open_store
from stepwire.store.base import RunRecord

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


def test_a_collector_starting_on_old_crashed_runs_leaves_them_crashed(tmp_path: Path) -> None:
    """A rank crashed long ago is running again only when its client speaks, not during the 15 s a new collector
    gives the clients of running ranks to come back (the embedded default starts on every first ``init``)."""
    (tmp_path / "server").mkdir()
    store = open_store(None, tmp_path / "server")
    for run_id in ("old-crash", "old-finish"):
        store.open_run(RunRecord(id=run_id, project="p", name=run_id, tags=[], config={}, created=1000.0,
                                 status="running", meta={}), 0, 1)
    store.update_run("old-crash", status="crashed", finished=1500.0)
    store.update_run("old-finish", status="finished", finished=1600.0)
    store.close()
    collector = start_collector(tmp_path / "server")
    try:
        api = stepwire.Api(address=collector.address)
        for _ in range(8):  # the crash check runs every second
            old = api.run("old-crash")
            assert (old.status, old.meta["ranks"], old.finished) == ("crashed", {"0": "crashed"}, 1500.0)
            assert api.run("old-finish").status == "finished"
            time.sleep(0.5)
    finally:
        collector.stop()


STALLED = textwrap.dedent("""
    import os, sys, time, stepwire
    run = stepwire.init(project="crash", address=sys.argv[1], dir=sys.argv[2], run_id="stalled-run")
    print("started", flush=True)
    step, deadline = 0, time.monotonic() + 180
    while not os.path.exists(sys.argv[3]) and time.monotonic() < deadline:
        run.log({"loss": 1.0 / (step + 1)}, step=step)
        step += 1
        time.sleep(0.2)
    run.finish()
""")


def test_a_rank_stalled_past_its_lease_is_crashed_then_running_again_when_its_client_speaks(
        collector: CollectorProcess, tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    proc = subprocess.Popen([sys.executable, "-c", STALLED, collector.address, str(tmp_path / "client"), str(stop)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "started\n"
        api = stepwire.Api(address=collector.address)
        wait_status(api, "stalled-run", "running", 30)
        proc.send_signal(signal.SIGSTOP)  # a debugger, or a machine swapping: no heartbeat for longer than the lease
        wait_status(api, "stalled-run", "crashed", LEASE_TTL_S + 30)
        proc.send_signal(signal.SIGCONT)
        wait_status(api, "stalled-run", "running", 30)
        stop.touch()
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.communicate()
    assert api.run("stalled-run").status == "finished"
