"""Prepared sessions with the real playwright-mcp, through real `supervise` and `gateway` processes:
a job's initialize gets the prepared session (the official MCP client and raw JSON-RPC alike), each
prepared session serves one lease only, a lease's sessions end with it, a restarted gateway adopts
what it held, and the canary in the prepared session catches a server that shares one browser
context between sessions."""

from __future__ import annotations

import json
import re
import time
from typing import Any, cast

import httpx
import pytest

from cinnamon_pool.browser import Browser
from cinnamon_pool.door import door_for
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.pool import ContainerPool
from tests.e2e.conftest import ACCEPT, INITIALIZE, Supervised, prepared_on

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.redis]


def handovers(config_url: str) -> dict[str, float]:
    """The gateway's initialize counter by kind (prepared, cold)."""
    text = httpx.get(config_url, timeout=10).text
    return {m[1]: float(m[2]) for m in re.finditer(r'cinnamon_pool_gateway_initialize_total\{pool="[^"]+",session="(\w+)"\} (\S+)', text)}


def raw_session(endpoint: str, token: str, version: str = "2025-11-25") -> tuple[httpx.Client, str, dict[str, Any]]:
    """A raw JSON-RPC client's initialize; its answer (JSON, or the one SSE message)."""
    client = httpx.Client(timeout=60, headers={**ACCEPT, "Authorization": f"Bearer {token}"})
    answer = client.post(endpoint, json={**INITIALIZE, "params": {**INITIALIZE["params"], "protocolVersion": version}})
    assert answer.status_code == 200, answer.text
    text = answer.text
    body = json.loads(text.split("data:", 1)[1]) if text.startswith("event:") else json.loads(text)
    return client, answer.headers["mcp-session-id"], body


@pytest.mark.parametrize("supervised_pool", [1], indirect=True)
def test_jobs_get_the_prepared_session_once_each_and_their_sessions_end_with_their_leases(supervised_pool: Supervised) -> None:
    config = supervised_pool.config
    pool = ContainerPool(config)
    metrics = f"{config.gateway.base_url}/metrics"

    # The official MCP client (through Browser), unchanged: handed the prepared session.
    first = prepared_on(pool, "container-001")
    with pool.lease("prepared-1") as lease, Browser(lease) as browser:
        assert "Sign" in browser.navigate("data:text/html,<title>Sign in</title><h1>Sign in</h1>")
    assert handovers(metrics).get("prepared") == 1.0

    # Raw JSON-RPC: its initialize is answered with the next prepared session, its own id echoed.
    second = prepared_on(pool, "container-001")
    assert second["session"] != first["session"], "a prepared session is handed to one lease only"
    with pool.lease("prepared-2") as lease:
        client, session, answer = raw_session(lease.endpoint, lease.token)
        assert session == second["session"] and answer["id"] == 41 and answer["result"]["protocolVersion"]
        client.headers["mcp-session-id"] = session
        client.post(lease.endpoint, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        call = client.post(
            lease.endpoint,
            json={"jsonrpc": "2.0", "id": 42, "method": "tools/call", "params": {"name": "browser_snapshot", "arguments": {}}},
        )
        assert call.status_code == 200 and "about:blank" in call.text, "the prepared blank page is the job's page"
        # This job never ends its session (as a crashed one would not).
    # A client that asks for an older protocol version than the prepared session speaks gets a
    # session of its own (the cold path), and works.
    with pool.lease("older-client") as lease:
        _older, older_session, older_answer = raw_session(lease.endpoint, lease.token, version="2025-06-18")
        assert older_answer["result"]["protocolVersion"] == "2025-06-18" and older_session != second["session"]
    port = config.container.host_ports[0]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = httpx.post(f"http://127.0.0.1:{port}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                          headers={**ACCEPT, "mcp-session-id": session}, timeout=10, auth=door_for(config))  # fmt: skip
        if left.status_code == 404:
            break
        time.sleep(0.2)
    assert left.status_code == 404, "the gateway ends the sessions of a lease that ended"
    assert handovers(metrics) == {"prepared": 2.0, "cold": 1.0}, "only the older client paid the cold path"


@pytest.mark.parametrize("supervised_pool", [1], indirect=True)
def test_a_restarted_gateway_adopts_the_prepared_session_it_held(supervised_pool: Supervised) -> None:
    pool = ContainerPool(supervised_pool.config)
    before = prepared_on(pool, "container-001")
    supervised_pool.restart_gateway()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{supervised_pool.config.gateway.base_url}/metrics", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    time.sleep(1.0)  # a few rounds of the new gateway: it checks what it adopted, and keeps it
    assert prepared_on(pool, "container-001")["session"] == before["session"], "adopted, not made anew"
    with pool.lease("after-restart") as lease:
        _client, session, _answer = raw_session(lease.endpoint, lease.token)
    assert session == before["session"]


@pytest.mark.parametrize("supervised_pool", [1], indirect=True)
def test_after_a_restart_in_place_the_next_job_gets_a_session_of_the_new_run(supervised_pool: Supervised) -> None:
    """Found by `make bench`: a container restarted for memory keeps its id, and its server
    lost every session; the prepared session held from before was handed out dead ("Session
    terminated")."""
    import subprocess

    from tests.e2e.conftest import BIN

    pool = ContainerPool(supervised_pool.config)
    before = prepared_on(pool, "container-001")
    started = pool.store.snapshot().containers["container-001"]
    restart = subprocess.run(
        [str(BIN / "cinnamon-pool"), "restart", "container-001"], env=supervised_pool.env, capture_output=True, text=True, timeout=60
    )
    assert restart.returncode == 0, restart.stderr
    deadline = time.monotonic() + 60
    while (now := pool.store.snapshot().containers["container-001"]).restarts == started.restarts:
        assert time.monotonic() < deadline, "the container was not restarted within 60 s"
        time.sleep(0.2)
    assert now.container_id == started.container_id, "restarted in place: the same container"
    after = prepared_on(pool, "container-001")
    assert after["session"] != before["session"] and after["restarts"] == now.restarts == 1, "prepared anew in the new run"
    with pool.lease("after-restart-in-place") as lease, Browser(lease) as browser:
        assert "Sign" in browser.navigate("data:text/html,<title>Sign in</title><h1>Sign in</h1>")


@pytest.mark.parametrize("supervised_pool", [{"size": 1, "gateway": False}], indirect=True)
def test_without_a_gateway_supervise_keeps_the_browser_up_between_jobs(supervised_pool: Supervised) -> None:
    pool = ContainerPool(supervised_pool.config)
    deadline = time.monotonic() + 60
    held: frozenset[str] = frozenset()
    while time.monotonic() < deadline and held != {"keeper"}:
        container = pool.status()["containers"][0]
        held = pool.store.held_sessions({container["name"]: (container["container_id"], container["restarts"])})[container["name"]]
        time.sleep(0.2)
    assert held == {"keeper"}, "supervise holds a keeper session on the free container"
    for run in range(2):
        with pool.lease(f"direct-{run}") as lease, Browser(lease) as browser:
            assert lease.endpoint.startswith("http://127.0.0.1:"), "direct mode: the container's own URL"
            assert "direct" in browser.navigate(f"data:text/html,<h1>direct {run}</h1>")
        container = pool.status()["containers"][0]
        assert container["state"] == "available", "no preparing without a gateway"
    keeper = json.loads(cast(bytes, pool.store.redis.hget(PoolKeys(pool.name).sessions, "keeper|container-001")))
    port = supervised_pool.config.container.host_ports[0]
    alive = httpx.post(f"http://127.0.0.1:{port}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                       headers={**ACCEPT, "mcp-session-id": keeper["session"]}, timeout=10)  # fmt: skip
    assert alive.status_code == 200, "the keeper outlives the jobs' sessions, so the browser stays up"


@pytest.mark.parametrize("supervised_pool", [{"size": 1, "container": "idle_timeout_s = 12\n"}], indirect=True)
def test_a_prepared_session_stays_warm_past_the_servers_idle_timeout(supervised_pool: Supervised) -> None:
    """playwright-mcp closes an idle browser after --idle-timeout (here 12 s, from the config):
    the gateway keeps the browser busy and prepares anew inside it, so a job after twice that
    idle time is handed a live prepared session, its browser still up."""
    from cinnamon_pool.runtime.docker import DockerRuntime

    pool = ContainerPool(supervised_pool.config)
    record = pool.store.snapshot().containers["container-001"]
    assert "--idle-timeout" in DockerRuntime().api.inspect_container(record.container_id)["Config"]["Cmd"]
    first = prepared_on(pool, "container-001")
    docker_api = DockerRuntime().api

    def browsers() -> int:
        return sum("chrom" in " ".join(row) for row in docker_api.top(record.container_id)["Processes"])

    assert browsers() > 0, "the prepared session's browser runs"
    time.sleep(25)
    assert browsers() > 0, "the browser closed while idle: a job would start it cold"
    now = prepared_on(pool, "container-001")
    assert now["session"] != first["session"], "prepared anew within the idle timeout"
    with pool.lease("after-idle") as lease:
        _client, session, _answer = raw_session(lease.endpoint, lease.token)
        assert session == now["session"], "the job is handed the prepared session, not a cold one"
    with pool.lease("after-idle-browser") as lease, Browser(lease) as browser:
        assert "warm" in browser.navigate("data:text/html,<h1>warm</h1>")
