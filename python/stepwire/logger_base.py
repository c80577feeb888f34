"""itwinai's abstract ``Logger`` (``BaseLogger`` here): the ``log_freq``/``log_on_workers`` filter, the logging
context, and itwinai's ``check_initialized``/``check_not_initialized`` decorators with their messages.

``stepwire.loggers`` builds the logger that stores into stepwire on it; ``stepwire.compat.itwinai.loggers``
exports it as ``Logger`` for users' own subclasses.
"""

from __future__ import annotations

import functools
import logging
import numbers
import os
import pickle
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeAlias, TypeVar, cast

log = logging.getLogger("stepwire")

LogFreq: TypeAlias = int | Literal["epoch", "batch"]
"""How often ``log`` calls that pass a ``batch_idx`` are fulfilled: ``"epoch"``, ``"batch"`` or every n-th batch."""

_L = TypeVar("_L", bound="BaseLogger")
_F = TypeVar("_F", bound=Callable[..., Any])


def _check_log_freq(value: object) -> LogFreq:
    """``value`` as a valid ``log_freq``, else ``ValueError`` (itwinai's message)."""
    if isinstance(value, str) and value in ("epoch", "batch"):
        return "epoch" if value == "epoch" else "batch"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) > 0:
        return int(value)
    raise ValueError(f"Wrong value for 'log_freq'. Supported values are: ['epoch', 'batch'] or int > 0. "
                     f"Received: {value}")


def check_rank(value: object, what: str) -> int:
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
        return [check_rank(rank, "every rank in log_on_workers") for rank in value]
    raise TypeError(f"log_on_workers must be an int (-1: all workers) or a list of ints, "
                    f"got {type(value).__name__}: {value!r:.80}")


def check_initialized(method: _F) -> _F:
    """Decorator for logger methods: ``RuntimeError`` (itwinai's message) unless the logger is initialized."""

    @functools.wraps(method)
    def wrapper(self: BaseLogger, *args: Any, **kwargs: Any) -> Any:
        if not self.is_initialized:
            raise RuntimeError(f"{type(self).__name__} has not been initialized. Use either the ``start_logging`` "
                               "context or the ``create_logger_context`` method.")
        return method(self, *args, **kwargs)

    return cast(_F, wrapper)


def check_not_initialized(method: _F) -> _F:
    """Decorator for ``create_logger_context``: a second initialization is skipped (returning None) with
    itwinai's warning "Trying to initialize X twice.. Skipping initialization." on the ``stepwire`` logger."""

    @functools.wraps(method)
    def wrapper(self: BaseLogger, *args: Any, **kwargs: Any) -> Any:
        if self.is_initialized:
            log.warning("Trying to initialize %s twice.. Skipping initialization.", type(self).__name__)
            return None
        return method(self, *args, **kwargs)

    return cast(_F, wrapper)


class LogMixin(ABC):
    """What can ``log``: itwinai's ``LogMixin``."""

    @abstractmethod
    def log(self, item: Any, identifier: Any, kind: str = "metric", step: int | None = None,
            batch_idx: int | None = None, **kwargs: Any) -> None:
        """Log ``item`` as ``identifier`` (a name) of ``kind`` at ``step``, if ``should_log(batch_idx)``."""


class BaseLogger(LogMixin):
    """itwinai's abstract ``Logger``: the ``log_freq``/``log_on_workers`` filter and the logging context.

    Subclasses implement ``create_logger_context(rank=0, **kwargs)`` (setting ``worker_rank`` and
    ``is_initialized``), ``destroy_logger_context()``, ``log`` and ``save_hyperparameters``; the decorators
    ``check_initialized`` and ``check_not_initialized`` give them itwinai's checks.

    Args:
        savedir: where the logger keeps its files.
        log_freq: ``"epoch"`` (calls with a ``batch_idx`` are ignored), ``"batch"`` (every call is fulfilled)
            or an int n > 0 (calls whose ``batch_idx`` is a multiple of n).
        log_on_workers: ``-1`` every rank logs, an int only that rank, a list (or tuple) the ranks in it.
        experiment_id, run_id: kept as the properties of those names.
    """

    #: The ``kind`` values ``log`` handles.
    supported_kinds: tuple[str, ...] = ()
    #: Global rank of this process, set by ``create_logger_context``.
    worker_rank: int = 0
    #: True between ``create_logger_context`` and ``destroy_logger_context``.
    is_initialized: bool = False

    def __init__(self, savedir: str | os.PathLike[str] = "mllogs", log_freq: LogFreq = "epoch",
                 log_on_workers: int | Sequence[int] = 0, experiment_id: str | None = None,
                 run_id: int | str | None = None) -> None:
        self.savedir = Path(savedir)
        """Where the logger keeps its files (for stepwire's loggers: the data directory runs go to)."""
        self.log_freq = log_freq
        self.log_on_workers = log_on_workers
        self._experiment_id = experiment_id
        self._run_id = run_id

    @property
    def experiment_id(self) -> str | None:
        """The experiment (for stepwire's loggers: the project runs are created in; None: ``"default"``)."""
        return self._experiment_id

    @property
    def run_id(self) -> int | str | None:
        """The run's id as given (for stepwire's loggers: the run name; the stepwire id is ``logger.run.id``)."""
        return self._run_id

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
        """Context in which the logger logs: ``create_logger_context(rank=rank)`` on entry,
        ``destroy_logger_context()`` on exit (stepwire's loggers mark their run ``"failed"`` when the block
        raised). Yields the logger (itwinai's yields None).

        Example::

            with logger.start_logging(rank=0):
                logger.log(0.5, "loss", kind="metric", step=0)
        """
        self.create_logger_context(rank=rank)
        try:
            yield self
        except BaseException:
            self._destroy_failed()
            raise
        self.destroy_logger_context()

    def _destroy_failed(self) -> None:
        """``destroy_logger_context`` after the logging block raised (stepwire's loggers record the failure)."""
        self.destroy_logger_context()

    def serialize(self, obj: Any, identifier: str) -> str:
        """Pickle ``obj`` to ``savedir/identifier`` (parents created) and return that path."""
        path = self.savedir / identifier
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump(obj, f)
        return str(path)

    @abstractmethod
    def create_logger_context(self, rank: int = 0, **kwargs: Any) -> Any:
        """Start logging as the worker of global rank ``rank``."""

    @abstractmethod
    def destroy_logger_context(self) -> None:
        """Stop logging."""

    @abstractmethod
    def save_hyperparameters(self, params: dict[str, Any]) -> None:
        """Store the hyper-parameters ``params``."""


__all__ = ["BaseLogger", "LogFreq", "LogMixin", "check_initialized", "check_not_initialized"]
