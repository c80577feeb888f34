"""Media records on the client: images, audio, video, HTML, Plotly figures and tables; the public entry points
behind ``Run.log_image``, ``log_media``, ``log_plot``, ``log_table`` and ``stepwire.Image``.

A logging call checks what it is given and keeps a private copy (``stepwire.media_capture``: an array or a PIL
image copied, a file hard linked or copied, bytes referenced); converting and encoding (PNG, Parquet) happen on
the run's media thread (``stepwire.media_thread.MediaEncoder``), which writes each record to the run's staging
directory and hands it to the sender thread as an artifact upload carrying ``MediaInfo``. The collector checks it
again (``stepwire.mediatypes``) and stores its content once per sha256.

How arrays become pixels (layouts, values, batches as grids) is ``stepwire.media_images``; plots and tables are
``stepwire.media_tables``.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy.typing as npt

from stepwire import mediatypes
from stepwire.artifacts import stage_file
from stepwire.media_capture import prepare_encoded, prepare_image
from stepwire.media_images import make_grid as make_grid
from stepwire.media_tables import encode_parquet, plot_json, table_columns
from stepwire.media_thread import IDLE_STATS as IDLE_STATS
from stepwire.media_thread import Encoded, Job
from stepwire.media_thread import MediaEncoder as MediaEncoder
from stepwire.mediatypes import MAX_MEDIA_BYTES, PARQUET_MIME, PLOTLY_MIME
from stepwire.names import check_name

if TYPE_CHECKING:
    from stepwire.run import Run


class Image:
    """An image for ``Run.log({...})`` (or ``log_image``): an array (HW, HWC, CHW; uint8 or float in [0, 1]), a
    PIL image, a path or encoded bytes (PNG/JPEG/GIF/WebP), with an optional caption. The values are copied
    here: later changes to ``data`` do not reach what is logged."""

    def __init__(self, data: Any, caption: str | None = None) -> None:
        self.caption = caption or ""
        mediatypes.check_info("image", "image/png", self.caption)
        self._make, self._nbytes = prepare_image("image", data, grid=True, staging=None)

    def __repr__(self) -> str:
        return f"<stepwire.Image caption={self.caption!r:.40}>"


def _submit(run: Run, step: int | None, caption: str | None, nbytes: int,
            make: Callable[[], list[Encoded]]) -> None:
    """Queue a record for the run's media thread at ``step`` (None: the run's current step)."""
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
        make, nbytes = prepare_image(name, image, grid, run._staging)
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
    make, nbytes = prepare_encoded(name, data, kind, run._staging)
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
        source = stage_file(path, run._staging)
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
