"""The lease event schema: what each kind of event in the pool's Redis stream carries.

The Lua scripts write these events (``emit`` in ``_lib.lua``); the decoder turns a stream entry
into a :class:`LeaseEvent` against this schema, and the journal, the metrics, the log records
and ``ContainerPool.stats`` read only that. One place says which fields exist and their types.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


class EventKind(enum.StrEnum):
    GRANTED = "granted"
    RELEASED = "released"
    REVOKED = "revoked"
    STATE = "state"
    REGISTERED = "registered"
    DEREGISTERED = "deregistered"
    WAITING = "waiting"
    WAITER_GONE = "waiter_gone"
    LEADER = "leader"
    SCALED = "scaled"
    FORGOTTEN = "forgotten"
    HOST_JOINED = "host_joined"
    PREPARED = "prepared"


class FieldType(enum.Enum):
    TEXT = "text"  # at most MAX_TEXT characters
    INT = "int"  # a whole number
    DECIMAL = "decimal"  # a number, or '' for none


MAX_TEXT = 1000
T, N, D = FieldType.TEXT, FieldType.INT, FieldType.DECIMAL  # text, whole number, decimal

# kind -> {field: (type, required)}; every event also has kind, name (text) and at_ms (int).
SCHEMA: Mapping[EventKind, Mapping[str, tuple[FieldType, bool]]] = {
    EventKind.GRANTED: {
        "token": (T, True), "test_run_id": (T, True), "job_id": (T, False), "worker": (T, False),
        "available": (N, False), "wait_ms": (N, False), "ticket": (T, False),
    },
    EventKind.RELEASED: {
        "token": (T, True), "test_run_id": (T, True), "outcome": (T, True), "duration_ms": (N, True),
        "error_count": (N, False), "threshold": (N, False), "cleanup_ms": (D, False), "cleanup_note": (T, False),
        "artifacts": (T, False), "error": (T, False), "context": (T, False),
        "tool_calls": (N, False), "tool_p50_ms": (D, False), "tool_max_ms": (D, False), "console_errors": (N, False),
        "trace": (T, False),
    },
    EventKind.REVOKED: {"token": (T, False), "test_run_id": (T, False), "reason": (T, True), "duration_ms": (N, False)},
    EventKind.STATE: {"from": (T, False), "to": (T, True), "reason": (T, False)},
    EventKind.REGISTERED: {"container_id": (T, True), "endpoint": (T, False), "host": (T, False)},
    EventKind.DEREGISTERED: {"reason": (T, False)},
    EventKind.WAITING: {"ticket": (T, False), "test_run_id": (T, False)},
    EventKind.WAITER_GONE: {"ticket": (T, False), "reason": (T, False)},
    EventKind.LEADER: {"id": (T, False)},
    EventKind.SCALED: {"host": (T, True), "from": (N, False), "to": (N, True), "reason": (T, False)},
    EventKind.FORGOTTEN: {"key": (T, True)},
    EventKind.HOST_JOINED: {"host": (T, True), "index": (N, True)},
    EventKind.PREPARED: {"result": (T, True), "detail": (T, False), "prepare_ms": (D, False)},
}  # fmt: skip


@dataclass(frozen=True)
class LeaseEvent:
    """One decoded stream entry. Values have the schema's types; an optional field that was not
    written reads as '' (text), 0 (int) or None (decimal)."""

    entry_id: str
    kind: EventKind
    name: str
    at_ms: int
    values: Mapping[str, str | int | float | None]

    def text(self, field: str) -> str:
        value = self.values.get(field, "")
        return value if isinstance(value, str) else str(value)

    def number(self, field: str) -> int:
        value = self.values.get(field, 0)
        return value if isinstance(value, int) else 0

    def decimal(self, field: str) -> float | None:
        value = self.values.get(field)
        return float(value) if isinstance(value, (int, float)) else None

    def has(self, field: str) -> bool:
        return self.values.get(field) not in (None, "")
