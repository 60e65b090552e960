"""The log analyzer: records in (streamed, never a month in memory), a report out. Pure. Its running
figures are in stats.py, its recommendations in advice.py.

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

from cinnamon_pool.logs.actions import Detail, LogAction
from cinnamon_pool.logs.advice import SLOW_WAIT_S, recommend
from cinnamon_pool.logs.format import LogRecord
from cinnamon_pool.logs.report import (
    ClientFigures,
    CommonError,
    ContainerFigures,
    ErrorFigures,
    MemoryTrend,
    PoolFigures,
    Report,
    Risk,
    Timeline,
)
from cinnamon_pool.logs.stats import (
    MINUTES_PER_DAY,
    Fit,
    bucket_of,
    histogram,
    megabytes,
    minute_label,
    percentile,
    seconds,
    unix_time,
)

LEAK_MB_PER_HOUR = 20.0
STABLE_MB_PER_HOUR = 5.0
HIGH_ERROR_RATE, MEDIUM_ERROR_RATE, MIN_JOBS_FOR_RATE = 0.20, 0.05, 10
HIGH_RESTARTS, HIGH_RESTARTS_PER_DAY = 5, 10.0
MEDIUM_RESTARTS, MEDIUM_RESTARTS_PER_DAY = 2, 3.0
WAIT_BUCKETS_S = (0.001, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, float("inf"))
DURATION_BUCKETS_S = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, float("inf"))
TIMELINE_LEASES = 2000  # the newest leases per container, for the report's lease timeline
MARKS = 200  # the newest restarts and replacements per container, for the memory chart


@dataclass
class _Container:
    tests: int = 0
    duration_s: float = 0.0
    infra_errors: int = 0
    test_failures: int = 0
    restarts: Counter[str] = field(default_factory=Counter)  # reason code -> count
    replaced: Counter[str] = field(default_factory=Counter)
    memory: Fit = field(default_factory=Fit)
    life: Fit = field(default_factory=Fit)  # this life's readings (since the last restart)
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
        self.life = Fit()

    def life_slope(self) -> float | None:
        """The readings-weighted mean slope of the container's lives (the current one too)."""
        slope, total, n = self.life.slope(), self.lives_slope_n, self.lives_n
        if slope is not None:
            total, n = total + slope * self.life.n, n + self.life.n
        return total / n if n else None


_NUMBER = re.compile(r"\b[0-9a-f]{8,}\b|\d+(\.\d+)?")
_PARENTHESES = re.compile(r"\s*\(.*\)$")


@dataclass(frozen=True)
class _Judged:
    figures: ContainerFigures
    risk_leaking: bool  # its memory grows past LEAK_MB_PER_HOUR
    often_restarted: bool


def normalize_error(message: str) -> str:
    """Fold ids and numbers so one kind of error is counted once: 'took 5.3s' -> 'took Ns'."""
    return _NUMBER.sub("N", message).strip()[:200]


def _lease(start: float, end: float, outcome: str, run: str, job: tuple[str, ...]) -> dict[str, Any]:
    calls, p50, slowest, peak, console = job
    return {
        "start": unix_time(start),
        "end": unix_time(end),
        "outcome": outcome,
        "test_run": run,
        "tool_calls": int(calls) if calls.isdigit() else None,
        "tool_p50_s": seconds(p50),
        "tool_max_s": seconds(slowest),
        "peak_memory_mb": megabytes(peak),
        "console_errors": int(console) if console.isdigit() else None,
    }


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
        memory_text = get(Detail.MEMORY_USAGE) or get(Detail.MEMORY_AFTER_CLEANUP) or get(Detail.MEMORY_AFTER)
        memory = megabytes(memory_text) if memory_text else None
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
            outcome = get(Detail.OUTCOME, "")
            duration = seconds(get(Detail.DURATION, ""))
            if duration is not None:
                box.duration_s += duration
                self.busy_s += duration
                self.duration_buckets[bucket_of(duration, DURATION_BUCKETS_S)] += 1
                end = minute * 60 + at.second  # local seconds; made unix time for the report
                job = (
                    get(Detail.TOOL_CALLS, ""),
                    get(Detail.TOOL_LATENCY_P50, ""),
                    get(Detail.TOOL_LATENCY_MAX, ""),
                    get(Detail.PEAK_MEMORY, ""),
                    get(Detail.CONSOLE_ERRORS, ""),
                )
                box.leases.append((end - duration, end, outcome, get(Detail.TEST_RUN, ""), job))
                if job[0].isdigit():
                    box.tool_calls += int(job[0])
                    box.tool_max_s = max(box.tool_max_s, seconds(job[2]) or 0.0)
                if job[4].isdigit():
                    box.console_errors += int(job[4])
            box.infra_errors += outcome == "infra_error"
            box.test_failures += outcome == "test_failed"
        elif action == LogAction.ALLOCATED:
            wait = seconds(get(Detail.WAIT_TIME, ""))
            bucket = bucket_of(wait or 0.0, WAIT_BUCKETS_S)
            if wait is not None:
                self.wait_buckets[bucket] += 1
            client = get(Detail.CLIENT)
            if client:
                self.client_waits[client][bucket] += 1
        elif (action == LogAction.CONTAINER_RESTART or action == LogAction.CONTAINER_REPLACED) and box is not None:
            reason = get(Detail.REASON, "")
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
            error_type, context = get(Detail.ERROR_TYPE, ""), get(Detail.CONTEXT, "")
            error_text, reason = get(Detail.ERROR, ""), get(Detail.REASON, "")
            self.errors_by_minute[minute] += 1
            self.errors_by_type[error_type or action] += 1
            pattern = normalize_error(error_text or reason or error_type or action)
            self.errors[pattern] += 1
            self.errors_by_context[context or "-"] += 1
            if context:
                self.error_contexts[(pattern, context)] += 1

    # -- the report ----------------------------------------------------------------------
    def report(self) -> Report:
        span_s = max(1.0, (self.last - self.first).total_seconds()) if self.first and self.last else 1.0
        per_container = {name: self._figures(box, span_s) for name, box in sorted(self.containers.items())}
        containers = len(per_container) or 1
        jobs = sum(self.jobs_by_minute.values())
        waited = sum(n for bound, n in self.wait_buckets.items() if bound > SLOW_WAIT_S)
        pool = PoolFigures(
            containers=len(per_container),
            jobs=jobs,
            utilization=round(min(1.0, self.busy_s / (containers * span_s)), 4),
            wait_p50_s=percentile(self.wait_buckets, WAIT_BUCKETS_S, 50),
            wait_p95_s=percentile(self.wait_buckets, WAIT_BUCKETS_S, 95),
            waited_over_1s_share=round(waited / sum(self.wait_buckets.values()), 4) if self.wait_buckets else 0.0,
            duration_p50_s=percentile(self.duration_buckets, DURATION_BUCKETS_S, 50),
            duration_p95_s=percentile(self.duration_buckets, DURATION_BUCKETS_S, 95),
            throughput_per_hour=round(jobs / max(span_s / 3600, 1 / 60), 2),
            jobs_per_hour=self._per_hour(self.jobs_by_minute),
            errors_per_hour=self._per_hour(self.errors_by_minute),
        )
        errors = ErrorFigures(
            common=tuple(CommonError(e, n, self._context_of(e)) for e, n in self.errors.most_common(10)),
            by_type=dict(self.errors_by_type.most_common()),
            by_context=dict(self.errors_by_context.most_common()),
            leaking_containers=tuple(name for name, figures in per_container.items() if figures.risk_leaking),
            frequently_restarted=tuple(name for name, figures in per_container.items() if figures.often_restarted),
        )
        typed = {name: figures.figures for name, figures in per_container.items()}
        return Report(
            records=self.records,
            since=self.first.isoformat(sep=" ") if self.first else None,
            until=self.last.isoformat(sep=" ") if self.last else None,
            containers=typed,
            errors=errors,
            pool=pool,
            clients={
                name: ClientFigures(sum(waits.values()), percentile(waits, WAIT_BUCKETS_S, 50), percentile(waits, WAIT_BUCKETS_S, 95))
                for name, waits in sorted(self.client_waits.items())
            },
            timeline=self._timeline(span_s),
            histograms={
                "wait_s": histogram(self.wait_buckets, WAIT_BUCKETS_S),
                "duration_s": histogram(self.duration_buckets, DURATION_BUCKETS_S),
            },
            memory_series={n: b.memory_points for n, b in sorted(self.containers.items()) if b.memory_points},
            restart_marks={n: list(b.marks) for n, b in sorted(self.containers.items()) if b.marks},
            leases={n: [_lease(*lease) for lease in b.leases] for n, b in sorted(self.containers.items()) if b.leases},
            recommendations=tuple(recommend(pool, typed, errors)),
        )

    def _figures(self, box: _Container, span_s: float) -> _Judged:
        days = max(span_s / 86400, 1 / 24)
        overall, within = box.memory.slope(), box.life_slope()
        steepest = max((s for s in (overall, within) if s is not None), default=None)
        if steepest is None:
            trend = MemoryTrend.UNKNOWN
        elif steepest > STABLE_MB_PER_HOUR:
            trend = MemoryTrend.INCREASING
        elif overall is not None and overall < -STABLE_MB_PER_HOUR:
            trend = MemoryTrend.DECREASING
        else:
            trend = MemoryTrend.STABLE
        judged = box.tests >= MIN_JOBS_FOR_RATE
        error_rate = box.infra_errors / box.tests if box.tests else 0.0
        restarts = sum(box.restarts.values()) + sum(box.replaced.values())
        restarts_per_day = restarts / days
        leaks = steepest is not None and steepest > LEAK_MB_PER_HOUR
        often = restarts >= MEDIUM_RESTARTS and restarts_per_day > MEDIUM_RESTARTS_PER_DAY
        if leaks or (judged and error_rate > HIGH_ERROR_RATE) or (restarts >= HIGH_RESTARTS and restarts_per_day > HIGH_RESTARTS_PER_DAY):
            risk = Risk.HIGH
        elif (judged and error_rate > MEDIUM_ERROR_RATE) or often or box.restarts["memory_limit_exceeded"]:
            risk = Risk.MEDIUM
        else:
            risk = Risk.LOW
        figures = ContainerFigures(
            tests=box.tests,
            average_duration_s=round(box.duration_s / box.tests, 3) if box.tests else None,
            memory_trend=trend,
            memory_slope_mb_per_hour=None if overall is None else round(overall, 2),
            memory_slope_within_lives_mb_per_hour=None if within is None else round(within, 2),
            peak_memory_mb=box.peak_mb or None,
            error_rate=round(error_rate, 4),
            infra_errors=box.infra_errors,
            test_failures=box.test_failures,
            restarts=sum(box.restarts.values()),
            replacements=sum(box.replaced.values()),
            restarts_by_reason=dict(box.restarts.most_common()),
            replacements_by_reason=dict(box.replaced.most_common()),
            restarts_per_day=round(restarts_per_day, 2),
            tool_calls=box.tool_calls,
            tool_latency_max_s=round(box.tool_max_s, 3) if box.tool_calls else None,
            console_errors=box.console_errors,
            risk=risk,
        )
        return _Judged(figures, leaks, often)

    def _context_of(self, pattern: str) -> str | None:
        contexts = [(n, context) for (p, context), n in self.error_contexts.items() if p == pattern]
        return max(contexts)[1] if contexts else None

    @staticmethod
    def _per_hour(by_minute: Counter[int]) -> dict[str, int]:
        hours: Counter[str] = Counter()
        for minute, count in by_minute.items():
            hours[minute_label(minute - minute % 60)] += count
        return dict(sorted(hours.items()))

    def _timeline(self, span_s: float) -> Timeline:
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
        labels = [minute_label(k)[: 10 if unit == "day" else 16] for k in keys]
        return Timeline(unit, tuple(labels), tuple(jobs[k] for k in keys), tuple(errors[k] for k in keys))
