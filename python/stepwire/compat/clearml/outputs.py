"""A task's artifacts and output models (the ``Task`` methods, as a mixin); see ``artifacts`` and ``model``."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

from stepwire.api import RunView
from stepwire.compat.clearml.artifacts import MODELS_META, Artifact, TaskArtifacts, read_artifacts
from stepwire.compat.clearml.model import Model, ModelList, OutputModel
from stepwire.run import Run

if TYPE_CHECKING:
    from stepwire.compat.clearml.task import Task


class TaskOutputs:
    """``Task``'s artifacts and models."""

    id: str
    _artifacts: TaskArtifacts | None

    def _writable(self) -> Run:
        raise NotImplementedError  # Task's

    def _view(self) -> RunView:
        raise NotImplementedError  # Task's

    def _task_artifacts(self) -> TaskArtifacts:
        """The artifacts of a writable task (``RuntimeError`` for read-only or closed tasks)."""
        self._writable()
        assert self._artifacts is not None  # every writable task has them
        return self._artifacts

    def upload_artifact(self, name: str, artifact_object: Any, metadata: Mapping[str, Any] | None = None,
                        delete_after_upload: bool = False, auto_pickle: bool | None = None, preview: Any = None,
                        wait_on_upload: bool = False, extension_name: str | None = None,
                        serialization_function: Callable[[Any], bytes] | None = None, retries: int = 0,
                        sort_keys: bool = True) -> bool:
        """Store ``artifact_object`` as artifact ``name``, serialised as ClearML does: a file path as it is, a
        folder zipped, a dict as JSON (YAML with ``extension_name=".yaml"``), a numpy array as ``.npz``, a
        DataFrame as ``.csv.gz``, a PIL image as PNG, a text as ``.txt``, a URL as a link (never fetched),
        anything else pickled. The object is captured now (the upload happens in the background); returns True.
        """
        artifacts = self._task_artifacts()
        if name in artifacts.registered:
            raise ValueError(f"Artifact by the name of {name} is already registered, use register_artifact")
        if serialization_function is not None:
            with tempfile.TemporaryDirectory(prefix="stepwire-clearml-") as tmp:
                file = Path(tmp) / f"{quote(name, safe='')}{extension_name or '.bin'}"
                file.write_bytes(serialization_function(artifact_object))
                artifacts.upload(name, file, metadata, preview)
            return True
        artifacts.upload(name, artifact_object, metadata, preview, delete_after_upload, auto_pickle is not False,
                         extension_name)
        return True

    def register_artifact(self, name: str, artifact: Any, metadata: Mapping[str, Any] | None = None,
                          uniqueness_columns: bool | Sequence[str] = True) -> None:
        """Watch a DataFrame as artifact ``name``: stored now, and its state then at every ``flush`` and at
        ``close`` (ClearML syncs it in the background)."""
        artifacts = self._task_artifacts()
        artifacts.register(name, artifact, metadata)

    def unregister_artifact(self, name: str) -> None:
        """Stop watching a registered DataFrame (what was stored stays)."""
        if self._artifacts is not None:
            self._artifacts.registered.pop(name, None)

    def get_registered_artifacts(self) -> dict[str, Any]:
        """``{name: DataFrame}`` of the registered artifacts."""
        if self._artifacts is None:
            return {}
        return {name: frame for name, (frame, _) in self._artifacts.registered.items()}

    @property
    def artifacts(self) -> dict[str, Artifact]:
        """``{name: Artifact}`` of the stored artifacts (registered ones included); ``.get()`` decodes one,
        ``.get_local_copy()`` gives a path."""
        return read_artifacts(self._view(), self._view)

    def _store_model(self, name: str, path: Path, record: dict[str, Any]) -> str:
        """Store weights ``path`` as output model ``name`` described by ``record``; returns the model's url."""
        artifacts = self._task_artifacts()
        stored = artifacts.upload(name, path, kind="model", extra=record)
        return f"stepwire-artifact://{self.id}/{stored}"

    def update_output_model(self, model_path: str, name: str | None = None, comment: str | None = None,
                            tags: Sequence[str] | None = None, model_name: str | None = None,
                            iteration: int | None = None, auto_delete_file: bool = True) -> str:
        """Store the weights file ``model_path`` as output model ``model_name or name`` (default: the task
        name); returns its url."""
        model = OutputModel(task=cast("Task", self), name=model_name or name, tags=tags, comment=comment)
        return model.update_weights(weights_filename=model_path, iteration=iteration)

    @property
    def models(self) -> dict[str, ModelList]:
        """``{"input": [], "output": [Model, ...]}``; ``["output"]`` also takes a model name as index."""
        view = self._view()
        found = read_artifacts(view, self._view, kind="model")
        records = view.meta.get(MODELS_META) or {}
        return {"input": ModelList(), "output": ModelList(Model(a, records.get(n, {})) for n, a in found.items())}
