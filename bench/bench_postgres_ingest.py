"""End-to-end ingest into PostgreSQL: client processes ``log`` large dicts into three collector processes sharing
one PostgreSQL database (``--store postgresql://...``), against a raw ``COPY`` of the same rows measured in the
same run.

Each client count gets a fresh database; the clients are spread over the collectors in turn. Figures: points/s
from the first ``log`` call until every point is acknowledged (committed), chunk rows/s reaching PostgreSQL
(``scalar_chunks`` rows stored over the same time), the collectors' peak RSS (the largest of the three), and a
check that every point is stored once. The reference: the very rows the collectors stored, read back as
PostgreSQL's binary COPY format, then loaded with ``COPY scalar_chunks ... FROM STDIN (FORMAT BINARY)`` into an
empty copy of the table (same indexes) from one connection, and from three at once (a third each); the ratio is
stepwire's points/s over the reference's.

    python bench/bench_postgres_ingest.py [--url postgresql://...] [--clients 1 4 16 64] [--collectors 3]
        [--total-points 4000000] [--keys 1000] [--writers 128]

``--url`` (default ``$STEPWIRE_TEST_PG_URL``) names a role that may create databases; each case makes one and
drops it. ``--writers N`` also measures PostgreSQL's own ceiling: N connections each COPYing 1/N of the rows at
once (capped below the server's ``max_connections``, which the output states).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from bench_ingest import PeakRss, run_clients
from report import emit
from stepwire.collector.embedded import running_collector
from stepwire.store.postgres.rows import CHUNK_COLUMNS

COLUMNS = ", ".join(CHUNK_COLUMNS)


def with_database(url: str, name: str) -> str:
    """``url`` naming database ``name``."""
    head, _, tail = url.partition("?")
    return head.rsplit("/", 1)[0] + "/" + name + (f"?{tail}" if tail else "")


@contextmanager
def database(admin: str) -> Iterator[str]:
    """A fresh database (its URL), dropped afterwards."""
    name = f"stepwire_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(admin, name)
    finally:
        for _ in range(100):  # another role's session may visit it for a moment (a monitor): try again
            try:
                with psycopg.connect(admin, autocommit=True) as c:
                    c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND "
                              "usename = current_user AND pid <> pg_backend_pid()", [name])
                    c.execute(f'DROP DATABASE IF EXISTS "{name}"')
                break
            except psycopg.OperationalError:
                time.sleep(0.3)
        else:
            print(f"could not drop the database {name}: drop it by hand", file=sys.stderr)


def start_collector(directory: Path, url: str) -> tuple[subprocess.Popen[bytes], str]:
    """``stepwire collector`` for ``directory`` on ``url`` (blobs beside it); (process, address). Its output goes
    to ``directory/collector.log``, shown if it does not start."""
    directory.mkdir(parents=True)
    with open(directory / "collector.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "stepwire", "collector", "--listen", "127.0.0.1:0", "--dir",
                                 str(directory), "--store", url, "--blob-dir", str(directory.parent / "blobs")],
                                stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        address = running_collector(directory, pid=proc.pid)
        if address:
            return proc, address
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"the collector for {directory} did not start: {(directory / 'collector.log').read_text()}")


def ingest(url: str, clients: int, collectors: int, points: int, keys: int, batch_bytes: int) -> dict[str, Any]:
    """``clients`` processes (each ``points`` points) spread over ``collectors`` collector processes on ``url``."""
    directory = Path(tempfile.mkdtemp(prefix="stepwire-pg-ingest-"))
    procs: list[subprocess.Popen[bytes]] = []
    addresses: list[str] = []
    try:
        for i in range(collectors):
            proc, address = start_collector(directory / f"collector{i}", url)
            procs.append(proc)
            addresses.append(address)
        env = {**os.environ, "STEPWIRE_DIR": str(directory / "clients")}  # where a client would spool
        rss = [PeakRss(p.pid) for p in procs]
        for r in rss:
            r.__enter__()
        try:
            outs = run_clients([addresses[i % collectors] for i in range(clients)], points, keys, batch_bytes, env)
            stats = [o["stats"] for o in outs]
            spooled = sum(s["logged"] - s["acknowledged"] for s in stats)
            if spooled:  # what a collector pushed back on: delivered, and counted once delivered
                subprocess.run([sys.executable, "-m", "stepwire", "sync", str(directory / "clients"), "--address",
                                addresses[0]], check=True, capture_output=True)
            end = time.time()
        finally:
            for r in rss:
                r.__exit__()
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(directory, ignore_errors=True)
    with psycopg.connect(url) as c:
        row = c.execute("SELECT coalesce(sum(n), 0), count(*) FROM scalar_chunks").fetchone()
    assert row is not None
    stored, chunk_rows = int(row[0]), int(row[1])
    total = sum(s["logged"] for s in stats)
    assert stored == total and not any(s["lost"] + s["dropped"] for s in stats), (stored, total)
    elapsed = (end if spooled else max(o["end"] for o in outs)) - min(o["start"] for o in outs)
    return {"case": f"{clients} client(s) over {collectors} collectors, log() of {keys} keys", "points": total,
            "chunk rows": chunk_rows, "seconds": elapsed, "points/s": total / elapsed, "rows/s": chunk_rows / elapsed,
            "spooled": spooled, "collector peak RSS MiB": max(r.peak for r in rss) / 2**20}


def stored_rows(url: str, parts: int) -> list[bytes]:
    """The stored chunk rows in PostgreSQL's binary COPY format, split in ``parts`` (by id)."""
    out = []
    with psycopg.connect(url) as c, c.cursor() as cur:
        for k in range(parts):
            buf = io.BytesIO()
            with cur.copy(f"COPY (SELECT {COLUMNS} FROM scalar_chunks WHERE id % {parts} = {k}) TO STDOUT "
                          "(FORMAT BINARY)") as cp:
                for data in cp:
                    buf.write(data)
            out.append(buf.getvalue())
    return out


def copy_rate(url: str, parts: list[bytes], points: int, rows: int) -> dict[str, float]:
    """Load ``parts`` (binary COPY data) into an empty copy of ``scalar_chunks``, one connection per part, all at
    once; points/s and rows/s from the first COPY to the last commit."""
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS copy_reference")
        c.execute("CREATE TABLE copy_reference (LIKE scalar_chunks INCLUDING ALL)")
    conns = [psycopg.connect(url) for _ in parts]
    start = threading.Barrier(len(parts) + 1)
    errors: list[BaseException] = []

    def load(conn: psycopg.Connection[Any], data: bytes) -> None:
        start.wait()
        try:
            with conn.cursor() as cur, cur.copy(f"COPY copy_reference ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as cp:
                for i in range(0, len(data), 1 << 20):
                    cp.write(data[i:i + (1 << 20)])
            conn.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(c, d)) for c, d in zip(conns, parts, strict=True)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for c in conns:
        c.close()
    if errors:
        raise errors[0]
    with psycopg.connect(url, autocommit=True) as c:
        found = c.execute("SELECT count(*) FROM copy_reference").fetchone()
        c.execute("DROP TABLE copy_reference")
    assert found == (rows,), (found, rows)
    return {"points/s": points / elapsed, "rows/s": rows / elapsed, "seconds": elapsed}


def writers_allowed(url: str, wanted: int) -> int:
    """``wanted``, or fewer: the server's free connections less a margin (``max_connections``)."""
    with psycopg.connect(url) as c:
        row = c.execute("SELECT current_setting('max_connections')::int - count(*) FROM pg_stat_activity").fetchone()
    assert row is not None
    return max(1, min(wanted, int(row[0]) - 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("STEPWIRE_TEST_PG_URL"),
                        help="a PostgreSQL URL whose role may create databases (default $STEPWIRE_TEST_PG_URL)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--collectors", type=int, default=3)
    parser.add_argument("--total-points", type=int, default=4_000_000, help="points of all clients together")
    parser.add_argument("--min-points", type=int, default=50_000, help="points per client at least")
    parser.add_argument("--keys", type=int, default=1000, help="keys per log() call")
    parser.add_argument("--batch-bytes", type=int, default=1 << 20, help="the client's batch_bytes")
    parser.add_argument("--writers", type=int, default=0,
                        help="also load the largest case's rows with this many concurrent COPY connections")
    args = parser.parse_args()
    if not args.url:
        parser.error("no PostgreSQL: pass --url or set $STEPWIRE_TEST_PG_URL (.ci/postgres.sh prints one)")
    rows = []
    ceiling: dict[str, Any] = {}
    for clients in args.clients:
        share = max(args.min_points, args.total_points // clients)
        points = max(args.keys, share // args.keys * args.keys)
        with database(args.url) as url:
            row = ingest(url, clients, args.collectors, points, args.keys, args.batch_bytes)
            one = copy_rate(url, stored_rows(url, 1), row["points"], row["chunk rows"])
            three = copy_rate(url, stored_rows(url, 3), row["points"], row["chunk rows"])
            row.update({"COPY 1 conn points/s": one["points/s"], "COPY 3 conns points/s": three["points/s"],
                        "COPY 3 conns rows/s": three["rows/s"], "ratio vs COPY 1": row["points/s"] / one["points/s"],
                        "ratio vs COPY 3": row["points/s"] / three["points/s"]})
            if args.writers and clients == max(args.clients):
                n = writers_allowed(url, args.writers)
                many = copy_rate(url, stored_rows(url, n), row["points"], row["chunk rows"])
                ceiling = {"concurrent COPY writers": n, "asked": args.writers, "points/s": many["points/s"],
                           "rows/s": many["rows/s"]}
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    base = rows[0]["points/s"] if rows and rows[0]["case"].startswith("1 client") else float("nan")
    for r in rows:
        r["vs 1 client"] = r["points/s"] / base
    emit("postgres_ingest", f"stepwire: ingest through gRPC into {args.collectors} collectors sharing one "
         "PostgreSQL database (acknowledged = committed), against a raw binary COPY of the same rows", rows,
         {"target": "within 2x of the raw COPY reference; 16 and 64 clients at least the 1-client rate",
          **({"PostgreSQL ceiling": ceiling} if ceiling else {})})
    if ceiling:
        print(f"PostgreSQL ceiling: {ceiling['concurrent COPY writers']} concurrent COPY writers (asked "
              f"{ceiling['asked']}): {ceiling['points/s'] / 1e6:.2f} M points/s, {ceiling['rows/s']:.0f} rows/s")


if __name__ == "__main__":
    main()
