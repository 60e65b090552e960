"""Job-side helpers: talk MCP to a leased container with the official ``mcp`` client (2.x).

Every call checks the lease first (self-fencing), so a holder whose lease was lost makes no
further call to the endpoint. ``mcp_session`` is the async form; :class:`Browser` is a small
synchronous facade for jobs that would rather not write asyncio:

    with Browser(container) as browser:
        browser.navigate("data:text/html,<h1>hi</h1>")
        text = browser.snapshot()
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import re
import ssl
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from cinnamon_pool import tokens
from cinnamon_pool.canary import CANARY_CODE, residue_in
from cinnamon_pool.errors import BrowserSessionEnded, CinnamonError, LeaseLost
from cinnamon_pool.lease.handle import JOB_PHASE, ContainerLease, SessionFigures
from cinnamon_pool.model import Artifacts
from cinnamon_pool.safefiles import private_folder, safe_name, write_private

TOKEN_HEADER = "X-Cinnamon-Token"
TRACE_HEADER = "X-Cinnamon-Trace"  # the gateway's answer to initialize: where it keeps the lease's trace
MCP_TIMEOUT_S, MCP_READ_TIMEOUT_S = 30.0, 300.0  # as the mcp client's transports default them
# playwright-mcp's answers describe the page: "- Page URL: <url>" and "- Console: 2 errors, 0
# warnings", the page's running count since it loaded.
PAGE_URL = re.compile(r"^- Page URL: (.*)$", re.MULTILINE)
PAGE_CONSOLE = re.compile(r"^- Console: (\d+) errors?", re.MULTILINE)


def artifact_folder(lease: ContainerLease) -> Path:
    """``<artifacts root>/<date>/<test run id>/``; the id is validated, and sanitized again here."""
    return Path(lease.artifacts_root) / f"{lease.clock.now():%Y-%m-%d}" / safe_name(lease.test_run_id)


class ToolError(CinnamonError):
    """A tool answered with an error (the page or the test did something wrong, as a rule)."""

    def __init__(self, tool: str, message: str) -> None:
        self.tool = tool
        super().__init__(f"{tool}: {message}")


def _text(tool: str, parts: list[Any]) -> str:
    return "\n".join(getattr(part, "text", "") for part in parts if getattr(part, "type", "text") == "text")


def _page_console(text: str) -> tuple[str, int] | None:
    """(page URL, console errors since it loaded) from a tool's answer; None when it says none."""
    url, errors = PAGE_URL.search(text), PAGE_CONSOLE.search(text)
    return (url.group(1) if url else "", int(errors.group(1))) if errors else None


class FencedClient:
    """An MCP client session that re-checks the lease before every call."""

    def __init__(self, client: Client, lease: ContainerLease) -> None:
        self.client = client
        self.lease = lease

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> str:
        return _text(name, await self.call_tool_raw(name, arguments))

    async def call_tool_raw(self, name: str, arguments: dict[str, Any] | None = None, *, counted: bool = True) -> list[Any]:
        """The result's content parts (text, image...); raises ToolError when the tool failed.
        ``counted=False``: not one of the job's calls (the helpers' own, saving artifacts)."""
        self.lease.check()
        self.lease.enter(name)
        started = time.perf_counter()
        result = await self.client.call_tool(name, arguments or {})
        text = _text(name, list(result.content))
        if counted:
            self.lease.record_call(time.perf_counter() - started, _page_console(text), new_page=name == "browser_navigate")
        if result.is_error:
            raise ToolError(name, text.strip())
        self.lease.enter(JOB_PHASE)
        return list(result.content)

    async def list_tools(self) -> list[str]:
        self.lease.check()
        return [tool.name for tool in (await self.client.list_tools()).tools]


@functools.cache
def _plain_http_tls() -> ssl.SSLContext:
    """The TLS context of a client that speaks plain HTTP (the gateway on loopback): never used,
    but httpx makes one for every client, and its default (the CA bundle loaded) costs ~30 ms of
    CPU per job. An empty one, made once per process, costs nothing."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


@asynccontextmanager
async def mcp_session(lease: ContainerLease, *, timeout_s: float = 60.0) -> AsyncIterator[FencedClient]:
    """An MCP session on the leased container; leaving it ends the session (HTTP DELETE)."""
    lease.check()
    lease.enter("initialize")
    # The mcp client's own HTTP stack (httpx2), with its transports' time-outs: 30 s, and 300 s
    # to read (a server may hold a response stream open).
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {lease.token}", TOKEN_HEADER: tokens.fingerprint(lease.token)},
        timeout=httpx2.Timeout(MCP_TIMEOUT_S, read=MCP_READ_TIMEOUT_S),
        verify=True if lease.endpoint.startswith("https:") else _plain_http_tls(),
    )

    async def fence(request: Any) -> None:
        # The last check before the bytes leave: a holder paused after an earlier check (SIGSTOP,
        # a long GC) and resumed after its lease expired stops here. Ending our own session
        # (DELETE) stays allowed: it touches no other holder's state.
        if request.method != "DELETE":
            lease.check()

    async def note_trace(response: Any) -> None:
        if TRACE_HEADER in response.headers:  # the answer to initialize: the gateway records this lease
            lease.note_trace(response.headers[TRACE_HEADER])

    http.event_hooks["request"].append(fence)
    http.event_hooks["response"].append(note_trace)
    async with http:
        transport = streamable_http_client(lease.endpoint, http_client=http, terminate_on_close=True)
        async with Client(transport, mode="legacy", read_timeout_seconds=timeout_s) as client:
            lease.enter(JOB_PHASE)
            yield FencedClient(client, lease)


def _ending(session: concurrent.futures.Future[None]) -> str:
    """Why a session's task ended: its exception (the first of a group), or that it ended."""
    error = session.exception() if not session.cancelled() else None
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return "it ended" if error is None else f"{type(error).__name__}: {error}"


class Browser:
    """Synchronous facade: one MCP session held open on a private event loop thread."""

    def __init__(self, lease: ContainerLease, *, timeout_s: float = 60.0) -> None:
        self.lease = lease
        self.timeout_s = timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cinnamon-browser", daemon=True)
        self._requests: asyncio.Queue[tuple[str, dict[str, Any], bool, concurrent.futures.Future[list[Any]]] | None] | None = None
        self._counted = True  # False while the helper saves artifacts: those calls are not the job's
        self.last_snapshot: str | None = None
        self._session_done: concurrent.futures.Future[None] | None = None

    def __enter__(self) -> Browser:
        self._thread.start()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._session_done = asyncio.run_coroutine_threadsafe(self._serve(ready), self._loop)
        try:
            ready.result(timeout=self.timeout_s)
        except BaseException:
            self._shutdown()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        failed_in = self.lease.phase  # saving the artifacts calls tools: the failure's context stays this
        try:
            self.lease.add_session(self.close(failed=exc is not None))
        finally:
            self.lease.enter(failed_in)

    def close(self, *, failed: bool = False) -> SessionFigures:
        """End the session (saving its artifacts first, when the lease's ``artifacts`` policy
        asks: on failure, always or never); returns its figures."""
        artifacts = None
        policy = self.lease.artifacts
        try:
            wanted = policy == Artifacts.ALWAYS or (failed and policy == Artifacts.FAILURE)
            if wanted and self.lease.artifacts_root and self._requests is not None:
                artifacts = self._save_artifacts()
        finally:
            seconds = self._shutdown()
        return SessionFigures(seconds, artifacts)

    def _save_artifacts(self) -> str | None:
        """The last accessibility snapshot, a screenshot and the console log, for the person
        who reads the error log. Best effort: a broken browser must not hide the job's error."""
        folder = artifact_folder(self.lease)
        self._counted = False
        try:
            private_folder(folder)  # 0700, files 0600: what a test typed may show in them
            try:
                write_private(folder / "snapshot.md", self.call("browser_snapshot"))
            except Exception:
                if self.last_snapshot is not None:
                    write_private(folder / "snapshot.md", self.last_snapshot)
            with contextlib.suppress(Exception):
                write_private(folder / "screenshot.png", self.screenshot())
            with contextlib.suppress(Exception):
                write_private(folder / "console.log", self.call("browser_console_messages"))
        except OSError:
            return None
        return str(folder)

    def _shutdown(self) -> float:
        """End the session; returns how long that took."""
        started = self.lease.clock.monotonic()
        self._end_session()
        return self.lease.clock.monotonic() - started

    def _end_session(self) -> None:
        """Leave the MCP session (HTTP DELETE: with --isolated its browser and state die with it)."""
        if self._requests is not None:
            self._loop.call_soon_threadsafe(self._requests.put_nowait, None)
        if self._session_done is not None:
            with suppress(BaseException):
                self._session_done.result(timeout=self.timeout_s)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def _serve(self, ready: concurrent.futures.Future[None]) -> None:
        # The MCP client's task group must be entered and left in one task: this one.
        self._requests = asyncio.Queue()
        try:
            async with mcp_session(self.lease, timeout_s=self.timeout_s) as session:
                ready.set_result(None)
                while (request := await self._requests.get()) is not None:
                    name, arguments, counted, result = request
                    try:
                        result.set_result(await session.call_tool_raw(name, arguments, counted=counted))
                    except Exception as error:
                        result.set_exception(error)
        except BaseException as error:
            if not ready.done():
                ready.set_exception(error)
            raise

    def call(self, tool: str, arguments: dict[str, Any] | None = None) -> str:
        """Call any playwright-mcp tool; its text. Remembers the last page snapshot it saw."""
        text = _text(tool, self.call_raw(tool, arguments))
        if "### Snapshot" in text or "### Page" in text:
            self.last_snapshot = text
        return text

    def call_raw(self, tool: str, arguments: dict[str, Any] | None = None) -> list[Any]:
        if self._requests is None:
            raise RuntimeError("use Browser as a context manager: with Browser(container) as browser: ...")
        # The lease is checked in the session's task (FencedClient) and again just before the
        # request leaves (the HTTP hook). A LeaseLost raised in that hook stops the request, but
        # the MCP client does not hand it back: the call would wait out its timeout. So the wait
        # looks at the lease every second and reports the lost lease as such.
        result: concurrent.futures.Future[list[Any]] = concurrent.futures.Future()
        self._loop.call_soon_threadsafe(self._requests.put_nowait, (tool, arguments or {}, self._counted, result))
        deadline = self.lease.clock.monotonic() + self.timeout_s + 5
        while True:
            try:
                return result.result(timeout=1.0)
            except concurrent.futures.TimeoutError:
                reason = self.lease.lost_reason
                if reason is not None:
                    raise LeaseLost(self.lease.name, reason) from None
                ended = self._session_done
                if ended is not None and ended.done() and not result.done():  # it will never answer
                    raise BrowserSessionEnded(self.lease.name, _ending(ended)) from None
                if self.lease.clock.monotonic() >= deadline:
                    raise

    def navigate(self, url: str) -> str:
        return self.call("browser_navigate", {"url": url})

    def snapshot(self) -> str:
        return self.call("browser_snapshot")

    def click(self, element: str, target: str) -> str:
        """Click ``target`` (a ref from the snapshot, like ``e3``, or a selector)."""
        return self.call("browser_click", {"element": element, "target": target})

    def type(self, element: str, target: str, text: str, *, submit: bool = False) -> str:
        return self.call("browser_type", {"element": element, "target": target, "text": text, "submit": submit})

    def evaluate(self, function: str) -> str:
        """Run ``function`` (JavaScript, e.g. ``() => document.title``) in the page."""
        return self.call("browser_evaluate", {"function": function})

    def screenshot(self) -> bytes:
        """The page as PNG bytes."""
        result = self.call_raw("browser_take_screenshot", {"type": "png"})
        image = next((part for part in result if getattr(part, "type", "") == "image"), None)
        if image is None:
            raise ToolError("browser_take_screenshot", "answered without an image")
        return base64.b64decode(image.data)


def find_residue(lease: ContainerLease, timeout_s: float) -> str | None:
    """Open a fresh session and look for what an earlier job could have left: cookies,
    localStorage (origins with storage) or extra tabs. None when the session is clean."""
    with Browser(lease, timeout_s=timeout_s) as browser:
        return residue_in(browser.call("browser_run_code_unsafe", {"code": CANARY_CODE}))
