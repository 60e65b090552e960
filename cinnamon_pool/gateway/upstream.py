"""The gateway's own MCP client: raw JSON-RPC over streamable HTTP to one container, enough for
the sessions it holds itself (prepared sessions, keepers, traces). Its messages are mcpwire.py's,
as the supervisor's probes' are."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from cinnamon_pool import mcpwire
from cinnamon_pool.errors import SessionFailed

CLIENT = "cinnamon-pool-gateway"
END_TIMEOUT_S = 5.0  # a DELETE that gets no answer in this long is given up (the container is broken)


@dataclass(frozen=True)
class Upstream:
    """Raw JSON-RPC over streamable HTTP to one container: enough for the gateway's own sessions."""

    http: httpx.AsyncClient
    url: str

    async def initialize(self) -> tuple[str, dict[str, Any]]:
        """A new session: its id and the server's initialize result."""
        response = await self.http.post(self.url, json=mcpwire.initialize(CLIENT), headers=mcpwire.ACCEPT)
        session = response.headers.get("mcp-session-id")
        result = _answer(response, 1).get("result")
        if not session or not isinstance(result, dict):
            raise SessionFailed(f"initialize answered HTTP {response.status_code} without a session")
        await self.post(session, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        return session, result

    async def post(self, session: str, message: Mapping[str, Any]) -> httpx.Response:
        response = await self.http.post(self.url, json=dict(message), headers={**mcpwire.ACCEPT, "mcp-session-id": session})
        if response.status_code >= 400:
            raise SessionFailed(f"{message.get('method')} answered HTTP {response.status_code}")
        return response

    async def call_tool(self, session: str, tool: Mapping[str, Any]) -> str:
        """A tool's text answer; SessionFailed when the tool reports an error."""
        request_id = secrets.randbelow(1 << 30) + 2
        response = await self.post(session, {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": dict(tool)})
        result = _answer(response, request_id).get("result")
        if not isinstance(result, dict):
            raise SessionFailed(f"{tool['name']} did not answer with a result")
        text = "\n".join(str(part.get("text", "")) for part in result.get("content", []) if isinstance(part, dict))
        if result.get("isError"):
            raise SessionFailed(f"{tool['name']}: {text[:200]}")
        return text

    async def ping(self, session: str) -> bool:
        try:
            await self.post(session, {"jsonrpc": "2.0", "id": 0, "method": "ping"})
        except (SessionFailed, httpx.HTTPError):
            return False
        return True

    async def end(self, session: str) -> None:
        """DELETE the session (with --isolated its context goes with it). Best effort."""
        with contextlib.suppress(httpx.HTTPError):
            await self.http.delete(self.url, headers={"mcp-session-id": session}, timeout=END_TIMEOUT_S)


def _answer(response: httpx.Response, request_id: int) -> dict[str, Any]:
    return mcpwire.answer(response.headers.get("content-type", ""), response.text, request_id)
