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
import concurrent.futures
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from cinnamon_pool.errors import CinnamonError
from cinnamon_pool.lease.handle import ContainerLease

TOKEN_HEADER = "X-Cinnamon-Token"


class ToolError(CinnamonError):
    """A tool answered with an error (the page or the test did something wrong, as a rule)."""

    def __init__(self, tool: str, message: str) -> None:
        self.tool = tool
        super().__init__(f"{tool}: {message}")


class FencedClient:
    """An MCP client session that re-checks the lease before every call."""

    def __init__(self, client: Client, lease: ContainerLease) -> None:
        self.client = client
        self.lease = lease

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> str:
        self.lease.check()
        result = await self.client.call_tool(name, arguments or {})
        text = "\n".join(getattr(part, "text", "") for part in result.content)
        if result.is_error:
            raise ToolError(name, text.strip())
        return text

    async def list_tools(self) -> list[str]:
        self.lease.check()
        return [tool.name for tool in (await self.client.list_tools()).tools]


@asynccontextmanager
async def mcp_session(lease: ContainerLease, *, timeout_s: float = 60.0) -> AsyncIterator[FencedClient]:
    """An MCP session on the leased container; leaving it ends the session (HTTP DELETE)."""
    lease.check()
    http = create_mcp_http_client(headers={TOKEN_HEADER: lease.token})
    async with http:
        transport = streamable_http_client(lease.endpoint, http_client=http, terminate_on_close=True)
        async with Client(transport, mode="legacy", read_timeout_seconds=timeout_s) as client:
            yield FencedClient(client, lease)


class Browser:
    """Synchronous facade: one MCP session held open on a private event loop thread."""

    def __init__(self, lease: ContainerLease, *, timeout_s: float = 60.0) -> None:
        self.lease = lease
        self.timeout_s = timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cinnamon-browser", daemon=True)
        self._requests: asyncio.Queue[tuple[str, dict[str, Any], concurrent.futures.Future[str]] | None] | None = None
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

    def __exit__(self, *exc_info: object) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
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
                    name, arguments, result = request
                    try:
                        result.set_result(await session.call_tool(name, arguments))
                    except Exception as error:
                        result.set_exception(error)
        except BaseException as error:
            if not ready.done():
                ready.set_exception(error)
            raise

    def call(self, tool: str, arguments: dict[str, Any] | None = None) -> str:
        if self._requests is None:
            raise RuntimeError("use Browser as a context manager: with Browser(container) as browser: ...")
        self.lease.check()
        result: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._loop.call_soon_threadsafe(self._requests.put_nowait, (tool, arguments or {}, result))
        return result.result(timeout=self.timeout_s + 5)

    def navigate(self, url: str) -> str:
        return self.call("browser_navigate", {"url": url})

    def snapshot(self) -> str:
        return self.call("browser_snapshot")

    def click(self, element: str, ref: str) -> str:
        return self.call("browser_click", {"element": element, "ref": ref})

    def type(self, element: str, ref: str, text: str, *, submit: bool = False) -> str:
        return self.call("browser_type", {"element": element, "ref": ref, "text": text, "submit": submit})

    def screenshot(self) -> str:
        return self.call("browser_take_screenshot")
