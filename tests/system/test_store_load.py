"""The store under sustained load, through real processes.

DuckDB's memory limit is made small ($STEPWIRE_DUCKDB_MEMORY_LIMIT) so that whatever would need more memory than
the bound shows within seconds. Before the store bounded its checkpoints (rows of at most 1024 points, a WAL
threshold of an eighth of the limit), clients logging few series at full speed made DuckDB fail to commit at such
a limit and, past its checkpoint threshold, invalidate the database for good. Nothing here asserts a time.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

import stepwire
from conftest import start_collector
from stepwire.store.duckdb_store import MEMORY_LIMIT_ENV

LIMIT = 64 << 20
"""DuckDB's memory limit of the load test's collector."""

PROCESS_BYTES = 512 << 20
"""What the collector holds beside DuckDB: the process (~110 MiB) and the batch each of its 8 worker threads
holds, compressed and decoded (stepwire clients seal at most 16 MiB)."""

LOADER = textwrap.dedent("""
    import json, sys, time, stepwire
    run = stepwire.init(project="load", address=sys.argv[1], quiet=True)
    data = {f"m{i}": float(i) for i in range(4)}  # few series: long runs of one series in every batch
    end, step = time.monotonic() + float(sys.argv[2]), 0
    while time.monotonic() < end:
        run.log(data, step=step)
        step += 1
    run.finish()
    print(json.dumps({"id": run.id, "stats": run.stats()}))
""")


@contextmanager
def peak_rss(pid: int) -> Iterator[list[int]]:
    """The largest RSS of process ``pid`` seen while inside (sampled every 50 ms)."""
    proc, peak, stop = psutil.Process(pid), [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            try:
                peak[0] = max(peak[0], proc.memory_info().rss)
            except psutil.Error:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        stop.set()
        sampler.join()


def _stored(api: stepwire.Api, run_id: str) -> int:
    return sum(s.items for s in api.run(run_id).series())


def _small_run(address: str) -> tuple[str, int]:
    run = stepwire.init(project="after", address=address, quiet=True)
    for step in range(1000):
        run.log({"a": float(step)}, step=step)
    run.finish()
    return run.id, int(run.stats()["acknowledged"])


def test_full_speed_clients_then_sigkill_and_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(LIMIT))
    monkeypatch.setenv("STEPWIRE_DIR", str(tmp_path / "clients"))  # where the clients would spool
    c = start_collector(tmp_path / "collector")
    try:
        with peak_rss(c.proc.pid) as peak:
            loaders = [subprocess.Popen([sys.executable, "-c", LOADER, c.address, "10"], stdout=subprocess.PIPE)
                       for _ in range(8)]
            outs = [json.loads(p.communicate(timeout=600)[0]) for p in loaders]
        api = stepwire.Api(address=c.address)
        logged = {}
        for out in outs:
            s = out["stats"]
            assert s["dropped"] == s["lost"] == s["rejected"] == 0, s
            assert s["acknowledged"] + s["spooled"] == s["logged"] > 0, s
            logged[out["id"]] = s["logged"]
        if any(out["stats"]["spooled"] for out in outs):  # what finish() could not deliver in time: deliver it
            subprocess.run([sys.executable, "-m", "stepwire", "sync", str(tmp_path / "clients"), "--address",
                            c.address], check=True, capture_output=True, timeout=600)
        for run_id, n in logged.items():  # every point stored, once
            assert _stored(api, run_id) == n
        print(f"8 clients stored {sum(logged.values())} points; collector peak RSS {peak[0] >> 20} MiB "
              f"(DuckDB's limit {LIMIT >> 20} MiB)")
        assert peak[0] < LIMIT + PROCESS_BYTES

        run_id, acknowledged = _small_run(c.address)  # it goes on accepting
        assert acknowledged == _stored(api, run_id) == 1000
        logged[run_id] = 1000

        c.proc.send_signal(signal.SIGKILL)
        c.proc.wait()
        c = start_collector(tmp_path / "collector")  # replays its WAL within the same limit
        api = stepwire.Api(address=c.address)
        for run_id, n in logged.items():  # everything acknowledged is back
            assert _stored(api, run_id) == n
        run_id, acknowledged = _small_run(c.address)  # and it accepts writes
        assert acknowledged == _stored(api, run_id) == 1000
    finally:
        c.stop()
