"""System metrics (stepwire.system) through the public API against a real collector: process and host series,
GPU series through NVML (a fake pynvml: no GPU here), and off switches."""

from __future__ import annotations

import sys
import threading
import time
import types
from typing import Any

import numpy as np
import pytest

import stepwire
from conftest import CollectorProcess

PROCESS = {"system/cpu_percent", "system/rss_mib", "system/threads", "system/open_fds", "system/steps_per_s",
           "system/log_calls_per_s", "system/log_interval_ms", "system/logging_percent"}
HOST = {"system/host/cpu_percent", "system/host/memory_used_mib", "system/host/memory_total_mib",
        "system/host/memory_percent"}
GPU = {"system/gpu/index", "system/gpu/utilization", "system/gpu/memory_used_mib", "system/gpu/memory_total_mib",
       "system/gpu/power_w", "system/gpu/sm_clock_mhz", "system/gpu/throttle_reasons"}


def _train(run: stepwire.Run, samples: int = 3) -> int:
    """Log a step every few ms until the sampler has logged ``samples`` times; returns the steps logged."""
    steps = 0
    deadline = time.monotonic() + 60
    while run.stats()["system_samples"] < samples and time.monotonic() < deadline:
        run.log({"loss": 1.0 / (steps + 1)})
        steps += 1
        time.sleep(0.005)
    assert run.stats()["system_samples"] >= samples
    return steps


def test_process_and_host_series_with_plausible_values(collector: CollectorProcess,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVML, whatever is installed: GPU series are absent
    run = stepwire.init(project="sys", address=collector.address, system_metrics=True, system_interval=0.1,
                        quiet=True)
    assert run.local_rank == 0
    steps = _train(run)
    assert run.step == steps  # sampling never moves the step counter
    run.finish()
    view = stepwire.Api(address=collector.address).run(run.id)
    names = {s.name for s in view.series() if s.name.startswith("system/")}
    assert PROCESS | HOST <= names
    assert not any(n.startswith("system/gpu/") for n in names)
    rss = view.scalars("system/rss_mib")
    assert len(rss["value"]) >= 3 and (rss["value"] > 0).all() and (rss["rank"] == 0).all()
    assert (view.scalars("system/cpu_percent")["value"] >= 0).all()
    assert (view.scalars("system/threads")["value"] >= 2).all()  # this thread and the sampler at least
    assert (view.scalars("system/open_fds")["value"] > 0).all()
    total = view.scalars("system/host/memory_total_mib")["value"]
    used = view.scalars("system/host/memory_used_mib")["value"]
    assert (total > 0).all() and (used > 0).all() and (used <= total).all()
    host_cpu = view.scalars("system/host/cpu_percent")["value"]
    assert ((host_cpu >= 0) & (host_cpu <= 100)).all()
    assert (view.scalars("system/steps_per_s")["value"] >= 0).all()
    assert view.scalars("system/steps_per_s")["value"].max() > 0  # the loop above was stepping
    # the time between logging calls: one log() per step here, so calls/s and steps/s are one figure
    calls, interval = view.scalars("system/log_calls_per_s"), view.scalars("system/log_interval_ms")
    assert np.allclose(calls["value"], view.scalars("system/steps_per_s")["value"], atol=25)  # read apart
    by_step = dict(zip(calls["wall_time"].tolist(), calls["value"].tolist(), strict=True))
    assert all(np.isclose(ms, 1e3 / by_step[t]) for t, ms in zip(interval["wall_time"].tolist(),
                                                                    interval["value"].tolist(), strict=True))
    busy = view.scalars("system/logging_percent")["value"]
    assert ((busy >= 0) & (busy <= 100)).all() and busy.max() > 0
    # logged at the run's current step: within the steps the loop used, in order
    sampled = view.scalars("system/rss_mib")["step"]
    assert (sampled <= steps).all() and (np.diff(sampled) >= 0).all()


class FakeNvml(types.ModuleType):
    """What stepwire.system asks of pynvml, for a host with 4 GPUs; temperature is "not supported"."""

    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1

    def __init__(self) -> None:
        super().__init__("pynvml")
        self.calls: list[str] = []
        self.handles: list[int] = []

    def nvmlInit(self) -> None:
        self.calls.append("init")

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return 4

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        self.handles.append(i)
        return 100 + i

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return types.SimpleNamespace(gpu=h - 100 + 40, memory=10)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return types.SimpleNamespace(used=3 << 30, total=80 << 30, free=77 << 30)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return 250_500  # mW

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

    def nvmlDeviceGetClockInfo(self, h: int, clock: int) -> int:
        assert clock == self.NVML_CLOCK_SM
        return 1410

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: int) -> int:
        return 0x4  # SW power cap


def test_gpu_series_through_nvml_for_the_ranks_device(collector: CollectorProcess,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # this rank's CUDA device 1 is the host's GPU 3
    run = stepwire.init(project="sys", address=collector.address, system_metrics=True, system_interval=0.1,
                        quiet=True, rank=0, world_size=1)
    _train(run)
    run.finish()
    assert fake.handles == [3] and fake.calls == ["init", "shutdown"]
    view = stepwire.Api(address=collector.address).run(run.id)
    names = {s.name for s in view.series()}
    assert GPU <= names
    assert "system/gpu/temperature_c" not in names  # not supported by this device: absent, not zero
    assert set(view.scalars("system/gpu/index")["value"]) == {3.0}
    assert set(view.scalars("system/gpu/utilization")["value"]) == {43.0}
    assert set(view.scalars("system/gpu/memory_used_mib")["value"]) == {3 * 1024.0}
    assert set(view.scalars("system/gpu/memory_total_mib")["value"]) == {80 * 1024.0}
    assert set(view.scalars("system/gpu/power_w")["value"]) == {250.5}
    assert set(view.scalars("system/gpu/sm_clock_mhz")["value"]) == {1410.0}
    assert set(view.scalars("system/gpu/throttle_reasons")["value"]) == {4.0}


def test_gpu_series_absent_when_nvml_finds_no_such_device(collector: CollectorProcess,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("LOCAL_RANK", "7")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    run = stepwire.init(project="sys", address=collector.address, system_metrics=True, system_interval=0.1,
                        quiet=True, rank=0, world_size=1)
    _train(run, 2)
    run.finish()
    names = {s.name for s in stepwire.Api(address=collector.address).run(run.id).series()}
    assert PROCESS <= names and not any(n.startswith("system/gpu/") for n in names)
    assert fake.calls == ["init", "shutdown"]


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_turned_off_logs_no_system_series(collector: CollectorProcess, monkeypatch: pytest.MonkeyPatch,
                                          how: str) -> None:
    monkeypatch.setenv("STEPWIRE_SYSTEM_METRICS", "1" if how == "argument" else "0")
    kwargs = {"system_metrics": False} if how == "argument" else {}
    run = stepwire.init(project="sys", address=collector.address, system_interval=0.05, quiet=True, **kwargs)
    for i in range(20):
        run.log({"loss": float(i)})
        time.sleep(0.01)
    assert run._system is None and not any(t.name == "stepwire-system" for t in threading.enumerate())
    run.finish()
    names = {s.name for s in stepwire.Api(address=collector.address).run(run.id).series()}
    assert names == {"loss"}
    assert run.stats()["system_samples"] == 0


def test_the_sampler_stops_at_finish_and_bad_intervals_are_refused(collector: CollectorProcess) -> None:
    with pytest.raises(ValueError, match="system_interval"):
        stepwire.init(project="sys", address=collector.address, system_metrics=True, system_interval=0.0)
    run = stepwire.init(project="sys", address=collector.address, system_metrics=True, system_interval=0.1,
                        quiet=True)
    assert any(t.name == "stepwire-system" and t.daemon for t in threading.enumerate())
    run.finish()
    assert not any(t.name == "stepwire-system" for t in threading.enumerate())


def test_itwinai_system_kind_logs_under_system_without_moving_the_step(collector: CollectorProcess) -> None:
    from stepwire.loggers import Logger

    logger = Logger(address=collector.address, experiment_id="itw-sys", log_freq="batch", quiet=True)
    assert "system" in logger.supported_kinds
    with logger.start_logging(rank=0):
        assert logger.run is not None
        logger.log(0.5, "loss", kind="metric")  # step 0
        logger.log(0.4, "loss", kind="metric")  # step 1
        logger.log(87.5, "gpu_utilization", kind="system")  # at the current step (2), which it does not take
        logger.log(250, "system/power_w", kind="system", step=7)
        logger.log(0.3, "loss", kind="metric")  # step 2 still
        with pytest.raises(TypeError, match="system/bad"):
            logger.log("n/a", "bad", kind="system")
        run_id = logger.run.id
    view = stepwire.Api(address=collector.address).run(run_id)
    assert view.scalars("loss")["step"].tolist() == [0, 1, 2]
    util = view.scalars("system/gpu_utilization")
    assert (util["step"].tolist(), util["value"].tolist()) == ([2], [87.5])
    power = view.scalars("system/power_w")
    assert (power["step"].tolist(), power["value"].tolist()) == ([7], [250.0])
