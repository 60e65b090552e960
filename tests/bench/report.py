"""The benchmark table: printed, and written to bench-results.json (git-ignored)."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    section: str
    figure: str
    value: float
    baseline: float | None  # measured in the same run
    unit: str
    target: str
    higher_is_better: bool = False  # rates; times and sizes are better lower

    @property
    def ratio(self) -> float | None:
        """How many times better than the baseline (baseline / value for times, value / baseline for rates)."""
        if self.baseline is None or self.value == 0 or self.baseline == 0:
            return None
        return self.value / self.baseline if self.higher_is_better else self.baseline / self.value


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


def emit(rows: list[Row], path: Path) -> None:
    header = f"{'section':<10} {'figure':<58} {'value':>11} {'baseline':>11} {'ratio':>9}  {'target'}"
    print(header)
    print("-" * len(header))
    for row in rows:
        baseline = "-" if row.baseline is None else f"{row.baseline:.3f}"
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x" if row.ratio < 10 else f"{row.ratio:.0f}x"
        print(f"{row.section:<10} {row.figure + ' (' + row.unit + ')':<58} {row.value:>11.3f} {baseline:>11} {ratio:>9}  {row.target}")
    path.write_text(json.dumps([{**asdict(r), "ratio": r.ratio} for r in rows], indent=2) + "\n")
    print(f"\nwritten to {path}")
