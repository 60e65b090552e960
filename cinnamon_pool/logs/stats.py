"""Running figures for the analyzer, in O(1) or bounded memory: a least-squares fit, bucketed
counts and their percentiles, and the units the log records write (``2.50s``, ``31ms``, ``180MB``).
Pure."""

from __future__ import annotations

import datetime as _dt
from collections import Counter

MIN_READINGS, MIN_FIT_HOURS = 4, 5 / 60  # what a memory slope needs: 4 readings over 5 minutes
MINUTES_PER_DAY = 1440


class Fit:
    """Running least-squares fit of y over x (hours), in O(1) memory. A slope needs
    ``MIN_READINGS`` readings over at least ``MIN_FIT_HOURS``: a few minutes of readings say
    nothing about MB per hour."""

    __slots__ = ("first", "last", "n", "sx", "sxx", "sxy", "sy")

    def __init__(self) -> None:
        self.n = 0
        self.sx = self.sy = self.sxx = self.sxy = 0.0
        self.first = self.last = 0.0

    def add(self, x: float, y: float) -> None:
        if not self.n:
            self.first = x
        self.last = x  # the records come in time order (a day's files are merged)
        self.n += 1
        self.sx += x
        self.sy += y
        self.sxx += x * x
        self.sxy += x * y

    def slope(self) -> float | None:
        if self.n < MIN_READINGS or self.last - self.first < MIN_FIT_HOURS:
            return None
        denominator = self.n * self.sxx - self.sx * self.sx
        if abs(denominator) < 1e-12:
            return None
        return (self.n * self.sxy - self.sx * self.sy) / denominator


def seconds(text: str) -> float | None:
    """'2.50s' or '31ms' -> seconds; None for anything else."""
    try:
        if text.endswith("ms"):
            return float(text[:-2]) / 1000
        return float(text[:-1]) if text.endswith("s") else None
    except ValueError:
        return None


def megabytes(text: str) -> float | None:
    try:
        return float(text[:-2]) if text.endswith("MB") else None
    except ValueError:
        return None


def bucket_of(value: float, bounds: tuple[float, ...]) -> float:
    return next(b for b in bounds if value <= b)


def percentile(buckets: Counter[float], bounds: tuple[float, ...], q: float) -> float | None:
    total = sum(buckets.values())
    if not total:
        return None
    rank, seen = q / 100 * total, 0
    for bound in bounds:
        seen += buckets[bound]
        if seen >= rank:
            return bound if bound != float("inf") else bounds[-2]  # the open bucket: at least its lower bound
    return None


def unix_time(local_s: float) -> float:
    """Local seconds (minutes since 0001-01-01 * 60 + seconds) as unix time."""
    minute, seconds = divmod(local_s, 60)
    day, minute_of_day = divmod(int(minute), MINUTES_PER_DAY)
    moment = _dt.datetime.combine(_dt.date.fromordinal(day), _dt.time(minute_of_day // 60, minute_of_day % 60))
    return round(moment.timestamp() + seconds, 3)


def histogram(buckets: Counter[float], bounds: tuple[float, ...]) -> list[list[float | int | None]]:
    """[[upper bound, count], ...] from the first to the last bucket with a count (the open
    bucket's bound is None: JSON has no infinity)."""
    used = [i for i, bound in enumerate(bounds) if buckets[bound]]
    if not used:
        return []
    return [[None if bound == float("inf") else bound, buckets[bound]] for bound in bounds[used[0] : used[-1] + 1]]


def minute_label(minute: int) -> str:
    day = _dt.date.fromordinal(minute // MINUTES_PER_DAY)
    return f"{day.isoformat()} {minute % MINUTES_PER_DAY // 60:02d}:{minute % 60:02d}"
