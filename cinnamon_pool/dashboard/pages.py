"""The dashboard's pages: server-rendered HTML, every value escaped, and one small script
(:data:`LIVE_JS`) that applies the live pool to the page from server-sent events. No build step,
no library, nothing fetched from elsewhere."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from cinnamon_pool.dashboard.runs import Run
from cinnamon_pool.logs.format import LogRecord

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
nav{background:#1d2330;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center}
nav a{color:#e8ebf0;text-decoration:none;font-weight:600}nav b{color:#f0a050;margin-right:1em}
main{padding:1em 1.5em;max-width:1400px}
table{border-collapse:collapse;width:100%;background:#fff;margin:.5em 0 1.2em}
th,td{padding:.3em .6em;border-bottom:1px solid #e3e6ea;text-align:left;white-space:nowrap}
th{background:#eef0f3;font-weight:600}td.error{white-space:normal;max-width:40em;color:#8a1f11}
.state-allocated{color:#1b5e20;font-weight:600}.state-restarting,.state-unhealthy{color:#b71c1c}
.outcome-ok{color:#1b5e20}.outcome-test_failed{color:#e65100}.outcome-infra_error{color:#b71c1c}
.figures span{display:inline-block;background:#fff;border:1px solid #e3e6ea;padding:.3em .7em;margin:0 .4em .4em 0}
form.inline{display:inline}button{cursor:pointer}pre{background:#fff;border:1px solid #e3e6ea;padding:.7em;overflow:auto;max-height:30em}
img.shot{max-width:100%;border:1px solid #e3e6ea}.note{color:#555}
"""

# The live page: the table, the counts and the refusals follow /live/events (values set with
# textContent, never parsed as HTML).
LIVE_JS = """
"use strict";
const csrf = document.body.dataset.csrf;
function cell(row, text, cls) { const td = row.insertCell(); td.textContent = text ?? "-"; if (cls) td.className = cls; return td; }
function action(td, name, value, label, question) {
  const form = document.createElement("form"); form.method = "post"; form.action = "/actions"; form.className = "inline";
  form.addEventListener("submit", (event) => { if (!confirm(question)) event.preventDefault(); });
  for (const [key, val] of [["action", name], ["value", value], ["csrf", csrf]]) {
    const input = document.createElement("input"); input.type = "hidden"; input.name = key; input.value = val; form.append(input);
  }
  const button = document.createElement("button"); button.textContent = label; form.append(button); td.append(form);
}
function apply(live) {
  for (const key of ["total", "available", "allocated", "preparing", "restarting", "waiting"]) {
    const node = document.getElementById("count-" + key); if (node) node.textContent = live[key];
  }
  const body = document.getElementById("containers"); body.replaceChildren();
  for (const c of live.containers) {
    const row = body.insertRow(); row.id = "row-" + c.name;
    cell(row, c.name); cell(row, c.state, "state-" + c.state);
    cell(row, c.memory_mb == null ? "-" : Math.round(c.memory_mb) + " MB");
    cell(row, c.cpu_percent == null ? "-" : c.cpu_percent.toFixed(0) + " %");
    cell(row, c.lease_age_s == null ? "-" : c.lease_age_s.toFixed(1) + " s");
    cell(row, c.test_run_id); cell(row, c.client ? "key " + c.client : (c.test_run_id ? "job" : "-"));
    const actions = cell(row, "");
    actions.textContent = "";
    action(actions, "restart", c.name, "Restart", "Restart " + c.name + (c.test_run_id ? " after its job?" : " now?"));
    if (c.test_run_id) action(actions, "kill", c.test_run_id, "Kill run", "End the lease of " + c.test_run_id + "? Its job gets LeaseLost.");
  }
  const queue = document.getElementById("queue"); queue.replaceChildren();
  for (const w of live.queue) {
    const li = document.createElement("li"); li.textContent = `${w.test_run_id} (${w.worker || w.job_id || "-"}), waiting ${w.waiting_s.toFixed(1)} s`; queue.append(li);
  }
  document.getElementById("no-queue").hidden = live.queue.length > 0;
  const refusals = document.getElementById("refusals"); refusals.replaceChildren();
  for (const r of live.refusals) { const li = document.createElement("li"); li.textContent = r; refusals.append(li); }
  document.getElementById("no-refusals").hidden = live.refusals.length > 0;
  document.getElementById("updated").textContent = new Date().toLocaleTimeString();
}
const source = new EventSource("/live/events");
source.onmessage = (event) => apply(JSON.parse(event.data));
"""


def page(title: str, body: str, csrf: str = "") -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)} · cinnamon-pool</title>
<link rel="icon" href="data:,"><style>{STYLE}</style></head>
<body data-csrf="{escape(csrf)}"><nav><b>cinnamon-pool</b><a href="/">Live</a><a href="/runs">Runs</a><a href="/report">Report</a></nav>
<main>{body}</main></body></html>"""


def _form(action: str, value: str, label: str, question: str, csrf: str, extra: str = "") -> str:
    hidden = f'<input type="hidden" name="value" value="{escape(value)}">'
    return (
        f'<form class="inline" method="post" action="/actions" data-confirm="{escape(question)}">'
        f'<input type="hidden" name="action" value="{escape(action)}"><input type="hidden" name="csrf" value="{escape(csrf)}">'
        f"{extra or hidden}<button>{escape(label)}</button></form>"
    )


def live_page(pool: str, draining: bool, csrf: str, said: str = "") -> str:
    counts = "".join(
        f'<span>{label} <b id="count-{key}">-</b></span>'
        for key, label in [
            ("total", "Containers"),
            ("available", "Free"),
            ("allocated", "Leased"),
            ("preparing", "Preparing"),
            ("restarting", "Restarting"),
            ("waiting", "Waiting"),
        ]
    )
    drain = _form("undrain" if draining else "drain", "", "Resume granting" if draining else "Drain", "Change the pool's granting?", csrf)
    scale = _form(
        "scale", "", "Scale", "Ask the supervisor for this size?", csrf, '<input name="value" size="3" aria-label="size" required>'
    )
    heads = "".join(f"<th>{h}</th>" for h in ["Container", "State", "Memory", "CPU", "Lease age", "Test run", "Holder", "Actions"])
    return page(
        f"{pool} live",
        f"""<h1>Pool {escape(pool)}{" (drained)" if draining else ""}</h1>
{f'<p class="note" id="said">{escape(said)}</p>' if said else ""}
<p class="figures">{counts}</p><p>{drain} {scale} <span class="note">updated <span id="updated">-</span></span></p>
<table><thead><tr>{heads}</tr></thead><tbody id="containers"></tbody></table>
<h2>Waiting for a container</h2><ol id="queue"></ol><p class="note" id="no-queue">nobody waits</p>
<h2>Recent refusals (today, newest first)</h2><ul id="refusals"></ul><p class="note" id="no-refusals">none today</p>
<script src="/static/live.js"></script><script src="/static/confirm.js"></script>""",
        csrf,
    )


CONFIRM_JS = """
"use strict";
for (const form of document.querySelectorAll("form[data-confirm]")) {
  form.addEventListener("submit", (event) => { if (!confirm(form.dataset.confirm)) event.preventDefault(); });
}
"""


def runs_page(runs: list[Run], query: str, milliseconds: float) -> str:
    rows = []
    for run in runs:
        link = f"/runs/{run.day}/{quote(run.folder)}?{urlencode({'run': run.test_run_id})}"
        trace = f'<a href="{escape(viewer_url(run.day, run.folder))}">Open trace</a>' if run.trace else ""
        rows.append(
            f'<tr><td>{run.at:%Y-%m-%d %H:%M:%S}</td><td><a href="{escape(link)}">{escape(run.test_run_id)}</a></td>'
            f'<td>{escape(run.container)}</td><td class="outcome-{escape(run.outcome)}">{escape(run.outcome)}</td>'
            f"<td>{escape(run.duration)}</td><td>{escape(run.wait)}</td><td>{escape(run.tool_calls)}</td>"
            f'<td>{escape(run.console_errors)}</td><td class="error">{escape(run.error[:200])}</td><td>{trace}</td></tr>'
        )
    heads = "".join(
        f"<th>{h}</th>"
        for h in ["Released", "Test run", "Container", "Outcome", "Duration", "Wait", "Tool calls", "Console errors", "Error", ""]
    )
    return page(
        "runs",
        f"""<h1>Runs</h1><form method="get"><input name="q" value="{escape(query)}" placeholder="test run, container, outcome, error" size="40">
<button>Search</button> <span class="note">{len(runs)} runs · read in {milliseconds:.0f} ms</span></form>
<table><thead><tr>{heads}</tr></thead><tbody>{"".join(rows)}</tbody></table>""",
    )


def viewer_url(day: str, folder: str) -> str:
    """The bundled trace viewer, opening the run's trace (served by the dashboard itself)."""
    return f"/trace/index.html?{urlencode({'trace': f'/files/{day}/{folder}/trace.zip'})}"


def run_page(
    day: str, folder: str, test_run_id: str, records: Iterable[LogRecord], files: Mapping[str, Any], texts: Mapping[str, str]
) -> str:
    log = "\n\n".join(
        f"[{r.at:%Y-%m-%d %H:%M:%S}] {r.level} {r.subject} | {r.action}\n" + "\n".join(f"  └─ {k}: {v}" for k, v in r.details)
        for r in records
    )
    parts = [f'<h1>Run {escape(test_run_id)}</h1><p class="note">{escape(day)}</p>']
    if "trace.zip" in files:
        parts.append(f'<p><a href="{escape(viewer_url(day, folder))}"><button>Open trace</button></a> '
                     f'<a href="/files/{day}/{quote(folder)}/trace.zip">download trace.zip</a></p>')  # fmt: skip
    if "screenshot.png" in files:
        parts.append(
            f'<h2>Screenshot</h2><img class="shot" alt="the page when the job ended" src="/files/{day}/{quote(folder)}/screenshot.png">'
        )
    for name, text in texts.items():
        parts.append(f"<h2>{escape(name)}</h2><pre>{escape(text)}</pre>")
    parts.append(f"<h2>Log records</h2><pre>{escape(log) or 'none in the logs of that day'}</pre>")
    if not files:
        parts.append('<p class="note">No artifacts were kept for this run (its policy, or it passed).</p>')
    return page(f"run {test_run_id}", "".join(parts))


def report_form(hours: float) -> str:
    """The window chooser put above the analyzer's own report page."""
    choices = "".join(f'<option value="{h}"{" selected" if h == hours else ""}>last {label}</option>'
                      for h, label in [(1, "hour"), (6, "6 hours"), (24, "24 hours"), (168, "7 days"), (720, "30 days")])  # fmt: skip
    return (
        '<nav><b>cinnamon-pool</b><a href="/">Live</a><a href="/runs">Runs</a><a href="/report">Report</a>'
        f'<form method="get" style="margin-left:auto"><select name="hours" aria-label="window">{choices}</select> <button>Show</button></form></nav>'
    )
