"""What the supervisor tells operators: its own actions, the lease events as records, errors
(one per kind per minute, ids folded), values rejected by the decoder (each once), and the
monthly archive of earlier files."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from loguru import logger

from cinnamon_pool.clock import Clock
from cinnamon_pool.errors import ImageMissing, ImageRejected, RuntimeUnavailable, StoreError
from cinnamon_pool.events import EventKind, LeaseEvent
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.logs.actions import Detail, Details, LogAction
from cinnamon_pool.logs.events import action_record, event_record
from cinnamon_pool.logs.files import archive_earlier_months
from cinnamon_pool.logs.format import LogKind
from cinnamon_pool.logs.writer import DailyLogWriter
from cinnamon_pool.model import Rejected

ERROR_REPORT_EVERY_S = 60.0


class Journal:
    def __init__(
        self,
        writer: DailyLogWriter,
        store: LeaseStore,
        clock: Clock,
        consumer: str,
        error_threshold: int,
        on_event: Callable[[LeaseEvent], None] | None = None,
        read_memory: Callable[[str], float | None] | None = None,
        peak_memory: Callable[[str, str], float | None] | None = None,
    ) -> None:
        self.writer, self.store, self.clock, self.on_event = writer, store, clock, on_event
        self.read_memory = read_memory  # a container's memory now (None: not one of this host's)
        self.peak_memory = peak_memory  # (container, token) -> its highest reading during that lease
        self.consumer, self.error_threshold = consumer, error_threshold
        self._last_error: tuple[str, float] | None = None
        self._archived_month: tuple[int, int] | None = None

    def record(self, kind: LogKind, subject: str, action: LogAction, details: Details, level: str = "INFO") -> None:
        self.writer.write(kind, action_record(self.clock.now(), subject, action, details, level))

    def lease_events(self, memory_mb: Mapping[str, float]) -> int:
        """New lease events as records; acknowledged once written (or dropped by a failing disk).
        An entry that does not decode is reported once and acknowledged like the others, so it
        is never read again."""
        written, ids = 0, []
        for entry_id, event in self.store.read_events(self.consumer):
            ids.append(entry_id)
            if isinstance(event, Rejected):
                self.rejected(event)
                continue
            if self.on_event is not None:
                self.on_event(event)
            peak = self.peak_memory(event.name, event.text("token")) if self.peak_memory and event.kind is EventKind.RELEASED else None
            for kind, record in event_record(event, memory_mb, self.error_threshold, self._memory_after(event), peak):
                self.writer.write(kind, record)
                written += 1
        self.store.ack_events(ids)
        return written

    def _memory_after(self, event: LeaseEvent) -> float | None:
        """After a cleanup, the container's memory read then, not the last tick's reading."""
        if self.read_memory is None or event.kind is not EventKind.RELEASED or event.decimal("cleanup_ms") is None:
            return None
        return self.read_memory(event.name)

    def rejected(self, value: Rejected) -> None:
        """A value read from Redis that the decoder refused: one ERROR_OCCURRED record."""
        details = [(Detail.ERROR, f"bad value in Redis: {value.reason}"), (Detail.KEY, value.key)]
        details += [(Detail.FIELD, value.field)] if value.field else []
        details += [(Detail.VALUE, value.value), (Detail.ACTION, "skipped and dropped")]
        self.record(LogKind.ERRORS, "pool", LogAction.ERROR_OCCURRED, details, level="ERROR")

    def error(self, error: Exception) -> None:
        """One ERROR_OCCURRED record and stderr line per kind of error per minute."""
        message = str(error)
        shape = re.sub(r"[0-9a-f]{12,}", "<id>", message)
        now = self.clock.monotonic()
        if self._last_error is not None and self._last_error[0] == shape and now - self._last_error[1] < ERROR_REPORT_EVERY_S:
            return
        self._last_error = (shape, now)
        if isinstance(error, ImageRejected):
            kind = "image rejected"
        elif isinstance(error, ImageMissing):
            kind = "image missing"
        elif isinstance(error, RuntimeUnavailable):
            kind = "docker"
        elif isinstance(error, StoreError):
            kind = "redis"
        else:
            kind = "pool"
        self.record(LogKind.ERRORS, "pool", LogAction.ERROR_OCCURRED, [(Detail.ERROR_TYPE, kind), (Detail.ERROR, message)], level="ERROR")
        logger.error("{}: {}", kind, message)

    def archive(self) -> None:
        """At start and at each change of month: earlier months' daily files to logs/archive/."""
        today = self.clock.now().date()
        if self._archived_month == (today.year, today.month):
            return
        try:
            archive_earlier_months(self.writer.root, today)
            self._archived_month = (today.year, today.month)
        except OSError as error:
            logger.warning("cannot archive logs in {}: {}", self.writer.root, error)
