"""Nothing lost: a collector down for a whole run, killed and restarted mid-run, offline runs, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import stepwire
from conftest import CollectorProcess, start_collector
from stepwire.collector_link import QUICK_RETRY_S
from stepwire.spool import Spool, spools


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sync(directory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stepwire", "sync", str(directory), "--quiet", *extra],
                          capture_output=True, text=True, timeout=300)


def test_collector_down_for_the_whole_run_then_sync_twice(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "client"
    run = stepwire.init(project="down", address=f"127.0.0.1:{port}", dir=data, connect_timeout=0.5)
    for i in range(50_000):
        run.log({"a": float(i), "b": -float(i)})
    run.log_text("notes", "written while down")
    run.log_params({"lr": 0.5})
    run.finish()  # returns without waiting on the network
    stats = run.stats()
    assert stats["acknowledged"] == 0 and stats["spooled"] == stats["logged"] == 100_000
    assert spools(data) and Spool(spools(data)[0]).count() > 0

    collector = start_collector(tmp_path / "server", "--listen", f"127.0.0.1:{port}")
    try:
        first = sync(data, "--address", collector.address)
        assert first.returncode == 0, first.stderr
        assert "100000 points" in first.stdout
        view = stepwire.Api(address=collector.address).run(run.id)
        np.testing.assert_array_equal(view.scalars("a")["value"], np.arange(50_000.0))
        assert view.status == "finished" and view.config == {"lr": 0.5}
        assert [t.text for t in view.texts()] == ["written while down"]
        second = sync(data, "--address", collector.address)
        assert second.returncode == 0 and "nothing to sync" in second.stdout
        assert len(view.scalars("b")["step"]) == 50_000 and len(view.texts()) == 1
    finally:
        collector.stop()


def test_offline_mode_then_sync_into_the_embedded_default(data_dir: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "w.bin"
    ckpt.write_bytes(os.urandom(10_000))
    with stepwire.init(project="offline", mode="offline") as run:
        run.log_histogram("h", np.arange(100.0))
        run.log({"x": 1.0})
        run.log_artifact(ckpt)
    assert not (data_dir / "collector.json").exists()  # offline: no collector was started
    out = sync(data_dir)
    assert out.returncode == 0, out.stderr
    view = stepwire.Api(dir=data_dir).run(run.id)
    assert view.project == "offline" and view.histograms("h")[0].count == 100
    assert view.download_artifact("w.bin", tmp_path / "back.bin").read_bytes() == ckpt.read_bytes()
    assert sync(data_dir).stdout.startswith("nothing to sync")


def test_collector_killed_twice_mid_run_stores_every_point_once(tmp_path: Path) -> None:
    port = free_port()
    server = tmp_path / "server"
    collector = start_collector(server, "--listen", f"127.0.0.1:{port}")
    run = stepwire.init(address=f"127.0.0.1:{port}", dir=tmp_path / "client", flush_interval=0.05)
    total = 1_000_000
    done = threading.Event()

    def produce() -> None:
        for i in range(total // 100):  # a steady rate: about 20 s in all
            run.log({f"s{j}": float(i) for j in range(100)}, step=i)
            if i % 100 == 0:
                time.sleep(0.2)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    for _ in range(2):
        time.sleep(3)
        collector.proc.send_signal(signal.SIGKILL)  # no goodbye: acknowledged data must be on disk already
        collector.proc.wait()
        time.sleep(QUICK_RETRY_S + 1)  # down longer than a record is retried: the spool is used
        collector = start_collector(server, "--listen", f"127.0.0.1:{port}")
    producer.join()
    assert run.flush(timeout=300)
    run.finish()
    try:
        view = stepwire.Api(address=collector.address).run(run.id)
        for j in (0, 57, 99):
            steps = view.scalars(f"s{j}")["step"]
            np.testing.assert_array_equal(steps, np.arange(total // 100))  # every point, exactly once
        stats = run.stats()
        assert stats["acknowledged"] == total and stats["lost"] == 0
        assert stats["spooled_total"] > 0 and stats["spooled"] == 0  # the spool was used, and replayed entirely
    finally:
        collector.stop()


SIGTERMED = textwrap.dedent("""
    import sys, time, stepwire
    run = stepwire.init(address=sys.argv[1], flush_interval=60.0)  # nothing is sent before the signal
    i = 0
    while True:
        run.log({"x": float(i)}, step=i)
        if i == 2000:
            print(run.id, flush=True)
        i += 1
        time.sleep(0.0005)
""")


def test_sigterm_flushes_what_was_logged(collector: CollectorProcess) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SIGTERMED, collector.address], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM  # it still dies of SIGTERM
    proc.stdout.close()
    view = stepwire.Api(address=collector.address).run(run_id)
    steps = view.scalars("x")["step"]
    assert len(steps) > 2000
    np.testing.assert_array_equal(steps, np.arange(len(steps)))  # everything logged before the signal, no gap
    assert view.status == "failed"


def test_an_uncaught_exception_marks_the_run_failed(collector: CollectorProcess) -> None:
    script = f"import stepwire\nrun = stepwire.init(address='{collector.address}')\nprint(run.id, flush=True)\n" \
             "run.log({'x': 1.0})\nraise SystemError('boom')\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "boom" in out.stderr
    view = stepwire.Api(address=collector.address).run(out.stdout.strip())
    assert view.status == "failed" and view.scalars("x")["value"].tolist() == [1.0]


def test_init_can_insist_on_a_collector(tmp_path: Path) -> None:
    with pytest.raises(ConnectionError):
        stepwire.init(address=f"127.0.0.1:{free_port()}", connect_timeout=0.3, on_unreachable="raise")
