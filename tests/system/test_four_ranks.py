"""Issue 15's acceptance run: four ranks on this machine, each with its system series and console lines, read back
through the Api and the dashboard's routes; the rank that prints and is then SIGKILLed keeps its last lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

from crash_child import wait_until

import stepwire
from conftest import CollectorProcess

RANK = textwrap.dedent("""
    import os, sys, time, stepwire
    address, ready = sys.argv[1], sys.argv[2]
    run = stepwire.init(project="four", address=address, system_interval=0.1, quiet=True)
    deadline = time.monotonic() + 60
    while run.stats()["system_samples"] < 3 and time.monotonic() < deadline:
        run.log({"loss": 1.0 / (run.step + 1)})
        time.sleep(0.005)
    print(f"rank {run.rank} last words at step {run.step}", flush=True)
    if run.rank == 3:  # wait until the console thread has handed the line over and it was delivered, then die
        while run.stats()["console_lines"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        run._sender.wait(0, 60, delivered=False)
        with open(ready, "w") as f:
            f.write(run.id)
        time.sleep(120)  # SIGKILLed here
    run.finish()
""")

PROCESS = ("system/cpu_percent", "system/rss_mib", "system/threads", "system/steps_per_s", "system/log_interval_ms")


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def test_four_ranks_system_series_and_console_with_one_rank_killed(dashboard: CollectorProcess,
                                                                     tmp_path: Path) -> None:
    script, ready = tmp_path / "rank.py", tmp_path / "ready"
    script.write_text(RANK)
    procs = []
    for rank in range(4):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "4",
               "STEPWIRE_RUN_ID": "four-ranks", "STEPWIRE_SYSTEM_METRICS": "1", "STEPWIRE_CONSOLE": "1"}
        procs.append(subprocess.Popen([sys.executable, str(script), dashboard.address, str(ready)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs[:3]:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-3000:]
    deadline = time.monotonic() + 120
    while not ready.exists() and procs[3].poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), procs[3].communicate(timeout=10)[1][-3000:]
    procs[3].send_signal(signal.SIGKILL)
    out, _ = procs[3].communicate(timeout=30)
    assert "rank 3 last words" in out  # still printed as before

    api = stepwire.Api(address=dashboard.address)
    # rank 3's segment still holds system samples taken after the ready file: the run is crashed only once the
    # collector's survivor has delivered them, and both reads below must see the same, final data
    wait_until("the run is crashed", lambda: api.run("four-ranks").status == "crashed")
    view = api.run("four-ranks")
    series = {s.name: s for s in view.series()}
    for name in PROCESS:
        assert series[name].ranks == [0, 1, 2, 3], name
    assert series["system/host/cpu_percent"].ranks == [0]  # host figures once per node: LOCAL_RANK 0
    lines = {line.rank: line.text for line in view.console()}
    assert sorted(lines) == [0, 1, 2, 3]
    assert all(text.startswith(f"rank {rank} last words at step ") for rank, text in lines.items())

    base = f"{dashboard.http}api/"
    killed = get(base + "console?run=four-ranks&rank=3")
    assert [line["text"] for line in killed["lines"]] == [lines[3]]
    rss = get(base + "scalars?run=four-ranks&name=system/rss_mib&points=100")
    assert rss["total"] == len(view.scalars("system/rss_mib")["value"]) > 0
