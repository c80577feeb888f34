"""ClearML's artifacts on stepwire's artifact store: serialising objects as ClearML does, and reading them back.

An artifact ``name`` is the stepwire artifact ``"clearml/artifacts/<quoted name>/<file name>"``; its ClearML
description (type, content type, metadata, preview, link) is the entry ``name`` of the run meta
``clearml_artifacts``. A link (a URL) is only described, never fetched.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import mimetypes
import os
import pickle
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse

import numpy as np

from stepwire.api import RunView
from stepwire.compat.clearml.unsupported import unsupported
from stepwire.run import Run

ARTIFACTS_META = "clearml_artifacts"
"""Run meta key: ``{artifact name: description}`` of ClearML artifacts."""
MODELS_META = "clearml_models"
"""Run meta key: ``{model name: description}`` of ClearML output models (``kind`` ``"model"``)."""
LINK_SCHEMES = ("http", "https", "s3", "gs", "azure", "file")
"""URL schemes that ``upload_artifact`` stores as a link instead of as text."""
PREVIEW_BYTES = 65536
"""Longest preview kept, as in ClearML."""
PANDAS_REGISTERED = "data-audit-table"
"""ClearML's artifact type of a registered DataFrame."""

_CACHE_ENV = "STEPWIRE_CLEARML_CACHE"


@dataclass
class Prepared:
    """An object serialised for upload: the file to store (None for a link) and its ClearML description."""

    type: str
    content_type: str | None
    preview: str
    file: Path | None = None
    filename: str | None = None
    url: str | None = None


def stored_name(kind: str, name: str, filename: str) -> str:
    """The stepwire artifact name of ClearML artifact (or model, ``kind="models"``) ``name`` stored as ``filename``."""
    return f"clearml/{kind}/{quote(name, safe='')}/{quote(filename, safe='')}"


def _short(text: str) -> str:
    if len(text) < PREVIEW_BYTES:
        return text
    return f"# full text too large to store, storing first {PREVIEW_BYTES // 1024}kb\n{text[:PREVIEW_BYTES]}"


def _extension(asked: str | None, valid: tuple[str, ...], default: str, what: str) -> str:
    if not asked:
        return default
    if asked in valid:
        return asked
    unsupported(f"upload_artifact(extension_name={asked!r}) for a {what}", f"valid: {', '.join(valid)}; "
                f"{default} is used")
    return default


def _is_dataframe(obj: object) -> bool:
    return type(obj).__name__ == "DataFrame" and type(obj).__module__.startswith("pandas")


def _is_pil_image(obj: object) -> bool:
    try:
        from PIL import Image
    except ImportError:
        return False
    return isinstance(obj, Image.Image)


def _zip_files(files: list[Path], folder: Path, target: Path) -> str:
    """Zip ``files`` (names relative to ``folder``) into ``target``; returns ClearML's preview."""
    preview = f"Archive content {folder.as_posix()}:\n"
    with zipfile.ZipFile(target, "w", allowZip64=True, compression=zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            relative = path.relative_to(folder).as_posix()
            preview += f"{relative} - {path.stat().st_size} bytes\n"
            zf.write(path, arcname=relative)
    return preview


def _zip_folder(folder: Path, target: Path) -> str:
    """Zip every file under ``folder`` (names relative to it) into ``target``; returns ClearML's preview."""
    return _zip_files(sorted(p for p in folder.rglob("*") if p.is_file()), folder, target)


def prepare(name: str, obj: Any, tmp: Path, preview: Any = None, auto_pickle: bool = True,
            extension_name: str | None = None) -> Prepared:
    """Serialise ``obj`` into ``tmp`` the way ClearML's ``upload_artifact`` does (see the module docstring)."""
    shown = None if preview is None or preview is False else str(preview)
    stem = quote(name, safe="")
    if isinstance(obj, str) and obj and len(obj) < 2048 and Path(obj).exists():
        obj = Path(obj)
    elif isinstance(obj, str) and obj and len(obj) < 2048 and ("*" in obj or "?" in obj):
        pattern = Path(obj)
        matches = sorted(p for p in pattern.parent.rglob(pattern.name) if p.is_file()) if pattern.parent.is_dir() \
            else []
        if matches:
            file = tmp / f"{quote(pattern.parent.name or name, safe='')}.zip"
            listing = _zip_files(matches, pattern.parent, file)
            return Prepared("archive", "application/zip", shown or listing, file, unquote(file.name))
    if isinstance(obj, np.ndarray):
        ext = _extension(extension_name, (".npz", ".csv.gz"), ".npz", "numpy array")
        file = tmp / f"{stem}{ext}"
        if ext == ".npz":
            with open(file, "wb") as f:
                np.savez_compressed(f, **{name: obj})  # type: ignore[arg-type]
            content = "application/numpy"
        else:
            np.savetxt(file, obj, delimiter=",")
            content = "text/csv"
        return Prepared("numpy", content, shown or repr(obj), file, unquote(file.name))
    if _is_dataframe(obj):
        ext = _extension(extension_name, (".csv.gz", ".parquet", ".pickle"), ".csv.gz", "DataFrame")
        file = tmp / f"{stem}{ext}"
        if ext == ".csv.gz":
            obj.to_csv(file, compression={"method": "gzip", "mtime": 0})  # the same frame, the same bytes
            content = "text/csv"
        elif ext == ".parquet":
            obj.to_parquet(file)
            content = "application/parquet"
        else:
            obj.to_pickle(file)
            content = "application/pickle"
        return Prepared("pandas", content, shown or repr(obj), file, unquote(file.name))
    if _is_pil_image(obj):
        ext = _extension(extension_name, (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tiff", ".webp"), ".png",
                         "PIL image")
        file = tmp / f"{stem}{ext}"
        obj.save(file)
        desc = repr(obj)
        return Prepared("image", mimetypes.guess_type(file.name)[0] or "image/unknown-type",
                        shown or desc[1:desc.find(" at ")], file, unquote(file.name))
    if isinstance(obj, dict):
        ext = _extension(extension_name, (".json", ".yaml"), ".json", "dict")
        text: str | None = None
        try:
            if ext == ".json":
                text = json.dumps(obj, sort_keys=True, indent=4)
            else:
                import yaml

                text = yaml.dump(obj, sort_keys=True, indent=4)
        except ImportError:
            unsupported("upload_artifact(extension_name='.yaml') without pyyaml installed", "stored as .json")
            ext, text = ".json", json.dumps(obj, sort_keys=True, indent=4, default=None)
        except Exception:
            if not auto_pickle:
                raise
        if text is not None:
            file = tmp / f"{stem}{ext}"
            file.write_text(text, encoding="utf-8")
            content = "application/json" if ext == ".json" else "application/yaml"
            return Prepared("dict", content, shown or _short(text), file, unquote(file.name))
    elif isinstance(obj, Path):
        path = obj.expanduser().absolute()
        if path.is_dir():
            file = tmp / f"{quote(path.name, safe='')}.zip"
            listing = _zip_folder(path, file)
            return Prepared("archive", "application/zip", shown or listing, file, unquote(file.name))
        if not path.is_file():
            raise ValueError(f"Artifact file/folder '{path.as_posix()}' could not be found")
        return Prepared("custom", mimetypes.guess_type(path.name)[0], shown or f"{path.name} - {path.stat().st_size}"
                        " bytes\n", path, path.name)
    elif isinstance(obj, str) and obj and len(obj) < 4096 and urlparse(obj).scheme in LINK_SCHEMES:
        return Prepared("custom", mimetypes.guess_type(obj)[0], shown or "", url=obj)
    elif isinstance(obj, str) and obj:
        file = tmp / f"{stem}.txt"
        file.write_text(obj, encoding="utf-8")
        return Prepared("string", "text/plain", shown or _short(obj), file, unquote(file.name))
    elif not auto_pickle and obj is not None:
        raise ValueError(f"Artifact type {type(obj)} not supported")
    file = tmp / f"{stem}.pkl"
    with open(file, "wb") as f:
        pickle.dump(obj, f)
    try:
        shown = shown or repr(obj)[:PREVIEW_BYTES]
    except Exception:
        shown = shown or ""
    return Prepared("pickle", "application/pickle", shown, file, unquote(file.name))


def _cache_dir() -> Path:
    base = os.environ.get(_CACHE_ENV) or Path(tempfile.gettempdir()) / "stepwire-clearml-cache"
    return Path(base)


class Artifact:
    """ClearML's read-only ``Artifact``: ``name``, ``type``, ``metadata``, ``preview``, ..., ``get()`` and
    ``get_local_copy()``."""

    def __init__(self, name: str, record: Mapping[str, Any], view: Callable[[], RunView],
                 size: int | None = None, sha256: str | None = None) -> None:
        self._name = name
        self._record = dict(record)
        self._view = view
        self._size = size
        self._hash = sha256
        self._object: Any = None
        self._loaded = False

    @property
    def name(self) -> str:
        """The artifact name."""
        return self._name

    @property
    def type(self) -> str:
        """ClearML's artifact type: ``numpy``, ``pandas``, ``image``, ``dict``, ``archive``, ``custom``,
        ``string``, ``pickle`` or ``data-audit-table`` (a registered DataFrame)."""
        return str(self._record.get("type", "custom"))

    @property
    def mode(self) -> str:
        """``"output"`` (stepwire records no input artifacts)."""
        return "output"

    @property
    def size(self) -> int | None:
        """Stored size in bytes (None for a link)."""
        return self._size

    @property
    def hash(self) -> str | None:
        """SHA-256 of the stored file (None for a link)."""
        return self._hash

    @property
    def url(self) -> str:
        """The link of a URL artifact, else ``stepwire-artifact://<run id>/<stored name>``."""
        link = self._record.get("url")
        return str(link) if link else f"stepwire-artifact://{self._record.get('run_id', '')}/{self._record['file']}"

    @property
    def timestamp(self) -> datetime.datetime:
        """When it was uploaded (local time, as in ClearML)."""
        return datetime.datetime.fromtimestamp(float(self._record.get("timestamp", 0.0)))

    @property
    def metadata(self) -> dict[str, str]:
        """The metadata given at upload, as strings (ClearML stores them as strings)."""
        return dict(self._record.get("metadata") or {})

    @property
    def preview(self) -> str:
        """A short text form of the object."""
        return str(self._record.get("preview", ""))

    @property
    def content_type(self) -> str | None:
        """The MIME type of the stored file."""
        ct = self._record.get("content_type")
        return None if ct is None else str(ct)

    def get_local_copy(self, extract_archive: bool = True, raise_on_error: bool = False,
                       force_download: bool = False) -> str | None:
        """A local path of the artifact's file (an archive extracted into a folder unless ``extract_archive``
        is False); None (or ``ValueError`` with ``raise_on_error``) for a link, which is never fetched."""
        stored = self._record.get("file")
        if not stored:
            if raise_on_error:
                raise ValueError(f"artifact {self._name!r} is a link ({self.url}); stepwire does not fetch links")
            return None
        key = self._hash or quote(str(stored), safe="")
        folder = _cache_dir() / str(self._record.get("run_id", "run")) / key[:32]
        target = folder / Path(str(stored)).name
        if force_download or not target.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            self._view().download_artifact(str(stored), target)
        if extract_archive and self.type == "archive":
            out = folder / "extracted"
            if force_download or not out.is_dir():
                shutil.rmtree(out, ignore_errors=True)
                with zipfile.ZipFile(target) as zf:
                    zf.extractall(out)
            return str(out)
        return str(target)

    def get(self, force_download: bool = False) -> Any:
        """The object: numpy array, DataFrame, PIL image, dict, str or unpickled object; a ``Path`` to the local
        copy for other types (files, archives) or when the content cannot be decoded, as in ClearML."""
        if self._loaded and not force_download:
            return self._object
        local = self.get_local_copy(extract_archive=True, raise_on_error=True, force_download=force_download)
        assert local is not None
        obj: Any = Path(local)
        kind, content = self.type, self.content_type
        if kind == "numpy":
            obj = np.genfromtxt(local, delimiter=",") if content == "text/csv" else np.load(local)[self._name]
        elif kind in ("pandas", PANDAS_REGISTERED):
            import pandas as pd

            if content == "application/parquet":
                obj = pd.read_parquet(local)
            elif content == "application/pickle":
                obj = pd.read_pickle(local)
            else:
                obj = pd.read_csv(local, index_col=[0])
        elif kind == "image":
            from PIL import Image

            obj = Image.open(local)
        elif kind == "dict":
            with open(local, encoding="utf-8") as f:
                if content == "application/json":
                    obj = json.load(f)
                else:
                    import yaml

                    obj = yaml.safe_load(f)
        elif kind == "string":
            obj = Path(local).read_text(encoding="utf-8")
        elif kind == "pickle":
            with open(local, "rb") as f:
                obj = pickle.load(f)
        self._object, self._loaded = obj, True
        return obj

    def __repr__(self) -> str:
        return str({"name": self.name, "size": self.size, "type": self.type, "mode": self.mode, "url": self.url,
                    "hash": self.hash, "timestamp": self.timestamp, "metadata": self.metadata,
                    "preview": self.preview})


def read_artifacts(view: RunView, opener: Callable[[], RunView], kind: str = "artifact") -> dict[str, Artifact]:
    """``{name: Artifact}`` of the ClearML artifacts (or models: ``kind="model"``) described in ``view``'s meta."""
    described = view.meta.get(ARTIFACTS_META if kind == "artifact" else MODELS_META)
    if not isinstance(described, Mapping):
        return {}
    stored = {a.name: a for a in view.artifacts()}
    out: dict[str, Artifact] = {}
    for name, record in described.items():
        if not isinstance(record, Mapping) or record.get("kind", "artifact") != kind:
            continue
        entry = stored.get(str(record.get("file", "")))
        if record.get("file") and entry is None:
            continue  # described but not stored (deleted, or not delivered yet)
        out[str(name)] = Artifact(str(name), {**record, "run_id": view.id}, opener,
                                  size=entry.size if entry else None, sha256=entry.sha256 if entry else None)
    return out


class TaskArtifacts:
    """A writable task's artifacts: uploads now, registered DataFrames uploaded again at every ``sync``."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self._files: dict[tuple[str, str], str] = {}  # (kind, ClearML name) -> stored stepwire name, for replacing
        self.registered: dict[str, tuple[Any, dict[str, str]]] = {}
        """``{name: (DataFrame, metadata)}`` of ``register_artifact``."""
        self._digests: dict[str, str] = {}  # registered name -> sha256 of the file last stored

    def upload(self, name: str, obj: Any, metadata: Mapping[str, Any] | None = None, preview: Any = None,
               delete_after_upload: bool = False, auto_pickle: bool = True, extension_name: str | None = None,
               kind: str = "artifact", registered: bool = False, extra: Mapping[str, Any] | None = None) -> str:
        """Serialise and store ``obj`` as artifact ``name`` (see ``prepare``); returns the stored name or URL.

        A registered DataFrame whose file is what was stored last time is not stored again.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"artifact name must be a non-empty str, got {name!r}")
        with tempfile.TemporaryDirectory(prefix="stepwire-clearml-") as tmp:
            prepared = prepare(name, obj, Path(tmp), preview, auto_pickle, extension_name)
            if registered:
                prepared.type = PANDAS_REGISTERED
                assert prepared.file is not None
                digest = hashlib.sha256(prepared.file.read_bytes()).hexdigest()
                if self._digests.get(name) == digest and (kind, name) in self._files:
                    return self._files[kind, name]
                self._digests[name] = digest
            record: dict[str, Any] = {"kind": kind, "type": prepared.type, "content_type": prepared.content_type,
                                      "preview": prepared.preview, "timestamp": time.time(),
                                      "metadata": {str(k): str(v) for k, v in (metadata or {}).items()},
                                      "file": None, "url": prepared.url, **(extra or {})}
            old = self._files.pop((kind, name), None)
            if prepared.file is not None and prepared.filename is not None:
                stored = stored_name("artifacts" if kind == "artifact" else "models", name, prepared.filename)
                self._run.log_artifact(prepared.file, name=stored)
                record["file"] = stored
                self._files[kind, name] = stored
                if delete_after_upload and prepared.file.parent != Path(tmp):
                    prepared.file.unlink(missing_ok=True)
            if old is not None and old != record["file"]:
                self._run.delete_artifact(old)
        self._run.update_meta({ARTIFACTS_META if kind == "artifact" else MODELS_META: {name: record}})
        return str(record["file"] or record["url"])

    def register(self, name: str, frame: Any, metadata: Mapping[str, Any] | None = None) -> None:
        """Watch DataFrame ``frame`` as artifact ``name``: uploaded now and again (its state then) at ``sync``."""
        if not _is_dataframe(frame):
            raise ValueError("Artifacts currently support pandas.DataFrame objects only")
        self.registered[name] = (frame, {str(k): str(v) for k, v in (metadata or {}).items()})
        self.upload(name, frame, metadata, registered=True)

    def sync(self) -> None:
        """Upload every registered DataFrame as it is now."""
        for name, (frame, metadata) in list(self.registered.items()):
            self.upload(name, frame, metadata, registered=True)
