"""A run's counts (``Run.stats``) gathered from its parts, and the report ``finish`` gives of them."""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from stepwire.binning import idle_stats
from stepwire.console import IDLE_STATS as CONSOLE_IDLE_STATS
from stepwire.values import count_text

if TYPE_CHECKING:
    from stepwire.run import Run

log = logging.getLogger("stepwire")

_IDLE_DEVICE = {"device_dropped": 0, "device_waited": 0, "device_waited_s": 0.0, "device_errors": 0,
                "device_error": ""}
_IDLE_SENDER = {"sent": 0, "acknowledged": 0, "rejected": 0, "spooled": 0, "spooled_total": 0, "lost": 0,
                "lost_reason": "", "side_failed": 0, "side_lost": 0, "sender_errors": 0}


def collect_stats(run: Run) -> dict[str, Any]:
    """What ``Run.stats`` returns (its docstring says what each count means)."""
    busy = run._busy_ns / 1e9
    out: dict[str, Any] = {"logging_s": busy, "logging_fraction": busy / max(time.time() - run._t0, 1e-9)}
    out.update(run._console.stats() if run._console is not None else CONSOLE_IDLE_STATS)
    out["system_samples"] = run._system.samples if run._system is not None else 0
    if run.active:
        core = run._stream.stats()
        out.update({key: core[key] for key in ("logged", "dropped", "timed_out", "blocked")})
        out.update(run._sender.counts())
        seg = run._stream.segment_info()
        out.update({"survives_crash": bool(seg["survives_crash"]) and not run._shm_reason,
                    "survives_crash_reason": str(run._shm_reason or seg["reason"]),
                    "segment_path": str(seg["path"]), "segment_bytes": int(seg["bytes"])})
    else:
        out.update({"logged": 0, "dropped": 0, "timed_out": 0, "blocked": 0, **_IDLE_SENDER,
                    "survives_crash": False, "survives_crash_reason": run._shm_reason, "segment_path": "",
                    "segment_bytes": 0})
    w = run._waiter
    out.update(_IDLE_DEVICE if w is None else {
        "device_dropped": w.dropped, "device_waited": w.waited, "device_waited_s": w.waited_s,
        "device_errors": w.errors, "device_error": w.first_error})
    out.update(run._binner.stats() if run._binner is not None else idle_stats())
    if run._media is not None:
        out.update(run._media.stats())
    else:
        from stepwire.media import IDLE_STATS

        out.update(IDLE_STATS)
    return out


def report_finish(run: Run, status: str, stats: dict[str, Any]) -> None:
    """The line ``finish`` prints to stderr (unless the run is quiet), and warnings for what waits in the spool or
    was refused."""
    if not run._quiet:
        timed_out = f" ({stats['timed_out']} after waiting block_timeout)" if stats["timed_out"] else ""
        lost = f" ({stats['lost_reason']})" if stats["lost_reason"] else ""
        who = f"run {run.id} rank {run.rank}/{run.world_size}" if run.world_size > 1 else f"run {run.id}"
        print(f"stepwire: {who} finished ({status}): logging cost {stats['logging_fraction']:.1%} of "
              f"wall time, {count_text(stats['logged'])} points, {int(stats['dropped'])} dropped{timed_out}; "
              f"{count_text(stats['acknowledged'])} stored, {count_text(stats['spooled'])} in the spool, "
              f"{count_text(stats['lost'])} lost{lost}", file=sys.stderr)
    if stats["spooled"] or run._sender.backlog:
        log.warning("run %s: %d items (%d records) wait in the spool %s; deliver them with: stepwire sync %s",
                    run.id, stats["spooled"], run._sender.backlog, run.spool_dir, run.spool_dir.parent.parent)
    if stats["rejected"] or stats["side_failed"]:
        log.warning("run %s: the collector refused %d items and %d other records as invalid", run.id,
                    stats["rejected"], stats["side_failed"])
