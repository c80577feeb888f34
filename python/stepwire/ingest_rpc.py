"""The records' wire form and the Ingest RPCs that deliver them: a sealed batch as a ``Batch`` of LZ4 columns, a
staged file as a stream of ``ArtifactChunk``s, and one RPC per kind of spool record (replaying is idempotent).
Shared by the sender thread and ``stepwire sync``."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import lz4.block
from google.protobuf.message import Message

from stepwire import _core, spool
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc

RPC_TIMEOUT_S = 30.0
"""How long one RPC may take (an artifact upload: at least 600 s)."""

PAYLOAD_TYPES: dict[int, type[Message]] = {
    spool.OPEN_RUN: ingest_pb2.RunInfo, spool.BATCH: ingest_pb2.Batch, spool.UPDATE_RUN: ingest_pb2.RunUpdate,
    spool.TEXT: ingest_pb2.TextRecord, spool.ARTIFACT: ingest_pb2.ArtifactChunk,
    spool.DELETE_ARTIFACT: ingest_pb2.ArtifactRef,
}
"""The message each kind of spool record holds."""


def _lz4(raw: bytes) -> bytes:
    """One LZ4 block of ``raw`` (with its size; empty stays empty)."""
    return lz4.block.compress(raw, store_size=True) if raw else b""


def encode_batch(b: _core.SealedBatch, run_id: str, rank: int, stream_id: str) -> ingest_pb2.Batch:
    """The wire form of a sealed batch: each column one LZ4 block."""
    msg = ingest_pb2.Batch(run_id=run_id, rank=rank, stream_id=stream_id, sequence=b.sequence,
                           compression=ingest_pb2.COMPRESSION_LZ4_BLOCK)
    for sid, name, kind in b.defs:
        msg.series.add(id=sid, name=name, kind=kind)
    if b.point_count:
        msg.scalars.point_count = b.point_count
        for key, raw in b.scalar_columns().items():
            setattr(msg.scalars, key, _lz4(raw))
    if b.histogram_count:
        msg.histograms.histogram_count = b.histogram_count
        for key, raw in b.histogram_columns().items():
            setattr(msg.histograms, key, _lz4(raw))
    return msg


def batch_items(msg: ingest_pb2.Batch) -> int:
    """Scalar points plus histograms in a batch."""
    return int(msg.scalars.point_count + msg.histograms.histogram_count)


def artifact_chunks(first: ingest_pb2.ArtifactChunk) -> Iterator[ingest_pb2.ArtifactChunk]:
    """The upload of a staged file: ``first`` (metadata, ``source_path``) with its first piece, then the rest, the
    final chunk marked ``last``."""
    from stepwire.artifacts import ARTIFACT_CHUNK_BYTES

    chunk = ingest_pb2.ArtifactChunk()
    chunk.CopyFrom(first)
    chunk.ClearField("source_path")
    with open(first.source_path, "rb") as f:
        chunk.data = f.read(ARTIFACT_CHUNK_BYTES)
        while data := f.read(ARTIFACT_CHUNK_BYTES):
            yield chunk
            chunk = ingest_pb2.ArtifactChunk(data=data)
    chunk.last = True  # the collector stores an upload only once it has seen its end
    yield chunk


def deliver(stub: ingest_pb2_grpc.IngestStub, kind: int, msg: Message, timeout: float = RPC_TIMEOUT_S) -> None:
    """Make the RPC that ``kind`` stands for (raises ``grpc.RpcError``); replaying is idempotent."""
    if kind == spool.OPEN_RUN:
        stub.OpenRun(msg, timeout=timeout)
    elif kind == spool.BATCH:
        stub.Push(msg, timeout=timeout)
    elif kind == spool.UPDATE_RUN:
        stub.UpdateRun(msg, timeout=timeout)
    elif kind == spool.TEXT:
        stub.LogText(msg, timeout=timeout)
    elif kind == spool.ARTIFACT:
        assert isinstance(msg, ingest_pb2.ArtifactChunk)
        stub.PutArtifact(artifact_chunks(msg), timeout=max(timeout, 600.0))
    elif kind == spool.DELETE_ARTIFACT:
        try:
            stub.DeleteArtifact(msg, timeout=timeout)
        except grpc.RpcError as exc:  # already gone (a replay): nothing to do
            if not (isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.NOT_FOUND):
                raise
    else:
        raise ValueError(f"unknown spool record kind {kind}")


def refused(exc: grpc.RpcError) -> bool:
    """The collector understood and refused (retrying cannot help), as opposed to not answering."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    return code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.FAILED_PRECONDITION)
