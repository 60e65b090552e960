"""The runs the dashboard lists: every lease's RELEASED record in the log files, with its wait
(the ALLOCATED record before it), its error and its artifacts folder.

Read from the same daily files the analyzer reads (``logs/files.py``), newest day first, so a
page of 1,000 runs reads only the days it shows.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cinnamon_pool.logs.actions import Detail, LogAction
from cinnamon_pool.logs.files import iter_records
from cinnamon_pool.logs.format import LogRecord
from cinnamon_pool.safefiles import safe_name

ARTIFACT_FILES = ("screenshot.png", "snapshot.md", "console.log", "traceback.txt", "trace.zip")
DAYS_BACK = 30  # how far back the runs page looks


@dataclass(frozen=True)
class Run:
    """One lease as the logs tell it."""

    at: _dt.datetime  # released
    container: str
    test_run_id: str
    outcome: str
    duration: str
    wait: str = ""
    tool_calls: str = ""
    console_errors: str = ""
    error: str = ""
    context: str = ""
    trace: str = ""  # relative to logs.dir, as RELEASED names it

    @property
    def day(self) -> str:
        return f"{self.at:%Y-%m-%d}"

    @property
    def folder(self) -> str:
        """The run's artifacts folder name (its test run id, made safe as the writers make it)."""
        return safe_name(self.test_run_id)

    def matches(self, query: str) -> bool:
        text = " ".join((self.test_run_id, self.container, self.outcome, self.error, self.context)).lower()
        return all(word in text for word in query.lower().split())

    def to_json(self) -> dict[str, str]:
        return {
            "at": self.at.isoformat(timespec="seconds"),
            "container": self.container,
            "test_run_id": self.test_run_id,
            "outcome": self.outcome,
            "duration": self.duration,
            "wait": self.wait,
            "tool_calls": self.tool_calls,
            "console_errors": self.console_errors,
            "error": self.error,
            "trace": self.trace,
        }


def runs_of(records: Iterable[LogRecord]) -> list[Run]:
    """The runs in ``records`` (one day's, in time order), newest first."""
    waits: dict[tuple[str, str], str] = {}
    errors: dict[tuple[str, str], LogRecord] = {}
    found = []
    for record in records:
        key = (record.subject, record.detail(Detail.TEST_RUN))
        if record.action == LogAction.ALLOCATED:
            waits[key] = record.detail(Detail.WAIT_TIME)
        elif record.action == LogAction.ERROR_OCCURRED and key[1]:
            errors[key] = record
        elif record.action == LogAction.RELEASED:
            error = errors.pop(key, None)
            found.append(
                Run(
                    at=record.at,
                    container=record.subject,
                    test_run_id=key[1],
                    outcome=record.detail(Detail.OUTCOME),
                    duration=record.detail(Detail.DURATION),
                    wait=waits.pop(key, ""),
                    tool_calls=record.detail(Detail.TOOL_CALLS),
                    console_errors=record.detail(Detail.CONSOLE_ERRORS),
                    error=error.detail(Detail.ERROR) if error else "",
                    context=error.detail(Detail.CONTEXT) if error else "",
                    trace=record.detail(Detail.TRACE),
                )
            )
    found.reverse()
    return found


def recent_runs(logs_dir: str | Path, today: _dt.date, query: str = "", limit: int = 1000) -> list[Run]:
    """Up to ``limit`` runs matching ``query``, newest first, from ``today`` back ``DAYS_BACK`` days."""
    found: list[Run] = []
    for day in (today - _dt.timedelta(days=n) for n in range(DAYS_BACK)):
        found += [run for run in runs_of(iter_records(logs_dir, day, day)) if run.matches(query)]
        if len(found) >= limit:
            break
    return found[:limit]


def records_of(logs_dir: str | Path, day: _dt.date, test_run_id: str) -> Iterator[LogRecord]:
    """Every record of one run on ``day`` (allocated, errors, released, cleanup)."""
    return (record for record in iter_records(logs_dir, day, day) if record.detail(Detail.TEST_RUN) == test_run_id)


def artifacts(logs_dir: str | Path, day: str, folder: str) -> dict[str, Path]:
    """The run's artifact files that exist, by name (a fixed list: nothing else is served); none
    for a folder name that no writer makes (``safe_name`` of a test run id)."""
    if folder != safe_name(folder):
        return {}
    root = Path(logs_dir) / "artifacts" / day / folder
    return {name: root / name for name in ARTIFACT_FILES if (root / name).is_file() and not (root / name).is_symlink()}
