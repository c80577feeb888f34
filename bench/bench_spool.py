"""The spool: how fast unacknowledged batches are written to disk, and how long recovery takes.

1. Spool write rate: a run whose collector is down logs ``--points`` points (everything goes to the spool,
   fsync'd per record), measured from the first ``log`` call to ``finish``; reference: the same points
   acknowledged by a live collector.
2. Recovery after SIGKILL: a collector is killed while a client logs; the time from its restart until the
   client's spooled backlog is acknowledged.
3. Replay from the spool alone (no network): ``--records`` records of ``--record-kb`` KB appended, then read
   back with peek/pop as a sync does; bytes read from the segment files per byte delivered (1.0 is ideal).

    python bench/bench_spool.py [--points 2000000] [--records 1000 --record-kb 10] [--replay-only]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import tempfile
import time
from pathlib import Path

import stepwire
from processes import free_port, start_collector
from report import emit
from stepwire import spool
from stepwire.spool import Spool


def log_points(run: stepwire.Run, points: int) -> None:
    data = {f"m{i}": float(i) for i in range(1000)}
    for step in range(points // 1000):
        run.log(data, step=step)


def replay(tmp: Path, records: int, record_kb: int) -> None:
    payload = bytes(range(256)) * (record_kb * 1024 // 256)
    sp = Spool(tmp / "replay")
    t = time.perf_counter()
    for _ in range(records):
        sp.append(spool.BATCH, payload)
    append_s = time.perf_counter() - t
    reader = Spool(tmp / "replay")
    t = time.perf_counter()
    count = reader.count(verify=False)
    count_s = time.perf_counter() - t
    t = time.perf_counter()
    delivered = 0
    while (record := reader.peek()) is not None:
        delivered += len(record[1])
        reader.pop()
    replay_s = time.perf_counter() - t
    assert count == records and delivered == records * len(payload)
    mb = delivered / 1e6
    emit("spool_replay", f"stepwire: {records:,} spool records of {record_kb} KB", [
        {"case": "append (fsync'd per record)", "seconds": append_s, "MB/s": mb / append_s,
         "bytes read per byte delivered": "-"},
        {"case": "count (headers only)", "seconds": count_s, "MB/s": mb / count_s,
         "bytes read per byte delivered": "-"},
        {"case": "replay: peek + pop (cursor written per record)", "seconds": replay_s, "MB/s": mb / replay_s,
         "bytes read per byte delivered": reader.bytes_read / delivered},
    ])
    shutil.rmtree(tmp / "replay")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2_000_000)
    parser.add_argument("--records", type=int, default=1000, help="replay: records in the spool")
    parser.add_argument("--record-kb", type=int, default=10, help="replay: size of each record")
    parser.add_argument("--replay-only", action="store_true", help="only the replay from the spool")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="stepwire-spool-"))
    replay(tmp, args.records, args.record_kb)
    if args.replay_only:
        return
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
