"""Where the DuckDB store's write CPU goes, in-process (no gRPC, no client): batches shaped like those of
bench_ingest.py's clients (``--keys`` series of ``--steps`` steps each) appended into a ``DuckDBStore``, ``--group``
batches per transaction, with wall and CPU time per statement of ``append_many``, per tenth of the data, and of
the checkpoints (DuckDB's own, at its WAL threshold, and the last one at close).

    python bench/profile_store.py [--points 8000000] [--keys 1000] [--steps 40] [--streams 1] [--group 1]
        [--compression METHOD,...]

``--compression zstd`` turns off only ZSTD, as the store did before DICT_FSST was turned off too: the checkpoint
figures then show what DICT_FSST costs (docs/ingest.md).
"""

from __future__ import annotations

import argparse
import collections
import functools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from stepwire.v1 import ingest_pb2

from stepwire import _core
from stepwire.collector.decode import DecodedBatch, decode_batch
from stepwire.store import duckdb_writes
from stepwire.store.base import RunRecord
from stepwire.store.duckdb_store import DuckDBStore

STAGES: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0.0])


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, adding its wall and CPU seconds (and calls) to ``STAGES[name]``."""

    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        t, c = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            s = STAGES[name]
            s[0] += time.perf_counter() - t
            s[1] += time.process_time() - c
            s[2] += 1

    return inner


class TimedConnection:
    """A DuckDB connection whose ``execute`` is timed per kind of statement."""

    def __init__(self, con: Any) -> None:
        self.con = con

    def execute(self, sql: str, *args: Any) -> Any:
        words = sql.split()
        dedupe = words[0] == "SELECT" and "batches" in sql
        kind = "SELECT stored (stream, sequence) in batches" if dedupe else " ".join(words[:3]) \
            if words[0] == "INSERT" else words[0]
        return timed(kind, self.con.execute)(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.con, name)


def instrument() -> None:
    """Time the stages of ``DuckDBWrites.append_many``."""
    w = duckdb_writes.DuckDBWrites
    w._scalar_rows = timed("pack chunk rows (numpy, overview)", w._scalar_rows)  # type: ignore[method-assign]
    w._checkpoint_if_needed = timed("WAL size check / CHECKPOINT", w._checkpoint_if_needed)  # type: ignore
    group = w._append_group
    w._append_group = lambda self, con, batches: group(self, TimedConnection(con), batches)  # type: ignore


def batch(stream: int, sequence: int, keys: int, steps: int) -> DecodedBatch:
    """Batch ``sequence`` of stream ``stream``: ``keys`` series of ``steps`` steps each (defined in the first)."""
    first = (sequence - 1) * steps
    s = np.arange(first, first + steps, dtype=np.int64)
    msg = ingest_pb2.Batch(run_id=f"run{stream}", rank=0, stream_id=f"stream{stream}", sequence=sequence,
                           compression=ingest_pb2.COMPRESSION_NONE)
    if sequence == 1:
        for i in range(keys):
            msg.series.add(id=i, name=f"layer{i}/metric", kind=_core.KIND_SCALAR)
    msg.scalars.point_count = keys * steps
    msg.scalars.series_ids = np.arange(keys, dtype=np.uint32).tobytes()
    msg.scalars.group_lengths = np.full(keys, steps, np.uint32).tobytes()
    msg.scalars.steps = np.tile(s, keys).tobytes()
    msg.scalars.values = (np.repeat(np.arange(keys, dtype=np.float64), steps) + np.tile(np.sin(s), keys)).tobytes()
    msg.scalars.wall_times = np.tile(1.7e9 + s * 0.01, keys).tobytes()
    return decode_batch(msg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=float, default=8e6)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=40, help="steps per series per batch (a 1 MiB client batch "
                        "of 1,000 keys holds about 37; a busy collector's clients send up to 16 MiB)")
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--group", type=int, default=1, help="batches per transaction (group commit)")
    parser.add_argument("--compression", default=None, help="disabled_compression_methods instead of the store's")
    args = parser.parse_args()
    instrument()
    store = DuckDBStore(Path(tempfile.mkdtemp(prefix="stepwire-profile-")))
    if args.compression is not None:
        store._con.execute(f"SET disabled_compression_methods = '{args.compression}'")
    for s in range(args.streams):
        store.open_run(RunRecord(id=f"run{s}", project="bench", name=f"run{s}", tags=[], config={},
                                 created=time.time(), status="running", meta={}))
    wal = store.path.with_name(store.path.name + ".wal")
    per_batch = args.keys * args.steps
    batches = int(args.points) // per_batch
    marks: list[tuple[int, float, float, int]] = []
    sequences = [0] * args.streams
    done = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while done < batches:
        group = []
        for _ in range(min(args.group, batches - done)):
            stream = (done + len(group)) % args.streams
            sequences[stream] += 1
            group.append(batch(stream, sequences[stream], args.keys, args.steps))
        t, c = time.perf_counter(), time.process_time()
        store.append_many(group)
        done += len(group)
        marks.append((done * per_batch, time.perf_counter() - t, time.process_time() - c,
                      wal.stat().st_size if wal.exists() else 0))
    t, c = time.perf_counter(), time.process_time()
    store._con.execute("CHECKPOINT")
    last = (time.perf_counter() - t, time.process_time() - c)
    print(f"{done * per_batch / 1e6:.1f} M points in {done} batches of {per_batch} ({args.group} per transaction, "
          f"{args.streams} streams): {time.perf_counter() - t0:.2f} s wall, {time.process_time() - c0:.2f} CPU-s "
          f"(building batches included); last CHECKPOINT {last[0]:.2f} s wall, {last[1]:.2f} CPU-s; file "
          f"{store.path.stat().st_size / 2**20:.0f} MiB")
    tenth = max(1, len(marks) // 10)
    for i in range(0, len(marks), tenth):
        part = marks[i:i + tenth]
        print(f"  up to {part[-1][0] / 1e6:6.1f} M points: append {sum(m[1] for m in part):7.2f} s wall "
              f"{sum(m[2] for m in part):6.2f} CPU-s, slowest {max(m[1] for m in part):6.2f} s, WAL "
              f"{part[-1][3] >> 20} MiB")
    print(f"  {'stage':42s} {'wall s':>8s} {'CPU s':>8s} {'calls':>6s} {'CPU ms/call':>12s}")
    for name, (wall, cpu, calls) in sorted(STAGES.items(), key=lambda kv: -kv[1][1]):
        print(f"  {name:42s} {wall:8.2f} {cpu:8.2f} {int(calls):6d} {1e3 * cpu / calls:12.2f}")
    used = store._con.execute("SELECT column_name, list(DISTINCT compression) FROM pragma_storage_info("
                              "'scalar_chunks') WHERE segment_type != 'VALIDITY' AND column_name IN ('points', "
                              "'name') GROUP BY ALL ORDER BY 1").fetchall()
    print("  compression:", ", ".join(f"{c}: {'/'.join(m)}" for c, m in used))
    store.close()


if __name__ == "__main__":
    main()
