"""The analyzer's judgement: a sawtooth leak, restarts and replacements with their reasons, risk
that does not call one restart high, time buckets that fit the window, and recommendations
(pool size, memory, repeated errors). Records are written by the production writer and read
back from the log folder, as `cinnamon-pool report` reads them."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from tests.report_log import Log

START = dt.datetime(2025, 3, 3, 9, 0, 0)


def test_a_sawtooth_leak_is_seen_within_each_life_though_the_overall_slope_is_flat(tmp_path: Path) -> None:
    """Memory climbs 150 -> 390 MB over 2 hours, a restart brings it back, again and again."""
    log = Log(tmp_path)
    for life in range(5):
        begin = START + dt.timedelta(hours=2 * life)
        for step in range(12):
            log.job("container-001", begin + dt.timedelta(minutes=10 * step), 3, 150 + 20 * step)
            log.job("container-002", begin + dt.timedelta(minutes=10 * step, seconds=30), 3, 180)
        log.restart("container-001", begin + dt.timedelta(minutes=119), "memory_limit_exceeded", 390)
    report = log.report()
    leaky, steady = report["containers"]["container-001"], report["containers"]["container-002"]
    assert abs(leaky["memory_slope_mb_per_hour"]) < 20, "overall, the sawtooth looks flat"
    assert leaky["memory_slope_within_lives_mb_per_hour"] == pytest.approx(120, rel=0.05), "20 MB per 10 minutes within a life"
    assert leaky["memory_trend"] == "increasing" and report["errors"]["leaking_containers"] == ["container-001"]
    assert steady["memory_trend"] == "stable" and steady["risk"] == "low"
    [memory] = [r for r in report["recommendations"] if r["kind"] == "memory"]
    assert memory["message"].startswith("container-001: memory grows 120 MB/h and it was restarted 5 times for memory: investigate a leak")


def test_restarts_count_every_replacement_with_its_reason_and_one_restart_is_not_high_risk(tmp_path: Path) -> None:
    """A 90 s soak: one restart must not read as 24 a day of high risk."""
    log = Log(tmp_path)
    for i in range(30):
        log.job("container-001", START + dt.timedelta(seconds=3 * i), 2.5, 180)
        log.job("container-002", START + dt.timedelta(seconds=3 * i + 1), 2.5, 180)
    log.restart("container-001", START + dt.timedelta(seconds=40), "error_threshold_exceeded", 200)
    log.replaced("container-002", START + dt.timedelta(seconds=50), "container exited (exit 137, OOM-killed)")
    log.replaced("container-002", START + dt.timedelta(seconds=70), "unhealthy")
    report = log.report()
    one, two = report["containers"]["container-001"], report["containers"]["container-002"]
    assert (one["restarts"], one["restarts_by_reason"], one["risk"]) == (1, {"error_threshold_exceeded": 1}, "low")
    assert (two["replacements"], two["replacements_by_reason"]) == (2, {"container exited": 1, "unhealthy": 1})
    assert two["risk"] == "medium" and report["errors"]["frequently_restarted"] == ["container-002"], "2 in 90 s is often"
    [restarts] = [r for r in report["recommendations"] if r["kind"] == "restarts"]
    assert "container-002: 2 restarts and replacements" in restarts["message"] and "unhealthy 1" in restarts["message"]


def test_the_risk_of_errors_needs_enough_jobs_to_judge(tmp_path: Path) -> None:
    log = Log(tmp_path)
    log.job("container-001", START, 2, 180, outcome="infra_error")
    log.job("container-001", START + dt.timedelta(seconds=5), 2, 180)
    for i in range(20):
        log.job("container-002", START + dt.timedelta(seconds=10 * i), 2, 180, outcome="infra_error" if i % 4 == 0 else "ok")
    containers = log.report()["containers"]
    assert (containers["container-001"]["error_rate"], containers["container-001"]["risk"]) == (0.5, "low"), "1 of 2 jobs says little"
    assert (containers["container-002"]["error_rate"], containers["container-002"]["risk"]) == (0.25, "high")


def test_time_buckets_fit_the_window(tmp_path: Path) -> None:
    soak = Log(tmp_path / "soak")
    for i in range(40):
        soak.job("container-001", START + dt.timedelta(seconds=3 * i), 2, 180)  # 2 minutes
    timeline = soak.report()["timeline"]
    assert timeline["bucket"] == "minute" and timeline["labels"] == ["2025-03-03 09:00", "2025-03-03 09:01"]
    assert timeline["jobs"] == [20, 20]
    day = Log(tmp_path / "day")
    for hour in range(0, 20, 4):
        day.job("container-001", START.replace(hour=0) + dt.timedelta(hours=hour), 2, 180)
    timeline = day.report()["timeline"]
    assert timeline["bucket"] == "hour" and len(timeline["labels"]) == 17, "hours 00 to 16, the empty ones too"
    assert timeline["labels"][0] == "2025-03-03 00:00" and timeline["jobs"][:5] == [1, 0, 0, 0, 1]


def test_the_pool_is_called_too_small_when_jobs_wait_and_too_large_when_it_idles(tmp_path: Path) -> None:
    busy = Log(tmp_path / "busy")
    for i in range(60):
        for name in ("container-001", "container-002"):
            busy.job(name, START + dt.timedelta(seconds=10 * i), 9.8, 180, wait_s=4.0 if i % 3 else 0.0)
    [size] = [r for r in busy.report()["recommendations"] if r["kind"] == "size"]
    assert size["severity"] == "warn" and size["message"].startswith("The pool is too small: 2% of it was free on average")
    assert "67% of the jobs waited over 1 s" in size["message"] and "Raise pool.max_size" in size["message"]

    idle = Log(tmp_path / "idle")
    for i in range(60):
        for name in ("container-001", "container-002", "container-003", "container-004"):
            idle.job(name, START + dt.timedelta(seconds=10 * i), 1.0, 180)
    [size] = [r for r in idle.report()["recommendations"] if r["kind"] == "size"]
    assert size["severity"] == "info" and re.match(r"The pool is larger than its work: 9\d% of it was free", size["message"])


def test_a_repeated_error_is_advised_with_the_context_it_failed_in_and_grouped_by_pattern(tmp_path: Path) -> None:
    log = Log(tmp_path)
    for i in range(4):
        log.job("container-001", START + dt.timedelta(seconds=10 * i), 2, 180, outcome="infra_error")
        log.error(
            "container-001", START + dt.timedelta(seconds=10 * i + 2), f"TimeoutError: navigation took {30 + i}.0s", "page_navigation"
        )
    log.error("container-001", START + dt.timedelta(seconds=60), "ToolError: browser_click: no element e7", "browser_click")
    report = log.report()
    assert report["errors"]["by_context"] == {"page_navigation": 4, "browser_click": 1}
    assert report["errors"]["common"][0] == {"error": "TimeoutError: navigation took Ns", "count": 4, "context": "page_navigation"}
    [errors] = [r for r in report["recommendations"] if r["kind"] == "errors"]
    assert errors["message"].startswith(
        "4 times in page_navigation: TimeoutError: navigation took Ns. A page or the image fails repeatedly"
    )


def test_memory_restarts_without_a_trend_advise_raising_the_limit(tmp_path: Path) -> None:
    log = Log(tmp_path)
    for life in range(3):
        begin = START + dt.timedelta(hours=life)
        for step in range(6):
            log.job("container-001", begin + dt.timedelta(minutes=10 * step), 3, 395 + (step % 2))
        log.restart("container-001", begin + dt.timedelta(minutes=59), "memory_limit_exceeded", 405)
    report = log.report()
    [memory] = [r for r in report["recommendations"] if r["kind"] == "memory"]
    assert "restarted 3 times for memory (peak 405.0 MB) with no growing trend" in memory["message"]
    assert "raise rules.max_memory_mb" in memory["message"] and report["containers"]["container-001"]["risk"] == "medium"


def test_sessions_on_connect_are_counted_per_api_key_with_their_waits(tmp_path: Path) -> None:
    log = Log(tmp_path)
    for i in range(4):
        log.job("container-001", START + dt.timedelta(seconds=10 * i), 2, 180, wait_s=0.04, client="ci-bot")
    log.job("container-002", START, 2, 180, wait_s=3, client="agent")
    log.job("container-002", START + dt.timedelta(seconds=20), 2, 180, wait_s=3)  # an rq job: no client
    report = log.report()
    assert report["clients"] == {
        "agent": {"sessions": 1, "wait_p50_s": 5.0, "wait_p95_s": 5.0},
        "ci-bot": {"sessions": 4, "wait_p50_s": 0.05, "wait_p95_s": 0.05},
    }, "waits as the pool's bucket upper bounds"
    assert report["pool"]["jobs"] == 6


def test_every_key_of_report_json_is_documented(tmp_path: Path) -> None:
    from tests.conftest import ROOT
    from tests.report_log import an_afternoon

    report = an_afternoon(tmp_path).report()
    documented = set(re.findall(r"`([a-z0-9_.*]+)`", (ROOT / "docs" / "report.md").read_text()))
    documented |= {key.split(".")[0] for key in documented}  # `pool.jobs` documents the section `pool` too
    keys = {key for key in report}
    keys |= {f"containers.*.{key}" for figures in report["containers"].values() for key in figures}
    keys |= {f"{section}.{key}" for section in ("errors", "pool", "histograms") for key in report[section]}
    assert sorted(keys - documented) == [], "docs/report.md documents every key"
    assert json.loads(json.dumps(report, allow_nan=False)) == json.loads(json.dumps(report)), "plain JSON: no Infinity or NaN"
