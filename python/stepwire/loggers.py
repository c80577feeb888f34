"""itwinai-style loggers: ``Logger(...)``, ``with logger.start_logging(rank):``, ``logger.log(item, identifier, kind)``.

A drop-in for training code written against ``itwinai.loggers``: the same constructor arguments, logging context,
``log``/``save_hyperparameters`` calls and ``log_freq``/``log_on_workers`` filtering, storing into stepwire::

    from stepwire.loggers import Logger

    logger = Logger(savedir="mllogs", log_freq=10, experiment_id="mnist", run_id="baseline")
    with logger.start_logging(rank=global_rank):
        logger.save_hyperparameters({"lr": 0.1})
        for epoch in range(epochs):
            for batch_idx, batch in enumerate(loader):
                ...
                logger.log(loss.item(), "train/loss", kind="metric", batch_idx=batch_idx)  # every 10th batch
            logger.log(acc, "val/acc", kind="metric", step=epoch)                         # every epoch

Kinds (``StepwireLogger.supported_kinds``):

- ``metric``: a number, stored as a scalar point (``Run.log_scalar``).
- ``torch``: a tensor or array of numbers, stored as a histogram (``Run.log_histogram``).
- ``param``: a hyper-parameter, merged into the run's config (``Run.log_params``).
- ``dict``: a dict of numbers, stored as one scalar per key named ``identifier/key`` at one step; nested dicts
  give ``identifier/outer/inner`` and array values become histograms (``Run.log``).
- ``text``: a ``str`` (``Run.log_text``).
- ``system``: a number describing the machine (itwinai's GPU and energy monitors log these), stored as a scalar
  under ``system/`` (``system/identifier``, unless ``identifier`` starts with ``system/`` already) beside the
  series the run's own sampler logs (``stepwire.system``), at ``step`` or else the run's current step, without
  moving the step counter.
- ``artifact``: the path of a file, stored with the run (``Run.log_artifact``) under the name ``identifier`` when
  that is a valid artifact name (letters, digits and ``._-/``), else under the file's name.

``step=None`` uses the run's auto-incrementing step counter (every call without a step advances it), so pass
``step`` explicitly, as itwinai's trainers do, wherever the x axis matters.
"""

from __future__ import annotations

import inspect
import logging
import numbers
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeAlias, TypeVar

from stepwire.names import check_artifact_name
from stepwire.run import Run, init
from stepwire.values import to_float

log = logging.getLogger("stepwire")

LogFreq: TypeAlias = int | Literal["epoch", "batch"]
"""How often ``log`` calls that pass a ``batch_idx`` are fulfilled: ``"epoch"``, ``"batch"`` or every n-th batch."""

_L = TypeVar("_L", bound="BaseLogger")

# stepwire.init arguments the logger sets itself, with the logger argument to use instead
_RESERVED_INIT_ARGS = {"project": "experiment_id", "name": "run_id", "dir": "savedir", "rank": "start_logging(rank=)"}


def _check_log_freq(value: object) -> LogFreq:
    """``value`` as a valid ``log_freq``, else ``ValueError``."""
    if isinstance(value, str) and value in ("epoch", "batch"):
        return "epoch" if value == "epoch" else "batch"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) > 0:
        return int(value)
    raise ValueError(f"log_freq must be 'epoch', 'batch' or an int > 0, got {value!r}")


def _check_rank(value: object, what: str) -> int:
    """``value`` as an int >= 0 (a worker rank), else ``TypeError``/``ValueError`` naming ``what``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}: {value!r:.80}")
    if int(value) < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
    return int(value)


def _check_log_on_workers(value: object) -> int | list[int]:
    """``value`` as a valid ``log_on_workers`` (-1, a rank, or a list of ranks), else ``TypeError``/``ValueError``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if int(value) < -1:
            raise ValueError(f"log_on_workers must be -1 (all workers), a rank >= 0 or a list of ranks, got {value}")
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_check_rank(rank, "every rank in log_on_workers") for rank in value]
    raise TypeError(f"log_on_workers must be an int (-1: all workers) or a list of ints, "
                    f"got {type(value).__name__}: {value!r:.80}")


class BaseLogger(ABC):
    """What every logger here shares: the ``log_freq``/``log_on_workers`` filter and the logging context.

    Subclasses implement ``create_logger_context``, ``destroy_logger_context``, ``log`` and
    ``save_hyperparameters``; ``log`` and ``save_hyperparameters`` raise ``RuntimeError`` outside the context.
    """

    #: The ``kind`` values ``log`` accepts.
    supported_kinds: tuple[str, ...] = ()

    def __init__(self, log_freq: LogFreq = "epoch", log_on_workers: int | Sequence[int] = 0) -> None:
        self.log_freq = log_freq
        self.log_on_workers = log_on_workers
        self.worker_rank: int = 0
        """Global rank of this process, set by ``create_logger_context``."""
        self.is_initialized: bool = False
        """True between ``create_logger_context`` and ``destroy_logger_context``."""

    @property
    def log_freq(self) -> LogFreq:
        """How often ``log`` calls with a ``batch_idx`` are fulfilled (see ``should_log``)."""
        return self._log_freq

    @log_freq.setter
    def log_freq(self, value: LogFreq) -> None:
        self._log_freq = _check_log_freq(value)

    @property
    def log_on_workers(self) -> int | list[int]:
        """The ranks that log: ``-1`` every rank, an int that rank only, a list the ranks in it."""
        return self._log_on_workers

    @log_on_workers.setter
    def log_on_workers(self, value: int | Sequence[int]) -> None:
        self._log_on_workers = _check_log_on_workers(value)

    def should_log(self, batch_idx: int | None = None) -> bool:
        """Whether a ``log`` call with ``batch_idx`` is fulfilled on this worker.

        First the worker filter: ``log_on_workers`` -1 passes every rank, an int only that rank, a list the
        ranks in it. Then: with no ``batch_idx`` (an epoch-level call) always; with an int ``log_freq`` when
        ``batch_idx % log_freq == 0``; else only when ``log_freq == "batch"``.
        """
        workers = self.log_on_workers
        if isinstance(workers, int):
            worker_ok = workers == -1 or workers == self.worker_rank
        else:
            worker_ok = self.worker_rank in workers
        if not worker_ok:
            return False
        if batch_idx is None:
            return True
        if isinstance(self.log_freq, int):
            return batch_idx % self.log_freq == 0
        return self.log_freq == "batch"

    @contextmanager
    def start_logging(self: _L, rank: int = 0) -> Iterator[_L]:
        """Context in which the logger logs: ``create_logger_context(rank)`` on entry, ``destroy_logger_context``
        on exit (with status ``"failed"`` when the block raised). Yields the logger.

        Example::

            with logger.start_logging(rank=0):
                logger.log(0.5, "loss", kind="metric", step=0)
        """
        self.create_logger_context(rank=rank)
        try:
            yield self
        except BaseException:
            self.destroy_logger_context(status="failed")
            raise
        self.destroy_logger_context()

    def _check_initialized(self) -> None:
        if not self.is_initialized:
            raise RuntimeError(f"{type(self).__name__} has not been initialized: log inside "
                               "'with logger.start_logging(rank):' or after logger.create_logger_context(rank)")

    def _check_kind(self, kind: str) -> None:
        if kind not in self.supported_kinds:
            raise ValueError(f"{type(self).__name__} does not support kind {kind!r}; "
                             f"supported kinds: {', '.join(self.supported_kinds)}")

    @abstractmethod
    def create_logger_context(self, rank: int = 0, **kwargs: Any) -> object:
        """Start logging as the worker of global rank ``rank``."""

    @abstractmethod
    def destroy_logger_context(self, status: str = "finished") -> None:
        """Stop logging; ``status`` says how the work ended (``"finished"`` or ``"failed"``)."""

    @abstractmethod
    def log(self, item: Any, identifier: str, kind: str = "metric", step: int | None = None,
            batch_idx: int | None = None, **kwargs: Any) -> None:
        """Log ``item`` as ``identifier`` of ``kind`` at ``step``, if ``should_log(batch_idx)``."""

    @abstractmethod
    def save_hyperparameters(self, params: Mapping[str, Any]) -> None:
        """Store the hyper-parameters ``params``."""


class StepwireLogger(BaseLogger):
    """An itwinai-style logger that stores into a stepwire run.

    Args:
        savedir: the stepwire data directory (``dir`` of ``stepwire.init``); unused when ``address`` is given.
        log_freq: ``"epoch"`` (calls with a ``batch_idx`` are ignored), ``"batch"`` (every call is fulfilled)
            or an int n > 0 (calls whose ``batch_idx`` is a multiple of n).
        log_on_workers: ``-1`` every rank logs, an int only that rank, a list (or tuple) the ranks in it. A rank
            that does not log creates no run, and its calls are no-ops.
        experiment_id: the run's project (default: ``"default"``).
        run_id: the run's name (default: generated).
        init_kwargs: more arguments of ``stepwire.init`` (``address``, ``config``, ``tags``, ``policy``, ...).

    Raises ``ValueError``/``TypeError`` for a bad ``log_freq``, ``log_on_workers`` or ``init_kwargs`` right away.
    One run is created per ``create_logger_context`` on a logging rank, and finished by ``destroy_logger_context``.
    """

    supported_kinds: tuple[str, ...] = ("metric", "torch", "param", "dict", "text", "artifact", "system")

    def __init__(self, savedir: str | os.PathLike[str] = "mllogs", log_freq: LogFreq = "epoch",
                 log_on_workers: int | Sequence[int] = 0, experiment_id: str | None = None,
                 run_id: int | str | None = None, **init_kwargs: Any) -> None:
        super().__init__(log_freq=log_freq, log_on_workers=log_on_workers)
        for key, instead in _RESERVED_INIT_ARGS.items():
            if key in init_kwargs:
                raise TypeError(f"{type(self).__name__}: pass {instead} instead of {key}=")
        inspect.signature(init).bind_partial(**init_kwargs)  # TypeError for an argument stepwire.init does not take
        self.savedir = Path(savedir)
        """The stepwire data directory runs go to (unless ``address`` is given)."""
        self._experiment_id = experiment_id
        self._run_id = run_id
        self._init_kwargs = init_kwargs
        self._run: Run | None = None

    @property
    def experiment_id(self) -> str | None:
        """The project runs are created in (None: stepwire's ``"default"``)."""
        return self._experiment_id

    @property
    def run_id(self) -> int | str | None:
        """The name given to runs (None: generated); the stepwire run id is ``logger.run.id``."""
        return self._run_id

    @property
    def run(self) -> Run | None:
        """The stepwire run being logged to; None outside the context and on ranks that do not log."""
        return self._run

    def create_logger_context(self, rank: int = 0, **kwargs: Any) -> Run | None:
        """Start logging as the worker of global rank ``rank``: create the run if this rank logs, and return it.

        ``run_name=`` overrides the run's name for this context; other keywords itwinai's trainers pass to their
        loggers (``run_id``, ``parent_run_id``, ...) are accepted and ignored. A second call before
        ``destroy_logger_context`` is ignored with a warning, as in itwinai.
        """
        if self.is_initialized:
            log.warning("%s: create_logger_context called twice; keeping the current context", type(self).__name__)
            return self._run
        rank = _check_rank(rank, "rank")
        self.worker_rank = rank
        if self.should_log():
            name = kwargs.get("run_name", self._run_id)
            args: dict[str, Any] = dict(self._init_kwargs)
            if self._experiment_id is not None:
                args["project"] = self._experiment_id
            if name is not None:
                args["name"] = str(name)
            if args.get("address") is None:
                args["dir"] = self.savedir
            self._run = init(rank=rank, **args)
        self.is_initialized = True
        return self._run

    def destroy_logger_context(self, status: str = "finished") -> None:
        """Stop logging: finish the run (flushing everything logged) with ``status``.

        ``RuntimeError`` if there is no context.
        """
        self._check_initialized()
        run, self._run = self._run, None
        self.is_initialized = False
        if run is not None:
            run.finish(status)

    def save_hyperparameters(self, params: Mapping[str, Any]) -> None:
        """Merge ``params`` into the run's config (on ranks that log)."""
        self._check_initialized()
        if self._run is None or not self.should_log():
            return
        self._run.log_params(params)

    def log(self, item: Any, identifier: str, kind: str = "metric", step: int | None = None,
            batch_idx: int | None = None, **kwargs: Any) -> None:
        """Log ``item`` as ``identifier`` of ``kind`` at ``step`` (None: the run's auto step), if
        ``should_log(batch_idx)``; see the module documentation for the kinds.

        ``RuntimeError`` outside the context; ``ValueError`` for a kind not in ``supported_kinds`` (on every
        rank, whether it logs or not); ``TypeError``/``ValueError`` from stepwire for an item that does not fit
        its kind. Other keyword arguments (itwinai's logger-specific ones) are ignored.
        """
        self._check_initialized()
        self._check_kind(kind)
        run = self._run
        if run is None or not self.should_log(batch_idx):
            return
        if kind == "metric":
            run.log_scalar(identifier, item, step)
        elif kind == "torch":
            run.log_histogram(identifier, item, step)
        elif kind == "param":
            run.log_params({identifier: item})
        elif kind == "dict":
            if not isinstance(item, Mapping):
                raise TypeError(f"kind 'dict' needs a dict for {identifier!r}, got {type(item).__name__}")
            run.log({identifier: item}, step)
        elif kind == "text":
            run.log_text(identifier, item, step)
        elif kind == "system":
            name = identifier if identifier.startswith("system/") else f"system/{identifier}"
            run._log_stats({name: to_float(name, item)}, run.step if step is None else step)
        else:  # artifact
            if not isinstance(item, (str, os.PathLike)):
                raise TypeError(f"kind 'artifact' needs a file path for {identifier!r}, got {type(item).__name__}")
            try:
                name = check_artifact_name(identifier)
            except ValueError:
                name = Path(item).name
            run.log_artifact(item, name=name, step=step)


Logger = StepwireLogger
"""``stepwire.loggers.Logger`` is ``StepwireLogger``, under itwinai's name."""


class LoggersCollection(BaseLogger):
    """Several loggers used as one: every call goes to each member, and each member filters for itself.

    ``should_log`` of the collection is always True; a ``log`` call reaches the members whose
    ``supported_kinds`` include its kind (``ValueError`` if none does). Unlike itwinai, two loggers of the same
    type may be combined (e.g. two ``StepwireLogger`` with different ``log_freq``); the same object twice may not.
    """

    def __init__(self, loggers: Sequence[BaseLogger]) -> None:
        super().__init__(log_freq="batch", log_on_workers=-1)
        self.loggers: list[BaseLogger] = list(loggers)
        """The members, in the order calls reach them."""
        for logger in self.loggers:
            if not isinstance(logger, BaseLogger):
                raise TypeError(f"LoggersCollection takes stepwire loggers, got {type(logger).__name__}")
        if len({id(logger) for logger in self.loggers}) != len(self.loggers):
            raise ValueError("LoggersCollection: the same logger is given more than once")
        self.supported_kinds = tuple(dict.fromkeys(k for logger in self.loggers for k in logger.supported_kinds))

    def should_log(self, batch_idx: int | None = None) -> bool:
        """Always True: the members decide for themselves."""
        return True

    def create_logger_context(self, rank: int = 0, **kwargs: Any) -> None:
        """Create the context of every member (``rank`` and ``kwargs`` passed on).

        If one fails, the members already started are stopped (status ``"failed"``) and the error is raised.
        """
        if self.is_initialized:
            log.warning("LoggersCollection: create_logger_context called twice; keeping the current context")
            return
        started: list[BaseLogger] = []
        try:
            for logger in self.loggers:
                logger.create_logger_context(rank=rank, **kwargs)
                started.append(logger)
        except BaseException:
            for logger in reversed(started):
                try:
                    logger.destroy_logger_context(status="failed")
                except Exception as exc:
                    log.error("LoggersCollection: could not stop %s: %s", type(logger).__name__, exc)
            raise
        self.worker_rank = rank
        self.is_initialized = True

    def destroy_logger_context(self, status: str = "finished") -> None:
        """Stop every member that has a context; the first error is raised after all were tried."""
        self._check_initialized()
        self.is_initialized = False
        error: BaseException | None = None
        for logger in self.loggers:
            if not logger.is_initialized:
                continue
            try:
                logger.destroy_logger_context(status=status)
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error

    def save_hyperparameters(self, params: Mapping[str, Any]) -> None:
        """Pass ``params`` to every member's ``save_hyperparameters``."""
        self._check_initialized()
        for logger in self.loggers:
            logger.save_hyperparameters(params)

    def log(self, item: Any, identifier: str, kind: str = "metric", step: int | None = None,
            batch_idx: int | None = None, **kwargs: Any) -> None:
        """Pass the call to every member that supports ``kind``; each applies its own ``should_log(batch_idx)``."""
        self._check_initialized()
        self._check_kind(kind)
        for logger in self.loggers:
            if kind in logger.supported_kinds:
                logger.log(item, identifier, kind=kind, step=step, batch_idx=batch_idx, **kwargs)


__all__ = ["BaseLogger", "LogFreq", "Logger", "LoggersCollection", "StepwireLogger"]
