"""What the crash-survival tests share: a training child that logs and reports each call that returned, killing it
at a random moment, and reading back that every returned call is stored exactly once (the one in flight whole or
not at all) once nothing of the dead process is left in /dev/shm.

A child writes, after every call returns, a little-endian i64 to its ``out`` file (unbuffered ``os.write``: the
page cache outlives the process), so the test knows which calls returned."""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import stepwire
from stepwire import segment

KEYS = 1000
KEY_NAMES = [f"k{i:04d}" for i in range(KEYS)]
"""The keys of the 1,000-key dicts the children log (each key's value is the step)."""

CHILD = textwrap.dedent("""
    import os, signal, struct, sys
    import stepwire
    directory, run_id, kind, out, segv_at, address = sys.argv[1:7]
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    run = stepwire.init(project="survive", dir=directory, run_id=run_id, quiet=True, flush_interval=0.05,
                        system_metrics=False, console=False, address=address or None)
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
"""One call a step: a 1,000-key dict (``kind`` "dict") or ``loss`` and ``lr`` scalars; SIGSEGV after ``segv_at``;
to the embedded default, or to a remote collector's ``address``."""


def my_segments(pids: set[int]) -> list[Path]:
    """The segments left by the given processes."""
    left = []
    for path in segment.segments():
        rec = segment.read(path)
        if rec is not None and rec.pid in pids:
            left.append(path)
    return left


def start(directory: Path, run_id: str, kind: str, out: Path, segv_at: int = -2,
          env: dict[str, str] | None = None, address: str = "") -> subprocess.Popen[bytes]:
    """Start a ``CHILD`` logging run ``run_id`` to ``directory`` (or to the collector at ``address``, ``directory``
    holding its spool)."""
    return subprocess.Popen([sys.executable, "-c", CHILD, str(directory), run_id, kind, str(out), str(segv_at),
                             address], env={**os.environ, **(env or {})}, stderr=subprocess.DEVNULL)


def returned(out: Path) -> list[int]:
    """What a child wrote to ``out`` so far, in order."""
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


def check_series(view: stepwire.RunView, name: str, last: int, in_flight: bool = True, scale: float = 1.0
                 ) -> list[int]:
    """Series ``name`` holds steps 0 to ``last`` once each, valued ``scale * step``, and step ``last + 1`` only
    if that call was ``in_flight`` at the death (whole or not at all); returns its steps."""
    s = view.scalars(name)
    steps: list[int] = s["step"].tolist()
    allowed = [list(range(last + 1))] + ([list(range(last + 2))] if in_flight else [])
    assert steps in allowed, (view.id, name, last, in_flight, steps[-3:], len(steps))
    np.testing.assert_array_equal(s["value"], scale * np.asarray(steps, dtype=np.float64))
    return steps


def check_dict(view: stepwire.RunView, last: int, in_flight: bool = True) -> None:
    """``check_series`` for every key of the 1,000-key dicts, and the same steps for all keys: every key of a call
    or none."""
    stored = [check_series(view, name, last, in_flight) for name in KEY_NAMES]
    assert all(steps == stored[0] for steps in stored), view.id


def check(api: stepwire.Api, run_id: str, kind: str, last: int) -> None:
    """Every call up to ``last`` stored exactly once; the next one whole or not at all; nothing after it."""
    view = api.run(run_id)
    if kind == "dict":
        check_dict(view, last)
    else:
        check_series(view, "loss", last)
        check_series(view, "lr", last, scale=0.5)


def settle(ok: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``ok`` until it holds or ``timeout`` passes (the assertions that follow say what did not hold)."""
    deadline = time.monotonic() + timeout
    while not ok() and time.monotonic() < deadline:
        time.sleep(0.5)


def wait_until(what: str, ok: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``ok`` until it holds; ``AssertionError`` naming ``what`` if it does not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
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
