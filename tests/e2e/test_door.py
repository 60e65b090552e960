"""The door beside the door is shut (the real playwright-mcp image, real `supervise` and
`gateway` processes): a process on the host that reaches a container's published port, or its
address on the pool network, gets no MCP session whatever Host it sends; the gateway, which
holds the host key, serves jobs as before."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cinnamon_pool.browser import Browser
from cinnamon_pool.door import ENV, HEADER, key_path, load_key, secret
from cinnamon_pool.pool import ContainerPool
from tests.e2e.conftest import ACCEPT, INITIALIZE, Supervised

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.redis]


def initialize(url: str, host: str, **headers: str) -> httpx.Response | None:
    """An MCP initialize sent to ``url`` with ``host`` as its Host header (None: refused to connect)."""
    try:
        return httpx.post(url, json={**INITIALIZE, "id": 1}, headers={**ACCEPT, "Host": host, **headers}, timeout=10)
    except httpx.ConnectError:
        return None


@pytest.mark.parametrize("supervised_pool", [1], indirect=True)
def test_a_local_process_gets_no_session_from_a_container_while_jobs_through_the_gateway_do(
    supervised_pool: Supervised, docker_client: Any
) -> None:
    config = supervised_pool.config
    pool = ContainerPool(config)
    [record] = pool.status()["containers"]
    container = docker_client.containers.get(record["container_id"])
    port = int(container.attrs["NetworkSettings"]["Ports"]["8931/tcp"][0]["HostPort"])
    address = container.attrs["NetworkSettings"]["Networks"][config.container.network]["IPAddress"]
    published, on_network = f"http://127.0.0.1:{port}/mcp", f"http://{address}:8931/mcp"
    guesses = [f"127.0.0.1:{port}", f"localhost:{port}", "localhost:8932", f"{address}:8931", "*"]

    for url in (published, on_network):
        for host in guesses:
            answer = initialize(url, host)
            assert answer is not None and answer.status_code == 403, (url, host, answer and answer.text)
            assert "mcp-session-id" not in answer.headers
            assert "8932" not in answer.text and "allowed" not in answer.text.lower(), "the refusal names no value to send"
        wrong = initialize(url, f"127.0.0.1:{port}", **{HEADER: "0" * 64})
        assert wrong is not None and wrong.status_code == 403
    # The server itself listens on the container's own loopback: nothing outside reaches it.
    assert initialize(f"http://{address}:8932/mcp", "localhost:8932") is None

    # The secret is in the container's environment only: not on any command line, not in Redis.
    key = load_key(key_path(config))
    expected = secret(key, config.pool.name, f"127.0.0.1:{port}")
    assert f"{ENV}={expected}" in container.attrs["Config"]["Env"]
    processes = container.top(ps_args="-eo pid,args")["Processes"]
    assert processes and all(expected not in " ".join(row) for row in processes), processes
    assert all(expected.encode() not in (pool.store.redis.dump(k) or b"") for k in pool.store.redis.scan_iter(f"*{config.pool.name}*"))

    # The gateway (and the supervisor's probes, which keep the container available) hold it.
    with pool.lease("door-1", timeout_s=60) as lease, Browser(lease) as browser:
        assert "Door" in browser.navigate("data:text/html,<title>Door</title><h1>Door</h1>")
    opened = initialize(published, f"127.0.0.1:{port}", **{HEADER: expected})
    assert opened is not None and opened.status_code == 200 and opened.headers.get("mcp-session-id"), "the right secret opens it"
    httpx.delete(published, headers={HEADER: expected, "mcp-session-id": opened.headers["mcp-session-id"]}, timeout=10)


@pytest.mark.parametrize("supervised_pool", [1], indirect=True)
def test_a_sessions_event_stream_shows_its_head_through_the_door_before_any_event(supervised_pool: Supervised) -> None:
    """The server answers a GET event stream's head at once and its first event may come minutes
    later; a door that waited for a body byte left every client of the GET stream hanging (found
    by the gateway bench)."""
    pool = ContainerPool(supervised_pool.config)
    with pool.lease("door-stream", timeout_s=60) as lease:
        auth = {"Authorization": f"Bearer {lease.token}"}
        opened = httpx.post(lease.endpoint, json={**INITIALIZE, "id": 1}, headers={**ACCEPT, **auth}, timeout=30)
        session = {"mcp-session-id": opened.headers["mcp-session-id"], **auth}
        with httpx.stream("GET", lease.endpoint, headers={"Accept": "text/event-stream", **session}, timeout=10) as stream:
            assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        httpx.delete(lease.endpoint, headers=session, timeout=10)
