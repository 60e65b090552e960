"""The gateway's tool-call figures: what it publishes, and what `status` accepts back from Redis."""

from __future__ import annotations

import json

from cinnamon_pool.gateway.toolcalls import ToolCalls, is_tool_call, reports_error, summary


def test_a_tools_call_and_an_error_result_are_told_from_the_bytes() -> None:
    assert is_tool_call(b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"browser_click"}}')
    assert not is_tool_call(b'{"jsonrpc":"2.0","id":1,"method":"initialize"}')
    assert reports_error(b'data: {"result":{"content":[],"isError":true}}') and not reports_error(b'{"isError":false}')
    assert reports_error(b'{"jsonrpc":"2.0","id":3,"error":{"code":-32603,"message":"boom"}}')


def test_the_published_figures_read_back_and_values_not_ours_are_skipped() -> None:
    calls = ToolCalls()
    for ms in (10, 20, 30, 40, 1000):
        calls.add("container-001", ms / 1000, failed=ms == 1000)
    published = calls.figures(now_ms=5)
    assert json.loads(published["container-001"]) == {"calls": 5, "errors": 1, "p50_ms": 30.0, "p95_ms": 1000.0, "at_ms": 5}
    raw = {b"container-001": published["container-001"], b"container-002": b"{not json", b"container-003": b'{"calls": 2, "errors": 5}'}
    raw[b"container-009"] = published["container-001"]
    assert summary(raw, ["container-001", "container-002", "container-003"]) == {
        "container-001": {"calls": 5, "errors": 1, "p50_ms": 30.0, "p95_ms": 1000.0}
    }, "garbage and more errors than calls are refused; containers not in the pool are not shown"
