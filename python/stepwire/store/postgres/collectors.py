"""Which collectors live on a shared PostgreSQL store, and which run ranks each serves: a collector SIGKILLed on
one node is noticed by the others, who mark the ranks it served crashed.

Each collector, once a second, records a heartbeat row (its id, host, pid, and ``last_seen`` on the database's
clock, so that the nodes' clocks do not matter) and the (run, rank) pairs whose clients hold a lease with it: a
rank belongs to the collector that served it last. In the same transaction it takes away the rows of collectors
not seen for ``ttl_s`` (a conditional ``DELETE``: of two survivors racing, the second finds nothing), and marks
their ranks that are still running crashed, their last data as the run's end. A collector restarted on that
node, or any other, takes a rank back as soon as the rank's client speaks to it again (and sets it running).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Collection

from stepwire.store.postgres.connection import Conn

NOW = "extract(epoch from clock_timestamp())"
"""The database's clock, in seconds: the one clock every node's collector agrees on."""


class Collectors:
    """This collector's heartbeat on the store, and the claiming of dead collectors' ranks (in a transaction of
    the caller's)."""

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started = time.time()

    def beat(self, c: Conn, serving: Collection[tuple[str, int]]) -> None:
        """Record that this collector lives and serves the ranks ``serving`` (run id, rank)."""
        c.execute(f"INSERT INTO collectors VALUES (%s, %s, %s, %s, {NOW}) ON CONFLICT (collector_id) DO UPDATE "
                  "SET last_seen = EXCLUDED.last_seen", [self.id, self.host, self.pid, self.started])
        if serving:
            runs, ranks = zip(*sorted(serving), strict=True)
            c.execute("INSERT INTO collector_ranks SELECT run_id, rank, %s FROM unnest(%s::text[], %s::int[]) "
                      "AS s (run_id, rank) ON CONFLICT (run_id, rank) DO UPDATE SET collector_id = "
                      "EXCLUDED.collector_id WHERE collector_ranks.collector_id <> EXCLUDED.collector_id",
                      [self.id, list(runs), list(ranks)])

    def claim_dead(self, c: Conn, ttl_s: float) -> list[tuple[str, str, int]]:
        """Remove the collectors not seen for ``ttl_s`` and their ranks; returns (collector, run id, rank) of each
        rank they served last (the caller marks the running ones crashed, in the same transaction)."""
        dead = [str(r[0]) for r in c.execute(
            f"DELETE FROM collectors WHERE last_seen < {NOW} - %s AND collector_id <> %s RETURNING collector_id",
            [ttl_s, self.id]).fetchall()]
        if not dead:
            return []
        return [(str(r[0]), str(r[1]), int(r[2])) for r in c.execute(
            "DELETE FROM collector_ranks WHERE collector_id = ANY(%s) RETURNING collector_id, run_id, rank",
            [dead]).fetchall()]
