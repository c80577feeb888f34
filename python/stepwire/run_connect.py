"""Opening a run at its collector: the directory's local collector (started on demand) or one at an address."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import grpc

from stepwire.collector.embedded import local_collector, reachable
from stepwire.retry import Backoff
from stepwire.transport import open_channel
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc

log = logging.getLogger("stepwire.sender")


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


class LocalRestart:
    """For a run on its directory's local collector (the embedded default, address not given): when that collector
    stops answering, the collector serving the directory now, started again if none runs, as init starts it. A
    SIGKILLed or crashed local collector thus comes back by itself, and the ranks of the node replay their spools
    into it. Called on the sender thread, only after a probe found the collector silent."""

    def __init__(self, directory: Path, address: str) -> None:
        self.directory = directory
        self.address = address
        self.channel: grpc.Channel | None = None
        """The channel to the collector found last (None while the first one serves)."""
        self.gave_up = False
        """True while the last attempt could not start a collector (see collector.log in the directory)."""

    def __call__(self) -> grpc.Channel | None:
        """A channel to the directory's collector if it is another one than before (the old channel closed),
        else None (the same one is alive but slow, or none could be started)."""
        try:
            address = local_collector(self.directory)
        except RuntimeError as exc:
            if not self.gave_up:
                log.warning("%s: retried while spooling", exc)
            self.gave_up = True
            return None
        self.gave_up = False
        if address == self.address:
            return None
        log.warning("the local collector stopped answering; %s serves %s now: replaying the spool into it",
                    address, self.directory)
        old, self.address = self.channel, address
        self.channel = open_channel(address, None, None)
        if old is not None:
            old.close()
        return self.channel
