"""What the SummaryWriter's less common methods store: raw histograms, boxes drawn on images, figures as pixels,
precision-recall tables, meshes as Plotly figures, embeddings as tables, tensors as JSON text."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from stepwire import _core
from stepwire.compat.tensorboard.convert import to_numpy
from stepwire.tensors import is_tensor

if TYPE_CHECKING:
    from stepwire.run import Run

PR_MIN_COUNT = 1e-7
"""TensorBoard's floor of the denominators of precision and recall."""


def scalar_value(tag: str, value: Any) -> Any:
    """A scalar as ``Run.log_scalar`` takes it: one-element tensors stay tensors (a device tensor is read without
    a synchronisation), arrays of one value and numbers become floats; ``ValueError`` for more values."""
    if is_tensor(value):
        if value.numel() != 1:
            raise ValueError(f"scalar {tag!r}: a tensor of shape {tuple(value.shape)} is not a scalar")
        return value.detach().reshape(())
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise ValueError(f"scalar {tag!r}: an array of shape {value.shape} is not a scalar")
        return float(value.reshape(()))
    return value if type(value) is float else float(value)


def tensor_json(tensor: Any) -> str:
    """A tensor or array as JSON ``{"shape": [...], "dtype": "...", "values": nested lists}``."""
    arr = to_numpy(tensor)
    values = arr.tolist() if arr.dtype.kind in "biufU" else arr.astype(str).tolist()
    return json.dumps({"shape": list(arr.shape), "dtype": str(arr.dtype), "values": values})


def log_raw_histogram(run: Run, name: str, step: int, lo: float, hi: float, total: float,
                      bucket_limits: Sequence[float], bucket_counts: Sequence[float]) -> None:
    """Log TensorBoard-style buckets as a stepwire histogram (see ``SummaryWriter.add_histogram_raw``)."""
    limits = np.asarray(bucket_limits, dtype=np.float64)
    counts = np.rint(np.asarray(bucket_counts, dtype=np.float64)).astype(np.int64)
    lower = np.concatenate([[lo], limits[:-1]]) if limits.size else limits
    middle = np.clip((np.maximum(lower, lo) + np.minimum(limits, hi)) / 2, lo, hi)
    middle = np.where(np.isfinite(middle), middle, lo)
    keep = counts > 0
    idx = _core.bucket_indices(middle[keep].astype(np.float32), run._k).astype(np.int64)
    uniq, inverse = np.unique(idx, return_inverse=True)
    merged = np.zeros(uniq.size, dtype=np.int64)
    np.add.at(merged, inverse, counts[keep])
    run._check_open()
    if not run.active:
        return
    run._stream.push_binned(run._define(name, _core.KIND_HISTOGRAM), step, run._k, uniq.astype(np.int32), merged,
                            int(merged.sum()), float(total), float(lo), float(hi), 0, 0, 0)


def draw_boxes(pixels: npt.NDArray[np.uint8], boxes: npt.NDArray[Any], rescale: float,
               labels: Sequence[str] | None) -> npt.NDArray[np.uint8]:
    """An HWC image with ``boxes`` ([x1, y1, x2, y2] per row) drawn in red, 2 pixels wide, with their labels,
    after scaling image and boxes by ``rescale``."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    rgb = np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels[..., :3]
    image = PILImage.fromarray(np.ascontiguousarray(rgb))
    if rescale != 1:
        image = image.resize((int(image.width * rescale), int(image.height * rescale)))
    draw = ImageDraw.Draw(image)
    for i, box in enumerate(np.asarray(boxes, dtype=np.float64) * rescale):
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=(255, 0, 0), width=2)
        if labels is not None:
            draw.text((x1, max(0.0, y1 - 12)), str(labels[i]), fill=(255, 0, 0))
    out: npt.NDArray[np.uint8] = np.asarray(image, dtype=np.uint8)
    return out


def _figure_rgb(figure: Any, close: bool) -> npt.NDArray[np.uint8]:
    figure.canvas.draw()
    rgb: npt.NDArray[np.uint8] = np.asarray(figure.canvas.buffer_rgba(), dtype=np.uint8)[..., :3].copy()
    if close:
        import matplotlib.pyplot as plt

        plt.close(figure)
    return rgb


def figure_pixels(figure: Any, close: bool) -> npt.NDArray[np.uint8]:
    """A matplotlib figure rendered to HWC pixels, or a list of them to a batch NHWC (same sizes, as
    TensorBoard requires)."""
    if isinstance(figure, list):
        return np.stack([_figure_rgb(f, close) for f in figure])
    return _figure_rgb(figure, close)


def pr_table(tp: npt.NDArray[Any], fp: npt.NDArray[Any], tn: npt.NDArray[Any], fn: npt.NDArray[Any],
             precision: npt.NDArray[Any], recall: npt.NDArray[Any]) -> dict[str, npt.NDArray[Any]]:
    """The columns of a precision-recall table (thresholds evenly spaced over [0, 1], one per row)."""
    n = len(precision)
    return {"threshold": np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(n), "precision": precision,
            "recall": recall, "true_positives": tp, "false_positives": fp, "true_negatives": tn,
            "false_negatives": fn}


def pr_curve(labels: npt.NDArray[Any], predictions: npt.NDArray[Any], num_thresholds: int,
             weights: npt.NDArray[Any] | None) -> dict[str, npt.NDArray[Any]]:
    """TensorBoard's precision-recall computation: predictions in [0, 1] bucketed into ``num_thresholds``
    thresholds; counts at threshold t are those of predictions at or above it."""
    num_thresholds = min(num_thresholds, 127)  # TensorBoard's bound
    w = np.ones_like(predictions, dtype=np.float64) if weights is None else weights.astype(np.float64)
    bucket = np.floor(predictions.astype(np.float64) * (num_thresholds - 1)).astype(np.int64)
    positive = labels.astype(np.float64)
    tp_b = np.bincount(np.clip(bucket.ravel(), 0, num_thresholds - 1), (positive * w).ravel(), num_thresholds)
    fp_b = np.bincount(np.clip(bucket.ravel(), 0, num_thresholds - 1), ((1 - positive) * w).ravel(), num_thresholds)
    tp = np.cumsum(tp_b[::-1])[::-1]
    fp = np.cumsum(fp_b[::-1])[::-1]
    tn, fn = fp[0] - fp, tp[0] - tp
    precision = tp / np.maximum(PR_MIN_COUNT, tp + fp)
    recall = tp / np.maximum(PR_MIN_COUNT, tp + fn)
    return pr_table(tp, fp, tn, fn, precision, recall)


def mesh_figure(vertices: npt.NDArray[Any], colors: npt.NDArray[Any] | None,
                faces: npt.NDArray[Any] | None) -> dict[str, Any]:
    """A Plotly figure dict with one trace per batch element of ``vertices`` (B, N, 3)."""
    verts = vertices.reshape(-1, *vertices.shape[-2:]) if vertices.ndim >= 2 else vertices.reshape(1, -1, 3)
    traces: list[dict[str, Any]] = []
    for b in range(verts.shape[0]):
        x, y, z = (verts[b, :, i].astype(float).tolist() for i in range(3))
        trace: dict[str, Any] = {"x": x, "y": y, "z": z}
        rgb = None
        if colors is not None:
            c = colors.reshape(-1, *colors.shape[-2:])[min(b, colors.reshape(-1, *colors.shape[-2:]).shape[0] - 1)]
            rgb = [f"rgb({int(r)},{int(g)},{int(bl)})" for r, g, bl in c[:, :3].tolist()]
        if faces is not None:
            f = faces.reshape(-1, *faces.shape[-2:])[min(b, faces.reshape(-1, *faces.shape[-2:]).shape[0] - 1)]
            trace.update(type="mesh3d", i=f[:, 0].astype(int).tolist(), j=f[:, 1].astype(int).tolist(),
                         k=f[:, 2].astype(int).tolist())
            if rgb is not None:
                trace["vertexcolor"] = rgb
        else:
            trace.update(type="scatter3d", mode="markers", marker={"size": 2, **({"color": rgb} if rgb else {})})
        traces.append(trace)
    return {"data": traces, "layout": {}}


def embedding_table(mat: npt.NDArray[Any], metadata: Sequence[Any] | None,
                    metadata_header: Sequence[str] | None) -> dict[str, npt.NDArray[Any]]:
    """An embedding (N x D) as columns ``dim_0``, ... plus its metadata (``label``, or one column per header)."""
    if mat.ndim != 2:
        raise ValueError(f"an embedding must be a 2-D matrix (N x D), got shape {mat.shape}")
    cols: dict[str, npt.NDArray[Any]] = {f"dim_{i}": mat[:, i].astype(np.float64) for i in range(mat.shape[1])}
    if metadata is not None:
        if len(metadata) != mat.shape[0]:
            raise AssertionError("#labels should equal with #data points")
        if metadata_header:
            for j, head in enumerate(metadata_header):
                cols[str(head)] = np.asarray([str(row[j]) for row in metadata], dtype=object)
        else:
            cols["label"] = np.asarray([str(m) for m in metadata], dtype=object)
    return cols
