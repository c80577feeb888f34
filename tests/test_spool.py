"""The spool format: round trip, damage of every kind set aside and skipped, cursors that lie, torn tails, segment
rollover, a full disk, and reading each byte about once."""

from __future__ import annotations

import errno
import json
import struct
import zlib
from pathlib import Path

import pytest

from conftest import fill_up, small_disk
from stepwire import spool
from stepwire.spool import Spool

HEADER = struct.Struct("<4sBIII")  # the documented layout, spelled out here so the test checks it
V1 = struct.Struct("<2sBII")  # the first format (read so that these tests also run against it)


def payloads(n: int, size: int = 100) -> list[bytes]:
    return [bytes([i % 256]) * size + f"record {i}".encode() for i in range(n)]


def fill(directory: Path, items: list[bytes], kind: int = spool.BATCH) -> Spool:
    sp = Spool(directory)
    for p in items:
        sp.append(kind, p)
    return sp


def drain(sp: Spool) -> list[tuple[int, bytes]]:
    out = []
    while (record := sp.peek()) is not None:
        out.append(record)
        sp.pop()
    return out


def offsets(segment: Path) -> list[int]:
    """Where each record of a segment starts, walking the documented layout (every record must check out)."""
    data = segment.read_bytes()
    out, off = [], 0
    while off < len(data):
        if data[off:off + 4] == b"SWR2":
            _, kind, length, crc, head_crc = HEADER.unpack_from(data, off)
            assert zlib.crc32(data[off:off + 13]) == head_crc
            body = off + HEADER.size
        else:
            magic, kind, length, crc = V1.unpack_from(data, off)
            assert magic == b"SW"
            body = off + V1.size
        assert kind in spool.KIND_NAMES and zlib.crc32(data[body:body + length]) == crc
        out.append(off)
        off = body + length
    return out


def field(segment: Path, name: str) -> int:
    """Where a header field of a record starts, in the segment's format."""
    v2 = segment.read_bytes()[:4] == b"SWR2"
    return {"magic": 1, "kind": 4 if v2 else 2, "length": 6 if v2 else 4, "payload checksum": 10 if v2 else 8,
            "payload": 500}[name]


def record_bytes(tmp_path: Path, kind: int, payload: bytes) -> bytes:
    """One record as the spool writes it."""
    scratch = tmp_path / "scratch"
    Spool(scratch).append(kind, payload)
    data = segment1(scratch).read_bytes()
    segment1(scratch).unlink()
    return data


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x5A
    path.write_bytes(bytes(data))


def segment1(directory: Path) -> Path:
    return directory / "00000001.spool"


def test_round_trip_in_order_across_reopen_with_every_kind(tmp_path: Path) -> None:
    d = tmp_path / "s"
    items = [(kind, p) for kind, p in zip(list(spool.KIND_NAMES) * 5, payloads(30), strict=True)]
    sp = Spool(d)
    for kind, p in items:
        sp.append(kind, p)
    data = segment1(d).read_bytes()
    starts = offsets(segment1(d))
    assert sp.count() == 30 and len(starts) == 30
    for off in starts:  # this version's layout: a header checksum covering magic, kind, length and payload crc
        magic, *_, head_crc = HEADER.unpack_from(data, off)
        assert magic == b"SWR2" and head_crc == zlib.crc32(data[off:off + 13])
    got = []
    for _ in range(10):
        record = sp.peek()
        assert record is not None and sp.peek() == record  # peek twice: the same record
        got.append(record)
        sp.pop()
    assert sp.count() == 20
    again = Spool(d)  # a new process goes on from the cursor
    assert again.count() == 20
    got += drain(again)
    assert got == items and again.corrupt == 0 and not again.pending()
    again.append(spool.TEXT, b"later")
    assert again.count() == 1 and drain(Spool(d)) == [(spool.TEXT, b"later")]


@pytest.mark.parametrize("where", ["payload", "kind", "length", "payload checksum", "magic"])
def test_a_damaged_record_is_set_aside_and_the_ones_after_it_are_read(tmp_path: Path, where: str) -> None:
    d = tmp_path / "s"
    items = payloads(10, size=1000)
    fill(d, items)
    starts = offsets(segment1(d))
    bad = starts[4]
    record = bytearray(segment1(d).read_bytes()[bad:starts[5]])
    flip(segment1(d), bad + field(segment1(d), where))
    record[field(segment1(d), where)] ^= 0x5A
    sp = Spool(d)
    assert sp.count() == 9
    got = drain(sp)
    assert got == [(spool.BATCH, p) for i, p in enumerate(items) if i != 4]  # never another kind, nothing lost
    assert sp.corrupt == 1 and len(sp.set_aside) == 1
    kept = sp.set_aside[0]
    assert kept.parent == tmp_path / "s.damaged" and kept.name == f"segment00000001-offset{bad}.bin"
    assert kept.read_bytes() == record  # the damaged record, as found
    assert Spool(d).count() == 0  # delivered and set aside: nothing left to read


def test_first_format_records_are_still_read_and_damage_in_them_skipped(tmp_path: Path) -> None:
    d = tmp_path / "s"
    d.mkdir()
    items = payloads(5)
    records = [V1.pack(b"SW", spool.TEXT, len(p), zlib.crc32(p)) + p for p in items]
    bad = bytearray(records[2])
    bad[50] ^= 1
    segment1(d).write_bytes(b"".join(records[:2]) + bytes(bad) + b"".join(records[3:]))
    sp = Spool(d)
    sp.append(spool.BATCH, b"new")
    assert drain(sp) == [(spool.TEXT, p) for i, p in enumerate(items) if i != 2] + [(spool.BATCH, b"new")]
    assert sp.corrupt == 1 and sp.set_aside[0].read_bytes() == bytes(bad)


def test_garbage_between_records_is_set_aside_once(tmp_path: Path) -> None:
    d = tmp_path / "s"
    fill(d, payloads(3))
    with open(segment1(d), "ab") as f:
        f.write(b"SW\x02garbage that is not a record SWR2 either" * 50)
    sp = Spool(d)
    sp.append(spool.TEXT, b"after the garbage")
    got = drain(sp)
    assert got == [(spool.BATCH, p) for p in payloads(3)] + [(spool.TEXT, b"after the garbage")]
    assert sp.corrupt == 1


def test_a_torn_tail_is_truncated_by_the_next_writer(tmp_path: Path) -> None:
    d = tmp_path / "s"
    fill(d, payloads(3))
    whole = segment1(d).stat().st_size
    torn = record_bytes(tmp_path, spool.BATCH, b"x" * 5000)[:2000]  # a crash while appending
    with open(segment1(d), "ab") as f:
        f.write(torn)
    sp = Spool(d)
    sp.append(spool.TEXT, b"first after the crash")
    sp.append(spool.TEXT, b"second")
    assert offsets(segment1(d))[3] == whole  # the torn bytes are gone from the segment...
    assert [p.read_bytes() for p in sp.set_aside] == [torn]  # ...and kept aside
    assert drain(Spool(d)) == [(spool.BATCH, p) for p in payloads(3)] + [
        (spool.TEXT, b"first after the crash"), (spool.TEXT, b"second")]


def test_a_torn_tail_seen_by_a_reader_is_reported_and_kept(tmp_path: Path) -> None:
    d = tmp_path / "s"
    fill(d, payloads(3))
    with open(segment1(d), "ab") as f:
        f.write(record_bytes(tmp_path, spool.BATCH, b"y" * 100)[:9])  # not even a whole header
    sp = Spool(d)
    assert sp.count() == 3
    assert drain(sp) == [(spool.BATCH, p) for p in payloads(3)]
    assert sp.corrupt == 1 and sp.set_aside[0].stat().st_size == 9


def write_cursor(d: Path, segment: object, offset: object, **extra: object) -> None:
    (d / "cursor").write_text(json.dumps({"segment": segment, "offset": offset, **extra}))


@pytest.mark.parametrize("cursor", ["past the end", "inside a record", "missing segment", "torn write"])
def test_a_cursor_that_does_not_point_at_a_record_loses_nothing(tmp_path: Path, cursor: str) -> None:
    d = tmp_path / "s"
    items = payloads(6)
    sp = fill(d, items)
    for _ in range(3):
        sp.peek()
        sp.pop()
    starts = offsets(segment1(d))
    if cursor == "past the end":
        write_cursor(d, 1, 10 ** 9)
    elif cursor == "inside a record":
        write_cursor(d, 1, starts[3] + 7)
    elif cursor == "missing segment":
        write_cursor(d, 9, 0)
    else:  # a record boundary further on, with a checksum that does not match it
        write_cursor(d, 1, starts[5], crc=zlib.crc32(f"1:{starts[3]}".encode()))
    got = [p for _, p in drain(Spool(d))]
    assert got[-3:] == items[3:] and got == items[6 - len(got):]  # the undelivered ones, in order (and maybe more)
    assert not Spool(d).pending()


def test_segments_roll_over_and_delivered_ones_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool, "SEGMENT_BYTES", 2000)
    d = tmp_path / "s"
    items = payloads(40, size=300)
    fill(d, items)
    segments = sorted(d.glob("*.spool"))
    assert len(segments) >= 5 and all(p.stat().st_size < 2000 + 400 for p in segments)
    flip(segments[2], 30)  # damage in a middle segment
    sp = Spool(d)
    got = []
    for _ in range(25):
        record = sp.peek()
        assert record is not None
        got.append(record[1])
        sp.pop()
    assert not segments[0].exists() and not segments[1].exists()  # fully delivered: removed
    got += [p for _, p in drain(Spool(d))]
    assert sp.corrupt == 1 and len(got) == 39 and set(got) < set(items)
    assert [items.index(p) for p in got] == sorted(items.index(p) for p in got)  # in order
    assert sp.set_aside[0].name.startswith("segment00000003-offset")


def test_a_record_that_checks_out_but_cannot_be_replayed_is_set_aside(tmp_path: Path) -> None:
    d = tmp_path / "s"
    sp = fill(d, [b"a", b"not a batch", b"c"])
    starts = offsets(segment1(d))
    whole = segment1(d).read_bytes()
    assert sp.peek() == (spool.BATCH, b"a")
    sp.pop()
    assert sp.peek() == (spool.BATCH, b"not a batch")
    sp.reject("a record that is no Push message")
    assert drain(sp) == [(spool.BATCH, b"c")] and sp.corrupt == 1
    assert sp.set_aside[0].read_bytes() == whole[starts[1]:starts[2]]


def test_damage_that_cannot_be_set_aside_stops_reading_and_keeps_everything(tmp_path: Path) -> None:
    d = tmp_path / "s"
    items = payloads(6)
    fill(d, items)
    flip(segment1(d), offsets(segment1(d))[3] + 50)
    (tmp_path / "s.damaged").write_text("in the way")  # the folder for damaged records cannot be made
    sp = Spool(d)
    assert [p for _, p in drain(sp)] == items[:3]
    assert isinstance(sp.error, OSError) and "cannot be set aside" in str(sp.error) and sp.corrupt == 0
    (tmp_path / "s.damaged").unlink()
    again = Spool(d)
    assert [p for _, p in drain(again)] == items[4:] and again.corrupt == 1 and again.error is None


def read_bytes_so_far() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs /proc/self/io (Linux)")
def test_replaying_reads_each_byte_about_once_and_count_is_cheap(tmp_path: Path) -> None:
    d = tmp_path / "s"
    items = payloads(400, size=10_000)
    fill(d, items)
    size = segment1(d).stat().st_size
    reader = Spool(d)
    before = read_bytes_so_far()
    assert reader.count() == 400
    first_count = read_bytes_so_far() - before
    before = read_bytes_so_far()
    assert reader.count() == 400
    again = read_bytes_so_far() - before
    before = read_bytes_so_far()
    n = 0
    while reader.peek() is not None:
        reader.pop()
        n += 1
    replay = read_bytes_so_far() - before
    reader.append(spool.TEXT, b"one more")
    before = read_bytes_so_far()
    assert reader.count() == 1 and n == 400  # kept up to date by append and pop
    again += read_bytes_so_far() - before
    assert first_count < 1.5 * size and again < 10_000 and replay < 1.5 * size, (first_count, again, replay, size)


def test_an_append_onto_a_full_disk_raises_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    with small_disk(tmp_path / "small", "256k") as mnt:
        d = mnt / "s"
        sp = Spool(d)
        sp.append(spool.BATCH, b"before")
        filler = mnt / "filler"
        fill_up(filler, smallest=4096)  # part of a page stays free: an append gets half written, then fails
        written = [b"before"]
        with pytest.raises(OSError) as caught:
            for i in range(100):  # the last page of the disk goes to these, then one fails
                p = bytes([i]) * 5000
                sp.append(spool.BATCH, p)
                written.append(p)
        assert caught.value.errno == errno.ENOSPC
        assert len(offsets(segment1(d))) == len(written)  # no half record
        filler.unlink()
        sp.append(spool.TEXT, b"once there is room again")
        assert drain(Spool(d)) == [(spool.BATCH, p) for p in written] + [(spool.TEXT, b"once there is room again")]
        assert "cannot append to the spool" in str(caught.value)  # says where
