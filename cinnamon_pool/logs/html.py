"""The analyzer's report as one self-contained HTML file: tables and inline SVG charts
(memory over time per container; jobs and errors per hour). No scripts, no external files."""

from __future__ import annotations

import html
from typing import Any

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
WIDTH, HEIGHT, PAD = 860, 260, 40


def _polyline(points: list[tuple[float, float]], x0: float, x1: float, y1: float, color: str) -> str:
    span_x, span_y = (x1 - x0) or 1.0, y1 or 1.0
    coords = " ".join(
        f"{PAD + (x - x0) / span_x * (WIDTH - 2 * PAD):.1f},{HEIGHT - PAD - y / span_y * (HEIGHT - 2 * PAD):.1f}" for x, y in points
    )
    return f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/>'


def _axes(y_max: float, unit: str) -> str:
    return (
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>'
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>'
        f'<text x="4" y="{PAD}" font-size="11">{y_max:.0f} {html.escape(unit)}</text><text x="4" y="{HEIGHT - PAD}" font-size="11">0</text>'
    )


def memory_chart(series: dict[str, list[tuple[float, float]]]) -> str:
    if not series:
        return "<p>No memory readings in this range.</p>"
    xs = [x for points in series.values() for x, _ in points]
    y_max = max(y for points in series.values() for _, y in points) * 1.1
    lines = [_polyline(points, min(xs), max(xs), y_max, COLORS[i % len(COLORS)]) for i, points in enumerate(series.values())]
    legend = "".join(
        f'<text x="{PAD + 10 + (i % 5) * 160}" y="{14 + (i // 5) * 14}" font-size="11" fill="{COLORS[i % len(COLORS)]}">{html.escape(name)}</text>'
        for i, name in enumerate(series)
    )
    return f'<svg role="img" aria-label="memory over time" width="{WIDTH}" height="{HEIGHT}">{_axes(y_max, "MB")}{"".join(lines)}{legend}</svg>'


def bars_chart(jobs: dict[str, int], errors: dict[str, int]) -> str:
    hours = sorted(set(jobs) | set(errors))
    if not hours:
        return "<p>No jobs in this range.</p>"
    y_max = max([*jobs.values(), *errors.values(), 1]) * 1.1
    step = (WIDTH - 2 * PAD) / len(hours)
    bars = []
    for i, hour in enumerate(hours):
        for offset, (value, color) in enumerate(((jobs.get(hour, 0), COLORS[0]), (errors.get(hour, 0), COLORS[3]))):
            height = value / y_max * (HEIGHT - 2 * PAD)
            x = PAD + i * step + offset * step / 2
            bars.append(
                f'<rect x="{x:.1f}" y="{HEIGHT - PAD - height:.1f}" width="{max(step / 2 - 1, 0.5):.1f}" height="{height:.1f}" fill="{color}"><title>{html.escape(hour)}: {value}</title></rect>'
            )
    legend = f'<text x="{PAD + 10}" y="14" font-size="11" fill="{COLORS[0]}">jobs per hour</text><text x="{PAD + 130}" y="14" font-size="11" fill="{COLORS[3]}">errors per hour</text>'
    labels = f'<text x="{PAD}" y="{HEIGHT - 10}" font-size="11">{html.escape(hours[0])}</text><text x="{WIDTH - PAD - 110}" y="{HEIGHT - 10}" font-size="11">{html.escape(hours[-1])}</text>'
    return f'<svg role="img" aria-label="jobs and errors per hour" width="{WIDTH}" height="{HEIGHT}">{_axes(y_max, "")}{"".join(bars)}{legend}{labels}</svg>'


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(row.get(c, '')))}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(report: dict[str, Any], title: str = "cinnamon-pool report") -> str:
    containers = [{"container": name, **figures} for name, figures in report["containers"].items()]
    pool = report["pool"]
    errors = report["errors"]
    columns = ["container", "tests", "average_duration_s", "memory_trend", "memory_slope_mb_per_hour", "error_rate", "restarts", "risk"]
    style = "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{style}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{report["records"]} records from {html.escape(str(report["from"]))} to {html.escape(str(report["until"]))}.
Utilization {pool["utilization"]:.1%}, wait p50 {pool["wait_p50_s"]} s / p95 {pool["wait_p95_s"]} s, {pool["throughput_per_hour"]} jobs per hour.</p>
<h2>Containers</h2>{_table(containers, columns)}
<h2>Memory over time</h2>{memory_chart({k: [tuple(p) for p in v] for k, v in report["memory_series"].items()})}
<h2>Jobs and errors per hour</h2>{bars_chart(pool["jobs_per_hour"], pool["errors_per_hour"])}
<h2>Common errors</h2>{_table(errors["common"], ["error", "count"])}
<p>Leaking: {html.escape(", ".join(errors["leaking_containers"]) or "none")}. Restarted often: {html.escape(", ".join(errors["frequently_restarted"]) or "none")}.</p>
</body></html>
"""
