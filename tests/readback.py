"""Reading logged runs back for assertions, shared by the logger tests: the one run of a project, and whether a
stored histogram is the one its values make."""

from __future__ import annotations

from typing import Any

import stepwire


def only_run(api: stepwire.Api, project: str) -> stepwire.RunView:
    """The run of ``project`` (fails unless it holds exactly one)."""
    (view,) = api.runs(project=project)
    return view


def same_histogram(got: stepwire.Histogram, values: Any) -> bool:
    """Whether ``got`` holds the buckets, count, min and max of the histogram of ``values``."""
    want = stepwire.Histogram.from_values(values)
    return (got.indices.tolist(), got.counts.tolist(), got.count, got.min, got.max) == (
        want.indices.tolist(), want.counts.tolist(), want.count, want.min, want.max)
