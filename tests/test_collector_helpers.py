"""Builds batches for one rank of a run with the real native stream, for tests that need several ranks."""

from __future__ import annotations

import uuid

import numpy as np
from stepwire.v1 import ingest_pb2_grpc

from stepwire import _core
from stepwire.sender import encode_batch


def push_rank(stub: ingest_pb2_grpc.IngestStub, run_id: str, rank: int, values: np.ndarray,
              hists: list[np.ndarray]) -> None:
    """Log ``values[step]`` as "x" and ``hists[step]`` as "h" for one rank, and push its batches."""
    stream = _core.Stream(flush_interval=60.0, max_sealed=1000)
    p = _core.Producer(stream)
    p._scalar_ids["x"] = stream.define("x", _core.KIND_SCALAR)
    hid = stream.define("h", _core.KIND_HISTOGRAM)
    for step, v in enumerate(values.tolist()):
        p.log_scalar("x", v, step=step)
    for step, h in enumerate(hists):
        stream.push_histogram(hid, step, h)
    stream.close()
    stream_id = uuid.uuid4().hex
    while (b := stream.next_batch(0.0)) is not None:
        stub.Push(encode_batch(b, run_id, rank, stream_id))
