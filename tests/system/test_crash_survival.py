"""Everything ``log()`` accepted before a training process died is stored, exactly once: training processes are
killed with SIGKILL at random moments (some inside ``log()`` of 1,000-key dicts) or die of SIGSEGV, with the
node's collector up and with it down (an offline run's spool, then ``stepwire sync``). Each child writes, after
every call returns, that call's step to a file (unbuffered), so the test knows which calls returned; the call
in progress at the kill is stored whole or not at all. Nothing is left in /dev/shm afterwards."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import pytest
from crash_child import check, my_segments, returned, run_kills, settle, start, stored_all, wait_until

import stepwire
from stepwire import segment
from stepwire.sync import sync

pytestmark = pytest.mark.skipif(not os.access(segment.SHM_DIR, os.W_OK), reason="no writable /dev/shm")


@pytest.fixture(autouse=True)
def shared_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments are on by default: no $STEPWIRE_SHM from the caller's environment turns them off here."""
    monkeypatch.delenv(segment.SHM_ENV, raising=False)


def test_sigkill_at_random_moments_loses_nothing_that_returned(tmp_path: Path) -> None:
    rng = random.Random(19)
    directory = tmp_path / "data"
    kinds = ["dict", "scalar"] * 7  # 14 kills with the collector up
    results, pids = run_kills(directory, tmp_path, kinds, rng, offline=False)
    wait_until("the collector stored what the killed processes left", lambda: not my_segments(pids))
    api = stepwire.Api(dir=directory)
    settle(lambda: stored_all(api, results))
    for run_id, (kind, last) in results.items():
        check(api, run_id, kind, last)
    wait_until("the killed ranks are crashed",
               lambda: all(api.run(r).status == "crashed" for r in results), timeout=20)


def test_sigkill_with_the_collector_down_then_sync(tmp_path: Path) -> None:
    rng = random.Random(7)
    directory = tmp_path / "data"
    kinds = ["dict", "scalar", "dict", "scalar", "dict", "scalar"]  # 6 kills of offline runs
    results, pids = run_kills(directory, tmp_path, kinds, rng, offline=True)
    assert my_segments(pids)  # nothing drained them yet: no collector runs for the directory
    assert any((directory / "spool").iterdir())
    sync(directory, show_progress=False)
    wait_until("sync and the collector stored what the killed processes left", lambda: not my_segments(pids))
    api = stepwire.Api(dir=directory)
    settle(lambda: stored_all(api, results))
    for run_id, (kind, last) in results.items():
        check(api, run_id, kind, last)


@pytest.mark.parametrize("kind", ["dict", "scalar"])
def test_sigsegv_in_the_process(tmp_path: Path, kind: str) -> None:
    directory = tmp_path / "data"
    out = tmp_path / "steps"
    proc = start(directory, f"segv-{kind}", kind, out, segv_at=321)
    assert proc.wait(60) == -signal.SIGSEGV
    assert returned(out)[-1] == 321
    wait_until("the collector stored what the process left", lambda: not my_segments({proc.pid}))
    check(stepwire.Api(dir=directory), f"segv-{kind}", kind, 321)


def test_a_normal_run_leaves_nothing_in_dev_shm(tmp_path: Path) -> None:
    run = stepwire.init(project="survive", dir=tmp_path / "data")
    stats = run.stats()
    assert stats["survives_crash"] and stats["survives_crash_reason"] == ""
    path = Path(stats["segment_path"])
    assert path.exists() and path.name.startswith(segment.prefix())
    run.log({"a": 1.0})
    run.finish()
    assert not path.exists()


def test_without_shared_memory_the_run_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPWIRE_SHM", "0")
    run = stepwire.init(project="survive", dir=tmp_path / "data")
    run.log({"a": 1.0})
    stats = run.stats()
    run.finish()
    assert stats["survives_crash"] is False
    assert stats["survives_crash_reason"] == "$STEPWIRE_SHM=0"
    assert stats["segment_path"] == ""
    assert stepwire.Api(dir=tmp_path / "data").run(run.id).scalars("a")["value"].tolist() == [1.0]
