"""A session on connect whose initialize the container answered just as Redis went away: the
session is not kept, its answer is closed, and the client is told the store is unreachable."""

from __future__ import annotations

import asyncio
import json

import fakeredis
import fakeredis.aioredis
import httpx
import pytest
from starlette.requests import Request

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.errors import StoreUnavailable
from cinnamon_pool.gateway.connect import OnConnect
from cinnamon_pool.lease.apikeys import ApiKeys
from cinnamon_pool.lease.gatewayside import GatewayStore
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import ContainerRecord, ContainerState

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}}}


class Answer(httpx.AsyncByteStream):
    """The container's answer body; remembers whether the gateway closed it."""

    def __init__(self) -> None:
        self.closed = False

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        yield b'event: message\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\n\n'

    async def aclose(self) -> None:
        self.closed = True


def initialize(key: str, body: bytes) -> Request:
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:  # the client stays connected
            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    headers = [(b"authorization", f"Bearer {key}".encode()), (b"content-type", b"application/json"),
               (b"accept", b"application/json, text/event-stream"), (b"content-length", str(len(body)).encode())]  # fmt: skip
    scope = {"type": "http", "method": "POST", "path": "/qa/mcp", "headers": headers, "query_string": b"", "path_params": {"pool": "qa"}}
    return Request(scope, receive)


def test_an_initialize_answered_while_redis_went_away_leaves_no_session_and_no_open_answer() -> None:
    server = fakeredis.FakeServer()
    config = PoolConfig.from_tables(
        {"pool": {"name": "qa", "min_size": 1, "initial_size": 1, "max_size": 1}, "container": {"host_port_range": "3990-3990"}}
    )
    supervisor = LeaseStore(fakeredis.FakeRedis(server=server), "qa")
    endpoint = config.gateway.endpoint("qa", "container-001")
    supervisor.register(ContainerRecord("container-001", "a" * 64, 1, "h", endpoint, ContainerState.STARTING))
    key = ApiKeys(fakeredis.FakeRedis(server=server), "qa").create("agent")
    answer = Answer()

    def container(request: httpx.Request) -> httpx.Response:
        server.connected = False  # Redis goes away while the container answers the initialize
        return httpx.Response(200, headers={"mcp-session-id": "s-1", "content-type": "text/event-stream"}, stream=answer)

    async def scenario() -> OnConnect:
        async with httpx.AsyncClient(transport=httpx.MockTransport(container)) as http:
            on_connect = OnConnect(config, GatewayStore(fakeredis.aioredis.FakeRedis(server=server), "qa", "h"), http, b"k" * 32)
            with pytest.raises(StoreUnavailable):
                await on_connect.handle(initialize(key, json.dumps(INITIALIZE).encode()))
            return on_connect

    on_connect = asyncio.run(scenario())
    assert answer.closed, "the container's answer was closed, not left to the garbage collector"
    assert on_connect.held == {}, "no session is kept that Redis has no binding for"
