"""One case of bench_ingest.py, profiled: when the clients stopped logging and finished, what they spooled, how
long the ``stepwire sync`` of what was left took; optionally the collector under ``perf record`` or ``py-spy``.

    python bench/profile_ingest.py CLIENTS POINTS_PER_CLIENT [--perf FILE] [--py-spy FILE]

then e.g. ``perf report -i FILE --no-children --sort dso --stdio``, or ``py-spy``'s collapsed stacks in FILE.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import bench_ingest
import processes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clients", type=int)
    parser.add_argument("points", type=int, help="points per client")
    parser.add_argument("--perf", help="perf record -g the collector into this file")
    parser.add_argument("--py-spy", dest="py_spy", help="py-spy record the collector (collapsed stacks) into this")
    args = parser.parse_args()
    profilers: list[subprocess.Popen[bytes]] = []

    def start(directory: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
        proc, address = processes.start_collector(directory, 0, *extra)
        if args.perf:
            profilers.append(subprocess.Popen(["perf", "record", "-q", "-F", "499", "-g", "-o", args.perf, "-p",
                                               str(proc.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if args.py_spy:
            spy = shutil.which("py-spy") or "py-spy"
            profilers.append(subprocess.Popen([spy, "record", "-p", str(proc.pid), "-o", args.py_spy, "-f", "raw",
                                               "-r", "200", "--nonblocking", "--threads"],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.3)
        return proc, address

    syncs: list[tuple[float, float]] = []
    real_run = subprocess.run

    def timed_run(*a: Any, **k: Any) -> Any:
        t = time.time()
        try:
            return real_run(*a, **k)
        finally:
            syncs.append((t, time.time()))

    outs: list[dict[str, Any]] = []
    real_loads = json.loads

    def loads(s: Any, *a: Any, **k: Any) -> Any:
        o = real_loads(s, *a, **k)
        if isinstance(o, dict) and "stats" in o:
            outs.append(o)
        return o

    bench_ingest.start_collector = start  # type: ignore[assignment]
    bench_ingest.subprocess.run = timed_run  # type: ignore[assignment]
    bench_ingest.json.loads = loads  # type: ignore[assignment]
    row = bench_ingest.one_case(args.clients, args.points, 1000, 1 << 20, True)
    for p in profilers:
        p.wait(timeout=300)
    t0 = min(o["start"] for o in outs)
    logged = sorted(o["logged"] - t0 for o in outs)
    ended = sorted(o["end"] - t0 for o in outs)
    print(f"clients: logged by {logged[-1]:.1f} s (median {logged[len(logged) // 2]:.1f}), finished by "
          f"{ended[-1]:.1f} s (median {ended[len(ended) // 2]:.1f}); spooled_total "
          f"{sum(o['stats']['spooled_total'] for o in outs):,}, left in spools {row['spooled']:,}")
    for a, b in syncs:
        print(f"stepwire sync from {a - t0:.1f} s to {b - t0:.1f} s")
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})


if __name__ == "__main__":
    main()
