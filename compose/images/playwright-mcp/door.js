// The container's door: the only listener on the pool network and the published port.
//
// playwright-mcp checks only the Host header, which any process that reaches the port can
// send, and its refusal names the allowed value. So the server listens on the container's own
// loopback, which nothing outside the container reaches, and this door forwards to it only the
// requests that carry the container's secret in X-Cinnamon-Door. The pool's supervisor puts
// the secret in CINNAMON_DOOR_SECRET at creation (never on the command line: ps shows that);
// the host's gateway and the supervisor's probes derive it from the same host key
// (cinnamon_pool/door.py). With no secret (a pool without a gateway), the door checks the Host
// header against the command's --allowed-hosts instead, as playwright-mcp would.
// Code the server runs for a holder (browser_run_code_unsafe) runs in this process and could
// read the secret: refusing such tools is the security issue's item 8 (docs/security.md).
//
// Usage: node door.js <playwright-mcp cli.js> <its arguments...>. The door takes --host and
// --port for itself and runs the server in this same process (a second Node process would cost
// ~40 MB against the container's memory limit) on 127.0.0.1:<port + 1>.
"use strict";
const crypto = require("crypto");
const fs = require("fs");
const http = require("http");
const path = require("path");

const HEADER = "x-cinnamon-door";
const secret = Buffer.from(process.env.CINNAMON_DOOR_SECRET || "");
delete process.env.CINNAMON_DOOR_SECRET; // not handed on to the browser
const [cli, ...given] = process.argv.slice(2);

function take(name, fallback) {
  const at = given.indexOf(name);
  if (at < 0) return fallback;
  const [, value] = given.splice(at, 2);
  return value;
}

const host = take("--host", "0.0.0.0");
const port = Number(take("--port", "8931"));
const allowed = take("--allowed-hosts", "*").split(",").map((h) => h.trim().toLowerCase());
const inner = port + 1;
const outputAt = given.lastIndexOf("--output-dir"); // the server's too (the last one counts): read, not taken
const outputDir = outputAt >= 0 ? path.resolve(given[outputAt + 1]) : "";
const OUTPUT = "/.cinnamon/output";

function admitted(request) {
  if (secret.length === 0) {
    return allowed.includes("*") || allowed.includes((request.headers.host || "").toLowerCase());
  }
  const offered = Buffer.from(String(request.headers[HEADER] || ""));
  return offered.length === secret.length && crypto.timingSafeEqual(offered, secret);
}

// A new loopback connection per request to the server (~0.1 ms). A kept-alive one races the
// server's own 5 s keep-alive timeout: under CPU starvation the door could pick a socket whose
// close it had not yet read, and the request failed with ECONNRESET (a 502 from this door).
const agent = new http.Agent({ keepAlive: false });
const door = http
  .createServer((request, response) => {
    if (!admitted(request)) {
      response.writeHead(403, { "content-type": "text/plain" });
      response.end("forbidden: this container is reached through the pool's gateway\n");
      request.resume();
      return;
    }
    if (request.url === OUTPUT || request.url.startsWith(`${OUTPUT}?`)) {
      output(request, response);
      return;
    }
    const headers = { ...request.headers, host: `localhost:${inner}` };
    delete headers[HEADER];
    const upstream = http.request(
      { host: "127.0.0.1", port: inner, method: request.method, path: request.url, headers, agent },
      (answer) => {
        response.writeHead(answer.statusCode, answer.headers);
        // Node sends a head with the first body byte; the server's GET event stream may have
        // none for minutes, and its client waits for the head: send it now, as the server did.
        response.flushHeaders();
        answer.pipe(response);
      },
    );
    upstream.on("error", (error) => {
      if (!response.headersSent) {
        response.writeHead(502, { "content-type": "text/plain" });
        response.end(`the door could not reach the server: ${error.code || error.message}\n`);
      } else response.end();
    });
    response.on("close", () => {
      if (!response.writableFinished) upstream.destroy(); // the client hung up: so does the server's side
    });
    request.pipe(upstream);
  })
  .listen(port, host);
// The gateway's client (httpx) drops a connection idle for 5 s; Node's server would close it at
// 5 s too, and the two could cross. The door keeps it longer, so the client always closes first.
door.keepAliveTimeout = 65_000;
door.headersTimeout = 66_000;

// What the server wrote under --output-dir (a lease's trace, video): for the gateway of this
// host, which writes it to its logs and then empties the folder, so nothing passes from one
// lease to the next. GET: every file, base64, in one JSON answer (413 past ?max= bytes in all);
// DELETE: the folder emptied.
function output(request, response) {
  request.resume();
  const answer = (status, body) => {
    response.writeHead(status, { "content-type": "application/json" });
    response.end(JSON.stringify(body));
  };
  if (!outputDir) return answer(404, { error: "the server has no --output-dir" });
  try {
    if (request.method === "DELETE") {
      for (const entry of fs.readdirSync(outputDir)) fs.rmSync(path.join(outputDir, entry), { recursive: true, force: true });
      return answer(200, { emptied: outputDir });
    }
    if (request.method !== "GET") return answer(405, { error: "GET or DELETE" });
    const max = Number(new URL(request.url, "http://door").searchParams.get("max") || Infinity);
    const files = [];
    let bytes = 0;
    for (const entry of fs.readdirSync(outputDir, { recursive: true, withFileTypes: true })) {
      if (!entry.isFile()) continue;
      const full = path.join(entry.parentPath || entry.path, entry.name);
      bytes += fs.statSync(full).size;
      if (bytes > max) return answer(413, { error: `over ${max} bytes`, bytes });
      files.push({ path: path.relative(outputDir, full), data: fs.readFileSync(full).toString("base64") });
    }
    return answer(200, { files, bytes });
  } catch (error) {
    if (error.code === "ENOENT") return answer(200, { files: [], bytes: 0 });
    return answer(500, { error: String(error.message || error) });
  }
}

// The pool's trace options (trace-options.js), unless the command brings its own init page.
if (!given.includes("--init-page") && !process.env.PLAYWRIGHT_MCP_INIT_PAGE) {
  process.env.PLAYWRIGHT_MCP_INIT_PAGE = path.join(__dirname, "trace-options.js");
}
process.argv = [process.argv[0], cli, ...given, "--host", "127.0.0.1", "--port", String(inner)];
require(cli);
