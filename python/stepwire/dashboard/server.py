"""The dashboard's HTTP server: the page, its static files, Plotly.js from the ``plotly`` package, and the JSON API.

Routes (all ``GET``; JSON answers, errors as ``{"error": ...}`` with 400/401/404):
  ``/``                                   the page
  ``/static/NAME``                        the page's own files; ``plotly.min.js`` comes from the plotly package
  ``/api/runs[?project=P]``               runs table
  ``/api/series?run=ID``                  the run's series
  ``/api/scalars?run=ID&name=N[&x=step|wall_time][&points=1000]``
  ``/api/heatmap?run=ID&name=N[&steps=200][&rows=120][&rank=R]``
  ``/api/histogram?run=ID&name=N[&step=S][&rank=R][&bins=64]``
  ``/api/skew?run=ID``
With a token, every request needs it: ``Authorization: Bearer TOKEN``, or the cookie set by opening
``/?token=TOKEN`` once.
"""

from __future__ import annotations

import hmac
import json
import logging
import mimetypes
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from stepwire.dashboard.panels import PanelError, Panels
from stepwire.store.base import Reader
from stepwire.transport import is_loopback

log = logging.getLogger("stepwire.dashboard")

STATIC = resources.files("stepwire.dashboard") / "static"
COOKIE = "stepwire_token"


def plotly_js() -> Path:
    """The Plotly.js bundle shipped inside the ``plotly`` Python package."""
    try:
        import plotly
    except ImportError as exc:
        raise RuntimeError("the dashboard draws with Plotly.js from the plotly package: pip install plotly") from exc
    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def _one(query: dict[str, list[str]], key: str, default: str | None = None) -> str:
    values = query.get(key)
    if not values:
        if default is None:
            raise PanelError(f"missing parameter {key!r}")
        return default
    return values[-1]


def _int(query: dict[str, list[str]], key: str, default: int | None = None) -> int | None:
    raw = query.get(key)
    if not raw or raw[-1] == "":
        return default
    try:
        return int(raw[-1])
    except ValueError:
        raise PanelError(f"{key} must be an integer, got {raw[-1]!r}") from None


def _api(panels: Panels, route: str, q: dict[str, list[str]]) -> Any:
    if route == "runs":
        return panels.runs(q.get("project", [None])[-1])
    if route == "series":
        return panels.series(_one(q, "run"))
    if route == "scalars":
        return panels.scalars(_one(q, "run"), _one(q, "name"), _one(q, "x", "step"), _int(q, "points", 1000) or 0)
    if route == "heatmap":
        return panels.heatmap(_one(q, "run"), _one(q, "name"), _int(q, "steps", 200) or 0,
                              _int(q, "rows", 120) or 0, _int(q, "rank"))
    if route == "histogram":
        return panels.histogram(_one(q, "run"), _one(q, "name"), _int(q, "step"), _int(q, "rank"),
                                _int(q, "bins", 64) or 0)
    if route == "skew":
        return panels.skew(_one(q, "run"))
    raise PanelError(f"no API route {route!r}", status=404)


def _handler(panels: Panels, token: str | None, on_request: Callable[[], None]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "stepwire-dashboard"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

        def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: Any) -> None:
            self._send(status, json.dumps(obj, allow_nan=False).encode(), "application/json")

        def _authorised(self, query: dict[str, list[str]]) -> tuple[bool, dict[str, str]]:
            if not token:
                return True, {}
            given = query.get("token", [""])[-1]
            if given and hmac.compare_digest(given.encode(), token.encode()):
                return True, {"Set-Cookie": f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"}
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].encode(), token.encode()):
                return True, {}
            for part in self.headers.get("Cookie", "").split(";"):
                key, _, value = part.strip().partition("=")
                if key == COOKIE and hmac.compare_digest(value.encode(), token.encode()):
                    return True, {}
            return False, {}

        def do_GET(self) -> None:
            on_request()
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            ok, headers = self._authorised(query)
            if not ok:
                self._json(HTTPStatus.UNAUTHORIZED, {"error": "this dashboard needs its token: open /?token=..."})
                return
            path = url.path
            try:
                if path in ("/", "/index.html"):
                    self._send(200, (STATIC / "index.html").read_bytes(), "text/html; charset=utf-8", headers)
                elif path == "/static/plotly.min.js":
                    self._send(200, plotly_js().read_bytes(), "text/javascript")
                elif path.startswith("/static/") and "/" not in path[8:] and (STATIC / path[8:]).is_file():
                    kind = mimetypes.guess_type(path[8:])[0] or "application/octet-stream"
                    kind = "text/javascript" if path.endswith(".js") else kind
                    self._send(200, (STATIC / path[8:]).read_bytes(), kind)
                elif path.startswith("/api/"):
                    self._json(200, _api(panels, path[5:], query))
                else:
                    self._json(HTTPStatus.NOT_FOUND, {"error": f"nothing at {path}"})
            except PanelError as exc:
                self._json(exc.status, {"error": str(exc)})
            except KeyError as exc:
                self._json(HTTPStatus.NOT_FOUND, {"error": str(exc.args[0]) if exc.args else "not found"})
            except (BrokenPipeError, ConnectionResetError):
                pass
            except Exception as exc:  # a store or Query-service failure: say so, keep serving
                log.exception("dashboard request %s failed", self.path)
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}: {exc}"})

    return Handler


class Dashboard:
    """The dashboard served over HTTP at ``listen`` (``host:port``; port 0 picks one) from a ``Reader``.

    Like the collector, it refuses a non-loopback address without a ``token`` unless ``insecure``.
    ``on_request`` is called for every request (the collector counts them as activity).
    """

    def __init__(self, reader: Reader, listen: str = "127.0.0.1:0", token: str | None = None,
                 insecure: bool = False, on_request: Callable[[], None] = lambda: None) -> None:
        if not is_loopback(listen) and not token and not insecure:
            raise PermissionError(f"refusing to serve the dashboard on {listen} (not loopback) without a token")
        host, _, port = listen.rpartition(":")
        self.httpd = ThreadingHTTPServer((host.strip("[]") or "127.0.0.1", int(port)),
                                         _handler(Panels(reader), token, on_request))
        self.httpd.daemon_threads = True
        bound_host, bound_port = self.httpd.server_address[:2]
        shown = host or (bound_host if isinstance(bound_host, str) else bound_host.decode())
        self.url = f"http://{shown}:{bound_port}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="stepwire-dashboard", daemon=True)

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()
        log.info("dashboard at %s", self.url)

    def stop(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()
