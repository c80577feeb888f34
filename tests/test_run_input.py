"""Hostile values in logging calls: every call is all-or-nothing, and what it refuses raises a ``TypeError`` or
``ValueError`` naming the key (never an internal error), with the step counter left where it was."""

from __future__ import annotations

from typing import Any

import pytest

import stepwire
import torch
from conftest import CollectorProcess
from stepwire import _core


def test_the_largest_step_is_refused_or_exhausts_the_counter_cleanly(collector: CollectorProcess) -> None:
    with stepwire.init(address=collector.address) as run:
        with pytest.raises(ValueError, match="step must be between 0 and"):
            run.log({"a": 1.0}, step=2**63 - 1)
        with pytest.raises(OverflowError):
            run.log_scalar("a", 1.0, step=2**63)
        run.log({"a": 2.0}, step=_core.MAX_STEP)
        with pytest.raises(OverflowError, match="step counter"):
            run.log({"a": 3.0})  # the next auto step would wrap to -2**63
        with pytest.raises(OverflowError, match="step counter"):
            run.log_scalar("a", 3.0)
        run.log({"a": 4.0}, step=5)
    points = stepwire.Api(address=collector.address).run(run.id).scalars("a")
    assert points["step"].tolist() == [5, _core.MAX_STEP] and points["value"].tolist() == [4.0, 2.0]


def self_referencing() -> dict[str, Any]:
    d: dict[str, Any] = {"x": 1.0}
    d["inner"] = {"again": d}
    return d


def deep(levels: int) -> dict[str, Any]:
    d: dict[str, Any] = {"leaf": 1.0}
    for _ in range(levels):
        d = {"n": d}
    return d


@pytest.mark.parametrize(("value", "error", "match"), [
    ({"m": torch.empty(3, device="meta")}, TypeError, "'m' is on the meta device"),
    ({"m": torch.empty((), device="meta")}, TypeError, "'m' is on the meta device"),
    ({"s": torch.eye(3).to_sparse()}, TypeError, "'s' is a torch.sparse_coo tensor"),
    ({"c": torch.ones(2, dtype=torch.complex64)}, TypeError, "'c' must be real"),
    (self_referencing(), ValueError, "the dict under 'inner/again.* contains itself"),
    (deep(10_000), ValueError, "would be longer than 256 bytes"),
])
def test_a_bad_value_logs_nothing_of_its_call(value: dict[str, Any], error: type[Exception], match: str,
                                              collector: CollectorProcess) -> None:
    with stepwire.init(address=collector.address) as run:
        run.log({"before": 1.0})
        with pytest.raises(error, match=match):
            run.log({"fine": 2.0, "hist": torch.ones(4), **value})
        assert run.step == 1
        run.log({"after": 3.0})
    view = stepwire.Api(address=collector.address).run(run.id)
    assert {s.name for s in view.series()} == {"before", "after"}
    assert view.scalars("after")["step"].tolist() == [1]


def test_log_histogram_refuses_tensors_without_values(collector: CollectorProcess) -> None:
    with stepwire.init(address=collector.address) as run:
        with pytest.raises(TypeError, match=r"'h' is a torch\.sparse_coo tensor"):
            run.log_histogram("h", torch.eye(3).to_sparse())
        with pytest.raises(TypeError, match="'h' is on the meta device"):
            run.log_histogram("h", torch.empty(5, device="meta"))
        with pytest.raises(TypeError, match=r"'x' is a torch\.sparse_coo tensor"):
            run.log_scalar("x", torch.ones(1).to_sparse())
