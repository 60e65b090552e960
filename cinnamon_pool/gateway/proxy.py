"""Forward one authorized request to its container and stream the answer back.

Request bodies are read whole, up to ``gateway.max_body_bytes`` and within
``gateway.body_timeout_s`` for the whole body, before anything is sent: an MCP request is one
small JSON-RPC message, and a body that is too large or too slow is refused with nothing
forwarded. Responses (JSON, SSE, the GET event stream) stream back chunk by chunk as the
container writes them, never buffered; the answer to a POST or DELETE must begin within
``gateway.upstream_timeout_s`` (a GET stream may wait for events as long as it likes).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping

import httpx

from cinnamon_pool.gateway.auth import Refusal

# Never forwarded in either direction: connection-level headers, the bearer token, and the lease
# header a client might send (the gateway sets it from the lease it checked).
LEASE_HEADER = "X-Cinnamon-Token"
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers", "transfer-encoding",
     "upgrade", "host", "authorization", LEASE_HEADER.lower()}
)  # fmt: skip


# The only request headers that reach a container: what MCP's Streamable HTTP transport uses.
# Cookies, proxies' X-Forwarded-*, a client's own secrets and whatever a newer client adds stay here.
MCP_REQUEST_HEADERS = frozenset({"accept", "content-type", "mcp-session-id", "mcp-protocol-version", "last-event-id"})


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A response's headers, without the connection-level ones."""
    return {name: value for name, value in headers.items() if name.lower() not in HOP_BY_HOP}


def request_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A request's MCP headers, and only those (see :data:`MCP_REQUEST_HEADERS`)."""
    return {name: value for name, value in headers.items() if name.lower() in MCP_REQUEST_HEADERS}


async def read_body(chunks: AsyncIterator[bytes], declared: str | None, limit: int, timeout_s: float) -> bytes:
    """The whole request body, or a refusal: 413 past ``limit`` bytes (declared or sent), 408
    when the whole body has not arrived within ``timeout_s``."""
    if declared is not None:
        if not declared.isdigit():
            raise Refusal(400, "bad_request", "Content-Length must be a whole number")
        if int(declared) > limit:
            raise Refusal(413, "too_large", f"request bodies are at most {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):  # (not wait_for: no task per chunk on the hot path)
            async for chunk in chunks:
                body += chunk
                if len(body) > limit:
                    raise Refusal(413, "too_large", f"request bodies are at most {limit} bytes")
    except TimeoutError:
        raise Refusal(408, "slow_client", f"the request body did not arrive whole within {timeout_s:g} s") from None
    return bytes(body)


async def open_upstream(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    container: str = "",
    head_timeout_s: float | None = None,
) -> httpx.Response:
    """Send the request; the response's body is left to stream. 502 when the container does not
    accept the connection or breaks it before answering; 504 when the answer to a POST or DELETE
    has not begun within ``head_timeout_s`` (a GET is the session's event stream: no limit)."""
    request = client.build_request(method, url, headers=headers, content=body)
    limit = None if method == "GET" else head_timeout_s
    try:
        async with asyncio.timeout(limit):  # (not wait_for: no task of its own per request)
            return await client.send(request, stream=True)
    except TimeoutError:
        raise Refusal(504, "container_timeout", f"the container did not begin its answer within {limit:g} s", container) from None
    except httpx.TransportError as error:
        raise Refusal(502, "container_unreachable", f"the container did not answer ({type(error).__name__})", container) from None


async def relay(upstream: httpx.Response) -> AsyncIterator[bytes]:
    """The container's answer, chunk by chunk as it arrives; ends quietly when the upstream
    closes (its lease ended: the gateway closed it) or breaks, and always releases it."""
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    except (httpx.HTTPError, httpx.StreamClosed):
        return
    finally:
        await upstream.aclose()


def initialize_request(body: bytes) -> tuple[object, str] | None:
    """``(id, requested protocol version)`` when ``body`` is an MCP ``initialize`` request."""
    if not body.lstrip().startswith(b"{"):
        return None
    try:
        message = json.loads(body)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("method") != "initialize" or "id" not in message:
        return None
    params = message.get("params")
    version = params.get("protocolVersion") if isinstance(params, dict) else None
    return message["id"], version if isinstance(version, str) else ""
