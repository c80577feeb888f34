"""Offline mode: where offline session folders go and whether ``$CLEARML_OFFLINE_MODE`` asks for it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

OFFLINE_ENV = "CLEARML_OFFLINE_MODE"
"""Environment variable that turns offline mode on (``1``/``true``/``yes``/``on``)."""
OFFLINE_DIR_ENV = "STEPWIRE_OFFLINE_DIR"
"""Environment variable: where offline session folders go (default ``~/.stepwire/offline``)."""


def offline_from_env() -> bool:
    """True if ``$CLEARML_OFFLINE_MODE`` turns offline mode on."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on", "y")


def new_session_folder() -> Path:
    """A fresh session folder path ``$STEPWIRE_OFFLINE_DIR/<uuid>`` (else ``~/.stepwire/offline/<uuid>``)."""
    base = Path(os.environ.get(OFFLINE_DIR_ENV) or Path.home() / ".stepwire" / "offline")
    return (base / uuid.uuid4().hex).resolve()
