"""The one door for data read from Redis: anything in, a domain value or BadValue out."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cinnamon_pool import decode
from cinnamon_pool.errors import InvalidIdentifier
from cinnamon_pool.model import validate_endpoint

GRANT = {
    "name": "container-001", "container_id": "a" * 64, "endpoint": "http://127.0.0.1:3001/mcp", "host": "host-a", "slot": 1,
    "token": f"{'0' * 16}:7:{'1' * 16}", "test_run_id": "run", "granted_ms": 1, "expires_ms": 2, "cap_ms": 3,
}  # fmt: skip


@pytest.mark.parametrize(
    "endpoint",
    [
        "file:///etc/passwd",
        "http://user:secret@127.0.0.1:3001/mcp",
        "http://evil.example@127.0.0.1/mcp",
        "http://127.0.0.1:3001/mcp\r\nX-Injected: 1",
        "http://" + "a" * 300 + "/mcp",
        "gopher://127.0.0.1/",
        "http:///mcp",
    ],
)
def test_a_worker_never_connects_to_a_forged_endpoint(endpoint: str) -> None:
    with pytest.raises(InvalidIdentifier, match="endpoint"):
        validate_endpoint(endpoint)
    with pytest.raises(decode.BadValue, match="endpoint"):
        decode.grant(json.dumps({**GRANT, "endpoint": endpoint}))


def test_a_grant_as_the_scripts_write_it_decodes() -> None:
    grant = decode.grant(json.dumps(GRANT).encode())
    assert (grant.endpoint, grant.host, grant.slot) == ("http://127.0.0.1:3001/mcp", "host-a", 1)
    assert validate_endpoint("https://gw.example.org:8930/default/container-001/mcp")


@pytest.mark.parametrize("host", ["", "a b", "../x", "h" * 200, 5])
def test_a_forged_host_is_refused(host: object) -> None:
    with pytest.raises(decode.BadValue, match="host"):
        decode.grant(json.dumps({**GRANT, "host": host}))


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_decode_or_raise_bad_value(raw: bytes) -> None:
    for call in (
        lambda: decode.grant(raw),
        lambda: decode.record(b"container-001", raw),
        lambda: decode.lease(b"container-001", raw),
        lambda: decode.event(b"1-0", {b"kind": raw, b"at_ms": raw}),
        lambda: decode.event(b"1-0", {b"kind": b"released", b"at_ms": b"1", b"token": raw, b"test_run_id": raw, b"outcome": raw,
                                      b"duration_ms": raw}),
    ):  # fmt: skip
        with contextlib.suppress(decode.BadValue):  # and nothing else: any other exception fails the test
            call()


def test_shortened_values_are_one_escaped_line() -> None:
    shown = decode.shorten(b"\x1b[2J\nline\x00" + b"x" * 500)
    assert "\n" not in shown and "\x1b" not in shown and len(shown) <= 80
    assert shown.startswith("\\x1b[2J\\nline")
