"""The Plotly.js bundle the dashboard serves (from the ``plotly`` Python package): read once and kept in memory
with its ETag, and the page that loads it at an address naming that version, so that browsers may cache it for a
year and revalidate it with ``If-None-Match``."""

from __future__ import annotations

import hashlib
import threading
from importlib import resources
from pathlib import Path

STATIC = resources.files("stepwire.dashboard") / "static"


def plotly_js() -> Path:
    """The Plotly.js bundle shipped inside the ``plotly`` Python package."""
    try:
        import plotly
    except ImportError as exc:
        raise RuntimeError("the dashboard draws with Plotly.js from the plotly package: pip install plotly") from exc
    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


class _Bundle:
    """Plotly.js read once (on first use), with its ETag: the 4.8 MB bundle is not read from disk per request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: tuple[bytes, str] | None = None

    def get(self) -> tuple[bytes, str]:
        """The bundle's bytes and its (strong) ETag."""
        with self._lock:
            if self._data is None:
                data = plotly_js().read_bytes()
                self._data = (data, f'"{hashlib.sha256(data).hexdigest()[:32]}"')
            return self._data


PLOTLY_BUNDLE = _Bundle()
BUNDLE_CACHE = "public, max-age=31536000, immutable"


def page() -> bytes:
    """The page, loading Plotly.js at an address that names its version (so that a year's caching is safe)."""
    tag = PLOTLY_BUNDLE.get()[1].strip('"')
    return (STATIC / "index.html").read_bytes().replace(b'src="/static/plotly.min.js"',
                                                          f'src="/static/plotly.min.js?v={tag}"'.encode())


def etag_matches(header: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak or strong) or is ``*``."""
    if not header:
        return False
    for part in header.split(","):
        tag = part.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False
