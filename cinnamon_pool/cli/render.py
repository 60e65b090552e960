"""What the command line shows: the pool as rich renders it (``status``), the report and the
API keys as plain text lines."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from cinnamon_pool.logs.report import Report
from cinnamon_pool.model import ApiKey

STATE_STYLES = {"available": "green", "allocated": "cyan", "preparing": "blue", "draining": "yellow", "restarting": "yellow"}
STATUS_COLUMNS = (
    "CONTAINER",
    "STATE",
    "TEST RUN",
    "LEASE AGE",
    "MEMORY",
    "CPU",
    "MCP P50",
    "ERR 1H",
    "ERRORS",
    "RESTARTS",
    "UPTIME",
    "ENDPOINT",
)


def status_view(status: dict[str, Any], stats: dict[str, Any]) -> Group:
    """The pool, its containers (with each lease's age) and the wait queue, as rich renders it."""
    utilization = status["allocated"] / status["total"] if status["total"] else 0.0
    head = Text(
        f"pool {status['pool']}: {status['total']} container(s), {status['available']} available, {status['allocated']} allocated, "
        f"{status['restarting']} restarting, {status['unhealthy']} unhealthy, {status['waiting']} waiting; utilization {utilization:.0%}"
        + ("; DRAINED" if status.get("draining") else "")
    )
    wait = "-" if stats["wait_p50_s"] is None else f"{stats['wait_p50_s']:.3f}s / {stats['wait_p95_s']:.3f}s"
    hour = Text(f"last hour: {stats['jobs_per_hour']} jobs, wait p50/p95 {wait}, infra errors {stats['infra_error_share']:.1%}")
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in STATUS_COLUMNS:
        table.add_column(column, justify="left" if column in {"CONTAINER", "STATE", "TEST RUN", "ENDPOINT"} else "right")
    for c in status["containers"]:
        table.add_row(
            c["name"],
            Text(c["state"], style=STATE_STYLES.get(c["state"], "red")),
            (c["test_run_id"] or "-") + (f" (key {c['client']})" if c.get("client") else ""),
            "-" if c.get("lease_age_s") is None else duration(c["lease_age_s"]),
            "-" if c["memory_mb"] is None else f"{c['memory_mb']:.0f}MB",
            "-" if c.get("cpu_percent") is None else f"{c['cpu_percent']:.0f}%",
            "-" if c.get("mcp_p50_ms") is None else f"{c['mcp_p50_ms']:.0f}ms",
            "-" if c.get("error_rate") is None else f"{c['error_rate']:.0%}",
            str(c["error_count"]),
            str(c["restarts"]),
            "-" if c.get("uptime_s") is None else duration(c["uptime_s"]),
            c["endpoint"],
        )
    parts: list[Any] = [head, hour, table]
    if status.get("queue"):
        queue = Table(title="waiting, first in line first", title_justify="left", box=None, pad_edge=False, header_style="bold")
        for column in ("#", "TEST RUN", "WAITING", "WORKER"):
            queue.add_column(column)
        for position, waiter in enumerate(status["queue"], 1):
            queue.add_row(str(position), waiter["test_run_id"], duration(waiter["waiting_s"]), waiter["worker"] or "-")
        parts.append(queue)
    return Group(*parts)


def duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def report_lines(report: Report, logs_dir: str) -> Iterator[str]:
    """The analyzer's report as ``cinnamon-pool report`` prints it."""
    pool = report.pool
    yield f"{report.records} records from {report.since} to {report.until} in {logs_dir}"
    for advice in report.recommendations:
        yield f"{advice.severity.upper():<5} {advice.kind}: {advice.message}"
    yield (
        f"pool: utilization {pool.utilization:.1%}, wait p50 {pool.wait_p50_s} s, p95 {pool.wait_p95_s} s, "
        f"{pool.throughput_per_hour} jobs/hour"
    )
    row = "{:<15} {:>6} {:>9} {:<11} {:>8} {:>9} {:<6}"
    yield row.format("CONTAINER", "TESTS", "AVG TEST", "MEMORY", "ERRORS", "RESTARTS", "RISK")
    for name, c in report.containers.items():
        average = "-" if c.average_duration_s is None else f"{c.average_duration_s:.2f}s"
        yield row.format(name, c.tests, average, c.memory_trend, f"{c.error_rate:.1%}", c.restarts, c.risk)
    for name, client in report.clients.items():
        yield f"client {name}: {client.sessions} sessions on connect, wait p50 {client.wait_p50_s} s, p95 {client.wait_p95_s} s"
    errors = report.errors
    for entry in errors.common:
        yield f"  {entry.count:>6} x {entry.error}" + (f" (in {entry.context})" if entry.context else "")
    yield (
        f"leaking: {', '.join(errors.leaking_containers) or 'none'}; restarted often: {', '.join(errors.frequently_restarted) or 'none'}"
    )


def keys_lines(listed: list[ApiKey], open_now: dict[str, int]) -> Iterator[str]:
    """``cinnamon-pool keys list``: one line per key."""
    row = "{:<24} {:>12} {:>9} {:<20} {:<20} {}"
    yield row.format("NAME", "MAX SESSIONS", "OPEN NOW", "CREATED", "LAST USED", "UNSAFE TOOLS")
    for key in listed:
        shown = (
            key.max_sessions,
            open_now.get(key.name, 0),
            at_ms(key.created_ms),
            at_ms(key.last_used_ms),
            "yes" if key.unsafe_tools else "no",
        )
        yield row.format(key.name, *shown)


def at_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000).isoformat(sep=" ", timespec="seconds") if ms else "-"
