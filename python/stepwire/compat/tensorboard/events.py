"""Summary protocol buffers as stepwire records: for code that bypasses the ``add_*`` methods and hands summaries
to the writer's file writer itself (``writer._get_file_writer().add_summary(summary, step)``, as MONAI's
``add_animated_gif`` does for 3-D images)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stepwire.compat.tensorboard.unsupported import unsupported

if TYPE_CHECKING:
    from stepwire.compat.tensorboard.writer import SummaryWriter


def store_summary(writer: SummaryWriter, summary: Any, global_step: Any) -> None:
    """Store each value of a ``Summary`` (or of an ``Event`` holding one) through ``writer``'s run and names:
    ``simple_value`` as a scalar, ``image`` (PNG or animated GIF as encoded) as an image, ``histo`` as
    ``add_histogram_raw`` does, ``audio`` as audio, text-plugin tensors as text, new-style scalar tensors as
    scalars; other values warn once."""
    if hasattr(summary, "summary") and hasattr(summary, "wall_time"):  # an Event
        if not summary.HasField("summary"):
            return
        global_step = summary.step if global_step is None else global_step
        summary = summary.summary
    run, names = writer.run, writer._names
    step = names.step(global_step)
    for value in summary.value:
        tag, kind = value.tag, value.WhichOneof("value")
        plugin = value.metadata.plugin_data.plugin_name
        if kind == "simple_value":
            run.log_scalar(names.scalar(tag), float(value.simple_value), step)
        elif kind == "image":
            run.log_media(names.media(tag, "image"), bytes(value.image.encoded_image_string), step, kind="image")
        elif kind == "audio":
            run.log_media(names.media(tag, "audio"), bytes(value.audio.encoded_audio_string), step, kind="audio")
        elif kind == "histo":
            from stepwire.compat.tensorboard.records import log_raw_histogram

            h = value.histo
            log_raw_histogram(run, names.histogram(tag), step, h.min, h.max, h.sum, list(h.bucket_limit),
                              list(h.bucket))
        elif kind == "tensor" and plugin == "text" and value.tensor.string_val:
            run.log_text(names.media(tag, "text"), value.tensor.string_val[0].decode("utf-8", "replace"), step)
        elif kind == "tensor" and plugin == "scalars" and (value.tensor.float_val or value.tensor.double_val):
            number = (value.tensor.float_val or value.tensor.double_val)[0]
            run.log_scalar(names.scalar(tag), float(number), step)
        else:
            unsupported(f"summary values of the {plugin or kind} plugin", "written to the file writer directly")


class SummaryFileWriter:
    """What ``SummaryWriter._get_file_writer()`` returns: torch's ``FileWriter`` calls, stored through the writer."""

    def __init__(self, writer: SummaryWriter) -> None:
        self._writer = writer

    def get_logdir(self) -> str:
        """The writer's ``log_dir``."""
        return self._writer.log_dir

    def add_summary(self, summary: Any, global_step: Any = None, walltime: float | None = None) -> None:
        """Store the values of ``summary`` at ``global_step`` (None: 0)."""
        if self._writer._live(walltime):
            store_summary(self._writer, summary, global_step)

    def add_event(self, event: Any, step: Any = None, walltime: float | None = None) -> None:
        """Store the summary an ``Event`` holds (other events carry nothing stepwire keeps)."""
        if self._writer._live(walltime):
            store_summary(self._writer, event, step)

    def flush(self) -> None:
        """As ``SummaryWriter.flush``."""
        self._writer.flush()

    def close(self) -> None:
        """Nothing to close: the SummaryWriter owns the run."""
