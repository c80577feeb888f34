"""The node agent: what a run logging to a remote collector leaves in shared memory when its process dies.

A run of the embedded default has the node's collector to drain its segment after a crash (``stepwire.survivor``).
A run that logs to a remote ``address`` has no collector on its node, so ``init`` starts an agent: one small
process per data directory and collector address, shared by the node's ranks, started on demand under a lock and
exiting once no segment of a live or dead run of that address has been left for ``idle_exit`` seconds. It scans
like the collector's survivor, delivers what a dead process left to the remote collector under the batches' own
sequences, and then ends the dead client's lease, so that the collector marks the rank crashed at once instead
of after its lease expires. ``$STEPWIRE_AGENT=0`` forbids it: such a run keeps its rings in process memory.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import grpc

from stepwire import segment
from stepwire.collector.embedded import _pid_alive, idle_exit_s
from stepwire.segment import Recovered
from stepwire.survivor import SCAN_INTERVAL_S, recover_all
from stepwire.transport import TOKEN_ENV, open_channel
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc

log = logging.getLogger("stepwire.agent")

AGENT_ENV = "STEPWIRE_AGENT"
"""``$STEPWIRE_AGENT=0``: no agent for runs that log to a remote collector (their rings stay in process memory)."""


def allowed() -> bool:
    """False when ``$STEPWIRE_AGENT`` forbids starting an agent."""
    return os.environ.get(AGENT_ENV, "1").strip().lower() not in segment.OFF_VALUES


def _files(directory: Path, address: str) -> tuple[Path, Path]:
    """The lock and the pid file of the agent of ``directory`` for ``address``."""
    key = hashlib.sha256(address.encode()).hexdigest()[:16]
    base = directory / "agents"
    return base / f"{key}.lock", base / f"{key}.json"


def _running(pid_file: Path) -> int | None:
    """The pid of the live agent recorded in ``pid_file``, if any."""
    try:
        pid = int(json.loads(pid_file.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if pid > 0 and _pid_alive(pid) else None


def ensure(directory: Path, address: str, token: str | None = None, tls_ca: str | os.PathLike[str] | None = None
           ) -> int:
    """Start the agent of ``directory`` for ``address`` unless one runs; returns its pid without waiting for it
    to be ready (it has nothing to do before a process dies). Called after the run's segment exists: an agent
    deciding to exit looks for segments under the same lock, so it either sees this run's or has gone before
    this check and a new one starts."""
    lock_path, pid_file = _files(directory, address)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pid = _running(pid_file)
        if pid is not None:
            return pid
        argv = [sys.executable, "-m", "stepwire", "agent", "--dir", str(directory), "--address", address,
                *(["--tls-ca", str(tls_ca)] if tls_ca else [])]
        env = dict(os.environ)
        if token:
            env[TOKEN_ENV] = token  # in its environment, not its command line (which anyone may read)
        with open(lock_path.parent / "agent.log", "ab") as out:
            pid = os.posix_spawn(sys.executable, argv, env, setsid=True,
                                 file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                                               (os.POSIX_SPAWN_DUP2, out.fileno(), 1),
                                               (os.POSIX_SPAWN_DUP2, out.fileno(), 2)])
        _record(pid_file, pid, address)
    threading.Thread(target=os.waitpid, args=(pid, 0), name="stepwire-agent-reaper", daemon=True).start()
    return pid


def _record(pid_file: Path, pid: int, address: str) -> None:
    tmp = pid_file.with_name(f".{pid_file.name}.{pid}")
    tmp.write_text(json.dumps({"pid": pid, "address": address}))
    os.replace(tmp, pid_file)


def _mine(directory: Path, address: str) -> bool:
    """True while a segment of a run of ``directory`` logging to ``address`` exists (its process alive or not)."""
    for path in segment.segments():
        found = segment.read_meta(path)
        if found is not None and found[0].get("remote") == address and found[0].get("directory") == str(directory):
            return True
    return False


def serve(directory: Path, address: str, tls_ca: str | None = None, idle_exit: float | None = None,
          stop: threading.Event | None = None) -> None:
    """The agent's loop (token from ``$STEPWIRE_TOKEN``): recover the segments of dead processes of ``directory``
    that log to ``address``, until none has been left for ``idle_exit`` seconds (or ``stop`` is set)."""
    idle_exit = idle_exit_s() if idle_exit is None else idle_exit
    stop = stop or threading.Event()
    lock_path, pid_file = _files(directory, address)
    with open(lock_path, "a+") as lock:  # started by hand, or by ``ensure`` (which recorded it already)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _running(pid_file) not in (None, os.getpid()):
            log.info("another agent serves %s for %s: exiting", directory, address)
            return
        _record(pid_file, os.getpid(), address)
    log.info("agent for %s: recovering the segments of dead processes logging to %s", directory, address)
    with open_channel(address, tls_ca=tls_ca) as channel:
        stub = ingest_pb2_grpc.IngestStub(channel)

        def died(rec: Recovered) -> None:  # its lease ends now: the collector marks the rank crashed at once
            stub.Heartbeat(ingest_pb2.Lease(client_id=str(rec.meta.get("stream_id", "")), release=True),
                           timeout=10.0)

        last_seen = time.monotonic()
        while not stop.wait(SCAN_INTERVAL_S):
            try:
                # only while the collector answers: a recovery holds the segment's and its spool's locks while it
                # retries, which would keep `stepwire sync --address` (to another collector, say) off them
                grpc.channel_ready_future(channel).result(timeout=1.0)
                recover_all(directory, stub, address, died, remote=address)
            except grpc.FutureTimeoutError:
                pass
            except Exception:  # never stop over one bad segment
                log.exception("recovering segments of dead processes failed")
            if _mine(directory, address):
                last_seen = time.monotonic()
            elif time.monotonic() - last_seen >= idle_exit:
                with open(lock_path, "a+") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    if not _mine(directory, address):  # a run starting now has its segment before it checks
                        pid_file.unlink(missing_ok=True)
                        log.info("no run of %s left for %.1f s: exiting", address, idle_exit)
                        return


def cmd_agent(args: argparse.Namespace) -> int:
    """``stepwire agent``: run the agent in the foreground until idle or SIGTERM (``init`` starts it detached)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    serve(Path(args.dir).resolve(), args.address, args.tls_ca, args.exit_when_idle, stop)
    return 0
