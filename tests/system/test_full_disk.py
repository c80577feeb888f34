"""A full disk under the spool: the training loop finishes, every point is stored, spooled or counted lost, and
spooling resumes once there is room again. A 2 MiB tmpfs is mounted for each test (root only)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_reliability import free_port, sync

import stepwire
from conftest import fill_up, small_disk, start_collector


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, filled to the last byte by ``filler``; unmounted afterwards."""
    with small_disk(tmp_path / "disk", "2m") as mnt:
        fill_up(mnt / "filler")
        yield mnt


TRAIN = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import stepwire
    address, data, policy, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    run = stepwire.init(project="full", address=address, dir=data, policy=policy, connect_timeout=0.5,
                        flush_interval=0.05, ring_capacity=4096, finish_timeout=60)
    calls = 0
    for i in range(steps):
        run.log({f"s{j}": float(i) for j in range(100)}, step=i)
        calls += 100
        if i % 100 == 0:
            run.log_histogram("h", np.arange(1000.0), step=i)
            calls += 1
            run.log_text("note", f"step {i}", step=i)
    run.finish()
    print(json.dumps({"id": run.id, "calls": calls, **run.stats()}), flush=True)
""")


def train(address: str, data: Path, policy: str, steps: int) -> tuple[dict[str, Any], str]:
    out = subprocess.run([sys.executable, "-c", TRAIN, address, str(data), policy, str(steps)], capture_output=True,
                         text=True, timeout=300)  # it used to hang for ever under policy="block"
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), out.stderr


def accounted(s: dict[str, Any]) -> None:
    """Every call's items: stored, in the spool, or counted as dropped or lost."""
    assert s["logged"] + s["dropped"] == s["calls"]
    assert s["logged"] == s["acknowledged"] + s["rejected"] + s["spooled"] + s["lost"]


@pytest.mark.parametrize("policy", ["block", "drop"])
def test_full_disk_and_no_collector_finishes_and_counts_every_point(full_disk: Path, policy: str) -> None:
    s, err = train(f"127.0.0.1:{free_port()}", full_disk, policy, 3000)
    accounted(s)
    assert s["lost"] == s["logged"] > 0 and s["acknowledged"] == s["spooled"] == 0
    assert s["sender_errors"] == 0 and "No space left on device" in s["lost_reason"]
    assert err.count("logged data is being lost") == 1  # one clear warning (on stderr)
    assert f"{int(s['dropped'])} dropped" in err and " lost (the spool " in err  # the summary says which


def test_full_disk_with_the_collector_up_loses_nothing(full_disk: Path, tmp_path: Path) -> None:
    collector = start_collector(tmp_path / "server")
    try:
        s, err = train(collector.address, full_disk, "block", 3000)
        accounted(s)
        assert s["acknowledged"] == s["logged"] == s["calls"] and s["lost"] == s["spooled_total"] == 0
        assert "logged data is being lost" not in err
        view = stepwire.Api(address=collector.address).run(s["id"])
        np.testing.assert_array_equal(view.scalars("s42")["step"], np.arange(3000))
        assert len(view.texts("note")) == 30
    finally:
        collector.stop()


RESUME = textwrap.dedent("""
    import json, sys, time
    import stepwire
    address, data = sys.argv[1], sys.argv[2]
    run = stepwire.init(project="resumed", address=address, dir=data, connect_timeout=0.5, flush_interval=0.05)

    def settled():  # every item logged so far is spooled or lost
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            s = run.stats()
            if s["logged"] == s["spooled"] + s["lost"]:
                return s
            time.sleep(0.01)
        raise SystemExit("items still on their way after 60 s")

    for i in range(1000):  # the disk is full: all of this is lost
        run.log({f"s{j}": float(i) for j in range(10)}, step=i)
    print(json.dumps(settled()), flush=True)
    sys.stdin.readline()  # the test makes room
    i, deadline = 1000, time.monotonic() + 60
    while run.stats()["spooled_total"] == 0 and time.monotonic() < deadline:  # the spool is retried with backoff
        run.log({f"s{j}": float(i) for j in range(10)}, step=i)
        i += 1
        time.sleep(0.01)
    for _ in range(100):
        run.log({f"s{j}": float(i) for j in range(10)}, step=i)
        i += 1
    run.finish()
    print(json.dumps({"id": run.id, "calls": i * 10, **run.stats()}), flush=True)
""")


def test_spooling_resumes_when_there_is_room_again(full_disk: Path, tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", RESUME, f"127.0.0.1:{port}", str(full_disk)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        first = json.loads(proc.stdout.readline() or "null")
        assert first["lost"] == first["logged"] == 10_000 and first["spooled_total"] == 0
        (full_disk / "filler").unlink()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    s = json.loads(out)
    accounted(s)
    assert s["lost"] >= 10_000 and s["spooled"] == s["spooled_total"] > 0 and s["dropped"] == 0
    assert "can be written again: spooling resumes" in err
    collector = start_collector(tmp_path / "server", "--listen", f"127.0.0.1:{port}")
    try:
        done = sync(full_disk, "--address", collector.address)
        assert done.returncode == 0, done.stderr
        view = stepwire.Api(address=collector.address).run(s["id"])
        assert view.project == "resumed"  # the OpenRun lost at first went with the first record spooled
        stored = sum(len(view.scalars(f"s{j}")["step"]) for j in range(10))
        assert stored == s["spooled"]  # the series defined in lost batches were carried forward
        steps = view.scalars("s0")["step"]
        np.testing.assert_array_equal(steps, np.arange(s["calls"] // 10 - len(steps), s["calls"] // 10))
    finally:
        collector.stop()
