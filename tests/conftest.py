"""Fixtures: real collector processes on loopback, data directories, and clean-up of embedded collectors."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stepwire import segment
from stepwire.collector.embedded import running_collector
from stepwire.store.base import Store

PG_URL_ENV = "STEPWIRE_TEST_PG_URL"
"""A PostgreSQL URL whose role may create databases (``.ci/postgres.sh`` prints one); tests that need PostgreSQL
skip without it."""


@dataclass
class CollectorProcess:
    """A ``stepwire collector`` started by a test."""

    proc: subprocess.Popen[bytes]
    address: str
    dir: Path

    @property
    def http(self) -> str:
        """The dashboard URL (the collector was started with ``--http``)."""
        return str(json.loads((self.dir / "collector.json").read_text())["http"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_collector(directory: Path, *extra: str, tls_ca: Path | None = None) -> CollectorProcess:
    """Start ``stepwire collector`` on an ephemeral loopback port and wait until it serves."""
    directory.mkdir(parents=True, exist_ok=True)
    log = open(directory / "test-collector.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "stepwire", "collector", "--listen", "127.0.0.1:0",
                             "--dir", str(directory), *extra], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        address = running_collector(directory, pid=proc.pid, tls_ca=tls_ca)
        if address:
            return CollectorProcess(proc, address, directory)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError((directory / "test-collector.log").read_text())


def stop_embedded(directory: Path) -> None:
    """Stop the embedded collector of ``directory`` if one runs (tests must not leave processes behind)."""
    try:
        pid = int(json.loads((directory / "collector.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        except ChildProcessError:
            pass
        time.sleep(0.05)


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. "2m") mounted at ``where`` while inside: a disk that fills up. Skips the test
    when it cannot be mounted (it needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (a disk that fills up) needs root")
    where.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                         text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {out.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill_up(filler: Path, smallest: int = 1) -> None:
    """Write ``filler`` until its filesystem is full, down to blocks of ``smallest`` bytes."""
    with open(filler, "wb", buffering=0) as f:
        for block in (1 << 16, 4096, 512, 1):
            if block < smallest:
                break
            try:
                while f.write(b"\0" * block):
                    pass
            except OSError:
                pass


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    """A collector process on loopback with its own data directory."""
    c = start_collector(tmp_path / "collector")
    yield c
    c.stop()


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[CollectorProcess]:
    """A collector process serving the web dashboard too (its URL: ``.http``)."""
    c = start_collector(tmp_path / "collector", "--http", "127.0.0.1:0")
    yield c
    c.stop()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A data directory for the embedded default; its collector is stopped afterwards."""
    d = tmp_path / "data"
    monkeypatch.setenv("STEPWIRE_DIR", str(d))
    yield d
    stop_embedded(d)


def segments_of(directory: Path) -> list[Path]:
    """The shared-memory segments of runs that log into ``directory`` (or below it)."""
    found = [(path, segment.read_meta(path)) for path in segment.segments()]
    return [path for path, meta in found
            if meta is not None and str(meta[0].get("directory", "")).startswith(str(directory))]


@pytest.fixture(scope="session", autouse=True)
def _session_data_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``$STEPWIRE_DIR`` in a temporary directory for the whole session too: module-scoped fixtures run before
    the per-test ``_data_in_tmp`` and would otherwise spool into the working directory's ``./stepwire-data``.
    At the end, the shared-memory segments of dead processes that logged into this session's directories and
    that nothing drained (tests kill clients and their collectors alike) are removed: a test run leaves nothing
    in /dev/shm."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STEPWIRE_DIR", str(tmp_path_factory.mktemp("session") / "stepwire-data"))
        yield
    base = str(tmp_path_factory.getbasetemp().resolve())
    for path in segment.segments():
        found = segment.read_meta(path)
        if found is not None and str(found[0].get("directory", "")).startswith(base) and segment.owner_dead(*found):
            path.unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def _data_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``$STEPWIRE_DIR`` in the test's temporary directory, so that runs logging to a collector's address spool
    there and nothing is written into the working directory (the ``data_dir`` fixture sets its own); ClearML's
    offline sessions go there too instead of ``~/.stepwire/offline``."""
    monkeypatch.setenv("STEPWIRE_DIR", str(tmp_path / "stepwire-data"))
    monkeypatch.setenv("STEPWIRE_OFFLINE_DIR", str(tmp_path / "clearml-offline"))


@pytest.fixture(autouse=True)
def _no_system_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs in tests sample no system metrics and capture no console unless they ask (``system_metrics=True``,
    ``console=True``, or the variables set again in a child's environment): most tests count exactly what they
    logged. tests/test_system.py and tests/test_console.py test both with their defaults on."""
    monkeypatch.setenv("STEPWIRE_SYSTEM_METRICS", "0")
    monkeypatch.setenv("STEPWIRE_CONSOLE", "0")


@pytest.fixture
def clearml_task_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """For the ClearML shim's tests: no current task, offline mode unset, an artifact cache of the test's own; the
    test's open task is closed after it and argparse is as it was."""
    import argparse

    from stepwire.compat.clearml import Task

    monkeypatch.delenv("CLEARML_OFFLINE_MODE", raising=False)
    monkeypatch.setenv("STEPWIRE_CLEARML_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(Task, "_offline", None)
    monkeypatch.setattr(Task, "_current", None)
    parse_known_args = argparse.ArgumentParser.parse_known_args
    yield
    current = Task.current_task()
    if current is not None:
        current.close()
    assert argparse.ArgumentParser.parse_known_args is parse_known_args


def pg_admin_url() -> str:
    """``$STEPWIRE_TEST_PG_URL``, or skip the test (PostgreSQL tests need a server: see .ci/postgres.sh)."""
    url = os.environ.get(PG_URL_ENV)
    if not url:
        pytest.skip(f"no PostgreSQL for the test: set ${PG_URL_ENV} (export {PG_URL_ENV}=$(.ci/postgres.sh))")
    return url


def with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead of its own."""
    head, _, tail = url.partition("?")
    return head.rsplit("/", 1)[0] + "/" + name + (f"?{tail}" if tail else "")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a fresh PostgreSQL database of the test's own, dropped afterwards (with any connection left)."""
    import psycopg

    admin = pg_admin_url()
    name = f"stepwire_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    yield with_database(admin, name)
    for _ in range(50):  # a server restarting in the test's last moments refuses connections for a while
        try:
            with psycopg.connect(admin, autocommit=True) as c:
                # connections the test left (a killed collector's); DROP itself stops autovacuum there
                c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                          "AND usename = current_user AND pid <> pg_backend_pid()", [name])
                c.execute(f'DROP DATABASE IF EXISTS "{name}"')
            break
        except psycopg.OperationalError:  # refused, or the database still in use for a moment
            time.sleep(0.2)


STORE_ENGINES = ("duckdb", "postgres")


@pytest.fixture(params=STORE_ENGINES)
def store_engine(request: pytest.FixtureRequest) -> str:
    """Each store engine in turn: the embedded DuckDB store and the PostgreSQL store (skipped without a server)."""
    engine: str = request.param
    return engine


@pytest.fixture
def store_args(store_engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    """``stepwire collector`` arguments selecting the store under test (none for DuckDB)."""
    if store_engine == "duckdb":
        return []
    url: str = request.getfixturevalue("pg_url")
    return ["--store", url, "--blob-dir", str(tmp_path / "blobs")]


@pytest.fixture
def make_store(store_engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens the store under test, the same store on every call (DuckDB in ``tmp_path``, or a fresh PostgreSQL
    database with blobs in ``tmp_path/blobs``); every store it opened is closed afterwards."""
    opened: list[Store] = []
    if store_engine == "duckdb":
        from stepwire.store.duckdb_store import DuckDBStore

        def make() -> Store:
            opened.append(DuckDBStore(tmp_path))
            return opened[-1]
    else:
        from stepwire.store.postgres import PostgresStore

        url: str = request.getfixturevalue("pg_url")

        def make() -> Store:
            opened.append(PostgresStore(url, tmp_path / "blobs"))
            return opened[-1]
    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store_collector(tmp_path: Path, store_args: list[str]) -> Iterator[CollectorProcess]:
    """A collector process on loopback over the store under test (each engine in turn)."""
    c = start_collector(tmp_path / "collector", *store_args)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def wandb_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """For the W&B mirror's tests: one data directory (and embedded collector) per test module."""
    d = tmp_path_factory.mktemp("wandb-data")
    yield d
    stop_embedded(d)


@pytest.fixture
def wandb_state(wandb_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """For the W&B mirror's tests: the embedded default in ``wandb_dir``, no warning given yet, and no run of the
    test's left running after it (yields the data directory)."""
    import stepwire.compat.wandb as wandb
    from stepwire.compat.wandb import unsupported

    monkeypatch.setenv("STEPWIRE_DIR", str(wandb_dir))
    unsupported._counts.clear()
    yield wandb_dir
    for live in list(wandb._live):
        live.finish()

