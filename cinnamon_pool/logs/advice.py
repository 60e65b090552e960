"""The report's recommendations: what an operator should change, each with the figures behind
it. Pure: the report's figures in, advice out."""

from __future__ import annotations

from collections.abc import Mapping

from cinnamon_pool.logs.report import Advice, AdviceKind, ContainerFigures, ErrorFigures, PoolFigures, Severity

FREE_SHARE = (0.10, 0.20)  # the rule of thumb: keep 10-20 % of the pool free
REPEATED_ERROR = 3  # an error pattern seen this often is worth a recommendation
SLOW_WAIT_S = 1.0  # a job that waited longer than this for a container waited for the pool's size


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def recommend(pool: PoolFigures, containers: Mapping[str, ContainerFigures], errors: ErrorFigures) -> list[Advice]:
    """What an operator should change, each with the figures behind it."""
    advice: list[Advice] = []
    free_share = 1 - pool.utilization
    low, high = FREE_SHARE
    if pool.jobs and (free_share < low or pool.waited_over_1s_share > 0.05):
        advice.append(
            Advice(
                AdviceKind.SIZE,
                Severity.WARN,
                f"The pool is too small: {free_share:.0%} of it was free on average (keep {low:.0%}-{high:.0%}), "
                f"{pool.waited_over_1s_share:.0%} of the jobs waited over {SLOW_WAIT_S:g} s for a container "
                f"(wait p95 {pool.wait_p95_s} s). Raise pool.max_size, or add a Docker host.",
            )
        )
    elif pool.jobs and pool.containers > 1 and free_share > 0.5 and pool.waited_over_1s_share == 0:
        advice.append(
            Advice(
                AdviceKind.SIZE,
                Severity.INFO,
                f"The pool is larger than its work: {free_share:.0%} of it was free on average and no job waited "
                f"(keep {low:.0%}-{high:.0%} free). Lower pool.min_size, or let idle_shrink_s shrink it.",
            )
        )
    for name, figures in containers.items():
        memory_restarts = figures.restarts_by_reason.get("memory_limit_exceeded", 0)
        slope = max(s for s in (figures.memory_slope_mb_per_hour, figures.memory_slope_within_lives_mb_per_hour, 0.0) if s is not None)
        if name in errors.leaking_containers:
            advice.append(
                Advice(
                    AdviceKind.MEMORY,
                    Severity.WARN,
                    f"{name}: memory grows {slope:.0f} MB/h"
                    + (f" and it was restarted {_times(memory_restarts)} for memory" if memory_restarts else "")
                    + ": investigate a leak (the pages its jobs open, or the image).",
                )
            )
        elif memory_restarts:
            advice.append(
                Advice(
                    AdviceKind.MEMORY,
                    Severity.WARN,
                    f"{name}: restarted {_times(memory_restarts)} for memory (peak {figures.peak_memory_mb} MB) "
                    "with no growing trend: its jobs need more; raise rules.max_memory_mb with container.memory.",
                )
            )
    for entry in errors.common:
        if entry.count >= REPEATED_ERROR:
            where = f" in {entry.context}" if entry.context else ""
            advice.append(
                Advice(
                    AdviceKind.ERRORS,
                    Severity.WARN,
                    f"{_times(entry.count)}{where}: {entry.error}. A page or the image fails repeatedly: "
                    "open a failed job's artifacts (snapshot, screenshot, traceback).",
                )
            )
    for name in errors.frequently_restarted:
        figures = containers[name]
        reasons = ", ".join(f"{k} {v}" for k, v in {**figures.restarts_by_reason, **figures.replacements_by_reason}.items())
        advice.append(
            Advice(
                AdviceKind.RESTARTS,
                Severity.WARN,
                f"{name}: {figures.restarts + figures.replacements} restarts and replacements ({figures.restarts_per_day}/day: {reasons}).",
            )
        )
    return advice
