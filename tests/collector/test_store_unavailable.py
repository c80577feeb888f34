"""A store that cannot take or answer something now (``StoreUnavailable``: DuckDB out of memory, or its database
being reopened) makes the collector answer UNAVAILABLE, which clients retry and spool, never take for a refusal;
once the store answers again, what was spooled is stored, once."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

import stepwire
from stepwire.collector.server import Collector
from stepwire.ingest_rpc import refused
from stepwire.store.base import StoreUnavailable


def unavailable(*args: Any, **kwargs: Any) -> Any:
    raise StoreUnavailable("the store failed: reopening")


def test_a_failing_store_answers_unavailable_and_clients_spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    monkeypatch.setenv("STEPWIRE_DIR", str(tmp_path / "clients"))
    collector = Collector(tmp_path / "collector")
    collector.start(write_address_file=False)
    try:
        run = stepwire.init(project="p", address=collector.address, quiet=True, finish_timeout=5)
        monkeypatch.setattr(collector.store, "append", unavailable)
        for step in range(100):
            run.log({"a": float(step)}, step=step)
        run.finish()
        s = run.stats()
        assert (s["acknowledged"], s["rejected"], s["lost"], s["spooled"]) == (0, 0, 0, 100)

        monkeypatch.setattr(collector.store, "scalar_pages", unavailable)
        view = stepwire.Api(address=collector.address).run(run.id)
        with pytest.raises(grpc.RpcError) as error:
            view.scalars("a")
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE and not refused(error.value)

        monkeypatch.undo()  # the store answers again: the spool is delivered, once
        subprocess.run([sys.executable, "-m", "stepwire", "sync", str(tmp_path / "clients"), "--address",
                        collector.address], check=True, capture_output=True, timeout=120)
        assert view.scalars("a")["step"].tolist() == list(range(100))
    finally:
        collector.stop()


def test_a_store_error_midway_through_a_stream_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    collector = Collector(tmp_path / "collector")
    collector.start(write_address_file=False)
    try:
        run = stepwire.init(project="p", address=collector.address, quiet=True)
        for step in range(10):
            run.log({"a": float(step)}, step=step)
        run.finish()
        pages = collector.store.scalar_pages

        def first_page_then_fail(*args: Any, **kwargs: Any) -> Iterator[Any]:
            yield from pages(*args, **kwargs)
            raise StoreUnavailable("out of memory")

        monkeypatch.setattr(collector.store, "scalar_pages", first_page_then_fail)
        with pytest.raises(grpc.RpcError) as error:
            stepwire.Api(address=collector.address).run(run.id).scalars("a")
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        collector.stop()


def test_the_dashboard_answers_503_while_the_store_cannot_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    collector = Collector(tmp_path / "collector", http="127.0.0.1:0")
    collector.start(write_address_file=False)
    try:
        with stepwire.init(project="p", address=collector.address, quiet=True) as run:
            run.log({"a": 1.0})
        assert collector.http_url is not None
        monkeypatch.setattr(collector.store, "scalar_pages", unavailable)
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"{collector.http_url}api/scalars?run={run.id}&name=a", timeout=30)
        assert error.value.code == 503 and "reopening" in json.loads(error.value.read())["error"]
    finally:
        collector.stop()
