"""What a SIGKILL of the training process loses: points that left ``log()`` but were never stored.

A child process logs one scalar per call (``fast``: back to back; ``step``: one call per 10 ms step, as a
training loop does) and writes how many calls returned into a shared counter after each one. The parent kills
it with SIGKILL at a random moment, reads the counter (every call that returned), and counts what the collector
stored. Lost = returned - stored, also as milliseconds of logging at the rate the child ran. Each case runs with
the rings in process memory (``STEPWIRE_SHM=0``, as before issue 19) and in the shared-memory segment (the
default), which the node's agent drains once the child is dead (counted once its segment is gone).

    python bench/bench_kill.py [--trials 8]
"""

from __future__ import annotations

import argparse
import mmap
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

import stepwire
from processes import start_collector
from report import emit
from stepwire import segment

CHILD = textwrap.dedent("""
    import mmap, sys, time
    import numpy as np
    import stepwire
    address, counter, run_id, pace, data = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
    with open(counter, "r+b") as f:
        done = np.frombuffer(mmap.mmap(f.fileno(), 16), dtype=np.float64)
    run = stepwire.init(address=address, run_id=run_id, dir=data, quiet=True)
    done[1] = time.time()
    i = 0
    while True:
        run.log_scalar("x", float(i), step=i)
        i += 1
        done[0] = i
        if pace:
            time.sleep(pace)
""")


def drained(pid: int, timeout: float = 60.0) -> None:
    """Wait until no segment of process ``pid`` is left (the agent stored what it held)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        heads = [segment.read_meta(p) for p in segment.segments()]
        if not any(h is not None and h[1] == pid for h in heads):
            return
        time.sleep(0.1)
    raise SystemExit(f"the segment of the killed process {pid} was not drained within {timeout:g} s")


def trial(address: str, tmp: Path, pace: float, n: int, shm: str) -> dict[str, float]:
    counter = tmp / f"counter-{n}"
    counter.write_bytes(bytes(16))
    run_id = f"kill-{int(pace * 1000)}-{shm}-{n}"
    child = subprocess.Popen([sys.executable, "-c", CHILD, address, str(counter), run_id, str(pace),
                              str(tmp / "client")], env={**os.environ, "STEPWIRE_SHM": shm})
    with open(counter, "r+b") as f:
        done = np.frombuffer(mmap.mmap(f.fileno(), 16), dtype=np.float64)
        while done[1] == 0:  # until init returned
            time.sleep(0.01)
        time.sleep(random.uniform(1.0, 3.0))
        child.send_signal(signal.SIGKILL)
        child.wait()
        returned, elapsed = int(done[0]), time.time() - float(done[1])
    time.sleep(1.0)  # a batch already pushed is committed by now
    drained(child.pid)
    stored = len(stepwire.Api(address=address).run(run_id).scalars("x")["step"])
    rate = returned / elapsed
    return {"returned": returned, "stored": stored, "lost": returned - stored,
            "lost ms": (returned - stored) / rate * 1000, "lost %": 100 * (returned - stored) / max(returned, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="stepwire-kill-"))
    collector, address = start_collector(tmp / "server")
    rows = []
    try:
        for case, pace, shm in (("fast: log_scalar back to back, process memory", 0.0, "0"),
                                ("fast: log_scalar back to back, segment", 0.0, "1"),
                                ("step: one log_scalar per 10 ms, process memory", 0.01, "0"),
                                ("step: one log_scalar per 10 ms, segment", 0.01, "1")):
            results = [trial(address, tmp, pace, n, shm) for n in range(args.trials)]
            lost = np.array([r["lost"] for r in results])
            rows.append({"case": case, "trials": args.trials,
                         "returned (median)": float(np.median([r["returned"] for r in results])),
                         "lost median": float(np.median(lost)), "lost max": float(lost.max()),
                         "lost ms median": float(np.median([r["lost ms"] for r in results])),
                         "lost ms max": float(max(r["lost ms"] for r in results)),
                         "lost % max": float(max(r["lost %"] for r in results))})
    finally:
        collector.terminate()
        collector.wait()
    emit("kill", "stepwire: what SIGKILL of the training process loses", rows,
         {"pid": os.getpid()})


if __name__ == "__main__":
    main()
