"""Nobody let in: bearer tokens on pushes and queries, TLS with the right and a wrong CA, exposure rules."""

from __future__ import annotations

import http.client
import ssl
import subprocess
import sys
import urllib.parse
from pathlib import Path

import grpc
import pytest
from stepwire.v1 import ingest_pb2, ingest_pb2_grpc, query_pb2, query_pb2_grpc

import stepwire
from conftest import CollectorProcess, start_collector
from stepwire.transport import open_channel


@pytest.fixture
def guarded(tmp_path: Path):  # type: ignore[no-untyped-def]
    c = start_collector(tmp_path / "guarded", "--token", "s3cret")
    yield c
    c.stop()


def calls(channel: grpc.Channel) -> list[object]:
    ingest, query = ingest_pb2_grpc.IngestStub(channel), query_pb2_grpc.QueryStub(channel)
    return [lambda: ingest.OpenRun(ingest_pb2.RunInfo(run_id="x"), timeout=10),
            lambda: ingest.Push(ingest_pb2.Batch(run_id="x", stream_id="s", sequence=1), timeout=10),
            lambda: query.ListRuns(query_pb2.ListRunsRequest(), timeout=10),
            lambda: list(query.Scalars(query_pb2.SeriesRequest(run_id="x", name="a"), timeout=10)),
            lambda: ingest.PutArtifact(iter([ingest_pb2.ArtifactChunk(run_id="x", name="a")]), timeout=10)]


@pytest.mark.parametrize("token", [None, "wrong", "s3cret0", "S3CRET", "s3cre"])
def test_pushes_and_queries_without_the_right_token_are_refused(guarded: CollectorProcess, token: str | None,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEPWIRE_TOKEN", raising=False)
    with open_channel(guarded.address, token=token) as channel:
        for call in calls(channel):
            with pytest.raises(grpc.RpcError) as info:
                call()  # type: ignore[operator]
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("token", ["s3cret ", "s3\ncret", "s3cr\u00e9t"])
def test_a_token_metadata_could_not_carry_is_refused_before_sending(token: str) -> None:
    with pytest.raises(ValueError, match="visible ASCII"):
        open_channel("127.0.0.1:1", token=token)


def test_the_right_token_works_end_to_end(guarded: CollectorProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    with stepwire.init(address=guarded.address, token="s3cret", on_unreachable="raise") as run:
        run.log({"a": 1.0})
        run.log_text("t", "hello")
    assert run.stats()["acknowledged"] == 1
    view = stepwire.Api(address=guarded.address, token="s3cret").run(run.id)
    assert view.scalars("a")["value"].tolist() == [1.0] and view.texts()[0].text == "hello"
    monkeypatch.setenv("STEPWIRE_TOKEN", "s3cret")
    assert [r.id for r in stepwire.Api(address=guarded.address).runs()] == [run.id]
    with pytest.raises(grpc.RpcError):
        stepwire.Api(address=guarded.address, token="nope").runs()


def make_ca_and_cert(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 signed by it, with openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (directory / f"{name}-{n}" for n in ("ca.key", "ca.pem", "key.pem", "csr",
                                                                        "cert.pem"))
    ext = directory / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", f"/CN={name} test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out",
        str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key


def test_tls_with_the_right_ca_works_and_a_wrong_ca_is_refused(tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_cert(tmp_path / "pki", "good")
    other_ca, _, _ = make_ca_and_cert(tmp_path / "pki", "evil")
    c = start_collector(tmp_path / "tls", "--tls-cert", str(cert), "--tls-key", str(key), "--token", "t", tls_ca=ca)
    try:
        address = c.address
        with stepwire.init(address=address, tls_ca=ca, token="t", on_unreachable="raise") as run:
            run.log({"a": 2.0})
        assert stepwire.Api(address=address, tls_ca=ca, token="t").run(run.id).summary()["a"]["last"] == 2.0
        with pytest.raises(ConnectionError):
            stepwire.init(address=address, tls_ca=other_ca, token="t", connect_timeout=2, on_unreachable="raise")
        with pytest.raises(ConnectionError):  # plaintext to a TLS port
            stepwire.init(address=address, token="t", connect_timeout=2, on_unreachable="raise")
        with pytest.raises(grpc.RpcError):
            stepwire.Api(address=address, tls_ca=other_ca, token="t").runs()
    finally:
        c.stop()


def test_the_dashboard_of_a_tls_collector_serves_tls_with_a_secure_cookie(tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_cert(tmp_path / "pki", "good")
    c = start_collector(tmp_path / "tls", "--tls-cert", str(cert), "--tls-key", str(key), "--token", "t0ken",
                        "--http", "127.0.0.1:0", tls_ca=ca)
    try:
        assert c.http.startswith("https://")
        context = ssl.create_default_context(cafile=str(ca))
        port = urllib.parse.urlsplit(c.http).port
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
        conn.request("GET", "/?token=t0ken")
        answer = conn.getresponse()
        assert answer.status == 303
        assert "Secure" in answer.getheader("Set-Cookie", "")
        conn.close()
    finally:
        c.stop()


def test_a_non_loopback_address_needs_a_token_or_insecure(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "stepwire", "collector", "--listen", "0.0.0.0:0", "--dir",
                          str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "without a token" in out.stderr
