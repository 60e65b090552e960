"""The bench's verdicts: a target is an expression over value, baseline and ratio, checked here."""

from __future__ import annotations

import re

import pytest

from tests.bench.report import Row, check_target


def test_a_target_is_met_missed_or_malformed() -> None:
    assert check_target("ratio <= 0.3 and value <= 500", {"value": 300.0, "baseline": 1200.0, "ratio": 0.25}) is True
    assert check_target("ratio <= 0.3 and value <= 500", {"value": 600.0, "baseline": 2400.0, "ratio": 0.25}) is False
    assert check_target("value >= 100_000", {"value": 99_999.0, "baseline": None, "ratio": None}) is False
    assert check_target("ratio < 1", {"value": 1.0, "baseline": None, "ratio": None}) is False, "no baseline: not met"
    with pytest.raises(ValueError, match=re.escape("is not '<value|baseline|ratio> <op> <number>'")):
        check_target("ratio <= 0.3 or value < 1", {"value": 1.0, "baseline": 1.0, "ratio": 1.0})


def test_a_row_has_one_ratio_direction_and_says_whether_it_met_its_target() -> None:
    faster = Row("s", "job", 1.2, 4.0, "s", "ratio <= 0.3")
    assert faster.ratio == pytest.approx(0.3) and faster.met is True
    rate = Row("s", "jobs/s", 0.53, 0.41, "jobs/s", "ratio >= 1")
    assert rate.ratio == pytest.approx(0.53 / 0.41) and rate.met is True
    with pytest.raises(ValueError):
        Row("s", "typo", 1.0, 1.0, "s", "ratio =< 1")
