"""The seed's example records, rendered by the code that writes them in production from the
seed's values, compared byte for byte with ``golden/seed-records.log``. The project's extra
fields come after the seed's: each record's first fields are the seed's, in the seed's order."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from cinnamon_pool.events import EventKind, LeaseEvent
from cinnamon_pool.logs.actions import LogAction
from cinnamon_pool.logs.events import action_record, event_record, restart_details
from cinnamon_pool.logs.format import LogRecord, parse, render

GOLDEN = Path(__file__).parent / "golden" / "seed-records.log"


def at_ms(text: str) -> int:
    return int(_dt.datetime.fromisoformat(text).timestamp() * 1000)


def released(name: str, when: str, **values: str | int | float) -> LeaseEvent:
    fields = {"token": "0123456789abcdef:1:0123456789abcdef", "duration_ms": 4000, "threshold": 3, **values}
    return LeaseEvent("1-0", EventKind.RELEASED, name, at_ms(when), fields)


def produced() -> list[LogRecord]:
    """The four records as the pool writes them: lease events through ``event_record``, the
    restart through the actuator's ``restart_details``."""
    granted = LeaseEvent(
        "1-0",
        EventKind.GRANTED,
        "container-001",
        at_ms("2025-01-08 14:30:15"),
        {"test_run_id": "test-run-123", "available": 1, "job_id": "4f2c", "worker": "worker-7", "wait_ms": 1250},
    )
    allocated = event_record(granted, {"container-001": 180.0}, 3)
    cleanup = event_record(
        released("container-001", "2025-01-08 14:32:45", test_run_id="test-run-123", outcome="ok", cleanup_ms=1200.0, error_count=0),
        {"container-001": 190.0},
        3,
        memory_after=165.0,
    )
    failed = event_record(
        released(
            "container-002",
            "2025-01-08 14:35:20",
            test_run_id="test-run-124",
            outcome="infra_error",
            error="Navigation timeout exceeded",
            context="page_navigation",
            error_count=2,
        ),
        {},
        3,
    )
    restart = action_record(
        _dt.datetime.fromisoformat("2025-01-08 14:40:10"),
        "container-002",
        LogAction.CONTAINER_RESTART,
        restart_details("error_threshold", 420.0, 3, 45 * 60 + 12),
        level="WARN",
    )
    records = [record for _kind, record in allocated + cleanup + failed]
    by_action = {record.action: record for record in [*records, restart]}
    return [by_action[action] for action in ("ALLOCATED", "CLEANUP_COMPLETED", "ERROR_OCCURRED", "CONTAINER_RESTART")]


def test_the_seeds_example_records_are_written_byte_for_byte_with_our_fields_after_the_seeds() -> None:
    """Whole records: the seed's fields first, byte for byte, then only the project's own."""
    golden = GOLDEN.read_text(encoding="utf-8")
    seeds = list(parse(golden.splitlines(keepends=True)))
    ours = produced()
    assert [record.action for record in seeds] == [record.action for record in ours]
    seed_fields = {key for seed in seeds for key, _ in seed.details}
    for record, seed in zip(ours, seeds, strict=True):
        extra = record.details[len(seed.details) :]
        assert not [key for key, _ in extra if key in seed_fields], f"{record.action}: a seed field after the project's: {extra}"
    rendered = "".join(
        render(record._replace(details=record.details[: len(seed.details)])) for record, seed in zip(ours, seeds, strict=True)
    )
    assert rendered == golden
    allocated = ours[0]
    assert render(allocated) == (
        "[2025-01-08 14:30:15] INFO  container-001 | ALLOCATED\n"
        "  └─ Test Run: test-run-123\n  └─ Memory Usage: 180MB\n  └─ Available Containers: 1\n"
        "  └─ Job: 4f2c\n  └─ Worker: worker-7\n  └─ Wait Time: 1.250s\n\n"
    ), "the whole ALLOCATED record of an rq job"


def test_records_are_separated_by_a_blank_line_and_still_parse_back() -> None:
    text = "".join(render(record) for record in produced())
    assert "\n\n[2025-01-08 14:32:45] INFO  container-001 | CLEANUP_COMPLETED\n" in text
    assert list(parse(text.splitlines(keepends=True))) == produced()


def test_a_failed_jobs_error_keeps_one_line_and_its_extra_fields_follow() -> None:
    event = released(
        "container-003",
        "2025-01-08 15:00:00",
        test_run_id="run-9",
        outcome="test_failed",
        error="AssertionError: a\nb",
        context="browser_click",
    )
    [(_kind, record)] = [item for item in event_record(event, {}, 3) if item[1].action == "ERROR_OCCURRED"]
    assert [key for key, _ in record.details] == ["Test Run", "Error", "Context", "Consecutive Errors", "Error Type"]
    assert record.level == "WARN" and record.detail("Error Type") == "test_failed"
    assert "AssertionError: a\\nb" in render(record), "a newline in a message cannot break the record"


def test_a_released_record_carries_the_jobs_figures_after_the_usual_fields() -> None:
    event = released(
        "container-001",
        "2025-01-08 15:00:00",
        test_run_id="run-4",
        outcome="ok",
        error_count=0,
        tool_calls=7,
        tool_p50_ms=120.4,
        tool_max_ms=1400.0,
        console_errors=2,
    )
    [(_kind, record)] = [item for item in event_record(event, {"container-001": 190.0}, 3, peak_mb=242.4) if item[1].action == "RELEASED"]
    assert record.details[5:] == (
        ("Tool Calls", "7"),
        ("Tool Latency p50", "0.120s"),
        ("Tool Latency Max", "1.400s"),
        ("Peak Memory", "242MB"),
        ("Console Errors", "2"),
    )
