"""A real `cinnamon-pool gateway` process in front of a fake-mcp server, with a real redis-server:
who gets through, what is refused with which status, and what reaches the container."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import cast

import httpx
import pytest

from cinnamon_pool.browser import Browser
from cinnamon_pool.errors import BrowserSessionEnded
from cinnamon_pool.lease.handle import ContainerLease
from cinnamon_pool.model import ContainerRecord, ContainerState
from cinnamon_pool.tokens import fingerprint
from tests.integration.gateway_stand import (
    MCP_HEADERS,
    PER_CLIENT,
    STREAMS_PER_LEASE,
    UPSTREAM_TIMEOUT_S,
    Stand,
    gateway_metric,
    initialize,
)

pytestmark = pytest.mark.redis


def test_a_job_drives_its_container_through_the_gateway_with_its_lease_token(stand: Stand) -> None:
    grant = stand.grant()
    assert grant.endpoint == f"{stand.base}/gw/container-001/mcp", "jobs get the gateway's URL"
    lease = ContainerLease.from_grant("gw", grant, fence_after_s=60)
    with Browser(lease, timeout_s=10) as browser:
        assert "hello" in browser.navigate("data:text/html,<h1>hello</h1>")
    (call,) = stand.calls()
    assert call["token"] == fingerprint(grant.token), "the call reached the container under this lease"
    assert call["authorization"] is False, "the gateway strips the bearer token before forwarding"
    assert call["host"] == f"127.0.0.1:{stand.config.container.host_ports[0]}", "the Host the container's --allowed-hosts lists"
    assert lease.cleanup_seconds > 0, "the session was ended (DELETE) through the gateway"


def test_only_the_mcp_headers_and_the_checked_lease_token_reach_the_container(stand: Stand) -> None:
    grant = stand.grant()
    session = stand.post(initialize(), grant.token).headers["mcp-session-id"]
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "browser_snapshot", "arguments": {}}}
    extra = {"Cookie": "sid=secret", "X-Forwarded-For": "10.0.0.9", "X-Api-Key": "mine", "X-Cinnamon-Token": "forged"}
    assert stand.post(call, grant.token, **{"mcp-session-id": session, "mcp-protocol-version": "2025-06-18"}, **extra).status_code == 200
    (seen,) = stand.calls()
    assert seen["token"] == fingerprint(grant.token), "the lease header is the gateway's, never the client's"
    let_through = set(cast(list[str], seen["headers"])) - {"host", "content-length", "accept-encoding", "user-agent", "connection"}
    assert let_through == {"accept", "content-type", "mcp-session-id", "mcp-protocol-version", "x-cinnamon-token"}, seen["headers"]


def test_tool_calls_are_timed_and_counted_per_container_and_status_shows_them(stand: Stand) -> None:
    from cinnamon_pool.pool import ContainerPool

    grant = stand.grant()
    lease = ContainerLease.from_grant("gw", grant, fence_after_s=60)
    with Browser(lease, timeout_s=10) as browser:
        browser.navigate("data:text/html,<h1>one</h1>")
        browser.snapshot()
        httpx.post(f"{stand.fake}/_fake/mode", json={"mode": "fail"}, timeout=5).raise_for_status()
        with pytest.raises(Exception, match="injected failure"):
            browser.snapshot()
    metrics = httpx.get(f"{stand.base}/metrics", timeout=5).text
    assert 'cinnamon_pool_gateway_tool_calls_total{container="container-001",pool="gw",result="ok"} 2.0' in metrics, metrics
    assert 'cinnamon_pool_gateway_tool_calls_total{container="container-001",pool="gw",result="error"} 1.0' in metrics
    assert 'cinnamon_pool_gateway_tool_call_seconds_count{container="container-001",pool="gw"} 3.0' in metrics
    pool = ContainerPool(stand.config, client=stand.store.redis)
    deadline = time.monotonic() + 10
    while (shown := pool.status()["containers"][0])["mcp_p50_ms"] is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert shown["mcp_p50_ms"] > 0 and shown["mcp_p95_ms"] >= shown["mcp_p50_ms"] and shown["mcp_error_rate"] == round(1 / 3, 4), shown


def test_every_refusal_has_its_status_a_json_body_and_forwards_nothing(stand: Stand) -> None:
    grant = stand.grant()
    stale = grant.token
    other_host = ContainerRecord("container-001", "b" * 64, 1, "elsewhere", "http://127.0.0.1:1/mcp", ContainerState.STARTING)
    cases: list[tuple[str, Callable[[], httpx.Response], int, str | None]] = [
        ("no token", lambda: stand.post(initialize(), None), 401, "no_token"),
        ("not a bearer token", lambda: stand.post(initialize(), None, Authorization="Basic dXNlcjpwYXNz"), 401, "no_token"),
        ("forged token", lambda: stand.post(initialize(), f"{'0' * 16}:1:{'0' * 16}"), 403, "not_current"),
        ("a 10 KB token", lambda: stand.post(initialize(), "x" * 10_000), 403, "bad_token"),
        ("another pool", lambda: stand.post(initialize(), grant.token, url=f"{stand.base}/other/container-001/mcp"), 404, "unknown_pool"),
        ("a slot this host has no port for", lambda: stand.post(initialize(), grant.token, url=f"{stand.base}/gw/container-002/mcp"), 404, "unknown_container"),
        ("not a container name", lambda: stand.post(initialize(), grant.token, url=f"{stand.base}/gw/..%2Fetc/mcp"), 404, None),
        ("an encoded separator", lambda: stand.post(initialize(), grant.token, url=f"{stand.base}/gw/container-001%2F..%2Fx/mcp"), 404, None),
        ("another path", lambda: stand.post(initialize(), grant.token, url=f"{stand.base}/gw/container-001/admin"), 404, "not_found"),
        ("a body over max_body_bytes", lambda: stand.post({"pad": "x" * 70_000}, grant.token), 413, "too_large"),
    ]  # fmt: skip
    for what, send, status, reason in cases:
        response = send()
        assert response.status_code == status, f"{what}: expected {status}, got {response.status_code} {response.text[:200]}"
        body = response.json()
        assert set(body) == {"error", "container"} and body["error"], f"{what}: {body}"
        if reason is not None:
            metrics = httpx.get(f"{stand.base}/metrics", timeout=5).text
            assert f'cinnamon_pool_gateway_refusals_total{{pool="gw",reason="{reason}"}}' in metrics, what
    stand.store.release(grant.name, grant.token)
    assert stand.post(initialize(), stale).status_code == 403, "a released lease's token"
    stand.store.redis.hset(stand.store.keys.containers, "container-001", json.dumps(other_host.to_json_dict()))
    assert stand.post(initialize(), stale).json()["error"].startswith("the container is served by the gateway of host")
    assert stand.calls() == [], "nothing was forwarded"
    log = stand.pool_log()
    assert "ACCESS_DENIED" in log and "Reason: no_token" in log and "Client: 127.0.0.1" in log
    assert log.count("Reason: no_token") == 1, "refusals are logged once per container, reason and client per minute"


def test_slow_and_oversized_requests_are_cut_and_the_gateway_keeps_serving(stand: Stand) -> None:
    grant = stand.grant()
    host, port = stand.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        slow.sendall(
            f"POST /gw/container-001/mcp HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {grant.token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
        )  # then nothing more: a client that trickles its body
        started = time.monotonic()
        answer = slow.recv(4096).decode()
        assert answer.startswith("HTTP/1.1 408"), answer[:200]
        assert time.monotonic() - started < 5, "cut after body_timeout_s (1 s), not left hanging"
    with socket.create_connection((host, int(port)), timeout=10) as huge:
        huge.sendall(b"GET /gw/container-001/mcp HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n")
        assert huge.recv(4096).startswith(b"HTTP/1.1 431"), "headers over 16 KiB are refused"
    assert stand.calls() == [], "nothing was forwarded"
    response = stand.post(initialize(), grant.token)
    assert response.status_code == 200 and response.headers["mcp-session-id"], "the gateway still serves"
    assert stand.gateway.poll() is None


def test_a_body_that_trickles_past_its_whole_deadline_is_cut_and_never_forwarded(stand: Stand) -> None:
    """A byte every 0.1 s never leaves the connection silent for body_timeout_s (1 s), but the
    whole body (4 s) is late: 408 at the deadline, and the initialize never reaches the container."""
    grant = stand.grant()
    body = json.dumps(initialize()).encode()
    host, port = stand.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as trickle:
        trickle.sendall(
            f"POST /gw/container-001/mcp HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {grant.token}\r\n"
            f"Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        started = time.monotonic()
        with contextlib.suppress(OSError):  # the gateway closes the connection at the deadline
            for byte in body[: int(4 / 0.1)]:
                trickle.sendall(bytes([byte]))
                time.sleep(0.1)
        answer = trickle.recv(4096).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 408"), answer[:200]
    assert "did not arrive whole within 1 s" in answer
    assert time.monotonic() - started < 4.5
    assert stand.store.redis.hget(stand.store.keys.lease_sessions, "container-001") is None, "no session was opened"
    assert stand.post(initialize(), grant.token).status_code == 200, "the gateway still serves"


def test_slow_heads_are_cut_at_their_deadline_and_one_address_cannot_take_every_connection(stand: Stand) -> None:
    """500 clients from 127.0.0.2 trickle a request head, a byte every 2 s. Past
    gateway.max_connections_per_client they are refused at once (429); the others are cut with 408
    at gateway.header_timeout_s. A job from 127.0.0.1 is served among them."""
    host, port = stand.base.removeprefix("http://").split(":")
    slow: list[socket.socket] = []
    try:
        for _ in range(500):
            client = socket.socket()
            client.bind(("127.0.0.2", 0))
            client.settimeout(10)
            client.connect((host, int(port)))
            slow.append(client)
        head = b"POST /gw/container-001/mcp HTTP/1.1\r\nHost: x\r\n"
        grant = stand.grant()
        for step in range(3):  # at 0, 2 and 4 s: the last comes after the deadline (3 s)
            for client in slow:
                with contextlib.suppress(OSError):
                    client.sendall(head[step : step + 1])
            if step == 0:
                answered = stand.post(initialize(), grant.token)
                assert answered.status_code == 200, f"a job among the slow clients was not served: {answered.text}"
            time.sleep(2)
        answers = []
        for client in slow:
            try:
                answers.append(client.recv(200).split(b" ", 2)[1])
            except (OSError, IndexError):
                answers.append(b"-")
    finally:
        for client in slow:
            client.close()
    counted = {status: answers.count(status) for status in set(answers)}
    assert counted == {b"429": 500 - PER_CLIENT, b"408": PER_CLIENT}, counted
    metrics = httpx.get(f"{stand.base}/metrics", timeout=5).text
    assert f'reason="header_timeout"}} {PER_CLIENT:.1f}' in metrics and f'reason="client_connections"}} {500 - PER_CLIENT:.1f}' in metrics
    assert "Reason: header_timeout" in stand.pool_log() and "Client: 127.0.0.2" in stand.pool_log(), "reported once, by address"


def test_a_lease_has_a_bounded_number_of_requests_in_flight_and_a_silent_container_a_deadline(stand: Stand) -> None:
    """The container hangs: four calls of one lease wait for it, a fifth is refused at once (429),
    and the four get 504 at gateway.upstream_timeout_s instead of waiting for ever."""
    grant = stand.grant()
    session = stand.post(initialize(), grant.token).headers["mcp-session-id"]
    httpx.post(f"{stand.fake}/_fake/mode", json={"mode": "hang"}, timeout=5).raise_for_status()
    snapshot = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "browser_snapshot", "arguments": {}}}
    with concurrent.futures.ThreadPoolExecutor(STREAMS_PER_LEASE) as pool:
        waiting = [pool.submit(stand.post, snapshot, grant.token, **{"mcp-session-id": session}) for _ in range(STREAMS_PER_LEASE)]
        deadline = time.monotonic() + 3
        while gateway_metric(stand, "cinnamon_pool_gateway_in_flight").get('pool="gw"') != STREAMS_PER_LEASE:
            assert time.monotonic() < deadline, f"the {STREAMS_PER_LEASE} calls did not reach the gateway"
            time.sleep(0.05)
        refused = stand.post(snapshot, grant.token, **{"mcp-session-id": session})
        assert refused.status_code == 429 and "requests and streams in flight" in refused.json()["error"], refused.text
        answers = [future.result(timeout=UPSTREAM_TIMEOUT_S + 10) for future in waiting]
    assert [answer.status_code for answer in answers] == [504] * STREAMS_PER_LEASE, [a.text for a in answers]
    assert f"within {UPSTREAM_TIMEOUT_S} s" in answers[0].json()["error"]
    httpx.post(f"{stand.fake}/_fake/mode", json={"mode": "ok"}, timeout=5).raise_for_status()
    assert stand.post(snapshot, grant.token, **{"mcp-session-id": session}).status_code == 200, "the lease is served again"


def test_a_containers_own_error_answer_is_forwarded_and_written_to_the_errors_log(stand: Stand) -> None:
    grant = stand.grant()
    broken = httpx.post(
        stand.endpoint,
        content=b'{"jsonrpc": "2.0", "id": 1}',  # no method: the server answers 400 itself
        headers={**MCP_HEADERS, "Authorization": f"Bearer {grant.token}"},
        timeout=10,
    )
    assert broken.status_code >= 400 and broken.status_code != 404, broken.text
    errors = "".join(p.read_text() for p in sorted((stand.logs / "containers").glob("container-errors-*.log")))
    assert f"the container answered POST with HTTP {broken.status_code}" in errors, errors


def test_a_container_that_does_not_answer_is_a_502(stand: Stand) -> None:
    grant = stand.grant()
    httpx.post(f"{stand.fake}/_fake/mode", json={"exit": 3}, timeout=5)
    time.sleep(0.2)
    response = stand.post(initialize(), grant.token)
    assert response.status_code == 502, response.text
    assert response.json() == {"error": "the container did not answer (ConnectError)", "container": "container-001"}


def test_a_request_in_flight_is_cut_within_a_second_when_its_lease_ends(stand: Stand) -> None:
    grant = stand.grant()
    session = stand.post(initialize(), grant.token).headers["mcp-session-id"]
    httpx.post(f"{stand.fake}/_fake/mode", json={"mode": "slow", "delay_s": 8}, timeout=5)
    answered: list[tuple[float, int]] = []

    def call() -> None:
        body = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "browser_snapshot", "arguments": {}}}
        response = stand.post(body, grant.token, **{"mcp-session-id": session})
        answered.append((time.monotonic(), response.status_code))

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.5)  # the request waits at the container
    ended = time.monotonic()
    stand.store.release(grant.name, grant.token)
    caller.join(timeout=10)
    ((at, status),) = answered
    assert status == 403, "the holder learns its lease ended"
    assert at - ended < 1.0, f"cut {at - ended:.2f} s after the lease ended (promised: within 1 s)"
    metrics = httpx.get(f"{stand.base}/metrics", timeout=5).text
    assert 'cinnamon_pool_gateway_streams_closed_total{pool="gw"} 1.0' in metrics


def test_sigterm_stops_the_gateway_within_seconds(stand: Stand) -> None:
    stand.gateway.send_signal(signal.SIGTERM)
    # uvicorn finishes its shutdown, then re-raises the signal so the exit status says why
    assert stand.stopped_within(10) in (0, -signal.SIGTERM)


def test_a_lease_may_name_only_its_own_sessions_also_after_a_gateway_restart(stand: Stand) -> None:
    deadline = time.monotonic() + 15
    while (keeper := stand.store.redis.hget(stand.store.keys.sessions, "keeper|container-001")) is None:
        assert time.monotonic() < deadline, "the gateway holds a keeper session on the free container"
        time.sleep(0.1)
    grant = stand.grant()
    answer = stand.post(initialize(), grant.token)
    assert answer.status_code == 200
    mine = answer.headers["mcp-session-id"]
    ping = {"jsonrpc": "2.0", "id": 9, "method": "ping"}
    for session in (json.loads(keeper)["session"], "made-up-session"):
        refused = stand.post(ping, grant.token, **{"mcp-session-id": session})
        assert refused.status_code == 403 and refused.json()["error"] == "this MCP session was not opened under this lease", (
            session,
            refused.text,
        )
    assert stand.post(ping, grant.token, **{"mcp-session-id": mine}).status_code == 200
    stand.restart_gateway()
    assert stand.post(ping, grant.token, **{"mcp-session-id": mine}).status_code == 200, "a restarted gateway knows the lease's sessions"
    assert stand.post(ping, grant.token, **{"mcp-session-id": json.loads(keeper)["session"]}).status_code == 403
    stand.store.release(grant.name, grant.token)
    deadline = time.monotonic() + 10
    while stand.store.redis.hexists(stand.store.keys.lease_sessions, "container-001"):
        assert time.monotonic() < deadline, "the lease's sessions are forgotten when it ends"
        time.sleep(0.1)
    ended = httpx.post(f"{stand.fake}/mcp", content=json.dumps(ping), headers={**MCP_HEADERS, "mcp-session-id": mine}, timeout=10)
    assert ended.status_code == 404, "and ended at the container"


def test_a_call_in_flight_fails_at_once_with_the_reason_when_the_gateway_dies(stand: Stand) -> None:
    """The soak's kill-gateway found jobs waiting out their whole time-out (60 s here) for an
    answer that could not come: the MCP client ends its session, and the call says so now."""
    grant = stand.grant()
    lease = ContainerLease.from_grant("gw", grant, fence_after_s=120)
    with Browser(lease, timeout_s=60) as browser:
        assert "one" in browser.navigate("data:text/html,<h1>one</h1>")
        httpx.post(f"{stand.fake}/_fake/mode", json={"mode": "hang"}, timeout=5).raise_for_status()
        killer = threading.Timer(1.0, stand.gateway.kill)
        killer.start()
        with pytest.raises(BrowserSessionEnded, match="container-001 ended during the call"):
            browser.navigate("data:text/html,<h1>two</h1>")
        killer.join()
    httpx.post(f"{stand.fake}/_fake/mode", json={"mode": "ok"}, timeout=5).raise_for_status()
