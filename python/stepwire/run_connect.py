"""Opening a run at its collector: the directory's local collector (started on demand) or one at an address."""

from __future__ import annotations

import os
from pathlib import Path

import grpc

from stepwire.collector.embedded import local_collector, reachable
from stepwire.retry import Backoff
from stepwire.transport import open_channel
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc


def open_run(info: ingest_pb2.RunInfo, address: str | None, directory: Path | None, timeout: float,
             token: str | None, tls_ca: str | os.PathLike[str] | None) -> tuple[str, grpc.Channel]:
    """Connect and open the run within ``timeout`` seconds; returns the collector's address and the channel, or
    raises ``ConnectionError``. Without ``address`` the collector is ``directory``'s local one (no token). A busy
    collector (RESOURCE_EXHAUSTED, as when many ranks start at once) is retried with backoff; a local collector
    that exited on idle just then is started again."""
    backoff = Backoff(initial=0.05, cap=1.0, deadline=timeout)
    while True:
        if address is None:
            assert directory is not None
            try:
                target = local_collector(directory)
            except RuntimeError as exc:
                raise ConnectionError(str(exc)) from None
        elif not reachable(address, max(0.1, backoff.remaining()), tls_ca):
            raise ConnectionError(f"cannot reach a stepwire collector at {address} within {timeout:g} s")
        else:
            target = address
        channel = open_channel(target, token if address is not None else None, tls_ca)
        try:
            ingest_pb2_grpc.IngestStub(channel).OpenRun(info, timeout=max(0.1, backoff.remaining()))
            return target, channel
        except grpc.RpcError as exc:
            channel.close()
            code = exc.code() if isinstance(exc, grpc.Call) else None
            retry = code == grpc.StatusCode.RESOURCE_EXHAUSTED or (
                address is None and code == grpc.StatusCode.UNAVAILABLE)
            if not retry or not backoff.wait():
                raise ConnectionError(f"stepwire collector at {target} did not open the run: {exc}") from None
