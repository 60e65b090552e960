"""The gateway's side of gateway/unsafe.py: refuse code in the browser server unless the pool or
the session's API key allows it, drain a container that ran some, and hide such tools from the
tool list of holders that may not call them."""

from __future__ import annotations

import asyncio

import aiohttp
from starlette.responses import Response

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.gateway.auth import Refusal, Target
from cinnamon_pool.gateway.forward import Answer
from cinnamon_pool.gateway.proxy import forwarded_headers
from cinnamon_pool.gateway.unsafe import lists_tools, unsafe_calls, without_unsafe_tools
from cinnamon_pool.lease.gatewayside import GatewayStore
from cinnamon_pool.model import CLIENT_PREFIX


class CodeGuard:
    def __init__(self, config: PoolConfig, store: GatewayStore) -> None:
        self.config, self.store, self.leases = config, store, store.lease_client(config.rules)

    async def check(self, target: Target, body: bytes) -> bool:
        """Refuse a call of a tool that runs code in the browser server unless the pool or the
        session's key allows it, and drain the container that runs one (it restarts before its
        next lease). True when ``body`` lists the tools and the list must leave them out."""
        called, listing = unsafe_calls(body), lists_tools(body)
        if not called and not listing:
            return False
        allowed = self.config.container.unsafe_tools
        if not allowed and target.holder.startswith(CLIENT_PREFIX):
            key = await self.store.api_key(target.holder.removeprefix(CLIENT_PREFIX))
            allowed = key is not None and key.unsafe_tools
        if called and not allowed:
            raise Refusal(
                403,
                "unsafe_tool",
                f"{called[0]} runs code in the browser server, which outlives the lease: not allowed here "
                "(container.unsafe_tools, or an API key made with --unsafe-tools)",
                target.name,
            )
        if called and not await self.leases.drain(target.name, target.token, f"unsafe tool run: {called[0]}"):
            raise Refusal(403, "lease_ended", "the lease ended before the call was forwarded", target.name)
        return listing and not allowed

    async def tool_list(self, upstream: Answer) -> Response:
        """The container's ``tools/list`` answer, read whole (it is small), without unsafe tools."""
        try:
            async with asyncio.timeout(self.config.gateway.upstream_timeout_s):
                answer = await upstream.read()
        except (TimeoutError, aiohttp.ClientError, OSError):
            raise Refusal(502, "container_unreachable", "the container's tool list did not arrive whole") from None
        headers = {k: v for k, v in forwarded_headers(upstream.headers).items() if k.lower() != "content-length"}
        return Response(without_unsafe_tools(answer), status_code=upstream.status_code, headers=headers)
