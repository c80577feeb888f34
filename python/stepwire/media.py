"""Media records on the client: images, audio, video, HTML, Plotly figures and tables.

A logging call checks what it is given and keeps a private copy (an array or a PIL image copied, a file hard
linked or copied, bytes referenced); converting and encoding (PNG, Parquet) happen on the run's media thread
(``MediaEncoder``), which writes each record to the run's staging directory and hands it to the sender thread as
an artifact upload carrying ``MediaInfo``. The collector checks it again (``stepwire.mediatypes``) and stores
its content once per sha256.

Images given as arrays (numpy, torch, anything ``numpy.asarray`` takes) are converted as follows:

- layout: 2-D is HW (grayscale); 3-D is HWC when the last dimension is 1, 3 or 4, else CHW when the first is;
  4-D is a batch of those (NHWC, else NCHW). One channel is grayscale, 3 RGB, 4 RGBA.
- values: uint8 as they are; bool as 0/255; other integers clipped to 0..255; floats clipped to [0, 1] (NaN as
  0), times 255 in float64, rounded to the nearest integer (half to even).
- a batch is one grid image by default (``grid_shape``: ceil(sqrt(N)) columns, ``GRID_PAD`` zero pixels between
  tiles), or with ``grid=False`` one image per item, named ``name/0``, ``name/1``, ...
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import os
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from stepwire import mediatypes, spool
from stepwire.mediatypes import MAX_IMAGE_PIXELS, MAX_MEDIA_BYTES, PARQUET_MIME, PLOTLY_MIME
from stepwire.names import check_name
from stepwire.tensors import is_tensor
from stepwire.v1 import ingest_pb2

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from stepwire.run import Run

log = logging.getLogger("stepwire.media")

MAX_MEDIA_ITEMS = 100_000
"""Media records one process may log in a run; the next call raises ``ValueError``."""

QUEUE_BYTES = 256 << 20
"""Bytes of copied arrays and given bytes waiting for the media thread; beyond that a logging call waits for room
(``policy="block"``, at most ``block_timeout``) or drops the record (``policy="drop"``), counted in
``run.stats()["media_dropped"]``. A single larger record goes through alone."""

MAX_TABLE_COLUMNS = 4096
GRID_PAD = 2
"""Zero pixels between the tiles of a batch shown as a grid."""
PNG_COMPRESS_LEVEL = 1
"""zlib level of the PNGs the media thread encodes: fast, about 10-20% larger than the default 6."""


# -- images: layout and values ------------------------------------------------------------------------------
def image_layout(shape: Sequence[int]) -> str:
    """The layout of an image array of ``shape``: "HW", "HWC" or "CHW", with a leading "N" for a batch
    (``ValueError`` for any other shape)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 2:
        layout = "HW"
    elif len(shape) == 3:
        layout = "HWC" if shape[-1] in (1, 3, 4) else "CHW" if shape[0] in (1, 3, 4) else ""
    elif len(shape) == 4:
        layout = "NHWC" if shape[-1] in (1, 3, 4) else "NCHW" if shape[1] in (1, 3, 4) else ""
    else:
        layout = ""
    if not layout:
        raise ValueError(f"an image array must be HW, HWC or CHW (1, 3 or 4 channels), or a batch NHWC/NCHW of "
                         f"them; got shape {shape}")
    if any(d == 0 for d in shape):
        raise ValueError(f"an image array must not be empty, got shape {shape}")
    return layout


def to_uint8(arr: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Values as uint8 pixels, by the rules in this module's docstring (any layout: values only)."""
    kind = arr.dtype.kind
    if arr.dtype == np.uint8:
        return arr
    if kind == "b":
        out: npt.NDArray[np.uint8] = arr.astype(np.uint8) * np.uint8(255)
        return out
    if kind in "iu":
        out = np.clip(arr, 0, 255).astype(np.uint8)
        return out
    if kind == "f":
        scaled = np.rint(np.clip(np.nan_to_num(arr.astype(np.float64), nan=0.0), 0.0, 1.0) * 255.0)
        out = scaled.astype(np.uint8)
        return out
    raise TypeError(f"image values must be numbers or booleans, got dtype {arr.dtype}")


def to_hwc(arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """An image or batch as HWC (or NHWC); HW gets a channel axis of 1."""
    layout = image_layout(arr.shape)
    if layout == "HW":
        return arr[:, :, None]
    if layout == "CHW":
        return np.moveaxis(arr, 0, -1)
    if layout == "NCHW":
        return np.moveaxis(arr, 1, -1)
    return arr


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, columns) of the grid a batch of ``n`` images is shown as."""
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def make_grid(batch: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A batch NHWC as one HWC image: tiles left to right, top to bottom, ``GRID_PAD`` zeros between them."""
    n, h, w, c = batch.shape
    rows, cols = grid_shape(n)
    out = np.zeros((rows * h + (rows - 1) * GRID_PAD, cols * w + (cols - 1) * GRID_PAD, c), dtype=batch.dtype)
    for i in range(n):
        r, col = divmod(i, cols)
        out[r * (h + GRID_PAD):r * (h + GRID_PAD) + h, col * (w + GRID_PAD):col * (w + GRID_PAD) + w] = batch[i]
    return out


def image_pixels(arr: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """A single image array (HW, HWC or CHW) as the uint8 pixels stored: HW for one channel, else HWC."""
    hwc = to_uint8(to_hwc(arr))
    return hwc[:, :, 0] if hwc.shape[-1] == 1 else hwc


def encode_png(pixels: npt.NDArray[np.uint8]) -> bytes:
    """PNG of uint8 pixels (HW, HWC with 3 or 4 channels)."""
    from PIL import Image as PIL

    mode = "L" if pixels.ndim == 2 else {3: "RGB", 4: "RGBA"}[pixels.shape[-1]]
    buf = io.BytesIO()
    PIL.fromarray(np.ascontiguousarray(pixels), mode=mode).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def _array_copy(name: str, value: object) -> npt.NDArray[Any]:
    """A private copy of an image array (torch tensors on any device read back to the host)."""
    if is_tensor(value):
        t = value.detach()
        if t.dtype.is_complex:
            raise TypeError(f"image values for {name!r} must be real, got {t.dtype}")
        if t.is_floating_point() and t.element_size() < 4:
            t = t.float()  # bfloat16 has no numpy counterpart
        return np.array(t.cpu().numpy(), copy=True)  # a device tensor is read back here (a synchronisation)
    try:
        arr = np.array(value, copy=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"image for {name!r} is not an array, a PIL image, a path or bytes: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"image values for {name!r} must be numbers or booleans, got dtype {arr.dtype}")
    return arr


# -- what the media thread works on ------------------------------------------------------------------------
@dataclass
class Encoded:
    """One record ready for the sender: ``payload`` is bytes, or a staged file the record takes over."""

    name: str
    kind: str
    mime: str
    payload: bytes | Path
    checked: bool  # encoded by stepwire (else the content is checked like the collector does, first)


@dataclass
class Job:
    """A logging call's work for the media thread: ``make`` converts and encodes."""

    step: int
    wall_time: float
    caption: str
    nbytes: int
    make: Callable[[], list[Encoded]]


class Image:
    """An image for ``Run.log({...})`` (or ``log_image``): an array (HW, HWC, CHW; uint8 or float in [0, 1]), a
    PIL image, a path or encoded bytes (PNG/JPEG/GIF/WebP), with an optional caption. The values are copied
    here: later changes to ``data`` do not reach what is logged."""

    def __init__(self, data: Any, caption: str | None = None) -> None:
        self.caption = caption or ""
        mediatypes.check_info("image", "image/png", self.caption)
        self._make, self._nbytes = _prepare_image("image", data, grid=True, staging=None)

    def __repr__(self) -> str:
        return f"<stepwire.Image caption={self.caption!r:.40}>"


def _prepare_image(name: str, image: Any, grid: bool, staging: Path | None
                   ) -> tuple[Callable[[str], list[Encoded]], int]:
    """Check ``image`` and keep a private copy (a file: linked or copied into ``staging``, else read); returns what
    the media thread runs (given the record's name) and the bytes it holds meanwhile."""
    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
        make_file, nbytes = _prepare_encoded(name, image, "image", staging)
        return make_file, nbytes
    if _is_pil(image):
        pil: PILImage = image.copy()
        if pil.width * pil.height > MAX_IMAGE_PIXELS:
            raise ValueError(f"image {name!r} has {pil.width} x {pil.height} pixels, more than {MAX_IMAGE_PIXELS}")

        def make_pil(n: str) -> list[Encoded]:
            img = pil if pil.mode in ("L", "RGB", "RGBA") else pil.convert("RGBA" if "A" in pil.getbands() else "RGB")
            buf = io.BytesIO()
            img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
            return [Encoded(n, "image", "image/png", buf.getvalue(), True)]

        return make_pil, pil.width * pil.height * len(pil.getbands())
    arr = _array_copy(name, image)
    layout = image_layout(arr.shape)
    if layout.startswith("N"):
        hwc_shape = to_hwc(np.empty((1, *arr.shape[1:]), np.uint8)).shape[1:]
        n, (rows, cols) = arr.shape[0], grid_shape(arr.shape[0])
        pixels = (rows * hwc_shape[0] + (rows - 1) * GRID_PAD) * (cols * hwc_shape[1] + (cols - 1) * GRID_PAD) \
            if grid else hwc_shape[0] * hwc_shape[1]
    else:
        n, pixels = 1, int(np.prod(arr.shape)) // (1 if layout == "HW" else arr.shape[layout.index("C")])
    if pixels > MAX_IMAGE_PIXELS:
        raise ValueError(f"image {name!r} would have {pixels} pixels, more than {MAX_IMAGE_PIXELS}")

    def make_array(n_: str) -> list[Encoded]:
        if not layout.startswith("N"):
            return [Encoded(n_, "image", "image/png", encode_png(image_pixels(arr)), True)]
        batch = to_uint8(to_hwc(arr))
        if grid:
            tiled = make_grid(batch)
            return [Encoded(n_, "image", "image/png", encode_png(tiled[:, :, 0] if tiled.shape[-1] == 1 else tiled),
                            True)]
        return [Encoded(f"{n_}/{i}", "image", "image/png",
                        encode_png(batch[i, :, :, 0] if batch.shape[-1] == 1 else batch[i]), True) for i in range(n)]

    return make_array, arr.nbytes


def _is_pil(value: object) -> bool:
    import sys

    pil = sys.modules.get("PIL.Image")
    return pil is not None and isinstance(value, getattr(pil, "Image", ()))  # the media thread may be importing it


def _read_head(data: bytes | Path) -> bytes:
    if isinstance(data, bytes):
        return data[:16]
    with open(data, "rb") as f:
        return f.read(16)


def _prepare_encoded(name: str, data: Any, kind: str | None, staging: Path | None
                     ) -> tuple[Callable[[str], list[Encoded]], int]:
    """Content given encoded (a path, bytes, or HTML text): its type is read from its first bytes (HTML from
    ``kind="html"``, a ``.html``/``.htm`` path, or text starting with "<"); a file is captured at the call (hard
    linked, else copied, into ``staging``; read, without one)."""
    payload: bytes | Path
    if isinstance(data, str) and data.lstrip().startswith("<"):
        payload, kind = data.encode("utf-8"), kind or "html"
    elif isinstance(data, (str, os.PathLike)):
        payload = Path(data)
        if not payload.is_file():
            raise FileNotFoundError(f"no file at {payload} (for {name!r})")
        if kind is None and payload.suffix.lower() in (".html", ".htm"):
            kind = "html"
    elif isinstance(data, (bytes, bytearray, memoryview)):
        payload = bytes(data)
    else:
        raise TypeError(f"media for {name!r} must be a path, bytes or HTML text, got {type(data).__name__}")
    size = len(payload) if isinstance(payload, bytes) else payload.stat().st_size
    if size > MAX_MEDIA_BYTES:
        raise ValueError(f"media {name!r} has {size} bytes, more than the limit of {MAX_MEDIA_BYTES >> 20} MiB")
    if kind == "html":
        mime = "text/html"
    else:
        sniffed = mediatypes.sniff_mime(_read_head(payload))
        if sniffed is None or sniffed == PARQUET_MIME:
            raise ValueError(f"media {name!r}: not a known type (allowed: {mediatypes.MIMES}); pass kind='html' "
                             "for HTML")
        if kind is None:
            kind = "image" if sniffed.startswith("image/") else sniffed.split("/")[0]
        if sniffed not in mediatypes.MIMES.get(kind, ()):
            raise ValueError(f"media {name!r} is {sniffed}, which a {kind} cannot be (allowed: "
                             f"{', '.join(mediatypes.MIMES.get(kind, ()))})")
        mime = sniffed
    mediatypes.check_info(kind, mime, "")
    if isinstance(payload, Path):  # captured now: the caller may change or delete the file after the call
        payload = _capture(payload, staging) if staging is not None else payload.read_bytes()
    final_kind = kind
    held = payload

    def make(n: str) -> list[Encoded]:
        return [Encoded(n, final_kind, mime, held, False)]

    return make, size if isinstance(payload, bytes) else 0


def _capture(source: Path, staging: Path) -> Path:
    """``source`` as it is now: hard linked, else copied, into ``staging`` (the run's spool staging directory)."""
    staging.mkdir(parents=True, exist_ok=True)
    staged = staging / uuid.uuid4().hex
    try:
        os.link(source, staged)
    except OSError:
        shutil.copyfile(source, staged)
    return staged


# -- plots and tables -----------------------------------------------------------------------------------------
def _json_default(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def plot_json(name: str, figure: Any) -> tuple[str, bytes]:
    """(kind, content) of a figure: a Plotly figure, its dict or JSON text as Plotly JSON; a matplotlib figure
    as a PNG image (rendered here, on the caller's thread: matplotlib is not thread-safe)."""
    if hasattr(figure, "savefig") and not hasattr(figure, "to_plotly_json"):
        buf = io.BytesIO()
        figure.savefig(buf, format="png")
        return "image", buf.getvalue()
    if hasattr(figure, "to_json") and hasattr(figure, "to_plotly_json"):
        text = figure.to_json()
    elif isinstance(figure, Mapping):
        try:
            text = json.dumps(figure, default=_json_default, allow_nan=True)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"figure {name!r} is not JSON: {exc}") from None
    elif isinstance(figure, (str, bytes)):
        text = figure.decode("utf-8") if isinstance(figure, bytes) else figure
    else:
        raise TypeError(f"figure {name!r} must be a Plotly figure, its dict or JSON, or a matplotlib figure; got "
                        f"{type(figure).__name__}")
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"figure {name!r} is not JSON: {exc}") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("data"), list):
        raise ValueError(f'figure {name!r} must be a JSON object with a "data" list (a Plotly figure)')
    return "plotly", text.encode("utf-8")


def table_columns(name: str, data: Any, columns: Sequence[str] | None = None) -> dict[str, npt.NDArray[Any]]:
    """A table as a dict of equally long column arrays (copies): a pandas DataFrame, a dict of columns, or rows
    (a list of sequences, with ``columns``; or a list of dicts)."""
    if hasattr(data, "columns") and hasattr(data, "to_dict") and hasattr(data, "__getitem__"):  # a DataFrame
        cols = {str(c): np.array(data[c].to_numpy(), copy=True) for c in data.columns}
    elif isinstance(data, Mapping):
        cols = {c: np.array(list(v) if not isinstance(v, np.ndarray) else v, copy=True) for c, v in data.items()}
    elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        rows = list(data)
        if rows and all(isinstance(r, Mapping) for r in rows):
            keys = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
            cols = {k: _column([r.get(k) for r in rows]) for k in keys}
        else:
            if columns is None:
                width = len(rows[0]) if rows else 0
                columns = [f"c{i}" for i in range(width)]
            columns = list(columns)
            for i, r in enumerate(rows):
                if len(r) != len(columns):
                    raise ValueError(f"table {name!r}: row {i} has {len(r)} cells, the table {len(columns)} columns")
            cols = {c: _column([r[j] for r in rows]) for j, c in enumerate(columns)}
    else:
        raise TypeError(f"table {name!r} must be a DataFrame, a dict of columns, a list of rows or a CSV path; got "
                        f"{type(data).__name__}")
    if not cols:
        raise ValueError(f"table {name!r} has no columns")
    if len(cols) > MAX_TABLE_COLUMNS:
        raise ValueError(f"table {name!r} has {len(cols)} columns, more than {MAX_TABLE_COLUMNS}")
    lengths = {len(v) for v in cols.values()}
    for c, v in cols.items():
        if not isinstance(c, str) or not c:
            raise ValueError(f"table {name!r}: column names must be non-empty strings, got {c!r:.80}")
        if v.ndim != 1:
            raise ValueError(f"table {name!r}: column {c!r} must be one-dimensional, got shape {v.shape}")
    if len(lengths) > 1:
        raise ValueError(f"table {name!r}: columns differ in length ({sorted(lengths)})")
    return cols


def _column(values: list[Any]) -> npt.NDArray[Any]:
    arr = np.array(values)
    if arr.ndim != 1:
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
    return arr


def _sql_column(v: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A column DuckDB reads as one type: numbers, booleans, strings, datetimes (missing cells: None, NaN, pandas'
    NA, as NULL in strings and booleans, NaN in mixed numbers); anything else as its str()."""
    if v.dtype.kind in "biufUMm":
        return v.astype(str).astype(object) if v.dtype.kind == "U" else v
    out = np.empty(len(v), dtype=object)
    values = [None if _missing(x) else x for x in v.tolist()]
    present = [x for x in values if x is not None]
    if all(isinstance(x, str) for x in present):
        out[:] = values
        return out
    if all(isinstance(x, bool) for x in present):
        out[:] = values
        return out
    if all(isinstance(x, (int, float)) for x in present):
        return np.array([np.nan if x is None else x for x in values], dtype=np.float64)
    out[:] = [None if x is None else str(x) for x in values]
    return out


def _missing(x: object) -> bool:
    """None, NaN, and pandas' NA/NaT: a missing cell (NULL in the table)."""
    return x is None or (isinstance(x, float) and x != x) or type(x).__name__ in ("NAType", "NaTType")


def encode_parquet(cols: Mapping[str, npt.NDArray[Any]] | Path) -> bytes:
    """A Parquet file of the columns (or of a CSV file, its types inferred by DuckDB)."""
    import tempfile

    import duckdb

    with tempfile.TemporaryDirectory(prefix="stepwire-table-") as tmp, duckdb.connect() as con:
        out = Path(tmp) / "t.parquet"
        target = "'" + str(out).replace("'", "''") + "'"
        if isinstance(cols, Path):
            con.execute(f"COPY (SELECT * FROM read_csv_auto(?)) TO {target} (FORMAT parquet)", [str(cols)])
        else:
            con.register("t", {k: _sql_column(v) for k, v in cols.items()})
            con.execute(f"COPY (SELECT * FROM t) TO {target} (FORMAT parquet)")
        return out.read_bytes()


# -- the media thread ---------------------------------------------------------------------------------------
class MediaEncoder:
    """The run's media thread: runs each call's ``Job`` (conversion, encoding), stages the result and hands it to
    the sender. Holds at most ``QUEUE_BYTES`` of copies; under ``drop`` a call that finds it full drops its
    record (counted), else it waits up to ``block_timeout`` for room, then drops and counts."""

    def __init__(self, run: Run, drop: bool, block_timeout: float) -> None:
        self._run = run
        self._drop = drop
        self._block_timeout = block_timeout
        self._cv = threading.Condition()
        self._jobs: deque[Job] = deque()
        self._held = 0
        self._busy = False
        self._closed = False
        self.logged = 0    # records accepted by logging calls
        self.encoded = 0   # records handed to the sender
        self.dropped = 0   # records dropped: the queue stayed full
        self.errors = 0    # records that failed to encode, or whose content was not what it claimed
        self.first_error = ""
        self._thread = threading.Thread(target=self._loop, name="stepwire-media", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> bool:
        """Queue ``job``; False (and counted in ``dropped``) if there is no room within the policy."""
        with self._cv:
            if self.logged >= MAX_MEDIA_ITEMS:
                raise ValueError(f"a run holds at most {MAX_MEDIA_ITEMS} media records per process")
            deadline = time.monotonic() + (0.0 if self._drop else self._block_timeout)
            while self._held and self._held + job.nbytes > QUEUE_BYTES and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.dropped += 1
                    if self.dropped == 1:
                        log.warning("stepwire: media records are being dropped: more than %d MiB of images wait "
                                    "for the media thread (counted in run.stats()['media_dropped'])",
                                    QUEUE_BYTES >> 20)
                    return False
                self._cv.wait(min(left, 0.1))
            self.logged += 1
            self._held += job.nbytes
            self._jobs.append(job)
            self._cv.notify_all()
            return True

    def join(self) -> None:
        """Wait until every queued record is handed to the sender (or failed)."""
        with self._cv:
            while self._jobs or self._busy:
                self._cv.wait(0.1)

    def close(self) -> None:
        """Finish the queued records, then stop the thread."""
        self.join()
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join()

    def stats(self) -> dict[str, Any]:
        """The ``media_*`` counts of ``Run.stats()``."""
        with self._cv:
            return {"media_logged": self.logged, "media_sent": self.encoded, "media_dropped": self.dropped,
                    "media_errors": self.errors, "media_error": self.first_error, "media_held_bytes": self._held}

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._closed:
                    self._cv.wait()
                if not self._jobs:
                    return
                job = self._jobs.popleft()
                self._busy = True
            try:
                self._handle(job)
            except Exception as exc:
                self._error(f"{type(exc).__name__}: {exc}")
            finally:
                with self._cv:
                    self._busy = False
                    self._held -= job.nbytes
                    self._cv.notify_all()

    def _error(self, message: str) -> None:
        with self._cv:
            self.errors += 1
            first = self.errors == 1
            if first:
                self.first_error = message
        if first:
            log.warning("stepwire: a media record could not be logged: %s (later ones are counted in "
                        "run.stats()['media_errors'])", message)

    def _handle(self, job: Job) -> None:
        run = self._run
        for item in job.make():
            staged = run._staging / uuid.uuid4().hex
            try:
                if isinstance(item.payload, bytes):
                    run._staging.mkdir(parents=True, exist_ok=True)
                    staged.write_bytes(item.payload)
                else:
                    os.replace(item.payload, staged)
                width, height = (_png_size(item.payload) if item.checked and isinstance(item.payload, bytes)
                                 else mediatypes.check_content(item.kind, item.mime, staged))
            except (OSError, ValueError) as exc:
                staged.unlink(missing_ok=True)
                self._error(f"{item.name!r} at step {job.step}: {exc}")
                continue
            chunk = ingest_pb2.ArtifactChunk(
                run_id=run.id, rank=run.rank, name=item.name, step=job.step, wall_time=job.wall_time,
                source_path=str(staged), media=ingest_pb2.MediaInfo(kind=item.kind, mime=item.mime,
                                                                    caption=job.caption, width=width, height=height))
            run._sender.submit(spool.ARTIFACT, chunk)
            with self._cv:
                self.encoded += 1


def _png_size(content: bytes) -> tuple[int, int]:
    """(width, height) of a PNG stepwire encoded (read from its header); (0, 0) for other content."""
    if content.startswith(b"\x89PNG\r\n\x1a\n") and len(content) >= 24:
        return int.from_bytes(content[16:20], "big"), int.from_bytes(content[20:24], "big")
    return 0, 0


IDLE_STATS: dict[str, Any] = {"media_logged": 0, "media_sent": 0, "media_dropped": 0, "media_errors": 0,
                              "media_error": "", "media_held_bytes": 0}
"""``MediaEncoder.stats()`` of a run that logged no media."""


# -- the calls behind Run's methods ----------------------------------------------------------------------------
def _submit(run: Run, step: int | None, caption: str | None, nbytes: int,
            make: Callable[[], list[Encoded]]) -> None:
    caption = caption or ""
    mediatypes.check_info("image", "image/png", caption)  # the caption's bound
    resolved = run._take_step(step)
    run._media_encoder().submit(Job(resolved, time.time(), caption, nbytes, make))


def log_image(run: Run, name: str, image: Any, step: int | None = None, caption: str | None = None,
              grid: bool = True) -> None:
    """``Run.log_image``."""
    check_name(name)
    if not run.active:
        return  # a rank that does not log: a cheap no-op
    if isinstance(image, Image):
        make, nbytes, caption = image._make, image._nbytes, caption or image.caption
    else:
        make, nbytes = _prepare_image(name, image, grid, run._staging)
    _submit(run, step, caption, nbytes, lambda: make(name))


def log_images(run: Run, images: Mapping[str, Image], step: int) -> None:
    """The ``stepwire.Image`` values of a ``log()`` call, at its (resolved) step."""
    for name, image in images.items():
        make = image._make
        run._media_encoder().submit(Job(step, time.time(), image.caption, image._nbytes,
                                        functools.partial(make, name)))


def log_media(run: Run, name: str, data: Any, step: int | None = None, kind: str | None = None,
              caption: str | None = None) -> None:
    """``Run.log_media``."""
    check_name(name)
    if not run.active:
        return
    if kind is not None and kind not in ("image", "audio", "video", "html"):
        raise ValueError(f"log_media kind must be image, audio, video or html (None: from the content), got "
                         f"{kind!r:.80}")
    make, nbytes = _prepare_encoded(name, data, kind, run._staging)
    _submit(run, step, caption, nbytes, lambda: make(name))


def log_plot(run: Run, name: str, figure: Any, step: int | None = None, caption: str | None = None) -> None:
    """``Run.log_plot``."""
    check_name(name)
    if not run.active:
        return
    kind, content = plot_json(name, figure)
    if len(content) > MAX_MEDIA_BYTES:
        raise ValueError(f"figure {name!r} has {len(content)} bytes, more than {MAX_MEDIA_BYTES >> 20} MiB")
    mime = PLOTLY_MIME if kind == "plotly" else "image/png"
    _submit(run, step, caption, len(content), lambda: [Encoded(name, kind, mime, content, True)])


def log_table(run: Run, name: str, data: Any, step: int | None = None, columns: Sequence[str] | None = None,
              caption: str | None = None) -> None:
    """``Run.log_table``."""
    check_name(name)
    if not run.active:
        return
    source: Mapping[str, npt.NDArray[Any]] | Path
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"no CSV file at {path} (for table {name!r})")
        source = _capture(path, run._staging)
        nbytes = 0
    else:
        source = table_columns(name, data, columns)
        nbytes = sum(v.nbytes for v in source.values())

    def make() -> list[Encoded]:
        try:
            content = encode_parquet(source)
        finally:
            if isinstance(source, Path):
                source.unlink(missing_ok=True)
        return [Encoded(name, "table", PARQUET_MIME, content, True)]

    _submit(run, step, caption, nbytes, make)
