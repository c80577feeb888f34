"""Segment files are outside input: /dev/shm is world-writable, and a crash can leave a segment half written. The
survivor opens only this user's regular files (no links, no file another user planted under this user's
prefix), refuses a header that points outside its file before reading anything it points at, and removes a
damaged segment of a dead process without storing anything from it or raising."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from stepwire.v1 import ingest_pb2_grpc

from stepwire import _core, segment, survivor

SIZE = 1 << 20


@pytest.fixture
def shm_file() -> Iterator[Path]:
    path = segment.SHM_DIR / f"{segment.prefix()}test{uuid.uuid4().hex}"
    yield path
    path.unlink(missing_ok=True)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def header(directory: Path, pid: int, **fields: int) -> bytes:
    """A segment's first 4 KiB: a valid-looking header whose geometry ``fields`` may spoil, and its metadata."""
    geometry = {"slots": 1, "capacity": 16, "rings_off": 4096, "slot_bytes": 256 + 16 * 32, "journal_off": 8192,
                "journal_bytes": 4096, "table_off": 12288, "table_used": 0, "queue_off": 16384,
                "queue_bytes": 4096, "write": 0, "retired": 0}
    geometry.update(fields)
    g = geometry
    meta = json.dumps({"directory": str(directory.resolve()), "pid": pid, "run_id": "r1"}).encode()
    head = struct.pack("<QIIqQQIIQQQQQQQQQQQIIQQQQ", _core.SEGMENT_MAGIC, _core.SEGMENT_VERSION, 0, pid, 0, 0,
                       g["slots"], g["capacity"], g["rings_off"], g["slot_bytes"], g["journal_off"],
                       g["journal_bytes"], g["table_off"], 4096, g["write"], g["retired"], g["table_used"], 1, 0, 0,
                       len(meta), g["queue_off"], g["queue_bytes"], 0, 0)
    return (head.ljust(1024, b"\0") + meta).ljust(4096, b"\0")


def no_collector() -> ingest_pb2_grpc.IngestStub:
    return ingest_pb2_grpc.IngestStub(grpc.insecure_channel("127.0.0.1:9"))  # nothing may be sent


@pytest.mark.parametrize("spoiled", [
    {"slots": 1 << 31},                     # a loop over billions of ring slots
    {"slot_bytes": 0},                      # every slot at the same place, for ever
    {"journal_off": SIZE},                  # the journal beyond the file
    {"journal_bytes": 0},                   # a ring of no bytes (a division by zero)
    {"write": 1 << 40},                     # more written than the journal holds
    {"table_used": SIZE},                   # the series table beyond the file
])
def test_a_damaged_segment_of_a_dead_process_is_removed_and_nothing_stored(
        shm_file: Path, tmp_path: Path, spoiled: dict[str, int], caplog: pytest.LogCaptureFixture) -> None:
    shm_file.write_bytes(header(tmp_path, dead_pid(), **spoiled).ljust(SIZE, b"\xff"))
    rec = segment.read(shm_file)
    assert rec is not None and rec.state == segment.DAMAGED and rec.meta["run_id"] == "r1"
    assert survivor.recover(shm_file, tmp_path, no_collector(), "127.0.0.1:9")
    assert not shm_file.exists() and "damaged" in caplog.text


def test_a_damaged_segment_of_a_live_process_is_left_alone(shm_file: Path, tmp_path: Path) -> None:
    shm_file.write_bytes(header(tmp_path, os.getpid(), slots=1 << 31).ljust(SIZE, b"\0"))
    assert not survivor.recover(shm_file, tmp_path, no_collector(), "127.0.0.1:9")
    assert shm_file.exists()


def test_garbage_a_short_file_and_another_directorys_segment_are_not_touched(shm_file: Path, tmp_path: Path) -> None:
    for content in (os.urandom(SIZE), b"\0" * 100, header(tmp_path / "elsewhere", dead_pid()).ljust(SIZE, b"\0")):
        shm_file.write_bytes(content)
        assert not survivor.recover(shm_file, tmp_path, no_collector(), "127.0.0.1:9")
        assert shm_file.exists()


def test_a_link_or_another_users_file_under_this_users_prefix_is_never_opened(shm_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "planted"
    target.write_bytes(header(tmp_path, dead_pid(), slots=1 << 31).ljust(SIZE, b"\0"))
    shm_file.symlink_to(target)
    assert segment.read(shm_file) is None
    assert not survivor.recover(shm_file, tmp_path, no_collector(), "127.0.0.1:9")
    assert target.exists() and shm_file.is_symlink()
    shm_file.unlink()
    if os.getuid() != 0:
        pytest.skip("giving a file to another user needs root")
    shm_file.write_bytes(target.read_bytes())
    os.chown(shm_file, 65534, 65534)
    assert segment.read(shm_file) is None
    assert not survivor.recover(shm_file, tmp_path, no_collector(), "127.0.0.1:9")
    assert shm_file.exists()
