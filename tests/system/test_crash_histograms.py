"""Histograms survive a kill during background binning: ``log_histogram`` of 65,536 values or more returns before
they are binned (docs/segment.md, "Raw-values files"). Training processes logging such histograms (seeded random
values, so that the test knows each one) and a scalar per step are SIGKILLed at random moments, many just after a
``log_histogram`` call returned, while the binning thread works on it and those queued after it; with the node's
collector up, and with it down (offline runs, then ``stepwire sync``). Every call that returned is stored exactly
once with the buckets, count, sum, min and max of its values; the call in progress at the kill at most once; nothing
is left in /dev/shm. Each child prints a call's name and step once it returned (flushed), and the test reads them."""

from __future__ import annotations

import inspect
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import stepwire
from stepwire import _core, segment, segment_raw
from stepwire.histogram import Histogram
from stepwire.sync import sync

pytestmark = pytest.mark.skipif(not os.access(segment.SHM_DIR, os.W_OK), reason="no writable /dev/shm")

HISTS = ("w0", "w1", "w2")
"""Histograms logged at each step, before the step's scalar ``loss``."""


@pytest.fixture(autouse=True)
def shared_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments on, whatever $STEPWIRE_SHM the caller's environment holds."""
    monkeypatch.setenv(segment.SHM_ENV, "1")


CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import stepwire
    directory, run_id, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    run = stepwire.init(project="survive", dir=directory, run_id=run_id, quiet=True, flush_interval=0.05,
                        system_metrics=False, console=False)
    assert run.stats()["survives_crash"], run.stats()["survives_crash_reason"]
    print("init", -1, flush=True)
    step = 0
    while True:
        for name in HISTS:
            run.log_histogram(name, values(seed, name, step), step=step)
            print(name, step, flush=True)  # this call returned
        run.log_scalar("loss", float(step), step=step)
        print("loss", step, flush=True)
        step += 1
""")


def values(seed: int, name: str, step: int) -> np.ndarray:
    """The values a child logs as histogram ``name`` at ``step``: 65,536 to 300,000 float32s."""
    rng = np.random.default_rng([seed, int(name[1:]), step])
    n = int(rng.integers(65_536, 300_001))
    return (rng.standard_normal(n) * (step + 1)).astype(np.float32)


SOURCE = f"HISTS = {HISTS!r}\n" + inspect.getsource(values)


def calls_of(returned: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Every call a child makes, in order, as far as the ``returned`` ones and the one after them."""
    steps = returned[-1][1] + 2 if returned else 1
    every = [(name, step) for step in range(steps) for name in (*HISTS, "loss")]
    return every[:len(returned) + 1]


def kill_child(directory: Path, run_id: str, seed: int, env: dict[str, str], rng: random.Random
               ) -> tuple[list[tuple[str, int]], int]:
    """Start a child, SIGKILL it at a random moment; the calls that returned, and the histograms it left to bin."""
    script = "import numpy as np\n" + SOURCE + CHILD
    proc = subprocess.Popen([sys.executable, "-c", script, str(directory), run_id, str(seed)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
    assert proc.stdout is not None
    returned: list[tuple[str, int]] = []
    at_call = rng.choice([0, 1, 2, 7, 20, 40])
    right_after = rng.random() < 0.7  # the moment a log_histogram call returned: during background binning
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, "the child died by itself"
        name, step = line.split()
        if name == "init":
            continue
        returned.append((name, int(step)))
        if len(returned) > at_call and (not right_after or name in HISTS):
            break
    if not right_after:
        time.sleep(rng.uniform(0.0, 0.05))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = unbinned(directory, run_id)
    for line in proc.stdout.read().splitlines():  # printed before the kill, not read yet
        name, step = line.split()
        returned.append((name, int(step)))
    proc.stdout.close()
    return returned, left


def unbinned(directory: Path, run_id: str) -> int:
    """Histograms a dead run accepted and its process never queued: a survivor must bin them from raw-values
    files (committed, and settled neither by the segment's ``raw_done`` nor by a queue entry)."""
    n = 0
    for path in segment.segments():
        rec = segment.read(path)
        if rec is None or rec.meta.get("run_id") != run_id:
            continue
        if Path(str(rec.meta.get("directory"))).resolve() != directory.resolve():
            continue
        for raw_path in segment_raw.raw_paths(path):
            raw = segment_raw.read(raw_path)
            n += raw is not None and raw.id > rec.raw_done and raw.id not in rec.raw_queued
    return n


def check(api: stepwire.Api, run_id: str, seed: int, returned: list[tuple[str, int]]) -> None:
    """Every returned call stored once, exactly; the next call at most once; nothing after it."""
    view = api.run(run_id)
    calls = calls_of(returned)
    for name in HISTS:
        hists = view.histograms(name, merge_ranks=False)
        steps = [h.step for h in hists]
        must = [s for n, s in calls[:len(returned)] if n == name]
        may = [s for n, s in calls[len(returned):] if n == name]
        assert steps in (must, must + may), (run_id, name, steps, must, may)
        for h in hists:
            assert_binned(h, seed, name)
    loss = view.scalars("loss")["step"].tolist()
    must = [s for n, s in calls[:len(returned)] if n == "loss"]
    may = [s for n, s in calls[len(returned):] if n == "loss"]
    assert loss in (must, must + may), (run_id, loss[-3:], must[-3:])


def assert_binned(h: Histogram, seed: int, name: str) -> None:
    """``h`` holds exactly the buckets, count, sum, min and max of the values logged as ``name`` at its step."""
    (expected,) = _core.bin_many([values(seed, name, h.step)], [False], h.k, 1)
    got = (h.count, h.sum, h.min, h.max, h.indices.tolist(), h.counts.tolist())
    assert got == (expected["count"], expected["sum"], expected["min"], expected["max"],
                   list(expected["indices"]), list(expected["counts"])), (name, h.step)


def stored_all(api: stepwire.Api, results: dict[str, tuple[int, list[tuple[str, int]]]]) -> bool:
    try:
        for run_id, (seed, returned) in results.items():
            check(api, run_id, seed, returned)
    except (AssertionError, KeyError):
        return False
    return True


def wait_until(what: str, ok: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def mine(directory: Path, run_ids: set[str] | dict[str, object]) -> list[Path]:
    """Segments and raw-values files of the test's runs still in /dev/shm."""
    left = []
    for path in segment.segments():
        rec = segment.read(path)
        if (rec is not None and rec.meta.get("run_id") in run_ids
                and Path(str(rec.meta.get("directory"))).resolve() == directory.resolve()):
            left += [path, *segment_raw.raw_paths(path)]
    return left


def run_kills(directory: Path, kills: int, rng: random.Random, offline: bool, most: int = 12
              ) -> tuple[dict[str, tuple[int, list[tuple[str, int]]]], int]:
    """Kill ``kills`` children one after the other, and more (``most`` in all) until one was killed with
    histograms it accepted and never queued (a moment the parent hits about one kill in four);
    {run id: (seed, calls returned)}, histograms left to bin."""
    env = {**os.environ, **({"STEPWIRE_MODE": "offline"} if offline else {})}
    results = {}
    to_bin = 0
    i = 0
    while i < kills or (not to_bin and i < most):
        run_id = f"hist-{'off' if offline else 'on'}-{i}"
        seed = rng.randrange(1 << 30)
        returned, left = kill_child(directory, run_id, seed, env, rng)
        results[run_id] = (seed, returned)
        to_bin += left
        i += 1
    return results, to_bin


def settle_and_check(directory: Path, results: dict[str, tuple[int, list[tuple[str, int]]]]) -> None:
    wait_until("the killed processes' segments and raw-values files are drained",
               lambda: not mine(directory, results))
    api = stepwire.Api(dir=directory)
    deadline = time.monotonic() + 20
    while not stored_all(api, results) and time.monotonic() < deadline:
        time.sleep(0.5)
    for run_id, (seed, returned) in results.items():
        check(api, run_id, seed, returned)


def test_sigkill_during_background_binning_with_the_collector_up(tmp_path: Path) -> None:
    rng = random.Random(27)
    directory = tmp_path / "data"
    results, to_bin = run_kills(directory, 6, rng, offline=False)
    assert to_bin > 0  # histograms that only the survivor could bin and store
    settle_and_check(directory, results)


def test_sigkill_during_background_binning_with_the_collector_down_then_sync(tmp_path: Path) -> None:
    rng = random.Random(5)
    directory = tmp_path / "data"
    results, to_bin = run_kills(directory, 4, rng, offline=True)
    assert to_bin > 0  # histograms that only the survivor could bin and store
    sync(directory, show_progress=False)
    settle_and_check(directory, results)


def test_a_full_dev_shm_bins_on_the_callers_thread(tmp_path: Path) -> None:
    """No room for a raw-values file (a file size limit stands in for a full /dev/shm): the histogram is binned
    on the logging thread, counted, and stored."""
    script = textwrap.dedent("""
        import resource, signal, sys
        import numpy as np
        import stepwire
        run = stepwire.init(project="survive", dir=sys.argv[1], run_id="full", quiet=True, system_metrics=False,
                            console=False)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        run.log_histogram("w", np.arange(100_000, dtype=np.float32), step=3)
        stats = run.stats()
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        run.finish()
        print(stats["binning_shm_full"], stats["binning_background"])
    """)
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "data")], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.split() == ["1", "0"]
    (h,) = stepwire.Api(dir=tmp_path / "data").run("full").histograms("w", merge_ranks=False)
    assert (h.step, h.count, h.min, h.max) == (3, 100_000, 0.0, 99_999.0)


def test_a_normal_run_reuses_its_raw_values_files_and_leaves_none(tmp_path: Path) -> None:
    run = stepwire.init(project="survive", dir=tmp_path / "data", run_id="normal")
    seg = Path(run.stats()["segment_path"])
    for step in range(20):
        run.log_histogram("w", np.full(100_000, step, np.float32), step=step)
        run.flush()  # binned and queued: the next call reuses the file
    created = [p.name for p in segment_raw.raw_paths(seg)]
    run.finish()
    assert created == [f"{seg.name}{segment_raw.SUFFIX}1"] and not segment_raw.raw_paths(seg) and not seg.exists()
    stats = run.stats()
    assert (stats["binning_background"], stats["binning_shm_full"]) == (20, 0)
    hists = stepwire.Api(dir=tmp_path / "data").run("normal").histograms("w", merge_ranks=False)
    assert [(h.step, h.count, h.min, h.max, h.sum) for h in hists] == [(s, 100_000, s, s, s * 1e5) for s in range(20)]
