"""ClearML's ``OutputModel`` and the read-only ``Model`` of ``task.models``: weights files stored as artifacts.

A model ``name`` of a task is the stepwire artifact ``"clearml/models/<quoted name>/<file name>"`` and the entry
``name`` of the run meta ``clearml_models`` (``kind`` ``"model"``, with ``framework``, ``tags``, ``comment``,
``config_text``, ``config_dict``, ``labels``, ``iteration`` and ``model_id``). A model updated again replaces
the file (one model, its latest weights), as in ClearML.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, SupportsIndex, overload

from stepwire.compat.clearml.artifacts import Artifact
from stepwire.compat.clearml.unsupported import unsupported

if TYPE_CHECKING:
    from stepwire.compat.clearml.task import Task


class Model:
    """A stored model (read-only): ``id``, ``name``, ``url``, ``framework``, ..., ``get_local_copy()``."""

    def __init__(self, artifact: Artifact, record: Mapping[str, Any]) -> None:
        self._artifact = artifact
        self._record = dict(record)

    @property
    def id(self) -> str:
        """The model id (a uuid, kept across weight updates)."""
        return str(self._record.get("model_id", ""))

    @property
    def name(self) -> str:
        """The model name."""
        return self._artifact.name

    @property
    def url(self) -> str:
        """Where the weights are: ``stepwire-artifact://<run id>/<stored name>``."""
        return self._artifact.url

    @property
    def framework(self) -> str | None:
        """The framework given (e.g. ``"PyTorch"``)."""
        value = self._record.get("framework")
        return None if value is None else str(value)

    @property
    def tags(self) -> list[str]:
        """The model's tags."""
        return [str(t) for t in self._record.get("tags") or []]

    @property
    def comment(self) -> str | None:
        """The model's comment."""
        value = self._record.get("comment")
        return None if value is None else str(value)

    @property
    def iteration(self) -> int | None:
        """The iteration given to the last ``update_weights``."""
        value = self._record.get("iteration")
        return None if value is None else int(value)

    @property
    def config_text(self) -> str | None:
        """The design text (``config_text``, or ``config_dict`` as JSON)."""
        value = self._record.get("config_text")
        return None if value is None else str(value)

    @property
    def config_dict(self) -> dict[str, Any]:
        """The design as a dict (``config_dict``, else ``config_text`` read as JSON; ``{}`` if neither)."""
        value = self._record.get("config_dict")
        if isinstance(value, dict):
            return value
        try:
            loaded = json.loads(self.config_text or "{}")
        except ValueError:
            return {}
        return loaded if isinstance(loaded, dict) else {}

    @property
    def labels(self) -> dict[str, int]:
        """The label enumeration (``{label: index}``)."""
        return {str(k): int(v) for k, v in (self._record.get("labels") or {}).items()}

    def get_local_copy(self, extract_archive: bool | None = None, raise_on_error: bool = False,
                       force_download: bool = False) -> str | None:
        """A local path of the weights file (a folder for a zipped package unless ``extract_archive`` is False)."""
        return self._artifact.get_local_copy(extract_archive is not False, raise_on_error, force_download)

    def get_weights(self, raise_on_error: bool = False, force_download: bool = False) -> str | None:
        """A local path of the weights file."""
        return self._artifact.get_local_copy(False, raise_on_error, force_download)

    def __repr__(self) -> str:
        return f"<stepwire.compat.clearml.Model {self.name!r} id={self.id} framework={self.framework!r}>"


class ModelList(list[Model]):
    """A list of models that also takes a model name as index (``task.models["output"]["best"]``)."""

    @overload
    def __getitem__(self, key: SupportsIndex) -> Model: ...
    @overload
    def __getitem__(self, key: slice) -> list[Model]: ...
    @overload
    def __getitem__(self, key: str) -> Model: ...

    def __getitem__(self, key: SupportsIndex | slice | str) -> Model | list[Model]:
        """The model at ``key``, or the one named ``key``."""
        if isinstance(key, str):
            for model in self:
                if model.name == key:
                    return model
            raise KeyError(key)
        return super().__getitem__(key)

    def keys(self) -> list[str]:
        """The model names."""
        return [m.name for m in self]


class OutputModel:
    """ClearML's ``OutputModel``: a model of a task (``task=None``: the current task) whose weights
    ``update_weights`` stores."""

    def __init__(self, task: Task | None = None, config_text: str | None = None,
                 config_dict: Mapping[str, Any] | None = None, label_enumeration: Mapping[str, int] | None = None,
                 name: str | None = None, tags: Sequence[str] | None = None, comment: str | None = None,
                 framework: str | None = None, base_model_id: str | None = None) -> None:
        from stepwire.compat.clearml.task import Task as TaskClass

        owner = task if task is not None else TaskClass.current_task()
        if owner is None:
            raise ValueError("OutputModel needs a task: pass task=, or call Task.init first")
        if base_model_id is not None:
            unsupported("OutputModel(base_model_id=...)")
        self._task = owner
        self.id: str = uuid.uuid4().hex
        """The model id."""
        self.name: str = name or owner.name
        """The model name (default: the task name, as in ClearML)."""
        self.framework = framework
        """The framework (free text, e.g. ``"PyTorch"``)."""
        self.tags = list(tags or [])
        """The model's tags."""
        self.comment = comment
        """The model's comment."""
        self.config_dict: dict[str, Any] | None = None if config_dict is None else dict(config_dict)
        """The design as a dict."""
        self.config_text: str | None = config_text if config_text is not None else (
            None if config_dict is None else json.dumps(dict(config_dict), indent=2, default=str))
        """The design as text."""
        self.labels: dict[str, int] = dict(label_enumeration if label_enumeration is not None
                                           else owner.get_labels_enumeration())
        """The label enumeration (default: the task's, ``connect_label_enumeration``)."""
        self.url: str | None = None
        """Where the weights went (after ``update_weights``)."""
        self._iteration: int | None = None

    @property
    def task(self) -> str:
        """The id of the task the model belongs to."""
        return self._task.id

    def update_design(self, config_text: str | None = None, config_dict: Mapping[str, Any] | None = None) -> bool:
        """Replace the design (stored with the next ``update_weights``)."""
        self.config_dict = None if config_dict is None else dict(config_dict)
        self.config_text = config_text if config_text is not None else (
            None if config_dict is None else json.dumps(dict(config_dict), indent=2, default=str))
        return True

    def update_labels(self, labels: Mapping[str, int]) -> None:
        """Replace the label enumeration (stored with the next ``update_weights``)."""
        self.labels = dict(labels)

    def update_weights(self, weights_filename: str | None = None, upload_uri: str | None = None,
                       target_filename: str | None = None, auto_delete_file: bool = True,
                       register_uri: str | None = None, iteration: int | None = None, update_comment: bool = True,
                       is_package: bool = False, async_enable: bool = True) -> str:
        """Store the file ``weights_filename`` (or a folder, zipped) as the model's weights; returns its url.

        The file is captured now (it may be changed or deleted right after). ``upload_uri`` and ``register_uri``
        (other storage) are not supported: they warn once and the weights go to stepwire.
        """
        if weights_filename is None:
            raise ValueError("update_weights needs weights_filename (register_uri is not supported)")
        for what, value in (("upload_uri", upload_uri), ("register_uri", register_uri)):
            if value is not None:
                unsupported(f"OutputModel.update_weights({what}=...)")
        path = Path(weights_filename)
        if not path.exists():
            raise ValueError(f"weights file {str(path)!r} could not be found")
        self._iteration = iteration if iteration is not None else self._iteration
        record = {"model_id": self.id, "framework": self.framework, "tags": self.tags, "comment": self.comment,
                  "config_text": self.config_text, "config_dict": self.config_dict, "labels": self.labels,
                  "iteration": self._iteration, "target_filename": target_filename}
        self.url = self._task._store_model(self.name, path, record)
        return self.url

    def update_weights_package(self, weights_filenames: Sequence[str] | None = None,
                               weights_path: str | None = None, upload_uri: str | None = None,
                               target_filename: str | None = None, auto_delete_file: bool = True,
                               iteration: int | None = None) -> str:
        """Store a folder (``weights_path``) of weights, zipped, as the model's weights; returns its url."""
        if weights_path is None:
            raise ValueError("update_weights_package needs weights_path (a list of files is not supported)")
        return self.update_weights(weights_path, upload_uri=upload_uri, target_filename=target_filename,
                                   iteration=iteration)

    def __repr__(self) -> str:
        return f"<stepwire.compat.clearml.OutputModel {self.name!r} of task {self.task}>"
