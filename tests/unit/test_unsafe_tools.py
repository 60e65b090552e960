"""Which calls run code in the browser server, and the tool list without them (gateway/unsafe.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from cinnamon_pool.canary import CANARY_CODE
from cinnamon_pool.gateway.unsafe import is_unsafe, lists_tools, unsafe_calls, without_unsafe_tools


def call(name: str, arguments: Mapping[str, object] | None = None, request_id: int = 1) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": name, "arguments": arguments or {}}}


def test_code_running_tools_are_known_by_name_and_page_level_ones_are_not() -> None:
    for name in ("browser_run_code_unsafe", "browser_run_code", "browser_eval_node_unsafe"):
        assert is_unsafe(name), name
    for name in ("browser_evaluate", "browser_navigate", "browser_tabs", "unsafe_looking_but_not", "browser_run_codex"):
        assert not is_unsafe(name), name


def test_a_call_is_found_alone_in_a_batch_and_not_in_other_methods_or_bad_json() -> None:
    assert unsafe_calls(json.dumps(call("browser_run_code_unsafe", {"code": "x"})).encode()) == ["browser_run_code_unsafe"]
    batch = [call("browser_navigate", {"url": "data:,x"}), call("browser_run_code", {"code": "x"}, 2)]
    assert unsafe_calls(json.dumps(batch).encode()) == ["browser_run_code"], "a batch cannot smuggle one past"
    assert unsafe_calls(json.dumps(call("browser_navigate")).encode()) == []
    assert unsafe_calls(b'{"method": "tools/call", "params": {"name": "browser_run_code_unsafe"') == [], (
        "not JSON: the server refuses it too"
    )
    assert unsafe_calls(json.dumps({"method": "tools/list", "note": "tools/call"}).encode()) == []


def test_the_pools_own_canary_passes_and_anything_else_in_its_place_does_not() -> None:
    assert unsafe_calls(json.dumps(call("browser_run_code_unsafe", {"code": CANARY_CODE})).encode()) == []
    tampered = {"code": CANARY_CODE + " page.route('**', r => r.abort());"}
    assert unsafe_calls(json.dumps(call("browser_run_code_unsafe", tampered)).encode()) == ["browser_run_code_unsafe"]
    extra = {"code": CANARY_CODE, "more": 1}
    assert unsafe_calls(json.dumps(call("browser_run_code_unsafe", extra)).encode()) == ["browser_run_code_unsafe"]


def test_the_tool_list_loses_the_unsafe_tools_as_json_and_as_an_sse_stream() -> None:
    tools = [{"name": "browser_navigate"}, {"name": "browser_run_code_unsafe"}, {"name": "browser_snapshot"}]
    answer = {"jsonrpc": "2.0", "id": 3, "result": {"tools": tools, "nextCursor": "c"}}
    assert lists_tools(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}).encode())
    assert not lists_tools(json.dumps(call("tools/list")).encode()), "a tool named so is not a listing"
    kept = json.loads(without_unsafe_tools(json.dumps(answer).encode()))
    assert [t["name"] for t in kept["result"]["tools"]] == ["browser_navigate", "browser_snapshot"]
    assert kept["result"]["nextCursor"] == "c" and kept["id"] == 3, "the rest of the answer is kept"
    stream = b"event: message\r\ndata: " + json.dumps(answer).encode() + b"\r\n\r\n"
    filtered = without_unsafe_tools(stream)
    assert filtered.startswith(b"event: message\r\ndata: ") and filtered.endswith(b"\n\r\n")
    data = json.loads(filtered.split(b"data: ", 1)[1])
    assert [t["name"] for t in data["result"]["tools"]] == ["browser_navigate", "browser_snapshot"]
    assert without_unsafe_tools(b"not json") == b"not json"
