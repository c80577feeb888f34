"""How a run's record changes when a rank opens it, updates it or finishes: the same in every store (each store
reads the record, applies these under its own lock or row lock, and writes it back)."""

from __future__ import annotations

from typing import Any

from stepwire.store.base import RunRecord


def join(current: RunRecord, run: RunRecord, rank: int, world_size: int, created: bool) -> None:
    """Rank ``rank`` of ``world_size`` opens ``run``, whose stored record is ``current`` (``created``: just
    inserted from ``run``): rank 0 describes the run, every rank adds to its meta; the rank is running."""
    if not created:
        current.meta.update(run.meta)
        if rank == 0:  # the other ranks join; rank 0 describes the run
            current.project, current.name, current.tags = run.project, run.name, run.tags
            current.config.update(run.config)
        current.created = min(current.created, run.created)
    current.meta["world_size"] = max(int(current.meta.get("world_size", 1)), world_size)
    current.meta.setdefault("ranks", {})[str(rank)] = "running"
    settle_status(current)


def update(current: RunRecord, config: dict[str, Any] | None, status: str | None, finished: float | None,
           replace_config: bool, meta: dict[str, Any] | None, rank: int) -> None:
    """Merge config, meta and ``rank``'s status into ``current`` (as ``Store.update_run`` describes)."""
    if replace_config:
        current.config = dict(config or {})
    elif config:
        current.config.update(config)
    for key, value in (meta or {}).items():  # one level deep, so ranks add to a dict, not replace it
        if isinstance(value, dict) and isinstance(current.meta.get(key), dict):
            current.meta[key].update(value)
        else:
            current.meta[key] = value
    if status:
        current.meta.setdefault("ranks", {})[str(rank)] = status
        current.status = status
    if finished is not None:
        current.finished = max(current.finished, finished)
    settle_status(current)


def settle_status(r: RunRecord) -> None:
    """The run's status from its ranks': failed or crashed if any is, finished once all of ``world_size`` are,
    else running (unchanged while no rank has one)."""
    statuses = list(r.meta.get("ranks", {}).values())
    if "failed" in statuses:
        r.status = "failed"
    elif "crashed" in statuses:
        r.status = "crashed"
    elif statuses and all(v == "finished" for v in statuses) and len(statuses) >= r.meta.get("world_size", 1):
        r.status = "finished"
    elif statuses:
        r.status = "running"
