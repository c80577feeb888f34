"""The embedded default: a local collector started on demand, shared by processes, gone when idle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import stepwire
from stepwire.collector.embedded import running_collector
from stepwire.query_client import LocalReader, RemoteReader

CLIENT = textwrap.dedent("""
    import json, sys, stepwire
    run = stepwire.init(project="shared", name=sys.argv[1])
    for i in range(20000):
        run.log({"x": float(i), "y": -float(i)})
    print(json.dumps({"id": run.id, "address": run.address}), flush=True)
    if sys.argv[2] == "finish":
        run.finish()
    # otherwise the atexit hook must flush and finish the run
""")


def test_embedded_round_trip(data_dir: Path) -> None:
    with stepwire.init(project="emb") as run:
        run.log({"loss": 0.25})
        run.log_histogram("w", np.linspace(-1, 1, 101))
    assert run.dir == data_dir.resolve()
    api = stepwire.Api()  # $STEPWIRE_DIR
    assert isinstance(api._reader, RemoteReader)  # the collector is still up (idle timeout not reached)
    view = api.run(run.id)
    assert view.summary()["loss"]["last"] == 0.25
    assert view.histograms("w")[0].count == 101


def test_two_processes_share_one_collector(data_dir: Path) -> None:
    env = {**os.environ, "STEPWIRE_DIR": str(data_dir)}
    procs = [subprocess.Popen([sys.executable, "-c", CLIENT, f"p{i}", "finish" if i == 0 else "exit"],
                              stdout=subprocess.PIPE, env=env) for i in range(2)]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0]["address"] == outs[1]["address"]
    api = stepwire.Api(dir=data_dir)
    runs = {r.name: r for r in api.runs(project="shared")}
    assert set(runs) == {"p0", "p1"}
    for out in outs:
        view = api.run(out["id"])
        assert view.status == "finished"  # p1 finished through its atexit hook
        np.testing.assert_array_equal(view.scalars("x")["value"], np.arange(20000.0))
        np.testing.assert_array_equal(view.scalars("y")["value"], -np.arange(20000.0))


def test_idle_collector_exits_and_the_store_stays_readable(data_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPWIRE_IDLE_EXIT", "1")
    with stepwire.init(project="idle") as run:
        run.log({"a": 1.0})
    pid = json.loads((data_dir / "collector.json").read_text())["pid"]
    deadline = time.monotonic() + 60
    while running_collector(data_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert running_collector(data_dir) is None
    try:
        os.waitpid(pid, 0)  # reap our child
    except ChildProcessError:
        pass
    api = stepwire.Api(dir=data_dir)
    assert isinstance(api._reader, LocalReader)
    assert api.run(run.id).summary()["a"]["last"] == 1.0
    # the next init starts a fresh collector on the same store
    with stepwire.init(project="idle") as again:
        again.log({"a": 2.0})
    assert {r.id for r in stepwire.Api(dir=data_dir).runs("idle")} == {run.id, again.id}


def test_api_without_a_store_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no stepwire store"):
        stepwire.Api(dir=tmp_path / "nothing")
