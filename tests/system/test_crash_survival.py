"""Everything ``log()`` accepted before a training process died is stored, exactly once: training processes are
killed with SIGKILL at random moments (some inside ``log()`` of 1,000-key dicts) or die of SIGSEGV, with the
node's collector up and with it down (an offline run's spool, then ``stepwire sync``). Each child writes, after
every call returns, that call's step to a file (unbuffered), so the test knows which calls returned; the call
in progress at the kill is stored whole or not at all. Nothing is left in /dev/shm afterwards."""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import stepwire
from stepwire import segment
from stepwire.sync import sync

pytestmark = pytest.mark.skipif(not os.access(segment.SHM_DIR, os.W_OK), reason="no writable /dev/shm")


@pytest.fixture(autouse=True)
def shared_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments are on by default: no $STEPWIRE_SHM from the caller's environment turns them off here."""
    monkeypatch.delenv(segment.SHM_ENV, raising=False)

KEYS = 1000

CHILD = textwrap.dedent("""
    import os, signal, struct, sys
    import stepwire
    directory, run_id, kind, out, segv_at = sys.argv[1:6]
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    run = stepwire.init(project="survive", dir=directory, run_id=run_id, quiet=True, flush_interval=0.05,
                        system_metrics=False, console=False)
    assert run.stats()["survives_crash"], run.stats()["survives_crash_reason"]
    os.write(fd, struct.pack("<q", -1))  # initialised
    keys = [f"k{i:04d}" for i in range(KEYS)]
    step = 0
    while True:
        if kind == "dict":
            run.log({k: float(step) for k in keys}, step=step)
        else:
            run.log_scalar("loss", float(step), step=step)
            run.log_scalar("lr", 0.5 * step, step=step)
        os.write(fd, struct.pack("<q", step))  # this call returned
        if step == int(segv_at):
            os.kill(os.getpid(), signal.SIGSEGV)
        step += 1
""").replace("KEYS", str(KEYS))


def my_segments(pids: set[int]) -> list[Path]:
    """The segments left by the given processes."""
    left = []
    for path in segment.segments():
        rec = segment.read(path)
        if rec is not None and rec.pid in pids:
            left.append(path)
    return left


def start(directory: Path, run_id: str, kind: str, out: Path, segv_at: int = -2,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(directory), run_id, kind, str(out), str(segv_at)],
                            env={**os.environ, **(env or {})}, stderr=subprocess.DEVNULL)


def returned(out: Path) -> list[int]:
    raw = out.read_bytes() if out.exists() else b""
    return [v for (v,) in struct.iter_unpack("<q", raw[:len(raw) // 8 * 8])]


def kill_after(proc: subprocess.Popen[bytes], out: Path, rng: random.Random, min_calls: int) -> int:
    """SIGKILL ``proc`` at a random moment after it made ``min_calls`` calls; the last step that returned."""
    deadline = time.monotonic() + 60
    while len(returned(out)) < min_calls + 1 and time.monotonic() < deadline:
        assert proc.poll() is None, "the child died by itself"
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.3))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return returned(out)[-1]


def stored_all(api: stepwire.Api, results: dict[str, tuple[str, int]]) -> bool:
    """True once every run passes ``check`` (what the survivor delivered is acknowledged as committed; reads
    follow within moments)."""
    try:
        for run_id, (kind, last) in results.items():
            check(api, run_id, kind, last)
    except (AssertionError, KeyError):
        return False
    return True


def check(api: stepwire.Api, run_id: str, kind: str, last: int) -> None:
    """Every call up to ``last`` stored exactly once; the next one whole or not at all; nothing after it."""
    view = api.run(run_id)
    names = [f"k{i:04d}" for i in range(KEYS)] if kind == "dict" else ["loss", "lr"]
    stored = [view.scalars(name) for name in names]
    for name, s in zip(names, stored, strict=True):
        steps = s["step"].tolist()
        # each call up to the last that returned exactly once; the interrupted one whole or not at all
        assert steps in (list(range(last + 1)), list(range(last + 2))), (run_id, name, last, steps[-3:], len(steps))
        scale = 0.5 if name == "lr" else 1.0
        np.testing.assert_array_equal(s["value"], scale * np.asarray(steps, dtype=np.float64))
    if kind == "dict":  # every key of a call, or none: the same steps for all 1,000 keys
        assert all(s["step"].tolist() == stored[0]["step"].tolist() for s in stored), run_id


def settle(ok: object, timeout: float = 20.0) -> None:
    """Poll ``ok`` until it holds or ``timeout`` passes (the assertions that follow say what did not hold)."""
    deadline = time.monotonic() + timeout
    while not ok() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.5)


def wait_until(what: str, ok: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def run_kills(directory: Path, tmp: Path, kinds: list[str], rng: random.Random, offline: bool
              ) -> tuple[dict[str, tuple[str, int]], set[int]]:
    """Start one child per kind (two at a time) and kill each; {run id: (kind, last step returned)}, pids."""
    env = {"STEPWIRE_MODE": "offline"} if offline else None
    results: dict[str, tuple[str, int]] = {}
    pids: set[int] = set()
    for i in range(0, len(kinds), 2):
        procs = []
        for j, kind in enumerate(kinds[i:i + 2]):
            run_id = f"{'off' if offline else 'on'}-{i + j}-{kind}"
            out = tmp / f"{run_id}.steps"
            procs.append((run_id, kind, out, start(directory, run_id, kind, out, env=env)))
        for run_id, kind, out, proc in procs:
            pids.add(proc.pid)
            # some are killed inside their very first calls, most later
            results[run_id] = (kind, kill_after(proc, out, rng, rng.choice([0, 1, 5, 50, 200])))
    return results, pids


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
