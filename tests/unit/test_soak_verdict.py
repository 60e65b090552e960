"""The soak's verdict fails on each thing it is meant to fail on, and names it."""

from __future__ import annotations

import copy
from typing import Any

from tests.soak import verdict
from tests.soak.verdict import failure_reason

PASSING: dict[str, Any] = {
    "jobs": {"lost": 0, "failed_unexplained": 0, "not_hit": 200, "not_hit_completed_share": 1.0},
    "double_grants": 0,
    "violations": [],
    "leaked_containers": 0,
    "convergence_s": {"over_limit": []},
    "history": {"served_by_containers": 812},
}


def changed(path: str, value: object) -> dict[str, Any]:
    results = copy.deepcopy(PASSING)
    *parents, key = path.split(".")
    target = results
    for parent in parents:
        target = target[parent]
    target[key] = value
    return results


def test_a_clean_run_passes() -> None:
    assert verdict(PASSING) == []


def test_each_failure_is_named() -> None:
    assert verdict(changed("jobs.failed_unexplained", 1)) == ["failed jobs no injected fault explains: 1"]
    assert verdict(changed("jobs.lost", 2)) == ["lost jobs: 2"]
    assert verdict(changed("jobs.retried_unexplained", 1)) == ["jobs retried with no injected fault to explain it: 1"]
    assert verdict(changed("double_grants", 1)) == ["double grants: 1"]
    assert verdict(changed("violations", ["c1: ..."])) == ["history violations: 1"]
    assert verdict(changed("leaked_containers", 1)) == ["leaked containers: 1"]
    assert verdict(changed("history.served_by_containers", 0)) == [
        "the containers recorded no use: the history checker had no ground truth"
    ]
    assert verdict(changed("convergence_s.over_limit", ["restart-redis (12.5 s)"])) == [
        "not whole within 10 s after restart-redis (12.5 s)"
    ]
    assert verdict(changed("faults_never_run", ["kill-gateway", "pause-container"])) == [
        "fault kinds that never ran (--every-fault): kill-gateway, pause-container"
    ]


def test_fewer_than_99_percent_of_the_jobs_no_fault_hit_completed_fails() -> None:
    assert verdict(changed("jobs.not_hit_completed_share", 0.99)) == []
    assert verdict(changed("jobs.not_hit_completed_share", 0.985)) == ["of the 200 jobs no fault hit, 98.50% completed (at least 99%)"]


def test_clients_on_connect_fail_the_run_when_none_completed_or_one_failed_unexplained() -> None:
    connect = {"clients": 2, "sessions_opened": 40, "sessions_completed": 38, "failed_unexplained": 0}
    assert verdict(changed("connect", connect)) == []
    assert verdict(changed("connect", connect | {"sessions_completed": 0})) == ["clients on connect: no session completed (40 opened)"]
    assert verdict(changed("connect", connect | {"failed_unexplained": 3})) == [
        "sessions on connect failed with no fault to explain them: 3"
    ]
    assert verdict(changed("connect", {"clients": 0})) == [], "a soak without clients on connect asks nothing of them"


def test_a_failure_reason_is_the_exception_not_the_box_an_exception_group_is_drawn_in() -> None:
    group = """Traceback (most recent call last):
  | ExceptionGroup: unhandled errors in a TaskGroup (1 sub-exception)
  +-+---------------- 1 ----------------
    | Traceback (most recent call last):
    |   File "browser.py", line 87, in call_tool_raw
    | mcp.shared.exceptions.MCPError: Server returned an error response for call 42
    +------------------------------------
"""
    assert failure_reason(group) == "mcp.shared.exceptions.MCPError: Server returned an error response for call ##"
    assert failure_reason("Traceback:\nValueError: bad 7\n") == "ValueError: bad #"
    assert failure_reason("") == "unknown"
