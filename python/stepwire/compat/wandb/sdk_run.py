"""``wandb.Run`` over a ``stepwire.Run``: W&B's step rules, config, summary, metrics, watch, files and artifacts.

Steps follow W&B (``wandb/sdk/wandb_run.py``): the current step starts at 0; ``log(data)`` stores at it and then
moves to the next; ``commit=False`` stores at it and stays; ``log(data, step=s)`` with ``s`` above the current
step moves the current step to ``s`` and stores there without moving on (the next call without ``step`` stores
there too, then moves on); ``s`` equal to it merges. ``s`` below it: W&B drops the data with a warning;
stepwire stores it at ``s`` (its series are kept per name, so a lower step harms nothing) and leaves the current
step as it is. ``_step``, ``_runtime`` and ``_timestamp`` are not stored as series (every point has its step and
wall time).
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from stepwire.compat.wandb.history import History
from stepwire.compat.wandb.unsupported import Error, unsupported
from stepwire.compat.wandb.wandb_metric import Metric, Metrics, make_metric
from stepwire.runconfig import RunConfig
from stepwire.summary import RunSummary
from stepwire.values import flatten

if TYPE_CHECKING:
    import torch
    from stepwire.compat.wandb.artifacts import Artifact
    from stepwire.run import Run as StepwireRun
    from stepwire.torch.watch import WatchHandle


class Config(RunConfig):
    """``wandb.config``: ``RunConfig`` with W&B's rule that a key's value changes only with
    ``update(..., allow_val_change=True)`` (``ValueError`` otherwise)."""

    strict_changes = True


class Summary(RunSummary):
    """``wandb.summary``/``run.summary``: ``RunSummary`` fed with every logged value (W&B's semantics)."""


class Run:
    """A W&B-style run; ``stepwire_run`` is the ``stepwire.Run`` it writes to."""

    def __init__(self, stepwire_run: StepwireRun, *, entity: str | None = None, group: str | None = None,
                 job_type: str | None = None, notes: str | None = None, mode: str = "online",
                 tags: Sequence[str] | None = None) -> None:
        self.stepwire_run = stepwire_run
        """The ``stepwire.Run`` this run writes to (for code that mixes both APIs)."""
        self._tags = tuple(tags or ())
        self.entity, self.group, self.job_type, self.notes = entity, group, job_type, notes
        self.mode = mode
        self.start_time = time.time()
        self.config = Config(stepwire_run, stepwire_run._initial_config)
        """The run's config (W&B's ``run.config``; stored as the stepwire run's config). The same object as
        ``stepwire_run.config``."""
        self._metrics = Metrics()
        self.summary = Summary(stepwire_run)
        """The run's summary (stored in the stepwire run's meta as ``"summary"`` when set and at finish). The same
        object as ``stepwire_run.summary``."""
        self.summary.set_policy(self._metrics.summary_modes, self._metrics.goal)
        stepwire_run.__dict__["_config"] = self.config  # one config and one summary, whichever API reaches them
        stepwire_run.__dict__["_summary"] = self.summary
        self._history = History(stepwire_run, self._metrics)
        self._step = 0
        self._watches: list[tuple[torch.nn.Module, WatchHandle]] = []
        self._watched = 0  # models watched so far (W&B's global watch index)
        self._saved: list[tuple[str, str, str]] = []  # (glob, base path, policy) of save(): stored at finish
        self._finished = False
        self._on_finish: list[Callable[[], None]] = []  # e.g. undoing sync_tensorboard's patch
        self._tmp_dir = False
        self.dir = self._files_dir()
        """W&B's ``run.dir``: files written here are stored as artifacts of the run at ``finish``, named by their
        path relative to it (``{data dir}/wandb/run-{date}-{id}/files``, or a temporary directory for a run
        logging to a remote collector or disabled)."""

    def _files_dir(self) -> str:
        run = self.stepwire_run
        if run.dir is None or not run.active:
            self._tmp_dir = True  # removed at finish, once its files are stored
            return tempfile.mkdtemp(prefix=f"wandb-run-{run.id}-")
        stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(self.start_time))
        path = Path(run.dir) / "wandb" / f"run-{stamp}-{run.id}" / "files"
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    # -- W&B's properties --------------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        """The run id (``stepwire.Api().run(id)`` reads it back)."""
        return self.stepwire_run.id

    @property
    def name(self) -> str:
        """The run's display name. Setting it (``run.name = ...``) keeps the stored name (stepwire does not rename
        runs) and records the new one in the run's meta as ``{"wandb": {"name": ...}}``."""
        return self.stepwire_run.name

    @name.setter
    def name(self, value: str) -> None:
        self.stepwire_run.name = str(value)
        self._meta("name", str(value))

    @property
    def tags(self) -> tuple[str, ...]:
        """The run's tags; setting them records the new ones in the run's meta as ``{"wandb": {"tags": [...]}}``
        (the stored tags stay those given to ``init``)."""
        return self._tags

    @tags.setter
    def tags(self, value: Sequence[str]) -> None:
        self._tags = tuple(value)
        self._meta("tags", list(self._tags))

    def _meta(self, key: str, value: Any) -> None:
        if self.stepwire_run.active and not self.stepwire_run._finished:
            self.stepwire_run.update_meta({"wandb": {key: value}})

    @property
    def project(self) -> str:
        """The run's project."""
        return self.stepwire_run.project

    @property
    def step(self) -> int:
        """The current W&B step (where the next ``log`` without ``step`` stores)."""
        return self._step

    @property
    def offline(self) -> bool:
        """Whether the run writes only to the spool (``mode="offline"``; deliver with ``stepwire sync``)."""
        return self.mode == "offline"

    @property
    def disabled(self) -> bool:
        """Whether every call is accepted and discarded (``mode="disabled"``)."""
        return self.mode == "disabled"

    @property
    def url(self) -> None:
        """W&B's page of the run: stepwire has none per run (read it with ``stepwire.Api`` or the dashboard)."""
        return None

    def _check(self, what: str) -> None:
        if self._finished:
            raise Error(f"You must call wandb.init() before {what}() (this run is finished)")

    # -- logging -----------------------------------------------------------------------------------------------
    def log(self, data: Mapping[str, Any], step: int | None = None, commit: bool | None = None) -> None:
        """Store ``data`` at the W&B step (module docstring); nested dicts as ``outer.inner`` names."""
        self._check("wandb.log")
        if not isinstance(data, Mapping):
            raise TypeError("wandb.log must be passed a dictionary")
        if any(not isinstance(key, str) for key in data):
            raise TypeError("Key values passed to `wandb.log` must be strings.")
        if step is not None and not isinstance(step, int):
            step = int(step)
        at = self._step
        if step is not None:
            if step > self._step:
                self._step = at = step
            elif step < self._step:
                at = step  # W&B drops this; stepwire stores it where it was logged
        plain = all(type(v) is float or type(v) is int for v in data.values())  # nothing nested: as it is
        flat = data if plain else flatten(data, sep=".")
        if self.stepwire_run.active:
            self.summary.observe(self._history.log(flat, at, numbers=plain))
        if (step is None and commit is None) or commit:
            self._step += 1

    def define_metric(self, name: str, step_metric: str | Metric | None = None, step_sync: bool | None = None,
                      hidden: bool | None = None, summary: str | None = None, goal: str | None = None,
                      overwrite: bool | None = None) -> Metric:
        """Define how ``name`` (or names ending in a glob ``*``) is stored: at ``step_metric``'s value as the step,
        and which aggregates the summary keeps (``summary="min,max"``; ``"none"`` keeps none). ``hidden``
        and ``overwrite`` are accepted and have no effect."""
        self._check("define_metric")
        metric = make_metric(name, step_metric, step_sync, hidden, summary, goal, overwrite)
        self._metrics.add(metric)
        return metric

    def alert(self, title: str, text: str, level: Any = None, wait_duration: Any = None) -> None:
        """Store an alert as the text record ``alert/{title}`` (``"{LEVEL}: {text}"``, default level INFO) at the
        current step; nothing is sent anywhere."""
        self._check("alert")
        level_name = getattr(level, "value", level) or "INFO"
        self.stepwire_run.log_text(f"alert/{title}", f"{level_name}: {text}", step=self._step)

    # -- models ------------------------------------------------------------------------------------------------
    def watch(self, models: Any, criterion: Any = None, log: str | None = "gradients", log_freq: int = 1000,
              idx: int | None = None, log_graph: bool = False) -> None:
        """``stepwire.Run.watch(model, log, every=log_freq)`` for each model: histograms ``gradients/{param}``
        and/or ``parameters/{param}`` as W&B names them, plus stepwire's ``/norm``, ``/min``, ``/max``, ``/mean``,
        ``/nonfinite`` scalars. ``log_graph`` and W&B's ``graph_{i}`` prefix of models after the first are not
        supported (warn once); ``criterion`` is accepted and unused, as in W&B."""
        self._check("watch")
        if log_graph:
            unsupported("watch(log_graph=True)", "no model graph is stored")
        if log not in ("gradients", "parameters", "all", None):
            raise ValueError("log must be one of 'gradients', 'parameters', 'all', or None")
        models = list(models) if isinstance(models, (list, tuple)) else [models]
        if len(models) > 1 or idx or self._watched:  # W&B names the parameters of a second model graph_{i}...
            unsupported("watch of several models", "their parameters share the names gradients/{param}")
        self._watched += len(models)
        if log is None:
            return
        for model in models:
            self._watches.append((model, self.stepwire_run.watch(model, log=log, every=max(1, int(log_freq)))))

    def unwatch(self, models: Any = None) -> None:
        """Stop watching ``models`` (default: every watched model)."""
        chosen = None if models is None else (list(models) if isinstance(models, (list, tuple)) else [models])
        keep = []
        for model, handle in self._watches:
            if chosen is None or any(model is m for m in chosen):
                handle.remove()
            else:
                keep.append((model, handle))
        self._watches = keep

    # -- files -------------------------------------------------------------------------------------------------
    def save(self, glob_str: str | os.PathLike[str] | None = None, base_path: str | os.PathLike[str] | None = None,
             policy: str = "live") -> bool | list[str]:
        """Store the files matching ``glob_str`` as artifacts named by their path relative to ``base_path``
        (default: the glob's directory): ``policy="now"`` at the call, ``"live"``/``"end"`` at ``finish`` (the
        files then matching, as they are then). Returns the names W&B gives them."""
        self._check("save")
        if glob_str is None:
            unsupported("save() without a glob")
            return False
        if policy not in ("live", "end", "now"):
            raise ValueError('Only "live", "end" and "now" policies are currently supported.')
        pattern = os.fspath(glob_str)
        base = os.fspath(base_path) if base_path is not None else os.path.dirname(pattern)
        names = [os.path.relpath(p, base) for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)]
        if policy == "now":
            self._store_files(pattern, base)
        else:
            self._saved.append((pattern, base, policy))
        return names

    def _store_files(self, pattern: str, base: str) -> None:
        for path in sorted(glob.glob(pattern, recursive=True)):
            if os.path.isfile(path):
                self.stepwire_run.log_artifact(path, name=Path(os.path.relpath(path, base)).as_posix(),
                                               step=self._step)

    def log_artifact(self, artifact_or_path: Artifact | str | os.PathLike[str], name: str | None = None,
                     type: str | None = None, aliases: Sequence[str] | None = None,
                     tags: Sequence[str] | None = None) -> Artifact:
        """Store every file of the artifact as ``{artifact name}/{path in the artifact}``; its type, aliases,
        description and metadata go to the run's meta under ``"artifacts"`` (``stepwire.compat.wandb.artifacts``)."""
        from stepwire.compat.wandb.artifacts import log_artifact

        self._check("log_artifact")
        return log_artifact(self, artifact_or_path, name, type, aliases, tags)

    def log_model(self, path: str | os.PathLike[str], name: str | None = None,
                  aliases: Sequence[str] | None = None) -> None:
        """``log_artifact`` of ``path`` (a file or directory) with type "model"."""
        self.log_artifact(path, name=name, type="model", aliases=aliases)

    def log_code(self, root: str | os.PathLike[str] | None = ".", name: str | None = None,
                 include_fn: Callable[..., bool] = lambda path, root=None: path.endswith(".py"),
                 exclude_fn: Callable[..., bool] | None = None) -> Artifact | None:
        """Store the files under ``root`` that ``include_fn(path, root)`` accepts (default: ``*.py``) and
        ``exclude_fn(path, root)`` does not (default: none in a ``wandb`` or hidden directory) as the artifact
        ``name`` (default ``source-{run id}``) of type "code"; None if no file matches."""
        from stepwire.compat.wandb.artifacts import code_artifact

        self._check("log_code")
        artifact = code_artifact(os.fspath(root or "."), name or f"source-{self.id}", include_fn, exclude_fn)
        return self.log_artifact(artifact) if artifact is not None else None

    # -- the end -----------------------------------------------------------------------------------------------
    def finish(self, exit_code: int | None = None, quiet: bool | None = None) -> None:
        """Store the files of ``run.dir`` and those ``save`` asked for at the end, the summary, then finish the
        stepwire run (status "failed" for a non-zero ``exit_code``). Idempotent."""
        if self._finished:
            return
        run = self.stepwire_run
        self.unwatch()
        for undo in self._on_finish:
            undo()
        if run.active and not run._finished:
            for pattern, base, _ in self._saved:
                self._store_files(pattern, base)
            self._store_files(os.path.join(glob.escape(self.dir), "**", "*"), self.dir)
            self.summary.store()
        self._finished = True
        run.finish("failed" if exit_code else "finished")
        if self._tmp_dir:
            shutil.rmtree(self.dir, ignore_errors=True)  # stored above: log_artifact captured each file
        from stepwire.compat import wandb

        wandb._forget(self)

    def mark_preempting(self) -> None:
        """Record in the run's meta that it is being preempted (``{"wandb": {"preempting": true}}``)."""
        self.stepwire_run.update_meta({"wandb": {"preempting": True}})

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.finish(exit_code=1 if exc_type is not None else 0)

    def __repr__(self) -> str:
        return f"<stepwire.compat.wandb.Run {self.id} project={self.project!r} name={self.name!r}>"
