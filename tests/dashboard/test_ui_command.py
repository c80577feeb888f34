"""``stepwire ui``: starts a collector with the dashboard for a directory when none runs, prints the URL of the
one that runs, and serves a dashboard over the Query service of a collector started without one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import stepwire
from conftest import start_collector


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def ui(directory: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "stepwire", "ui", "--dir", str(directory), "--http",
                             "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def url_of(line: str) -> str:
    return next(word for word in line.split() if word.startswith("http://"))


def test_ui_starts_a_collector_that_runs_join(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    proc = ui(directory)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = url_of(line)
        assert get(url + "api/runs") == []
        with stepwire.init(project="ui", name="joined", dir=directory, quiet=True) as run:  # joins that collector
            run.log({"loss": 0.5})
        assert [r["name"] for r in get(url + "api/runs")] == ["joined"]
        again = ui(directory)  # a second ui hands out the same dashboard, and holds it up until Ctrl-C
        assert again.stdout is not None
        assert url_of(again.stdout.readline()) == url
        again.send_signal(signal.SIGINT)
        again.communicate(timeout=30)
        assert again.returncode == 0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        assert proc.returncode == 0


def test_ui_over_the_query_service(tmp_path: Path) -> None:
    c = start_collector(tmp_path / "plain")  # no --http
    proc = None
    try:
        with stepwire.init(project="ui", name="remote", address=c.address, quiet=True) as run:
            for i in range(50):
                run.log({"loss": 1.0 / (i + 1)})
        proc = ui(c.dir)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert c.address in line
        url = url_of(line)
        (row,) = get(url + "api/runs")
        assert row["name"] == "remote"
        assert get(url + f"api/scalars?run={row['id']}&name=loss&points=10")["total"] == 50
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
            assert proc.returncode == 0
        c.stop()


def test_ui_keeps_a_collector_that_exits_when_idle_up_while_it_runs(tmp_path: Path) -> None:
    """`stepwire demo` then `stepwire ui` (the README's flow): the demo's collector exits once idle, so the URL
    that ui prints would die seconds later unless ui keeps the collector up until it is stopped."""
    c = start_collector(tmp_path / "data", "--http", "127.0.0.1:0", "--exit-when-idle", "1")
    run = stepwire.init(address=c.address, quiet=True)  # a training run keeps it up until ui has started
    proc = ui(c.dir)
    try:
        assert proc.stdout is not None
        url = url_of(proc.stdout.readline())
        run.finish()
        time.sleep(3)  # three idle timeouts: without ui's lease the collector would be gone
        assert c.proc.poll() is None and len(get(url + "api/runs")) == 1
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    c.proc.wait(timeout=30)  # ui released its lease: the collector is idle and leaves
