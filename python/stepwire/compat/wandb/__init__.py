"""W&B-style scripts on stepwire: ``import stepwire.compat.wandb as wandb`` and the script runs unchanged.

``init`` starts a ``stepwire.Run`` (``wandb.run.stepwire_run``) and sets the module's ``run``, ``config`` and
``summary``; ``log``/``watch``/``define_metric``/``save``/``log_artifact``/``alert``/``finish`` go to it. What is
stored where (and what warns once, counted in ``unsupported_counts()``) is tabled in ``docs/compat/wandb.md``:

- ``init(project, name, config, tags, dir, id, mode)``: ``stepwire.init(project, name, config, tags, dir,
  run_id=id, mode)`` as a one-process run (W&B makes a run per ``init`` call, and scripts often call it on rank
  0 only: no collective with other ranks; a launcher's rank and world size go to the meta). ``project``
  defaults to ``$WANDB_PROJECT``, else "uncategorized"; ``mode`` to ``$WANDB_MODE``, else "online"
  ("offline"/"dryrun": the spool, deliver it with ``stepwire sync``; "disabled": a run whose calls are accepted
  and discarded, as W&B's). ``entity``, ``group``, ``job_type`` and ``notes`` go to the run's meta as
  ``{"wandb": {...}}``. ``sync_tensorboard=True`` captures what TensorBoard writers write
  (``stepwire.compat.tensorboard.patch``). ``reinit`` follows W&B; ``resume`` without ``id``, ``settings``,
  ``save_code``, ``anonymous`` and unknown keyword arguments warn once; stepwire's ``address``, ``token`` and
  ``tls_ca`` are passed on (a remote collector).
- names: nested dicts flatten with "." (``{"val": {"loss": x}}`` is ``val.loss``), as W&B shows them.
- steps: W&B's rules (``stepwire.compat.wandb.sdk_run``), except that a step lower than the current one is
  stored instead of dropped.
- ``summary``: the last value logged of each key, or what ``define_metric(summary=...)`` asks for, or what was
  set; stored in the run's meta as ``"summary"`` (``stepwire.Api().run(id).meta["summary"]``).
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from stepwire.compat.wandb import plot
from stepwire.compat.wandb.artifacts import Artifact
from stepwire.compat.wandb.data_types import Audio, Histogram, Html, Image, Molecule, Object3D, Table, Video
from stepwire.compat.wandb.plot import plot_table
from stepwire.compat.wandb.sdk_run import Config, Run, Summary
from stepwire.compat.wandb.unsupported import Error, UnsupportedWarning, unsupported_counts
from stepwire.compat.wandb.unsupported import unsupported as _unsupported
from stepwire.compat.wandb.wandb_metric import Metric
from stepwire.ranks import detect_ranks
from stepwire.runconfig import config_dict

__all__ = ["Artifact", "Audio", "Config", "Error", "Histogram", "Html", "Image", "Metric", "Molecule", "Object3D",
           "Run", "Settings", "Summary", "Table", "UnsupportedWarning", "Video", "alert", "config", "define_metric",
           "finish", "init", "log", "log_artifact", "login", "plot", "plot_table", "run", "save", "summary",
           "termerror", "termlog", "termwarn", "unsupported_counts", "unwatch", "watch"]

run: Run | None = None
"""The run ``init`` started (None before ``init`` and after ``finish``, as ``wandb.run``)."""
config: Config | None = None
"""The current run's config (``wandb.config``); None before the first ``init``."""
summary: Summary | None = None
"""The current run's summary (``wandb.summary``); None before the first ``init``."""

_MODES = {"online": "online", "offline": "offline", "dryrun": "offline", "disabled": "disabled",
          "run": "online"}


_STEPWIRE_ARGS = ("address", "token", "tls_ca")
"""Keyword arguments of ``init`` that W&B does not have, passed on to ``stepwire.init``: a remote collector."""


class Settings:
    """``wandb.Settings(**kwargs)``: accepted and kept; stepwire uses none of them (``init`` warns once)."""

    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)


def init(project: str | None = None, entity: str | None = None, config: Any = None, name: str | None = None,
         notes: str | None = None, tags: Sequence[str] | None = None, group: str | None = None,
         job_type: str | None = None, mode: str | None = None, dir: str | os.PathLike[str] | None = None,
         id: str | None = None, resume: bool | str | None = None, reinit: bool | str | None = None,
         settings: Settings | Mapping[str, Any] | None = None, sync_tensorboard: bool = False,
         save_code: bool | None = None, anonymous: str | None = None, **unknown: Any) -> Run:
    """Start a run (``stepwire.init``; the package docstring says how each argument maps) and make it the module's
    ``run``. While a run is going, as W&B: ``reinit=True``/``"finish_previous"`` finishes it first,
    ``"create_new"`` starts another beside it, and otherwise (W&B's default in scripts) it is returned."""
    import stepwire

    remote = {k: unknown.pop(k) for k in _STEPWIRE_ARGS if k in unknown}
    for key in unknown:
        _unsupported(f"wandb.init({key}=...)")
    for what, value in (("resume", resume if id is None else None), ("settings", settings),
                        ("save_code", save_code), ("anonymous", anonymous)):
        if value:
            _unsupported(f"wandb.init({what}=...)")
    if reinit not in (None, True, False, "default", "return_previous", "finish_previous", "create_new"):
        raise ValueError(f"reinit must be a bool or one of 'default', 'return_previous', 'finish_previous', "
                         f"'create_new', got {reinit!r}")
    mode = _MODES.get(mode or os.environ.get("WANDB_MODE", "online"))
    if mode is None:
        raise Error('mode must be one of "online", "offline", "disabled"')
    if run is not None:
        if reinit in (True, "finish_previous"):
            run.finish()
        elif reinit != "create_new":
            return run  # W&B's default outside notebooks: the run already going
    values = config_dict(config)
    project = project or os.environ.get("WANDB_PROJECT") or "uncategorized"
    name = name or os.environ.get("WANDB_NAME") or None
    id = id or os.environ.get("WANDB_RUN_ID") or None
    extra: dict[str, Any] = {"log_on_ranks": []} if mode == "disabled" else {}
    # one run per init call, as W&B: never a collective with other ranks (W&B scripts often init on rank 0 only)
    ranks = detect_ranks()
    sw = stepwire.init(project=project, name=name, config=values, tags=list(tags) if tags else None, dir=dir,
                       mode="offline" if mode == "offline" else "online", run_id=id, rank=0, world_size=1,
                       **remote, **extra)
    started = Run(sw, entity=entity, group=group, job_type=job_type, notes=notes, mode=mode, tags=tags)
    meta: dict[str, Any] = {k: v for k, v in (("entity", entity), ("group", group), ("job_type", job_type),
                                              ("notes", notes)) if v is not None}
    if ranks.world_size > 1:
        meta.update(rank=ranks.rank, world_size=ranks.world_size)
    if meta and sw.active:
        sw.update_meta({"wandb": meta})
    _adopt(started)
    _finish_on_uncaught_exception()
    if sync_tensorboard:
        from stepwire.compat import tensorboard  # type: ignore[attr-defined,unused-ignore]

        tensorboard.patch(run=sw)

        def stop_capture() -> None:  # only this run's capture: a later patch() for another run stays
            if tensorboard.patched_run() is sw:
                tensorboard.unpatch()

        started._on_finish.append(stop_capture)
    return started


_live: list[Run] = []
"""Runs started and not finished (more than one with ``reinit="create_new"``): finished at exit."""


def _adopt(new: Run) -> None:
    global run, config, summary
    run, config, summary = new, new.config, new.summary
    _live.append(new)


def _forget(finished: Run) -> None:
    """``finish`` of ``finished``: the module's ``run`` becomes None (config and summary stay readable)."""
    global run
    if run is finished:
        run = None
    if finished in _live:
        _live.remove(finished)


def _current(what: str) -> Run:
    if run is None:
        raise Error(f"You must call wandb.init() before {what}()")
    return run


def log(data: Mapping[str, Any], step: int | None = None, commit: bool | None = None) -> None:
    """``run.log`` of the current run."""
    _current("wandb.log").log(data, step=step, commit=commit)


def define_metric(name: str, step_metric: str | Metric | None = None, step_sync: bool | None = None,
                  hidden: bool | None = None, summary: str | None = None, goal: str | None = None,
                  overwrite: bool | None = None) -> Metric:
    """``run.define_metric`` of the current run."""
    return _current("wandb.define_metric").define_metric(name, step_metric, step_sync, hidden, summary, goal,
                                                         overwrite)


def watch(models: Any, criterion: Any = None, log: str | None = "gradients", log_freq: int = 1000,
          idx: int | None = None, log_graph: bool = False) -> None:
    """``run.watch`` of the current run."""
    _current("wandb.watch").watch(models, criterion, log, log_freq, idx, log_graph)


def unwatch(models: Any = None) -> None:
    """``run.unwatch`` of the current run."""
    _current("wandb.unwatch").unwatch(models)


def save(glob_str: str | os.PathLike[str] | None = None, base_path: str | os.PathLike[str] | None = None,
         policy: str = "live") -> bool | list[str]:
    """``run.save`` of the current run."""
    return _current("wandb.save").save(glob_str, base_path, policy)


def log_artifact(artifact_or_path: Artifact | str | os.PathLike[str], name: str | None = None,
                 type: str | None = None, aliases: Sequence[str] | None = None,
                 tags: Sequence[str] | None = None) -> Artifact:
    """``run.log_artifact`` of the current run."""
    return _current("wandb.log_artifact").log_artifact(artifact_or_path, name, type, aliases, tags)


def alert(title: str, text: str, level: Any = None, wait_duration: Any = None) -> None:
    """``run.alert`` of the current run."""
    _current("wandb.alert").alert(title, text, level, wait_duration)


def finish(exit_code: int | None = None, quiet: bool | None = None) -> None:
    """Finish the current run (nothing if there is none)."""
    if run is not None:
        run.finish(exit_code, quiet)


def login(anonymous: str | None = None, key: str | None = None, relogin: bool | None = None,
          host: str | None = None, force: bool | None = None, timeout: int | None = None, **kwargs: Any) -> bool:
    """Nothing to log in to: returns True."""
    return True


def termlog(string: str = "", newline: bool = True, repeat: bool = True, prefix: bool = True) -> None:
    """Print ``string`` to stderr as W&B's terminal messages are (``wandb: ...``)."""
    print(f"wandb: {string}" if prefix else string, end="\n" if newline else "", file=sys.stderr)


def termwarn(string: str, newline: bool = True, repeat: bool = True, prefix: bool = True) -> None:
    """``termlog`` with W&B's ``WARNING`` prefix."""
    termlog(f"WARNING {string}", newline, repeat, prefix)


def termerror(string: str, newline: bool = True, repeat: bool = True, prefix: bool = True) -> None:
    """``termlog`` with W&B's ``ERROR`` prefix."""
    termlog(f"ERROR {string}", newline, repeat, prefix)


_hook_installed = False


def _finish_on_uncaught_exception() -> None:
    """Wrap ``sys.excepthook`` (once, after stepwire's own) so that an uncaught exception finishes the current run
    with exit code 1 as W&B does, storing ``run.dir`` first, before stepwire marks its runs failed."""
    global _hook_installed
    if _hook_installed:
        return
    _hook_installed = True
    previous = sys.excepthook

    def hook(tp: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        for live in list(_live):
            try:
                live.finish(exit_code=1)
            except Exception as exc:  # the original hook must still run
                print(f"stepwire.compat.wandb: finishing run {live.id} failed: {exc}", file=sys.stderr)
        previous(tp, value, tb)

    sys.excepthook = hook


@atexit.register
def _finish_at_exit() -> None:
    """Runs before the stepwire runs are finished at exit (registered later), so that ``run.dir`` is stored."""
    for live in list(_live):
        live.finish()
