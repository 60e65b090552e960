"""What the gateway says in the daily logs about requests it did not serve as asked: a refusal
(ACCESS_DENIED; a 502, 503 or 504 is ERROR_OCCURRED) and a container's own error answer, each
at most once a minute per container, reason and client, so a client that retries in a loop
cannot fill the disk."""

from __future__ import annotations

from dataclasses import dataclass, field

from cinnamon_pool.clock import Clock
from cinnamon_pool.gateway.auth import Refusal
from cinnamon_pool.logs.actions import Detail, LogAction
from cinnamon_pool.logs.events import action_record
from cinnamon_pool.logs.format import LogKind
from cinnamon_pool.logs.writer import DailyLogWriter

REPORT_EVERY_S = 60.0  # one record per container, reason and client per minute
REMEMBERED = 10_000  # past this many keys, those older than a minute are forgotten


@dataclass
class Said:
    writer: DailyLogWriter
    clock: Clock
    _last: dict[tuple[str, str, str], float] = field(default_factory=dict)

    def _due(self, key: tuple[str, str, str]) -> bool:
        now = self.clock.monotonic()
        if now - self._last.get(key, float("-inf")) < REPORT_EVERY_S:
            return False
        self._last[key] = now
        if len(self._last) > REMEMBERED:
            self._last = {k: t for k, t in self._last.items() if now - t < REPORT_EVERY_S}
        return True

    def refusal(self, refusal: Refusal, client: str) -> None:
        """ACCESS_DENIED (a 5xx: ERROR_OCCURRED) for ``refusal`` of ``client``'s request."""
        if not self._due((refusal.container, refusal.reason, client)):
            return
        details = [
            (Detail.REASON, refusal.reason),
            (Detail.STATUS, str(refusal.status)),
            (Detail.CLIENT, client),
            (Detail.DETAIL, refusal.message),
        ]
        if refusal.status in {502, 503, 504}:
            record = action_record(
                self.clock.now(),
                refusal.container or "pool",
                LogAction.ERROR_OCCURRED,
                [(Detail.ERROR, refusal.message), *details[1:]],
                "ERROR",
            )
            self.writer.write(LogKind.ERRORS, record)
        else:
            self.writer.write(
                LogKind.POOL, action_record(self.clock.now(), refusal.container or "pool", LogAction.ACCESS_DENIED, details, "WARN")
            )

    def container_error(self, container: str, method: str, status: int, content_type: str) -> None:
        """A container's own error answer is forwarded as it is; the errors log says it happened
        (once per container and status per minute), which the holder's MCP client does not."""
        if not self._due((container, f"upstream_{status}", "-")):
            return
        kind = content_type.split(";")[0]
        details = [
            (Detail.ERROR, f"the container answered {method} with HTTP {status} ({kind})"),
            (Detail.STATUS, str(status)),
        ]
        self.writer.write(LogKind.ERRORS, action_record(self.clock.now(), container, LogAction.ERROR_OCCURRED, details, "ERROR"))
