"""The runs of this process, finished however it ends: at exit, on SIGTERM, on an uncaught exception."""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import weakref
from types import FrameType, TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stepwire.run import Run

log = logging.getLogger("stepwire")

live_runs: weakref.WeakSet[Run] = weakref.WeakSet()
"""Runs started and not finished yet."""

_signals_installed = False


def install_signal_handlers() -> None:
    """On SIGTERM finish every live run, then die of SIGTERM as before; an uncaught exception marks live
    runs failed (normal exit and SIGINT/KeyboardInterrupt finish them through atexit)."""
    global _signals_installed
    if _signals_installed or threading.current_thread() is not threading.main_thread():
        return
    _signals_installed = True
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        finish_live_runs("failed")
        if callable(previous):
            previous(signum, frame)
        else:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    if previous in (signal.SIG_DFL, None) or callable(previous):
        signal.signal(signal.SIGTERM, on_sigterm)
    hook = sys.excepthook

    def on_uncaught(tp: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        for run in list(live_runs):  # the hook prints the traceback only after the runs finished
            if run._console is not None:
                run._console.add_exception(tp, value, tb)
        finish_live_runs("failed")
        hook(tp, value, tb)

    sys.excepthook = on_uncaught


@atexit.register
def finish_live_runs(status: str = "finished") -> None:
    """Finish every run of this process not finished yet (at exit, on SIGTERM, on an uncaught exception)."""
    for run in list(live_runs):
        try:
            run.finish(status)
        except Exception as exc:  # never let one run's failure stop the others from flushing
            log.error("run %s failed to finish at exit: %s", run.id, exc)
