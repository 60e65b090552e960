"""The host's wall clock placed on its monotonic clock, for the history checker (checker.py).

A history holds readings of two clocks of one host: its wall clock (Redis ``TIME`` in the pool's
events and the clients' ``t``, fake-mcp's "Served at") and its monotonic clock (the clients'
``mono``, the containers' served records, the faults). The checker compares on the monotonic
one. Every client line read both, so each is a sample of how far the wall clock runs ahead.

One offset for a whole run is not enough: a machine's wall clock can be stepped while the run
goes on (a CI machine that synchronised its clock after boot moved it by 12 s in one run, and a
single offset placed every grant on one side of the step 12 s away from its uses). So a reading
is placed with the samples taken near it, inside the bounds the history recorded for it: an
event between the stream tail's read before it and the read that copied it (``after_mono``,
``before_mono``), a served moment between its call's invoke and its outcome.
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

NEAR_MS = 250.0  # samples that read the wall clock this near a reading tell its offset
FIT_MS = 50.0  # how far past its bounds a placement may fall and still count as fitting them
LEVEL_MS = 200.0  # offsets this near the nearest samples' are the same clock (a step is larger)


@dataclass(frozen=True)
class Clock:
    """Samples of (wall ms, monotonic ms), sorted by wall time: each a moment that read both. A
    sample's offset (wall minus monotonic) errs low only: its wall time was read first."""

    walls: tuple[float, ...]
    monos: tuple[float, ...]

    @classmethod
    def of(cls, lines: Iterable[dict[str, Any]]) -> Clock:
        """From the lines that read both clocks (a client line's ``t`` and ``mono``)."""
        samples = sorted((float(line["t"]), float(line["mono"])) for line in lines if line.get("t") is not None and "mono" in line)
        return cls(tuple(wall for wall, _ in samples), tuple(mono for _, mono in samples))

    def to_mono(self, wall_ms: float, after: float | None = None, before: float | None = None, *, earliest: bool = False) -> float:
        """``wall_ms`` on the monotonic clock; ``after`` and ``before`` (monotonic ms), when
        known, bound when it was read, and the result never leaves them.

        The samples that read the wall clock nearest to ``wall_ms`` and place it inside its
        bounds tell the offset: the median of the five nearest names the clock (before or after
        a step), and the highest offset of that clock within ``NEAR_MS`` errs least. A step
        forward leaves no samples between its two sides' wall times, so the nearest are on the
        reading's side; a step back repeats wall times, and the bounds tell the sides apart
        (those of a stream event are the tail's reads around it: tens of ms). ``earliest``: when
        a step back smaller than the bounds leaves both sides fitting, the earlier placement (a
        grant's: the checker then judges only what holds whichever side it was read on). Without
        samples: the wall time itself (a history with one clock only)."""
        if not self.walls:
            return _clamp(wall_ms, after, before)
        low, high = float("-inf") if after is None else after - FIT_MS, float("inf") if before is None else before + FIT_MS
        fitting = [(abs(self.walls[i] - wall_ms), self.walls[i] - self.monos[i]) for i in self._near(wall_ms, NEAR_MS)]
        fitting = sorted((distance, offset) for distance, offset in fitting if low <= wall_ms - offset <= high)
        if not fitting:  # no sample near it fits: the nearest sample's offset, within its bounds
            nearest = min(self._near(wall_ms, float("inf"), 1), key=lambda i: abs(self.walls[i] - wall_ms))
            return _clamp(wall_ms - (self.walls[nearest] - self.monos[nearest]), after, before)
        if earliest:
            return _clamp(wall_ms - max(offset for _, offset in fitting), after, before)
        clock = statistics.median(offset for _, offset in fitting[:5])
        return _clamp(wall_ms - max(offset for _, offset in fitting if abs(offset - clock) <= LEVEL_MS), after, before)

    def _near(self, wall_ms: float, within: float, at_least: int = 0) -> range:
        """Indices of the samples read within ``within`` of ``wall_ms`` (at least ``at_least``
        each side, when there are)."""
        low, high = bisect.bisect_left(self.walls, wall_ms - within), bisect.bisect_right(self.walls, wall_ms + within)
        middle = bisect.bisect_left(self.walls, wall_ms)
        return range(max(0, min(low, middle - at_least)), min(len(self.walls), max(high, middle + at_least)))


def _clamp(value: float, low: float | None, high: float | None) -> float:
    if low is not None:
        value = max(value, low)
    if high is not None:
        value = min(value, high)
    return value


STEP_MS = 1_000.0  # a change of the wall clock's offset this large is a step, not noise
STEP_SAMPLES = 9  # ... when the medians of this many samples either side of it differ so


def steps(lines: Iterable[dict[str, Any]]) -> list[tuple[float, float]]:
    """Where the wall clock was stepped during a history, from the lines that read both clocks:
    ``(monotonic ms of the first sample after it, its size in ms)``, in order. A sample read
    while its process was stopped between the two readings is one outlier, not a step: the
    medians of STEP_SAMPLES samples either side must differ by STEP_MS."""
    samples = sorted(
        (float(line["mono"]), float(line["t"]) - float(line["mono"])) for line in lines if line.get("t") is not None and "mono" in line
    )
    found: list[tuple[float, float]] = []
    index = STEP_SAMPLES
    while index <= len(samples) - STEP_SAMPLES:
        before = statistics.median(offset for _, offset in samples[index - STEP_SAMPLES : index])
        after = statistics.median(offset for _, offset in samples[index : index + STEP_SAMPLES])
        if abs(after - before) >= STEP_MS:
            first = next(
                i
                for i in range(index - STEP_SAMPLES // 2, index + STEP_SAMPLES)
                if abs(samples[i][1] - after) < abs(samples[i][1] - before)
            )
            found.append((samples[first][0], after - before))
            index = first + STEP_SAMPLES
        else:
            index += 1
    return found
