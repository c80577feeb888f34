"""The spool: how fast unacknowledged batches are written to disk, and how long recovery takes.

1. Spool write rate: a run whose collector is down logs ``--points`` points (everything goes to the spool,
   fsync'd per record), measured from the first ``log`` call to ``finish``; reference: the same points
   acknowledged by a live collector.
2. Recovery after SIGKILL: a collector is killed while a client logs; the time from its restart until the
   client's spooled backlog is acknowledged.

    python bench/bench_spool.py [--points 2000000]
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import time
from pathlib import Path

import stepwire
from processes import free_port, start_collector
from report import emit


def log_points(run: stepwire.Run, points: int) -> None:
    data = {f"m{i}": float(i) for i in range(1000)}
    for step in range(points // 1000):
        run.log(data, step=step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2_000_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="stepwire-spool-"))
    port = free_port()

    t = time.perf_counter()
    run = stepwire.init(address=f"127.0.0.1:{port}", dir=tmp / "down", connect_timeout=0.2)
    log_points(run, args.points)
    run.finish()
    spool_s = time.perf_counter() - t
    spool_bytes = sum(f.stat().st_size for f in (tmp / "down" / "spool").rglob("*.spool"))
    assert run.stats()["spooled"] == args.points

    collector, _ = start_collector(tmp / "server", port)
    try:
        t = time.perf_counter()
        live = stepwire.init(address=f"127.0.0.1:{port}", dir=tmp / "up")
        log_points(live, args.points)
        live.finish()
        live_s = time.perf_counter() - t
        assert live.stats()["acknowledged"] == args.points

        client = stepwire.init(address=f"127.0.0.1:{port}", dir=tmp / "kill", flush_interval=0.05)
        collector.send_signal(signal.SIGKILL)
        collector.wait()
        log_points(client, args.points)  # the collector is gone: after the quick retries this spools
        client._stream.flush(60.0)
        time.sleep(3)
        restart = time.perf_counter()
        collector, _ = start_collector(tmp / "server", port)
        started = time.perf_counter() - restart
        assert client.flush(timeout=600)
        recovery = time.perf_counter() - restart
        client.finish()
    finally:
        collector.terminate()
        collector.wait()
    emit("spool", "stepwire: spool write rate and recovery after SIGKILL", [
        {"case": f"{args.points:,} points into the spool (collector down)", "seconds": spool_s,
         "points/s": args.points / spool_s, "spool MB/s (lz4 batches)": spool_bytes / spool_s / 1e6,
         "reference": "same points acknowledged live", "ref seconds": live_s, "ratio": spool_s / live_s},
        {"case": f"recovery after SIGKILL: restart + replay of {args.points:,} points", "seconds": recovery,
         "points/s": args.points / recovery, "spool MB/s (lz4 batches)": 0.0, "reference": "collector start alone",
         "ref seconds": started, "ratio": recovery / started},
    ])


if __name__ == "__main__":
    main()
