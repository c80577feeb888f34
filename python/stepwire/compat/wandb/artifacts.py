"""``wandb.Artifact`` and ``log_artifact``: each file of an artifact becomes a stepwire artifact of the run named
``{artifact name}/{path in the artifact}``; the artifact's type, aliases, tags, description, metadata and file
list go to the run's meta as ``{"artifacts": {name: {...}}}``. References (``add_reference``) are not stored
(warn once): stepwire keeps files, never fetches URLs."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from stepwire.compat.wandb.unsupported import unsupported
from stepwire.names import check_artifact_name

if TYPE_CHECKING:
    from stepwire.compat.wandb.sdk_run import Run

_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class Artifact:
    """``wandb.Artifact(name, type, description=None, metadata=None, ...)``: ``add_file``, ``add_dir``,
    ``new_file``, ``add_reference`` (warns), then ``run.log_artifact(artifact)``."""

    def __init__(self, name: str, type: str, description: str | None = None, metadata: dict[str, Any] | None = None,
                 incremental: bool = False, use_as: str | None = None, **kwargs: Any) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(f"Artifact name may only contain alphanumeric characters, dashes, underscores, and "
                             f"dots. Invalid name: {name!r}")
        self.name = name
        self.type = type
        self.description = description
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.aliases: list[str] = []
        self.tags: list[str] = []
        self._files: dict[str, str] = {}  # name in the artifact -> local path
        self._tmp: str | None = None

    def add_file(self, local_path: str | os.PathLike[str], name: str | None = None, is_tmp: bool | None = False,
                 skip_cache: bool | None = False, policy: str | None = "mutable", overwrite: bool = False) -> str:
        """Add the file at ``local_path`` as ``name`` (default: its file name); returns the name."""
        path = Path(local_path)
        if not path.is_file():
            raise ValueError(f"Path is not a file: {str(local_path)!r}")
        entry = Path(name).as_posix() if name is not None else path.name
        self._files[entry] = str(path)
        return entry

    def add_dir(self, local_path: str | os.PathLike[str], name: str | None = None, skip_cache: bool | None = False,
                policy: str | None = "mutable", merge: bool = False) -> None:
        """Add every file under ``local_path``, named by its path relative to it (under ``name`` if given)."""
        root = Path(local_path)
        if not root.is_dir():
            raise ValueError(f"Path is not a directory: {str(local_path)!r}")
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            self._files[f"{Path(name).as_posix()}/{rel}" if name else rel] = str(path)

    @contextmanager
    def new_file(self, name: str, mode: str = "x", encoding: str | None = None) -> Iterator[IO[Any]]:
        """Open a new file ``name`` of the artifact for writing (kept in a temporary directory until logged)."""
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="wandb-artifact-")
        path = Path(self._tmp) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, mode, encoding=encoding) as f:
            yield f
        self._files[Path(name).as_posix()] = str(path)

    def add_reference(self, uri: Any, name: str | None = None, checksum: bool = True,
                      max_objects: int | None = None) -> None:
        """Not supported: stepwire stores files, it does not track references (warns once)."""
        unsupported("Artifact.add_reference", "nothing is stored for the reference")

    def files(self) -> list[str]:
        """The names of the files added, sorted."""
        return sorted(self._files)

    def __repr__(self) -> str:
        return f"<stepwire.compat.wandb.Artifact {self.name!r} type={self.type!r} files={len(self._files)}>"


def code_artifact(root: str, name: str, include_fn: Callable[..., bool],
                  exclude_fn: Callable[..., bool] | None) -> Artifact | None:
    """The artifact ``name`` (type "code") of the files under ``root`` that ``log_code`` keeps, or None."""
    artifact = Artifact(name, "code")
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or any(p == "wandb" or p.startswith(".") for p in rel.parts[:-1]):
            continue
        if include_fn(str(path), root) and not (exclude_fn is not None and exclude_fn(str(path), root)):
            artifact.add_file(path, name=rel.as_posix())
    return artifact if artifact._files else None


def log_artifact(run: Run, artifact_or_path: Artifact | str | os.PathLike[str], name: str | None,
                 type: str | None, aliases: Sequence[str] | None, tags: Sequence[str] | None) -> Artifact:
    """``run.log_artifact``: a path becomes an artifact of that file or directory named ``name`` (default:
    ``run-{run id}-{file name}``, as W&B), of ``type`` (default "unspecified")."""
    if isinstance(artifact_or_path, Artifact):
        artifact = artifact_or_path
    else:
        path = Path(artifact_or_path)
        artifact = Artifact(name or f"run-{run.id}-{path.name}", type or "unspecified")
        if path.is_dir():
            artifact.add_dir(path)
        else:
            artifact.add_file(path)
    artifact.aliases = sorted({"latest", *(aliases or [])})
    artifact.tags = list(tags or [])
    sw = run.stepwire_run
    for entry, local in sorted(artifact._files.items()):
        sw.log_artifact(local, name=check_artifact_name(f"{artifact.name}/{entry}"), step=run.step)
    if sw.active:
        sw.update_meta({"artifacts": {artifact.name: {
            "type": artifact.type, "aliases": artifact.aliases, "tags": artifact.tags,
            "description": artifact.description, "metadata": artifact.metadata, "files": artifact.files()}}})
    if artifact._tmp is not None:
        shutil.rmtree(artifact._tmp, ignore_errors=True)  # log_artifact captured the files already
        artifact._tmp = None
    return artifact
