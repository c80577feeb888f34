"""Capture of torch's (and tensorboardX's) own ``SummaryWriter``: ``patch(run)`` / ``unpatch()``.

Where it hooks: the ``add_*``, ``flush`` and ``close`` methods of the writer classes themselves
(``torch.utils.tensorboard.writer.SummaryWriter``, ``tensorboardX.writer.SummaryWriter`` when tensorboardX is
imported), replaced on the class, so writers created before ``patch`` are captured too, and so are subclasses
(MONAI's handlers, Ignite's ``TensorboardLogger``) and wrappers that call them. Each patched method first runs the
original (event files are written exactly as before; an exception from it propagates and nothing is stored),
then gives the same arguments to a stepwire ``SummaryWriter`` mirroring that writer, so that the stored names,
steps and values are exactly those of ``stepwire.compat.tensorboard.SummaryWriter`` (``add_figure`` is the
exception to "original first": the figure is rendered before the original closes it). Calls a writer makes from
inside one of its own methods (``add_figure`` -> ``add_image``, ``add_hparams`` -> a nested writer's
``add_scalar``, every ``add_*`` -> ``FileWriter.add_summary``) are not stored twice. Hooking the methods keeps
``add_scalars``' main tag and key apart and needs no decoding for what goes through them; summaries handed to
the ``FileWriter`` directly (``writer._get_file_writer().add_summary(...)``, as MONAI does for 3-D images) are
decoded (``events.store_summary``). Neither torch nor tensorboardX is imported by ``patch``: a writer module
imported later is patched as it loads. Writers are told apart by ``log_dir`` (writers of one directory share a
mirror, as TensorBoard shows them as one run).

The run: the one given to ``patch``; else, at a writer's first captured call, the most recently started run live
in the process (``stepwire.lifecycle.live_runs``); else a run started for that writer (project ``"tensorboard"``,
name = the last component of its ``log_dir``), finished when the writer is closed. A failure to store a call
warns once (``unsupported_counts``) and never breaks the training script.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import inspect
import os
import sys
import threading
import types
from collections.abc import Callable, Sequence
from typing import Any

from stepwire.compat.tensorboard.events import store_summary
from stepwire.compat.tensorboard.naming import TagNames
from stepwire.compat.tensorboard.unsupported import unsupported
from stepwire.compat.tensorboard.writer import SummaryWriter
from stepwire.lifecycle import live_runs
from stepwire.run import Run

CAPTURED = ("add_scalar", "add_scalars", "add_tensor", "add_histogram", "add_histogram_raw", "add_image",
            "add_images", "add_image_with_boxes", "add_figure", "add_audio", "add_video", "add_text", "add_hparams",
            "add_pr_curve", "add_pr_curve_raw", "add_mesh", "add_embedding", "add_custom_scalars",
            "add_custom_scalars_multilinechart", "add_custom_scalars_marginchart")
"""The writer methods whose data is stored (``add_graph``/``add_onnx_graph`` stay TensorBoard's alone)."""

_lock = threading.RLock()
_inside = threading.local()
_originals: dict[type, dict[str, Callable[..., Any]]] = {}
_mirrors: dict[str, SummaryWriter] = {}  # by log_dir: a writer and its file writer share one
_target: Run | None = None
_names: TagNames | None = None


WRITER_MODULES = {"torch.utils.tensorboard.writer": "torch", "tensorboardX.writer": "tensorboardX"}
"""The modules defining the SummaryWriter classes patched here, and the package each needs imported first."""

FILE_CAPTURED = ("add_summary", "add_event")
"""The methods of the modules' ``FileWriter`` whose summaries are stored when called from outside an ``add_*``
method (code that writes summaries itself, as MONAI's 3-D images)."""


def _classes_of(module: types.ModuleType) -> list[tuple[type, tuple[str, ...]]]:
    found: list[tuple[type, tuple[str, ...]]] = []
    for attr, methods in (("SummaryWriter", (*CAPTURED, "flush", "close")), ("FileWriter", FILE_CAPTURED)):
        cls = getattr(module, attr, None)
        if isinstance(cls, type):
            found.append((cls, methods))
    return found


def writer_classes() -> list[tuple[type, tuple[str, ...]]]:
    """The SummaryWriter and FileWriter classes (with the methods patched) of torch (importing
    ``torch.utils.tensorboard.writer`` if torch is imported) and tensorboardX (if imported). Neither torch nor
    tensorboardX is imported here for the first time: while patched, one imported later is patched as it loads
    (``_AfterImport``)."""
    found: list[tuple[type, tuple[str, ...]]] = []
    for module, package in WRITER_MODULES.items():
        if package not in sys.modules:
            continue
        try:
            found += _classes_of(importlib.import_module(module))
        except ImportError:  # torch without the tensorboard package
            continue
    return found


class _PatchingLoader(importlib.abc.Loader):
    """Runs a writer module's own loader, then patches its SummaryWriter."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._loader.exec_module(module)
        with _lock:
            if _finder in sys.meta_path:
                for cls, methods in _classes_of(module):
                    _patch_class(cls, methods)


class _AfterImport(importlib.abc.MetaPathFinder):
    """While patched: a writer module imported later is patched as it loads."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in WRITER_MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


_finder = _AfterImport()


def _patch_class(cls: type, methods: tuple[str, ...]) -> None:
    if cls in _originals:
        return
    saved: dict[str, Callable[..., Any]] = {}
    for name in methods:
        original = cls.__dict__.get(name)
        if original is None or not callable(original):
            continue
        saved[name] = original
        setattr(cls, name, _wrap(name, original))
    _originals[cls] = saved


def patch(run: Run | None = None, *, names: TagNames | None = None) -> None:
    """Store what every torch/tensorboardX ``SummaryWriter`` logs (writers created before too) in ``run`` (see
    the module docstring for the run chosen when it is None), while they still write their event files.

    ``names`` chooses the stored names (default: TensorBoard's tags; the ClearML shim passes ClearML's). Calling
    ``patch`` again switches the target: writers captured so far are flushed and start over with the new one.
    """
    global _target, _names
    with _lock:
        _release_mirrors()
        _target, _names = run, names
        for cls, methods in writer_classes():
            _patch_class(cls, methods)
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)


def unpatch() -> None:
    """Restore the writer classes: writers go on writing event files only. Runs started for writers are
    finished, others flushed. A no-op when not patched."""
    global _target, _names
    with _lock:
        if _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
        for cls, saved in _originals.items():
            for name, original in saved.items():
                setattr(cls, name, original)
        _originals.clear()
        _release_mirrors()
        _target, _names = None, None


def patched_run() -> Run | None:
    """The run given to the current ``patch`` (None when not patched or when none was given)."""
    return _target


def is_patched() -> bool:
    """Whether ``patch`` is in effect (SummaryWriter classes patched now or as they load)."""
    return _finder in sys.meta_path


def _release_mirrors() -> None:
    for mirror in list(_mirrors.values()):
        _quietly(mirror.close)
    _mirrors.clear()


def _quietly(call: Callable[[], Any]) -> None:
    try:
        call()
    except Exception as exc:  # the training script goes on whatever stepwire cannot store
        unsupported("storing a captured SummaryWriter call", f"{type(exc).__name__}: {exc}")


def _log_dir(writer: Any) -> str:
    """A SummaryWriter's ``log_dir`` (tensorboardX: ``logdir``), a FileWriter's ``get_logdir()``."""
    for attr in ("log_dir", "logdir", "get_logdir"):
        value = getattr(writer, attr, None)
        value = value() if callable(value) else value
        if isinstance(value, (str, os.PathLike)) and os.fspath(value):
            return str(os.fspath(value))
    return "tensorboard"


def _newest_live_run() -> Run | None:
    runs = [r for r in list(live_runs) if not r._finished]
    return max(runs, key=lambda r: r._t0) if runs else None


def _mirror(writer: Any) -> SummaryWriter:
    """The stepwire SummaryWriter storing what the writers of ``writer``'s log_dir log, made at the first
    captured call."""
    log_dir = _log_dir(writer)
    mirror = _mirrors.get(log_dir)
    if mirror is None or mirror.run._finished:
        run = _target if _target is not None and not _target._finished else _newest_live_run()
        mirror = SummaryWriter(log_dir, run=run)
        if _names is not None:
            mirror._names = _names
        _mirrors[log_dir] = mirror
    return mirror


@functools.cache
def _signature(function: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(function)


def _forward(name: str, original: Callable[..., Any], writer: Any, args: tuple[Any, ...],
             kwargs: dict[str, Any], close_figures: bool = True) -> None:
    """Call the mirror's ``name`` with the arguments of ``original``'s call that it takes (by name: the
    signatures of torch's and tensorboardX's writers differ in their tails)."""
    try:
        bound = _signature(original).bind(writer, *args, **kwargs)
    except TypeError:
        return  # the original call raised already; nothing to store
    with _lock:
        mirror = _mirror(writer)
    if name in FILE_CAPTURED:
        call = list(bound.arguments.values())[1:]
        store_summary(mirror, call[0], call[1] if len(call) > 1 else None)
        return
    method = getattr(mirror, name)
    accepted = _signature(getattr(SummaryWriter, name)).parameters
    given = {k: v for k, v in list(bound.arguments.items())[1:] if k in accepted}
    if "walltime" in given:
        given["walltime"] = None  # the event file has the caller's wall time; stepwire records the call's
    if name == "add_figure":
        given["close"] = close_figures
    method(**given)


def _wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    if name in ("flush", "close"):
        @functools.wraps(original)
        def lifecycle(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(self, *args, **kwargs)
            if getattr(_inside, "depth", 0) == 0:
                with _lock:
                    mirror = _mirrors.get(_log_dir(self))
                    if mirror is not None and name == "close" and mirror._owns_run:
                        del _mirrors[_log_dir(self)]  # its run is finished; a later call starts another
                if mirror is not None:
                    _quietly(getattr(mirror, name))
            return result

        return lifecycle

    @functools.wraps(original)
    def captured(self: Any, *args: Any, **kwargs: Any) -> Any:
        depth = getattr(_inside, "depth", 0)
        if depth > 0:
            return original(self, *args, **kwargs)
        if name == "add_figure":  # rendered before the original closes the figures
            _quietly(lambda: _forward(name, original, self, args, kwargs, close_figures=False))
        _inside.depth = depth + 1
        try:
            result = original(self, *args, **kwargs)
        finally:
            _inside.depth = depth
        if name != "add_figure":
            _quietly(lambda: _forward(name, original, self, args, kwargs))
        return result

    return captured
