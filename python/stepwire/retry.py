"""The one retry policy of stepwire's clients: exponential backoff with jitter, a cap and an optional deadline.

Every delay is the previous one times ``factor`` (starting at ``initial``, at most ``cap``), drawn uniformly
from ``[delay * (1 - jitter), delay * (1 + jitter)]`` so that many clients retrying at once spread out. A
``deadline`` (seconds from creation or ``reset``) ends the retries: ``wait`` then returns False instead of
sleeping past it.

Two ways to use it:

- blocking, in a loop that may sleep::

      backoff = Backoff(deadline=10.0)
      while True:
          try:
              return call()
          except TransientError:
              if not backoff.wait():
                  raise

  or ``retry(call, retryable=..., deadline=..., attempts=...)``, which is that loop;
- as a gate, in a loop that must not sleep (the sender thread): ``ready()`` says whether the next attempt is
  due, ``failed()`` schedules the one after it, ``succeeded()`` starts over.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

INITIAL_S = 0.05
CAP_S = 5.0


class Backoff:
    """Delays between attempts at one operation (see the module docstring)."""

    def __init__(self, initial: float = INITIAL_S, cap: float = CAP_S, deadline: float | None = None,
                 factor: float = 2.0, jitter: float = 0.5, clock: Callable[[], float] = time.monotonic,
                 rand: Callable[[], float] = random.random) -> None:
        if not 0 < initial <= cap:
            raise ValueError(f"need 0 < initial <= cap, got initial={initial}, cap={cap}")
        if factor < 1 or not 0 <= jitter < 1:
            raise ValueError(f"need factor >= 1 and 0 <= jitter < 1, got factor={factor}, jitter={jitter}")
        self.initial, self.cap, self.factor, self.jitter = initial, cap, factor, jitter
        self.timeout = deadline
        self._clock, self._rand = clock, rand
        self.attempts = 0
        """Attempts that failed since the start (or ``reset``/``succeeded``)."""
        self._delay = initial
        self._next_at = 0.0
        self._deadline = 0.0
        self.reset()

    def reset(self) -> None:
        """Start over: the next delay is ``initial``, the deadline counts from now, the gate is open."""
        self._delay = self.initial
        self.attempts = 0
        self._next_at = self._clock()
        self._deadline = self._next_at + self.timeout if self.timeout is not None else float("inf")

    def remaining(self) -> float:
        """Seconds left before the deadline (``inf`` without one; never negative)."""
        return max(0.0, self._deadline - self._clock())

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self._clock() >= self._deadline

    def next_delay(self) -> float:
        """The next delay (jittered), advancing the schedule."""
        base = self._delay
        self._delay = min(self._delay * self.factor, self.cap)
        self.attempts += 1
        return base * (1.0 - self.jitter + 2.0 * self.jitter * self._rand())

    def wait(self, stop: threading.Event | None = None) -> bool:
        """Sleep the next delay and return True; False at once if that would pass the deadline, or as soon as
        ``stop`` is set."""
        delay = self.next_delay()
        if self._clock() + delay > self._deadline:
            return False
        if stop is None:
            time.sleep(delay)
            return True
        return not stop.wait(delay)

    # -- the gate: for loops that must not sleep -----------------------------------------------------------
    def ready(self) -> bool:
        """Whether the next attempt is due."""
        return self._clock() >= self._next_at

    def failed(self) -> None:
        """An attempt failed: the next one is due after the next delay."""
        self._next_at = self._clock() + self.next_delay()

    def succeeded(self) -> None:
        """An attempt succeeded: the next failure starts from ``initial`` again."""
        self.reset()

    def wait_ready(self, within: float, stop: threading.Event | None = None) -> bool:
        """Sleep until the next attempt is due and return True; False at once if that is more than ``within``
        seconds away, or as soon as ``stop`` is set."""
        delay = max(0.0, self._next_at - self._clock())
        if delay > within:
            return False
        if stop is None:
            time.sleep(delay)
            return True
        return not stop.wait(delay)


def retry(call: Callable[[], T], retryable: Callable[[Exception], bool], *, initial: float = INITIAL_S,
          cap: float = CAP_S, deadline: float | None = None, attempts: int | None = None,
          stop: threading.Event | None = None) -> T:
    """``call()`` until it returns, retrying the exceptions ``retryable`` accepts with backoff; the last one is
    raised once ``attempts`` calls were made, the ``deadline`` (seconds) would pass, or ``stop`` is set."""
    backoff = Backoff(initial, cap, deadline)
    while True:
        try:
            return call()
        except Exception as exc:
            if not retryable(exc) or (attempts is not None and backoff.attempts + 1 >= attempts) \
                    or not backoff.wait(stop):
                raise
