"""Lease events (from the Redis stream) and supervisor actions as log records. Pure."""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
from collections.abc import Mapping

from cinnamon_pool.events import EventKind, LeaseEvent
from cinnamon_pool.logs.actions import Detail, Details, LogAction
from cinnamon_pool.logs.format import LogKind, LogRecord
from cinnamon_pool.model import client_of

_TOKEN = re.compile(r"\b[0-9a-f]{16}:\d+:[0-9a-f]{16}\b")
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")


def redact(value: str) -> str:
    """Secrets never reach a log file: a URL's password becomes ***, a fencing token a short hash."""
    value = _URL_PASSWORD.sub(r"\1***@", value)
    return _TOKEN.sub(lambda m: "token#" + hashlib.sha256(m.group(0).encode()).hexdigest()[:8], value)


def _job_figures(event: LeaseEvent, peak_mb: float | None) -> Details:
    """The job's own figures on its RELEASED record: tool calls and their latency, the container's
    peak memory during the lease, console errors."""
    figures = []
    if event.has("tool_calls"):
        figures.append((Detail.TOOL_CALLS, str(event.number("tool_calls"))))
    for key, field_name in ((Detail.TOOL_LATENCY_P50, "tool_p50_ms"), (Detail.TOOL_LATENCY_MAX, "tool_max_ms")):
        value = event.decimal(field_name)
        if value is not None:
            figures.append((key, f"{value / 1000:.3f}s"))
    if peak_mb is not None:
        figures.append((Detail.PEAK_MEMORY, f"{peak_mb:.0f}MB"))
    if event.has("console_errors"):
        figures.append((Detail.CONSOLE_ERRORS, str(event.number("console_errors"))))
    if event.has("trace"):
        figures.append((Detail.TRACE, event.text("trace")))
    return figures


def seconds(value: float) -> str:
    """A duration as the seed writes it: ``1.2s`` (``0.04s`` under a tenth of a second)."""
    return f"{value:.1f}s" if value >= 0.1 else f"{value:.2f}s"


def uptime(value_s: float) -> str:
    """An uptime as the seed writes it: ``45min`` (``30s`` under a minute, ``26h5min`` from a day)."""
    if value_s < 60:
        return f"{max(0, int(value_s))}s"
    minutes = int(value_s // 60)
    return f"{minutes}min" if minutes < 24 * 60 else f"{minutes // 60}h{minutes % 60}min"


RESTART_REASONS = (  # (the seed's reason code, what the reason text starts with)
    ("error_threshold_exceeded", ("error_threshold",)),
    ("memory_limit_exceeded", ("memory ",)),
    ("response_timeout", ("no answer to a probe",)),  # the seed's 응답 지연: no answer for 5 s
    ("health_check_failed", ("probe took", "failed probes")),
    ("unresponsive", ("unresponsive",)),
    ("leftover_processes", ("browser left running",)),
    ("residue", ("residue",)),
    ("cleanup_failed", ("cleanup", "canary failed", "ending the sessions")),
    ("operator", ("operator",)),
    ("lease_expired", ("lease ",)),
    ("pool_draining", ("pool draining", "drained")),
    ("state_lost", ("the pool's metadata", "redis lost")),
    ("inconsistent_state", ("available, but", "preparing, but", "allocated, but", "draining, but")),
    ("host_supervisor_gone", ("its host",)),
    ("unsafe_tool", ("unsafe tool",)),  # a holder ran code in the browser server (gateway/unsafe.py)
)


def restart_reason(text: str) -> str:
    """The seed's reason code for why a container restarts (``error_threshold_exceeded``,
    ``memory_limit_exceeded``, ...); ``other`` for a reason this list does not know. The full
    text follows in the record's ``Detail``."""
    text = text.removeprefix("restart: ")
    for code, starts in RESTART_REASONS:
        if text.startswith(starts):
            return code
    return "other"


def restart_details(reason: str, memory_mb: float | None, error_count: int, uptime_s: float | None) -> Details:
    """CONTAINER_RESTART's fields: the seed's (Reason, Memory Usage, Error Count, Uptime), then the
    reason's full text."""
    details = [(Detail.REASON, restart_reason(reason))]
    details += [(Detail.MEMORY_USAGE, f"{memory_mb:.0f}MB")] if memory_mb is not None else []
    details += [(Detail.ERROR_COUNT, str(error_count))]
    details += [(Detail.UPTIME, uptime(uptime_s))] if uptime_s is not None else []
    return [*details, (Detail.DETAIL, reason)]


def action_record(at: _dt.datetime, subject: str, action: LogAction, details: Details, level: str = "INFO") -> LogRecord:
    return LogRecord(at.replace(microsecond=0), level, subject, action, tuple((key, redact(value)) for key, value in details))


def event_record(
    event: LeaseEvent,
    memory_mb: Mapping[str, float],
    error_threshold: int,
    memory_after: float | None = None,
    peak_mb: float | None = None,
) -> list[tuple[LogKind, LogRecord]]:
    """The records one lease event produces (none for events operators need not read), redacted.
    ``memory_after``: a released container's memory read after its cleanup (else the last
    reading); ``peak_mb``: the highest reading during the lease."""
    return [
        (kind, record._replace(details=tuple((k, redact(v)) for k, v in record.details)))
        for kind, record in _event_record(event, memory_mb, error_threshold, memory_after, peak_mb)
    ]


def _event_record(
    event: LeaseEvent, memory_mb: Mapping[str, float], error_threshold: int, memory_after: float | None, peak_mb: float | None
) -> list[tuple[LogKind, LogRecord]]:
    name = event.name
    at = _dt.datetime.fromtimestamp(event.at_ms / 1000).replace(microsecond=0)
    memory = memory_mb.get(name)
    memory_detail = [(Detail.MEMORY_USAGE, f"{memory:.0f}MB")] if memory is not None else []

    if event.kind is EventKind.GRANTED:
        available = event.text("available") if event.has("available") else "?"
        details = [(Detail.TEST_RUN, event.text("test_run_id")), *memory_detail, (Detail.AVAILABLE_CONTAINERS, available)]  # the seed's
        if event.has("job_id"):
            details.append((Detail.JOB, event.text("job_id")))
        worker = event.text("worker") if event.has("worker") else ""
        client = client_of(worker)
        if client is not None:  # a session on connect: the API key that opened it
            details.append((Detail.CLIENT, client))
        elif worker:
            details.append((Detail.WORKER, worker))
        if event.number("wait_ms"):
            details.append((Detail.WAIT_TIME, f"{event.number('wait_ms') / 1000:.3f}s"))
        return [(LogKind.USAGE, LogRecord(at, "INFO", name, LogAction.ALLOCATED, tuple(details)))]

    if event.kind is EventKind.RELEASED:
        return _released(at, event, memory_detail, error_threshold, memory if memory_after is None else memory_after, peak_mb)

    if event.kind is EventKind.REVOKED and event.text("reason") in {"expired", "hard cap"}:
        held_s = event.number("duration_ms") / 1000
        expired = ((Detail.TEST_RUN, event.text("test_run_id")), (Detail.REASON, event.text("reason")), (Detail.HELD_FOR, f"{held_s:.2f}s"))
        return [(LogKind.POOL, LogRecord(at, "WARN", name, LogAction.LEASE_EXPIRED, expired))]

    if event.kind is EventKind.SCALED and event.has("from"):  # (not the first size a host stores)
        action = LogAction.POOL_EXPANDED if event.number("to") > event.number("from") else LogAction.POOL_SHRUNK
        details = [
            (Detail.HOST, event.text("host")),
            (Detail.FROM, event.text("from") or "-"),
            (Detail.TO, event.text("to")),
            (Detail.REASON, event.text("reason")),
        ]
        return [(LogKind.POOL, LogRecord(at, "INFO", "pool", action, tuple(details)))]

    return []


def _released(
    at: _dt.datetime,
    event: LeaseEvent,
    memory: Details,
    error_threshold: int,
    memory_after: float | None,
    peak_mb: float | None,
) -> list[tuple[LogKind, LogRecord]]:
    name, outcome, run = event.name, event.text("outcome"), event.text("test_run_id")
    duration_s = event.number("duration_ms") / 1000
    threshold = event.number("threshold") or error_threshold
    errors = f"{event.number('error_count')}/{threshold}"
    details = [
        (Detail.TEST_RUN, run),
        (Detail.OUTCOME, outcome),
        (Detail.DURATION, f"{duration_s:.2f}s"),
        *memory,
        (Detail.CONSECUTIVE_ERRORS, errors),
    ]
    details += _job_figures(event, peak_mb)
    out = [(LogKind.USAGE, LogRecord(at, "INFO", name, LogAction.RELEASED, tuple(details)))]
    cleanup_ms = event.decimal("cleanup_ms")
    if cleanup_ms is not None:
        cleanup = [(Detail.TEST_RUN, run), (Detail.CLEANUP_DURATION, seconds(cleanup_ms / 1000))]
        cleanup += [(Detail.MEMORY_AFTER_CLEANUP, f"{memory_after:.0f}MB")] if memory_after is not None else []
        cleanup += [(Detail.RESULT, event.text("cleanup_note"))]
        out.append((LogKind.USAGE, LogRecord(at, "INFO", name, LogAction.CLEANUP_COMPLETED, tuple(cleanup))))
    if outcome in {"infra_error", "test_failed"}:
        error = [(Detail.TEST_RUN, run), (Detail.ERROR, event.text("error") or outcome), (Detail.CONTEXT, event.text("context") or "job")]
        error += [(Detail.CONSECUTIVE_ERRORS, errors), (Detail.ERROR_TYPE, outcome)]
        error += [(Detail.ARTIFACTS, event.text("artifacts"))] if event.has("artifacts") else []
        error += [(Detail.TRACE, event.text("trace"))] if event.has("trace") else []
        out.append(
            (LogKind.ERRORS, LogRecord(at, "ERROR" if outcome == "infra_error" else "WARN", name, LogAction.ERROR_OCCURRED, tuple(error)))
        )
    return out
