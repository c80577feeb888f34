"""Raw-values files (``stepwire.segment_raw``) are outside input like segments: the survivor of a dead process opens
only this user's regular files, bins a committed file only when its segment does not say it is settled, and counts
and removes a damaged one (truncated, a header pointing outside it, an unknown type) without storing anything from
it or raising. A file never committed (its ``log_histogram`` had not returned) is removed without being stored."""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stepwire import _core, segment, segment_raw, survivor
from stepwire.segment import Recovered
from test_segment_hostile import SIZE, dead_pid, header, no_collector

RAW_DONE = 176
"""Offset of ``raw_done`` in a segment's header."""


@pytest.fixture
def shm_file() -> Iterator[Path]:
    path = segment.SHM_DIR / f"{segment.prefix()}test{uuid.uuid4().hex}"
    yield path
    for p in [path, *path.parent.glob(path.name + ".raw*")]:
        p.unlink(missing_ok=True)


def dead_segment(path: Path, directory: Path, raw_done: int = 0) -> None:
    """An empty segment of a dead process, logging to ``directory``, with ``raw_done`` settled."""
    head = bytearray(header(directory, dead_pid()))
    struct.pack_into("<Q", head, RAW_DONE, raw_done)
    path.write_bytes(bytes(head).ljust(SIZE, b"\0"))


def raw_file(seg: Path, n: int, raw_id: int, values: np.ndarray, series: int = 7, bf16: bool = False) -> Path:
    """A raw-values file beside ``seg`` as a process writes it; committed with ``raw_id`` unless that is 0."""
    raw = segment_raw.RawFile.create(Path(f"{seg}{segment_raw.SUFFIX}{n}"), values.nbytes)
    raw.fill(series, 11, 3, values, bf16)
    if raw_id:
        raw.commit(raw_id)
    path = raw.path
    del raw  # unmapped; the file stays
    return path


def recover(seg: Path, directory: Path) -> Recovered:
    got: list[Recovered] = []
    assert survivor.recover(seg, directory, no_collector(), "127.0.0.1:9", got.append)
    return got[0]


def test_a_committed_file_round_trips_and_bins_as_the_binning_thread_does(shm_file: Path) -> None:
    values = np.random.default_rng(3).standard_normal(300_000).astype(np.float32)
    raw = segment_raw.read(raw_file(shm_file, 1, 5, values))
    assert raw is not None and (raw.id, raw.series, raw.step, raw.k, raw.pid) == (5, 7, 11, 3, os.getpid())
    h = segment_raw.histogram(raw)
    (expected,) = _core.bin_many([values], [False], 3, 2)  # the binning thread's kernel, on two threads
    for key in ("count", "sum", "min", "max", "nan", "pos_inf", "neg_inf"):
        assert h[key] == expected[key], key
    assert h["indices"].tolist() == list(expected["indices"]) and h["counts"].tolist() == list(expected["counts"])
    assert (h["raw"], h["series"], h["step"]) == (5, 7, 11)


@pytest.mark.parametrize("dtype", ["<f2", "<f8", "bfloat16"])
def test_every_float_type_round_trips(shm_file: Path, dtype: str) -> None:
    bf16 = dtype == "bfloat16"
    floats = np.random.default_rng(4).standard_normal(70_000).astype(np.float32)
    values = (floats.view("<u4") >> 16).astype("<u2") if bf16 else floats.astype(dtype)  # bfloat16: top half
    raw = segment_raw.read(raw_file(shm_file, 1, 1, values, bf16=bf16))
    assert raw is not None and raw.bf16 == bf16 and raw.values.dtype == values.dtype
    (expected,) = _core.bin_many([values], [bf16], 3, 1)
    h = segment_raw.histogram(raw)
    assert (h["count"], h["sum"], h["min"], h["max"]) == (expected["count"], expected["sum"], expected["min"],
                                                          expected["max"])
    assert h["counts"].tolist() == list(expected["counts"])


def test_settled_and_uncommitted_files_are_removed_without_storing(shm_file: Path, tmp_path: Path) -> None:
    dead_segment(shm_file, tmp_path, raw_done=4)
    values = np.ones(65_536, np.float32)
    files = [raw_file(shm_file, 1, 3, values), raw_file(shm_file, 2, 4, values), raw_file(shm_file, 3, 0, values)]
    rec = recover(shm_file, tmp_path)  # nothing to deliver: the unreachable collector is never called
    assert (rec.raw_binned, rec.raw_damaged, rec.open_histograms) == (0, 0, [])
    assert not any(p.exists() for p in [shm_file, *files])


def spoil(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[:len(data) // 2]
    elif how == "short header":
        data = data[:40]
    elif how == "values outside":
        struct.pack_into("<I", data, 12, len(data))  # the values offset at the end of the file
    elif how == "count outside":
        struct.pack_into("<QQ", data, 64, 1 << 40, 4 << 40)
    elif how == "unknown type":
        data[45] = 3  # 3-byte floats
    elif how == "bad magic":
        struct.pack_into("<Q", data, 0, 0x1234)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "short header", "values outside", "count outside", "unknown type",
                                 "bad magic"])
def test_a_damaged_file_is_counted_and_removed(shm_file: Path, tmp_path: Path, how: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    dead_segment(shm_file, tmp_path)
    path = raw_file(shm_file, 1, 1, np.ones(65_536, np.float32))
    spoil(path, how)
    with pytest.raises(ValueError):
        segment_raw.read(path)
    rec = recover(shm_file, tmp_path)
    assert (rec.raw_binned, rec.raw_damaged, rec.open_histograms) == (0, 1, [])
    assert not path.exists() and not shm_file.exists() and "raw" in caplog.text


def test_a_link_or_another_users_file_is_never_opened(shm_file: Path, tmp_path: Path) -> None:
    dead_segment(shm_file, tmp_path)
    planted = raw_file(shm_file, 1, 1, np.ones(65_536, np.float32))
    target = tmp_path / "planted"
    target.write_bytes(planted.read_bytes())
    planted.unlink()
    planted.symlink_to(target)
    with pytest.raises(OSError):
        segment_raw.read(planted)
    rec = recover(shm_file, tmp_path)
    assert (rec.raw_binned, rec.raw_damaged) == (0, 0)
    assert planted.is_symlink() and target.exists()  # neither followed nor removed
    planted.unlink()
    if os.getuid() != 0:
        pytest.skip("giving a file to another user needs root")
    dead_segment(shm_file, tmp_path)
    planted.write_bytes(target.read_bytes())
    os.chown(planted, 65534, 65534)
    with pytest.raises(OSError):
        segment_raw.read(planted)
    rec = recover(shm_file, tmp_path)
    assert (rec.raw_binned, rec.raw_damaged) == (0, 0) and planted.exists()


def test_raw_files_are_not_taken_for_segments(shm_file: Path, tmp_path: Path) -> None:
    dead_segment(shm_file, tmp_path)
    path = raw_file(shm_file, 1, 1, np.ones(65_536, np.float32))
    assert shm_file in segment.segments() and path not in segment.segments()
    assert segment_raw.raw_paths(shm_file) == [path]
