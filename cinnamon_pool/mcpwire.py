"""The few MCP messages the pool writes itself (its probes, the gateway's own sessions), over
streamable HTTP, and reading a JSON-RPC answer from a JSON or an SSE body. Pure: no I/O."""

from __future__ import annotations

import contextlib
import json
from typing import Any

# Asked for by the pool's own clients; a server that does not know it answers with its newest.
PROTOCOL_VERSION = "2026-07-28"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def initialize(client: str, request_id: int = 1) -> dict[str, Any]:
    """An ``initialize`` request from the pool's ``client`` (its name as the server logs it)."""
    params = {"protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": {"name": client, "version": "1"}}
    return {"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": params}


def answer(content_type: str, body: str, request_id: int) -> dict[str, Any]:
    """The JSON-RPC answer to ``request_id`` in a JSON or an SSE response body ({} when none)."""
    if content_type.startswith("text/event-stream"):
        for line in body.splitlines():
            if line.startswith("data:"):
                with contextlib.suppress(ValueError):
                    message = json.loads(line[5:])
                    if isinstance(message, dict) and message.get("id") == request_id:
                        return message
        return {}
    with contextlib.suppress(ValueError):
        message = json.loads(body)
        if isinstance(message, dict):
            return message
    return {}
