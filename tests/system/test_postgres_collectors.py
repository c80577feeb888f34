"""Collectors sharing a PostgreSQL store watch each other: a node's collector SIGKILLed (its rank's client killed
with it) and not restarted is noticed by a surviving collector, which marks the rank crashed, with its last data as
the run's end, once the dead collector's heartbeat is older than ``$STEPWIRE_COLLECTOR_TTL``; a collector restarted
before that takes the rank back through its client, and nothing is marked.

Real processes: two ``stepwire collector`` processes on one database and a client process logging a rank. Needs a
PostgreSQL server (``$STEPWIRE_TEST_PG_URL``: ``.ci/postgres.sh``) and skips without."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

import stepwire
from conftest import CollectorProcess, start_collector

CLIENT = """
import sys, time
from pathlib import Path
import stepwire

address, run_id, directory, ready, stop = sys.argv[1:6]
run = stepwire.init(project="watch", run_id=run_id, address=address, dir=directory, quiet=True, flush_interval=0.05,
                    finish_timeout=120)
step = 0
while not Path(stop).exists():
    run.log({"x": float(step)}, step=step)
    step += 1
    if step == 50:
        assert run.flush(timeout=60)
        Path(ready).touch()
    time.sleep(0.01)
run.finish()
print(step, run.stats()["lost"])
"""


class Client:
    """A client process logging scalar "x" = 0, 1, ... for one rank of run ``run_id`` to ``address``."""

    def __init__(self, address: str, run_id: str, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ready, self.stop_file = directory / "ready", directory / "stop"
        self.proc = subprocess.Popen([sys.executable, "-c", CLIENT, address, run_id, str(directory / "data"),
                                      str(self.ready), str(self.stop_file)], stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not self.ready.exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, "the client did not start logging"
            time.sleep(0.05)

    def finish(self) -> tuple[int, int]:
        """Let the client finish; (steps logged, points lost)."""
        self.stop_file.touch()
        out, _ = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0
        steps, lost = out.split()
        return int(steps), int(lost)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def collectors() -> Iterator[list[CollectorProcess]]:
    """Collectors started by the test (on ``pg_url``), stopped afterwards."""
    started: list[CollectorProcess] = []
    yield started
    for c in started:
        c.stop()


def start(collectors: list[CollectorProcess], directory: Path, pg_url: str, *extra: str) -> CollectorProcess:
    collectors.append(start_collector(directory, "--store", pg_url, "--blob-dir", str(directory.parent / "blobs"),
                                      *extra))
    return collectors[-1]


def rank_status(pg_url: str, run_id: str) -> str:
    return str(stepwire.Api(store=pg_url).run(run_id).meta["ranks"]["0"])


def test_a_dead_collectors_running_rank_is_marked_crashed_by_a_survivor(
        tmp_path: Path, pg_url: str, collectors: list[CollectorProcess], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPWIRE_COLLECTOR_TTL", "3")
    a = start(collectors, tmp_path / "a", pg_url)
    start(collectors, tmp_path / "b", pg_url)
    run_id = uuid.uuid4().hex[:16]
    client = Client(a.address, run_id, tmp_path / "client")
    with psycopg.connect(pg_url) as c:  # both beat; the rank is a's
        deadline = time.monotonic() + 30
        while c.execute("SELECT collector_id FROM collector_ranks WHERE run_id = %s", [run_id]).fetchall() == []:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert c.execute("SELECT count(*), count(DISTINCT pid) FROM collectors").fetchone() == (2, 2)
    client.kill()  # the node goes: its rank and its collector
    a.proc.kill()
    a.proc.wait()
    assert rank_status(pg_url, run_id) == "running"
    deadline = time.monotonic() + 60
    while rank_status(pg_url, run_id) == "running":
        assert time.monotonic() < deadline, "no collector marked the dead collector's rank crashed"
        time.sleep(0.2)
    view = stepwire.Api(store=pg_url).run(run_id)
    assert (view.meta["ranks"], view.status) == ({"0": "crashed"}, "crashed")
    x = view.scalars("x")
    assert len(x["step"]) >= 50 and np.array_equal(x["value"], np.arange(len(x["step"]), dtype=np.float64))
    assert view.finished >= x["wall_time"].max() - 1  # its end: when its last data arrived, not when it was marked
    log = (tmp_path / "b" / "test-collector.log").read_text()
    assert log.count("its collector was not heard of for 3 s, marked crashed") == 1, log
    with psycopg.connect(pg_url) as c:  # the dead collector's rows are gone, the survivor's stay
        assert c.execute("SELECT count(*) FROM collectors").fetchone() == (1,)
        assert c.execute("SELECT count(*) FROM collector_ranks").fetchone() == (0,)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_collector_restarted_within_the_bound_takes_its_rank_back_and_nothing_is_marked(
        tmp_path: Path, pg_url: str, collectors: list[CollectorProcess], monkeypatch: pytest.MonkeyPatch) -> None:
    ttl = 6.0
    monkeypatch.setenv("STEPWIRE_COLLECTOR_TTL", str(ttl))
    listen = f"127.0.0.1:{free_port()}"
    a = start(collectors, tmp_path / "a", pg_url, "--listen", listen)
    start(collectors, tmp_path / "b", pg_url)
    run_id = uuid.uuid4().hex[:16]
    client = Client(a.address, run_id, tmp_path / "client")
    try:
        a.proc.kill()  # the rank's client lives on, spooling, and replays to the restart
        a.proc.wait()
        start(collectors, tmp_path / "a", pg_url, "--listen", listen)
        deadline = time.monotonic() + 2 * ttl + 4  # past the bound for the killed collector's heartbeat
        while time.monotonic() < deadline:
            assert rank_status(pg_url, run_id) == "running"
            time.sleep(0.3)
        steps, lost = client.finish()
    finally:
        client.kill()
    view = stepwire.Api(store=pg_url).run(run_id)
    assert (view.meta["ranks"], view.status, lost) == ({"0": "finished"}, "finished", 0)
    x = view.scalars("x")
    assert np.array_equal(x["step"], np.arange(steps)) and np.array_equal(x["value"], np.arange(steps, dtype=float))
    for name in ("a", "b"):
        assert "marked crashed" not in (tmp_path / name / "test-collector.log").read_text()
    with psycopg.connect(pg_url) as c:  # the killed collector's row was taken away, the rank was the restart's
        assert c.execute("SELECT count(*) FROM collectors").fetchone() == (2,)


def test_a_rank_status_switches_only_from_the_status_read(tmp_path: Path, pg_url: str) -> None:
    """A collector judges a rank from a read moments old: a rank that finished since stays finished."""
    from stepwire.store.base import RunRecord
    from stepwire.store.postgres import PostgresStore

    store = PostgresStore(pg_url, tmp_path / "blobs")
    store.open_run(RunRecord("r", "p", "n"), rank=0, world_size=1)
    assert store.switch_rank("r", 0, "running", "crashed", 5.0)
    store.update_run("r", status="finished", rank=0)  # its client came back and finished meanwhile
    assert not store.switch_rank("r", 0, "crashed", "running", None)
    (run,) = store.runs()
    assert (run.meta["ranks"], run.status) == ({"0": "finished"}, "finished")
    store.close()
