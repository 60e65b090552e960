"""The pool's event stream, as the supervisors read it: one consumer group, pending entries first,
entries that do not decode handed on as :class:`Rejected` to be reported and acknowledged."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import redis

from cinnamon_pool import decode
from cinnamon_pool.events import LeaseEvent
from cinnamon_pool.keys import EVENTS_CONSUMER_GROUP
from cinnamon_pool.lease.calls import text
from cinnamon_pool.lease.client import ScriptClient
from cinnamon_pool.lease.redis_errors import translating
from cinnamon_pool.model import Rejected


class EventStream(ScriptClient):
    @translating
    def ensure_consumer_group(self) -> None:
        try:
            self.redis.xgroup_create(self.keys.events, EVENTS_CONSUMER_GROUP, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    @translating
    def read_events(self, consumer: str, count: int = 500, block_ms: int | None = None) -> Iterator[tuple[str, LeaseEvent | Rejected]]:
        """Yield new events for this consumer, pending ones (read, never acknowledged) first: the
        entry id and the decoded event, or a :class:`Rejected` for an entry that does not decode
        (to be reported and acknowledged like any other)."""
        for start in ("0", ">"):
            reply: Any = self.redis.xreadgroup(
                EVENTS_CONSUMER_GROUP, consumer, {self.keys.events: start}, count=count, block=block_ms if start == ">" else None
            )
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    entry = text(entry_id)
                    if fields is None:  # trimmed away while pending
                        continue
                    try:
                        yield entry, decode.event(entry, fields)
                    except decode.BadValue as error:
                        shown = " ".join(f"{decode.shorten(k, 20)}={decode.shorten(v, 30)}" for k, v in fields.items())
                        yield entry, Rejected("events", entry, decode.shorten(shown, 120), str(error))

    @translating
    def ack_events(self, entry_ids: Sequence[str]) -> None:
        if entry_ids:
            self.redis.xack(self.keys.events, EVENTS_CONSUMER_GROUP, *entry_ids)

    @translating
    def recent_events(self, since_ms: int, sample: int) -> Iterator[LeaseEvent]:
        """The stream's events since ``since_ms``, newest first, among its newest ``sample``
        (entries that do not decode are skipped: the supervisor reports them)."""
        entries: Any = self.redis.xrevrange(self.keys.events, count=sample)
        for entry_id, fields in entries:
            try:
                event = decode.event(entry_id, fields)
            except decode.BadValue:
                continue
            if event.at_ms < since_ms:
                return
            yield event
