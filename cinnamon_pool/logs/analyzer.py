"""The log analyzer: records in (streamed, never a month in memory), a report out. Pure.

Per container: tests, average test duration, memory trend, error rate, restarts and
replacements by reason, risk. Error patterns: common errors with numbers and ids folded, errors
by type and by context (the tool or phase that failed), leaking and often-restarted containers.
Pool: utilization, waits, throughput, job and error counts in time buckets that fit the window.
Then recommendations: what an operator should change, each with the figures behind it.

Memory trend: a least-squares slope over all readings, and one per life of the container
(between two restarts or replacements). A leak that a restart cuts short each time (a sawtooth)
has a flat overall slope and a steep one within each life; either above ``LEAK_MB_PER_HOUR``
marks the container as leaking.

Risk (documented in the README and docs/report.md):

- high: leaking; or an infra error rate above ``HIGH_ERROR_RATE`` over at least
  ``MIN_JOBS_FOR_RATE`` jobs; or at least ``HIGH_RESTARTS`` restarts at more than
  ``HIGH_RESTARTS_PER_DAY`` a day;
- medium: an infra error rate above ``MEDIUM_ERROR_RATE`` over at least ``MIN_JOBS_FOR_RATE``
  jobs; or at least ``MEDIUM_RESTARTS`` restarts at more than ``MEDIUM_RESTARTS_PER_DAY`` a
  day; or a restart for memory;
- low otherwise: one restart, whatever the window, is not a risk.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections import Counter, defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cinnamon_pool.logs.actions import LogAction
from cinnamon_pool.logs.format import LogRecord

SCHEMA_VERSION = 2  # of ``report --json`` (docs/report.md)
LEAK_MB_PER_HOUR = 20.0
MIN_READINGS, MIN_FIT_HOURS = 4, 5 / 60  # what a memory slope needs: 4 readings over 5 minutes
STABLE_MB_PER_HOUR = 5.0
HIGH_ERROR_RATE, MEDIUM_ERROR_RATE, MIN_JOBS_FOR_RATE = 0.20, 0.05, 10
HIGH_RESTARTS, HIGH_RESTARTS_PER_DAY = 5, 10.0
MEDIUM_RESTARTS, MEDIUM_RESTARTS_PER_DAY = 2, 3.0
FREE_SHARE = (0.10, 0.20)  # the rule of thumb: keep 10-20 % of the pool free
SLOW_WAIT_S = 1.0  # a job that waited longer than this for a container waited for the pool's size
REPEATED_ERROR = 3  # an error pattern seen this often is worth a recommendation
WAIT_BUCKETS_S = (0.001, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, float("inf"))
DURATION_BUCKETS_S = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, float("inf"))
TIMELINE_LEASES = 2000  # the newest leases per container, for the report's lease timeline
MARKS = 200  # the newest restarts and replacements per container, for the memory chart
MINUTES_PER_DAY = 1440


class _Fit:
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


@dataclass
class _Container:
    tests: int = 0
    duration_s: float = 0.0
    infra_errors: int = 0
    test_failures: int = 0
    restarts: Counter[str] = field(default_factory=Counter)  # reason code -> count
    replaced: Counter[str] = field(default_factory=Counter)
    memory: _Fit = field(default_factory=_Fit)
    life: _Fit = field(default_factory=_Fit)  # this life's readings (since the last restart)
    lives_slope_n: float = 0.0  # sum over ended lives of slope * readings
    lives_n: int = 0
    peak_mb: float = 0.0
    memory_points: list[tuple[float, float]] = field(default_factory=list)  # thinned, for charts
    marks: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=MARKS))  # (unix time, reason)
    leases: deque[tuple[float, float, str, str, tuple[str, ...]]] = field(default_factory=lambda: deque(maxlen=TIMELINE_LEASES))
    tool_calls: int = 0
    tool_max_s: float = 0.0
    console_errors: int = 0

    def end_life(self) -> None:
        slope = self.life.slope()
        if slope is not None:
            self.lives_slope_n += slope * self.life.n
            self.lives_n += self.life.n
        self.life = _Fit()

    def life_slope(self) -> float | None:
        """The readings-weighted mean slope of the container's lives (the current one too)."""
        slope, total, n = self.life.slope(), self.lives_slope_n, self.lives_n
        if slope is not None:
            total, n = total + slope * self.life.n, n + self.life.n
        return total / n if n else None


_NUMBER = re.compile(r"\b[0-9a-f]{8,}\b|\d+(\.\d+)?")
_PARENTHESES = re.compile(r"\s*\(.*\)$")


def normalize_error(message: str) -> str:
    """Fold ids and numbers so one kind of error is counted once: 'took 5.3s' -> 'took Ns'."""
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


def _bucket(value: float, bounds: tuple[float, ...]) -> float:
    return next(b for b in bounds if value <= b)


def _percentile(buckets: Counter[float], bounds: tuple[float, ...], q: float) -> float | None:
    total = sum(buckets.values())
    if not total:
        return None
    rank, seen = q / 100 * total, 0
    for bound in bounds:
        seen += buckets[bound]
        if seen >= rank:
            return bound if bound != float("inf") else bounds[-2]  # the open bucket: at least its lower bound
    return None


def _unix(local_s: float) -> float:
    """Local seconds (minutes since 0001-01-01 * 60 + seconds) as unix time."""
    minute, seconds = divmod(local_s, 60)
    day, minute_of_day = divmod(int(minute), MINUTES_PER_DAY)
    moment = _dt.datetime.combine(_dt.date.fromordinal(day), _dt.time(minute_of_day // 60, minute_of_day % 60))
    return round(moment.timestamp() + seconds, 3)


def _lease(start: float, end: float, outcome: str, run: str, job: tuple[str, ...]) -> dict[str, Any]:
    calls, p50, slowest, peak, console = job
    return {
        "start": _unix(start),
        "end": _unix(end),
        "outcome": outcome,
        "test_run": run,
        "tool_calls": int(calls) if calls.isdigit() else None,
        "tool_p50_s": _seconds(p50),
        "tool_max_s": _seconds(slowest),
        "peak_memory_mb": _mb(peak),
        "console_errors": int(console) if console.isdigit() else None,
    }


def _histogram(buckets: Counter[float], bounds: tuple[float, ...]) -> list[list[float | int | None]]:
    """[[upper bound, count], ...] from the first to the last bucket with a count (the open
    bucket's bound is None: JSON has no infinity)."""
    used = [i for i, bound in enumerate(bounds) if buckets[bound]]
    if not used:
        return []
    return [[None if bound == float("inf") else bound, buckets[bound]] for bound in bounds[used[0] : used[-1] + 1]]


def _minute_label(minute: int) -> str:
    day = _dt.date.fromordinal(minute // MINUTES_PER_DAY)
    return f"{day.isoformat()} {minute % MINUTES_PER_DAY // 60:02d}:{minute % 60:02d}"


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
        self.error_contexts: Counter[tuple[str, str]] = Counter()  # (pattern, context)
        self.errors_by_type: Counter[str] = Counter()
        self.errors_by_context: Counter[str] = Counter()
        self.jobs_by_minute: Counter[int] = Counter()
        self.errors_by_minute: Counter[int] = Counter()
        self.wait_buckets: Counter[float] = Counter()
        self.client_waits: dict[str, Counter[float]] = defaultdict(Counter)  # API key name -> its sessions' waits
        self.duration_buckets: Counter[float] = Counter()
        self.busy_s = 0.0
        self._origin: _dt.datetime | None = None
        self._minute_of: tuple[int, int, int, int, int, int] = (-1, -1, -1, -1, -1, 0)  # (minute, hour, day, month, year, key)

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
        details = dict(record.details)
        get = details.get
        box = self.containers[record.subject] if record.subject != "pool" else None
        memory_text = get("Memory Usage") or get("Memory After Cleanup") or get("Memory After")
        memory = _mb(memory_text) if memory_text else None
        if box is not None and memory is not None:
            hours = (at - self._origin).total_seconds() / 3600
            box.memory.add(hours, memory)
            box.life.add(hours, memory)
            box.peak_mb = max(box.peak_mb, memory)
            if len(box.memory_points) < self.chart_points or box.memory.n % max(1, box.memory.n // self.chart_points) == 0:
                box.memory_points.append((at.timestamp(), memory))
        minute_of = self._minute_of
        if (
            at.minute != minute_of[0]
            or at.hour != minute_of[1]
            or at.day != minute_of[2]
            or at.month != minute_of[3]
            or at.year != minute_of[4]
        ):
            key = at.toordinal() * MINUTES_PER_DAY + at.hour * 60 + at.minute
            minute_of = self._minute_of = (at.minute, at.hour, at.day, at.month, at.year, key)
        minute = minute_of[5]
        action = record.action
        if action == LogAction.RELEASED and box is not None:
            box.tests += 1
            self.jobs_by_minute[minute] += 1
            outcome = get("Outcome", "")
            duration = _seconds(get("Duration", ""))
            if duration is not None:
                box.duration_s += duration
                self.busy_s += duration
                self.duration_buckets[_bucket(duration, DURATION_BUCKETS_S)] += 1
                end = minute * 60 + at.second  # local seconds; made unix time for the report
                job = (
                    get("Tool Calls", ""),
                    get("Tool Latency p50", ""),
                    get("Tool Latency Max", ""),
                    get("Peak Memory", ""),
                    get("Console Errors", ""),
                )
                box.leases.append((end - duration, end, outcome, get("Test Run", ""), job))
                if job[0].isdigit():
                    box.tool_calls += int(job[0])
                    box.tool_max_s = max(box.tool_max_s, _seconds(job[2]) or 0.0)
                if job[4].isdigit():
                    box.console_errors += int(job[4])
            box.infra_errors += outcome == "infra_error"
            box.test_failures += outcome == "test_failed"
        elif action == LogAction.ALLOCATED:
            wait = _seconds(get("Wait Time", ""))
            bucket = _bucket(wait or 0.0, WAIT_BUCKETS_S)
            if wait is not None:
                self.wait_buckets[bucket] += 1
            client = get("Client")
            if client:
                self.client_waits[client][bucket] += 1
        elif (action == LogAction.CONTAINER_RESTART or action == LogAction.CONTAINER_REPLACED) and box is not None:
            reason = get("Reason", "")
            code = reason or "unknown"
            if action == LogAction.CONTAINER_RESTART:
                box.restarts[code] += 1
            else:
                code = _PARENTHESES.sub("", code)  # 'container exited (exit 137)' -> 'container exited'
                box.replaced[code] += 1
            box.end_life()
            box.marks.append((at.timestamp(), code if action == LogAction.CONTAINER_RESTART else f"replaced: {code}"))
        elif action == LogAction.CONTAINER_STARTED and box is not None and box.life.n:
            box.end_life()
        if action == LogAction.ERROR_OCCURRED or action == LogAction.MARKED_UNHEALTHY:
            error_type, context = get("Error Type", ""), get("Context", "")
            error_text, reason = get("Error", ""), get("Reason", "")
            self.errors_by_minute[minute] += 1
            self.errors_by_type[error_type or action] += 1
            pattern = normalize_error(error_text or reason or error_type or action)
            self.errors[pattern] += 1
            self.errors_by_context[context or "-"] += 1
            if context:
                self.error_contexts[(pattern, context)] += 1

    # -- the report ----------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        span_s = max(1.0, (self.last - self.first).total_seconds()) if self.first and self.last else 1.0
        days = max(span_s / 86400, 1 / 24)
        per_container: dict[str, dict[str, Any]] = {}
        leaking: list[str] = []
        often_restarted: list[str] = []
        for name, box in sorted(self.containers.items()):
            overall, within = box.memory.slope(), box.life_slope()
            steepest = max((s for s in (overall, within) if s is not None), default=None)
            trend = (
                "unknown"
                if steepest is None
                else "increasing"
                if steepest > STABLE_MB_PER_HOUR
                else "decreasing"
                if overall is not None and overall < -STABLE_MB_PER_HOUR
                else "stable"
            )
            judged = box.tests >= MIN_JOBS_FOR_RATE
            error_rate = box.infra_errors / box.tests if box.tests else 0.0
            restarts = sum(box.restarts.values()) + sum(box.replaced.values())
            restarts_per_day = restarts / days
            leaks = steepest is not None and steepest > LEAK_MB_PER_HOUR
            if leaks:
                leaking.append(name)
            if restarts >= MEDIUM_RESTARTS and restarts_per_day > MEDIUM_RESTARTS_PER_DAY:
                often_restarted.append(name)
            if (
                leaks
                or (judged and error_rate > HIGH_ERROR_RATE)
                or (restarts >= HIGH_RESTARTS and restarts_per_day > HIGH_RESTARTS_PER_DAY)
            ):
                risk = "high"
            elif (
                (judged and error_rate > MEDIUM_ERROR_RATE)
                or (restarts >= MEDIUM_RESTARTS and restarts_per_day > MEDIUM_RESTARTS_PER_DAY)
                or box.restarts["memory_limit_exceeded"]
            ):
                risk = "medium"
            else:
                risk = "low"
            per_container[name] = {
                "tests": box.tests,
                "average_duration_s": round(box.duration_s / box.tests, 3) if box.tests else None,
                "memory_trend": trend,
                "memory_slope_mb_per_hour": None if overall is None else round(overall, 2),
                "memory_slope_within_lives_mb_per_hour": None if within is None else round(within, 2),
                "peak_memory_mb": box.peak_mb or None,
                "error_rate": round(error_rate, 4),
                "infra_errors": box.infra_errors,
                "test_failures": box.test_failures,
                "restarts": sum(box.restarts.values()),
                "replacements": sum(box.replaced.values()),
                "restarts_by_reason": dict(box.restarts.most_common()),
                "replacements_by_reason": dict(box.replaced.most_common()),
                "restarts_per_day": round(restarts_per_day, 2),
                "tool_calls": box.tool_calls,
                "tool_latency_max_s": round(box.tool_max_s, 3) if box.tool_calls else None,
                "console_errors": box.console_errors,
                "risk": risk,
            }
        containers = len(per_container) or 1
        jobs = sum(self.jobs_by_minute.values())
        waited = sum(n for bound, n in self.wait_buckets.items() if bound > SLOW_WAIT_S)
        pool = {
            "containers": len(per_container),
            "jobs": jobs,
            "utilization": round(min(1.0, self.busy_s / (containers * span_s)), 4),
            "wait_p50_s": _percentile(self.wait_buckets, WAIT_BUCKETS_S, 50),
            "wait_p95_s": _percentile(self.wait_buckets, WAIT_BUCKETS_S, 95),
            "waited_over_1s_share": round(waited / sum(self.wait_buckets.values()), 4) if self.wait_buckets else 0.0,
            "duration_p50_s": _percentile(self.duration_buckets, DURATION_BUCKETS_S, 50),
            "duration_p95_s": _percentile(self.duration_buckets, DURATION_BUCKETS_S, 95),
            "throughput_per_hour": round(jobs / max(span_s / 3600, 1 / 60), 2),
            "jobs_per_hour": self._per_hour(self.jobs_by_minute),
            "errors_per_hour": self._per_hour(self.errors_by_minute),
        }
        report: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "records": self.records,
            "from": self.first.isoformat(sep=" ") if self.first else None,
            "until": self.last.isoformat(sep=" ") if self.last else None,
            "containers": per_container,
            "errors": {
                "common": [{"error": e, "count": n, "context": self._context_of(e)} for e, n in self.errors.most_common(10)],
                "by_type": dict(self.errors_by_type.most_common()),
                "by_context": dict(self.errors_by_context.most_common()),
                "leaking_containers": leaking,
                "frequently_restarted": often_restarted,
            },
            "pool": pool,
            "clients": {
                name: {
                    "sessions": sum(waits.values()),
                    "wait_p50_s": _percentile(waits, WAIT_BUCKETS_S, 50),
                    "wait_p95_s": _percentile(waits, WAIT_BUCKETS_S, 95),
                }
                for name, waits in sorted(self.client_waits.items())
            },
            "timeline": self._timeline(span_s),
            "histograms": {
                "wait_s": _histogram(self.wait_buckets, WAIT_BUCKETS_S),
                "duration_s": _histogram(self.duration_buckets, DURATION_BUCKETS_S),
            },
            "memory_series": {n: b.memory_points for n, b in sorted(self.containers.items()) if b.memory_points},
            "restart_marks": {n: list(b.marks) for n, b in sorted(self.containers.items()) if b.marks},
            "leases": {n: [_lease(*lease) for lease in b.leases] for n, b in sorted(self.containers.items()) if b.leases},
        }
        report["recommendations"] = recommend(report)
        return report

    def _context_of(self, pattern: str) -> str | None:
        contexts = [(n, context) for (p, context), n in self.error_contexts.items() if p == pattern]
        return max(contexts)[1] if contexts else None

    @staticmethod
    def _per_hour(by_minute: Counter[int]) -> dict[str, int]:
        hours: Counter[str] = Counter()
        for minute, count in by_minute.items():
            hours[_minute_label(minute - minute % 60)] += count
        return dict(sorted(hours.items()))

    def _timeline(self, span_s: float) -> dict[str, Any]:
        """Jobs and errors in buckets that fit the window: minutes up to 3 hours, hours up to 3
        days, days beyond."""
        size, unit = (1, "minute") if span_s <= 3 * 3600 else (60, "hour") if span_s <= 3 * 86400 else (MINUTES_PER_DAY, "day")
        jobs: Counter[int] = Counter()
        errors: Counter[int] = Counter()
        for source, target in ((self.jobs_by_minute, jobs), (self.errors_by_minute, errors)):
            for minute, count in source.items():
                target[minute - minute % size] += count
        keys = sorted(set(jobs) | set(errors))
        if keys:
            keys = list(range(keys[0], keys[-1] + size, size))  # empty buckets too: the axis is time
        labels = [_minute_label(k)[: 10 if unit == "day" else 16] for k in keys]
        return {"bucket": unit, "labels": labels, "jobs": [jobs[k] for k in keys], "errors": [errors[k] for k in keys]}


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def recommend(report: dict[str, Any]) -> list[dict[str, str]]:
    """What an operator should change, each with the figures behind it (``kind``: size, memory,
    errors, restarts; ``severity``: warn or info)."""
    advice: list[dict[str, str]] = []
    pool, containers = report["pool"], report["containers"]
    free_share = 1 - pool["utilization"]
    low, high = FREE_SHARE
    if pool["jobs"] and (free_share < low or pool["waited_over_1s_share"] > 0.05):
        advice.append(
            {
                "kind": "size",
                "severity": "warn",
                "message": f"The pool is too small: {free_share:.0%} of it was free on average (keep {low:.0%}-{high:.0%}), "
                f"{pool['waited_over_1s_share']:.0%} of the jobs waited over {SLOW_WAIT_S:g} s for a container "
                f"(wait p95 {pool['wait_p95_s']} s). Raise pool.max_size, or add a Docker host.",
            }
        )
    elif pool["jobs"] and pool["containers"] > 1 and free_share > 0.5 and pool["waited_over_1s_share"] == 0:
        advice.append(
            {
                "kind": "size",
                "severity": "info",
                "message": f"The pool is larger than its work: {free_share:.0%} of it was free on average and no job waited "
                f"(keep {low:.0%}-{high:.0%} free). Lower pool.min_size, or let idle_shrink_s shrink it.",
            }
        )
    for name, figures in containers.items():
        memory_restarts = figures["restarts_by_reason"].get("memory_limit_exceeded", 0)
        slope = max(
            s for s in (figures["memory_slope_mb_per_hour"], figures["memory_slope_within_lives_mb_per_hour"], 0.0) if s is not None
        )
        if name in report["errors"]["leaking_containers"]:
            advice.append(
                {
                    "kind": "memory",
                    "severity": "warn",
                    "message": f"{name}: memory grows {slope:.0f} MB/h"
                    + (f" and it was restarted {_times(memory_restarts)} for memory" if memory_restarts else "")
                    + ": investigate a leak (the pages its jobs open, or the image).",
                }
            )
        elif memory_restarts:
            advice.append(
                {
                    "kind": "memory",
                    "severity": "warn",
                    "message": f"{name}: restarted {_times(memory_restarts)} for memory (peak {figures['peak_memory_mb']} MB) "
                    "with no growing trend: its jobs need more; raise rules.max_memory_mb with container.memory.",
                }
            )
    for entry in report["errors"]["common"]:
        if entry["count"] >= REPEATED_ERROR:
            where = f" in {entry['context']}" if entry["context"] else ""
            advice.append(
                {
                    "kind": "errors",
                    "severity": "warn",
                    "message": f"{_times(entry['count'])}{where}: {entry['error']}. A page or the image fails repeatedly: "
                    "open a failed job's artifacts (snapshot, screenshot, traceback).",
                }
            )
    for name in report["errors"]["frequently_restarted"]:
        figures = containers[name]
        reasons = ", ".join(f"{k} {v}" for k, v in {**figures["restarts_by_reason"], **figures["replacements_by_reason"]}.items())
        advice.append(
            {
                "kind": "restarts",
                "severity": "warn",
                "message": f"{name}: {figures['restarts'] + figures['replacements']} restarts and replacements "
                f"({figures['restarts_per_day']}/day: {reasons}).",
            }
        )
    return advice
