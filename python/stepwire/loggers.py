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

Here ``Logger`` is ``StepwireLogger``, the logger that stores; ``BaseLogger`` is itwinai's abstract ``Logger``
(which ``stepwire.compat.itwinai.loggers`` exports under that name, with name-alikes of itwinai's loggers).

Kinds: every kind itwinai names is accepted (``StepwireLogger.supported_kinds``); any other is ignored, as
itwinai's loggers do. How each is stored (``stepwire.logger_kinds``; the table is docs/compat/itwinai.md):

- ``metric``: a number, a scalar point (``Run.log_scalar``).
- ``torch``: a tensor or array, a histogram (``Run.log_histogram``); a DataLoader, a ``dataset`` record; another
  object (a model), ``torch.save``-d as the artifact ``identifier``.
- ``param``: a hyper-parameter, merged into the run's config (``Run.log_params``).
- ``dict``: a dict of numbers, one scalar per key named ``identifier/key`` at one step; nested dicts give
  ``identifier/outer/inner`` and array values become histograms (``Run.log``).
- ``text``: a ``str`` (``Run.log_text``).
- ``artifact``: the path of a file, stored with the run (``Run.log_artifact``) under the name ``identifier`` when
  that is a valid artifact name (letters, digits and ``._-/``), else under the file's name.
- ``figure``: a matplotlib figure (a PNG image) or a Plotly figure (``Run.log_plot``); ``image``: an array, a
  tensor or a PIL image (``Run.log_image``); both media records named ``identifier``.
- ``model``, ``best_model``: a ``torch.nn.Module``'s state dict, ``torch.save``-d as the artifact ``identifier``.
- ``dataset``: a text record ``identifier`` holding JSON ``{"type", "len", "repr"}`` (and a DataLoader's
  ``batch_size``).
- ``watch``: ``Run.watch(model)`` (``log=``/``log_freq=`` keywords as ``log``/``every``), once per model and
  context; gradients are logged as ``gradients/{name}`` histograms from then on.
- ``flops_pb``, ``flops_pe``, ``carbon``, ``execution_time``: scalars named ``identifier``. FLOPs may be given
  as a number or as ``(model, batch)`` / ``(model, dataset)``, counted with ``torch.utils.flop_counter``
  (per epoch: one sample times ``len(dataset)``, as yProv4ML counts); ``execution_time`` without an item logs
  the seconds since the context started; ``carbon`` needs the figure (stepwire measures none).
- ``system``: a number describing the machine, a scalar under ``system/`` (``system/identifier``) beside the run's
  own sampler (``stepwire.system``), at ``step`` or else the run's current step, without moving the step counter;
  without an item (Prov4ML's "sample now") the run's sampler covers it.
- ``prov_documents``: ignored, as itwinai's loggers other than Prov4ML's do.

``step=None`` uses the run's auto-incrementing step counter (every call without a step advances it), so pass
``step`` explicitly, as itwinai's trainers do, wherever the x axis matters.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from stepwire.logger_base import (
    BaseLogger,
    LogFreq,
    LogMixin,
    check_initialized,
    check_not_initialized,
    check_rank,
)
from stepwire.logger_kinds import KINDS, STORE, LogContext
from stepwire.ranks import detect_ranks
from stepwire.run import Run
from stepwire.start import init

log = logging.getLogger("stepwire")

# stepwire.init arguments the logger sets itself, with the logger argument to use instead
_RESERVED_INIT_ARGS = {"project": "experiment_id", "name": "run_id", "dir": "savedir", "rank": "start_logging(rank=)"}


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

    supported_kinds: tuple[str, ...] = KINDS

    def __init__(self, savedir: str | os.PathLike[str] = "mllogs", log_freq: LogFreq = "epoch",
                 log_on_workers: int | Sequence[int] = 0, experiment_id: str | None = None,
                 run_id: int | str | None = None, **init_kwargs: Any) -> None:
        super().__init__(savedir=savedir, log_freq=log_freq, log_on_workers=log_on_workers,
                         experiment_id=experiment_id, run_id=run_id)
        for key, instead in _RESERVED_INIT_ARGS.items():
            if key in init_kwargs:
                raise TypeError(f"{type(self).__name__}: pass {instead} instead of {key}=")
        inspect.signature(init).bind_partial(**init_kwargs)  # TypeError for an argument stepwire.init does not take
        self._init_kwargs = init_kwargs
        self._context: LogContext | None = None

    @property
    def run(self) -> Run | None:
        """The stepwire run being logged to; None outside the context and on ranks that do not log."""
        return self._context.run if self._context is not None else None

    def _job_rank(self, rank: int) -> int | None:
        """The rank to give ``stepwire.init``: ``rank`` when this process is one of a job of several (a launcher
        or ``torch.distributed`` says so, or the ranks share a run id through ``run_id=``/``$STEPWIRE_RUN_ID``),
        else None: a lone process owns its run, and ``rank`` only says which ``log_on_workers`` it is."""
        shared = self._init_kwargs.get("run_id") or os.environ.get("STEPWIRE_RUN_ID")
        if shared or self._init_kwargs.get("world_size") or detect_ranks().world_size > 1:
            return rank
        return None

    @check_not_initialized
    def create_logger_context(self, rank: int = 0, **kwargs: Any) -> Run | None:
        """Start logging as the worker of global rank ``rank``: create the run if this rank logs, and return it.

        ``run_name=`` overrides the run's name for this context; other keywords itwinai's trainers pass to their
        loggers (``run_id``, ``parent_run_id``, ...) are accepted and ignored. A second call before
        ``destroy_logger_context`` is skipped with itwinai's warning. In a single process any ``rank`` may be
        given: it selects what logs (``log_on_workers``) and the run is the process's own.
        """
        rank = check_rank(rank, "rank")
        self.worker_rank = rank
        if self.should_log():
            name = kwargs.get("run_name") or self._run_id
            args: dict[str, Any] = dict(self._init_kwargs)
            if self._experiment_id is not None:
                args["project"] = self._experiment_id
            if name is not None:
                args["name"] = str(name)
            if args.get("address") is None:
                args["dir"] = self.savedir
            self._context = LogContext(init(rank=self._job_rank(rank), **args))
            self._started(self._context.run)
        self.is_initialized = True
        return self.run

    def _started(self, run: Run) -> None:
        """Called with the run each time a context creates one (subclasses record their own details)."""

    @check_initialized
    def destroy_logger_context(self, status: str = "finished") -> None:
        """Stop logging: remove watch hooks and finish the run (flushing everything logged) with ``status``.

        ``RuntimeError`` if there is no context.
        """
        context, self._context = self._context, None
        self.is_initialized = False
        if context is not None:
            try:
                context.close()
            finally:
                context.run.finish(status)

    def _destroy_failed(self) -> None:
        if self.is_initialized:
            self.destroy_logger_context(status="failed")

    @check_initialized
    def save_hyperparameters(self, params: Mapping[str, Any]) -> None:
        """Merge ``params`` into the run's config (on ranks that log)."""
        if self._context is None or not self.should_log():
            return
        self._context.run.log_params(params)

    @check_initialized
    def log(self, item: Any, identifier: Any, kind: str = "metric", step: int | None = None,
            batch_idx: int | None = None, **kwargs: Any) -> None:
        """Log ``item`` as ``identifier`` of ``kind`` at ``step`` (None: the run's auto step), if
        ``should_log(batch_idx)``; see the module documentation for the kinds.

        ``RuntimeError`` outside the context; a kind itwinai does not name is ignored, as itwinai does;
        ``TypeError``/``ValueError`` from stepwire for an item that does not fit its kind. Keyword arguments are
        ``watch``'s ``log``/``log_freq``; others (itwinai's logger-specific ones, e.g. ``context``) are ignored.
        """
        store = STORE.get(kind)
        if store is None or self._context is None or not self.should_log(batch_idx):
            return
        store(self._context, item, identifier, step, kwargs)


Logger = StepwireLogger
"""``stepwire.loggers.Logger`` is ``StepwireLogger`` (itwinai's abstract ``Logger`` is ``BaseLogger`` here)."""


class LoggersCollection(BaseLogger):
    """Several loggers used as one: every call goes to each member, and each member filters for itself.

    As in itwinai, ``should_log`` of the collection is always True and every ``log`` call reaches every member
    (each ignores the kinds it does not handle); a member may be a user's own ``BaseLogger`` subclass: it gets
    the calls itwinai makes (``create_logger_context(rank=..., **kwargs)``, ``destroy_logger_context()``,
    ``save_hyperparameters(params=...)``, ``log(item=..., identifier=..., ...)``). Unlike itwinai, two loggers of
    the same type may be combined (e.g. two ``StepwireLogger`` with different ``log_freq``); the same object twice
    may not (``stepwire.compat.itwinai.loggers.LoggersCollection`` refuses the same type twice, as itwinai does).
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
        self._members_started: list[BaseLogger] = []

    def should_log(self, batch_idx: int | None = None) -> bool:
        """Always True: the members decide for themselves."""
        return True

    @check_not_initialized
    def create_logger_context(self, rank: int = 0, **kwargs: Any) -> None:
        """Create the context of every member (``rank`` and ``kwargs`` passed on).

        If one fails, the members already started are stopped (stepwire's as ``"failed"``) and the error is raised.
        """
        started: list[BaseLogger] = []
        try:
            for logger in self.loggers:
                logger.create_logger_context(rank=rank, **kwargs)
                started.append(logger)
        except BaseException:
            for logger in reversed(started):
                try:
                    logger._destroy_failed()
                except Exception as exc:
                    log.error("LoggersCollection: could not stop %s: %s", type(logger).__name__, exc)
            raise
        self._members_started = started
        self.worker_rank = rank
        self.is_initialized = True

    def _destroy_members(self, failed: bool) -> None:
        self.is_initialized = False
        members, self._members_started = self._members_started, []
        error: BaseException | None = None
        for logger in members:
            try:
                if failed:
                    logger._destroy_failed()
                else:
                    logger.destroy_logger_context()
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error

    @check_initialized
    def destroy_logger_context(self) -> None:
        """Stop every member this collection started; the first error is raised after all were tried."""
        self._destroy_members(failed=False)

    def _destroy_failed(self) -> None:
        if self.is_initialized:
            self._destroy_members(failed=True)

    @check_initialized
    def save_hyperparameters(self, params: dict[str, Any]) -> None:
        """Pass ``params`` to every member's ``save_hyperparameters``."""
        for logger in self.loggers:
            logger.save_hyperparameters(params=params)

    @check_initialized
    def log(self, item: Any, identifier: Any, kind: str = "metric", step: int | None = None,
            batch_idx: int | None = None, **kwargs: Any) -> None:
        """Pass the call to every member; each applies its own ``should_log(batch_idx)`` and kinds."""
        for logger in self.loggers:
            logger.log(item=item, identifier=identifier, kind=kind, step=step, batch_idx=batch_idx, **kwargs)


__all__ = ["BaseLogger", "LogFreq", "LogMixin", "Logger", "LoggersCollection", "StepwireLogger",
           "check_initialized", "check_not_initialized"]
