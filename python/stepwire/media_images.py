"""Image arrays as pixels: layout, values, grids of batches and PNG encoding (run on the media thread).

Images given as arrays (numpy, torch, anything ``numpy.asarray`` takes) are converted as follows:

- layout: 2-D is HW (grayscale); 3-D is HWC when the last dimension is 1, 3 or 4, else CHW when the first is;
  4-D is a batch of those (NHWC, else NCHW). One channel is grayscale, 3 RGB, 4 RGBA.
- values: uint8 as they are; bool as 0/255; other integers clipped to 0..255; floats clipped to [0, 1] (NaN as
  0), times 255 in float64, rounded to the nearest integer (half to even).
- a batch is one grid image by default (``grid_shape``: ceil(sqrt(N)) columns, ``GRID_PAD`` zero pixels between
  tiles), or with ``grid=False`` one image per item, named ``name/0``, ``name/1``, ...
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

GRID_PAD = 2
"""Zero pixels between the tiles of a batch shown as a grid."""
PNG_COMPRESS_LEVEL = 1
"""zlib level of the PNGs the media thread encodes: fast, about 10-20% larger than the default 6."""


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
    return drop_single_channel(to_uint8(to_hwc(arr)))


def drop_single_channel(hwc: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """HWC pixels as stored: HW when there is one channel, else as they are."""
    return hwc[:, :, 0] if hwc.shape[-1] == 1 else hwc


def encode_png(pixels: npt.NDArray[np.uint8]) -> bytes:
    """PNG of uint8 pixels (HW, HWC with 3 or 4 channels)."""
    from PIL import Image as PIL

    mode = "L" if pixels.ndim == 2 else {3: "RGB", 4: "RGBA"}[pixels.shape[-1]]
    return png_of(PIL.fromarray(np.ascontiguousarray(pixels), mode=mode))


def png_of(image: PILImage) -> bytes:
    """A PIL image as PNG (``PNG_COMPRESS_LEVEL``)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()
