"""A store file that is damaged, or not a stepwire store, is refused at open with one line saying what to do;
a run logging meanwhile keeps its data in the spool, and sync delivers it once a good store is in place."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest

import stepwire
from conftest import stop_embedded
from stepwire.store.duckdb_store import STORE_FILE


def damage(directory: Path, how: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STORE_FILE
    if how == "random bytes":
        path.write_bytes(os.urandom(100_000))
    elif how == "truncated":
        path.write_bytes(b"DUCK")
    else:  # some other DuckDB database
        with duckdb.connect(str(path)) as con:
            con.execute("CREATE TABLE runs (a INTEGER)")


def stepwire_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stepwire", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("how", ["random bytes", "truncated", "another database"])
def test_a_bad_store_file_is_one_line_from_every_command(how: str, tmp_path: Path) -> None:
    damage(tmp_path, how)
    before = (tmp_path / STORE_FILE).read_bytes()
    collector = stepwire_cli("collector", "--dir", str(tmp_path), "--listen", "127.0.0.1:0")
    assert collector.returncode == 2
    assert len(collector.stderr.strip().splitlines()) == 1 and STORE_FILE in collector.stderr
    for command in (["runs"], ["show", "x"]):
        out = stepwire_cli(*command, "--dir", str(tmp_path))
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and STORE_FILE in out.stderr
    assert (tmp_path / STORE_FILE).read_bytes() == before  # refused without a change


def test_a_run_over_a_damaged_store_keeps_its_data_in_the_spool(tmp_path: Path) -> None:
    data = tmp_path / "data"
    damage(data, "random bytes")
    try:
        with stepwire.init(project="kept", dir=data, connect_timeout=30, quiet=True) as run:
            run.log({"x": 1.0})
            run.log({"x": 2.0})
        assert run.stats()["spooled"] == 2 and run.stats()["lost"] == 0
        (data / STORE_FILE).rename(tmp_path / "damaged.duckdb")
        out = stepwire_cli("sync", str(data), "--quiet")
        assert out.returncode == 0, out.stderr
        np.testing.assert_array_equal(stepwire.Api(dir=data).run(run.id).scalars("x")["value"], [1.0, 2.0])
    finally:
        stop_embedded(data)
