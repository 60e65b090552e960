"""The analyzer on a fixture month whose answers are known, and the report command."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from cinnamon_pool.cli import main
from cinnamon_pool.logs.analyzer import Analyzer, normalize_error
from cinnamon_pool.logs.files import iter_records
from cinnamon_pool.logs.format import LogKind, LogRecord
from cinnamon_pool.logs.report import MemoryTrend, Risk
from cinnamon_pool.logs.writer import DailyLogWriter

START = dt.datetime(2025, 1, 6, 8, 0, 0)


def write_month(root: Path) -> None:
    """10 days. container-001: 40 tests of 3 s, steady 180 MB, no errors. container-002:
    20 tests of 5 s, memory climbing 600 MB a day (25 MB/h: a leak), 5 infra errors, 12 restarts."""
    writer = DailyLogWriter(root)
    for day in range(10):
        for n in range(4):
            at = START + dt.timedelta(days=day, minutes=10 * n)
            writer.write(
                LogKind.USAGE,
                LogRecord(
                    at,
                    "INFO",
                    "container-001",
                    "ALLOCATED",
                    (("Test Run", f"a{day}-{n}"), ("Wait Time", "0.000s"), ("Memory Usage", "180MB")),
                ),
            )
            writer.write(
                LogKind.USAGE,
                LogRecord(
                    at + dt.timedelta(seconds=3),
                    "INFO",
                    "container-001",
                    "RELEASED",
                    (("Test Run", f"a{day}-{n}"), ("Outcome", "ok"), ("Duration", "3.00s"), ("Memory Usage", "180MB")),
                ),
            )
        for n in range(2):
            at = START + dt.timedelta(days=day, hours=2, minutes=30 * n)
            outcome = "infra_error" if (day * 2 + n) % 4 == 0 else "ok"
            memory = f"{100 + 600 * day + n}MB"
            writer.write(
                LogKind.USAGE,
                LogRecord(
                    at,
                    "INFO",
                    "container-002",
                    "ALLOCATED",
                    (("Test Run", f"b{day}-{n}"), ("Wait Time", "2.500s"), ("Memory Usage", memory)),
                ),
            )
            writer.write(
                LogKind.USAGE,
                LogRecord(
                    at + dt.timedelta(seconds=5),
                    "INFO",
                    "container-002",
                    "RELEASED",
                    (("Test Run", f"b{day}-{n}"), ("Outcome", outcome), ("Duration", "5.00s"), ("Memory Usage", memory)),
                ),
            )
            if outcome == "infra_error":
                writer.write(
                    LogKind.ERRORS,
                    LogRecord(
                        at + dt.timedelta(seconds=5),
                        "ERROR",
                        "container-002",
                        "ERROR_OCCURRED",
                        (
                            ("Test Run", f"b{day}-{n}"),
                            ("Error", f"TimeoutError: timeout after {day + 3}.5s on container {day:012x}"),
                            ("Context", "page_navigation"),
                            ("Consecutive Errors", "1/3"),
                            ("Error Type", "infra_error"),
                        ),
                    ),
                )
        for n in range(1 if day < 8 else 2):
            writer.write(
                LogKind.POOL,
                LogRecord(
                    START + dt.timedelta(days=day, hours=3, minutes=n),
                    "WARN",
                    "container-002",
                    "CONTAINER_RESTART",
                    (
                        ("Reason", "memory_limit_exceeded"),
                        ("Memory Usage", f"{101 + 600 * day}MB"),
                        ("Error Count", "0"),
                        ("Uptime", "45min"),
                    ),
                ),
            )


@pytest.fixture
def report(tmp_path: Path) -> dict[str, object]:
    """The month's ``report --json`` document."""
    write_month(tmp_path)
    return Analyzer().feed(iter_records(tmp_path)).report().to_json()


def test_per_container_figures(report: dict[str, Any]) -> None:
    steady, leaky = report["containers"]["container-001"], report["containers"]["container-002"]
    assert (steady["tests"], steady["average_duration_s"], steady["memory_trend"], steady["error_rate"], steady["restarts"]) == (
        40,
        3.0,
        "stable",
        0.0,
        0,
    )
    assert steady["risk"] == "low"
    assert (leaky["tests"], leaky["average_duration_s"], leaky["memory_trend"]) == (20, 5.0, "increasing")
    assert leaky["memory_slope_mb_per_hour"] == pytest.approx(600 / 24, rel=0.05)
    assert leaky["error_rate"] == 0.25 and leaky["restarts"] == 12
    assert leaky["restarts_per_day"] == pytest.approx(12 / (report_span_days(report)), rel=0.01)
    assert leaky["risk"] == "high", "25 % infra errors is above the 20 % line"


def report_span_days(report: dict[str, Any]) -> float:
    first, last = (dt.datetime.fromisoformat(report[k]) for k in ("from", "until"))
    return (last - first).total_seconds() / 86400


def test_error_patterns_fold_numbers_and_ids(report: dict[str, Any]) -> None:
    assert report["errors"]["common"] == [
        {"error": "TimeoutError: timeout after Ns on container N", "count": 5, "context": "page_navigation"}
    ]
    assert report["errors"]["by_type"] == {"infra_error": 5} and report["errors"]["by_context"] == {"page_navigation": 5}
    assert report["errors"]["leaking_containers"] == ["container-002"]
    assert report["errors"]["frequently_restarted"] == []
    assert normalize_error("took 5.3s on 3f2a9c1d7e8b") == "took Ns on N"


def test_pool_figures(report: dict[str, Any]) -> None:
    pool = report["pool"]
    busy = 40 * 3 + 20 * 5
    assert pool["utilization"] == pytest.approx(busy / (2 * report_span_days(report) * 86400), abs=1e-4)
    assert pool["wait_p50_s"] == 0.001 and pool["wait_p95_s"] == 5, "bucket upper bounds: 40 waits of 0 s, 20 of 2.5 s"
    assert sum(pool["jobs_per_hour"].values()) == 60
    assert pool["throughput_per_hour"] == pytest.approx(60 / (report_span_days(report) * 24), abs=0.01)


def test_since_until_and_one_container(tmp_path: Path) -> None:
    write_month(tmp_path)
    day3 = Analyzer(since=dt.datetime(2025, 1, 8), until=dt.datetime(2025, 1, 9), container="container-001")
    assert day3.feed(iter_records(tmp_path, dt.date(2025, 1, 8), dt.date(2025, 1, 8))).report().containers["container-001"].tests == 4


def test_report_command_json_and_html(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    write_month(tmp_path / "logs")
    monkeypatch.setenv("CINNAMON_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("CINNAMON_CONFIG", raising=False)
    html = tmp_path / "report.html"
    assert main(["report", "--json", "--html", str(html)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["containers"]["container-002"]["risk"] == "high"
    page = html.read_text()
    labels = ["lease timeline", "jobs and errors per day", "job durations", "waits for a container", "memory per container"]
    assert [f'aria-label="{label}"' in page for label in labels] == [True] * 5 and page.count("<svg") == 5
    assert "<script" not in page and "http" not in page.split("<body>")[1], "one self-contained file"
    assert main(["report", "--since", "January"]) == 2, "bad input: exit 2, as argparse does"
    assert "--since='January'" in capsys.readouterr().err


def test_the_report_is_typed_and_its_json_says_the_same(tmp_path: Path) -> None:
    """The CLI, the HTML report and the dashboard read typed fields; ``report --json`` is their
    plain form (modes as strings, tuples as lists)."""
    write_month(tmp_path)
    typed = Analyzer().feed(iter_records(tmp_path)).report()
    document = typed.to_json()
    figures = typed.containers["container-001"]
    assert isinstance(figures.risk, Risk) and isinstance(figures.memory_trend, MemoryTrend)
    assert document["containers"]["container-001"]["risk"] == figures.risk.value
    assert document["pool"]["jobs"] == typed.pool.jobs and document["from"] == typed.since
    assert document["recommendations"] == [
        {"kind": a.kind.value, "severity": a.severity.value, "message": a.message} for a in typed.recommendations
    ]
    assert json.loads(json.dumps(document)) == document, "plain JSON values only"
    with pytest.raises(dataclasses.FrozenInstanceError):
        typed.pool.jobs = 0  # type: ignore[misc]
