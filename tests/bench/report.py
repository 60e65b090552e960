"""The benchmark table: printed, written to bench-results.json (git-ignored), misses listed.

Every row carries its ``value``, the ``baseline`` measured in the same run (the fair alternative
a user would pick), ``ratio`` = value / baseline (one direction everywhere: below 1 the value is
smaller), a ``target`` that is a machine-checkable expression over ``value``, ``baseline`` and
``ratio`` (clauses like ``ratio <= 0.3`` joined by ``and``; "" for a row that only informs), and
``met``: True, False, or None for a row without a target.
"""

from __future__ import annotations

import json
import operator
import re
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

_CLAUSE = re.compile(r"\s*(value|baseline|ratio)\s*(<=|>=|==|<|>)\s*(-?[0-9][0-9_]*(?:\.[0-9]+)?)\s*")
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "<": operator.lt,
    ">": operator.gt,
}


def check_target(target: str, figures: dict[str, float | None]) -> bool | None:
    """Evaluate ``target`` (e.g. ``"ratio <= 0.3 and value <= 500"``) against ``figures``; None
    for an empty target. A clause on a missing figure (no baseline) is not met. ValueError for
    an expression that is not of this form."""
    if not target.strip():
        return None
    met = True
    for clause in target.split(" and "):
        match = _CLAUSE.fullmatch(clause)
        if match is None:
            raise ValueError(f"target {target!r}: {clause!r} is not '<value|baseline|ratio> <op> <number>'")
        name, op, number = match.groups()
        figure = figures[name]
        met = met and figure is not None and _OPERATORS[op](figure, float(number.replace("_", "")))
    return met


@dataclass(frozen=True)
class Row:
    section: str
    figure: str
    value: float
    baseline: float | None  # measured in the same run
    unit: str
    target: str  # "" = informs only

    def __post_init__(self) -> None:
        check_target(self.target, {"value": 1.0, "baseline": 1.0, "ratio": 1.0})  # a malformed target fails at once

    @property
    def ratio(self) -> float | None:
        """value / baseline, for every row."""
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        return check_target(self.target, {"value": self.value, "baseline": self.baseline, "ratio": self.ratio})


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


def _ratio_text(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.3g}x"


def emit(rows: list[Row], path: Path) -> list[Row]:
    """Print the table and the misses; write the JSON. Returns the rows whose target was missed."""
    header = f"{'section':<10} {'figure':<70} {'value':>10} {'baseline':>10} {'ratio':>8}  {'met':<5} target"
    print(header)
    print("-" * len(header))
    for row in rows:
        baseline = "-" if row.baseline is None else f"{row.baseline:.4g}"
        met = {True: "yes", False: "NO", None: "-"}[row.met]
        figure = f"{row.figure} ({row.unit})"
        print(f"{row.section:<10} {figure:<70} {row.value:>10.4g} {baseline:>10} {_ratio_text(row.ratio):>8}  {met:<5} {row.target}")
    path.write_text(json.dumps([{**asdict(r), "ratio": r.ratio, "met": r.met} for r in rows], indent=2) + "\n")
    print(f"\nwritten to {path}")
    missed = [row for row in rows if row.met is False]
    if missed:
        print(f"\n{len(missed)} target(s) missed:")
        for row in missed:
            print(f"  {row.section}: {row.figure}: value {row.value:.4g} {row.unit}, ratio {_ratio_text(row.ratio)}; target {row.target}")
    else:
        print(f"\nevery target met ({sum(row.met is True for row in rows)} rows with a target)")
    return missed
