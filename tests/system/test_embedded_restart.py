"""The embedded default survives its collector: SIGKILL the local collector in the middle of a two-rank run and
the ranks start it again themselves (one collector, not one per rank), replay what they spooled meanwhile, and
finish with every point stored once and nothing left for ``stepwire sync``. Nothing here asserts a time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

import stepwire
from stepwire.collector.server import Collector
from stepwire.store.duckdb_store import DuckDBStore

STEPS = 400

RANK = textwrap.dedent("""
    import json, sys, time, stepwire
    marker, rank = sys.argv[1], int(sys.argv[2])
    run = stepwire.init(project="restart", run_id="restart-run", rank=rank, world_size=2, quiet=True,
                        system_metrics=False, console=False)
    for step in range(STEPS):
        run.log({"x": float(step), "r": float(rank)}, step=step)
        if step == 100:
            open(f"{marker}.{rank}", "w").close()
        time.sleep(0.01)
    run.finish()
    print(json.dumps(run.stats()))
""").replace("STEPS", str(STEPS))


def _collectors(directory: Path) -> list[psutil.Process]:
    """Live collector processes serving ``directory``."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if "collector" in cmd and str(directory) in cmd and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(p)
    return found


def test_ranks_start_their_killed_local_collector_again_and_lose_nothing(data_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "half"
    ranks = [subprocess.Popen([sys.executable, "-c", RANK, str(marker), str(r)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        deadline = time.monotonic() + 120
        while not all(Path(f"{marker}.{r}").exists() for r in (0, 1)):
            assert time.monotonic() < deadline and all(p.poll() is None for p in ranks), "the ranks never got going"
            time.sleep(0.02)
        killed = json.loads((data_dir / "collector.json").read_text())["pid"]
        os.kill(killed, signal.SIGKILL)
        outs = [p.communicate(timeout=300) for p in ranks]
    finally:
        for p in ranks:
            p.kill()
    for (out, err), p in zip(outs, ranks, strict=True):
        assert p.returncode == 0, err
        stats = json.loads(out)
        assert stats["lost"] == stats["dropped"] == stats["spooled"] == 0, stats  # nothing left for sync
        assert stats["acknowledged"] == stats["logged"] == 2 * STEPS, stats
        assert stats["spooled_total"] > 0, stats  # the kill was felt: what it could not take waited in the spool

    now = _collectors(data_dir)
    assert len(now) == 1 and now[0].pid != killed  # started again once, for both ranks
    view = stepwire.Api(dir=data_dir).run("restart-run")
    assert view.status == "finished"
    for r in (0, 1):
        points = view.scalars("x", ranks=[r])
        assert points["step"].tolist() == list(range(STEPS))  # each step once
        assert points["value"].tolist() == [float(s) for s in range(STEPS)]
    assert not list((data_dir / "spool").glob("*/*.log"))


def test_a_local_collector_too_slow_for_init_gets_the_run_once_it_answers(data_dir: Path) -> None:
    collector = Collector(data_dir)  # the directory's collector, served from this process
    collector.start()
    store = collector.store
    assert isinstance(store, DuckDBStore)
    try:
        with store._lock:  # busy, as a collector starved on a loaded machine: init's OpenRun times out
            run = stepwire.init(project="slow", connect_timeout=1, quiet=True, system_metrics=False, console=False)
            for step in range(100):
                run.log({"x": float(step)}, step=step)
        run.finish()
        stats = run.stats()
        assert stats["spooled"] == stats["lost"] == 0 and stats["acknowledged"] == 100, stats  # not left for sync
        assert [r.id for r in store.runs("slow")] == [run.id]
        assert store.scalars(run.id, "x").step.tolist() == list(range(100))
    finally:
        collector.stop()
