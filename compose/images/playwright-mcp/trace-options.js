// The pool's trace options, loaded by the server as its init page (door.js sets
// PLAYWRIGHT_MCP_INIT_PAGE to this file unless the command names its own --init-page).
//
// playwright-mcp's browser_start_tracing records with `live: true` (each event written as it
// happens) and a screencast of every page. At half a core the screencast alone made a sign-in
// job 1.25x slower (tests/bench/traces_bench.py). The pool's traces keep every action with its
// DOM snapshots before and after, the network and the console, written out when the trace stops
// or its browser context closes; the screencast (the viewer's filmstrip) only with
// CINNAMON_TRACE_SCREENCAST=1, which the pool sets for `container.artifacts_screenshots = true`.
// A failure here must never cost the page: the server would refuse to open it.
"use strict";

const PATCHED = Symbol("cinnamon.traceOptions");
const screencast = process.env.CINNAMON_TRACE_SCREENCAST === "1";

exports.default = async ({ page }) => {
  try {
    const tracing = page.context().tracing;
    if (tracing[PATCHED]) return; // one context, many pages
    const start = tracing.start.bind(tracing);
    tracing.start = (options = {}) => start({ ...options, live: false, screenshots: screencast });
    tracing[PATCHED] = true;
  } catch (error) {
    process.stderr.write(`cinnamon trace options not applied: ${error}\n`);
  }
};
