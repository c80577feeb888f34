"""The dashboard at its boundary (issue 11, finding 5), through real collector processes: the token never reaches
the log, Host headers of other sites are refused (DNS rebinding), every answer carries the security headers, the
cookie is HttpOnly/SameSite=Strict (Secure under TLS) and the token leaves the address bar, non-finite numbers
never break the JSON API, and hostile requests get a 4xx JSON error: never a 500, never a hang."""

from __future__ import annotations

import json
import math
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import stepwire
from conftest import CollectorProcess, start_collector
from stepwire.dashboard import server

TOKEN = "tok-" + uuid.uuid4().hex
ENDPOINTS = ("runs", "series", "scalars", "heatmap", "histogram", "skew")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return strict_json(self.body)


def _reject(constant: str) -> Any:
    raise ValueError(f"non-standard JSON constant {constant}")


def strict_json(body: bytes) -> Any:
    """JSON as RFC 8259 has it: a ``NaN`` or ``Infinity`` token is an error."""
    return json.loads(body, parse_constant=_reject)


def port_of(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


def raw(port: int, data: bytes, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> Answer:
    """Send ``data`` as it is and read the answer until the server closes (it does after every request)."""
    with socket.create_connection((host, port), timeout=30) as plain, \
            (tls.wrap_socket(plain, server_hostname=host) if tls is not None else plain) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            if not chunks:
                raise
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = (headers[key.strip().lower()] + ", " if key.strip().lower() in headers
                                        else "") + value.strip()
    return Answer(int(lines[0].split()[1]), headers, body)


def get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET",
        tls: ssl.SSLContext | None = None) -> Answer:
    given = {"Host": f"127.0.0.1:{port}", **(headers or {})}
    lines = "".join(f"{k}: {v}\r\n" for k, v in given.items() if v is not None)
    return raw(port, f"{method} {path} HTTP/1.1\r\n{lines}Connection: close\r\n\r\n".encode(), tls=tls)


BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """A collector with a token and a dashboard, holding a run with NaN in its config and data, a histogram
    whose sum overflows, and a well-behaved run."""
    c = start_collector(tmp_path_factory.mktemp("guarded") / "c", "--http", "127.0.0.1:0", "--token", TOKEN)
    try:
        bad = stepwire.init(project="sec", name="nonfinite", address=c.address, token=TOKEN, quiet=True,
                            run_id="nonfinite", config={"x": float("nan"), "up": float("inf"), "ok": 1})
        for step in range(5):
            bad.log({"loss": [1.0, float("nan"), float("inf"), -float("inf"), 2.0][step]}, step=step)
            bad.log_histogram("big64", np.array([1e308, 1e308]) * (-1 if step == 3 else 1), step=step)
            bad.log_histogram("big32", np.full(1000, 3e38, dtype=np.float32), step=step)
        bad.finish()
        good = stepwire.init(project="sec", name="fine", address=c.address, token=TOKEN, quiet=True,
                             run_id="fine", config={"lr": 0.1})
        good.log({"loss": 0.5})
        good.finish()
        yield c
    finally:
        c.stop()


# -- 1. the token never reaches the log --------------------------------------------------------------------------

def test_token_never_reaches_the_collectors_log(tmp_path: Path) -> None:
    secret = "SECRET" + uuid.uuid4().hex
    c = start_collector(tmp_path / "c", "--http", "127.0.0.1:0", "--token", secret)
    try:
        run = stepwire.init(project="log", address=c.address, token=secret, quiet=True, config={"x": float("nan")})
        run.log_histogram("h", np.array([1e308, 1e308]), step=0)
        run.finish()
        port = port_of(c.http)
        assert get(port, f"/?token={secret}").status == 303
        assert get(port, f"/?token={secret}&run={run.id}").status == 303
        assert get(port, f"/api/runs?token={secret}", {"Authorization": f"Bearer {secret}"}).status == 200
        assert get(port, f"/api/histogram?run={run.id}&name=h&token={secret}",
                   {"Authorization": f"Bearer {secret}"}).status == 200
        assert get(port, f"/api/runs?token={secret}").status == 401  # a token in an API query is not accepted
        assert get(port, "/?token=not-it").status == 401
        assert get(port, f"/?token={secret}", {"Host": "evil.example"}).status == 421
        assert raw(port, f"GET /?token={secret} HTTP/1.1 junk\r\n\r\n".encode()).status == 400
        assert raw(port, f"GET /?to%6ben={secret} HTTP/1.1 junk\r\n\r\n".encode()).status == 400
        assert raw(port, f"GET /?token={secret}{'a' * 70_000} HTTP/1.1\r\n\r\n".encode()).status == 414
        assert raw(port, f"GET /?token={secret} HTTP/9.9\r\n\r\n".encode()).status == 400
        assert raw(port, f"BREW /?token={secret} HTTP/1.1\r\n\r\n".encode()).status == 405
    finally:
        c.stop()
    logged = (c.dir / "test-collector.log").read_text()
    assert secret not in logged
    assert "?<redacted>" in logged  # the refused requests were logged, without their query


# -- 2. `stepwire ui` is in tests/dashboard/test_ui_token.py --------------------------------------------------------

# -- 3. Host, security headers, cookie -----------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "localhost:1", "127.0.0.1:{other}",
                                  "127.0.0.1.nip.io:{port}", "localhost:{port}@evil.example", "", "[::1",
                                  "localhost:{port}:{port}", "localhost:-{port}", "0.0.0.0:{port}"])
def test_other_hosts_are_refused(guarded: CollectorProcess, host: str) -> None:
    port = port_of(guarded.http)
    answer = get(port, "/api/runs", {**BEARER, "Host": host.format(port=port, other=port + 1)})
    assert answer.status in (400, 421)
    assert "Host" in answer.json()["error"]


def test_two_host_headers_are_refused(guarded: CollectorProcess) -> None:
    port = port_of(guarded.http)
    answer = raw(port, (f"GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\n"
                        f"Authorization: Bearer {TOKEN}\r\n\r\n").encode())
    assert answer.status in (400, 421) and "Host" in answer.json()["error"]


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LocalHost:{port}", "localhost.:{port}",
                                  "[::1]:{port}"])
def test_own_hosts_are_served(guarded: CollectorProcess, host: str) -> None:
    port = port_of(guarded.http)
    answer = get(port, "/api/runs", {**BEARER, "Host": host.format(port=port)})
    assert answer.status == 200 and len(answer.json()) == 2


def test_operator_allows_more_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(server.ALLOWED_HOSTS_ENV, "dash.example, [fd00::7]")
    c = start_collector(tmp_path / "c", "--http", "127.0.0.1:0")
    try:
        port = port_of(c.http)
        assert get(port, "/api/runs", {"Host": "dash.example"}).status == 200  # behind a proxy: any port
        assert get(port, "/api/runs", {"Host": "DASH.example:8443"}).status == 200
        assert get(port, "/api/runs", {"Host": "[fd00::7]:80"}).status == 200
        assert get(port, "/api/runs", {"Host": "other.example"}).status == 421
    finally:
        c.stop()


@pytest.mark.parametrize("path,headers,status", [
    ("/", BEARER, 200), ("/static/app.js", BEARER, 200), ("/static/plotly.min.js", BEARER, 200),
    ("/api/runs", BEARER, 200), ("/api/runs", {}, 401), ("/nothing", BEARER, 404),
    ("/api/runs", {**BEARER, "Host": "evil.example"}, 421), (f"/?token={TOKEN}", {}, 303)])
def test_every_answer_has_the_security_headers(guarded: CollectorProcess, path: str, headers: dict[str, str],
                                               status: int) -> None:
    answer = get(port_of(guarded.http), path, headers)
    assert answer.status == status
    h = answer.headers
    assert h["x-frame-options"] == "DENY"
    assert h["x-content-type-options"] == "nosniff"
    assert h["referrer-policy"] == "no-referrer"
    assert h["cache-control"] == ("public, max-age=31536000, immutable" if "plotly" in path else "no-store")
    csp = dict(part.strip().split(" ", 1) for part in h["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'" and csp["script-src"] == "'self'" and csp["frame-ancestors"] == "'none'"
    assert h["server"] == "stepwire-dashboard"  # no Python version


def test_token_in_the_address_sets_a_cookie_and_leaves(guarded: CollectorProcess) -> None:
    port = port_of(guarded.http)
    answer = get(port, f"/?token={TOKEN}")
    assert answer.status == 303 and answer.headers["location"] == "/"
    name_value, *flags = [part.strip() for part in answer.headers["set-cookie"].split(";")]
    assert TOKEN not in name_value  # a value derived from the token, not the token
    assert set(flags) == {"HttpOnly", "SameSite=Strict", "Path=/"}  # no Secure: this is plain HTTP
    assert get(port, "/api/runs", {"Cookie": f"other=1; {name_value}"}).status == 200
    assert get(port, "/", {"Cookie": name_value}).status == 200
    assert get(port, f"/?token={TOKEN}", {"Cookie": name_value}).status == 303  # the address is cleaned anyway
    assert get(port, f"/?token={TOKEN}x").status == 401


class _NoRuns:
    def runs(self, project: str | None = None) -> list[Any]:
        return []


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def test_cookie_is_secure_under_tls(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    dash = server.Dashboard(_NoRuns(), token=TOKEN, tls_cert=cert, tls_key=key)  # type: ignore[arg-type]
    dash.start()
    try:
        assert dash.url.startswith("https://127.0.0.1:")
        port = port_of(dash.url)
        tls = ssl.create_default_context(cafile=str(cert))
        answer = get(port, f"/?token={TOKEN}", tls=tls)
        assert answer.status == 303
        cookie = answer.headers["set-cookie"]
        assert {"Secure", "HttpOnly", "SameSite=Strict"} <= {p.strip() for p in cookie.split(";")}
        assert get(port, "/api/runs", {"Cookie": cookie.split(";")[0]}, tls=tls).json() == []
        with pytest.raises(OSError):  # plain HTTP on the TLS port gets nothing
            raw(port, b"GET / HTTP/1.1\r\n\r\n").json()
    finally:
        dash.stop()


# -- 4. numbers JSON cannot hold ------------------------------------------------------------------------------------

def test_nonfinite_numbers_never_break_the_api(guarded: CollectorProcess) -> None:
    port = port_of(guarded.http)
    runs = get(port, "/api/runs", BEARER)
    assert runs.status == 200
    rows = {r["id"]: r for r in runs.json()}
    assert set(rows) == {"nonfinite", "fine"}  # one bad value does not cost the listing
    assert rows["nonfinite"]["config"] == {"x": "NaN", "up": "Infinity", "ok": 1}
    urls = ["/api/series?run=nonfinite", "/api/skew?run=nonfinite"]
    for x in ("step", "wall_time"):
        urls.append(f"/api/scalars?run=nonfinite&name=loss&x={x}")
    for name in ("big64", "big32"):
        urls += [f"/api/heatmap?run=nonfinite&name={name}", f"/api/histogram?run=nonfinite&name={name}",
                 f"/api/histogram?run=nonfinite&name={name}&step=3&bins=7"]
    answers = {url: get(port, url, BEARER) for url in urls}
    assert {url: a.status for url, a in answers.items()} == dict.fromkeys(urls, 200)
    data = {url: a.json() for url, a in answers.items()}
    assert {u.split("?")[0].rsplit("/", 1)[1] for u in urls} | {"runs"} == set(ENDPOINTS)
    scalars = data["/api/scalars?run=nonfinite&name=loss&x=step"]
    assert scalars["nonfinite"] == 3 and scalars["ranks"][0]["y"] == [1.0, None, None, None, 2.0]
    last = data["/api/histogram?run=nonfinite&name=big64"]
    assert last["sum"] == "Infinity" and last["count"] == 2
    assert data["/api/histogram?run=nonfinite&name=big64&step=3&bins=7"]["sum"] == "-Infinity"
    assert data["/api/histogram?run=nonfinite&name=big32"]["sum"] in ("Infinity", 3e41)
    for answer in data.values():
        json.dumps(answer, allow_nan=False)


def test_encode_json_is_strict() -> None:
    obj = {"a": [1.0, float("nan"), (float("inf"), -float("inf"))], "n": np.float32("nan"),
           "arr": np.array([1.5, np.inf]), "i": np.int64(3)}
    assert strict_json(server.encode_json(obj)) == {
        "a": [1.0, "NaN", ["Infinity", "-Infinity"]], "n": "NaN", "arr": [1.5, "Infinity"], "i": 3}
    assert server.encode_json({"x": 1.5}) == b'{"x": 1.5}'
    assert math.isnan(float(strict_json(server.encode_json(float("nan")))))


# -- 5. hostile requests ------------------------------------------------------------------------------------------

BIG = "9" * 30
HOSTILE: list[tuple[str, str | bytes, dict[str, str], int]] = [
    # (case, path or a whole raw request, extra headers, status)
    ("request line too long", "/api/runs?x=" + "a" * 70_000, BEARER, 414),
    ("header line too long", "/api/runs", {**BEARER, "X-Big": "b" * 70_000}, 431),
    ("too many headers", "/api/runs", {**BEARER, **{f"X-H{i}": "1" for i in range(150)}}, 431),
    ("unknown path", "/nothing/here", BEARER, 404),
    ("unknown API route", "/api/nothing", BEARER, 404),
    ("unknown static file", "/static/nothing.js", BEARER, 404),
    ("static directory", "/static/", BEARER, 404),
    ("traversal", "/static/../../../../etc/passwd", BEARER, 404),
    ("traversal, encoded", "/static/..%2f..%2f..%2f..%2fetc%2fpasswd", BEARER, 404),
    ("traversal, encoded dots", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd", BEARER, 404),
    ("traversal, double encoded", "/static/%252e%252e%252fetc%252fpasswd", BEARER, 404),
    ("traversal, backslashes", "/static/..\\..\\..\\etc\\passwd", BEARER, 404),
    ("traversal to the package", "/static/../server.py", BEARER, 404),
    ("traversal from the root", "/../../../../etc/passwd", BEARER, 404),
    ("double slash", "//etc/passwd", BEARER, 404),
    ("NUL in a static name", "/static/app.js%00.png", BEARER, 404),
    ("raw NUL in a static name", b"GET /static/app.js\x00 HTTP/1.1\r\n", BEARER, 404),
    ("dot file", "/static/.hidden", BEARER, 404),
    ("points not a number", "/api/scalars?run=fine&name=loss&points=abc", BEARER, 400),
    ("points a float", "/api/scalars?run=fine&name=loss&points=1e3", BEARER, 400),
    ("points negative", "/api/scalars?run=fine&name=loss&points=-5", BEARER, 400),
    ("points huge", f"/api/scalars?run=fine&name=loss&points={BIG}", BEARER, 400),
    ("points too many", "/api/scalars?run=fine&name=loss&points=100000", BEARER, 400),
    ("points with spaces inside", "/api/scalars?run=fine&name=loss&points=1%200", BEARER, 400),
    ("x unknown", "/api/scalars?run=fine&name=loss&x=epoch", BEARER, 400),
    ("name missing", "/api/scalars?run=fine", BEARER, 400),
    ("run missing", "/api/series", BEARER, 400),
    ("steps negative", "/api/heatmap?run=nonfinite&name=big64&steps=-1", BEARER, 400),
    ("rows zero", "/api/heatmap?run=nonfinite&name=big64&rows=0", BEARER, 400),
    ("rank negative", "/api/heatmap?run=nonfinite&name=big64&rank=-1", BEARER, 400),
    ("rank huge", f"/api/histogram?run=nonfinite&name=big64&rank={BIG}", BEARER, 400),
    ("rank past int32", "/api/histogram?run=nonfinite&name=big64&rank=4294967296", BEARER, 400),
    ("step huge", f"/api/histogram?run=nonfinite&name=big64&step={BIG}", BEARER, 400),
    ("step not a number", "/api/histogram?run=nonfinite&name=big64&step=last", BEARER, 400),
    ("bins huge", f"/api/histogram?run=nonfinite&name=big64&bins={BIG}", BEARER, 400),
    ("bins negative", "/api/histogram?run=nonfinite&name=big64&bins=-3", BEARER, 400),
    ("no such histogram", "/api/histogram?run=nonfinite&name=nothing", BEARER, 404),
    ("unknown run: series", "/api/series?run=nope", BEARER, 404),
    ("unknown run: scalars", "/api/scalars?run=nope&name=loss", BEARER, 404),
    ("unknown run: heatmap", "/api/heatmap?run=nope&name=big64", BEARER, 404),
    ("unknown run: histogram", "/api/histogram?run=nope&name=big64", BEARER, 404),
    ("unknown run: skew", "/api/skew?run=nope", BEARER, 404),
    ("unknown run: media", "/api/media?run=nope", BEARER, 404),
    ("unknown run: media blob", f"/api/media/blob?run=nope&sha={'a' * 64}", BEARER, 404),
    ("media kind unknown", "/api/media?run=fine&kind=exe", BEARER, 400),
    ("media sha missing", "/api/media/blob?run=fine", BEARER, 400),
    ("media sha a path", "/api/media/blob?run=fine&sha=../../../../etc/passwd", BEARER, 400),
    ("media sha upper case", f"/api/media/blob?run=fine&sha={'A' * 64}", BEARER, 400),
    ("media sha nobody holds", f"/api/media/blob?run=fine&sha={'a' * 64}", BEARER, 404),
    ("media table sha nobody holds", f"/api/media/table?run=fine&sha={'a' * 64}", BEARER, 404),
    ("media table rows huge", f"/api/media/table?run=fine&sha={'a' * 64}&rows={BIG}", BEARER, 400),
    ("media blob without token", f"/api/media/blob?run=fine&sha={'a' * 64}", {}, 401),
    ("unknown run, NUL and quotes", "/api/series?run=%00'%22;drop%20table%20runs", BEARER, 404),
    ("unknown run, invalid UTF-8", "/api/series?run=%ff%fe", BEARER, 404),
    ("POST", b"POST /api/runs HTTP/1.1\r\nContent-Length: 2\r\n", BEARER, 405),
    ("unknown method", b"BREW /api/runs HTTP/1.1\r\n", BEARER, 405),
    ("HEAD", b"HEAD / HTTP/1.1\r\n", BEARER, 405),
    ("bad request line", b"GET / HTTP/1.1 extra\r\n", BEARER, 400),
    ("garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n", {}, 400),
    ("unknown HTTP version", b"GET / HTTP/9.9\r\n", BEARER, 400),
    ("malformed HTTP version", b"GET / HTTP/one\r\n", BEARER, 400),
    ("no token", "/api/runs", {}, 401),
    ("wrong bearer token", "/api/runs", {"Authorization": "Bearer wrong"}, 401),
    ("bearer token plus one", "/api/runs", {"Authorization": f"Bearer {TOKEN}x"}, 401),
    ("bearer token prefix", "/api/runs", {"Authorization": f"Bearer {TOKEN[:-1]}"}, 401),
    ("empty bearer", "/api/runs", {"Authorization": "Bearer "}, 401),
    ("token without scheme", "/api/runs", {"Authorization": TOKEN}, 401),
    ("basic auth", "/api/runs", {"Authorization": "Basic dXNlcjpwYXNz"}, 401),
    ("non-ASCII bearer", "/api/runs", {"Authorization": "Bearer \u00e9\u00e9"}, 401),
    ("long bearer", "/api/runs", {"Authorization": "Bearer " + "t" * 20_000}, 401),
    ("token as cookie value", "/api/runs", {"Cookie": f"stepwire_session_{{port}}={TOKEN}"}, 401),
    ("wrong cookie", "/api/runs", {"Cookie": "stepwire_session_{port}=0123abcd"}, 401),
    ("cookie of another port", "/api/runs", {"Cookie": "stepwire_session_1=0123abcd"}, 401),
    ("empty cookie", "/api/runs", {"Cookie": ";;=;"}, 401),
    ("token in an API query", f"/api/runs?token={TOKEN}", {}, 401),
    ("wrong token in the page query", "/?token=wrong", {}, 401),
    ("empty token in the page query", "/?token=", {}, 401),
]


@pytest.mark.parametrize("case,request_,headers,status", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_requests_get_a_4xx_json_error(guarded: CollectorProcess, case: str, request_: str | bytes,
                                               headers: dict[str, str], status: int) -> None:
    port = port_of(guarded.http)
    given = {"Host": f"127.0.0.1:{port}", **{k: v.replace("{port}", str(port)) for k, v in headers.items()}}
    lines = "".join(f"{k}: {v}\r\n" for k, v in given.items()).encode("utf-8")
    if isinstance(request_, bytes):
        answer = raw(port, request_ + lines + b"\r\nok")
    else:
        answer = raw(port, f"GET {request_} HTTP/1.1\r\n".encode() + lines + b"Connection: close\r\n\r\n")
    assert answer.status == status, answer.body[:300]
    if case != "HEAD":
        assert answer.headers["content-type"] == "application/json"
        assert isinstance(answer.json()["error"], str) and answer.json()["error"]
    assert b"root:" not in answer.body and b"import" not in answer.body
    assert get(port, "/api/runs", BEARER).status == 200  # and the dashboard still serves


def test_a_slow_client_blocks_nobody(guarded: CollectorProcess) -> None:
    """One client sends its request a byte at a time; others are answered meanwhile, and it is answered too."""
    port = port_of(guarded.http)
    request = f"GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
        half = len(request) // 2
        for i in range(half):
            slow.sendall(request[i:i + 1])
            time.sleep(0.002)
        others: list[int] = []
        threads = [threading.Thread(target=lambda: others.append(get(port, "/api/runs", BEARER).status))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert others == [200] * 4  # answered while the slow request is still half sent
        for i in range(half, len(request)):
            slow.sendall(request[i:i + 1])
        chunks = []
        while chunk := slow.recv(65536):
            chunks.append(chunk)
    assert b"".join(chunks).startswith(b"HTTP/1.0 200")


def test_a_silent_client_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The socket timeout: a connection that sends part of a request and then nothing is closed by the server
    (the client's own timeout is far longer)."""
    monkeypatch.setattr(server, "REQUEST_TIMEOUT_S", 0.5)
    dash = server.Dashboard(_NoRuns())  # type: ignore[arg-type]
    dash.start()
    try:
        port = port_of(dash.url)
        with socket.create_connection(("127.0.0.1", port), timeout=60) as a, \
                socket.create_connection(("127.0.0.1", port), timeout=60) as b:
            a.sendall(b"GET / HTTP/1.1\r\nHo")
            b.sendall(b"GET / HT")
            assert a.recv(100) == b"" and b.recv(100) == b""  # closed by the server, not by our timeout
    finally:
        dash.stop()


def test_connections_beyond_the_limit_are_turned_away(monkeypatch: pytest.MonkeyPatch) -> None:
    """At most ``MAX_CONNECTIONS`` connections are served at once; the next one is answered 503 at once, and
    served again once one closes."""
    monkeypatch.setattr(server, "MAX_CONNECTIONS", 2)
    dash = server.Dashboard(_NoRuns())  # type: ignore[arg-type]
    dash.start()
    try:
        port = port_of(dash.url)
        with socket.create_connection(("127.0.0.1", port), timeout=60) as a, \
                socket.create_connection(("127.0.0.1", port), timeout=60) as b:
            a.sendall(b"GET / HTTP/1.1\r\nHo")
            b.sendall(b"GET / HT")
            busy = raw(port, b"GET /api/runs HTTP/1.1\r\n\r\n")
            assert busy.status == 503 and "too many" in busy.json()["error"]
        for _ in range(200):  # the server notices the two closed connections
            answer = get(port, "/api/runs")
            if answer.status != 503:
                break
            time.sleep(0.05)
        assert answer.status == 200 and answer.json() == []
    finally:
        dash.stop()
