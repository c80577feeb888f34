"""``SummaryWriter``: torch's ``torch.utils.tensorboard.SummaryWriter`` writing into a stepwire run.

It writes no event files: stepwire is the store. What each method stores is listed in the package docstring
(``stepwire.compat.tensorboard``) and in docs/compat/tensorboard.md.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import numpy as np

import stepwire
from stepwire.compat.tensorboard import convert, records
from stepwire.compat.tensorboard.events import SummaryFileWriter
from stepwire.compat.tensorboard.naming import TagNames
from stepwire.compat.tensorboard.unsupported import unsupported
from stepwire.run import Run
from stepwire.tensors import is_tensor

DEFAULT_PROJECT = "tensorboard"
"""The project of the run a SummaryWriter starts when it is given none."""


def default_log_dir(comment: str = "") -> str:
    """torch's default ``log_dir``: ``runs/<Mon DD_HH-MM-SS>_<host><comment>``."""
    return os.path.join("runs", datetime.now().strftime("%b%d_%H-%M-%S") + "_" + socket.gethostname() + comment)


def run_name_of(log_dir: str) -> str:
    """The run name a SummaryWriter gives the run it starts: the last component of ``log_dir``."""
    return os.path.basename(os.path.normpath(str(log_dir))) or str(log_dir)


class SummaryWriter:
    """torch's ``SummaryWriter`` with the same constructor and ``add_*`` methods, logging into a stepwire run.

    Without ``run=`` it starts a run (project ``"tensorboard"``, name = the last component of ``log_dir``, whose
    default is torch's ``runs/<date>_<host><comment>``), writes no event files, and ``close()`` finishes that run.
    With ``run=`` it logs into that run and ``close()`` only flushes it. ``global_step=None`` is step 0, as in
    TensorBoard (an event without a step). ``purge_step`` and ``walltime`` cannot be honoured (warn once);
    ``max_queue``, ``flush_secs`` and ``filename_suffix`` concern event files and have no effect.
    """

    def __init__(self, log_dir: str | os.PathLike[str] | None = None, comment: str = "",
                 purge_step: int | None = None, max_queue: int = 10, flush_secs: int = 120,
                 filename_suffix: str = "", *, run: Run | None = None) -> None:
        self.log_dir: str = str(log_dir) if log_dir else default_log_dir(comment)
        """The directory TensorBoard would write to (nothing is written there)."""
        self.purge_step = purge_step
        self.max_queue = max_queue
        self.flush_secs = flush_secs
        self.filename_suffix = filename_suffix
        if purge_step is not None:
            unsupported("SummaryWriter(purge_step=...)", "stepwire keeps every step logged")
        self._owns_run = run is None
        self.run: Run = run if run is not None else stepwire.init(project=DEFAULT_PROJECT,
                                                                  name=run_name_of(self.log_dir))
        """The stepwire run this writer logs to."""
        self._names = TagNames()
        self._closed = False

    # -- helpers ------------------------------------------------------------------------------------------
    def _live(self, walltime: float | None) -> bool:
        """False (after one warning) when the writer's own run is finished: TensorBoard reopens, stepwire cannot."""
        if walltime is not None:
            unsupported("walltime=", "stepwire records the time of the call", stacklevel=4)
        if self._closed and self._owns_run:
            unsupported("SummaryWriter.add_* after close()", "the writer's run is finished", stacklevel=4)
            return False
        return True

    # -- scalars ------------------------------------------------------------------------------------------
    def add_scalar(self, tag: str, scalar_value: Any, global_step: Any = None, walltime: float | None = None,
                   new_style: bool = False, double_precision: bool = False) -> None:
        """Log the scalar ``tag`` at ``global_step`` (None: 0). A number, numpy scalar or one-element tensor
        (on any device: read without a synchronisation); ``new_style``/``double_precision`` change only the event
        file encoding."""
        if not self._live(walltime):
            return
        self.run.log_scalar(self._names.scalar(tag), records.scalar_value(tag, scalar_value),
                            self._names.step(global_step))

    def add_scalars(self, main_tag: str, tag_scalar_dict: Mapping[str, Any], global_step: Any = None,
                    walltime: float | None = None) -> None:
        """Log each entry ``key: value`` as the scalar ``main_tag/key`` (TensorBoard's sub-run per key)."""
        if not self._live(walltime):
            return
        step = self._names.step(global_step)
        for key, value in tag_scalar_dict.items():
            self.run.log_scalar(self._names.scalars(main_tag, key), records.scalar_value(key, value), step)

    def add_tensor(self, tag: str, tensor: Any, global_step: Any = None, walltime: float | None = None) -> None:
        """Log a tensor as the text record ``tag``: JSON ``{"shape", "dtype", "values"}``."""
        if not self._live(walltime):
            return
        self.run.log_text(self._names.media(tag, "tensor"), records.tensor_json(tensor), self._names.step(global_step))

    # -- histograms ---------------------------------------------------------------------------------------
    def add_histogram(self, tag: str, values: Any, global_step: Any = None, bins: Any = "tensorflow",
                      walltime: float | None = None, max_bins: int | None = None) -> None:
        """Log the histogram of ``values`` (tensor on any device, array, sequence) in stepwire's exact buckets;
        ``bins``/``max_bins`` are display choices (stepwire derives display bins when read) and are ignored."""
        if not self._live(walltime):
            return
        name = self._names.histogram(tag)
        if is_tensor(values):
            self.run.log_histogram(name, values.detach(), self._names.step(global_step))
        else:
            self.run.log_histogram(name, np.asarray(values), self._names.step(global_step))

    def add_histogram_raw(self, tag: str, min: float, max: float, num: int, sum: float, sum_squares: float,
                          bucket_limits: Sequence[float], bucket_counts: Sequence[float], global_step: Any = None,
                          walltime: float | None = None) -> None:
        """Log an already-binned histogram as a stepwire histogram: each bucket's count goes to the stepwire
        bucket of its middle (bucket ``i`` spans (limit[i-1], limit[i]], the first starts at ``min``; kept within
        [min, max]); count, sum, min and max are those given (``sum_squares`` is not kept)."""
        if len(bucket_limits) != len(bucket_counts):
            raise ValueError("len(bucket_limits) != len(bucket_counts), see the document.")
        if not self._live(walltime):
            return
        records.log_raw_histogram(self.run, self._names.histogram(tag), self._names.step(global_step),
                                  float(min), float(max), float(sum), bucket_limits, bucket_counts)

    # -- images and figures -------------------------------------------------------------------------------
    def add_image(self, tag: str, img_tensor: Any, global_step: Any = None, walltime: float | None = None,
                  dataformats: str = "CHW") -> None:
        """Log an image (``dataformats`` e.g. CHW, HWC, HW; uint8 as is, else values in [0, 1] times 255) as a
        PNG image record ``tag``."""
        if not self._live(walltime):
            return
        pixels = convert.to_pixels(convert.to_hwc(tag, img_tensor, dataformats))
        self.run.log_image(self._names.media(tag, "image"), pixels, self._names.step(global_step))

    def add_images(self, tag: str, img_tensor: Any, global_step: Any = None, walltime: float | None = None,
                   dataformats: str = "NCHW") -> None:
        """Log a batch of images as one grid image ``tag`` (TensorBoard also shows a batch as one grid)."""
        if not self._live(walltime):
            return
        pixels = convert.to_pixels(convert.to_hwc(tag, img_tensor, dataformats))
        self.run.log_image(self._names.media(tag, "image"), pixels, self._names.step(global_step))

    def add_image_with_boxes(self, tag: str, img_tensor: Any, box_tensor: Any, global_step: Any = None,
                             walltime: float | None = None, rescale: float = 1, dataformats: str = "CHW",
                             labels: Sequence[str] | str | None = None) -> None:
        """Log the image with its boxes (N x 4, ``[x1, y1, x2, y2]`` in pixels) drawn in red, with ``labels``
        (one per box, else none) above them, scaled by ``rescale``."""
        if not self._live(walltime):
            return
        if isinstance(labels, str):
            labels = [labels]
        boxes = convert.to_numpy(box_tensor).reshape(-1, 4) if box_tensor is not None else np.zeros((0, 4))
        if labels is not None and len(labels) != boxes.shape[0]:
            labels = None
        pixels = convert.to_pixels(convert.to_hwc(tag, img_tensor, dataformats))
        drawn = records.draw_boxes(pixels, boxes, rescale, labels)
        self.run.log_image(self._names.media(tag, "image"), drawn, self._names.step(global_step))

    def add_figure(self, tag: str, figure: Any, global_step: Any = None, close: bool = True,
                   walltime: float | None = None) -> None:
        """Log a matplotlib figure as a PNG image ``tag`` (a list of figures: one grid image); ``close`` closes
        them."""
        if not self._live(walltime):
            return
        pixels = records.figure_pixels(figure, close)
        convert.ensure_pil()
        self.run.log_image(self._names.media(tag, "image"), pixels, self._names.step(global_step))

    # -- audio, video, text -------------------------------------------------------------------------------
    def add_audio(self, tag: str, snd_tensor: Any, global_step: Any = None, sample_rate: int = 44100,
                  walltime: float | None = None) -> None:
        """Log samples in [-1, 1] (shape (L,) or (1, L)) as a 16-bit WAV audio record ``tag``."""
        if not self._live(walltime):
            return
        wav = convert.wav_bytes(tag, snd_tensor, sample_rate)
        self.run.log_media(self._names.media(tag, "audio"), wav, self._names.step(global_step), kind="audio")

    def add_video(self, tag: str, vid_tensor: Any, global_step: Any = None, fps: float = 4,
                  walltime: float | None = None, dataformats: str = "NTCHW") -> None:
        """Log a video batch (N, T, C, H, W) as an animated GIF video record ``tag`` (TensorBoard also writes a
        GIF; no moviepy needed here). ``dataformats`` is tensorboardX's (torch's writer has none)."""
        if not self._live(walltime):
            return
        gif = convert.gif_bytes(tag, vid_tensor, fps, dataformats)
        self.run.log_media(self._names.media(tag, "video"), gif, self._names.step(global_step), kind="video")

    def add_text(self, tag: str, text_string: str, global_step: Any = None, walltime: float | None = None) -> None:
        """Log ``text_string`` as the text record ``tag``."""
        if not self._live(walltime):
            return
        self.run.log_text(self._names.media(tag, "text"), str(text_string), self._names.step(global_step))

    # -- the rest -----------------------------------------------------------------------------------------
    def add_hparams(self, hparam_dict: dict[str, Any], metric_dict: dict[str, Any],
                    hparam_domain_discrete: dict[str, list[Any]] | None = None, run_name: str | None = None,
                    global_step: Any = None) -> None:
        """Merge ``hparam_dict`` into the run's config and log each metric ``name: value`` as the scalar
        ``name`` at ``global_step`` (TensorBoard writes them to a sub-run ``run_name``; here they are the run's)."""
        if type(hparam_dict) is not dict or type(metric_dict) is not dict:
            raise TypeError("hparam_dict and metric_dict should be dictionary.")
        if not self._live(None):
            return
        self._names.hparams(self.run, hparam_dict)
        step = self._names.step(global_step)
        for key, value in metric_dict.items():
            self.run.log_scalar(self._names.scalar(key), records.scalar_value(key, value), step)

    def add_pr_curve(self, tag: str, labels: Any, predictions: Any, global_step: Any = None,
                     num_thresholds: int = 127, weights: Any = None, walltime: float | None = None) -> None:
        """Log the precision-recall curve as the table ``tag``: columns threshold, precision, recall,
        true/false positive/negative counts, one row per threshold (TensorBoard's computation)."""
        if not self._live(walltime):
            return
        table = records.pr_curve(convert.to_numpy(labels), convert.to_numpy(predictions), num_thresholds,
                                 None if weights is None else convert.to_numpy(weights))
        self.run.log_table(self._names.media(tag, "table"), table, self._names.step(global_step))

    def add_pr_curve_raw(self, tag: str, true_positive_counts: Any, false_positive_counts: Any,
                         true_negative_counts: Any, false_negative_counts: Any, precision: Any, recall: Any,
                         global_step: Any = None, num_thresholds: int = 127, weights: Any = None,
                         walltime: float | None = None) -> None:
        """Log a precision-recall curve given as counts, as ``add_pr_curve``'s table."""
        if not self._live(walltime):
            return
        table = records.pr_table(*(convert.to_numpy(v).astype(np.float64) for v in (
            true_positive_counts, false_positive_counts, true_negative_counts, false_negative_counts, precision,
            recall)))
        self.run.log_table(self._names.media(tag, "table"), table, self._names.step(global_step))

    def add_mesh(self, tag: str, vertices: Any, colors: Any = None, faces: Any = None,
                 config_dict: dict[str, Any] | None = None, global_step: Any = None,
                 walltime: float | None = None) -> None:
        """Log a mesh or point cloud (B, N, 3) as a Plotly figure ``tag``: a ``mesh3d`` trace per batch element
        with ``faces``, else a ``scatter3d``; vertex colours kept; ``config_dict`` (three.js camera and lights)
        warns once."""
        if not self._live(walltime):
            return
        if config_dict:
            unsupported("SummaryWriter.add_mesh(config_dict=...)", "Plotly figures have no three.js config")
        figure = records.mesh_figure(convert.to_numpy(vertices),
                                     None if colors is None else convert.to_numpy(colors),
                                     None if faces is None else convert.to_numpy(faces))
        self.run.log_plot(self._names.media(tag, "plot"), figure, self._names.step(global_step))

    def add_embedding(self, mat: Any, metadata: Sequence[Any] | None = None, label_img: Any = None,
                      global_step: Any = None, tag: str = "default",
                      metadata_header: Sequence[str] | None = None) -> None:
        """Log an embedding (N x D) as the table ``embedding/<tag>``: columns ``dim_0`` ... and the metadata
        (one column ``label``, or one per ``metadata_header`` entry); ``label_img`` warns once."""
        if not self._live(None):
            return
        if label_img is not None:
            unsupported("SummaryWriter.add_embedding(label_img=...)", "the projector's sprite images")
        table = records.embedding_table(convert.to_numpy(mat), metadata, metadata_header)
        self.run.log_table(self._names.media(f"embedding/{tag}", "table"), table, self._names.step(global_step))

    def add_graph(self, model: Any, input_to_model: Any = None, verbose: bool = False,
                  use_strict_trace: bool = True) -> None:
        """Not supported (warns once): stepwire stores no model graphs."""
        unsupported("SummaryWriter.add_graph", "stepwire stores no model graphs")

    def add_onnx_graph(self, prototxt: Any) -> None:
        """Not supported (warns once): stepwire stores no model graphs."""
        unsupported("SummaryWriter.add_onnx_graph", "stepwire stores no model graphs")

    def add_custom_scalars(self, layout: Mapping[str, Any]) -> None:
        """Keep the custom-scalars ``layout`` in the run meta ``tensorboard_custom_scalars`` (stepwire's
        viewers do not draw it)."""
        if self._live(None):
            self.run.update_meta({"tensorboard_custom_scalars": dict(layout)})

    def add_custom_scalars_multilinechart(self, tags: Sequence[str], category: str = "default",
                                          title: str = "untitled") -> None:
        """``add_custom_scalars({category: {title: ["Multiline", tags]}})``."""
        self.add_custom_scalars({category: {title: ["Multiline", list(tags)]}})

    def add_custom_scalars_marginchart(self, tags: Sequence[str], category: str = "default",
                                       title: str = "untitled") -> None:
        """``add_custom_scalars({category: {title: ["Margin", tags]}})`` (``tags``: exactly 3)."""
        if len(tags) != 3:
            raise AssertionError("tags should have exactly 3 elements")
        self.add_custom_scalars({category: {title: ["Margin", list(tags)]}})

    # -- lifecycle ----------------------------------------------------------------------------------------
    def _get_file_writer(self) -> SummaryFileWriter:
        """torch's (private) file writer accessor, for code that writes summaries itself (MONAI's 3-D images):
        summaries given to it are stored as ``stepwire.compat.tensorboard.events`` decodes them."""
        return SummaryFileWriter(self)

    def get_logdir(self) -> str:
        """The directory TensorBoard would write to (``log_dir``)."""
        return self.log_dir

    def flush(self) -> None:
        """Wait until everything logged so far is stored."""
        if not (self._closed and self._owns_run):
            self.run.flush()

    def close(self) -> None:
        """Finish the writer's own run (one it was given is only flushed). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_run:
            self.run.finish()
        else:
            self.run.flush()

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<stepwire.compat.tensorboard.SummaryWriter log_dir={self.log_dir!r} run={self.run.id}>"
