"""System metrics: a daemon thread per process samples the machine and logs ordinary scalar series under ``system/``.

Started by ``init`` (``system_metrics=True``, the default; ``system_metrics=False`` or ``$STEPWIRE_SYSTEM_METRICS=0``
turns it off) and stopped by ``Run.finish``. Every ``system_interval`` seconds (default 10) it logs, at the run's
current step (``run.step``, without moving it) and with the wall time of the sample:

Per process (every rank):
    ``system/cpu_percent`` (this process, 100 = one core busy), ``system/rss_mib``, ``system/threads``,
    ``system/open_fds`` (open file descriptors; handles on Windows), ``system/steps_per_s`` (the run's step
    counter over the interval; 0 while it does not move), ``system/log_calls_per_s`` (logging calls on the run:
    ``log``, ``log_scalar``, ``log_histogram``, ...), ``system/log_interval_ms`` (the mean time between two of
    them over the interval, absent while none was made) and ``system/logging_percent`` (the share of the
    interval that callers spent inside them, as ``stats()["logging_fraction"]`` but per interval).
Per host (only the rank with ``local_rank == 0``, so that 8 ranks on one host do not sample it 8 times):
    ``system/host/cpu_percent`` (all cores, 0-100), ``system/host/memory_used_mib``,
    ``system/host/memory_total_mib``, ``system/host/memory_percent``, ``system/host/disk_read_mib_s``,
    ``system/host/disk_write_mib_s``, ``system/host/net_sent_mib_s``, ``system/host/net_recv_mib_s``.
Per GPU, for the device this rank uses (when ``pynvml`` from ``nvidia-ml-py`` imports and NVML finds a GPU; else
absent): ``system/gpu/utilization`` (%), ``system/gpu/memory_used_mib``, ``system/gpu/memory_total_mib``,
``system/gpu/power_w``, ``system/gpu/temperature_c``, ``system/gpu/sm_clock_mhz``, ``system/gpu/throttle_reasons``
(NVML's bit mask of clock event reasons, 0 when the clocks are not held back) and ``system/gpu/index`` (the NVML
index of the device). The names carry no device number so that ranks compare under one name; the device is the
current CUDA device when torch has initialised CUDA, else ``$LOCAL_RANK``, else 0 (mapped through
``$CUDA_VISIBLE_DEVICES``).

The sampling is psutil's and NVML's cheap calls (``/proc`` reads, no subprocess); a metric a platform does not
offer is left out. Errors never reach the training thread: a sampler that fails logs one warning and stops.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stepwire.run import Run

log = logging.getLogger("stepwire")

ENV = "STEPWIRE_SYSTEM_METRICS"
DEFAULT_INTERVAL = 10.0
"""Seconds between samples unless ``init(system_interval=...)``: W&B's default too. Each sample of an otherwise idle
process is one push its collector stores in a transaction of its own (about 10 ms of the collector's CPU on DuckDB):
at 2 s, 64 idle ranks cost a collector half a core (docs/ingest.md)."""
MIN_INTERVAL = 0.05
_MIB = float(1 << 20)


def enabled(system_metrics: bool | None) -> bool:
    """``system_metrics`` if given, else ``$STEPWIRE_SYSTEM_METRICS`` (``0``/``false``/``no``/``off`` turn it off)."""
    if system_metrics is not None:
        return bool(system_metrics)
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def gpu_index() -> int:
    """The CUDA device index (as the process sees it) this rank uses: torch's current device once CUDA is
    initialised, else ``$LOCAL_RANK``, else 0."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_initialized():
            return int(torch.cuda.current_device())
    except Exception:  # an odd torch build: fall back on the launcher's variable
        pass
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


class _Gpu:
    """NVML readings of one device; ``None`` when NVML is absent or finds no such device."""

    def __init__(self, nvml: Any, handle: Any, index: int) -> None:
        self.nvml, self.handle, self.index = nvml, handle, index
        self.broken: set[str] = set()  # readings the device does not support: not asked again

    @staticmethod
    def open(index: int) -> _Gpu | None:
        try:
            import pynvml  # nvidia-ml-py: optional
        except Exception:
            return None
        try:
            pynvml.nvmlInit()
        except Exception as exc:
            log.debug("NVML did not initialise: %s", exc)
            return None
        try:
            visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
            if visible and index < len(visible) and not visible[index].isdigit():
                handle = pynvml.nvmlDeviceGetHandleByUUID(visible[index])
                physical = int(pynvml.nvmlDeviceGetIndex(handle))
            else:
                physical = int(visible[index]) if visible and index < len(visible) else index
                if physical >= int(pynvml.nvmlDeviceGetCount()):
                    raise LookupError(f"no GPU {physical}")
                handle = pynvml.nvmlDeviceGetHandleByIndex(physical)
        except Exception as exc:
            log.debug("no NVML device for CUDA index %d: %s", index, exc)
            try:
                pynvml.nvmlShutdown()
            except Exception:
                pass
            return None
        return _Gpu(pynvml, handle, physical)

    def _read(self, out: dict[str, float], name: str, read: Callable[[], float]) -> None:
        if name in self.broken:
            return
        try:
            out[name] = float(read())
        except Exception:  # NVML_ERROR_NOT_SUPPORTED and the like: this device does not say
            self.broken.add(name)

    def sample(self, out: dict[str, float]) -> None:
        n, h = self.nvml, self.handle
        out["system/gpu/index"] = float(self.index)
        self._read(out, "system/gpu/utilization", lambda: n.nvmlDeviceGetUtilizationRates(h).gpu)
        mem: list[Any] = []

        def used() -> float:
            mem.append(n.nvmlDeviceGetMemoryInfo(h))
            return float(mem[0].used) / _MIB

        self._read(out, "system/gpu/memory_used_mib", used)
        if mem:
            out["system/gpu/memory_total_mib"] = float(mem[0].total) / _MIB
        self._read(out, "system/gpu/power_w", lambda: n.nvmlDeviceGetPowerUsage(h) / 1000.0)
        self._read(out, "system/gpu/temperature_c", lambda: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU))
        self._read(out, "system/gpu/sm_clock_mhz", lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM))
        reasons = (getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None)
                   or n.nvmlDeviceGetCurrentClocksThrottleReasons)
        self._read(out, "system/gpu/throttle_reasons", lambda: reasons(h))

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except Exception:
            pass


class SystemSampler:
    """The daemon thread that samples every ``interval`` seconds and logs into ``run`` (``close`` stops it)."""

    def __init__(self, run: Run, interval: float = DEFAULT_INTERVAL, host: bool | None = None) -> None:
        if not interval >= MIN_INTERVAL:
            raise ValueError(f"system_interval must be at least {MIN_INTERVAL} s, got {interval!r}")
        self._run = run
        self.interval = float(interval)
        self.host = run.local_rank == 0 if host is None else host
        """Whether this process samples the host-wide figures (the rank with local rank 0)."""
        self.samples = 0
        self.error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stepwire-system", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop sampling and wait (up to ``timeout``) for the thread to end."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _loop(self) -> None:
        try:
            import psutil
        except ImportError:
            log.warning("system metrics need psutil (pip install psutil): not sampling")
            return
        gpu = None
        try:
            proc = psutil.Process()
            proc.cpu_percent(None)  # the first call sets the baseline
            if self.host:
                psutil.cpu_percent(None)
            gpu = _Gpu.open(gpu_index())
            last = self._counters(psutil)
            while not self._stop.wait(self.interval):
                values = self._sample(psutil, proc, gpu, last)
                if self._stop.is_set():
                    break
                self._run._log_stats(values, self._run.step)
                self.samples += 1
        except Exception as exc:  # never reaches the training thread
            self.error = f"{type(exc).__name__}: {exc}"
            if not self._stop.is_set():
                log.warning("system metrics stopped: %s", self.error)
        finally:
            if gpu is not None:
                gpu.close()

    def _counters(self, psutil: Any) -> dict[str, float]:
        """Cumulative counters the next sample turns into rates."""
        out = {"t": time.monotonic(), "step": float(self._run.step), "calls": float(self._run._calls),
               "busy_ns": float(self._run._busy_ns)}
        if self.host:
            disk = _safe(psutil.disk_io_counters)
            net = _safe(psutil.net_io_counters)
            if disk is not None:
                out["disk_read"], out["disk_write"] = float(disk.read_bytes), float(disk.write_bytes)
            if net is not None:
                out["net_sent"], out["net_recv"] = float(net.bytes_sent), float(net.bytes_recv)
        return out

    def _sample(self, psutil: Any, proc: Any, gpu: _Gpu | None, last: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        with proc.oneshot():
            out["system/cpu_percent"] = float(proc.cpu_percent(None))
            out["system/rss_mib"] = float(proc.memory_info().rss) / _MIB
            out["system/threads"] = float(proc.num_threads())
            fds = getattr(proc, "num_fds", None) or getattr(proc, "num_handles", None)
            if fds is not None:
                out["system/open_fds"] = float(fds())
        now = self._counters(psutil)
        dt = max(now["t"] - last["t"], 1e-9)
        out["system/steps_per_s"] = max(0.0, now["step"] - last["step"]) / dt
        calls = now["calls"] - last["calls"]
        out["system/log_calls_per_s"] = calls / dt
        if calls > 0:
            out["system/log_interval_ms"] = 1e3 * dt / calls
        out["system/logging_percent"] = 100.0 * (now["busy_ns"] - last["busy_ns"]) / 1e9 / dt
        if self.host:
            out["system/host/cpu_percent"] = float(psutil.cpu_percent(None))
            vm = psutil.virtual_memory()
            out["system/host/memory_used_mib"] = float(vm.total - vm.available) / _MIB
            out["system/host/memory_total_mib"] = float(vm.total) / _MIB
            out["system/host/memory_percent"] = float(vm.percent)
            for key, name in (("disk_read", "disk_read_mib_s"), ("disk_write", "disk_write_mib_s"),
                              ("net_sent", "net_sent_mib_s"), ("net_recv", "net_recv_mib_s")):
                if key in now and key in last:
                    out[f"system/host/{name}"] = max(0.0, now[key] - last[key]) / _MIB / dt
        last.clear()
        last.update(now)
        if gpu is not None:
            gpu.sample(out)
        return out


def _safe(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except Exception:  # no disks or interfaces visible (containers, some platforms)
        return None
