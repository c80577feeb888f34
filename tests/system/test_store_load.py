"""The store under sustained load and with series longer than its memory, through real processes.

DuckDB's memory limit is made small ($STEPWIRE_DUCKDB_MEMORY_LIMIT) so that whatever would need more memory than
the bound shows within seconds. Before the store bounded its checkpoints (rows of at most 1024 points, a WAL
threshold of a quarter of the limit), clients logging few series at full speed made DuckDB fail to commit at such
a limit and, past its checkpoint threshold, invalidate the database for good; before reads were paged, reading a
series larger than the limit failed with DuckDB's "Out of Memory Error". Nothing here asserts a time.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import psutil
import pytest

import stepwire
from conftest import CollectorProcess, start_collector
from stepwire.api import aggregate
from stepwire.store.base import ScalarPoints
from stepwire.store.duckdb_store import MEMORY_LIMIT_ENV

LIMIT = 64 << 20
"""DuckDB's memory limit of the load test's collector."""

PROCESS_BYTES = 512 << 20
"""What the collector holds beside DuckDB: the process (~110 MiB), the batches admitted (128 MiB of requests and
their decoded columns, collector/admission.py), a group commit's chunk rows while packed (up to 3 x 16 MiB) and
the requests of workers waiting for room (stepwire clients seal at most 16 MiB)."""

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


LONG_LIMIT = 64 << 20
"""DuckDB's memory limit of the long-series test's collector: its series hold 216 MB of points."""

RANK_POINTS = 3_000_000

WRITER = textwrap.dedent("""
    import sys, numpy as np, stepwire
    address, rank, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    run = stepwire.init(project="long", name="long", address=address, run_id="long-run", rank=rank, world_size=2,
                        quiet=True, finish_timeout=600)
    values = np.sin(np.arange(n) / 1000.0) + rank
    for step, value in enumerate(values.tolist()):
        run.log_scalar("loss", value, step=step)
        if rank == 0:
            run.log_scalar("solo", -value, step=step)
    run.finish()
    s = run.stats()
    assert s["acknowledged"] == s["logged"], s
""")


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=600) as r:
        return json.loads(r.read())


def test_a_series_longer_than_the_memory_limit_is_read_charted_and_exported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(LONG_LIMIT))
    monkeypatch.setenv("STEPWIRE_DIR", str(tmp_path / "clients"))
    c: CollectorProcess = start_collector(tmp_path / "collector", "--http", "127.0.0.1:0")
    try:
        writers = [subprocess.Popen([sys.executable, "-c", WRITER, c.address, str(r), str(RANK_POINTS)])
                   for r in range(2)]
        assert [w.wait(timeout=900) for w in writers] == [0, 0]
        with peak_rss(c.proc.pid) as peak:
            _read_everything(c, tmp_path)
        print(f"reads of {3 * RANK_POINTS / 1e6:g} M points: collector peak RSS {peak[0] >> 20} MiB "
              f"(DuckDB's limit {LONG_LIMIT >> 20} MiB)")
        assert peak[0] < LONG_LIMIT + PROCESS_BYTES
    finally:
        c.stop()


def _read_everything(c: CollectorProcess, tmp_path: Path) -> None:
    n = RANK_POINTS
    expected = np.sin(np.arange(n) / 1000.0)
    view = stepwire.Api(address=c.address).run("long-run")

    # Api and the Query service's Scalars: the whole series at once (the caller's memory), in order
    loss = view.scalars("loss")
    assert len(loss["step"]) == 2 * n
    np.testing.assert_array_equal(loss["step"], np.repeat(np.arange(n), 2))
    np.testing.assert_array_equal(loss["rank"], np.tile([0, 1], n))
    np.testing.assert_array_equal(loss["value"], (expected[:, None] + [0, 1]).ravel())
    # piece by piece, whole steps per piece, aggregated per piece
    pieces = list(view.scalars_iter("loss", agg="mean"))
    assert len(pieces) > 4 and all(a["step"][-1] < b["step"][0] for a, b in itertools.pairwise(pieces))
    mean = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
    whole = aggregate(ScalarPoints(loss["step"], loss["value"], loss["wall_time"], loss["rank"]), "mean")
    for key in whole:
        np.testing.assert_array_equal(mean[key], whole[key])
    part = view.scalars("loss", ranks=[1], start_step=n - 1000, end_step=n + 5)
    np.testing.assert_array_equal(part["step"], np.arange(n - 1000, n))
    np.testing.assert_array_equal(part["value"], expected[-1000:] + 1)

    # the dashboard: a multi-rank chart (read twice, page by page), a single-rank one, rank skew
    for x in ("step", "wall_time"):
        chart = get(c.http + f"api/scalars?run=long-run&name=loss&x={x}&points=1000")
        assert chart["total"] == 2 * n and [r["total"] for r in chart["ranks"]] == [n, n]
        for r in chart["ranks"]:
            assert 2 < len(r["x"]) <= 1000 and min(r["y"]) == expected.min() + r["rank"]
            assert max(r["y"]) == expected.max() + r["rank"]
        assert chart["agg"]["total"] == n and len(chart["agg"]["x"]) <= 1000
        assert min(chart["agg"]["min"]) == expected.min() and max(chart["agg"]["max"]) == expected.max() + 1
    solo = get(c.http + "api/scalars?run=long-run&name=solo&points=500")
    assert solo["total"] == n and min(solo["ranks"][0]["y"]) == -expected.max()
    skew = get(c.http + "api/skew?run=long-run")
    assert skew["series"] == "loss" and [(r["rank"], r["steps"]) for r in skew["ranks"]] == [(0, n), (1, n)]

    # export: CSV and Parquet of every point, read back
    out = tmp_path / "export"
    proc = subprocess.run([sys.executable, "-m", "stepwire", "export", "long-run", "--address", c.address,
                           "--csv", str(out), "--parquet", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    con = duckdb.connect()
    for table in (f"read_csv('{out / 'scalars.csv'}')", f"read_parquet('{out / 'scalars.parquet'}')"):
        rows = con.execute(f"SELECT name, count(*), sum(step), sum(value), min(rank), max(rank) FROM {table} "
                           "GROUP BY name ORDER BY name").fetchall()
        assert [r[:3] for r in rows] == [("loss", 2 * n, n * (n - 1)), ("solo", n, n * (n - 1) // 2)]
        assert rows[0][3] == pytest.approx(2 * expected.sum() + n) and rows[1][3] == pytest.approx(-expected.sum())
        assert [r[4:] for r in rows] == [(0, 1), (0, 0)]
    first = con.execute(f"SELECT step, rank, value FROM read_parquet('{out / 'scalars.parquet'}') LIMIT 3").fetchall()
    assert first == [(0, 0, 0.0), (0, 1, 1.0), (1, 0, float(expected[1]))]  # in order
    assert sorted(os.listdir(out)) == ["histograms.csv", "histograms.parquet", "scalars.csv", "scalars.parquet"]
