"""A stand-in for playwright-mcp: enough MCP over streamable HTTP for the pool's tests.

Speaks JSON-RPC on ``POST /mcp`` (``initialize``, ``notifications/initialized``, ``ping``,
``tools/list``, ``tools/call`` for ``browser_navigate`` and ``browser_snapshot``), ends a
session on ``DELETE /mcp``, and answers ``GET /mcp`` with 400 like the real server.

Fault modes, switched by ``POST /_fake/mode`` with a JSON body (or ``FAKE_MCP_MODE`` at start):
  {"mode": "ok"}                      normal service
  {"mode": "hang"}                    accept /mcp requests and never answer
  {"mode": "slow", "delay_s": 2.5}    answer /mcp requests after a delay
  {"mode": "fail"}                    every tools/call answers a JSON-RPC error
  {"mode": "residue"}                 the cleanup canary finds a cookie left behind
  {"grow_mb": 50}                     allocate and touch 50 MB more (memory-leak stand-in)
  {"exit": 3}                         exit the process with that code (crash stand-in)
Every session but the pool's readiness probe runs a child process until it is ended, as
playwright-mcp runs a browser. ``GET /_fake/state`` returns the mode, open sessions, memory held
and every tools/call with the ``X-Cinnamon-Token`` header it carried (which lease holder called).

With ``FAKE_MCP_RECORD_DIR`` set (a directory the host mounts), every tools/call is also
appended to ``served-<hostname>-<pid>.jsonl`` there before it is answered, one write per line:
``{"container", "token", "tool", "start", "end"}``, the times on the kernel's monotonic clock in
ms, which a container shares with its host. These are the ground truth of the fault tests'
history checker: what the container itself served, under which lease token, when.
A navigate's answer then also names that token (``- Lease:``), so a client on connect, which
holds no token of its own, can record its uses under the lease the container saw.

With ``--output-dir`` (the pool passes it when it records traces), ``browser_start_tracing`` and
``browser_stop_tracing`` write a stand-in trace there (``traces/trace-<ms>.trace``, one JSON line
per tool call of the session) and ``/.cinnamon/output`` serves and empties the folder as the
real image's door does.

Standard library only: it runs on the host's Debian python3 bind-mounted into a scratch image.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PROTOCOL_VERSION = "2025-06-18"
DOOR_SECRET = os.environ.pop("CINNAMON_DOOR_SECRET", "").encode()  # see _host_refused
ALLOWED_HOSTS: list[str] = []  # --allowed-hosts; empty = no host check
TOOLS = [
    {
        "name": "browser_navigate",
        "description": "Navigate to a URL",
        "inputSchema": {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]},
    },
    {
        "name": "browser_take_screenshot",
        "description": "Screenshot of the page",
        "inputSchema": {"type": "object", "properties": {"type": {"type": "string"}}},
    },
    {
        "name": "browser_run_code_unsafe",
        "description": "Run Playwright code (the fake answers the pool's cleanup canary only)",
        "inputSchema": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
    },
    {
        "name": "browser_snapshot",
        "description": "Accessibility snapshot of the current page",
        "inputSchema": {"type": "object", "properties": {}},
    },
]


class FakeState:
    def __init__(self, mode: str) -> None:
        self.lock = threading.Lock()
        self.mode = mode
        self.delay_s = 0.0
        self.sessions: dict[str, str] = {}  # session id -> current URL
        self.browsers: dict[str, subprocess.Popen[bytes]] = {}  # a process per session, as a browser would be
        self.ballast: list[bytearray] = []
        self.calls: list[dict[str, Any]] = []

    def apply(self, change: dict[str, Any]) -> None:
        with self.lock:
            if "mode" in change:
                self.mode = str(change["mode"])
            if "delay_s" in change:
                self.delay_s = float(change["delay_s"])
            grow_mb = int(change.get("grow_mb", 0))
            if grow_mb > 0:
                block = bytearray(grow_mb * 1024 * 1024)
                for offset in range(0, len(block), 4096):  # touch every page so it is resident
                    block[offset] = 1
                self.ballast.append(block)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "mode": self.mode,
                "delay_s": self.delay_s,
                "sessions": len(self.sessions),
                "ballast_mb": sum(len(b) for b in self.ballast) // (1024 * 1024),
                "calls": list(self.calls),
            }


STATE = FakeState(os.environ.get("FAKE_MCP_MODE", "ok"))


class ServedRecord:
    """The append-only record of what this container served (see the module docstring)."""

    def __init__(self, directory: str) -> None:
        self.container = socket.gethostname()  # Docker sets it to the container id's first 12 characters
        path = os.path.join(directory, f"served-{self.container}-{os.getpid()}.jsonl")
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, token: str, tool: object, start: float, end: float) -> None:
        line = {"container": self.container, "token": token, "tool": tool, "start": round(start * 1000, 3), "end": round(end * 1000, 3)}
        os.write(self.fd, (json.dumps(line) + "\n").encode())


SERVED = ServedRecord(os.environ["FAKE_MCP_RECORD_DIR"]) if os.environ.get("FAKE_MCP_RECORD_DIR") else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-mcp/1"

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write("fake-mcp: " + (format % args) + "\n")

    # -- plumbing ------------------------------------------------------------------------
    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def _output(self) -> None:
        """door.js's ``/.cinnamon/output``: GET every file (base64, one JSON answer), DELETE empties it."""
        if not OUTPUT_DIR:
            self._send(404, {"error": "the server has no --output-dir"})
            return
        root = Path(OUTPUT_DIR)
        if self.command == "DELETE":
            for entry in root.glob("*"):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            self._send(200, {"emptied": OUTPUT_DIR})
            return
        files = [p for p in sorted(root.rglob("*")) if p.is_file()]
        payload = [{"path": str(p.relative_to(root)), "data": base64.b64encode(p.read_bytes()).decode()} for p in files]
        self._send(200, {"files": payload, "bytes": sum(p.stat().st_size for p in files)})

    def _host_refused(self) -> bool:
        """The playwright-mcp image's door (door.js): with CINNAMON_DOOR_SECRET, an MCP request
        without it in X-Cinnamon-Door gets 403; without one, playwright-mcp's host check: with
        --allowed-hosts, any other Host header gets 403."""
        if not self.path.startswith(("/mcp", "/.cinnamon/")):
            return False
        if DOOR_SECRET:
            if hmac.compare_digest(self.headers.get("X-Cinnamon-Door", "").encode(), DOOR_SECRET):
                return False
            self._send(403, {"error": "forbidden: this container is reached through the pool's gateway"})
            return True
        allowed = ALLOWED_HOSTS
        if not allowed or "*" in allowed:
            return False
        host = (self.headers.get("Host") or "").lower()
        if host in allowed:
            return False
        self._send(403, {"error": "Access is only allowed at " + ", ".join(allowed)})
        return True

    def _fault_gate(self) -> None:
        mode, delay = STATE.mode, STATE.delay_s
        if mode == "hang":
            while STATE.mode == "hang":
                time.sleep(0.2)
        elif mode == "slow":
            time.sleep(delay)

    # -- routes --------------------------------------------------------------------------
    def do_GET(self) -> None:
        if self._host_refused():
            return
        if self.path == "/_fake/state":
            self._send(200, STATE.snapshot())
            return
        if self.path.startswith("/.cinnamon/output"):
            self._output()
            return
        if self.path.startswith("/mcp"):
            self._fault_gate()
            self._send(405 if self.headers.get("mcp-session-id") else 400, {"error": "use POST"})
            return
        self._send(404, {"error": "not found"})

    def do_DELETE(self) -> None:
        if self._host_refused():
            return
        if self.path.startswith("/.cinnamon/output"):
            self._output()
            return
        if not self.path.startswith("/mcp"):
            self._send(404, {"error": "not found"})
            return
        self._fault_gate()
        session = self.headers.get("mcp-session-id", "")
        with STATE.lock:
            known = STATE.sessions.pop(session, None) is not None
            browser = STATE.browsers.pop(session, None)
        if browser is not None:
            browser.kill()
            browser.wait()
        self._send(200 if known else 404, None)

    def do_POST(self) -> None:
        if self._host_refused():
            return
        if self.path == "/_fake/mode":
            change = self._read_json() or {}
            if "exit" in change:
                self._send(200, {"exiting": change["exit"]})
                self.wfile.flush()
                os._exit(int(change["exit"]))
            STATE.apply(change)
            self._send(200, STATE.snapshot())
            return
        if not self.path.startswith("/mcp"):
            self._send(404, {"error": "not found"})
            return
        message = self._read_json()
        self._fault_gate()
        if not isinstance(message, dict) or "method" not in message:
            self._send(400, {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "invalid request"}})
            return
        if "id" not in message:  # a notification
            self._send(202, None)
            return
        session = self.headers.get("mcp-session-id", "")
        if message["method"] == "initialize":
            session = uuid.uuid4().hex
            with STATE.lock:
                STATE.sessions[session] = "about:blank"
                if message.get("params", {}).get("clientInfo", {}).get("name") != "cinnamon-pool-probe":
                    STATE.browsers[session] = subprocess.Popen(["sleep", "3600"])  # the session's "browser"
            result = {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "fake-mcp", "version": "1"},
            }
            self._send(200, {"jsonrpc": "2.0", "id": message["id"], "result": result}, {"mcp-session-id": session})
            return
        with STATE.lock:
            known = session in STATE.sessions
        if not known:
            self._send(404, {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32001, "message": "session not found"}})
            return
        started = time.monotonic()
        answer = self._dispatch(session, message)
        if SERVED is not None and message["method"] == "tools/call":
            SERVED.write(self.headers.get("x-cinnamon-token", ""), (message.get("params") or {}).get("name"), started, time.monotonic())
        self._send(200, {"jsonrpc": "2.0", "id": message["id"], **answer})

    def _dispatch(self, session: str, message: dict[str, Any]) -> dict[str, Any]:
        method, params = message["method"], message.get("params") or {}
        if method == "ping":
            return {"result": {}}
        if method == "tools/list":
            return {"result": {"tools": TOOLS}}
        if method != "tools/call":
            return {"error": {"code": -32601, "message": f"method not found: {method}"}}
        name, arguments = params.get("name"), params.get("arguments") or {}
        served_at = time.time()
        if OUTPUT_DIR and name in {"browser_start_tracing", "browser_stop_tracing"}:
            return _tracing(session, name)
        if session in TRACES:
            with TRACES[session].open("a") as trace:
                trace.write(json.dumps({"type": "action", "tool": name, "at": served_at}) + "\n")
        with STATE.lock:
            STATE.calls.append(
                {
                    "tool": name,
                    "token": self.headers.get("x-cinnamon-token", ""),
                    "at": served_at,
                    "authorization": "authorization" in self.headers,  # a gateway strips it
                    "host": self.headers.get("host", ""),
                    "headers": sorted(
                        {name.lower() for name in self.headers} - {"x-cinnamon-door"}
                    ),  # what a gateway let through (the door takes its own)
                }
            )
            failing = STATE.mode == "fail"
            if name == "browser_navigate" and not failing:
                STATE.sessions[session] = str(arguments.get("url", ""))
            url = STATE.sessions.get(session, "")
        if failing:
            return {"error": {"code": -32603, "message": "fake-mcp: injected failure"}}
        if name == "browser_navigate":  # when the call was served (host clock, ms): the fault tests' histories use it
            text = f"### Page\n- Page URL: {url}\n- Served at: {int(served_at * 1000)}\n"
            if SERVED is not None:  # recording for a history: the lease the call came under, for clients that hold no token
                text += f"- Lease: {self.headers.get('x-cinnamon-token', '')}\n"
        elif name == "browser_snapshot":
            text = f"### Page\n- Page URL: {url}\n### Snapshot\n```yaml\n- generic [ref=e1]: fake page\n```"
        elif name == "browser_take_screenshot":
            png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
            return {
                "result": {
                    "content": [
                        {"type": "text", "text": "### Result\nscreenshot"},
                        {"type": "image", "data": png, "mimeType": "image/png"},
                    ],
                    "isError": False,
                }
            }
        elif name == "browser_run_code_unsafe":
            found = {"cookies": 1 if STATE.mode == "residue" else 0, "origins": 0, "pages": 1}
            text = "### Result\n" + json.dumps(json.dumps(found))
        else:
            return {"error": {"code": -32602, "message": f"unknown tool: {name}"}}
        return {"result": {"content": [{"type": "text", "text": text}], "isError": False}}


OUTPUT_DIR = ""  # --output-dir: where traces go
TRACES: dict[str, Path] = {}  # session id -> its trace file while it records


def _tracing(session: str, name: str) -> dict[str, Any]:
    if name == "browser_start_tracing":
        path = Path(OUTPUT_DIR) / "traces" / f"trace-{int(time.time() * 1000)}.trace"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"type": "context-options", "fake": True}) + "\n")
        TRACES[session] = path
        text = "Trace recording started"
    elif TRACES.pop(session, None) is None:
        return {"result": {"content": [{"type": "text", "text": "### Error\nTracing is not started"}], "isError": True}}
    else:
        text = "Trace recording stopped."
    return {"result": {"content": [{"type": "text", "text": text}], "isError": False}}


def main() -> None:
    global OUTPUT_DIR
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8931)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--allowed-hosts", default="", help="comma-separated Host values served, as playwright-mcp's")
    parser.add_argument("--output-dir", default="", help="where traces go, as playwright-mcp's")
    args, _ignored = parser.parse_known_args()  # accepts playwright-mcp's arguments as a stand-in
    OUTPUT_DIR = args.output_dir
    ALLOWED_HOSTS.extend(h.strip().lower() for h in args.allowed_hosts.split(",") if h.strip())
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    sys.stderr.write(f"fake-mcp: listening on {args.host}:{args.port} (mode {STATE.mode})\n")
    server.serve_forever()


if __name__ == "__main__":
    main()
