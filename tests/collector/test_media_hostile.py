"""Media records from a hostile client against a real collector process: names, kinds and mime types outside the
allow-list, content that is not what it claims (an image claimed as PNG that does not decode is refused: nothing
is stored, not even its bytes), images declaring more pixels than allowed, and uploads over the size limit are
refused where they arrive and leave nothing behind."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image as PIL
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc
from test_hostile import refused
from test_ingest import open_run

import stepwire
from conftest import CollectorProcess
from stepwire.artifacts import ARTIFACT_CHUNK_BYTES
from stepwire.mediatypes import MAX_MEDIA_BYTES, PARQUET_MIME, PLOTLY_MIME
from stepwire.transport import open_channel


@pytest.fixture
def stub(collector: CollectorProcess) -> Iterator[ingest_pb2_grpc.IngestStub]:
    with open_channel(collector.address) as channel:
        yield ingest_pb2_grpc.IngestStub(channel)


def png(width: int = 4, height: int = 3) -> bytes:
    buf = io.BytesIO()
    PIL.fromarray(np.arange(width * height * 3, dtype=np.uint8).reshape(height, width, 3)).save(buf, format="PNG")
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A small, well-formed PNG header whose IHDR declares ``width`` x ``height`` (a would-be bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def upload(stub: ingest_pb2_grpc.IngestStub, run_id: str, name: str, data: bytes, kind: str = "image",
           mime: str = "image/png", step: int = 0, caption: str = "") -> ingest_pb2.ArtifactInfo:
    chunk = ingest_pb2.ArtifactChunk(run_id=run_id, name=name, step=step, data=data, last=True,
                                     media=ingest_pb2.MediaInfo(kind=kind, mime=mime, caption=caption))
    return stub.PutArtifact(iter([chunk]))


def stored(collector: CollectorProcess) -> set[Path]:
    return {p for p in (collector.dir / "blobs").rglob("*") if p.is_file()} if (collector.dir / "blobs").exists() \
        else set()


@pytest.mark.parametrize(("name", "kind", "mime", "data", "step", "caption"), [
    ("bad\x00name", "image", "image/png", png(), 0, ""),
    ("rtl\u202ename", "image", "image/png", png(), 0, ""),
    ("", "image", "image/png", png(), 0, ""),
    ("x" * 257, "image", "image/png", png(), 0, ""),
    ("ok", "executable", "application/x-sh", b"#!/bin/sh", 0, ""),
    ("ok", "image", "image/svg+xml", b"<svg/>", 0, ""),           # scripts in an image: not on the allow-list
    ("ok", "html", "image/png", png(), 0, ""),                     # a kind with another kind's mime type
    ("ok", "image", "image/png", png(), -1, ""),
    ("ok", "image", "image/png", png(), 0, "c" * 5000),
    ("ok", "image", "image/png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, 0, ""),  # claims PNG, does not decode
    ("ok", "image", "image/png", png()[:-20], 0, ""),             # cut short
    ("ok", "image", "image/png", png_declaring(1 << 15, 1 << 15), 0, ""),  # 1 G pixels declared in 90 bytes
    ("ok", "image", "image/jpeg", png(), 0, ""),                  # PNG content claimed as JPEG
    ("ok", "audio", "audio/wav", b"RIFF\x00\x00\x00\x00AVI LIST", 0, ""),
    ("ok", "video", "video/mp4", b"not an mp4 at all", 0, ""),
    ("ok", "plotly", PLOTLY_MIME, b"[1, 2, 3]", 0, ""),
    ("ok", "plotly", PLOTLY_MIME, b"{not json", 0, ""),
    ("ok", "plotly", PLOTLY_MIME, b'{"data": 5}', 0, ""),
    ("ok", "html", "text/html", b"\xff\xfe<p>not utf-8</p>", 0, ""),
    ("ok", "table", PARQUET_MIME, b"PAR1 this is not parquet", 0, ""),
])
def test_media_that_is_not_what_it_claims_is_refused_and_leaves_nothing(
        name: str, kind: str, mime: str, data: bytes, step: int, caption: str, stub: ingest_pb2_grpc.IngestStub,
        collector: CollectorProcess) -> None:
    run_id = open_run(stub)
    before = stored(collector)
    code = refused(lambda: upload(stub, run_id, name, data, kind, mime, step, caption))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert stored(collector) == before
    assert stepwire.Api(address=collector.address).run(run_id).media() == []


def test_an_upload_over_the_size_limit_is_refused_while_it_arrives(stub: ingest_pb2_grpc.IngestStub,
                                                                   collector: CollectorProcess) -> None:
    run_id = open_run(stub)
    sent = 0

    def chunks() -> Iterator[ingest_pb2.ArtifactChunk]:
        nonlocal sent
        piece = b"\x00" * ARTIFACT_CHUNK_BYTES
        first = ingest_pb2.ArtifactChunk(run_id=run_id, name="big", data=b"RIFF\x00\x00\x00\x00WAVE" + piece,
                                         media=ingest_pb2.MediaInfo(kind="audio", mime="audio/wav"))
        yield first
        while sent < 2 * MAX_MEDIA_BYTES:  # the collector stops reading once the limit is passed
            sent += len(piece)
            yield ingest_pb2.ArtifactChunk(data=piece)
        yield ingest_pb2.ArtifactChunk(last=True)

    assert refused(lambda: stub.PutArtifact(chunks())) == grpc.StatusCode.INVALID_ARGUMENT
    assert stored(collector) == set()


def test_valid_media_is_indexed_with_what_the_content_says(stub: ingest_pb2_grpc.IngestStub,
                                                           collector: CollectorProcess) -> None:
    run_id = open_run(stub)
    content = png(5, 2)
    chunk = ingest_pb2.ArtifactChunk(run_id=run_id, name="img", step=3, data=content, last=True,
                                     media=ingest_pb2.MediaInfo(kind="image", mime="image/png", width=9999,
                                                                height=1))  # the claimed size is not trusted
    info = stub.PutArtifact(iter([chunk]))
    # a media name follows the series-name rule, not the artifact-path rule: ".." is just characters
    upload(stub, run_id, "../not/a/path", content, step=4)
    view = stepwire.Api(address=collector.address).run(run_id)
    items = view.media()
    assert [(m.name, m.step, m.width, m.height, m.sha256) for m in items] == [
        ("../not/a/path", 4, 5, 2, info.sha256), ("img", 3, 5, 2, info.sha256)]
    assert view.artifacts() == []  # media are not artifacts
    assert stored(collector) == {collector.dir / "blobs" / info.sha256[:2] / info.sha256}
