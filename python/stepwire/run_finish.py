"""How a run ends: ``flush`` (wait until everything logged so far is acknowledged) and ``finish`` (drain the
run's threads, record the rank's status, release the collector), for ``Run.flush`` and ``Run.finish``."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import grpc

from stepwire import spool
from stepwire.lifecycle import live_runs
from stepwire.run_stats import report_finish
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc

if TYPE_CHECKING:
    from stepwire.run import Run


def flush_run(run: Run, timeout: float | None) -> bool:
    """What ``Run.flush`` does (its docstring says what it promises)."""
    if run._finished or not run.active:
        return True
    if run._binner is not None:
        run._binner.join()  # histograms still being binned are part of "logged so far"
    if run._waiter is not None:
        run._waiter.join()  # device results still on their way are part of "logged so far"
    if run._media is not None:
        run._media.join()  # media records still being encoded too
    deadline = time.monotonic() + (run._finish_timeout if timeout is None else timeout)
    seq = run._stream.flush(max(0.0, deadline - time.monotonic()))
    return seq is not None and run._sender.wait(seq, max(0.0, deadline - time.monotonic()),
                                                delivered=not run._sender.offline)


def finish_run(run: Run, status: str) -> None:
    """What ``Run.finish`` does (its docstring says what it promises)."""
    if run._finished:
        return
    run._finished = True
    live_runs.discard(run)
    if not run.active:
        run._stream.close()
        return
    if run._system is not None:
        run._system.close()
    if run._console is not None:
        run._console.close()  # its last lines go out before the final status
    if run._binner is not None:
        run._binner.close()
    if run._waiter is not None:
        run._waiter.close()
    if run._media is not None:
        run._media.close()
    deadline = time.monotonic() + run._finish_timeout
    seq = run._stream.flush(run._finish_timeout) or 0
    cost = run.stats()  # stored with the run, per rank: the dashboard shows it
    overhead = {k: cost[k] for k in ("logging_s", "logging_fraction", "logged", "dropped")}
    run._sender.submit(spool.UPDATE_RUN, ingest_pb2.RunUpdate(
        run_id=run.id, status=status, finished=time.time(), rank=run.rank,
        meta_json=json.dumps({"overhead": {str(run.rank): overhead}})), force=True)
    # everything logged is delivered, spooled or lost; then, while the collector answers, the spool delivered
    while not run._sender.wait(seq, 0.2, delivered=False) and time.monotonic() < deadline:
        pass
    # (a local collector that died is started again by the sender: wait for it too)
    while ((run._sender.answering or run._sender.comes_back) and run._sender.backlog
           and time.monotonic() < deadline and not run._sender.wait(seq, 0.2)):
        pass
    run._sender.close()
    run._stream.close()
    if not run._sender.join(timeout=max(1.0, deadline - time.monotonic())):
        run._sender.abandon(int(run._stream.stats()["logged"]), f"still in memory when finish() gave up "
                            f"after finish_timeout={run._finish_timeout:g} s")
    run._stream.release_segment()  # everything in it is stored, spooled or counted lost
    report_finish(run, status, run.stats())
    channel = run._restart.channel if run._restart is not None and run._restart.channel is not None else \
        run._channel
    if channel is not None:
        if run._sender.answering:
            try:
                ingest_pb2_grpc.IngestStub(channel).Heartbeat(
                    ingest_pb2.Lease(client_id=run._stream_id, release=True), timeout=2.0)
            except grpc.RpcError:
                pass  # the lease expires by itself
        channel.close()
    if run._channel is not None and run._channel is not channel:
        run._channel.close()
