"""Many ranks of one run at once: N client processes (default 64) push into one collector on loopback.

Each rank logs ``--points`` scalar points as ``log`` calls of ``--keys`` keys into the same run (one agreed
run id). Prints points/s from the first rank's first call until every rank's data is acknowledged, the
collector's peak RSS, and the ratio to one client pushing the same total alone (measured in the same run).

    python bench/bench_ranks.py [--ranks 64] [--points 200000] [--keys 100]
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

import psutil

import stepwire
from processes import start_collector
from report import emit

RANK = textwrap.dedent("""
    import json, sys, time, stepwire
    address, (points, keys, rank, world) = sys.argv[1], map(int, sys.argv[2:6])
    run = stepwire.init(project="ranks", address=address, run_id="bench-ranks-" + sys.argv[6], rank=rank,
                        world_size=world)
    data = {f"layer{i}/metric": float(i) for i in range(keys)}
    t0 = time.time()
    for step in range(points // keys):
        run.log(data, step=step)
    run.finish()
    print(json.dumps({"start": t0, "end": time.time(), "stats": run.stats()}))
""")


def measure(ranks: int, points: int, keys: int, tag: str) -> dict[str, float]:
    directory = Path(tempfile.mkdtemp(prefix="stepwire-ranks-"))
    collector, address = start_collector(directory)
    proc = psutil.Process(collector.pid)
    peak = [proc.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], proc.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        procs = [subprocess.Popen([sys.executable, "-c", RANK, address, str(points), str(keys), str(r), str(ranks),
                                   tag], stdout=subprocess.PIPE) for r in range(ranks)]
        outs = [json.loads(p.communicate()[0]) for p in procs]
        total = sum(o["stats"]["acknowledged"] for o in outs)
        assert all(o["stats"]["acknowledged"] == o["stats"]["logged"] for o in outs)
        view = stepwire.Api(address=address).run(f"bench-ranks-{tag}")
        stored = sum(s.items for s in view.series())
    finally:
        stop.set()
        collector.terminate()
        collector.wait()
    elapsed = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    assert stored == total, (stored, total)
    return {"points": total, "seconds": elapsed, "points/s": total / elapsed, "rss": peak[0] / 2**20,
            "runs": 1.0, "status_finished": float(view.status == "finished")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=64)
    parser.add_argument("--points", type=int, default=200_000, help="points per rank")
    parser.add_argument("--keys", type=int, default=100)
    args = parser.parse_args()
    tag = str(int(time.time()))
    one = measure(1, args.points * args.ranks, args.keys, tag + "-1")
    many = measure(args.ranks, args.points, args.keys, tag + "-n")
    emit("ranks", f"stepwire: {args.ranks} ranks of one run pushing at once (loopback, 2 cores)", [
        {"case": "1 client, same total", "points": one["points"], "seconds": one["seconds"],
         "points/s": one["points/s"], "collector peak RSS MiB": one["rss"], "reference": "-", "ratio": 1.0},
        {"case": f"{args.ranks} ranks, one run", "points": many["points"], "seconds": many["seconds"],
         "points/s": many["points/s"], "collector peak RSS MiB": many["rss"], "reference": "1 client, same total",
         "ratio": many["points/s"] / one["points/s"]},
    ])


if __name__ == "__main__":
    main()
