"""What the system series (``stepwire.system``) say about a run's slowest rank, for the straggler view
(``Panels.skew``) and ``stepwire skew``: per-rank medians, and what stands out for the slowest rank."""

from __future__ import annotations

import numpy as np

from stepwire.api import RunView

SYSTEM_SIGNS = {"system/gpu/utilization": "gpu_utilization", "system/gpu/sm_clock_mhz": "gpu_sm_clock_mhz",
                "system/gpu/throttle_reasons": "gpu_throttled", "system/cpu_percent": "cpu_percent",
                "system/rss_mib": "rss_mib"}
"""The system series (``stepwire.system``) the straggler view summarises per rank, and their keys there."""


def system_by_rank(view: RunView) -> dict[int, dict[str, float]]:
    """Per rank, the median of each of ``SYSTEM_SIGNS`` over the run (``gpu_throttled``: the share of samples
    with any throttle reason)."""
    names = {s.name for s in view.series() if s.kind == "scalar"}
    out: dict[int, dict[str, float]] = {}
    for name, key in SYSTEM_SIGNS.items():
        if name not in names:
            continue
        pts = view.scalars(name)
        for r in np.unique(pts["rank"]).tolist():
            values = pts["value"][(pts["rank"] == r) & np.isfinite(pts["value"])]
            if len(values):
                out.setdefault(int(r), {})[key] = float(np.mean(values != 0) if key == "gpu_throttled"
                                                        else np.median(values))
    return out


def likely_cause(slowest: int, per_rank: dict[int, dict[str, float]]) -> str:
    """What stands out in the system figures of rank ``slowest`` against the median of the other ranks: GPU clocks
    held back (throttle reasons in most samples), the lowest SM clock (10% below), the least busy GPU (15 points
    below: the rank waits on something else) or the busiest CPU (25% and 10 points above); "no system metric
    stands out" when none does, "" without figures for it and another rank."""
    mine = per_rank.get(slowest, {})
    others = [v for r, v in per_rank.items() if r != slowest]

    def typical(key: str) -> float | None:
        values = [v[key] for v in others if key in v]
        return float(np.median(values)) if values else None

    if not mine or not others:
        return ""
    causes = []
    throttled, usual = mine.get("gpu_throttled"), typical("gpu_throttled")
    if throttled is not None and usual is not None and throttled > 0.5 and throttled > usual + 0.25:
        causes.append(f"its GPU's clocks were held back (throttle reasons) in {throttled:.0%} of samples, the "
                      f"others' in {usual:.0%}")
    clock, usual = mine.get("gpu_sm_clock_mhz"), typical("gpu_sm_clock_mhz")
    if clock is not None and usual and clock < 0.9 * usual:
        causes.append(f"its GPU's SM clock is lowest: {clock:.0f} MHz against {usual:.0f}")
    busy, usual = mine.get("gpu_utilization"), typical("gpu_utilization")
    if busy is not None and usual is not None and busy < usual - 15:
        causes.append(f"its GPU is the least busy: {busy:.0f}% against {usual:.0f}% (the rank waits on something "
                      "else: input, CPU work, communication)")
    cpu, usual = mine.get("cpu_percent"), typical("cpu_percent")
    if cpu is not None and usual is not None and cpu > 1.25 * usual + 10:
        causes.append(f"its process uses the most CPU: {cpu:.0f}% against {usual:.0f}%")
    return "; ".join(causes) or "no system metric stands out"
