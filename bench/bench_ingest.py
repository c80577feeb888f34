"""End-to-end ingest: client processes ``log`` large dicts into a collector process and its DuckDB store.

Measures points/s from the first ``log`` call until every point is acknowledged (committed to the store), and
the collector's peak RSS. Reference measured in the same run: inserting the same number of points into
DuckDB as one row per point from numpy arrays, in-process (the naive store layout, without any transport).

    python bench/bench_ingest.py [--clients 1 2] [--points 5000000] [--keys 1000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import psutil

from processes import start_collector
from report import emit

CLIENT = textwrap.dedent("""
    import json, sys, time, stepwire
    address, points, keys, batch_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    run = stepwire.init(project="bench", name="ingest", address=address, batch_bytes=batch_bytes)
    data = {f"layer{i}/metric": float(i) for i in range(keys)}
    t0 = time.time()
    for step in range(points // keys):
        run.log(data, step=step)
    t1 = time.time()
    run.finish()
    print(json.dumps({"start": t0, "logged": t1, "end": time.time(), "stats": run.stats()}))
""")


def duckdb_rows_reference(points: int) -> float:
    """Points/s for inserting one row per point (run, name, step, value, wall) from numpy, in-process."""
    con = duckdb.connect(":memory:")
    con.execute("CREATE TABLE p (run VARCHAR, name VARCHAR, step BIGINT, value DOUBLE, wall DOUBLE)")
    names = np.array([f"layer{i}/metric" for i in range(1000)], dtype=object)
    chunk = 1_000_000
    t = time.perf_counter()
    for start in range(0, points, chunk):
        n = min(chunk, points - start)
        con.register("src", {"run": np.full(n, "r", dtype=object), "name": names[np.arange(n) % 1000],
                             "step": np.arange(n) // 1000, "value": np.random.rand(n), "wall": np.full(n, 1.0)})
        con.execute("INSERT INTO p SELECT * FROM src")
        con.unregister("src")
    return points / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--points", type=int, default=5_000_000, help="points per client")
    parser.add_argument("--keys", type=int, default=1000, help="keys per log() call")
    parser.add_argument("--batch-bytes", type=int, default=1 << 20, help="the client's batch_bytes")
    args = parser.parse_args()
    reference = duckdb_rows_reference(args.points)
    rows = []
    for clients in args.clients:
        directory = Path(tempfile.mkdtemp(prefix="stepwire-ingest-"))
        collector, address = start_collector(directory)
        proc = psutil.Process(collector.pid)
        peak = [proc.memory_info().rss]
        stop = threading.Event()

        def sample(proc: psutil.Process = proc, peak: list[int] = peak, stop: threading.Event = stop) -> None:
            while not stop.wait(0.05):
                peak[0] = max(peak[0], proc.memory_info().rss)

        sampler = threading.Thread(target=sample)
        sampler.start()
        procs = [subprocess.Popen([sys.executable, "-c", CLIENT, address, str(args.points), str(args.keys),
                                   str(args.batch_bytes)],
                                  stdout=subprocess.PIPE) for _ in range(clients)]
        outs = [json.loads(p.communicate()[0]) for p in procs]
        stop.set()
        sampler.join()
        collector.terminate()
        collector.wait()
        total = sum(o["stats"]["acknowledged"] for o in outs)
        assert all(o["stats"]["acknowledged"] == o["stats"]["logged"] for o in outs), outs
        elapsed = max(o["end"] for o in outs) - min(o["start"] for o in outs)
        log_elapsed = max(o["logged"] for o in outs) - min(o["start"] for o in outs)
        rate = total / elapsed
        rows.append({"case": f"{clients} client(s), log() of {args.keys} keys, {args.batch_bytes >> 10} KiB batches",
                     "points": total,
                     "seconds": elapsed, "points/s": rate, "log() points/s": total / log_elapsed,
                     "collector peak RSS MiB": peak[0] / 2**20,
                     "reference": "DuckDB row-per-point insert, in-process", "ref points/s": reference,
                     "ratio": rate / reference, "target": ">= 5 M points/s"})
    emit("ingest", "stepwire: ingest through gRPC into the DuckDB store (acknowledged = committed)", rows)


if __name__ == "__main__":
    main()
