"""A hostile client against a real collector process: path-like ids, names with control characters,
decompression bombs and stalled uploads are refused where they arrive and change nothing outside the store."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import lz4.block
import pytest
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc, query_pb2, query_pb2_grpc
from test_ingest import open_run, sealed_batches

import stepwire
from conftest import CollectorProcess
from stepwire.ranks import RankInfo, agree_run_id
from stepwire.sender import encode_batch
from stepwire.transport import open_channel

BAD_IDS = ["../../x", "/tmp/abs", "a/b", "..", ".hidden", "a\\b", "x\x00y", "line\nbreak", "rtl\u202eexe", "",
           "é", "a" * 65, "a b"]


@pytest.fixture
def stub(collector: CollectorProcess) -> Iterator[ingest_pb2_grpc.IngestStub]:
    with open_channel(collector.address) as channel:
        yield ingest_pb2_grpc.IngestStub(channel)


def refused(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code()  # type: ignore[no-any-return]


def files_outside(root: Path, inside: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and inside not in p.parents}


@pytest.mark.parametrize("run_id", BAD_IDS)
def test_a_bad_run_id_is_refused_by_the_client_and_the_collector_alike(
        run_id: str, stub: ingest_pb2_grpc.IngestStub, collector: CollectorProcess, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        agree_run_id(RankInfo(0, 1, 0, "test"), run_id or "\x00")  # "" would mean "choose one"
    before = files_outside(tmp_path, collector.dir)
    assert refused(lambda: stub.OpenRun(ingest_pb2.RunInfo(run_id=run_id))) == grpc.StatusCode.INVALID_ARGUMENT
    chunk = ingest_pb2.ArtifactChunk(run_id=run_id, name="evil.txt", data=b"owned", last=True)
    assert refused(lambda: stub.PutArtifact(iter([chunk]))) == grpc.StatusCode.INVALID_ARGUMENT
    ref = ingest_pb2.ArtifactRef(run_id=run_id, name="evil.txt")
    assert refused(lambda: stub.DeleteArtifact(ref)) == grpc.StatusCode.INVALID_ARGUMENT
    update = ingest_pb2.RunUpdate(run_id=run_id, status="finished")
    assert refused(lambda: stub.UpdateRun(update)) == grpc.StatusCode.INVALID_ARGUMENT
    text = ingest_pb2.TextRecord(run_id=run_id, name="t", text="x")
    assert refused(lambda: stub.LogText(text)) == grpc.StatusCode.INVALID_ARGUMENT
    batch = encode_batch(sealed_batches(10)[0], run_id, 0, uuid.uuid4().hex)
    assert refused(lambda: stub.Push(batch)) == grpc.StatusCode.INVALID_ARGUMENT
    assert files_outside(tmp_path, collector.dir) == before
    assert not (collector.dir / "x").exists() and not Path("/tmp/abs").exists()


def test_artifacts_live_under_their_content_hash_whatever_their_name(
        stub: ingest_pb2_grpc.IngestStub, collector: CollectorProcess, tmp_path: Path) -> None:
    run_id = open_run(stub)
    for name in ["../../escape.txt", "/etc/passwd", "a//b", "dir/./x", "c\x00d", "bidi\u2066x"]:
        chunk = ingest_pb2.ArtifactChunk(run_id=run_id, name=name, data=b"x", last=True)
        assert refused(lambda c=chunk: stub.PutArtifact(iter([c]))) == grpc.StatusCode.INVALID_ARGUMENT
    cut = ingest_pb2.ArtifactChunk(run_id=run_id, name="cut.bin", data=b"half")  # the stream ends before `last`
    assert refused(lambda: stub.PutArtifact(iter([cut]))) == grpc.StatusCode.INVALID_ARGUMENT
    info = stub.PutArtifact(iter([ingest_pb2.ArtifactChunk(run_id=run_id, name="ckpt/model.pt", data=b"weights",
                                                           last=True)]))
    blob = collector.dir / "blobs" / info.sha256[:2] / info.sha256
    assert blob.read_bytes() == b"weights"
    stub.PutArtifact(iter([ingest_pb2.ArtifactChunk(run_id=run_id, name="copy.pt", data=b"weights", last=True)]))
    stub.DeleteArtifact(ingest_pb2.ArtifactRef(run_id=run_id, name="ckpt/model.pt"))
    assert blob.exists()  # still referenced by copy.pt
    view = stepwire.Api(address=collector.address).run(run_id)
    assert view.download_artifact("copy.pt", tmp_path / "back").read_bytes() == b"weights"
    stub.DeleteArtifact(ingest_pb2.ArtifactRef(run_id=run_id, name="copy.pt"))
    assert not blob.exists()


@pytest.mark.parametrize("name", ["with\x00nul", "new\nline", "tab\tx", "\u202eright-to-left", "del\x7f", "",
                                  "x" * 257])
def test_series_names_with_control_characters_are_refused_in_a_push(
        name: str, stub: ingest_pb2_grpc.IngestStub, collector: CollectorProcess) -> None:
    run_id = open_run(stub)
    batch = encode_batch(sealed_batches(10)[0], run_id, 0, uuid.uuid4().hex)
    batch.series[0].name = name
    assert refused(lambda: stub.Push(batch)) == grpc.StatusCode.INVALID_ARGUMENT
    assert stepwire.Api(address=collector.address).run(run_id).series() == []


def test_labels_and_statuses_are_checked_on_both_ends(stub: ingest_pb2_grpc.IngestStub, tmp_path: Path) -> None:
    for info in [ingest_pb2.RunInfo(run_id="r1", project="p\u202eq"), ingest_pb2.RunInfo(run_id="r1", name="a\nb"),
                 ingest_pb2.RunInfo(run_id="r1", tags=["ok", ""]), ingest_pb2.RunInfo(run_id="r1", rank=4,
                                                                                       world_size=2)]:
        assert refused(lambda i=info: stub.OpenRun(i)) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ValueError, match="project"):
        stepwire.init(project="p\u202eq", mode="offline", dir=tmp_path)
    with pytest.raises(ValueError, match="tag"):
        stepwire.init(tags=["a\x00"], mode="offline", dir=tmp_path)
    run_id = open_run(stub)
    update = ingest_pb2.RunUpdate(run_id=run_id, status="<img src=x onerror=alert(1)>")
    assert refused(lambda: stub.UpdateRun(update)) == grpc.StatusCode.INVALID_ARGUMENT


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_decompression_bomb_is_refused_before_it_is_inflated(
        stub: ingest_pb2_grpc.IngestStub, collector: CollectorProcess) -> None:
    run_id = open_run(stub)
    bomb = lz4.block.compress(bytes(256 << 20), store_size=True)  # 256 MiB of zeros in about 1 MiB
    batch = ingest_pb2.Batch(run_id=run_id, stream_id=uuid.uuid4().hex, sequence=1,
                             compression=ingest_pb2.COMPRESSION_LZ4_BLOCK)
    batch.scalars.point_count = 1
    for column in ("series_ids", "group_lengths", "steps", "values", "wall_times"):
        setattr(batch.scalars, column, bomb)
    assert batch.ByteSize() < 8 << 20
    before = peak_rss_mib(collector.proc.pid)
    for _ in range(3):
        assert refused(lambda: stub.Push(batch)) == grpc.StatusCode.INVALID_ARGUMENT
    # forged counts that match the bomb: more points than one batch may hold
    batch.scalars.point_count = (256 << 20) // 8
    assert refused(lambda: stub.Push(batch)) == grpc.StatusCode.INVALID_ARGUMENT
    assert peak_rss_mib(collector.proc.pid) - before < 100


def test_stalled_uploads_never_hold_the_threads_ingest_needs(
        stub: ingest_pb2_grpc.IngestStub, collector: CollectorProcess) -> None:
    run_id = open_run(stub)
    release = threading.Event()

    def stalled() -> Iterator[ingest_pb2.ArtifactChunk]:
        yield ingest_pb2.ArtifactChunk(run_id=run_id, name=f"{uuid.uuid4().hex}.bin", data=b"first piece")
        release.wait(60)

    outcomes: list[grpc.StatusCode] = []
    futures = [stub.PutArtifact.future(stalled(), timeout=60) for _ in range(12)]
    try:
        # with every upload stalled, other RPCs still complete (a generous deadline: liveness, not speed)
        for i in range(5):
            stub.Push(encode_batch(sealed_batches(100)[0], run_id, 0, uuid.uuid4().hex), timeout=10)
            stub.OpenRun(ingest_pb2.RunInfo(run_id=f"{run_id}-{i}"), timeout=10)
        for f in futures:  # the stalled ones are cancelled by the collector, the rest were turned away
            outcomes.append(f.exception(timeout=40).code())  # type: ignore[union-attr]
    finally:
        release.set()
    assert set(outcomes) <= {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
    assert outcomes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 8
    assert stepwire.Api(address=collector.address).run(run_id).artifacts() == []
    assert not [p for p in (collector.dir / "blobs").rglob("*") if p.is_file()]  # no half-written blob left


@pytest.mark.parametrize("config", ["[" * 100_000 + "]" * 100_000, '{"a": ' * 50_000 + "1" + "}" * 50_000,
                                    "not json", "[1, 2]", '"text"'])
def test_a_config_that_is_no_json_object_is_refused_not_retried(config: str, stub: ingest_pb2_grpc.IngestStub,
                                                                 collector: CollectorProcess) -> None:
    # INVALID_ARGUMENT is final for a client; an internal error would have it retry the record for ever
    assert refused(lambda: stub.OpenRun(ingest_pb2.RunInfo(run_id="deep", config_json=config))) == \
        grpc.StatusCode.INVALID_ARGUMENT
    run_id = open_run(stub)
    update = ingest_pb2.RunUpdate(run_id=run_id, meta_json=config)
    assert refused(lambda: stub.UpdateRun(update)) == grpc.StatusCode.INVALID_ARGUMENT
    assert collector.proc.poll() is None


def test_a_query_naming_too_many_ranks_is_refused(collector: CollectorProcess) -> None:
    request = query_pb2.SeriesRequest(run_id="r", name="x", ranks=range(100_000))
    with open_channel(collector.address) as channel, pytest.raises(grpc.RpcError) as info:
        next(query_pb2_grpc.QueryStub(channel).Scalars(request, timeout=30))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
