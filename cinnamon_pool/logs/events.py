"""Lease events (from the Redis stream) and supervisor actions as log records. Pure."""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
from collections.abc import Mapping

from cinnamon_pool.logs.format import LogKind, LogRecord

_TOKEN = re.compile(r"\b[0-9a-f]{16}:\d+:[0-9a-f]{16}\b")
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")


def redact(value: str) -> str:
    """Secrets never reach a log file: a URL's password becomes ***, a fencing token a short hash."""
    value = _URL_PASSWORD.sub(r"\1***@", value)
    return _TOKEN.sub(lambda m: "token#" + hashlib.sha256(m.group(0).encode()).hexdigest()[:8], value)


def action_record(at: _dt.datetime, subject: str, action: str, details: list[tuple[str, str]], level: str = "INFO") -> LogRecord:
    return LogRecord(at.replace(microsecond=0), level, subject, action, tuple((key, redact(value)) for key, value in details))


def event_record(fields: Mapping[str, str], memory_mb: Mapping[str, float], error_threshold: int) -> list[tuple[LogKind, LogRecord]]:
    """The records one lease event produces (none for events operators need not read), redacted."""
    return [
        (kind, record._replace(details=tuple((k, redact(v)) for k, v in record.details)))
        for kind, record in _event_record(fields, memory_mb, error_threshold)
    ]


def _event_record(fields: Mapping[str, str], memory_mb: Mapping[str, float], error_threshold: int) -> list[tuple[LogKind, LogRecord]]:
    kind, name = fields.get("kind", ""), fields.get("name", "")
    at = _dt.datetime.fromtimestamp(int(fields.get("at_ms", "0")) / 1000).replace(microsecond=0)
    memory = memory_mb.get(name)
    memory_detail = [("Memory Usage", f"{memory:.0f}MB")] if memory is not None else []

    if kind == "granted":
        details = [("Test Run", fields.get("test_run_id", ""))]
        if fields.get("job_id"):
            details.append(("Job", fields["job_id"]))
        if fields.get("worker"):
            details.append(("Worker", fields["worker"]))
        if fields.get("wait_ms"):
            details.append(("Wait Time", f"{int(fields['wait_ms']) / 1000:.3f}s"))
        details += [*memory_detail, ("Available Containers", fields.get("available", "?"))]
        return [(LogKind.USAGE, LogRecord(at, "INFO", name, "ALLOCATED", tuple(details)))]

    if kind == "released":
        return _released(at, name, fields, memory_detail, error_threshold)

    if kind == "revoked" and fields.get("reason") in {"expired", "hard cap"}:
        held_s = int(fields.get("duration_ms", "0")) / 1000
        expired = (("Test Run", fields.get("test_run_id", "")), ("Reason", fields.get("reason", "")), ("Held For", f"{held_s:.2f}s"))
        return [(LogKind.POOL, LogRecord(at, "WARN", name, "LEASE_EXPIRED", expired))]

    return []


def _released(
    at: _dt.datetime, name: str, fields: Mapping[str, str], memory: list[tuple[str, str]], error_threshold: int
) -> list[tuple[LogKind, LogRecord]]:
    outcome, run = fields.get("outcome", ""), fields.get("test_run_id", "")
    duration_s = int(fields.get("duration_ms", "0")) / 1000
    errors = f"{fields.get('error_count', '0')}/{fields.get('threshold', error_threshold)}"
    details = [("Test Run", run), ("Outcome", outcome), ("Duration", f"{duration_s:.2f}s"), *memory, ("Consecutive Errors", errors)]
    out = [(LogKind.USAGE, LogRecord(at, "INFO", name, "RELEASED", tuple(details)))]
    if fields.get("cleanup_ms"):
        cleanup = [("Test Run", run), ("Cleanup Duration", f"{float(fields['cleanup_ms']):.0f}ms")]
        cleanup += [("Memory After", value) for _key, value in memory] + [("Result", fields.get("cleanup_note", ""))]
        out.append((LogKind.USAGE, LogRecord(at, "INFO", name, "CLEANUP_COMPLETED", tuple(cleanup))))
    if outcome in {"infra_error", "test_failed"}:
        error = [("Test Run", run), ("Error Type", outcome)]
        error += [("Consecutive Errors", errors)] if outcome == "infra_error" else []
        error += [("Artifacts", fields["artifacts"])] if fields.get("artifacts") else []
        out.append((LogKind.ERRORS, LogRecord(at, "ERROR" if outcome == "infra_error" else "WARN", name, "ERROR_OCCURRED", tuple(error))))
    return out
