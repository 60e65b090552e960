// The dashboard in a real headless Chromium (Debian's), driven by playwright-core as `make images`
// installs it (its path in PLAYWRIGHT_CORE). Usage: node dashboard.mjs <base URL> <failed run id> [screenshot]
// Loads each page and counts console errors; says "ready" on stdout when the live table shows,
// then waits for "go" on stdin (the test starts a job) and for that job's row to show it leased;
// then opens the failed run's trace in the bundled viewer and looks for its failing navigation.
// Prints one JSON line with what it saw.
import { createRequire } from "node:module";
import readline from "node:readline";

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT_CORE);
const [base, failedRun, screenshot] = process.argv.slice(2);
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/lib/chromium/chromium", args: ["--no-sandbox"] });
const seen = { errors: {}, live: false, trace: false, viewerErrors: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
  let errors = [];
  page.on("console", (message) => message.type() === "error" && errors.push(message.text()));
  page.on("pageerror", (error) => errors.push(String(error)));
  for (const path of ["/runs", `/runs?q=${encodeURIComponent(failedRun)}`, "/report?hours=1", "/"]) {
    errors = [];
    await page.goto(base + path, { waitUntil: "load" });
    await page.waitForTimeout(300);
    seen.errors[path] = errors.slice();
  }
  await page.waitForSelector("#containers tr", { timeout: 15000 });
  errors = [];
  console.log("ready");
  await lines.next(); // "go": the test holds a lease now
  await page.waitForFunction(() => [...document.querySelectorAll("#containers td")].some((td) => td.textContent === "allocated"), null, { timeout: 20000 });
  seen.live = true;
  seen.errors["/ (live)"] = errors.slice();
  if (screenshot) await page.screenshot({ path: screenshot });

  await page.goto(`${base}/runs?q=${encodeURIComponent(failedRun)}`, { waitUntil: "load" });
  await page.click(`text=${failedRun}`);
  await page.waitForSelector("text=Open trace");
  errors = [];
  await Promise.all([page.waitForURL(/\/trace\//), page.click("text=Open trace")]);
  await page.waitForSelector("text=127.0.0.1:9/sign-in", { timeout: 30000 });
  seen.trace = true;
  seen.viewerErrors = errors.slice();
} catch (error) {
  seen.failure = String(error);
} finally {
  await browser.close();
  console.log(JSON.stringify(seen));
}
