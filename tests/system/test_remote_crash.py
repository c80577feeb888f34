"""A run logging to a remote collector: its node agent stores what the process left when it is SIGKILLed."""

from __future__ import annotations

import json
import os
import random
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from crash_child import check, kill_after, my_segments, settle, start, stored_all

import stepwire
from conftest import CollectorProcess
from stepwire import agent, segment

pytestmark = pytest.mark.skipif(not os.access(segment.SHM_DIR, os.W_OK), reason="no writable /dev/shm")

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


def test_a_killed_remote_run_is_stored_by_its_node_agent(tmp_path: Path, collector: CollectorProcess) -> None:
    client_dir = tmp_path / "client"
    rng = random.Random(7)
    results: dict[str, tuple[str, int]] = {}
    procs, agents = [], set()
    for i, kind in enumerate(["dict", "scalar", "dict"]):
        out = tmp_path / f"steps{i}"
        proc = start(client_dir, f"remote-{i}", kind, out, address=collector.address,
                     env={"STEPWIRE_IDLE_EXIT": "3"})  # the agent's, inherited
        procs.append(proc)
        results[f"remote-{i}"] = (kind, kill_after(proc, out, rng, min_calls=30 + 40 * i))
        agents.add(agent_pid(client_dir))
    assert len(agents) == 1 and None not in agents, agents  # one agent served the three runs
    api = stepwire.Api(address=collector.address)
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


def test_the_agent_leaves_the_embedded_defaults_segments_to_the_collector(tmp_path: Path,
                                                                          collector: CollectorProcess) -> None:
    """Segments of runs logging to another address are not the agent's (nor the local collector's)."""
    directory = tmp_path / "client"
    run = stepwire.init(project="remote", address=collector.address, dir=directory, quiet=True)
    meta = segment.read_meta(Path(run.stats()["segment_path"]))
    assert meta is not None and meta[0]["remote"] == collector.address
    assert agent_pid(directory) is not None
    run.log({"a": 1.0})
    run.finish()
    assert stepwire.Api(address=collector.address).run(run.id).scalars("a")["value"].tolist() == [1.0]


def test_no_agent_allowed_means_no_segment(tmp_path: Path, collector: CollectorProcess,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(agent.AGENT_ENV, "0")
    run = stepwire.init(project="remote", address=collector.address, dir=tmp_path / "client", quiet=True)
    stats = run.stats()
    run.finish()
    assert not stats["survives_crash"] and "$STEPWIRE_AGENT=0" in stats["survives_crash_reason"]
    assert agent_pid(tmp_path / "client") is None


def test_an_agent_that_cannot_start_is_said(tmp_path: Path, collector: CollectorProcess) -> None:
    """The agents' folder is a file: no agent, and the run says a crash would lose its tail."""
    (tmp_path / "client").mkdir()
    (tmp_path / "client" / "agents").write_text("not a folder")
    run = stepwire.init(project="remote", address=collector.address, dir=tmp_path / "client", quiet=True)
    stats = run.stats()
    run.log({"a": 2.0})
    run.finish()
    assert not stats["survives_crash"] and "node agent did not start" in stats["survives_crash_reason"]
    assert stepwire.Api(address=collector.address).run(run.id).scalars("a")["value"].tolist() == [2.0]


def test_a_killed_agent_is_started_again_by_the_next_run(tmp_path: Path, collector: CollectorProcess) -> None:
    directory = tmp_path / "client"
    first = stepwire.init(project="remote", address=collector.address, dir=directory, quiet=True)
    pid = agent_pid(directory)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    settle(lambda: not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z",
           timeout=10)
    second = stepwire.init(project="remote", address=collector.address, dir=directory, quiet=True)
    assert agent_pid(directory) not in (None, pid)
    paths = [Path(r.stats()["segment_path"]) for r in (first, second)]
    first.finish()
    second.finish()
    assert not any(p.exists() for p in paths)  # both finished: nothing of theirs is left in /dev/shm
