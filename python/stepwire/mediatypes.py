"""Media records (images, audio, video, HTML, Plotly figures, tables): the kinds and mime types allowed, the
limits, the content checks the collector makes, and how a stored table reads back. Shared by the client, the
collector and the readers (Pillow and DuckDB imported only where an image is checked or a table read)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from stepwire.names import check_name

if TYPE_CHECKING:
    from stepwire.store.base import MediaEntry

MAX_MEDIA_BYTES = 64 << 20
"""The largest media record, encoded (a PNG, a WAV, a Parquet table, ...): larger ones are refused."""

MAX_IMAGE_PIXELS = 1 << 26
"""The most pixels an image may have (67 M, e.g. 8192 x 8192): checked by the client before encoding and by the
collector from the image's header (a small PNG declaring a huge size is refused: it could not be decoded)."""

FULL_DECODE_PIXELS = 1 << 22
"""Images of at most this many pixels (4 M) are decoded whole by the collector's check; larger ones only have their
structure and checksums verified (decoding them would take the collector's memory)."""

MAX_CAPTION_BYTES = 4096
"""The longest caption, in UTF-8 bytes."""

PLOTLY_MIME = "application/vnd.plotly.v1+json"
PARQUET_MIME = "application/vnd.apache.parquet"

MIMES: dict[str, tuple[str, ...]] = {
    "image": ("image/png", "image/jpeg", "image/gif", "image/webp"),
    "audio": ("audio/wav", "audio/mpeg", "audio/ogg", "audio/flac"),
    "video": ("video/mp4", "video/webm", "image/gif"),
    "html": ("text/html",),
    "plotly": (PLOTLY_MIME,),
    "table": (PARQUET_MIME,),
}
"""Each kind and the mime types it may have: anything else is refused by client and collector alike."""

KINDS = tuple(MIMES)

_PIL_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}


def sniff_mime(head: bytes) -> str | None:
    """The mime type the first bytes of some content announce (None when none of the allowed ones)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head[4:8] == b"ftyp":
        return "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    if head.startswith(b"PAR1"):
        return PARQUET_MIME
    return None


def check_info(kind: str, mime: str, caption: str) -> str:
    """``kind``; ``ValueError`` unless ``kind`` and ``mime`` are an allowed pair and ``caption`` within its bound."""
    if kind not in MIMES:
        raise ValueError(f"media kind must be one of {', '.join(KINDS)}, got {kind!r:.80}")
    if mime not in MIMES[kind]:
        raise ValueError(f"a {kind} must have one of the mime types {', '.join(MIMES[kind])}, got {mime!r:.80}")
    if len(caption.encode("utf-8", "surrogatepass")) > MAX_CAPTION_BYTES:
        raise ValueError(f"a caption holds at most {MAX_CAPTION_BYTES} UTF-8 bytes")
    return kind


def check_entry(entry: MediaEntry) -> None:
    """``ValueError`` unless a media record a store is given has a valid name, a step >= 0, an allowed kind and
    mime type and a caption within its bound (its content is checked apart, by ``check_content``)."""
    check_name(entry.name)
    check_info(entry.kind, entry.mime, entry.caption)
    if entry.step < 0:
        raise ValueError(f"step must be >= 0, got {entry.step}")


def check_content(kind: str, mime: str, path: Path) -> tuple[int, int]:
    """Check that the file at ``path`` is what ``kind``/``mime`` say; returns (width, height) for images, else
    (0, 0). ``ValueError`` says what is wrong: a size beyond ``MAX_MEDIA_BYTES``, content whose first bytes
    announce another type, an image that does not decode (or would be larger than ``MAX_IMAGE_PIXELS``), a
    Plotly figure that is not a JSON object, HTML that is not UTF-8, a table that is not Parquet."""
    size = path.stat().st_size
    if size > MAX_MEDIA_BYTES:
        raise ValueError(f"a media record holds at most {MAX_MEDIA_BYTES >> 20} MiB, got {size} bytes")
    with open(path, "rb") as f:
        head = f.read(16)
    if kind in ("image", "video") and mime.startswith("image/"):
        return _check_image(mime, path, head)
    if kind in ("audio", "video"):
        if sniff_mime(head) != mime:
            raise ValueError(f"the content is not {mime} (its first bytes say {sniff_mime(head) or 'unknown'})")
        return 0, 0
    if kind == "table":
        with open(path, "rb") as f:
            f.seek(max(0, size - 4))
            tail = f.read(4)
        if size < 12 or not head.startswith(b"PAR1") or tail != b"PAR1":
            raise ValueError("a table must be a Parquet file")
        return 0, 0
    text = path.read_bytes()
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{kind} content must be UTF-8: {exc}") from None
    if kind == "plotly":
        try:
            figure = json.loads(decoded)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ValueError(f"a Plotly figure must be JSON: {exc!s:.200}") from None
        if not isinstance(figure, dict) or not isinstance(figure.get("data", []), list):
            raise ValueError('a Plotly figure must be a JSON object whose "data" (if any) is a list')
    return 0, 0


def _check_image(mime: str, path: Path, head: bytes) -> tuple[int, int]:
    from PIL import Image

    if sniff_mime(head) != mime:
        raise ValueError(f"the content is not {mime} (its first bytes say {sniff_mime(head) or 'unknown'})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=[_PIL_FORMATS[mime]]) as im:
                width, height = im.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ValueError(f"an image has at most {MAX_IMAGE_PIXELS} pixels, this one declares "
                                     f"{width} x {height}")
                im.verify()  # structure and checksums, without decoding every pixel
            if width * height <= FULL_DECODE_PIXELS:
                with Image.open(path, formats=[_PIL_FORMATS[mime]]) as im:
                    im.load()  # every pixel: a stream that does not inflate is refused too
    except ValueError:
        raise
    except Exception as exc:  # Pillow raises many kinds (SyntaxError, OSError, struct.error, bomb errors)
        raise ValueError(f"the image does not decode as {mime}: {type(exc).__name__}: {exc!s:.200}") from None
    return width, height


def decode_parquet(content: bytes) -> Any:
    """A Parquet table as a pandas DataFrame when pandas is installed, else a dict of numpy columns (missing
    values as NaN in number columns, None in others)."""
    import tempfile

    import duckdb

    with tempfile.TemporaryDirectory(prefix="stepwire-table-") as tmp, duckdb.connect() as con:
        path = Path(tmp) / "t.parquet"
        path.write_bytes(content)
        rel = con.execute("SELECT * FROM read_parquet(?)", [str(path)])
        try:
            import pandas  # noqa: F401
        except ImportError:
            raw = rel.fetchnumpy()
            return {k: _unmask(v) for k, v in raw.items()}
        return rel.df()


def _unmask(v: Any) -> npt.NDArray[Any]:
    if not isinstance(v, np.ma.MaskedArray):
        return np.asarray(v)
    if not v.mask.any():
        return np.asarray(v.data)
    if v.dtype.kind == "f":
        return v.filled(np.nan)
    out = v.data.astype(object)
    out[v.mask] = None
    return out
