"""Client leases: which clients are alive, when a collector is idle, and which run ranks have crashed."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Collection
from typing import Protocol, runtime_checkable

from stepwire.store.base import Store

log = logging.getLogger("stepwire.collector")

LEASE_TTL_S = 15.0
"""A client that has not sent a heartbeat for this long no longer keeps an idle collector alive, and the run rank
it logged for is marked crashed."""


COLLECTOR_TTL_ENV = "STEPWIRE_COLLECTOR_TTL"
"""Seconds (default ``COLLECTOR_TTL_S``) after which the collectors sharing a store take a silent collector for
dead and mark the ranks it served crashed."""

COLLECTOR_TTL_S = 30.0
"""A collector on a shared store not heard of for this long is dead: another marks its running ranks crashed."""


def collector_ttl() -> float:
    """``$STEPWIRE_COLLECTOR_TTL`` seconds, else ``COLLECTOR_TTL_S``."""
    raw = os.environ.get(COLLECTOR_TTL_ENV, "").strip()
    try:
        ttl = float(raw) if raw else COLLECTOR_TTL_S
    except ValueError:
        raise ValueError(f"${COLLECTOR_TTL_ENV} must be a number of seconds, got {raw!r:.40}") from None
    if not ttl > 0:
        raise ValueError(f"${COLLECTOR_TTL_ENV} must be > 0, got {raw!r:.40}")
    return ttl


@runtime_checkable
class SharedLiveness(Protocol):
    """A store shared by collectors that knows which collector serves which ranks (``PostgresStore``)."""

    def heartbeat(self, serving: Collection[tuple[str, int]], ttl_s: float) -> list[tuple[str, int]]:
        """Record this collector and the ranks it serves; mark crashed the running ranks of collectors silent
        for ``ttl_s``; returns those marked."""

    def switch_rank(self, run_id: str, rank: int, expected: str, status: str, finished: float | None) -> bool:
        """Set ``rank``'s status to ``status`` only if it is ``expected`` (atomically: another collector or the
        rank itself may have changed it since it was read); True if it was."""


class Activity:
    """Client leases and the time of the last RPC: an idle collector may exit on its own, and a run rank whose
    client stopped renewing its lease has crashed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[str, float] = {}
        self._owners: dict[str, tuple[str, int]] = {}  # lease -> (run, rank) it logs for
        self._seen: dict[tuple[str, int], float] = {}  # (run, rank) -> when a lease of it last expired or ended
        self._died: set[tuple[str, int]] = set()  # run ranks whose client's process is known to be dead
        self.last_rpc = time.monotonic()
        self.started = self.last_rpc

    def touch(self, client_id: str = "", run: tuple[str, int] | None = None) -> None:
        """Record an RPC, renewing the caller's lease when it names one (and noting which run rank it logs)."""
        now = time.monotonic()
        with self._lock:
            self.last_rpc = now
            if client_id:
                self._leases[client_id] = now + LEASE_TTL_S
                if run is not None:
                    self._owners[client_id] = run
                    self._died.discard(run)

    def release(self, client_id: str) -> None:
        """Drop a lease: the client has finished, or its process is known to be dead (a survivor released it).
        Either way the run rank it logged for is silent from now on, not only once the lease would have expired:
        a rank still running then has crashed."""
        with self._lock:
            self._leases.pop(client_id, None)
            owner = self._owners.pop(client_id, None)
            self.last_rpc = time.monotonic()
            if owner is not None:
                self._died.add(owner)

    def _prune(self, now: float) -> None:
        for client, expiry in [(c, t) for c, t in self._leases.items() if t <= now]:
            del self._leases[client]
            self.last_rpc = max(self.last_rpc, expiry)  # idle counts from when the lease lapsed
            owner = self._owners.pop(client, None)
            if owner is not None:
                self._seen[owner] = expiry - LEASE_TTL_S

    def idle_for(self) -> float:
        """Seconds without a live lease or any RPC (0 while a lease is live)."""
        now = time.monotonic()
        with self._lock:
            self._prune(now)
            return 0.0 if self._leases else now - self.last_rpc

    def serving(self) -> set[tuple[str, int]]:
        """The (run id, rank) pairs whose clients hold a live lease here."""
        with self._lock:
            self._prune(time.monotonic())
            return set(self._owners.values())

    def heard_of(self, run: tuple[str, int]) -> bool:
        """True if a client of ``run`` (run id, rank) has held a lease here since this collector started."""
        with self._lock:
            return run in self._seen or run in self._owners.values()

    def silent(self, run: tuple[str, int]) -> bool:
        """True once no lease has spoken for ``run`` (run id, rank) for ``LEASE_TTL_S``, counting from this
        collector's start for a run rank it has not heard of (its client may reconnect after a restart)."""
        now = time.monotonic()
        with self._lock:
            self._prune(now)
            if run in self._owners.values():
                return False
            if run in self._died:
                return True
            return now - max(self._seen.get(run, self.started), self.started) >= LEASE_TTL_S


def mark_crashed(store: Store, activity: Activity) -> list[tuple[str, int]]:
    """Mark "crashed" every rank of a running run that no client has renewed a lease for in ``LEASE_TTL_S``,
    with the time of its last data as the run's end; a crashed rank whose client holds a lease here again is
    running again. Only the runs with a rank running, and those this collector's clients log to, are read. On a
    store other collectors share, only the ranks whose clients this collector has served are judged: another
    node's live rank never renews a lease here; such a store (``SharedLiveness``) hears this collector's heartbeat
    and which ranks it serves, and this collector marks the ranks of a collector silent for ``collector_ttl()``
    crashed. Returns the (run, rank) pairs marked."""
    marked = []
    if store.shared and isinstance(store, SharedLiveness):
        ttl = collector_ttl()
        for key in store.heartbeat(activity.serving(), ttl):
            log.warning("run %s rank %s: its collector was not heard of for %.0f s, marked crashed", *key, ttl)
            marked.append(key)
    serving = activity.serving()
    for run in store.live_runs({run_id for run_id, _ in serving}):
        for rank_key, status in dict(run.meta.get("ranks", {})).items():
            key = (run.id, int(rank_key))
            if store.shared and not activity.heard_of(key):
                continue
            if status == "crashed" and key in serving:  # its client speaks again (not merely: not silent yet)
                _switch(store, run.id, key[1], "crashed", "running", None)
            elif status == "running" and activity.silent(key):
                if _switch(store, run.id, key[1], "running", "crashed", store.last_data(run.id, key[1])):
                    log.warning("run %s rank %s: no client for %.0f s, marked crashed", run.id, rank_key,
                                LEASE_TTL_S)
                    marked.append(key)
    return marked


def _switch(store: Store, run_id: str, rank: int, expected: str, status: str, finished: float | None) -> bool:
    """``rank``'s status from ``expected`` (as read moments ago) to ``status``: on a shared store only if it still
    is ``expected`` (a rank that finished meanwhile stays finished); True if changed."""
    if isinstance(store, SharedLiveness):
        return store.switch_rank(run_id, rank, expected, status, finished)
    store.update_run(run_id, status=status, finished=finished, rank=rank)
    return True
