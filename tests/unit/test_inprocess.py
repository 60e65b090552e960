"""The transport a gateway uses to reach its own container route in its process: the answer
streams as it is written, a reader that hangs up ends the app's side, and an app that breaks
before answering is a transport error (the connect route's 502)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cinnamon_pool.gateway.inprocess import InProcess

URL = "http://127.0.0.1:8930"


def gateway_like(ended: list[str], release: asyncio.Event) -> Starlette:
    async def echo(request: Request) -> Response:
        body = await request.body()
        return JSONResponse({"body": body.decode(), "path": request.url.path, "session": request.headers.get("mcp-session-id")})

    async def stream(_request: Request) -> Response:
        async def events() -> AsyncIterator[bytes]:
            try:
                yield b"data: first\n\n"
                await release.wait()  # an MCP GET stream: nothing more until something happens
                yield b"data: second\n\n"
                await asyncio.Event().wait()  # and it never ends by itself
            finally:
                ended.append("stream")

        return StreamingResponse(events(), media_type="text/event-stream")

    async def broken(_request: Request) -> Response:
        raise RuntimeError("the route broke")

    return Starlette(routes=[Route("/p/{name}/mcp", echo, methods=["POST"]), Route("/events", stream), Route("/broken", broken)])


def test_a_request_reaches_the_route_with_its_path_body_and_headers() -> None:
    async def scenario() -> dict[str, object]:
        app = gateway_like([], asyncio.Event())
        async with httpx.AsyncClient(mounts={URL: InProcess(app)}) as client:
            answer = await client.post(f"{URL}/p/cinnamon-1/mcp?x=1", content=b'{"id":1}', headers={"Mcp-Session-Id": "s1"})
            assert answer.status_code == 200
            return dict(answer.json())

    assert asyncio.run(scenario()) == {"body": '{"id":1}', "path": "/p/cinnamon-1/mcp", "session": "s1"}


def test_the_answer_streams_as_it_is_written_and_hanging_up_ends_the_routes_side() -> None:
    async def scenario() -> tuple[list[bytes], list[str]]:
        ended: list[str] = []
        release = asyncio.Event()
        app = gateway_like(ended, release)
        seen: list[bytes] = []
        async with httpx.AsyncClient(mounts={URL: InProcess(app)}) as client:
            async with client.stream("GET", f"{URL}/events") as answer:
                chunks = answer.aiter_raw()
                seen.append(await asyncio.wait_for(anext(chunks), 5))  # before the route wrote more: not buffered
                release.set()
                seen.append(await asyncio.wait_for(anext(chunks), 5))
                assert ended == [], "the stream is still open"
            await asyncio.sleep(0)
        return seen, ended

    seen, ended = asyncio.run(scenario())
    assert seen == [b"data: first\n\n", b"data: second\n\n"]
    assert ended == ["stream"], "the reader hung up: the route's stream ended with it"


def test_a_route_that_breaks_answers_500_as_over_the_network() -> None:
    async def scenario() -> int:
        app = gateway_like([], asyncio.Event())
        async with httpx.AsyncClient(mounts={URL: InProcess(app)}) as client:
            return (await client.get(f"{URL}/broken")).status_code  # Starlette's own error answer

    assert asyncio.run(scenario()) == 500


def test_an_app_that_breaks_before_any_answer_is_a_transport_error() -> None:
    async def bare(_scope: object, _receive: object, _send: object) -> None:
        raise RuntimeError("no answer at all")

    async def scenario() -> None:
        async with httpx.AsyncClient(mounts={URL: InProcess(bare)}) as client:
            with pytest.raises(httpx.TransportError, match="RuntimeError"):
                await client.get(f"{URL}/anything")

    asyncio.run(scenario())


def test_other_origins_are_not_served_in_process() -> None:
    async def scenario() -> None:
        app = gateway_like([], asyncio.Event())
        async with httpx.AsyncClient(mounts={URL: InProcess(app)}, timeout=2) as client:
            with pytest.raises(httpx.TransportError):
                await client.post("http://127.0.0.1:9/p/cinnamon-1/mcp", content=b"{}")  # port 9: nothing listens

    asyncio.run(scenario())
