"""The embedded default: find the local collector of a data directory, or start one that exits when idle."""

from __future__ import annotations

import fcntl
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import grpc

from stepwire.transport import ADDRESS_FILE, open_channel

DEFAULT_DIR = "stepwire-data"
IDLE_EXIT_S = 10.0
"""An embedded collector exits after this many seconds with no client lease and no RPC (``$STEPWIRE_IDLE_EXIT``
overrides it)."""

START_TIMEOUT_S = 60.0


def data_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``directory``, else ``$STEPWIRE_DIR``, else ``./stepwire-data``; ``NotADirectoryError``
    if that names something other than a directory."""
    path = Path(directory or os.environ.get("STEPWIRE_DIR") or DEFAULT_DIR).resolve()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"the stepwire data directory {path} (dir= or $STEPWIRE_DIR) is not a directory")
    return path


def idle_exit_s() -> float:
    """``$STEPWIRE_IDLE_EXIT`` (seconds, a finite number >= 0), else ``IDLE_EXIT_S``."""
    raw = os.environ.get("STEPWIRE_IDLE_EXIT", "")
    try:
        value = float(raw) if raw else IDLE_EXIT_S
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise ValueError(f"$STEPWIRE_IDLE_EXIT must be a number of seconds >= 0, got {raw!r}")
    return value


def reachable(address: str, timeout: float, tls_ca: str | os.PathLike[str] | None = None) -> bool:
    """True if a gRPC server answers at ``address`` within ``timeout`` seconds (over TLS with ``tls_ca``)."""
    with open_channel(address, token="", tls_ca=tls_ca) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a collector that exited but is not yet reaped is a zombie: not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def recorded_address(directory: Path) -> str | None:
    """The address ``directory``'s collector wrote in its address file, alive or not (nothing checked)."""
    try:
        return str(json.loads((directory / ADDRESS_FILE).read_text())["address"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_collector(directory: Path, pid: int | None = None, tls_ca: str | os.PathLike[str] | None = None
                      ) -> str | None:
    """The address of the live collector serving ``directory``, if any (optionally only if it is ``pid``;
    ``tls_ca`` for one serving TLS)."""
    try:
        info = json.loads((directory / ADDRESS_FILE).read_text())
        address, owner = str(info["address"]), int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if owner <= 0 or (pid is not None and owner != pid) or not _pid_alive(owner):
        return None
    return address if reachable(address, timeout=2.0, tls_ca=tls_ca) else None


def dashboard_url(directory: Path) -> str | None:
    """The dashboard URL of the live collector serving ``directory``, if it serves one."""
    if running_collector(directory) is None:
        return None
    try:
        url = json.loads((directory / ADDRESS_FILE).read_text()).get("http")
    except (OSError, ValueError):
        return None
    return str(url) if url else None


def local_collector(directory: Path, idle_exit: float | None = None) -> str:
    """Join the collector of ``directory``, starting one if none runs; returns its address.

    A lock file serialises the check-and-start, so processes starting together share one collector. With
    ``$STEPWIRE_STORE`` set (``postgresql://...``) the collector writes to that store: ranks on every node, each
    node with its own collector, log into one run.
    """
    if idle_exit is None:
        idle_exit = idle_exit_s()
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "collector.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        address = running_collector(directory)
        if address:
            return address
        # with $STEPWIRE_STORE (a database shared by the nodes' collectors) it writes there, else to the directory
        store = os.environ.get("STEPWIRE_STORE")
        with open(directory / "collector.log", "ab") as log:
            launcher = subprocess.run(
                [sys.executable, "-m", "stepwire", "collector", "--dir", str(directory), "--listen", "127.0.0.1:0",
                 "--http", "127.0.0.1:0", "--exit-when-idle", str(idle_exit), "--detach",
                 *(["--store", store] if store else [])],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=START_TIMEOUT_S + 10)
        address = running_collector(directory) if launcher.returncode == 0 else None
        if address:
            return address
        raise RuntimeError(f"the local stepwire collector for {directory} did not start; "
                           f"see {directory / 'collector.log'}")
