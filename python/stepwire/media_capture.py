"""What a media logging call keeps: ``image`` and encoded content (paths, bytes, HTML) checked at the call and
copied (an array or a PIL image copied, a file hard linked or copied into the run's staging directory, bytes
referenced), with the function the media thread runs later to convert and encode it (``stepwire.media_images``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from stepwire import mediatypes
from stepwire.artifacts import stage_file
from stepwire.media_images import (
    GRID_PAD,
    drop_single_channel,
    encode_png,
    grid_shape,
    image_layout,
    image_pixels,
    make_grid,
    png_of,
    to_hwc,
    to_uint8,
)
from stepwire.media_thread import Encoded
from stepwire.mediatypes import MAX_IMAGE_PIXELS, MAX_MEDIA_BYTES, PARQUET_MIME
from stepwire.tensors import is_tensor

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

Make = Callable[[str], list[Encoded]]
"""What the media thread runs for a record, given its name: converts and encodes what the call kept."""


def array_copy(name: str, value: object) -> npt.NDArray[Any]:
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


def prepare_image(name: str, image: Any, grid: bool, staging: Path | None) -> tuple[Make, int]:
    """Check ``image`` and keep a private copy (a file: linked or copied into ``staging``, else read); returns what
    the media thread runs (given the record's name) and the bytes it holds meanwhile."""
    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
        return prepare_encoded(name, image, "image", staging)
    if _is_pil(image):
        pil: PILImage = image.copy()
        if pil.width * pil.height > MAX_IMAGE_PIXELS:
            raise ValueError(f"image {name!r} has {pil.width} x {pil.height} pixels, more than {MAX_IMAGE_PIXELS}")

        def make_pil(n: str) -> list[Encoded]:
            img = pil if pil.mode in ("L", "RGB", "RGBA") else pil.convert("RGBA" if "A" in pil.getbands() else "RGB")
            return [Encoded(n, "image", "image/png", png_of(img), True)]

        return make_pil, pil.width * pil.height * len(pil.getbands())
    arr = array_copy(name, image)
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
            return [Encoded(n_, "image", "image/png", encode_png(drop_single_channel(make_grid(batch))), True)]
        return [Encoded(f"{n_}/{i}", "image", "image/png", encode_png(drop_single_channel(batch[i])), True)
                for i in range(n)]

    return make_array, arr.nbytes


def _is_pil(value: object) -> bool:
    """Whether ``value`` is a PIL image (without importing Pillow when it is not imported yet)."""
    import sys

    pil = sys.modules.get("PIL.Image")
    return pil is not None and isinstance(value, getattr(pil, "Image", ()))  # the media thread may be importing it


def _read_head(data: bytes | Path) -> bytes:
    """The first 16 bytes of content given as bytes or a file (enough to sniff its type)."""
    if isinstance(data, bytes):
        return data[:16]
    with open(data, "rb") as f:
        return f.read(16)


def prepare_encoded(name: str, data: Any, kind: str | None, staging: Path | None) -> tuple[Make, int]:
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
        payload = stage_file(payload, staging) if staging is not None else payload.read_bytes()
    final_kind = kind
    held = payload

    def make(n: str) -> list[Encoded]:
        return [Encoded(n, final_kind, mime, held, False)]

    return make, size if isinstance(payload, bytes) else 0
