"""W&B's media types as values of ``log``: each knows how it is stored in a stepwire run (``_log``).

- ``Histogram(sequence)``: the raw values, binned exactly (``Run.log_histogram``); ``histogram``/``bins`` hold
  W&B's ``num_bins`` view as W&B computes it. ``Histogram(np_histogram=(counts, edges))``: already binned, so
  each bin's count goes to the stepwire bucket of the bin's centre (count, sum and min/max from the bin centres
  and outer edges); counts that are not whole numbers (densities) cannot be bucket counts and are stored as the
  table ``name`` with columns ``bin_start``, ``bin_end``, ``count``.
- ``Image``: ``Run.log_image`` (path, PIL image, numpy or torch array), after W&B's pixel rule for float arrays.
- ``Table``: ``Run.log_table`` with its columns.
- ``Audio``, ``Video``, ``Html``: ``Run.log_media`` (a path or bytes as given; audio arrays as 16-bit WAV).
- ``Object3D``, ``Molecule``, box and mask overlays: not supported (warn once).
"""

from __future__ import annotations

import io
import os
import wave
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from stepwire import _core
from stepwire.compat.wandb.unsupported import unsupported
from stepwire.tensors import is_tensor

if TYPE_CHECKING:
    from stepwire.run import Run


class WBValue:
    """Base of the values ``log`` stores as something other than a scalar."""

    def _log(self, run: Run, name: str, step: int) -> None:
        raise NotImplementedError


def _numpy(data: Any) -> npt.NDArray[Any]:
    if is_tensor(data):
        return np.asarray(data.detach().cpu().numpy())
    return np.asarray(data)


class Histogram(WBValue):
    """``wandb.Histogram(sequence=None, np_histogram=None, num_bins=64)`` (at most 512 bins, as W&B). The values
    are those at construction (copied; a tensor on a GPU is copied there and binned there when logged, never read
    back unless ``histogram``/``bins`` are asked for)."""

    MAX_LENGTH = 512

    def __init__(self, sequence: Any = None, np_histogram: tuple[Any, Any] | None = None,
                 num_bins: int = 64) -> None:
        self._num_bins = num_bins
        self._binned: tuple[list[float], list[float]] | None = None
        self.values: Any = None
        """The raw values (a numpy array, or a tensor on its device), None for ``np_histogram``."""
        if np_histogram is not None:
            if len(np_histogram) != 2:
                raise ValueError("Expected np_histogram to be a tuple of (values, bin_edges)")
            counts, edges = (np.asarray(np_histogram[0], dtype=np.float64),
                             np.asarray(np_histogram[1], dtype=np.float64))
            if len(edges) != len(counts) + 1:
                raise ValueError("len(bins) must be len(histogram) + 1")
            if len(counts) > self.MAX_LENGTH:
                raise ValueError(f"The maximum length of a histogram is {self.MAX_LENGTH}")
            self._binned = (counts.tolist(), edges.tolist())
        elif sequence is not None:
            if num_bins > self.MAX_LENGTH:
                raise ValueError(f"The maximum length of a histogram is {self.MAX_LENGTH}")
            if is_tensor(sequence) and sequence.device.type != "cpu":
                self.values = sequence.detach().flatten().clone()  # on the device, without a synchronisation
            else:
                self.values = np.array(_numpy(sequence), copy=True).ravel()
                if self.values.dtype.kind not in "biuf":
                    raise TypeError(f"Histogram values must be numbers, got dtype {self.values.dtype}")
        else:
            raise ValueError("Histogram needs either a sequence or an np_histogram")

    def _bars(self) -> tuple[list[float], list[float]]:
        if self._binned is None:
            values = _numpy(self.values)
            finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
            counts, edges = np.histogram(finite, bins=self._num_bins)
            self._binned = (counts.tolist(), edges.tolist())
        return self._binned

    @property
    def histogram(self) -> list[float]:
        """The bar heights, as W&B keeps them (``num_bins`` equal bins over the finite values)."""
        return self._bars()[0]

    @property
    def bins(self) -> list[float]:
        """The bin edges (one more than ``histogram``)."""
        return self._bars()[1]

    def _log(self, run: Run, name: str, step: int) -> None:
        if self.values is not None:
            run.log_histogram(name, self.values, step=step)
            return
        counts = np.asarray(self.histogram, dtype=np.float64)
        edges = np.asarray(self.bins, dtype=np.float64)
        if not np.all((counts >= 0) & (counts == np.round(counts))):
            run.log_table(name, {"bin_start": edges[:-1], "bin_end": edges[1:], "count": counts}, step=step)
            return
        log_binned(run, name, step, counts.astype(np.int64), edges)


def bucket_index(values: npt.NDArray[np.float64], k: int) -> npt.NDArray[np.int64]:
    """The bucket of each value in stepwire's scheme (``sign(x) * (bits(|x| as float32) >> (23 - k))``)."""
    mags = np.abs(values).astype(np.float32).view(np.int32).astype(np.int64) >> (23 - k)
    return np.where(values < 0, -mags, mags)


def log_binned(run: Run, name: str, step: int, counts: npt.NDArray[np.int64], edges: npt.NDArray[np.float64]) -> None:
    """Store W&B bins (``counts`` between ``edges``) as a stepwire histogram: each count at the bin's centre."""
    sid = run._define(name, _core.KIND_HISTOGRAM)
    keep = counts > 0
    centres = ((edges[:-1] + edges[1:]) / 2)[keep]
    idx = bucket_index(centres, run._k)
    uniq, where = np.unique(idx, return_inverse=True)
    summed = np.zeros(len(uniq), dtype=np.int64)
    np.add.at(summed, where, counts[keep])
    total = int(counts.sum())
    lo = float(edges[:-1][keep][0]) if total else 0.0
    hi = float(edges[1:][keep][-1]) if total else 0.0
    run._take_step(step)
    if run.active:
        run._stream.push_binned(sid, step, run._k, uniq.astype(np.int32), summed, total,
                                float((centres * counts[keep]).sum()), lo, hi, 0, 0, 0)


def _rescale(arr: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """W&B's pixel rule (``_guess_and_rescale_to_0_255``): values all in [0, 1] are scaled by 255, all in [-1, 1]
    mapped from [-1, 1] to [0, 255], others clipped to [0, 255]; then truncated to uint8."""
    lo, hi = float(arr.min()), float(arr.max())
    if 0 <= lo and hi <= 1:
        return (arr * 255).astype(np.uint8)
    if -1 <= lo and hi <= 1:
        return (255 * 0.5 * (arr + 1)).astype(np.uint8)
    return np.asarray(arr.clip(0, 255)).astype(np.uint8)


class Image(WBValue):
    """``wandb.Image(data_or_path, mode=None, caption=None, ...)``: a path, PIL image, numpy or torch array (CHW
    for torch, HW or HWC for numpy, as W&B reads them), or a matplotlib figure. Arrays follow W&B's pixel rule
    (``_rescale``; ``normalize=False``: truncated to uint8 as they are)."""

    def __init__(self, data_or_path: Any, mode: str | None = None, caption: str | None = None,
                 grouping: int | None = None, classes: Any = None, boxes: Any = None, masks: Any = None,
                 file_type: str | None = None, normalize: bool = True) -> None:
        for what, value in (("boxes", boxes), ("masks", masks), ("classes", classes), ("grouping", grouping)):
            if value is not None:
                unsupported(f"wandb.Image({what}=...)", "the image is stored without it")
        if mode is not None:
            unsupported("wandb.Image(mode=...)", "the mode is read from the data")
        self.caption = caption
        self._data: Any = data_or_path
        if isinstance(data_or_path, (str, os.PathLike, bytes)) or type(data_or_path).__module__.startswith("PIL"):
            return
        if hasattr(data_or_path, "savefig"):  # a matplotlib figure
            buf = io.BytesIO()
            data_or_path.savefig(buf, format="png")
            self._data = buf.getvalue()
            return
        arr = _numpy(data_or_path)
        if is_tensor(data_or_path) and arr.ndim == 3:
            arr = arr.transpose(1, 2, 0)  # torch images are CHW, as W&B reads them
        if arr.ndim > 2:
            arr = arr.squeeze()
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"wandb.Image data must be numbers, got dtype {arr.dtype}")
        self._data = _rescale(arr) if normalize and arr.size else arr.astype(np.uint8)

    def _log(self, run: Run, name: str, step: int) -> None:
        run.log_image(name, self._data, step=step, caption=self.caption)


class Table(WBValue):
    """``wandb.Table(columns=None, data=None, rows=None, dataframe=None, ...)`` with ``add_data(*row)``,
    ``add_column(name, data)``, ``get_column(name)``; ``columns`` and ``data`` (a list of rows) as in W&B."""

    def __init__(self, columns: Sequence[str] | None = None, data: Sequence[Sequence[Any]] | None = None,
                 rows: Sequence[Sequence[Any]] | None = None, dataframe: Any = None, dtype: Any = None,
                 optional: Any = True, allow_mixed_types: bool = False, log_mode: str | None = None) -> None:
        if dataframe is None and hasattr(data, "itertuples"):  # W&B takes a DataFrame as data too
            dataframe, data = data, None
        if dataframe is not None:
            self.columns: list[str] = [str(c) for c in dataframe.columns]
            self.data: list[list[Any]] = [list(r) for r in dataframe.itertuples(index=False)]
        else:
            rows = data if data is not None else rows
            self.data = [list(r) for r in rows] if rows is not None else []
            self.columns = list(columns) if columns is not None else ["Input", "Output", "Expected"]  # W&B's
        for row in self.data:
            self._check(row)

    def _check(self, row: Sequence[Any]) -> None:
        if len(row) != len(self.columns):
            raise ValueError(f"This table expects {len(self.columns)} columns: {self.columns}, found {len(row)}")

    def add_data(self, *data: Any) -> None:
        """Append one row."""
        self._check(data)
        self.data.append(list(data))

    def add_column(self, name: str, data: Sequence[Any], optional: bool = False) -> None:
        """Append a column (one value per row)."""
        if self.data and len(data) != len(self.data):
            raise ValueError(f"Expected {len(self.data)} values for column {name!r}, got {len(data)}")
        if name in self.columns:
            raise ValueError(f"Column {name!r} already exists")
        self.columns.append(name)
        if not self.data:
            self.data = [[v] for v in data]
        else:
            for row, value in zip(self.data, data, strict=True):
                row.append(value)

    def get_column(self, name: str, convert_to: str | None = None) -> list[Any] | npt.NDArray[Any]:
        """The values of column ``name`` (``convert_to="numpy"``: as an array)."""
        i = self.columns.index(name)
        values = [row[i] for row in self.data]
        return np.asarray(values) if convert_to == "numpy" else values

    def _log(self, run: Run, name: str, step: int) -> None:
        rows = []
        for row in self.data:
            cells = []
            for cell in row:
                if isinstance(cell, WBValue):
                    unsupported("media inside a wandb.Table", "stored as the cell's type name")
                    cell = type(cell).__name__
                elif is_tensor(cell) or isinstance(cell, np.generic):
                    cell = cell.item() if getattr(cell, "ndim", 0) == 0 else str(cell)
                cells.append(cell)
            rows.append(cells)
        run.log_table(name, rows, step=step, columns=[str(c) for c in self.columns])


class _Media(WBValue):
    """A path or bytes stored as given with ``Run.log_media``."""

    kind: str | None = None

    def __init__(self, data: Any, caption: str | None = None) -> None:
        self._data = data
        self.caption = caption

    def _log(self, run: Run, name: str, step: int) -> None:
        run.log_media(name, self._data, step=step, kind=self.kind, caption=self.caption)


class Audio(_Media):
    """``wandb.Audio(data_or_path, sample_rate=None, caption=None)``: a file, or samples (mono, or
    samples x channels, floats in [-1, 1]) with their ``sample_rate``, stored as 16-bit WAV."""

    kind = "audio"

    def __init__(self, data_or_path: Any, sample_rate: int | None = None, caption: str | None = None) -> None:
        if isinstance(data_or_path, (str, os.PathLike, bytes)):
            super().__init__(data_or_path, caption)
            return
        if sample_rate is None:
            raise ValueError('Argument "sample_rate" is required when instantiating wandb.Audio with raw data.')
        arr = _numpy(data_or_path)
        arr = arr.reshape(-1, 1) if arr.ndim == 1 else arr
        pcm = np.clip(arr, -1, 1) * 32767 if arr.dtype.kind == "f" else arr
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(arr.shape[1])
            w.setsampwidth(2)
            w.setframerate(int(sample_rate))
            w.writeframes(np.ascontiguousarray(pcm, dtype="<i2").tobytes())
        super().__init__(buf.getvalue(), caption)


class Video(_Media):
    """``wandb.Video(data_or_path, caption=None, fps=None, format=None)``: a video file (MP4, WebM, GIF).
    Frames as an array are not encoded (warn once)."""

    kind = "video"

    def __init__(self, data_or_path: Any, caption: str | None = None, fps: int | None = None,
                 format: str | None = None) -> None:
        if not isinstance(data_or_path, (str, os.PathLike, bytes)):
            unsupported("wandb.Video of frames", "stepwire stores video files; encode the frames first")
            data_or_path = None
        super().__init__(data_or_path, caption)

    def _log(self, run: Run, name: str, step: int) -> None:
        if self._data is not None:
            super()._log(run, name, step)


class Html(_Media):
    """``wandb.Html(data, inject=True)``: HTML text, a file object or a path."""

    kind = "html"

    def __init__(self, data: Any, inject: bool = True, data_is_not_path: bool = False) -> None:
        if hasattr(data, "read"):
            data = data.read()
        if isinstance(data, str) and (data_is_not_path or not os.path.isfile(data)):
            data = data.encode("utf-8")
        super().__init__(data)


class Object3D(WBValue):
    """``wandb.Object3D``: not supported (warns once when logged)."""

    def __init__(self, data_or_path: Any, **kwargs: Any) -> None:
        self._data = data_or_path

    def _log(self, run: Run, name: str, step: int) -> None:
        unsupported("wandb.Object3D")


class Molecule(Object3D):
    """``wandb.Molecule``: not supported (warns once when logged)."""

    def _log(self, run: Run, name: str, step: int) -> None:
        unsupported("wandb.Molecule")


def is_media_list(value: object) -> bool:
    """A non-empty list or tuple of W&B media values (W&B shows them together; stepwire stores ``name/i``)."""
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, WBValue) for v in value)
