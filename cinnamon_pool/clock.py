"""The one place that reads time or sleeps, so every other module can be tested without waiting.

Lease expiry never uses these clocks: it is decided by Redis ``TIME`` inside the scripts.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; for intervals and deadlines."""

    def now(self) -> _dt.datetime:
        """Local wall-clock time, for log timestamps and file names only."""

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> _dt.datetime:
        return _dt.datetime.now()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class ManualClock:
    """A clock that moves only when told to; ``sleep`` advances it instead of blocking."""

    def __init__(self, start: _dt.datetime | None = None, monotonic: float = 1000.0) -> None:
        self._now = start or _dt.datetime(2025, 1, 8, 14, 30, 15)
        self._monotonic = monotonic

    def monotonic(self) -> float:
        return self._monotonic

    def now(self) -> _dt.datetime:
        return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self._monotonic += seconds
        self._now += _dt.timedelta(seconds=seconds)


SYSTEM_CLOCK: Clock = SystemClock()
