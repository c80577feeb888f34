"""TensorBoard's inputs (tensors, arrays, numbers; ``dataformats``) as the values stepwire's Run takes."""

from __future__ import annotations

import io
import wave
from typing import Any

import numpy as np
import numpy.typing as npt

from stepwire.tensors import is_tensor


def to_numpy(value: Any) -> npt.NDArray[Any]:
    """A torch tensor (any device: copied to the host, as TensorBoard does), numpy array, number or sequence as a
    numpy array."""
    if is_tensor(value):
        out: npt.NDArray[Any] = value.detach().cpu().numpy()
        return out
    return np.asarray(value)


def step_of(global_step: Any) -> int:
    """TensorBoard's ``global_step``: None is step 0 (an event without a step reads as 0); numpy and 0-d tensor
    steps are ints."""
    if global_step is None:
        return 0
    return int(global_step.item() if is_tensor(global_step) else global_step)


def to_hwc(tag: str, img: Any, dataformats: str) -> npt.NDArray[Any]:
    """An image (or a batch, with ``N`` in ``dataformats``) laid out as ``dataformats`` says, as HWC (NHWC for a
    batch) with 1, 3 or 4 channels; ``ValueError`` naming ``tag`` when shape and ``dataformats`` disagree."""
    arr = to_numpy(img)
    fmt = dataformats.upper()
    if len(set(fmt)) != len(fmt) or not set(fmt) <= set("NCHW") or not {"H", "W"} <= set(fmt):
        raise ValueError(f"image {tag!r}: dataformats {dataformats!r} must be letters of NCHW with H and W, "
                         "each once")
    if arr.ndim != len(fmt):
        raise ValueError(f"image {tag!r}: dataformats {dataformats!r} does not match the shape {arr.shape}")
    target = [c for c in "NHWC" if c in fmt]
    arr = np.transpose(arr, [fmt.index(c) for c in target])
    if "C" not in fmt:
        arr = arr[..., None]
    if "N" not in fmt and arr.ndim == 4:  # pragma: no cover - target never has N without fmt having it
        raise AssertionError
    if arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image {tag!r}: {arr.shape[-1]} channels in {dataformats!r}; images have 1, 3 or 4")
    return arr


def ensure_pil() -> None:
    """Import Pillow on the calling thread before the run's media thread does: stepwire.media's check for PIL
    images looks the module up in ``sys.modules`` and could find it half-imported by the media thread."""
    import PIL.Image  # noqa: F401


def to_pixels(arr: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Pixel values as TensorBoard scales them: uint8 as they are, anything else times 255 (floats are taken to
    be in [0, 1]), clipped to [0, 255]."""
    ensure_pil()
    if arr.dtype == np.uint8:
        return arr
    scaled = np.clip(np.nan_to_num(arr.astype(np.float32) * 255.0), 0, 255)
    out: npt.NDArray[np.uint8] = scaled.astype(np.uint8)
    return out


def wav_bytes(tag: str, snd: Any, sample_rate: int) -> bytes:
    """Audio samples in [-1, 1] (shape (L,) or (1, L), as TensorBoard takes them) as a 16-bit mono WAV file."""
    arr = to_numpy(snd).astype(np.float64).squeeze()
    if arr.ndim != 1:
        raise ValueError(f"audio {tag!r}: expected one channel of samples, (L,) or (1, L), got shape "
                         f"{to_numpy(snd).shape}")
    pcm = (np.clip(arr, -1.0, 1.0) * 32767.0).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def gif_bytes(tag: str, vid: Any, fps: float, dataformats: str = "NTCHW") -> bytes:
    """A video batch (N, T, C, H, W; other orders as ``dataformats`` says, as tensorboardX takes them), uint8 or
    float in [0, 1], as an animated GIF: the N videos side by side in a grid per frame (TensorBoard's layout),
    ``fps`` frames per second."""
    from PIL import Image as PILImage

    from stepwire.media import make_grid

    arr = to_numpy(vid)
    fmt = dataformats.upper()
    if sorted(fmt) != sorted("NTCHW") or arr.ndim != 5:
        raise ValueError(f"video {tag!r}: expected 5 dimensions in the order {dataformats!r} (letters of NTCHW), "
                         f"got shape {arr.shape}")
    arr = np.transpose(arr, [fmt.index(c) for c in "NTCHW"])
    pixels = to_pixels(arr)
    frames = []
    for t in range(pixels.shape[1]):
        frame = make_grid(np.moveaxis(pixels[:, t], 1, -1))  # NCHW -> NHWC -> one HWC grid
        if frame.shape[-1] == 1:
            frame = np.repeat(frame, 3, axis=-1)
        frames.append(PILImage.fromarray(np.ascontiguousarray(frame[..., :3])))
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return buf.getvalue()
