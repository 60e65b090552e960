"""The log analyzer: records in (streamed, never a month in memory), a report out. Pure.

Per container: tests, average test duration, memory trend (least-squares slope of the memory
readings over time), error rate, restarts per day, risk. Error patterns: common errors with
numbers and ids folded, errors by type, leaking and often-restarted containers. Pool:
utilization, wait time p50/p95, throughput per hour.

Risk rule (documented in the README): high when memory is increasing by more than
``LEAK_MB_PER_HOUR`` or the error rate is above 20 % or there are more than 10 restarts a day;
medium when the error rate is above 5 % or there are more than 3 restarts a day; else low.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cinnamon_pool.logs.format import LogRecord

LEAK_MB_PER_HOUR = 20.0
STABLE_MB_PER_HOUR = 5.0
WAIT_BUCKETS_S = (0.001, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, float("inf"))


class _Fit:
    """Running least-squares fit of y over x (hours), in O(1) memory."""

    __slots__ = ("n", "sx", "sxx", "sxy", "sy")

    def __init__(self) -> None:
        self.n = 0
        self.sx = self.sy = self.sxx = self.sxy = 0.0

    def add(self, x: float, y: float) -> None:
        self.n += 1
        self.sx += x
        self.sy += y
        self.sxx += x * x
        self.sxy += x * y

    def slope(self) -> float | None:
        if self.n < 3:
            return None
        denominator = self.n * self.sxx - self.sx * self.sx
        if abs(denominator) < 1e-12:
            return None
        return (self.n * self.sxy - self.sx * self.sy) / denominator


@dataclass
class _Container:
    tests: int = 0
    duration_s: float = 0.0
    infra_errors: int = 0
    test_failures: int = 0
    restarts: int = 0
    replaced: int = 0
    memory: _Fit = field(default_factory=_Fit)
    memory_points: list[tuple[float, float]] = field(default_factory=list)  # thinned, for charts


_NUMBER = re.compile(r"\b[0-9a-f]{8,}\b|\d+(\.\d+)?")


def normalize_error(message: str) -> str:
    """Fold ids and numbers so one kind of error is counted once: 'took 5.3s' -> 'took N s'."""
    return _NUMBER.sub("N", message).strip()[:200]


def _seconds(text: str) -> float | None:
    """'2.50s' or '31ms' -> seconds; None for anything else."""
    try:
        if text.endswith("ms"):
            return float(text[:-2]) / 1000
        return float(text[:-1]) if text.endswith("s") else None
    except ValueError:
        return None


def _mb(text: str) -> float | None:
    try:
        return float(text[:-2]) if text.endswith("MB") else None
    except ValueError:
        return None


class Analyzer:
    """Feed records in any order of days; memory stays bounded by containers and buckets."""

    def __init__(
        self, *, since: _dt.datetime | None = None, until: _dt.datetime | None = None, container: str | None = None, chart_points: int = 400
    ) -> None:
        self.since, self.until, self.only = since, until, container
        self.chart_points = chart_points
        self.records = 0
        self.first: _dt.datetime | None = None
        self.last: _dt.datetime | None = None
        self.containers: dict[str, _Container] = defaultdict(_Container)
        self.errors: Counter[str] = Counter()
        self.errors_by_type: Counter[str] = Counter()
        self.jobs_per_hour: Counter[str] = Counter()
        self.errors_per_hour: Counter[str] = Counter()
        self.wait_buckets: Counter[float] = Counter()
        self.waits = 0
        self.busy_s = 0.0
        self._origin: _dt.datetime | None = None
        self._hour_of: tuple[int, int, int, int, str] = (-1, -1, -1, -1, "")  # (hour, day, month, year, key)

    def feed(self, records: Iterable[LogRecord]) -> Analyzer:
        for record in records:
            self.add(record)
        return self

    def add(self, record: LogRecord) -> None:
        if (self.since and record.at < self.since) or (self.until and record.at >= self.until):
            return
        if self.only and record.subject not in {self.only, "pool"}:
            return
        self.records += 1
        at = record.at
        if self.first is None or self.last is None or self._origin is None:
            self.first = self.last = self._origin = at
        elif at > self.last:
            self.last = at
        elif at < self.first:
            self.first = at
        memory_text = duration_text = outcome = wait_text = error_text = error_type = reason = ""
        for key, value in record.details:
            if key == "Memory Usage" or key == "Memory After":
                memory_text = value
            elif key == "Duration":
                duration_text = value
            elif key == "Outcome":
                outcome = value
            elif key == "Wait Time":
                wait_text = value
            elif key == "Error":
                error_text = value
            elif key == "Error Type":
                error_type = value
            elif key == "Reason":
                reason = value
        box = self.containers[record.subject] if record.subject != "pool" else None
        memory = _mb(memory_text)
        if box is not None and memory is not None:
            box.memory.add((at - self._origin).total_seconds() / 3600, memory)
            if len(box.memory_points) < self.chart_points or box.memory.n % max(1, box.memory.n // self.chart_points) == 0:
                box.memory_points.append((at.timestamp(), memory))
        hour_of = self._hour_of
        if at.hour != hour_of[0] or at.day != hour_of[1] or at.month != hour_of[2] or at.year != hour_of[3]:
            hour_of = self._hour_of = (at.hour, at.day, at.month, at.year, at.isoformat(sep=" ")[:13] + ":00")
        hour = hour_of[4]
        action = record.action
        if action == "RELEASED" and box is not None:
            box.tests += 1
            self.jobs_per_hour[hour] += 1
            duration = _seconds(duration_text)
            if duration is not None:
                box.duration_s += duration
                self.busy_s += duration
            box.infra_errors += outcome == "infra_error"
            box.test_failures += outcome == "test_failed"
        elif action == "ALLOCATED":
            wait = _seconds(wait_text)
            if wait is not None:
                self.waits += 1
                self.wait_buckets[next(b for b in WAIT_BUCKETS_S if wait <= b)] += 1
        elif action == "CONTAINER_RESTART" and box is not None:
            box.restarts += 1
        elif action == "CONTAINER_REPLACED" and box is not None:
            box.replaced += 1
        if action == "ERROR_OCCURRED" or action == "MARKED_UNHEALTHY":
            self.errors_per_hour[hour] += 1
            self.errors_by_type[error_type or action] += 1
            self.errors[normalize_error(error_text or reason or error_type or action)] += 1

    # -- the report ----------------------------------------------------------------------
    def _wait_percentile(self, q: float) -> float | None:
        if not self.waits:
            return None
        rank, seen = q / 100 * self.waits, 0
        for bucket in WAIT_BUCKETS_S:
            seen += self.wait_buckets[bucket]
            if seen >= rank:
                return bucket
        return None

    def report(self) -> dict[str, Any]:
        span_s = max(1.0, (self.last - self.first).total_seconds()) if self.first and self.last else 1.0
        days = max(span_s / 86400, 1 / 24)
        per_container: dict[str, dict[str, Any]] = {}
        leaking: list[str] = []
        often_restarted: list[str] = []
        for name, box in sorted(self.containers.items()):
            slope = box.memory.slope()
            trend = (
                "unknown"
                if slope is None
                else "increasing"
                if slope > STABLE_MB_PER_HOUR
                else "decreasing"
                if slope < -STABLE_MB_PER_HOUR
                else "stable"
            )
            error_rate = box.infra_errors / box.tests if box.tests else 0.0
            restarts_per_day = box.restarts / days
            leaks = slope is not None and slope > LEAK_MB_PER_HOUR
            if leaks:
                leaking.append(name)
            if restarts_per_day > 3:
                often_restarted.append(name)
            risk = (
                "high"
                if leaks or error_rate > 0.20 or restarts_per_day > 10
                else "medium"
                if error_rate > 0.05 or restarts_per_day > 3
                else "low"
            )
            per_container[name] = {
                "tests": box.tests,
                "average_duration_s": round(box.duration_s / box.tests, 3) if box.tests else None,
                "memory_trend": trend,
                "memory_slope_mb_per_hour": None if slope is None else round(slope, 2),
                "error_rate": round(error_rate, 4),
                "test_failures": box.test_failures,
                "restarts": box.restarts,
                "replacements": box.replaced,
                "restarts_per_day": round(restarts_per_day, 2),
                "risk": risk,
            }
        containers = len(per_container) or 1
        return {
            "records": self.records,
            "from": self.first.isoformat(sep=" ") if self.first else None,
            "until": self.last.isoformat(sep=" ") if self.last else None,
            "containers": per_container,
            "errors": {
                "common": [{"error": e, "count": n} for e, n in self.errors.most_common(10)],
                "by_type": dict(self.errors_by_type.most_common()),
                "leaking_containers": leaking,
                "frequently_restarted": often_restarted,
            },
            "pool": {
                "utilization": round(min(1.0, self.busy_s / (containers * span_s)), 4),
                "wait_p50_s": self._wait_percentile(50),
                "wait_p95_s": self._wait_percentile(95),
                "throughput_per_hour": round(sum(self.jobs_per_hour.values()) / max(span_s / 3600, 1 / 60), 2),
                "jobs_per_hour": dict(sorted(self.jobs_per_hour.items())),
                "errors_per_hour": dict(sorted(self.errors_per_hour.items())),
            },
            "memory_series": {n: b.memory_points for n, b in sorted(self.containers.items()) if b.memory_points},
        }
