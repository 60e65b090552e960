"""The soak's verdict fails on each thing it is meant to fail on, and names it."""

from __future__ import annotations

import copy
from typing import Any

from tests.soak import verdict

PASSING: dict[str, Any] = {
    "jobs": {"lost": 0, "failed_unexplained": 0, "not_hit": 200, "not_hit_completed_share": 1.0},
    "double_grants": 0,
    "violations": [],
    "leaked_containers": 0,
    "convergence_s": {"over_limit": []},
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
    assert verdict(changed("double_grants", 1)) == ["double grants: 1"]
    assert verdict(changed("violations", ["c1: ..."])) == ["history violations: 1"]
    assert verdict(changed("leaked_containers", 1)) == ["leaked containers: 1"]
    assert verdict(changed("convergence_s.over_limit", ["restart-redis (12.5 s)"])) == [
        "not whole within 10 s after restart-redis (12.5 s)"
    ]


def test_fewer_than_99_percent_of_the_jobs_no_fault_hit_completed_fails() -> None:
    assert verdict(changed("jobs.not_hit_completed_share", 0.99)) == []
    assert verdict(changed("jobs.not_hit_completed_share", 0.985)) == ["of the 200 jobs no fault hit, 98.50% completed (at least 99%)"]
