"""The dashboard's HTTP server: the page, its static files, Plotly.js from the ``plotly`` package, and the JSON API.

Routes (all ``GET``; JSON answers, errors as ``{"error": ...}`` with a 4xx status, 500 only for a failure of the
store itself, 502 for one of the Query service behind ``stepwire ui``):
  ``/``                                   the page
  ``/static/NAME``                        the page's own files; ``plotly.min.js`` comes from the plotly package
  ``/api/runs[?project=P]``               runs table
  ``/api/series?run=ID``                  the run's series
  ``/api/scalars?run=ID&name=N[&x=step|wall_time][&points=1000]``
  ``/api/heatmap?run=ID&name=N[&steps=200][&rows=120][&rank=R]``
  ``/api/histogram?run=ID&name=N[&step=S][&rank=R][&bins=64]``
  ``/api/skew?run=ID``
  ``/api/compare[?runs=ID,ID...][&project=P]``  config (flattened) and last/min/max of every scalar, per run
  ``/api/console?run=ID[&rank=R][&q=TEXT][&lines=1000]``  the last lines the ranks printed (containing TEXT)
  ``/api/media?run=ID[&name=N][&kind=K]``  media records grouped by name, each name with its steps
  ``/api/media/blob?run=ID&sha=SHA256[&name=N]``  a record's content, as the type stored with it (not JSON)
  ``/api/media/table?run=ID&sha=SHA256[&name=N][&rows=1000]``  a stored table's first rows as JSON columns
Numbers JSON cannot hold are sent as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (chart data arrays
hold ``null`` there instead, see ``panels``).

With a token, every request needs it: ``Authorization: Bearer TOKEN``, or the cookie set by opening
``/?token=TOKEN`` once (which then redirects to ``/``; the cookie holds a value derived from the token, not the
token). A token in the query of any other path is not accepted. Log lines never hold a query string.

Requests whose ``Host`` is not the bound address, ``localhost``, ``127.0.0.1`` or ``[::1]`` (with the bound port),
or a host named in ``$STEPWIRE_HTTP_ALLOWED_HOSTS`` (comma-separated; ``*`` allows any), are refused with 421: a web
page cannot reach a loopback dashboard through DNS rebinding. Every answer carries ``X-Frame-Options: DENY``, a
``Content-Security-Policy``, ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` and
``Cache-Control: no-store``, but for ``plotly.min.js``: read once and kept in memory, it is sent with an ``ETag``
(its sha256; the page loads it as ``plotly.min.js?v=TAG``) and ``Cache-Control: public, max-age=31536000,
immutable``, and a request whose ``If-None-Match``
names that tag is answered 304 with no body. Each connection has a socket timeout (``REQUEST_TIMEOUT_S``) and at most
``MAX_CONNECTIONS`` are served at once (more are answered 503 and closed).

Media contents (``/api/media/blob``) are served only for a sha256 one of the run's records holds (else 404), with
that record's stored mime type as ``Content-Type`` (never one taken from the request), ``nosniff``, and
``BLOB_CSP``: a sandbox without scripts, so logged HTML cannot run script nor reach the dashboard's origin (the page
shows it in a sandboxed iframe without ``allow-same-origin``; its policy allows frames from itself only).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import mimetypes
import os
import re
import ssl
import threading
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from stepwire.dashboard.bundle import BUNDLE_CACHE, PLOTLY_BUNDLE, STATIC, etag_matches, page
from stepwire.dashboard.compare import CompareError
from stepwire.dashboard.connections import ConnectionServer
from stepwire.dashboard.json_api import answer, failure_status, one_param
from stepwire.dashboard.json_api import encode_json as encode_json
from stepwire.dashboard.panels import PanelError, Panels
from stepwire.store.base import Reader
from stepwire.transport import is_loopback

log = logging.getLogger("stepwire.dashboard")

ALLOWED_HOSTS_ENV = "STEPWIRE_HTTP_ALLOWED_HOSTS"
REQUEST_TIMEOUT_S = 10.0
"""Socket timeout of every dashboard connection: a client silent this long while sending its request is cut off."""
MAX_CONNECTIONS = 64
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "media-src 'self'; frame-src 'self'; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
       "base-uri 'none'; form-action 'none'")
"""Scripts only from the dashboard itself; inline styles because Plotly sets them; images from data URLs (the heat
map is drawn into one); audio, video and (sandboxed) HTML media from the dashboard's own ``/api/media/blob``."""
BLOB_CSP = ("sandbox; default-src 'none'; img-src 'self' data:; media-src 'self' data:; style-src 'unsafe-inline'; "
            "frame-ancestors 'self'")
"""The policy of every media content answer: a sandbox (an opaque origin, no scripts, no forms, no popups) that
loads nothing but inline styles and images or media from the dashboard; only the dashboard itself may frame it."""
BLOB_HEADERS = {"Content-Security-Policy": BLOB_CSP, "X-Frame-Options": "SAMEORIGIN",
                "Cache-Control": "private, max-age=3600", "Accept-Ranges": "none"}

SECURITY_HEADERS = {"X-Frame-Options": "DENY", "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
PAGES = ("/", "/index.html")
_TOKEN_IN_TEXT = re.compile(r"(?i)(token(?:=|%3d))[^&\s'\"]*")


def without_query(text: str) -> str:
    """``text`` (a path or request line) with its query string replaced by ``<redacted>``: what log lines show."""
    q = text.find("?")
    if q < 0:
        return _TOKEN_IN_TEXT.sub(r"\1<redacted>", text)
    end = text.rfind(" HTTP/")
    return text[:q] + "?<redacted>" + (text[end:] if end > q else "")


def _split_host(value: str) -> tuple[str, int | None] | None:
    """``Host`` header -> (lower-case host, port or None); None if it is malformed."""
    value = value.strip()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        host, _, port = value.partition(":")
    if not host or (port and not port.isdigit()) or len(port) > 5:
        return None
    return host.lower().rstrip("."), int(port) if port else None


def _raw(header_value: str) -> bytes:
    return header_value.encode("latin-1", "replace")


def _handler(panels: Panels, token: str | None, on_request: Callable[[], None], port: int, own_hosts: set[str],
             allowed_hosts: set[str], tls: bool) -> type[BaseHTTPRequestHandler]:
    """The request handler of a dashboard bound to ``port``: ``own_hosts`` are the names it answers for with that
    port, ``allowed_hosts`` those it answers for with any port (``*``: any host)."""
    session = hmac.new(token.encode(), b"stepwire dashboard session", hashlib.sha256).hexdigest() if token else ""
    cookie_name = f"stepwire_session_{port}"  # cookies ignore ports: dashboards on one host must not share one
    default_port = 443 if tls else 80
    static_files = {p.name for p in STATIC.iterdir() if p.is_file()} | {"plotly.min.js"}

    class Handler(BaseHTTPRequestHandler):
        server_version = "stepwire-dashboard"
        sys_version = ""
        timeout = REQUEST_TIMEOUT_S

        def version_string(self) -> str:
            return self.server_version

        # -- logging: never a query string, so never a token ------------------------------------------------
        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), self._scrub(format % args))

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            log.debug("%s \"%s\" %s", self.address_string(), without_query(self.requestline), code)

        def log_error(self, format: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), self._scrub(format % args))

        def _scrub(self, text: str) -> str:
            line = getattr(self, "requestline", "")
            if line:
                text = text.replace(repr(line), repr(without_query(line))).replace(line, without_query(line))
            return without_query(text) if "token" in text.lower() else text

        # -- answers -------------------------------------------------------------------------------------------
        def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in {**SECURITY_HEADERS, **(headers or {})}.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _blob(self, query: dict[str, list[str]]) -> None:
            """A media record's content, streamed: typed by the stored record, sandboxed, never sniffed."""
            entry, chunks = panels.media_blob(one_param(query, "run"), one_param(query, "sha"),
                                              query.get("name", [""])[-1] or None)
            self.send_response(200)
            self.send_header("Content-Type", entry.mime)
            self.send_header("Content-Length", str(entry.size))
            for k, v in {**SECURITY_HEADERS, **BLOB_HEADERS}.items():
                self.send_header(k, v)
            self.end_headers()
            sent = 0
            try:
                for chunk in chunks:
                    chunk = chunk[:entry.size - sent]
                    self.wfile.write(chunk)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                raise
            except Exception:  # the headers are sent: all that is left is to cut the answer short
                log.exception("reading media %s (%s) failed", entry.sha256, entry.name)
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
            if sent != entry.size:  # the client must not take a short answer as whole
                log.warning("media %s (%s): %d bytes sent of %d", entry.sha256, entry.name, sent, entry.size)
                self.close_connection = True

        def _plotly(self) -> None:
            """The Plotly.js bundle from memory: 304 when the client holds this version, else cached for long."""
            data, etag = PLOTLY_BUNDLE.get()
            headers = {"ETag": etag, "Cache-Control": BUNDLE_CACHE}
            if etag_matches(self.headers.get("If-None-Match"), etag):
                self.send_response(HTTPStatus.NOT_MODIFIED)
                for k, v in {**SECURITY_HEADERS, **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                return
            self._send(200, data, "text/javascript", headers)

        def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
            self._send(status, encode_json(obj), "application/json", headers)

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """Errors found while reading the request (too long, malformed, unknown method): JSON too."""
            if code == HTTPStatus.NOT_IMPLEMENTED:  # an unknown method
                code = HTTPStatus.METHOD_NOT_ALLOWED
            elif code == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED:  # the client's fault: a 4xx like any other
                code = HTTPStatus.BAD_REQUEST
            if self.request_version in ("", "HTTP/0.9"):  # a malformed request line: answer with headers anyway
                self.request_version = "HTTP/1.0"
            text = self._scrub(message or HTTPStatus(code).phrase)
            self.log_error("refused a request: %d %s", code, text)
            self.close_connection = True
            headers = {"Connection": "close"}
            if code == HTTPStatus.METHOD_NOT_ALLOWED:
                headers["Allow"] = "GET"
            self._json(code, {"error": text}, headers)

        def parse_request(self) -> bool:
            if not super().parse_request():
                return False
            if self.request_version == "HTTP/0.9":
                self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 requests are not served")
                return False
            return True

        def _refuse(self, status: int, message: str) -> None:
            log.info("%s refused %s: %d %s", self.address_string(), without_query(self.path), status, message)
            self._json(status, {"error": message})

        def do_POST(self) -> None:
            self.send_error(HTTPStatus.METHOD_NOT_ALLOWED, "the dashboard answers GET only")

        do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_POST

        # -- checks --------------------------------------------------------------------------------------------
        def _host_allowed(self) -> str | None:
            """None if the Host header names this dashboard, else why not."""
            values = self.headers.get_all("Host") or []
            if len(values) != 1:
                return "exactly one Host header is required"
            if "*" in allowed_hosts:
                return None
            parsed = _split_host(values[0])
            if parsed is None:
                return "malformed Host header"
            host, given_port = parsed
            if host in allowed_hosts:
                return None
            if host in own_hosts and (given_port if given_port is not None else default_port) == port:
                return None
            return (f"this dashboard does not answer for Host {values[0][:100]!r} (DNS rebinding?); allow it with "
                    f"${ALLOWED_HOSTS_ENV}")

        def _authorised(self, query: dict[str, list[str]], page: bool) -> bool | None:
            """True if the request carries the token; None if it came as ``?token=`` on the page (set the cookie
            and redirect). Compared in constant time; header values as the bytes sent (http.client reads them as
            Latin-1)."""
            if not token:
                return True
            given = query.get("token", [""])[-1]
            if page and given and hmac.compare_digest(given.encode(), token.encode()):
                return None
            scheme, _, bearer = self.headers.get("Authorization", "").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(_raw(bearer.strip()), token.encode()):
                return True
            for part in self.headers.get("Cookie", "").split(";"):
                key, _, value = part.strip().partition("=")
                if key == cookie_name and hmac.compare_digest(_raw(value), session.encode()):
                    return True
            return False

        # -- GET -----------------------------------------------------------------------------------------------
        def do_GET(self) -> None:
            on_request()
            try:
                self._get()
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                self.close_connection = True

        def _get(self) -> None:
            why = self._host_allowed()
            if why is not None:
                self._refuse(HTTPStatus.MISDIRECTED_REQUEST, why)
                return
            url = urlsplit(self.path)
            path = url.path
            query = parse_qs(url.query)
            ok = self._authorised(query, path in PAGES)
            if ok is False:
                self._refuse(HTTPStatus.UNAUTHORIZED, "this dashboard needs its token: open /?token=... or send "
                                                      "'Authorization: Bearer TOKEN'")
                return
            if ok is None:  # the token in the address: set the cookie, and send the browser to a clean address
                flags = "; Secure" if tls else ""
                cookie = f"{cookie_name}={session}; HttpOnly; SameSite=Strict; Path=/{flags}"
                self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": "/", "Set-Cookie": cookie})
                return
            try:
                if path in PAGES:
                    self._send(200, page(), "text/html; charset=utf-8")
                elif path.startswith("/static/"):
                    name = path[len("/static/"):]
                    if name not in static_files:
                        raise PanelError(f"nothing at {path[:200]}", status=404)
                    if name == "plotly.min.js":
                        self._plotly()
                        return
                    data = (STATIC / name).read_bytes()
                    kind = "text/javascript" if name.endswith(".js") else mimetypes.guess_type(name)[0]
                    self._send(200, data, kind or "application/octet-stream")
                elif path == "/api/media/blob":
                    self._blob(query)
                elif path.startswith("/api/"):
                    self._json(200, answer(panels, path[5:], query))
                else:
                    self._json(HTTPStatus.NOT_FOUND, {"error": f"nothing at {path[:200]}"})
            except (PanelError, CompareError) as exc:
                self._json(exc.status, {"error": str(exc)})
            except KeyError as exc:
                self._json(HTTPStatus.NOT_FOUND, {"error": str(exc.args[0]) if exc.args else "not found"})
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                raise
            except Exception as exc:  # a store or Query-service failure: say so, keep serving
                status = failure_status(exc)
                if status is None:
                    log.exception("dashboard request %s failed", without_query(self.path))
                else:
                    log.warning("dashboard request %s: the store cannot answer: %s", without_query(self.path), exc)
                self._json(status or HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}: {exc}"})

    return Handler


def _allowed_hosts(given: Sequence[str] | None) -> set[str]:
    names = given if given is not None else os.environ.get(ALLOWED_HOSTS_ENV, "").split(",")
    out = set()
    for name in names:
        name = name.strip().lower().rstrip(".")
        if name.startswith("[") and name.endswith("]"):
            name = name[1:-1]
        if name:
            out.add(name)
    return out


class Dashboard:
    """The dashboard served over HTTP at ``listen`` (``host:port``; port 0 picks one) from a ``Reader``.

    Like the collector, it refuses a non-loopback address without a ``token`` unless ``insecure``.
    ``on_request`` is called for every request (the collector counts them as activity). ``allowed_hosts``: host
    names it answers for besides its own address and the loopback names (default ``$STEPWIRE_HTTP_ALLOWED_HOSTS``,
    comma-separated; ``*`` for any). ``tls_cert``/``tls_key`` (PEM files): serve HTTPS, the cookie then ``Secure``.
    """

    def __init__(self, reader: Reader, listen: str = "127.0.0.1:0", token: str | None = None,
                 insecure: bool = False, on_request: Callable[[], None] = lambda: None,
                 allowed_hosts: Sequence[str] | None = None, tls_cert: str | os.PathLike[str] | None = None,
                 tls_key: str | os.PathLike[str] | None = None) -> None:
        if not is_loopback(listen) and not token and not insecure:
            raise PermissionError(f"refusing to serve the dashboard on {listen} (not loopback) without a token")
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("TLS needs both a certificate and its key")
        tls = None
        if tls_cert is not None and tls_key is not None:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(tls_cert, tls_key)
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        self.httpd = ConnectionServer((host or "127.0.0.1", int(port)), tls, MAX_CONNECTIONS, REQUEST_TIMEOUT_S)
        bound_host, bound_port = self.httpd.server_address[:2]
        bound = bound_host if isinstance(bound_host, str) else bound_host.decode()
        shown = host or bound
        own = {"localhost", "127.0.0.1", "::1", shown.lower(), bound.lower()}
        self.httpd.RequestHandlerClass = _handler(Panels(reader), token, on_request, bound_port, own,
                                                  _allowed_hosts(allowed_hosts), tls is not None)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://{f'[{shown}]' if ':' in shown else shown}:{bound_port}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="stepwire-dashboard", daemon=True)

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()
        log.info("dashboard at %s", self.url)

    def stop(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


def url_with_token(url: str, token: str | None) -> str:
    """The address that opens the dashboard at ``url`` with ``token`` (it sets the cookie, then redirects)."""
    return f"{url}?token={quote(token, safe='')}" if token else url
