"""End-to-end ingest: client processes ``log`` large dicts into a collector process and its DuckDB store.

Measures points/s from the first ``log`` call until every point is acknowledged (committed to the store), and
the collector's peak RSS. Reference measured in the same run: inserting the same number of points into
DuckDB as one row per point from numpy arrays, in-process (the naive store layout, without any transport).

    python bench/bench_ingest.py [--clients 1 4 16 64] [--total-points 16000000] [--keys 1000]
        [--group-commit both|on|off]

Each client count is measured with group commit off ($STEPWIRE_GROUP_COMMIT=0: one transaction per push) and
on (concurrent pushes stored in one transaction), in the same run; the points are shared among the clients, each
logging at least ``--min-points``. Columns "collector CPU s" and "clients CPU s" (from the start signal) show
where the 2 cores went: client processes share the machine with the collector here, unlike on a cluster.

With ``--full-speed 16 64`` it measures sustained ingest instead: that many client processes ``log`` as fast as
they can for ``--duration`` seconds each; figures: points/s acknowledged live (from the first ``log`` call to the
last client's end), the points the collector pushed back on (spooled by the clients, then delivered by ``stepwire
sync``), the collector's peak RSS (sync included), and a check that every point is stored exactly once. DuckDB's
memory limit is the collector's ($STEPWIRE_DUCKDB_MEMORY_LIMIT, else 1 GiB).

    python bench/bench_ingest.py --full-speed 16 64 [--duration 20] [--keys 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import psutil

import stepwire
from processes import start_collector
from report import emit
from stepwire.collector.group_commit import GROUP_COMMIT_ENV
from stepwire.store.duckdb_store import memory_limit

CLIENT = textwrap.dedent("""
    import json, sys, time, stepwire
    address, points, keys, batch_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    run = stepwire.init(project="bench", name="ingest", address=address, batch_bytes=batch_bytes, quiet=True)
    data = {f"layer{i}/metric": float(i) for i in range(keys)}
    print("ready", flush=True)
    sys.stdin.readline()  # every client starts logging at once, none while others still start
    t0, cpu0 = time.time(), time.process_time()
    for step in range(points // keys):
        run.log(data, step=step)
    t1 = time.time()
    run.finish()
    print(json.dumps({"start": t0, "logged": t1, "end": time.time(), "stats": run.stats(),
                      "cpu": time.process_time() - cpu0}))
""")

FULL_SPEED_CLIENT = textwrap.dedent("""
    import json, sys, time, stepwire
    address, seconds, keys, batch_bytes = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    run = stepwire.init(project="bench", name="full-speed", address=address, batch_bytes=batch_bytes, quiet=True,
                        finish_timeout=600)
    data = {f"layer{i}/metric": float(i) for i in range(keys)}
    t0 = time.time()
    end, step = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        run.log(data, step=step)
        step += 1
    t1 = time.time()
    run.finish()
    print(json.dumps({"id": run.id, "start": t0, "logged": t1, "end": time.time(), "stats": run.stats()}))
""")


class PeakRss:
    """The largest RSS of a process, sampled every 50 ms in a thread while inside."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def full_speed(clients: int, seconds: float, keys: int, batch_bytes: int) -> dict[str, object]:
    """``clients`` processes logging as fast as they can for ``seconds`` into one collector."""
    directory = Path(tempfile.mkdtemp(prefix="stepwire-ingest-"))
    collector, address = start_collector(directory / "collector")
    env = {**os.environ, "STEPWIRE_DIR": str(directory / "clients")}  # where a client would spool
    try:
        with PeakRss(collector.pid) as rss:
            procs = [subprocess.Popen([sys.executable, "-c", FULL_SPEED_CLIENT, address, str(seconds), str(keys),
                                       str(batch_bytes)], stdout=subprocess.PIPE, env=env) for _ in range(clients)]
            outs = [json.loads(p.communicate()[0]) for p in procs]
            # what the collector pushed back on (RESOURCE_EXHAUSTED, or no answer within 2 s) waits in the
            # clients' spools: deliver it, then check that every point is stored once
            t = time.time()
            subprocess.run([sys.executable, "-m", "stepwire", "sync", str(directory / "clients"), "--address",
                            address], check=True, capture_output=True)
            synced = time.time() - t
        api = stepwire.Api(address=address)
        runs = {r.id: r for r in api.runs(project="bench")}
        stored = sum(sum(s.items for s in runs[o["id"]].series()) for o in outs if o["id"] in runs)
    finally:
        collector.terminate()
        collector.wait()
        shutil.rmtree(directory, ignore_errors=True)
    stats = [o["stats"] for o in outs]
    acknowledged = sum(s["acknowledged"] for s in stats)
    logged = sum(s["logged"] for s in stats)
    elapsed = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    return {"case": f"{clients} clients at full speed for {seconds:g} s, log() of {keys} keys",
            "points": logged, "seconds": elapsed, "points/s acknowledged live": acknowledged / elapsed,
            "collector peak RSS MiB": rss.peak / 2**20,
            "spooled": logged - acknowledged, "sync s": synced, "lost": sum(s["lost"] + s["dropped"] for s in stats),
            "stored once": "yes" if stored == logged else f"no: logged {logged}, stored {stored}",
            "DuckDB memory limit MiB": memory_limit() / 2**20}


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


def run_clients(addresses: list[str], points: int, keys: int, batch_bytes: int, env: dict[str, str]
                ) -> list[dict[str, Any]]:
    """One client process per address (``CLIENT``), started together once all are ready; their reports."""
    procs = [subprocess.Popen([sys.executable, "-c", CLIENT, address, str(points), str(keys), str(batch_bytes)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env) for address in addresses]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.flush()
    return [json.loads(p.communicate()[0]) for p in procs]


def one_case(clients: int, points: int, keys: int, batch_bytes: int, group_commit: bool) -> dict[str, Any]:
    """``clients`` processes each logging ``points`` points into one collector process (group commit on or off,
    by $STEPWIRE_GROUP_COMMIT); figures: points/s stored (from the first ``log`` call until every point is
    acknowledged, i.e. committed; what the collector pushed back on and the clients spooled counts once
    ``stepwire sync`` delivered it), the points pushed back into the clients' spools on the way (``finish()``
    replays them), collector peak RSS, and a check that every point is stored once."""
    directory = Path(tempfile.mkdtemp(prefix="stepwire-ingest-"))
    os.environ[GROUP_COMMIT_ENV] = "1" if group_commit else "0"  # the collector process inherits it
    try:
        collector, address = start_collector(directory / "collector")
    finally:
        del os.environ[GROUP_COMMIT_ENV]
    env = {**os.environ, "STEPWIRE_DIR": str(directory / "clients")}  # where a client would spool
    try:
        with PeakRss(collector.pid) as rss:
            outs = run_clients([address] * clients, points, keys, batch_bytes, env)
            stats = [o["stats"] for o in outs]
            spooled = sum(s["logged"] - s["acknowledged"] for s in stats)
            if spooled:
                subprocess.run([sys.executable, "-m", "stepwire", "sync", str(directory / "clients"), "--address",
                                address], check=True, capture_output=True)
            end = time.time()
        cpu = psutil.Process(collector.pid).cpu_times()
        api = stepwire.Api(address=address)
        stored = sum(sum(s.items for s in r.series()) for r in api.runs(project="bench"))
    finally:
        collector.terminate()
        collector.wait()
        shutil.rmtree(directory, ignore_errors=True)
    total = sum(s["logged"] for s in stats)
    assert stored == total and not any(s["lost"] + s["dropped"] for s in stats), (stored, total)
    start = min(o["start"] for o in outs)
    elapsed = (end if spooled else max(o["end"] for o in outs)) - start
    log_elapsed = max(o["logged"] for o in outs) - start
    return {"case": f"{clients} client(s), log() of {keys} keys, {batch_bytes >> 10} KiB batches",
            "group commit": "on" if group_commit else "off", "points": total, "seconds": elapsed,
            "points/s": total / elapsed, "log() points/s": total / log_elapsed, "spooled": spooled,
            "pushed back": sum(s["spooled_total"] for s in stats),
            "collector peak RSS MiB": rss.peak / 2**20, "collector CPU s": cpu.user + cpu.system,
            "clients CPU s": sum(o["cpu"] for o in outs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--points", type=int, default=None,
                        help="points per client (default: --total-points divided among the clients)")
    parser.add_argument("--total-points", type=int, default=16_000_000, help="points of all clients together")
    parser.add_argument("--min-points", type=int, default=1_000_000,
                        help="points per client at least (steady ingest: each client's fixed costs, its run, "
                             "its 1,000 series, its first and last RPCs, stay small beside its points)")
    parser.add_argument("--keys", type=int, default=1000, help="keys per log() call")
    parser.add_argument("--batch-bytes", type=int, default=1 << 20, help="the client's batch_bytes")
    parser.add_argument("--group-commit", choices=["both", "on", "off"], default="both",
                        help="store concurrent pushes in one transaction (on), one each (off), or compare both")
    parser.add_argument("--full-speed", type=int, nargs="+", metavar="CLIENTS",
                        help="sustained ingest with this many clients logging as fast as they can")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds each --full-speed client logs")
    args = parser.parse_args()
    if args.full_speed:
        emit("ingest_full_speed", "stepwire: sustained ingest, clients logging as fast as they can",
             [full_speed(n, args.duration, args.keys, args.batch_bytes) for n in args.full_speed])
        return
    reference = duckdb_rows_reference(args.total_points)
    modes = {"both": [False, True], "on": [True], "off": [False]}[args.group_commit]
    rows = []
    for group_commit in modes:
        for clients in args.clients:
            share = max(args.min_points, args.total_points // clients)
            points = args.points or max(args.keys, share // args.keys * args.keys)
            row = one_case(clients, points, args.keys, args.batch_bytes, group_commit)
            row.update({"reference": "DuckDB row-per-point insert, in-process", "ref points/s": reference,
                        "ratio": row["points/s"] / reference})
            rows.append(row)
    one = {r["group commit"]: r["points/s"] for r in rows if r["case"].startswith("1 client")}
    for r in rows:  # the target: no collapse as clients grow
        base = one.get(r["group commit"])
        r["vs 1 client"] = r["points/s"] / base if base else float("nan")
    emit("ingest", "stepwire: ingest through gRPC into the DuckDB store (acknowledged = committed), group commit "
         "off and on", rows, {"target": "16 and 64 clients at least the 1-client rate (group commit on)"})


if __name__ == "__main__":
    main()
