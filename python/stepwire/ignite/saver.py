"""``StepwireSaver``: Ignite's ``DiskSaver`` that also stores every checkpoint as an artifact of the run."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ignite.handlers import DiskSaver

from stepwire.ignite.handlers import StepwireLogger
from stepwire.run import Run


class StepwireSaver(DiskSaver):
    """A ``DiskSaver`` for ``ignite.handlers.Checkpoint`` that also stores each checkpoint as an artifact of the
    run (``checkpoints/{filename}``, at the last step logged) and removes the artifacts Checkpoint drops.

    ``logger`` is a ``StepwireLogger`` (or pass ``run=``); ``dirname`` defaults to a fresh temporary directory.
    """

    def __init__(self, logger: StepwireLogger | None = None, dirname: str | Path | None = None,
                 *args: Any, run: Run | None = None, **kwargs: Any) -> None:
        if logger is not None and not isinstance(logger, StepwireLogger):
            raise TypeError("logger must be an instance of StepwireLogger")
        target = run if run is not None else (logger.run if logger is not None else None)
        if target is None:
            raise RuntimeError("StepwireSaver needs a StepwireLogger (logger=) or a stepwire Run (run=)")
        self.run = target
        if not dirname:
            dirname = tempfile.mkdtemp(prefix=f"stepwire-checkpoints-{target.id}-")
        kwargs.setdefault("require_empty", False)
        super().__init__(dirname, *args, **kwargs)

    @staticmethod
    def artifact_name(filename: str) -> str:
        """The artifact name a checkpoint file is stored under."""
        return f"checkpoints/{filename}"

    def __call__(self, checkpoint: Mapping[str, Any], filename: str, metadata: Mapping[str, Any] | None = None
                 ) -> None:
        super().__call__(checkpoint, filename, metadata)
        self.run.log_artifact(os.path.join(self.dirname, filename), self.artifact_name(filename),
                              max(self.run.step - 1, 0))

    def remove(self, filename: str) -> None:
        """Remove the local file and the run's artifact."""
        super().remove(filename)
        self.run.delete_artifact(self.artifact_name(filename))
