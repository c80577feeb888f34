"""The stepwire names of what a SummaryWriter logs: TensorBoard's tags as they are (``TagNames``), or as ClearML
shows TensorBoard's output (``ClearMLNames``, its ``EventTrainsWriter`` rules)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from stepwire.compat.tensorboard.convert import step_of

if TYPE_CHECKING:
    from stepwire.compat.clearml.task import Task
    from stepwire.run import Run


class TagNames:
    """TensorBoard's names: every record under its tag; ``add_scalars``' keys as ``main_tag/key`` (TensorBoard
    writes each key to a sub-run ``<log_dir>/<main_tag>_<key>`` under the tag ``main_tag``; one stepwire run
    holds them as one series per key beside each other)."""

    def step(self, global_step: Any) -> int:
        """The stored step of ``global_step``: None is step 0 (TensorBoard's event without a step)."""
        return step_of(global_step)

    def scalar(self, tag: str) -> str:
        """The name of ``add_scalar(tag, ...)``."""
        return tag

    def scalars(self, main_tag: str, key: str) -> str:
        """The name of the entry ``key`` of ``add_scalars(main_tag, ...)``."""
        return f"{main_tag}/{key}"

    def histogram(self, tag: str) -> str:
        """The name of ``add_histogram(tag, ...)``."""
        return tag

    def media(self, tag: str, kind: str) -> str:
        """The name of an image, audio, text (``kind``: "image", "audio", "text") or other record of ``tag``."""
        return tag

    def hparams(self, run: Run, hparams: Mapping[str, Any]) -> None:
        """Record ``add_hparams``' hyper-parameters: merged into the run's config."""
        run.log_params(dict(hparams))


def split_tag(tag: str, parts: int, default_title: str, reduce: bool) -> tuple[str, str]:
    """ClearML's ``EventTrainsWriter.tag_splitter``: the last ``parts`` components of the "/"-separated tag joined
    with "_" are the series, the others (joined with "_") the title, ``default_title`` when there are none;
    ``reduce`` lowers ``parts`` to leave at least one component for the title."""
    split = tag.split("/")
    if reduce and parts > len(split) - 1:
        parts = max(1, len(split) - 1)
    return "_".join(split[:-parts]) or default_title, "_".join(split[-parts:])


class ClearMLNames(TagNames):
    """The names ClearML gives TensorBoard's output, joined ``title/series`` as the rest of the ClearML shim
    stores them (and recorded with the task, so that ``get_reported_scalars`` gives back the exact pairs).

    Scalars: tag ``a/b/c`` is title ``a_b``, series ``c``; a tag without "/" is title = series = tag.
    ``add_scalars(main_tag, {key: ...})``: title from ``main_tag`` (as a scalar tag), series ``key``.
    Histograms: as scalars, title ``Histograms`` for a tag without "/". Images, audio and text: up to three last
    components are the series (``a/b/c`` is ``a``, ``b_c``), default titles ``Images``, ``Audio``, ``Text``.
    ClearML's step wrap-around adjustment and report frequencies are not mirrored: steps are stored as given.
    """

    _DEFAULT_TITLES: ClassVar[dict[str, str]] = {"image": "Images", "audio": "Audio", "text": "Text"}

    def __init__(self, task: Task, report_hparams: bool = True) -> None:
        self._task = task
        self._report_hparams = report_hparams

    def step(self, global_step: Any) -> int:
        """The step plus the task's iteration offset (non-zero when continuing a task), as ``report_scalar``."""
        return step_of(global_step) + self._task._offset

    def _join(self, title: str, series: str) -> str:
        return self._task._scalar_name(title, series)

    def scalar(self, tag: str) -> str:
        """``title/series`` of a scalar tag."""
        return self._join(*split_tag(tag, 1, tag, False))

    def scalars(self, main_tag: str, key: str) -> str:
        """``title/key``: ClearML recovers ``key`` from the sub-run's directory name."""
        return self._join(split_tag(main_tag, 1, main_tag, False)[0], key)

    def histogram(self, tag: str) -> str:
        """``title/series`` of a histogram tag."""
        return self._join(*split_tag(tag, 1, "Histograms", False))

    def media(self, tag: str, kind: str) -> str:
        """``title/series`` of an image, audio or text tag (other records keep the scalar rule)."""
        if kind in self._DEFAULT_TITLES:
            return self._join(*split_tag(tag, 3, self._DEFAULT_TITLES[kind], True))
        return self.scalar(tag)

    def hparams(self, run: Run, hparams: Mapping[str, Any]) -> None:
        """ClearML's ``TB_hparams/<name>`` task parameters (unless ``report_hparams`` is off)."""
        if not self._report_hparams:
            return
        self._task._update_params({f"TB_hparams/{k}": str(v) for k, v in hparams.items()})
