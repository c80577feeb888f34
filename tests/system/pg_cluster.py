"""A PostgreSQL cluster of a test's own (initdb into a temporary directory as the user postgres), which the test
stops and starts without disturbing the shared server of ``$STEPWIRE_TEST_PG_URL``: on loopback, or listening on
an address inside a network namespace (the three-node test's database node)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_bindir() -> Path | None:
    """The newest of Debian's PostgreSQL binary directories (``/usr/lib/postgresql/N/bin``), None without one."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return versions[-1].parent if versions else None


class Cluster:
    """A PostgreSQL cluster of the test's own: initdb as the user postgres into a temporary directory, trust for
    loopback and for the networks in ``trust``, listening on ``host:port`` (a free loopback port unless given)
    and on a Unix socket in its directory; its postmaster runs inside network namespace ``netns`` if given.
    Skips the test without root, ``runuser`` or Debian's PostgreSQL binaries."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, netns: str | None = None,
                 trust: Sequence[str] = ()) -> None:
        bindir = postgres_bindir()
        if os.geteuid() != 0 or bindir is None or shutil.which("runuser") is None:
            pytest.skip("a cluster of the test's own needs root, runuser and Debian's PostgreSQL binaries (initdb)")
        self.bin = bindir
        self.host, self.port, self.netns = host, port or free_port(), netns
        self.dir = Path(tempfile.mkdtemp(prefix="stepwire-pg-"))
        os.chmod(self.dir, 0o755)
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        try:
            self._as_postgres(f"{self.bin}/initdb", "--no-sync", "-A", "trust", "-U", "postgres", "-D",
                              str(self.data))
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.writelines(f"host all all {network} trust\n" for network in trust)
            self.start()
        except BaseException:
            self.remove()
            raise

    def _as_postgres(self, *args: str) -> None:
        namespace = ["ip", "netns", "exec", self.netns] if self.netns else []
        out = subprocess.run([*namespace, "runuser", "-u", "postgres", "--", *args], capture_output=True,
                             text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {out.stdout}{out.stderr}")

    @property
    def url(self) -> str:
        """The superuser's URL of database postgres, over TCP."""
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def socket_url(self, database: str = "postgres") -> str:
        """The superuser's URL of ``database`` through the cluster's Unix socket: a file, reached from any network
        namespace (while a link is cut)."""
        return f"postgresql://postgres@/{database}?host={self.dir}&port={self.port}"

    def start(self) -> None:
        """Start the postmaster (in the namespace if any) and wait until it accepts connections."""
        self._as_postgres(f"{self.bin}/pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-o",
                          f"-p {self.port} -k {self.dir} -c listen_addresses={self.host}", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the postmaster: ``fast`` (sessions rolled back, a checkpoint) or ``immediate`` (as a crash: every
        process killed, recovery on the next start)."""
        self._as_postgres(f"{self.bin}/pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        """Stop the postmaster if it runs and delete the cluster."""
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        except RuntimeError:  # no postmaster behind its pid file (it died): nothing to stop
            pass
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
