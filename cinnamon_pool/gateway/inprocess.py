"""Requests a gateway sends to itself, served in its own process.

A session on connect whose lease landed on this gateway's host is forwarded to this gateway's own
container route (``{advertise_url}/{pool}/{name}/mcp``), which checks the lease token and hands over
the prepared session as for a job. Sent over HTTP, that is a second socket and a second parse of
every request. :class:`InProcess` is an httpx transport, mounted on the gateway's own URL, that
calls the application directly instead, and streams the answer back as it is written (httpx's
``ASGITransport`` buffers the whole answer, and an MCP GET stream never ends).

Nothing is skipped: the container route authorizes, counts and fences exactly as it does for a
request that came over the network.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
from starlette.types import ASGIApp

QUEUED_CHUNKS = 64  # the answer's chunks that may wait for the reader (then the app waits)
CLIENT = ("gateway", 0)  # what the container route sees as the client's address


class InProcess(httpx.AsyncBaseTransport):
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = b"".join([chunk async for chunk in request.stream])  # type: ignore[union-attr]
        exchange = _Exchange(body)
        url = request.url
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?")[0],
            "query_string": url.query,
            "root_path": "",
            "headers": [(name.lower(), value) for name, value in request.headers.raw],
            "client": CLIENT,
            "server": (url.host, url.port),
            "extensions": {},
        }
        task = asyncio.create_task(self._serve(scope, exchange))
        started = asyncio.ensure_future(exchange.head)
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            started.cancel()
            error = task.exception()
            raise httpx.RemoteProtocolError(f"the gateway's own route gave no answer ({type(error).__name__})", request=request)
        head = started.result()
        return httpx.Response(head["status"], headers=head.get("headers", []), stream=_Answer(exchange, task), request=request)

    async def _serve(self, scope: dict[str, Any], exchange: _Exchange) -> None:
        try:
            await self.app(scope, exchange.receive, exchange.send)
        finally:
            exchange.ended()


class _Exchange:
    """One request's ASGI side: its body handed over once, its answer queued for the reader."""

    def __init__(self, body: bytes) -> None:
        self.body: bytes | None = body
        self.head: asyncio.Future[MutableMapping[str, Any]] = asyncio.get_running_loop().create_future()
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUED_CHUNKS)
        self.closed = asyncio.Event()
        self.finished = False

    async def receive(self) -> dict[str, Any]:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.closed.wait()  # the reader closed the answer: the client is gone
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.head.set_result(message)
        elif message["type"] == "http.response.body" and not self.closed.is_set():
            if message.get("body"):
                await self.chunks.put(message["body"])
            if not message.get("more_body", False):
                await self.chunks.put(None)

    def ended(self) -> None:
        """The app is done (or broke): the reader ends once it has read what is queued."""
        self.finished = True
        with contextlib.suppress(asyncio.QueueFull):  # full: the reader sees `finished` when it drains
            self.chunks.put_nowait(None)


class _Answer(httpx.AsyncByteStream):
    def __init__(self, exchange: _Exchange, task: asyncio.Task[None]) -> None:
        self.exchange, self.task = exchange, task

    async def __aiter__(self) -> AsyncIterator[bytes]:
        exchange = self.exchange
        while not (exchange.finished and exchange.chunks.empty()):
            chunk = await exchange.chunks.get()
            if chunk is None:
                return
            yield chunk

    async def aclose(self) -> None:
        self.exchange.closed.set()
        if not self.task.done():
            self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
