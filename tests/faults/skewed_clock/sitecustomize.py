"""Imported by Python at start-up when this folder is on PYTHONPATH (the clock-skew fault test):
every wall-clock read of the process -- ``time.time``, ``time.time_ns``, ``localtime``,
``gmtime``, ``datetime.now``/``utcnow``/``today`` -- is off by ``CINNAMON_TEST_CLOCK_SKEW_S``
seconds, as on a machine whose clock is wrong. The monotonic clock is left alone, as it is on
such a machine.

libfaketime would be the usual tool, but Debian's 0.9.10 breaks Python 3.11's timed waits:
``Event.wait(0.2)`` hangs when it fakes CLOCK_MONOTONIC, and ``time.sleep`` fails with EINVAL
when told not to (FAKETIME_DONT_FAKE_MONOTONIC=1), both seen on this machine.
"""

from __future__ import annotations

import datetime as _dt
import os
import time as _time

_SKEW_S = float(os.environ.get("CINNAMON_TEST_CLOCK_SKEW_S", "0") or 0)

if _SKEW_S:
    _real_time, _real_time_ns = _time.time, _time.time_ns
    _real_localtime, _real_gmtime = _time.localtime, _time.gmtime
    _SHIFT = _dt.timedelta(seconds=_SKEW_S)

    def _time_skewed() -> float:
        return _real_time() + _SKEW_S

    def _time_ns_skewed() -> int:
        return _real_time_ns() + int(_SKEW_S * 1_000_000_000)

    def _localtime_skewed(seconds: float | None = None) -> _time.struct_time:
        return _real_localtime(_time_skewed() if seconds is None else seconds)

    def _gmtime_skewed(seconds: float | None = None) -> _time.struct_time:
        return _real_gmtime(_time_skewed() if seconds is None else seconds)

    class _SkewedDatetime(_dt.datetime):
        @classmethod
        def now(cls, tz: _dt.tzinfo | None = None) -> _SkewedDatetime:
            return super().now(tz) + _SHIFT

        @classmethod
        def utcnow(cls) -> _SkewedDatetime:
            return super().utcnow() + _SHIFT

        @classmethod
        def today(cls) -> _SkewedDatetime:
            return cls.now()

    _time.time, _time.time_ns = _time_skewed, _time_ns_skewed
    _time.localtime, _time.gmtime = _localtime_skewed, _gmtime_skewed  # type: ignore[assignment]  # (their int-like arguments)
    _dt.datetime = _SkewedDatetime  # type: ignore[misc]
