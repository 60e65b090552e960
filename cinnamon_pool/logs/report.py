"""What the analyzer reports, typed: frozen figures per container, per client and for the pool,
the error patterns, the charts' series and the recommendations. ``Report.to_json()`` is the
``report --json`` document (its schema in docs/report.md); the CLI, the HTML report and the
dashboard read the typed fields. Pure."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 2  # of ``report --json`` (docs/report.md)

Series = list[Any]  # a chart's points as JSON carries them (lists of numbers, strings, None)


class MemoryTrend(enum.StrEnum):
    INCREASING = "increasing"
    DECREASING = "decreasing"
    STABLE = "stable"
    UNKNOWN = "unknown"  # too few readings


class Risk(enum.StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class AdviceKind(enum.StrEnum):
    SIZE = "size"
    MEMORY = "memory"
    ERRORS = "errors"
    RESTARTS = "restarts"


class Severity(enum.StrEnum):
    WARN = "warn"
    INFO = "info"


@dataclass(frozen=True)
class ContainerFigures:
    tests: int
    average_duration_s: float | None
    memory_trend: MemoryTrend
    memory_slope_mb_per_hour: float | None
    memory_slope_within_lives_mb_per_hour: float | None
    peak_memory_mb: float | None
    error_rate: float
    infra_errors: int
    test_failures: int
    restarts: int
    replacements: int
    restarts_by_reason: Mapping[str, int]
    replacements_by_reason: Mapping[str, int]
    restarts_per_day: float
    tool_calls: int
    tool_latency_max_s: float | None
    console_errors: int
    risk: Risk


@dataclass(frozen=True)
class CommonError:
    error: str  # the pattern: numbers and ids folded
    count: int
    context: str | None  # the tool or phase it failed in most often


@dataclass(frozen=True)
class ErrorFigures:
    common: tuple[CommonError, ...]
    by_type: Mapping[str, int]
    by_context: Mapping[str, int]
    leaking_containers: tuple[str, ...]
    frequently_restarted: tuple[str, ...]


@dataclass(frozen=True)
class PoolFigures:
    containers: int
    jobs: int
    utilization: float
    wait_p50_s: float | None
    wait_p95_s: float | None
    waited_over_1s_share: float
    duration_p50_s: float | None
    duration_p95_s: float | None
    throughput_per_hour: float
    jobs_per_hour: Mapping[str, int]
    errors_per_hour: Mapping[str, int]


@dataclass(frozen=True)
class ClientFigures:
    sessions: int
    wait_p50_s: float | None
    wait_p95_s: float | None


@dataclass(frozen=True)
class Timeline:
    bucket: str  # minute, hour or day: what fits the window
    labels: tuple[str, ...]
    jobs: tuple[int, ...]
    errors: tuple[int, ...]


@dataclass(frozen=True)
class Advice:
    kind: AdviceKind
    severity: Severity
    message: str


@dataclass(frozen=True)
class Report:
    records: int
    since: str | None  # "from" in JSON
    until: str | None
    containers: Mapping[str, ContainerFigures]
    errors: ErrorFigures
    pool: PoolFigures
    clients: Mapping[str, ClientFigures]
    timeline: Timeline
    histograms: Mapping[str, Series]  # wait_s, duration_s: [[upper bound, count], ...]
    memory_series: Mapping[str, Series]  # per container: [[unix time, MB], ...]
    restart_marks: Mapping[str, Series]  # per container: [[unix time, reason], ...]
    leases: Mapping[str, list[dict[str, Any]]]  # per container: its leases for the timeline
    recommendations: tuple[Advice, ...]
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        """The ``report --json`` document: plain JSON values, keys as docs/report.md lists them."""
        return {
            "schema_version": self.schema_version,
            "records": self.records,
            "from": self.since,
            "until": self.until,
            "containers": {name: _plain(figures) for name, figures in self.containers.items()},
            "errors": _plain(self.errors),
            "pool": _plain(self.pool),
            "clients": {name: _plain(figures) for name, figures in self.clients.items()},
            "timeline": _plain(self.timeline),
            "histograms": _json_value(self.histograms),
            "memory_series": _json_value(self.memory_series),
            "restart_marks": _json_value(self.restart_marks),
            "leases": _json_value(self.leases),
            "recommendations": [_plain(advice) for advice in self.recommendations],
        }


def _plain(figures: Any) -> Any:
    """A frozen dataclass as JSON values: mappings as dicts, tuples as lists, enums as strings."""
    return _json_value(dataclasses.asdict(figures))


def _json_value(value: Any) -> Any:
    if isinstance(value, enum.StrEnum):
        return str(value)
    if isinstance(value, Mapping):
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    return value
