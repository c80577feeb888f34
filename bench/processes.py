"""Collector processes for the benchmarks: start one on loopback and wait until it serves."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from stepwire.collector.embedded import running_collector


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_collector(directory: Path, port: int = 0, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """``stepwire collector`` for ``directory`` on 127.0.0.1:``port`` (0: any) with ``extra`` arguments;
    returns (process, address)."""
    proc = subprocess.Popen([sys.executable, "-m", "stepwire", "collector", "--listen", f"127.0.0.1:{port}",
                             "--dir", str(directory), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(1200):
        address = running_collector(directory, pid=proc.pid)
        if address:
            return proc, address
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"the collector for {directory} did not start")
