"""Log folders written the way the supervisor writes them, for the analyzer's and the HTML
report's tests (and the README's screenshot of the report)."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

from cinnamon_pool.logs.analyzer import Analyzer
from cinnamon_pool.logs.files import iter_records
from cinnamon_pool.logs.format import LogKind, LogRecord
from cinnamon_pool.logs.writer import DailyLogWriter


class Log:
    """A log folder written the way the supervisor writes it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.writer = DailyLogWriter(root)

    def job(
        self, name: str, at: dt.datetime, seconds: float, memory_mb: float, outcome: str = "ok", wait_s: float = 0.0, client: str = ""
    ) -> None:
        """One lease: ALLOCATED, then RELEASED ``seconds`` later; ``client``: a session on connect's key."""
        run = f"run-{at:%H%M%S}-{name}"
        allocated = (
            ("Test Run", run),
            ("Memory Usage", f"{memory_mb:.0f}MB"),
            ("Available Containers", "1"),
            ("Wait Time", f"{wait_s:.3f}s"),
            *((("Client", client),) if client else ()),
        )
        self.writer.write(LogKind.USAGE, LogRecord(at, "INFO", name, "ALLOCATED", allocated))
        end = at + dt.timedelta(seconds=seconds)
        released = (("Test Run", run), ("Outcome", outcome), ("Duration", f"{seconds:.2f}s"), ("Memory Usage", f"{memory_mb:.0f}MB"))
        self.writer.write(LogKind.USAGE, LogRecord(end, "INFO", name, "RELEASED", released))

    def restart(self, name: str, at: dt.datetime, reason: str, memory_mb: float) -> None:
        details = (("Reason", reason), ("Memory Usage", f"{memory_mb:.0f}MB"), ("Error Count", "0"), ("Uptime", "10min"))
        self.writer.write(LogKind.POOL, LogRecord(at, "WARN", name, "CONTAINER_RESTART", details))

    def replaced(self, name: str, at: dt.datetime, reason: str) -> None:
        self.writer.write(LogKind.POOL, LogRecord(at, "WARN", name, "CONTAINER_REPLACED", (("Reason", reason), ("Old Container", "abc"))))

    def error(self, name: str, at: dt.datetime, error: str, context: str) -> None:
        details = (("Test Run", "r"), ("Error", error), ("Context", context), ("Consecutive Errors", "1/3"), ("Error Type", "infra_error"))
        self.writer.write(LogKind.ERRORS, LogRecord(at, "ERROR", name, "ERROR_OCCURRED", details))

    def report(self) -> dict[str, Any]:
        """The ``report --json`` document of the log (the analyzer's typed report, as JSON)."""
        return Analyzer().feed(iter_records(self.root)).report().to_json()


def an_afternoon(root: Path, start: dt.datetime = dt.datetime(2026, 11, 30, 14, 0, 0)) -> Log:
    """45 minutes of three containers: steady sign-in jobs, a queue in the busiest minutes (20 to
    24), container-002 leaking (a sawtooth: restarted each time it crosses 400 MB) and failing
    some navigations, container-003 OOM-killed and replaced once."""
    log, rng = Log(root), random.Random(7)
    memory = {"container-001": 170.0, "container-002": 160.0, "container-003": 175.0}
    clock = {name: start + dt.timedelta(seconds=3 * i) for i, name in enumerate(memory)}
    end = start + dt.timedelta(minutes=45)
    oom = start + dt.timedelta(minutes=26)
    while any(at < end for at in clock.values()):
        name = min(clock, key=lambda n: clock[n])
        at = clock[name]
        busy = 20 <= (at - start).total_seconds() / 60 < 24
        seconds = rng.uniform(3, 7) if rng.random() < 0.9 else rng.uniform(10, 25)
        outcome = "ok"
        if name == "container-002" and rng.random() < 0.05:
            outcome = "infra_error"
            log.error(
                name, at + dt.timedelta(seconds=seconds), f"TimeoutError: navigation took {rng.randint(30, 31)}.0s", "page_navigation"
            )
        elif rng.random() < 0.01:
            outcome = "test_failed"
            log.error(name, at + dt.timedelta(seconds=seconds), "AssertionError: expected the heading 'Welcome'", "job")
        reading = memory[name] if name == "container-002" else memory[name] + rng.uniform(-3, 3)
        log.job(name, at, seconds, reading, outcome=outcome, wait_s=rng.uniform(1.5, 6) if busy else rng.uniform(0, 0.05))
        done = at + dt.timedelta(seconds=seconds)
        if name == "container-002":
            memory[name] += 1.2
            if memory[name] > 400:
                log.restart(name, done + dt.timedelta(seconds=1), "memory_limit_exceeded", memory[name])
                memory[name] = 160.0
        if name == "container-003" and at <= oom < done:
            log.replaced(name, done + dt.timedelta(seconds=1), "container exited (exit 137, OOM-killed)")
        clock[name] = done + dt.timedelta(seconds=rng.uniform(0.2, 0.6) if busy else rng.uniform(0.5, 3))
    return log
