"""``stepwire sync`` through real processes: damaged records set aside while everything else is delivered,
re-delivery of a whole spool stored once by the collector, and a full disk."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from stepwire.v1 import ingest_pb2

import stepwire
from conftest import CollectorProcess, fill_up, small_disk
from stepwire import spool
from stepwire.spool import Spool, spools

HEADER = struct.Struct("<4sBIII")  # magic, kind, length, payload crc32, header crc32 (see stepwire.spool)
V1 = struct.Struct("<2sBII")  # the first format (parsed too, so that these tests also run against it)


def sync(directory: Path, address: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stepwire", "sync", str(directory), "--address", address, "--quiet"],
                          capture_output=True, text=True, timeout=300)


def offline_run(data: Path, ckpt: Path) -> str:
    """A run logged offline into ``data``'s spool: open, params, scalars, a histogram, texts, a meta update, an
    artifact, more scalars, finish."""
    ckpt.write_bytes(os.urandom(20_000))
    run = stepwire.init(project="sync", mode="offline", dir=data, flush_interval=0.05)
    run.log_params({"lr": 0.1})
    for i in range(200):
        run.log({"x": float(i)}, step=i)
    run.log_histogram("h", np.arange(100.0), step=0)
    for i in range(10):
        run.log_text("notes", f"t{i}", step=i)
    run.update_meta({"progress": {"epoch": 1}})
    run.log_artifact(ckpt, name="ckpt.bin")
    for i in range(200, 400):
        run.log({"x": float(i)}, step=i)
    run.finish()
    return run.id


def records(segment: Path) -> Iterator[tuple[int, int, int, bytes]]:
    """(offset, header size, kind, payload) of every record of a segment."""
    data = segment.read_bytes()
    off = 0
    while off < len(data):
        head = HEADER if data[off:off + 4] == b"SWR2" else V1
        _, kind, length, *_ = head.unpack_from(data, off)
        yield off, head.size, kind, data[off + head.size:off + head.size + length]
        off += head.size + length


def check_stored(collector: CollectorProcess, run_id: str, ckpt: Path, texts: list[str], tmp_path: Path) -> None:
    """Everything the offline run logged is stored exactly once (``texts``: the texts expected)."""
    view = stepwire.Api(address=collector.address).run(run_id)
    x = view.scalars("x")
    np.testing.assert_array_equal(x["step"], np.arange(400))
    np.testing.assert_array_equal(x["value"], np.arange(400.0))
    assert [h.count for h in view.histograms("h")] == [100]
    assert [(t.step, t.text) for t in view.texts("notes")] == [(int(t[1:]), t) for t in texts]
    assert view.config == {"lr": 0.1} and view.meta.get("progress") == {"epoch": 1}
    assert view.status == "finished"
    assert [(a.name, a.size) for a in view.artifacts()] == [("ckpt.bin", ckpt.stat().st_size)]
    assert view.download_artifact("ckpt.bin", tmp_path / "back.bin").read_bytes() == ckpt.read_bytes()


def record(kind: int, payload: bytes, head: int) -> bytes:
    """A record that checks out, in the format whose header is ``head`` bytes long."""
    if head == V1.size:
        return V1.pack(b"SW", kind, len(payload), zlib.crc32(payload)) + payload
    first = struct.pack("<4sBII", b"SWR2", kind, len(payload), zlib.crc32(payload))
    return first + struct.pack("<I", zlib.crc32(first)) + payload


@pytest.mark.parametrize("damage", ["a payload byte", "the kind byte", "no message"])
def test_a_damaged_record_is_set_aside_and_everything_else_delivered(collector: CollectorProcess, tmp_path: Path,
                                                                     damage: str) -> None:
    data = tmp_path / "client"
    ckpt = tmp_path / "ckpt.bin"
    run_id = offline_run(data, ckpt)
    [path] = spools(data)
    segment = path / "00000001.spool"
    texts = {ingest_pb2.TextRecord.FromString(p).text: (off, size, p) for off, size, kind, p in records(segment)
             if kind == spool.TEXT}
    off, head, payload = texts["t4"]
    assert sum(1 for o, *_ in records(segment) if o > off) > 5  # many intact records after the damaged one
    blob = bytearray(segment.read_bytes())
    damaged = bytes(blob[off:off + head + len(payload)])
    kind_at = off + (4 if head == HEADER.size else 2)
    at = off + head + len(payload) - 1 if damage == "a payload byte" else kind_at
    blob[at] = spool.BATCH if damage == "the kind byte" else blob[at] ^ 0xFF  # a text replayed as a batch?
    damaged = damaged[:at - off] + bytes([blob[at]]) + damaged[at - off + 1:]
    if damage == "no message":  # checksums that match, over bytes that are no TextRecord
        damaged = record(spool.TEXT, b"\xff" * len(payload), head)
        blob[off:off + len(damaged)] = damaged
    segment.write_bytes(bytes(blob))

    out = sync(data, collector.address)
    assert out.returncode == 2, out.stderr  # done, but something could not be delivered
    assert "1 damaged" in out.stdout and "0 refused" in out.stdout, out.stdout
    check_stored(collector, run_id, ckpt, [f"t{i}" for i in range(10) if i != 4], tmp_path)
    assert spools(data) == [] and not path.exists()  # delivered or set aside: the spool is gone...
    kept = list((path.parent / (path.name + ".damaged")).iterdir())
    assert [p.name for p in kept] == [f"segment00000001-offset{off}.bin"]  # ...the damaged record is not
    assert kept[0].read_bytes() == damaged
    again = sync(data, collector.address)
    assert again.returncode == 0 and again.stdout.startswith("nothing to sync")


def test_a_spool_delivered_twice_is_stored_once(collector: CollectorProcess, tmp_path: Path) -> None:
    data = tmp_path / "client"
    ckpt = tmp_path / "ckpt.bin"
    run_id = offline_run(data, ckpt)
    copy = tmp_path / "copy"
    shutil.copytree(data / "spool", copy)  # staged artifact files included
    first = sync(data, collector.address)
    assert first.returncode == 0, first.stderr
    check_stored(collector, run_id, ckpt, [f"t{i}" for i in range(10)], tmp_path)
    assert not (data / "spool").exists() or spools(data) == []
    shutil.rmtree(data / "spool", ignore_errors=True)
    shutil.copytree(copy, data / "spool")  # as if the first sync had never recorded what it delivered
    second = sync(data, collector.address)
    assert second.returncode == 0, second.stderr
    assert second.stdout.split("delivered")[0] == first.stdout.split("delivered")[0]  # every record again...
    check_stored(collector, run_id, ckpt, [f"t{i}" for i in range(10)], tmp_path)  # ...stored once


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_sync_on_a_full_disk_stops_cleanly_and_loses_nothing(collector: CollectorProcess, tmp_path: Path) -> None:
    with small_disk(tmp_path / "small", "4m") as mnt:
        data = mnt / "client"
        ckpt = tmp_path / "ckpt.bin"
        run_id = offline_run(data, ckpt)
        [path] = spools(data)
        before = snapshot(path)
        fill_up(mnt / "filler")

        out = sync(data, collector.address)
        assert out.returncode == 1, (out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("stepwire sync:"), out.stderr  # one line, no traceback
        assert "No space left on device" in lines[0]
        assert snapshot(path) == before and Spool(path).count() == Spool(path).count(verify=False) > 10  # intact

        (mnt / "filler").unlink()
        again = sync(data, collector.address)
        assert again.returncode == 0, again.stderr
        check_stored(collector, run_id, ckpt, [f"t{i}" for i in range(10)], tmp_path)
        assert spools(data) == []
