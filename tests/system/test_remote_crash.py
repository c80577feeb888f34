"""A run logging to a remote collector: its node agent stores what the process left when it is SIGKILLed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from crash_child import check, kill_after, my_segments, settle, stored_all

import stepwire
from conftest import start_collector
from stepwire import agent, segment

pytestmark = pytest.mark.skipif(not os.access(segment.SHM_DIR, os.W_OK), reason="no writable /dev/shm")

CHILD = textwrap.dedent("""
    import os, struct, sys
    import stepwire
    address, directory, run_id, kind, out = sys.argv[1:6]
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    run = stepwire.init(project="remote", address=address, dir=directory, run_id=run_id, quiet=True,
                        flush_interval=0.05, system_metrics=False, console=False)
    assert run.stats()["survives_crash"], run.stats()["survives_crash_reason"]
    os.write(fd, struct.pack("<q", -1))
    keys = [f"k{i:04d}" for i in range(1000)]
    step = 0
    while True:
        if kind == "dict":
            run.log({k: float(step) for k in keys}, step=step)
        else:
            run.log_scalar("loss", float(step), step=step)
            run.log_scalar("lr", 0.5 * step, step=step)
        os.write(fd, struct.pack("<q", step))
        step += 1
""")


@pytest.fixture(autouse=True)
def _no_agent_outlives_its_test(tmp_path: Path) -> Iterator[None]:
    yield
    for pid_file in tmp_path.glob("*/agents/*.json"):
        try:
            os.kill(int(json.loads(pid_file.read_text())["pid"]), signal.SIGTERM)
        except (OSError, ValueError, KeyError):
            pass


def agent_pid(client_dir: Path) -> int | None:
    files = list((client_dir / "agents").glob("*.json"))
    return int(json.loads(files[0].read_text())["pid"]) if files else None


def test_a_killed_remote_run_is_stored_by_its_node_agent(tmp_path: Path) -> None:
    server = start_collector(tmp_path / "server")
    client_dir = tmp_path / "client"
    rng = random.Random(7)
    try:
        results: dict[str, tuple[str, int]] = {}
        procs, agents = [], set()
        for i, kind in enumerate(["dict", "scalar", "dict"]):
            out = tmp_path / f"steps{i}"
            proc = subprocess.Popen([sys.executable, "-c", CHILD, server.address, str(client_dir), f"remote-{i}",
                                     kind, str(out)], stderr=subprocess.DEVNULL,
                                    env={**os.environ, "STEPWIRE_IDLE_EXIT": "3"})  # the agent's, inherited
            procs.append(proc)
            results[f"remote-{i}"] = (kind, kill_after(proc, out, rng, min_calls=30 + 40 * i))
            agents.add(agent_pid(client_dir))
        assert len(agents) == 1 and None not in agents, agents  # one agent served the three runs
        api = stepwire.Api(dir=tmp_path / "server")
        settle(lambda: stored_all(api, results), timeout=60)
        for run_id, (kind, last) in results.items():
            check(api, run_id, kind, last)
        # the agent ended each dead client's lease: the collector marks the rank crashed without waiting 15 s
        settle(lambda: all(api.run(r).status == "crashed" for r in results), timeout=30)
        assert all(api.run(r).status == "crashed" for r in results)
        assert not my_segments({p.pid for p in procs})
        # it exits once no segment is left
        settle(lambda: agent_pid(client_dir) is None, timeout=60)
        assert agent_pid(client_dir) is None
    finally:
        server.stop()


def test_the_agent_leaves_the_embedded_defaults_segments_to_the_collector(tmp_path: Path) -> None:
    """Segments of runs logging to another address are not the agent's (nor the local collector's)."""
    server = start_collector(tmp_path / "server")
    try:
        directory = tmp_path / "client"
        run = stepwire.init(project="remote", address=server.address, dir=directory, quiet=True)
        meta = segment.read_meta(Path(run.stats()["segment_path"]))
        assert meta is not None and meta[0]["remote"] == server.address
        assert agent_pid(directory) is not None
        run.log({"a": 1.0})
        run.finish()
        assert stepwire.Api(dir=tmp_path / "server").run(run.id).scalars("a")["value"].tolist() == [1.0]
    finally:
        server.stop()


def test_no_agent_allowed_means_no_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(agent.AGENT_ENV, "0")
    server = start_collector(tmp_path / "server")
    try:
        run = stepwire.init(project="remote", address=server.address, dir=tmp_path / "client", quiet=True)
        stats = run.stats()
        run.finish()
        assert not stats["survives_crash"] and "$STEPWIRE_AGENT=0" in stats["survives_crash_reason"]
        assert agent_pid(tmp_path / "client") is None
    finally:
        server.stop()


def test_an_agent_that_cannot_start_is_said(tmp_path: Path) -> None:
    """The agents' folder is a file: no agent, and the run says a crash would lose its tail."""
    server = start_collector(tmp_path / "server")
    try:
        (tmp_path / "client").mkdir()
        (tmp_path / "client" / "agents").write_text("not a folder")
        run = stepwire.init(project="remote", address=server.address, dir=tmp_path / "client", quiet=True)
        stats = run.stats()
        run.log({"a": 2.0})
        run.finish()
        assert not stats["survives_crash"] and "node agent did not start" in stats["survives_crash_reason"]
        assert stepwire.Api(dir=tmp_path / "server").run(run.id).scalars("a")["value"].tolist() == [2.0]
    finally:
        server.stop()


def test_a_killed_agent_is_started_again_by_the_next_run(tmp_path: Path) -> None:
    server = start_collector(tmp_path / "server")
    try:
        directory = tmp_path / "client"
        first = stepwire.init(project="remote", address=server.address, dir=directory, quiet=True)
        pid = agent_pid(directory)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        settle(lambda: not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z",
               timeout=10)
        second = stepwire.init(project="remote", address=server.address, dir=directory, quiet=True)
        assert agent_pid(directory) not in (None, pid)
        paths = [Path(r.stats()["segment_path"]) for r in (first, second)]
        first.finish()
        second.finish()
        assert not any(p.exists() for p in paths)  # both finished: nothing of theirs is left in /dev/shm
    finally:
        server.stop()
