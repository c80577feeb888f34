"""Hostile environment variables and data-directory files: each bad value is refused with an error naming the
variable (or file) and what it must be, and a damaged address file never sends a client elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import stepwire
from conftest import segments_of
from stepwire.collector.embedded import running_collector


@pytest.mark.parametrize(("env", "match"), [
    ({"STEPWIRE_RUN_ID": "../../etc"}, "run id '../../etc' must be"),
    ({"STEPWIRE_RUN_ID": "a\u202eb"}, "run id"),
    ({"STEPWIRE_MODE": "sideways"}, r"\$STEPWIRE_MODE\) must be 'online' or 'offline'"),
    ({"STEPWIRE_IDLE_EXIT": "soon"}, r"\$STEPWIRE_IDLE_EXIT must be a number of seconds"),
    ({"STEPWIRE_IDLE_EXIT": "nan"}, r"\$STEPWIRE_IDLE_EXIT"),
    ({"STEPWIRE_IDLE_EXIT": "-5"}, r"\$STEPWIRE_IDLE_EXIT"),
    ({"RANK": "zero", "WORLD_SIZE": "2"}, r"\$RANK must be an integer"),
    ({"RANK": "3", "WORLD_SIZE": "2"}, "rank 3 is not within a world of size 2"),
    ({"STEPWIRE_TOKEN": "has space"}, "token .* must be visible ASCII"),
    ({"STEPWIRE_TOKEN": "new\nline"}, "token .* must be visible ASCII"),
])
def test_a_bad_environment_variable_is_named_in_the_error(env: dict[str, str], match: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=match):
        stepwire.init(dir=tmp_path / "data", on_unreachable="raise", connect_timeout=1)
    assert not (tmp_path / "data" / "collector.json").exists()  # refused before any collector was started
    assert not segments_of(tmp_path)  # nor left 89 MiB in /dev/shm for good



def test_a_data_directory_that_is_a_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("not a directory")
    monkeypatch.setenv("STEPWIRE_DIR", str(tmp_path / "file"))
    with pytest.raises(NotADirectoryError, match=r"\$STEPWIRE_DIR\) is not a directory"):
        stepwire.init(mode="offline")


def test_the_collector_refuses_a_token_it_could_not_compare(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "stepwire", "collector", "--dir", str(tmp_path), "--listen",
                          "127.0.0.1:0", "--token", "two words"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "stepwire collector: a token (--token, token= or $STEPWIRE_TOKEN) must be visible ASCII characters, without "
        "spaces or control characters"]


@pytest.mark.parametrize("content", ["", "{", "[1, 2]", '{"address": "127.0.0.1:1"}', '{"address": 5, "pid": "x"}',
                                     json.dumps({"address": "127.0.0.1:1", "pid": 0}),
                                     json.dumps({"address": "127.0.0.1:1", "pid": -1}),
                                     json.dumps({"address": "127.0.0.1:1", "pid": os.getpid()})])
def test_a_damaged_address_file_finds_no_collector(content: str, tmp_path: Path) -> None:
    (tmp_path / "collector.json").write_text(content)
    assert running_collector(tmp_path) is None
