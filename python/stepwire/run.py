"""``init()`` and ``Run``: the client a training script holds."""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import numpy.typing as npt
from google.protobuf.message import Message

from stepwire import _core, agent, spool
from stepwire.artifacts import stage_file
from stepwire.binning import BACKGROUND_MIN_VALUES, Binner
from stepwire.collector.embedded import data_dir, recorded_address
from stepwire.console import ConsoleCapture
from stepwire.lifecycle import live_runs
from stepwire.names import check_artifact_name, check_label, check_name
from stepwire.ranks import RankInfo
from stepwire.run_connect import LocalRestart, open_run
from stepwire.run_finish import finish_run, flush_run
from stepwire.run_stats import collect_stats
from stepwire.segment import segment_path, start_time
from stepwire.sender import Sender
from stepwire.spool import Spool
from stepwire.system import DEFAULT_INTERVAL, SystemSampler
from stepwire.tensors import check_tensor, cpu_view, is_tensor
from stepwire.transport import open_channel
from stepwire.v1 import ingest_pb2
from stepwire.values import float_array, sort_values, to_float

if TYPE_CHECKING:
    import torch
    from stepwire.media import MediaEncoder
    from stepwire.runconfig import RunConfig
    from stepwire.summary import RunSummary
    from stepwire.torch.device import DeviceWaiter
    from stepwire.torch.watch import WatchHandle

log = logging.getLogger("stepwire")

F = TypeVar("F", bound=Callable[..., Any])


def _accounted(method: F) -> F:
    """Counts the time a caller spends in ``method`` toward the run's ``stats()["logging_s"]``."""

    @functools.wraps(method)
    def wrapper(self: Run, *args: Any, **kwargs: Any) -> Any:
        self._busy_begin()
        try:
            return method(self, *args, **kwargs)
        finally:
            self._busy_end()

    return wrapper  # type: ignore[return-value]

MAX_SERIES = 1_000_000
"""Series names one process may define in a run (the collector enforces the same bound per stream)."""

class Run(_core.Producer):
    """A run being logged: call ``log``/``log_scalar``/``log_histogram``, then ``finish`` (or use ``with``).

    Logging calls only append to a per-thread ring (about 100 ns per scalar); batching, compression and
    delivery happen on the core's drainer thread and the sender thread.
    """

    def __init__(self, *, project: str, name: str | None, config: Mapping[str, Any] | None,
                 tags: list[str] | None, address: str | None, dir: str | os.PathLike[str] | None,
                 ranks: RankInfo, run_id: str, active: bool, offline: bool, on_unreachable: str,
                 token: str | None, tls_ca: str | os.PathLike[str] | None, quiet: bool, policy: str,
                 batch_bytes: int,
                 flush_interval: float, ring_capacity: int, k: int, finish_timeout: float,
                 connect_timeout: float, block_timeout: float = 60.0, system_metrics: bool = False,
                 system_interval: float = DEFAULT_INTERVAL, console: bool = False) -> None:
        if policy not in ("block", "drop"):
            raise ValueError(f"policy must be 'block' or 'drop', got {policy!r}")
        if not 0 <= k <= _core.MAX_K:
            raise ValueError(f"k must be between 0 and {_core.MAX_K}, got {k}")
        check_label("project", project)
        for what, label in [("run name", name), *(("tag", t) for t in tags or [])]:
            if label is not None or what == "tag":
                check_label(what, label)
        self.id: str = run_id
        """The run id, the same on every rank of a job: pass it to ``Api().run(id)``."""
        self.project = project
        self.name = name or f"run-{self.id[:6]}"
        self.rank = ranks.rank
        """This process's rank; ``world_size`` and ``local_rank`` beside it."""
        self.world_size = ranks.world_size
        self.local_rank = ranks.local_rank
        self.active = active
        """False on a rank that ``log_on_ranks`` leaves out: every logging call is accepted and discarded."""
        self.dir: Path | None = None if address else data_dir(dir)
        self._initial_config = dict(config or {})
        self._k = k
        self._finish_timeout = finish_timeout
        self._kinds: dict[str, int] = {}
        self._hist_ids: dict[str, int] = {}
        self._waiter: DeviceWaiter | None = None
        self._binner: Binner | None = None
        self._media: MediaEncoder | None = None
        self._block_timeout = block_timeout
        self._drop = policy == "drop"
        self._finished = False
        self._stream_id = uuid.uuid4().hex
        self._t0 = time.time()
        self._system: SystemSampler | None = None
        self._console: ConsoleCapture | None = None

        # the rings, the journal of what was drained and the series table in shared memory, so that a survivor
        # stores what a crash of this process leaves (stepwire.survivor; docs/segment.md)
        shm_path, self._shm_reason = segment_path(self._stream_id, address is not None, agent.allowed()) if active \
            else ("", "this rank does not log")
        self._stream = _core.Stream(ring_capacity=ring_capacity, drop_when_full=policy == "drop",
                                    batch_bytes=batch_bytes, flush_interval=flush_interval, discard=not active,
                                    block_timeout=block_timeout, shm_path=shm_path)
        super().__init__(self._stream)
        self.address: str | None = None
        if not active:
            return
        try:  # a failed init leaves nothing behind: its segment would stay in /dev/shm for good
            info = ingest_pb2.RunInfo(run_id=self.id, project=project, name=self.name, tags=list(tags or []),
                                      config_json=json.dumps(dict(config or {}), default=str), created=self._t0,
                                      status="running", client_id=self._stream_id, rank=self.rank,
                                      world_size=ranks.logging_ranks)
            self.spool_dir = data_dir(dir) / "spool" / f"{self.id}-r{self.rank}-{self._stream_id[:12]}"
            """Where records the collector has not acknowledged wait (replayed by the run or ``stepwire sync``)."""
            self._staging = self.spool_dir / "files"
            self._stream.set_segment_meta(json.dumps({
                "run_id": self.id, "rank": self.rank, "stream_id": self._stream_id, "directory": str(data_dir(dir)),
                "spool_dir": str(self.spool_dir), "pid": os.getpid(), "start_time": start_time(os.getpid()),
                "remote": address or ""}))
            if address and shm_path:  # no collector on this node: its agent stores what a crash leaves
                try:
                    agent.ensure(data_dir(dir), address, token, tls_ca)
                except (RuntimeError, OSError) as exc:
                    log.warning("%s: a crash of this process would lose what it logged last", exc)
                    self._shm_reason = f"the node agent did not start: {exc}"
            self._text_seq = 0
            self._token, self._tls_ca = token, tls_ca
            self._quiet = quiet
            self._channel: grpc.Channel | None = None
            if not offline:
                try:
                    self.address, self._channel = open_run(info, address, self.dir, connect_timeout, token, tls_ca)
                    self._opened = True
                except ConnectionError as exc:
                    if on_unreachable == "raise":
                        raise
                    log.warning("%s; logging to the spool %s until it answers (or run stepwire sync)", exc,
                                self.spool_dir)
                    # the directory's collector, if one was started, may just be slow to answer (a loaded machine):
                    # the sender delivers to it once it answers, and starts it again if it is gone
                    self.address = address if self.dir is None else recorded_address(self.dir)
                    self._channel = open_channel(self.address, self._token if address else None, self._tls_ca) \
                        if self.address else None
            # a collector init could not reach gets no record until a probe finds it answering: everything goes
            # to the spool at once instead of waiting in memory for retries
            # the directory's local collector is started again if it stops answering (the embedded default)
            self._restart = LocalRestart(self.dir, self.address) if self.dir is not None and self.address else None
            run_spool = Spool(self.spool_dir)
            spool_open = not self._opened
            if spool_open:  # the collector learns of the run when the spool reaches it: written before init returns,
                try:        # so that a process dying at its first call leaves its run's project, name and config
                    run_spool.append(spool.OPEN_RUN, info.SerializeToString())
                    spool_open = False
                except OSError as exc:  # the sender tries again (and counts it lost if it cannot)
                    log.warning("cannot spool the run's opening record now: %s", exc)
            self._sender = Sender(self._stream, self._channel, self.id, self.rank, self._stream_id, run_spool,
                                  offline=self._channel is None, answering=self._opened, restart=self._restart)
            if spool_open:
                self._sender.submit(spool.OPEN_RUN, info)
            live_runs.add(self)
            if console:
                self._console = ConsoleCapture(self)
            if system_metrics:
                self._system = SystemSampler(self, system_interval)
        except BaseException:
            live_runs.discard(self)
            self._stream.close()
            self._stream.release_segment()
            raise

    _opened = False

    def _submit(self, kind: int, msg: Message) -> None:
        """Have the sender thread deliver ``msg`` (nothing on a rank that does not log)."""
        self._check_open()
        if self.active:
            self._sender.submit(kind, msg)

    # -- slow paths of the native fast calls ------------------------------------------------------------
    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError(f"run {self.id} is finished")

    def _define(self, name: object, kind: int) -> int:
        if type(name) is str and self._kinds.get(name) == kind:  # known: checked when it was first used
            return self._scalar_ids[name] if kind == _core.KIND_SCALAR else self._hist_ids[name]
        key = check_name(name)
        known = self._kinds.get(key)
        if known is not None and known != kind:
            what = {_core.KIND_SCALAR: "scalar", _core.KIND_HISTOGRAM: "histogram"}
            raise ValueError(f"{key!r} is already logged as a {what[known]}, not a {what[kind]}")
        if known is None:
            if len(self._kinds) >= MAX_SERIES:
                raise ValueError(f"cannot log {key!r}: a run holds at most {MAX_SERIES} series names per process")
            sid = self._stream.define(key, kind)
            self._kinds[key] = kind
            if kind == _core.KIND_SCALAR:
                self._scalar_ids[key] = sid
            else:
                self._hist_ids[key] = sid
        return self._scalar_ids[key] if kind == _core.KIND_SCALAR else self._hist_ids[key]

    def _log_scalar_slow(self, name: object, value: object, step: object) -> None:
        self._check_open()
        self._define(name, _core.KIND_SCALAR)
        if is_tensor(value) and value.device.type != "cpu" and value.numel() == 1:  # as log() does: no sync
            from stepwire.torch.device import log_device_values

            check_tensor(str(name), value)
            log_device_values(self, {str(name): value.reshape(())}, {}, self._take_step(step))  # type: ignore[arg-type]
            return
        self.log_scalar(name, to_float(str(name), value), step)  # type: ignore[arg-type]

    def _log_slow(self, data: object, step: object) -> None:
        self._check_open()
        if not isinstance(data, Mapping):
            raise TypeError(f"log() takes a dict of name -> value, got {type(data).__name__}")
        v = sort_values(data)
        for name in [*v.scalars, *v.device_scalars]:
            self._define(name, _core.KIND_SCALAR)
        hist_ids = [(self._define(name, _core.KIND_HISTOGRAM), arr, bf16) for name, arr, bf16 in v.hists]
        for name in v.device_hists:
            self._define(name, _core.KIND_HISTOGRAM)
        resolved = self._take_step(step)  # type: ignore[arg-type]
        super().log(v.scalars, resolved)
        for (sid, arr, bf16), (name, source) in zip(hist_ids, v.hist_sources, strict=True):
            self._push_histogram(sid, name, resolved, arr, bf16, source)
        if v.device_scalars or v.device_hists:
            from stepwire.torch.device import log_device_values

            log_device_values(self, v.device_scalars, v.device_hists, resolved)
        if v.images and self.active:
            from stepwire.media import log_images

            log_images(self, v.images, resolved)

    # -- public API ---------------------------------------------------------------------------------------
    @_accounted
    def log_histogram(self, name: str, values: npt.ArrayLike | torch.Tensor, step: int | None = None) -> None:
        """Log the histogram of ``values`` (array, sequence of numbers, or torch tensor on any device).

        The values logged are those at the call. CPU values of 65,536 or more are binned by the run's background
        thread (copied first when they are the caller's array or tensor, so later changes do not reach them),
        smaller ones right away (GIL released, tensors zero-copy); GPU tensors (0-d ones too) are binned on the
        device without a synchronisation and logged once the results reach the host. NaN and infinities are
        counted.
        """
        self._check_open()
        if is_tensor(values) and values.device.type != "cpu":
            from stepwire.torch.device import log_device_values

            check_tensor(name, values)
            self._define(name, _core.KIND_HISTOGRAM)
            log_device_values(self, {}, {name: values}, self._take_step(step))
            return
        sid = self._define(name, _core.KIND_HISTOGRAM)
        arr, bf16 = cpu_view(name, values) if is_tensor(values) else (float_array(name, values), False)
        self._push_histogram(sid, name, self._take_step(step), arr, bf16, values)

    def _push_histogram(self, sid: int, name: str, step: int, arr: npt.NDArray[Any], bf16: bool,
                        source: object) -> None:
        """Bin ``arr`` here if small (or refused by the background thread), else in the background: copied
        first (into a raw-values file beside the segment, or if it is the caller's memory, ``source``'s), so that
        later changes do not reach what is logged and a crash before it is binned does not lose it."""
        if arr.size >= BACKGROUND_MIN_VALUES and self.active and self._background().submit_copy(
                sid, name, step, arr, bf16, source):
            return
        self._stream.push_histogram(sid, step, arr, self._k, bf16)

    def _background(self) -> Binner:
        """The run's background binning thread, started on first use."""
        if self._binner is None:
            self._binner = Binner(self, drop=self._drop)
        return self._binner

    @_accounted
    def log_params(self, params: Mapping[str, Any], replace: bool = False) -> None:
        """Merge ``params`` into the run's config (or replace it); values that are not JSON become strings.

        Sent by the sender thread: the call does not wait for the network.
        """
        if not isinstance(params, Mapping):
            raise TypeError(f"log_params() takes a dict, got {type(params).__name__}")
        update = ingest_pb2.RunUpdate(run_id=self.id, config_json=json.dumps(dict(params), default=str),
                                      replace_config=replace, rank=self.rank)
        self._submit(spool.UPDATE_RUN, update)

    @_accounted
    def update_meta(self, meta: Mapping[str, Any]) -> None:
        """Merge ``meta`` (run properties that are not hyper-parameters, e.g. progress) into the run; dict values
        merge one level deep."""
        update = ingest_pb2.RunUpdate(run_id=self.id, meta_json=json.dumps(dict(meta), default=str), rank=self.rank)
        self._submit(spool.UPDATE_RUN, update)

    @_accounted
    def log_text(self, name: str, text: str, step: int | None = None) -> None:
        """Log ``text`` under ``name`` at ``step`` (default: the auto counter)."""
        self._check_open()
        check_name(name)
        if not isinstance(text, str):
            raise TypeError(f"text for {name!r} must be a str, got {type(text).__name__}")
        self._text_seq += 1
        record = ingest_pb2.TextRecord(run_id=self.id, rank=self.rank, name=name, step=self._take_step(step),
                                       wall_time=time.time(), text=text, stream_id=self._stream_id,
                                       sequence=self._text_seq)
        self._submit(spool.TEXT, record)

    @_accounted
    def log_artifact(self, path: str | os.PathLike[str], name: str | None = None, step: int | None = None) -> str:
        """Store the file at ``path`` with the run as ``name`` (default: its file name); returns the name.

        The file is captured as it is now (hard link, else copy) and uploaded by the sender thread, so it may
        be changed or deleted right after the call.
        """
        self._check_open()
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"log_artifact: no file at {source}")
        name = check_artifact_name(name or source.name)
        if not self.active:
            return name
        staged = stage_file(source, self._staging)
        self._submit(spool.ARTIFACT, ingest_pb2.ArtifactChunk(
            run_id=self.id, rank=self.rank, name=name, step=self._take_step(step), wall_time=time.time(),
            source_path=str(staged)))
        return name

    @_accounted
    def delete_artifact(self, name: str) -> None:
        """Remove artifact ``name`` from the run (sent by the sender thread)."""
        self._submit(spool.DELETE_ARTIFACT, ingest_pb2.ArtifactRef(run_id=self.id, name=check_artifact_name(name)))

    # -- media (stepwire/media.py): converted and encoded on the run's media thread -----------------------------
    @_accounted
    def log_image(self, name: str, image: Any, step: int | None = None, caption: str | None = None,
                  grid: bool = True) -> None:
        """Log an image: a path or bytes (PNG/JPEG/GIF/WebP, stored as given), a PIL image, or an array (numpy,
        torch) HW, HWC or CHW, uint8 or float in [0, 1]; a batch NHWC/NCHW as one grid image, or with
        ``grid=False`` as ``name/0``, ``name/1``, ... The values are copied at the call; PNG encoding runs on the
        run's media thread (conversion rules: ``stepwire.media``)."""
        self._check_open()
        from stepwire import media

        media.log_image(self, name, image, step, caption, grid)

    @_accounted
    def log_media(self, name: str, data: Any, step: int | None = None, kind: str | None = None,
                  caption: str | None = None) -> None:
        """Log encoded media as given: a path or bytes of audio (WAV, MP3, Ogg, FLAC), video (MP4, WebM, GIF with
        ``kind="video"``), an image, or HTML (``kind="html"``, a ``.html`` file, or text starting with "<").
        The type is read from the content's first bytes; a file is captured at the call."""
        self._check_open()
        from stepwire import media

        media.log_media(self, name, data, step, kind, caption)

    @_accounted
    def log_plot(self, name: str, figure: Any, step: int | None = None, caption: str | None = None) -> None:
        """Log a figure: a Plotly figure, its dict or its JSON (stored as Plotly JSON), or a matplotlib figure
        (rendered to PNG at the call, stored as an image)."""
        self._check_open()
        from stepwire import media

        media.log_plot(self, name, figure, step, caption)

    @_accounted
    def log_table(self, name: str, data: Any, step: int | None = None, columns: list[str] | None = None,
                  caption: str | None = None) -> None:
        """Log a table: a pandas DataFrame, a dict of columns, a list of rows (with ``columns``) or of dicts, or
        a CSV path; stored as Parquet (encoded on the run's media thread), read back with ``RunView.tables``."""
        self._check_open()
        from stepwire import media

        media.log_table(self, name, data, step, columns, caption)

    def _media_encoder(self) -> MediaEncoder:
        """The run's media thread, started on first use."""
        if self._media is None:
            from stepwire.media import MediaEncoder

            self._media = MediaEncoder(self, drop=self._drop, block_timeout=self._block_timeout)
        return self._media

    def watch(self, model: torch.nn.Module, log: str = "gradients", every: int = 1,
              background: bool = True) -> WatchHandle:
        """Log every parameter's histogram and norm/min/max/mean/non-finite count every ``every`` iterations
        (``log``: "gradients", "parameters" or "all"), at the run's current step; returns a handle to stop.
        CPU tensors are binned in the background once an optimizer step shows that is safe (see
        ``stepwire.torch.watch``); ``background=False`` keeps them on the training thread."""
        from stepwire.torch.watch import WatchHandle, watch

        self._check_open()
        return watch(self, model, log, every, background) if self.active else WatchHandle([])

    @_accounted
    def log_model_stats(self, model: torch.nn.Module, step: int | None = None, log: str = "gradients") -> None:
        """Log what ``watch`` logs, once, at ``step`` (default: the run's current step, not advancing it)."""
        from stepwire.torch.watch import log_model_stats

        self._check_open()
        if self.active:
            log_model_stats(self, model, step, log)

    def _log_stats(self, scalars: Mapping[str, float], step: int) -> None:
        """Log scalars at ``step`` without moving the step counter (statistics logged from hooks)."""
        values = {k: float(v) for k, v in scalars.items()}
        for name in values:
            self._define(name, _core.KIND_SCALAR)  # checks names it has not seen
        self._log_at(values, step)

    def _device_waiter(self) -> DeviceWaiter:
        if self._waiter is None:
            from stepwire.torch.device import DeviceWaiter

            self._waiter = DeviceWaiter(drop=self._drop)
        return self._waiter

    def flush(self, timeout: float | None = None) -> bool:
        """Seal everything logged so far and wait until the collector acknowledged it (spool included; for an
        offline run, until it is in the spool); False on timeout (default ``finish_timeout``)."""
        return flush_run(self, timeout)

    def finish(self, status: str = "finished") -> None:
        """Flush, record the rank's ``status`` and release the collector. Idempotent; also runs at exit and on
        SIGTERM. Waits up to ``finish_timeout`` for everything logged to be handled and, while the collector
        answers, acknowledged; what it has not acknowledged stays in the spool (``spool_dir``), and ``stepwire
        sync`` delivers it. What is still in memory when ``finish_timeout`` runs out is counted as lost. The
        summary line says how much was stored, waits in the spool, was dropped and was lost."""
        finish_run(self, status)

    def stats(self) -> dict[str, Any]:
        """Counts of items (scalar points and histograms). ``logged``: accepted by logging calls; ``dropped``:
        refused by them (a full ring under ``policy="drop"``, or, ``timed_out`` of them, after waiting
        ``block_timeout`` under ``policy="block"``); ``blocked``: times a caller waited for room. Every logged
        item is, once ``finish`` returns, in exactly one of ``acknowledged`` (stored by the collector),
        ``rejected`` (refused as invalid), ``spooled`` (waiting in the spool for a replay or ``stepwire sync``)
        and ``lost`` (neither delivered nor spooled: the collector did not answer and the spool could not be
        written, or ``finish_timeout`` ran out; ``lost_reason`` says why, "" when nothing was lost); before,
        some are still on their way. ``sent``: items the sender took; ``spooled_total``: items ever written to
        the spool; ``side_failed``/``side_lost``: texts, artifacts and run updates refused, or neither
        delivered nor spooled; ``sender_errors``: unexpected errors the sender thread survived;
        ``device_*``: tensors on a device (``stepwire.torch.device``: ``device_dropped`` reductions or scalar
        copies not made because too many results waited for the waiter thread under ``policy="drop"``,
        ``device_waited``/``device_waited_s`` times and seconds a caller waited for it under ``policy="block"``,
        ``device_errors`` results whose waiting or logging failed, ``device_error`` the first such error, "" if none);
        ``binning_*``: histograms binned in the background (``stepwire.binning``: ``binning_background`` binned there,
        ``binning_changed`` dropped because their tensor changed before it was binned, ``binning_dropped`` refused under
        ``policy="drop"``, ``binning_errors`` failed, ``binning_waits``/``binning_wait_s`` times and seconds a caller
        waited for it, ``binning_held_bytes`` waiting now, ``binning_shm_full`` binned on the caller's thread because
        /dev/shm had no room for their raw-values file: docs/segment.md); ``media_*``: images and other media records
        (``stepwire.media``: ``media_logged`` accepted, ``media_sent`` encoded and handed to the sender,
        ``media_dropped`` dropped because more than 256 MiB waited for the media thread, ``media_errors`` that failed to
        encode or were not what they claimed, ``media_error`` the first such error, ``media_held_bytes`` waiting now).
        And the cost of logging:
        ``logging_s``, the seconds calling threads spent inside stepwire's logging calls, and
        ``logging_fraction``, that time over the wall time since ``init`` (approximate while several threads
        log at once)."""
        return collect_stats(self)

    @property
    def config(self) -> RunConfig:
        """The run's config (``config.lr``, ``config["lr"]``, ``config.update({...})``): each change is stored
        with the run (``stepwire.runconfig``)."""
        from stepwire.runconfig import RunConfig

        if "_config" not in self.__dict__:
            self.__dict__["_config"] = RunConfig(self, self._initial_config)
        config: RunConfig = self.__dict__["_config"]
        return config

    @property
    def summary(self) -> RunSummary:
        """The run's summary values (``summary["best"] = 0.9``), stored in its meta (``stepwire.summary``)."""
        from stepwire.summary import RunSummary

        if "_summary" not in self.__dict__:
            self.__dict__["_summary"] = RunSummary(self)
        summary: RunSummary = self.__dict__["_summary"]
        return summary

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.finish("failed" if exc_type is not None else "finished")

    def __repr__(self) -> str:
        return f"<stepwire.Run {self.id} project={self.project!r} name={self.name!r}>"
