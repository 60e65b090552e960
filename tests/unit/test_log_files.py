"""Archive across a month boundary, a disk that fails, and secrets kept out of the files."""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from cinnamon_pool import decode
from cinnamon_pool.clock import ManualClock
from cinnamon_pool.logs.actions import Detail, LogAction
from cinnamon_pool.logs.events import action_record, event_record, redact
from cinnamon_pool.logs.files import archive_earlier_months, iter_records
from cinnamon_pool.logs.format import LogKind, LogRecord
from cinnamon_pool.logs.writer import DailyLogWriter


def record(at: dt.datetime, run: str) -> LogRecord:
    return LogRecord(at, "INFO", "container-001", "RELEASED", (("Test Run", run), ("Duration", "1.00s")))


def test_earlier_months_move_to_the_archive_and_still_read_back(tmp_path: Path) -> None:
    writer = DailyLogWriter(tmp_path)
    days = [dt.datetime(2025, 1, 30, 23, 59), dt.datetime(2025, 1, 31, 23, 59, 59), dt.datetime(2025, 2, 1, 0, 0, 1)]
    for i, at in enumerate(days):
        writer.write(LogKind.USAGE, record(at, f"run-{i}"))
    before = list(iter_records(tmp_path))
    moved = archive_earlier_months(tmp_path, dt.date(2025, 2, 1))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in moved) == [
        "archive/2025-01/container-usage-2025-01-30.log.gz",
        "archive/2025-01/container-usage-2025-01-31.log.gz",
    ]
    assert [p.name for p in (tmp_path / "containers").iterdir()] == ["container-usage-2025-02-01.log"]
    assert list(iter_records(tmp_path)) == before, "the analyzer reads the compressed archive too"
    assert archive_earlier_months(tmp_path, dt.date(2025, 2, 1)) == [], "a second run moves nothing"


@pytest.fixture
def warnings_said() -> Iterator[io.StringIO]:
    """What the daemon's diagnostics (loguru) said at WARNING and above, during the test."""
    said = io.StringIO()
    handler = logger.add(said, level="WARNING", format="{level} {message}")
    yield said
    logger.remove(handler)


def test_a_full_disk_drops_records_reports_once_and_recovers(tmp_path: Path, warnings_said: io.StringIO) -> None:
    err = warnings_said
    clock = ManualClock(start=dt.datetime(2025, 1, 8, 14, 30, 15))
    writer = DailyLogWriter(tmp_path, clock=clock, report_every_s=60)
    path = writer.path_for(LogKind.USAGE, record(clock.now(), "x"))
    path.parent.mkdir(parents=True)
    os.mkdir(path)  # every write fails (EISDIR), as on a full disk
    assert [writer.write(LogKind.USAGE, record(clock.now(), f"run-{i}")) for i in range(5)] == [False] * 5
    assert writer.dropped == 5 and err.getvalue().count("cannot write") == 1, err.getvalue()
    clock.advance(61)
    writer.write(LogKind.USAGE, record(clock.now(), "run-5"))
    assert err.getvalue().count("cannot write") == 2, "one message per period"
    path.rmdir()
    assert writer.write(LogKind.USAGE, record(clock.now(), "run-6"))
    assert [r.detail("Test Run") for r in iter_records(tmp_path)] == ["run-6"]


def test_a_log_replaced_by_a_symlink_is_not_written_through(tmp_path: Path) -> None:
    """Workers mount the logs directory read-write: a day's file swapped for a symlink must not
    let the supervisor append to the file it names."""
    writer = DailyLogWriter(tmp_path / "logs")
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    path = writer.path_for(LogKind.POOL, record(dt.datetime(2025, 1, 8), "a"))
    path.parent.mkdir(parents=True)
    os.symlink(victim, path)
    assert writer.write(LogKind.POOL, record(dt.datetime(2025, 1, 8), "a")) is False and writer.dropped == 1
    assert victim.read_text() == "untouched\n"


def test_a_symlink_among_last_months_logs_is_neither_archived_nor_read(tmp_path: Path) -> None:
    writer = DailyLogWriter(tmp_path)
    writer.write(LogKind.USAGE, record(dt.datetime(2025, 1, 30, 12), "real"))
    planted = tmp_path / "containers" / "container-pool-2025-01-31.log"
    os.symlink("/dev/zero", planted)  # read through, a copy without end
    moved = archive_earlier_months(tmp_path, dt.date(2025, 2, 1))
    assert [p.name for p in moved] == ["container-usage-2025-01-30.log.gz"], "the real file moved; the symlink stayed"
    assert planted.is_symlink()
    assert [r.detail("Test Run") for r in iter_records(tmp_path)] == ["real"]


def test_a_deleted_log_directory_is_made_again(tmp_path: Path) -> None:
    writer = DailyLogWriter(tmp_path / "logs")
    assert writer.write(LogKind.POOL, record(dt.datetime(2025, 1, 8), "a"))
    shutil.rmtree(tmp_path / "logs")
    assert writer.write(LogKind.POOL, record(dt.datetime(2025, 1, 8), "b"))
    assert [r.detail("Test Run") for r in iter_records(tmp_path / "logs")] == ["b"]


def test_secrets_are_redacted_before_they_reach_a_file() -> None:
    assert redact("connect redis://pool:s3cr3t@10.0.0.5:6379/0 failed") == "connect redis://pool:***@10.0.0.5:6379/0 failed"
    token = "0123456789abcdef:42:fedcba9876543210"
    shown = redact(f"token {token} refused")
    assert token not in shown and shown.startswith("token token#") and len(shown) == len("token token#12345678 refused")
    error = action_record(dt.datetime(2025, 1, 8), "pool", LogAction.ERROR_OCCURRED, [(Detail.ERROR, f"rediss://u:pw@host/0 with {token}")])
    assert "pw" not in error.detail("Error") and token not in error.detail("Error")
    fields = {"kind": "granted", "name": "container-001", "at_ms": "0", "token": token, "test_run_id": token, "wait_ms": "1500"}
    (granted,) = event_record(decode.event("1-0", fields), {}, 3)
    assert token not in granted[1].detail("Test Run") and granted[1].detail("Wait Time") == "1.500s"
