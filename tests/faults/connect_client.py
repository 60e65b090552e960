"""A client on connect for the soak: ``python -m tests.faults.connect_client URL KEY HISTORY``.

It does what an MCP client in another language does, with no lease token of its own: it opens a
session on the pool's connect URL with an API key, navigates a few pages, and closes it (DELETE),
again and again until SIGTERM (it ends its session first) or SIGKILL (the soak's fault: mid-session). Its history has the same
lines as a job's: ``acquire`` from the ``initialize`` until the first answer that names the lease
(fake-mcp's ``- Lease:`` line, what the container itself saw), every navigate as a ``use`` under
that token, and ``release`` around the DELETE. A session the pool ended (its container killed,
Redis restarted) fails its next request; that is recorded as an unknown outcome, and the client
opens a new session.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.faults.history import ClientHistory, pool_redis_from_env

PAGES = 3
PAUSE_S = 0.15
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "soak-connect", "version": "1"}},
}


class SessionEnded(Exception):
    """The pool ended the session (or never opened it): the client opens a new one, after the
    answer's ``Retry-After`` when it has one (a 429 or 503), as a polite client does."""

    def __init__(self, message: str, retry_after_s: float = 0.3) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def retry_after(response: httpx.Response) -> float:
    try:
        return min(float(response.headers.get("retry-after", "")), 10.0)
    except ValueError:
        return 0.3


def answer_text(response: httpx.Response) -> str:
    """The tool result's text, from a JSON or an SSE answer."""
    body = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        body = "".join(line[5:].strip() for line in body.splitlines() if line.startswith("data:"))
    message = json.loads(body)
    if "error" in message:
        raise SessionEnded(f"JSON-RPC error {message['error'].get('code')}")
    return str(message["result"]["content"][0]["text"])


def one_session(client: httpx.Client, url: str, history: ClientHistory, run: int) -> None:
    headers = {"X-Test-Run-Id": f"connect-{os.getpid()}-{run}"}
    invoked = history.record("acquire", "invoke")
    opened = client.post(url, content=json.dumps(INITIALIZE), headers=headers)
    if opened.status_code != 200 or "mcp-session-id" not in opened.headers:
        history.record("acquire", "fail", detail=f"HTTP {opened.status_code}", invoked_t=invoked)
        raise SessionEnded(f"initialize: HTTP {opened.status_code}", retry_after(opened))
    container = opened.headers.get("x-cinnamon-container", "")
    session = {"mcp-session-id": opened.headers["mcp-session-id"]}
    client.post(url, content=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}), headers=session)
    token = ""
    for page in range(PAGES):
        call = {"jsonrpc": "2.0", "id": page + 2, "method": "tools/call",
                "params": {"name": "browser_navigate", "arguments": {"url": f"data:text/html,connect page {page}"}}}  # fmt: skip
        use_invoked = history.record("use", "invoke", container, token)  # the first: before the answer names the lease
        try:
            reply = client.post(url, content=json.dumps(call), headers=session)
            if reply.status_code != 200:
                raise SessionEnded(f"navigate: HTTP {reply.status_code}")
            text = answer_text(reply)
        except (httpx.HTTPError, SessionEnded, ValueError) as error:
            if token:
                history.record("use", "unknown", container, token, f"{type(error).__name__}: {error}", use_invoked)
            else:  # no answer named the lease: what the initialize took is the pool's to end
                history.record("acquire", "unknown", container, detail=f"{type(error).__name__}: {error}", invoked_t=invoked)
            raise SessionEnded(str(error)) from error
        served = re.search(r"- Served at: (\d+)", text)
        lease = re.search(r"- Lease: (\S+)", text)
        if not token:
            token = lease.group(1) if lease else ""
            history.record("acquire", "ok", container, token, invoked_t=invoked)
        history.record("use", "ok", container, token, invoked_t=use_invoked, served_t=int(served.group(1)) if served else None)
        time.sleep(PAUSE_S)
    released = history.record("release", "invoke", container, token)
    closed = client.delete(url, headers=session)
    history.record("release", "ok" if closed.status_code < 300 else "fail", container, token, f"HTTP {closed.status_code}", released)


def main(argv: list[str]) -> int:
    url, key, directory = argv
    history = ClientHistory(Path(directory), pool_redis_from_env())
    headers = {**HEADERS, "Authorization": f"Bearer {key}"}
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    with httpx.Client(headers=headers, timeout=httpx.Timeout(10, read=90), trust_env=False) as client:
        for run in itertools.count():
            if stopping.is_set():
                break
            try:
                one_session(client, url, history, run)
            except SessionEnded as ended:
                stopping.wait(ended.retry_after_s)
            except httpx.HTTPError:
                stopping.wait(0.3)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
