"""Offline mode: where offline session folders go, whether ``$CLEARML_OFFLINE_MODE`` asks for it, and importing a
session (its folder or a zip of it) into a store."""

from __future__ import annotations

import os
import tempfile
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import stepwire
from stepwire.api import Api, MediaItem, RunView
from stepwire.compat.clearml.unsupported import unsupported

OFFLINE_ENV = "CLEARML_OFFLINE_MODE"
"""Environment variable that turns offline mode on (``1``/``true``/``yes``/``on``)."""
OFFLINE_DIR_ENV = "STEPWIRE_OFFLINE_DIR"
"""Environment variable: where offline session folders go (default ``~/.stepwire/offline``)."""


def offline_from_env() -> bool:
    """True if ``$CLEARML_OFFLINE_MODE`` turns offline mode on."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on", "y")


def new_session_folder() -> Path:
    """A fresh session folder path ``$STEPWIRE_OFFLINE_DIR/<uuid>`` (else ``~/.stepwire/offline/<uuid>``)."""
    base = Path(os.environ.get(OFFLINE_DIR_ENV) or Path.home() / ".stepwire" / "offline")
    return (base / uuid.uuid4().hex).resolve()


def _session_runs(folder: Path) -> list[RunView]:
    views = Api(dir=folder).runs()
    if not views:
        raise ValueError(f"{folder} holds no offline task (no stepwire run in it)")
    return views


def import_session(session: str | os.PathLike[str], previous_task_id: str | None = None,
                   iteration_offset: int = 0, **target: Any) -> str:
    """Copy the task of an offline session (its folder, or a zip of it) into the store ``target`` names
    (``address=``/``dir=``, as for ``stepwire.init``); returns the task id.

    The task keeps its id (or joins ``previous_task_id``), project, name, tags, parameters and meta; scalars
    (steps shifted by ``iteration_offset``), texts, artifacts and media records (debug samples, plots, tables) are
    logged again, so their wall times are the
    import's and every rank's points land on rank 0. stepwire histograms (``Run.log_histogram``; ClearML's
    ``report_histogram`` records are texts and do come along) are not imported: counted and warned about.
    """
    path = Path(session)
    with tempfile.TemporaryDirectory(prefix="stepwire-clearml-import-") as tmp:
        if path.is_file():
            with zipfile.ZipFile(path) as zf:
                zf.extractall(tmp)
            entries = [p for p in Path(tmp).iterdir()]
            folder = entries[0] if len(entries) == 1 and entries[0].is_dir() else Path(tmp)
            (folder / "collector.json").unlink(missing_ok=True)  # the collector of the original folder
        elif path.is_dir():
            folder = path
        else:
            raise ValueError(f"no offline session folder or zip at {str(path)!r}")
        views = _session_runs(folder)
        if len(views) > 1 and previous_task_id is not None:
            raise ValueError("previous_task_id needs a session with one task")
        for view in views:
            _copy_run(view, previous_task_id or view.id, iteration_offset, Path(tmp), target)
        return previous_task_id or views[-1].id


def _copy_run(view: RunView, run_id: str, offset: int, tmp: Path, target: Mapping[str, Any]) -> None:
    run = stepwire.init(project=view.project, name=view.name, tags=list(view.tags) or None, config=view.config,
                        run_id=run_id, quiet=True, **target)
    try:
        meta = {k: v for k, v in view.meta.items() if k not in ("ranks", "world_size", "overhead")}
        meta["imported_from_offline"] = view.id
        run.update_meta(meta)
        for series in view.series():
            if series.kind != "scalar":
                unsupported("Task.import_offline_session of stepwire histograms",
                            f"{series.name!r} of task {view.id} is not imported")
                continue
            pts = view.scalars(series.name)
            for step, value in zip(pts["step"].tolist(), pts["value"].tolist(), strict=True):
                run.log_scalar(series.name, value, step + offset)
        for entry in view.texts():
            run.log_text(entry.name, entry.text, step=entry.step + offset)
        for artifact in view.artifacts():
            local = view.download_artifact(artifact.name, tmp / uuid.uuid4().hex)
            run.log_artifact(local, name=artifact.name, step=artifact.step + offset)
        for item in view.media():
            _copy_media(run, item, item.step + offset)
    except BaseException:
        run.finish("failed")
        raise
    run.finish(view.status if view.status in ("finished", "failed", "crashed") else "finished")


def _copy_media(run: stepwire.Run, item: MediaItem, step: int) -> None:
    """Log a media record of the session again: its content as stored (a table decoded and encoded again)."""
    caption = item.caption or None
    if item.kind == "plotly":
        run.log_plot(item.name, item.bytes(), step=step, caption=caption)
    elif item.kind == "table":
        run.log_table(item.name, item.table(), step=step, caption=caption)
    else:
        run.log_media(item.name, item.bytes(), step=step, kind=item.kind, caption=caption)
