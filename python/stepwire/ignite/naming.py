"""How each Ignite logger names what its handlers log: one small policy per upstream, shared handlers.

``Naming`` is stepwire's own scheme, which is the names of Ignite's ClearML handlers with stepwire's name being
``title/series``; ``SlashNaming`` is the scheme of Ignite's W&B and TensorBoard handlers. A policy also says
at which step a value is stored (ClearML shifts by a continued task's initial iteration; W&B drops steps lower
than the current one) and whether strings in an output are logged (W&B's handler logs them as text).
"""

from __future__ import annotations


class Naming:
    """stepwire's (and Ignite's ClearML handlers') names, every one built from a ``(title, series)`` pair:

    | handler | title | series |
    | --- | --- | --- |
    | OutputHandler | ``tag`` (one key) or ``tag/key1`` (nested keys) | ``key1`` or ``key2/...`` |
    | OptimizerParamsHandler | ``{tag/}{param_name}`` | the group index |
    | Weights/GradsScalarHandler | ``{tag/}{weights|grads}_{reduction}/{module}`` | the rest of the parameter name |
    | Weights/GradsHistHandler | ``{tag/}{weights|grads}_{module}`` | the rest of the parameter name |
    """

    log_text = False
    """Whether string values of an output are logged (as text records) instead of dropped with a warning."""

    def series(self, title: str, series: str) -> str:
        """The stored name of ``(title, series)``: ``title/series`` (``title`` alone for an empty series)."""
        return f"{title}/{series}" if series else title

    def output(self, tag: str | None, key: tuple[str, ...]) -> str | None:
        """The name of an output value under ``tag`` at the flattened key path ``key`` (None: not logged)."""
        if not tag:
            return "/".join(key)
        if len(key) == 1:
            return self.series(tag, key[0])
        return self.series(f"{tag}/{key[0]}", "/".join(key[1:]))

    def param(self, tag: str | None, param_name: str, index: int) -> str:
        """The name of ``param_name`` of parameter group ``index``."""
        return self.series(f"{_prefix(tag)}{param_name}", str(index))

    def reduced(self, tag: str | None, kind: str, reduction: str, param: str) -> str:
        """The name of ``reduction`` of parameter ``param``'s ``kind`` ("weights" or "grads")."""
        module, _, rest = param.partition(".")
        return self.series(f"{_prefix(tag)}{kind}_{reduction}/{module}", rest)

    def histogram(self, tag: str | None, kind: str, param: str) -> str:
        """The name of the histogram of parameter ``param``'s ``kind`` ("weights" or "grads")."""
        module, _, rest = param.partition(".")
        return self.series(f"{_prefix(tag)}{kind}_{module}", rest)

    def step(self, step: int) -> int | None:
        """The step to store a value reported at ``step`` at (None: drop it)."""
        return step


class SlashNaming(Naming):
    """Ignite's W&B and TensorBoard handlers' names: ``{tag}/{key}`` for outputs (nested keys joined by ``/``),
    ``{tag/}{param_name}/group_{i}``, ``{tag/}{kind}_{reduction}/{name}`` and ``{tag/}{kind}/{name}`` for
    histograms, with the parameter's dots as ``/``."""

    def output(self, tag: str | None, key: tuple[str, ...]) -> str | None:
        """``{tag}/{key1}/{key2}...``."""
        return "/".join((str(tag), *key))

    def param(self, tag: str | None, param_name: str, index: int) -> str:
        """``{tag/}{param_name}/group_{index}``."""
        return f"{_prefix(tag)}{param_name}/group_{index}"

    def reduced(self, tag: str | None, kind: str, reduction: str, param: str) -> str:
        """``{tag/}{kind}_{reduction}/{param with . as /}``."""
        return f"{_prefix(tag)}{kind}_{reduction}/{param.replace('.', '/')}"

    def histogram(self, tag: str | None, kind: str, param: str) -> str:
        """``{tag/}{kind}/{param with . as /}``."""
        return f"{_prefix(tag)}{kind}/{param.replace('.', '/')}"


def _prefix(tag: str | None) -> str:
    return f"{tag}/" if tag else ""
