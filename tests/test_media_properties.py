"""Property tests of image conversion (stepwire.media): any shape, layout, dtype and value range the documented
rules accept becomes the pixels those rules say, through PNG encoding and decoding, one image or a batch."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image as PIL

from stepwire.media_images import (
    GRID_PAD,
    encode_png,
    grid_shape,
    image_layout,
    image_pixels,
    make_grid,
    to_hwc,
    to_uint8,
)

DTYPES = [np.uint8, np.bool_, np.int16, np.int64, np.uint16, np.float16, np.float32, np.float64]


def reference_values(arr: np.ndarray) -> np.ndarray:
    """The documented value rule, written independently of stepwire.media_images."""
    if arr.dtype == np.bool_:
        return np.where(arr, 255, 0).astype(np.uint8)
    if arr.dtype.kind in "iu":
        return np.minimum(np.maximum(arr.astype(np.int64), 0), 255).astype(np.uint8)
    x = arr.astype(np.float64)
    x = np.where(np.isnan(x), 0.0, x)
    x = np.where(x < 0, 0.0, np.where(x > 1, 1.0, x))
    return np.rint(x * 255.0).astype(np.uint8)


def reference_image(arr: np.ndarray) -> np.ndarray:
    """The documented layout rule: HW, HWC (last dim 1/3/4), else CHW; one channel stored as HW."""
    v = reference_values(arr)
    if v.ndim == 3:
        v = v if v.shape[-1] in (1, 3, 4) else v.transpose(1, 2, 0)
        if v.shape[-1] == 1:
            v = v[:, :, 0]
    return v


def decode(png: bytes) -> np.ndarray:
    return np.asarray(PIL.open(io.BytesIO(png)))


side = st.integers(1, 12)
channels = st.sampled_from([1, 3, 4])


@st.composite
def image_arrays(draw: st.DrawFn, batch: bool = False) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    h, w, c = draw(side), draw(side), draw(channels)
    layout = draw(st.sampled_from(["HW", "HWC", "CHW"] if not batch else ["HWC", "CHW"]))
    shape: tuple[int, ...] = {"HW": (h, w), "HWC": (h, w, c), "CHW": (c, h, w)}[layout]
    if layout == "CHW" and shape[-1] in (1, 3, 4):  # would read as HWC: the documented rule prefers HWC
        shape = (c, h, 5)
    if batch:
        shape = (draw(st.integers(1, 7)), *shape)
    if dtype.kind == "f":
        elements = st.floats(width=8 * dtype.itemsize) | st.floats(-2.0, 3.0, width=8 * dtype.itemsize) \
            if draw(st.booleans()) else st.floats(0.0, 1.0, width=8 * dtype.itemsize)  # NaN, ±inf, out of range
    else:
        elements = None
    return draw(hnp.arrays(dtype, shape, elements=elements))


@settings(max_examples=150, deadline=None)
@given(image_arrays())
def test_one_image_becomes_the_documented_pixels_through_png(arr: np.ndarray) -> None:
    expected = reference_image(arr)
    pixels = image_pixels(arr)
    assert pixels.dtype == np.uint8 and np.array_equal(pixels, expected)
    assert np.array_equal(decode(encode_png(pixels)), expected)


@settings(max_examples=60, deadline=None)
@given(image_arrays(batch=True))
def test_a_batch_as_a_grid_or_one_by_one(arr: np.ndarray) -> None:
    assert image_layout(arr.shape).startswith("N")
    tiles = [reference_image(a) for a in arr]
    batch = to_uint8(to_hwc(arr))
    for i, tile in enumerate(tiles):
        one = batch[i, :, :, 0] if batch.shape[-1] == 1 else batch[i]
        assert np.array_equal(one, tile)
    grid = make_grid(batch)
    n, h, w, _ = batch.shape
    rows, cols = grid_shape(n)
    assert grid.shape[:2] == (rows * h + (rows - 1) * GRID_PAD, cols * w + (cols - 1) * GRID_PAD)
    assert rows * cols >= n > (rows - 1) * cols
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        got = grid[r * (h + GRID_PAD):r * (h + GRID_PAD) + h, c * (w + GRID_PAD):c * (w + GRID_PAD) + w]
        assert np.array_equal(got[:, :, 0] if got.shape[-1] == 1 else got, tile)
    mask = np.ones(grid.shape[:2], bool)
    for i in range(n):
        r, c = divmod(i, cols)
        mask[r * (h + GRID_PAD):r * (h + GRID_PAD) + h, c * (w + GRID_PAD):c * (w + GRID_PAD) + w] = False
    assert not grid[mask].any()  # padding and empty cells are zero


@given(st.lists(st.integers(1, 9), min_size=1, max_size=5))
def test_shapes_outside_the_rules_are_refused(shape: list[int]) -> None:
    ok = (len(shape) == 2 or (len(shape) == 3 and (shape[-1] in (1, 3, 4) or shape[0] in (1, 3, 4)))
          or (len(shape) == 4 and (shape[-1] in (1, 3, 4) or shape[1] in (1, 3, 4))))
    if ok:
        image_layout(shape)
    else:
        with pytest.raises(ValueError, match="HW, HWC or CHW"):
            image_layout(shape)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "uint8", "bool"])
def test_torch_tensors_convert_like_numpy_arrays(dtype: str) -> None:
    torch = pytest.importorskip("torch")
    from stepwire.media_capture import prepare_image

    gen = torch.Generator().manual_seed(0)
    t = torch.rand((3, 6, 5), generator=gen) * 1.4 - 0.2  # CHW, partly out of [0, 1]
    if dtype == "uint8":
        t = (t.clamp(0, 1) * 255).to(torch.uint8)
    elif dtype == "bool":
        t = t > 0.5
    else:
        t = t.to(getattr(torch, dtype))
    expected = reference_image(t.float().numpy() if dtype in ("bfloat16", "float16") else t.numpy())
    make, _ = prepare_image("t", t, grid=True, staging=None)
    t.zero_()  # copied at the call
    (item,) = make("t")
    assert isinstance(item.payload, bytes) and np.array_equal(decode(item.payload), expected)
