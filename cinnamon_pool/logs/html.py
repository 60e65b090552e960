"""The analyzer's report as one self-contained HTML file: no scripts, no external files, charts
as inline SVG.

Top to bottom: the recommendations; the pool's figures; the containers; a lease timeline per
container (who held it when, failures marked, restarts as red lines); jobs and errors over time
in buckets that fit the window (minutes for a soak, hours for a day, days for a month); the
histograms of job durations and of waits; memory per container with its restarts marked; the
errors by pattern and by context.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cinnamon_pool.logs.report import Report

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#d62728")
OUTCOME_COLORS = {"ok": "#2ca02c", "test_failed": "#ff7f0e", "infra_error": "#d62728"}
RESTART_COLOR = "#d62728"
WIDTH, HEIGHT, PAD, LEFT = 900, 240, 30, 110
ROW = 22  # a container's row in the lease timeline


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _time_label(unix: float, span_s: float) -> str:
    moment = _dt.datetime.fromtimestamp(unix)
    return moment.strftime("%H:%M:%S" if span_s < 3600 else "%H:%M" if span_s < 86400 else "%m-%d %H:%M")


class _Axis:
    """Maps a time range onto the chart's width."""

    def __init__(self, start: float, end: float) -> None:
        self.start, self.span = start, max(end - start, 1e-9)

    def x(self, unix: float) -> float:
        return LEFT + (unix - self.start) / self.span * (WIDTH - LEFT - PAD)

    def ticks(self, y: float, count: int = 5) -> str:
        labels = []
        for i in range(count + 1):
            unix = self.start + self.span * i / count
            anchor = "start" if i == 0 else "end" if i == count else "middle"
            labels.append(
                f'<text x="{self.x(unix):.1f}" y="{y:.1f}" font-size="11" text-anchor="{anchor}">{_e(_time_label(unix, self.span))}</text>'
            )
        return "".join(labels)


def _svg(label: str, height: float, body: str) -> str:
    return f'<svg role="img" aria-label="{_e(label)}" width="{WIDTH}" height="{height:.0f}" viewBox="0 0 {WIDTH} {height:.0f}">{body}</svg>'


def _time_range(points: Iterable[float]) -> tuple[float, float] | None:
    values = list(points)
    return (min(values), max(values)) if values else None


def lease_timeline(leases: Mapping[str, Sequence[Mapping[str, Any]]], marks: Mapping[str, Sequence[Sequence[Any]]]) -> str:
    """One row per container: a bar per lease, colored by outcome; restarts as red lines."""
    times = [t for rows in leases.values() for lease in rows for t in (lease["start"], lease["end"])]
    times += [float(mark[0]) for rows in marks.values() for mark in rows]
    bounds = _time_range(times)
    if bounds is None:
        return "<p>No leases in this range.</p>"
    axis, names = _Axis(*bounds), sorted(set(leases) | set(marks))
    height = PAD + ROW * len(names) + 30
    body = []
    for row, name in enumerate(names):
        y = PAD + row * ROW
        body.append(f'<text x="4" y="{y + 14}" font-size="12">{_e(name)}</text>')
        body.append(f'<line x1="{LEFT}" y1="{y + ROW - 2}" x2="{WIDTH - PAD}" y2="{y + ROW - 2}" stroke="#eee"/>')
        for lease in leases.get(name, ()):
            x0, x1 = axis.x(lease["start"]), axis.x(lease["end"])
            color = OUTCOME_COLORS.get(lease["outcome"], "#7f7f7f")
            title = f"{lease['test_run']}: {lease['outcome']}, {lease['end'] - lease['start']:.1f} s"
            body.append(
                f'<rect class="lease" x="{x0:.1f}" y="{y + 3}" width="{max(x1 - x0, 1.0):.1f}" height="{ROW - 8}" fill="{color}"><title>{_e(title)}</title></rect>'
            )
        for at, reason in marks.get(name, ()):
            x = axis.x(float(at))
            body.append(
                f'<line class="restart" x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + ROW}" stroke="{RESTART_COLOR}" stroke-width="2"><title>{_e(reason)}</title></line>'
            )
    body.append(axis.ticks(height - 8))
    legend = "".join(
        f'<rect x="{LEFT + 120 * i}" y="6" width="10" height="10" fill="{color}"/><text x="{LEFT + 120 * i + 14}" y="15" font-size="11">{_e(outcome)}</text>'
        for i, (outcome, color) in enumerate([*OUTCOME_COLORS.items(), ("restart", RESTART_COLOR)])
    )
    return _svg("lease timeline", height, legend + "".join(body))


def memory_chart(series: Mapping[str, Sequence[Sequence[float]]], marks: Mapping[str, Sequence[Sequence[Any]]]) -> str:
    """Memory per container over time; its restarts as dashed lines in its color."""
    if not series:
        return "<p>No memory readings in this range.</p>"
    bounds = _time_range(float(x) for points in series.values() for x, _ in points)
    assert bounds is not None
    axis = _Axis(*bounds)
    y_max = max(float(y) for points in series.values() for _, y in points) * 1.1 or 1.0

    def y(value: float) -> float:
        return HEIGHT - PAD - value / y_max * (HEIGHT - 2 * PAD)

    body = [
        f'<line x1="{LEFT}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>',
        f'<text x="4" y="{PAD}" font-size="11">{y_max:.0f} MB</text><text x="4" y="{HEIGHT - PAD}" font-size="11">0</text>',
    ]
    for i, (name, points) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        coords = " ".join(f"{axis.x(float(x)):.1f},{y(float(v)):.1f}" for x, v in points)
        body.append(
            f'<polyline class="memory" fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"><title>{_e(name)}</title></polyline>'
        )
        for at, reason in marks.get(name, ()):
            if bounds[0] <= float(at) <= bounds[1]:
                x = axis.x(float(at))
                body.append(
                    f'<line class="restart" x1="{x:.1f}" y1="{PAD}" x2="{x:.1f}" y2="{HEIGHT - PAD}" stroke="{color}" stroke-dasharray="4 3"><title>{_e(name)}: {_e(reason)}</title></line>'
                )
        body.append(f'<text x="{LEFT + 10 + (i % 6) * 130}" y="{14 + (i // 6) * 14}" font-size="11" fill="{color}">{_e(name)}</text>')
    body.append(axis.ticks(HEIGHT - 8))
    return _svg("memory per container", HEIGHT, "".join(body))


def bars(label: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[int], str]]) -> str:
    """Grouped bars over ``labels`` (time buckets or histogram bounds)."""
    if not labels:
        return "<p>No data in this range.</p>"
    y_max = max([value for _, values, _ in series for value in values] + [1]) * 1.1
    step = (WIDTH - LEFT - PAD) / len(labels)
    width = max(step / len(series) - 1, 0.5)
    body = [
        f'<line x1="{LEFT}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>',
        f'<text x="4" y="{PAD}" font-size="11">{y_max:.0f}</text><text x="4" y="{HEIGHT - PAD}" font-size="11">0</text>',
    ]
    for i, text in enumerate(labels):
        for offset, (name, values, color) in enumerate(series):
            height = values[i] / y_max * (HEIGHT - 2 * PAD)
            x = LEFT + i * step + offset * width
            body.append(
                f'<rect class="bar" x="{x:.1f}" y="{HEIGHT - PAD - height:.1f}" width="{width:.1f}" height="{height:.1f}" fill="{color}"><title>{_e(text)}: {values[i]} {_e(name)}</title></rect>'
            )
    shown = sorted({0, len(labels) // 2, len(labels) - 1})
    for i in shown:
        anchor = "start" if i == 0 and len(labels) > 1 else "end" if i == len(labels) - 1 and len(labels) > 1 else "middle"
        x = LEFT + (i + 0.5) * step if anchor == "middle" else LEFT + i * step if anchor == "start" else LEFT + (i + 1) * step
        body.append(f'<text x="{x:.1f}" y="{HEIGHT - 8}" font-size="11" text-anchor="{anchor}">{_e(labels[i])}</text>')
    legend = "".join(
        f'<text x="{LEFT + 10 + 150 * i}" y="14" font-size="11" fill="{color}">{_e(name)}</text>'
        for i, (name, _, color) in enumerate(series)
    )
    return _svg(label, HEIGHT, legend + "".join(body))


def _histogram(label: str, buckets: Sequence[Sequence[float]], unit: str, color: str) -> str:
    names = [f"≤ {bound:g} {unit}" if bound is not None else "longer" for bound, _ in buckets]
    return bars(label, names, [(label, [int(count) for _, count in buckets], color)])


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    if not rows:
        return "<p>None.</p>"
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_e('' if row.get(c) is None else row.get(c))}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


STYLE = (
    "body{font-family:sans-serif;margin:2em;color:#222;max-width:960px}table{border-collapse:collapse;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}h2{margin-top:1.6em}"
    ".advice{padding:6px 10px;margin:4px 0;border-left:4px solid #1f77b4;background:#f4f8fc}"
    ".advice.warn{border-color:#d62728;background:#fdf3f3}.figures span{margin-right:1.5em}"
)


def render_html(report: Report, title: str = "cinnamon-pool report") -> str:
    pool, errors, timeline = report.pool, report.errors, report.timeline
    containers = [{"container": name, **dataclasses.asdict(figures)} for name, figures in report.containers.items()]
    columns = [
        "container",
        "tests",
        "average_duration_s",
        "memory_trend",
        "peak_memory_mb",
        "error_rate",
        "restarts",
        "replacements",
        "risk",
    ]
    advice = (
        "".join(f'<div class="advice {_e(a.severity)}"><b>{_e(a.kind)}</b>: {_e(a.message)}</div>' for a in report.recommendations)
        or "<p>Nothing to change: the pool's size, memory and errors look right for this window.</p>"
    )
    histograms = report.histograms
    by_context = [{"context": k, "count": v} for k, v in errors.by_context.items()]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{STYLE}</style></head><body>
<h1>{_e(title)}</h1>
<p>{report.records} records from {_e(report.since)} to {_e(report.until)}.</p>
<h2>Recommendations</h2>{advice}
<p class="figures"><span>Jobs {pool.jobs}</span><span>Utilization {pool.utilization:.1%}</span>
<span>Wait p50 {pool.wait_p50_s} s, p95 {pool.wait_p95_s} s</span><span>Job p50 {pool.duration_p50_s} s, p95 {pool.duration_p95_s} s</span>
<span>{pool.throughput_per_hour} jobs per hour</span></p>
<h2>Containers</h2>{_table(containers, columns)}
<h2>Leases</h2>{lease_timeline(report.leases, report.restart_marks)}
<h2>Jobs and errors per {_e(timeline.bucket)}</h2>{bars(f"jobs and errors per {timeline.bucket}", list(timeline.labels), [("jobs", list(timeline.jobs), COLORS[0]), ("errors", list(timeline.errors), RESTART_COLOR)])}
<h2>Job durations</h2>{_histogram("job durations", histograms["duration_s"], "s", COLORS[2])}
<h2>Waits for a container</h2>{_histogram("waits for a container", histograms["wait_s"], "s", COLORS[1])}
<h2>Memory</h2>{memory_chart(report.memory_series, report.restart_marks)}
<h2>Errors</h2>{_table([dataclasses.asdict(entry) for entry in errors.common], ["error", "count", "context"])}
<h3>By context</h3>{_table(by_context, ["context", "count"])}
<p>Leaking: {_e(", ".join(errors.leaking_containers) or "none")}. Restarted often: {_e(", ".join(errors.frequently_restarted) or "none")}.</p>
</body></html>
"""
