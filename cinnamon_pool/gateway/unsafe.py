"""Tools that run code in the browser server, which outlives the lease: what the gateway keeps
from holders that may not run them.

playwright-mcp's ``browser_run_code_unsafe`` runs the caller's code in the server's own Node
process, with Playwright's ``page``: from there it reaches every context of that browser (the
next holder's prepared session among them), and a timer it sets outlives the call. The gateway
refuses such calls (403 ``unsafe_tool``) and leaves such tools out of ``tools/list`` unless the
pool allows them (``container.unsafe_tools``) or the session's API key does (``keys create
--unsafe-tools``); a container that ran one is drained, so it restarts before its next lease.
Which tools: playwright-mcp names its code-running tools ``*_unsafe``; ``browser_run_code`` is
the older name of the same tool. One call is let through for everyone: the pool's own residue
canary (``canary.CANARY_CODE``, exactly), which only reads the session's storage and tab count.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from cinnamon_pool.canary import CANARY_CODE

UNSAFE_NAME = re.compile(r"browser_run_code(_.*)?|.*_unsafe")
_TOOLS_CALL = re.compile(rb'"tools/call"')
_TOOLS_LIST = re.compile(rb'"tools/list"')


def is_unsafe(tool: str) -> bool:
    return bool(UNSAFE_NAME.fullmatch(tool))


def _messages(body: bytes) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a request body (one, or a batch); [] when it is not JSON."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return []
    found = parsed if isinstance(parsed, list) else [parsed]
    return [message for message in found if isinstance(message, dict)]


def unsafe_calls(body: bytes) -> list[str]:
    """The unsafe tools that ``body`` calls (``tools/call`` requests, batched or not)."""
    if not _TOOLS_CALL.search(body):
        return []
    names = []
    for message in _messages(body):
        params = message.get("params")
        if message.get("method") != "tools/call" or not isinstance(params, dict):
            continue
        tool = params.get("name")
        if isinstance(tool, str) and is_unsafe(tool) and params.get("arguments") != {"code": CANARY_CODE}:
            names.append(tool)
    return names


def lists_tools(body: bytes) -> bool:
    """Whether ``body`` asks for the tool list (whose answer the gateway then filters)."""
    return bool(_TOOLS_LIST.search(body)) and any(message.get("method") == "tools/list" for message in _messages(body))


def _filtered(message: Any) -> Any:
    if isinstance(message, list):
        return [_filtered(item) for item in message]
    result = message.get("result") if isinstance(message, dict) else None
    if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
        return message
    tools = result["tools"]
    kept = [tool for tool in tools if not (isinstance(tool, dict) and is_unsafe(str(tool.get("name", ""))))]
    return {**message, "result": {**result, "tools": kept}}


def without_unsafe_tools(answer: bytes) -> bytes:
    """A ``tools/list`` answer (JSON, or an SSE stream of ``data:`` lines) without unsafe tools."""
    stripped = answer.lstrip()
    if stripped.startswith((b"{", b"[")):
        try:
            return json.dumps(_filtered(json.loads(answer))).encode()
        except ValueError:
            return answer
    lines = []
    for line in answer.split(b"\n"):
        if line.startswith(b"data:"):
            with contextlib.suppress(ValueError):
                line = b"data: " + json.dumps(_filtered(json.loads(line[5:]))).encode()
        lines.append(line)
    return b"\n".join(lines)
