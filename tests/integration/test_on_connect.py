"""Leases on connect through a real `cinnamon-pool gateway` process, a real redis-server and the
stand-in server: API keys made with the real CLI, the admission answers, a session's lease from
its initialize to its DELETE, the idle end and revocation."""

from __future__ import annotations

import concurrent.futures
import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from cinnamon_pool import decode
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.logs.events import event_record
from cinnamon_pool.model import ContainerRecord, ContainerState, Holder
from cinnamon_pool.tokens import fingerprint
from tests.integration.gateway_stand import BIN, HOST, MCP_HEADERS, Stand, gateway_metric, initialize, start_gateway
from tests.support import stream_entries, wait_for_http

pytestmark = pytest.mark.redis
TOKEN = re.compile(rb"[0-9a-f]{16}:\d{1,19}:[0-9a-f]{16}")
CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "browser_navigate", "arguments": {"url": "data:,x"}}}


def keys(stand: Stand, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "cinnamon-pool"), "keys", *args], env=stand.env, capture_output=True, text=True, timeout=60)


def new_key(stand: Stand, name: str, *options: str) -> str:
    made = keys(stand, "create", name, *options)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def connect_url(stand: Stand) -> str:
    return f"{stand.base}/gw/mcp"


def post(stand: Stand, key: str | None, body: object, **headers: str) -> httpx.Response:
    sent = {**MCP_HEADERS, **headers, **({"Authorization": f"Bearer {key}"} if key else {})}
    return httpx.post(connect_url(stand), content=json.dumps(body), headers=sent, timeout=15)


def eventually(condition: Callable[[], object], seconds: float, what: str, context: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"{what} did not hold within {seconds} s{context()}")


def gateway_said(stand: Stand) -> str:
    """For a failure's message: Redis's clients, what the gateway counts of its waiting clients
    (waiting now, and those it saw hang up), and the gateway log's last lines."""
    clients = stand.store.redis.info("clients")
    limit = stand.store.redis.config_get("maxclients")
    tail = "\n".join(stand.gateway_log.read_text(errors="replace").splitlines()[-40:])
    try:
        metrics = httpx.get(f"{stand.base}/metrics", timeout=5).text
        counted = "\n".join(line for line in metrics.splitlines() if "sessions_waiting{" in line or "client_gone" in line)
    except httpx.HTTPError as error:
        counted = f"(its /metrics did not answer: {error!r})"
    return f"\nRedis: {clients.get('connected_clients')} clients of at most {limit}; the gateway counts:\n{counted}\nits log ends:\n{tail}"


def waiting_on_gateway(stand: Stand) -> float:
    return gateway_metric(stand, "cinnamon_pool_gateway_sessions_waiting")['pool="gw"']


def test_keys_are_made_listed_and_revoked_through_the_cli_and_redis_keeps_only_their_hash(stand: Stand) -> None:
    made = keys(stand, "create", "ci-bot", "--max-sessions", "3")
    assert made.returncode == 0 and re.fullmatch(r"cpk_[0-9a-f]{40}\n", made.stdout), "only the key, on stdout"
    key = made.stdout.strip()
    again = keys(stand, "create", "ci-bot")
    assert again.returncode == 2 and "NAME='ci-bot': a key of that name exists" in again.stderr, again.stderr
    bad = keys(stand, "create", "Bad Name!")
    assert bad.returncode == 2 and "invalid API key name 'Bad Name!'" in bad.stderr, bad.stderr
    listed = json.loads(keys(stand, "list", "--json").stdout)
    assert [(k["name"], k["max_sessions"], k["open_sessions"]) for k in listed] == [("ci-bot", 3, 0)]
    client = stand.store.redis
    values = [v for k in client.scan_iter("cinnamon:{gw}:*") if client.type(k) == b"hash" for v in client.hgetall(k).values()]
    fields = [f for k in client.scan_iter("cinnamon:{gw}:*") if client.type(k) == b"hash" for f in client.hgetall(k)]
    assert all(key.encode() not in item for item in [*values, *fields]), "the key itself is nowhere in Redis"
    assert keys(stand, "revoke", "ci-bot").returncode == 0
    assert post(stand, key, initialize()).status_code == 403, "a revoked key opens nothing"
    assert keys(stand, "revoke", "ci-bot").returncode == 1


def test_a_client_with_a_key_gets_a_container_of_its_own_until_it_deletes_its_session(stand: Stand) -> None:
    key, other = new_key(stand, "agent"), new_key(stand, "other")
    assert post(stand, None, initialize()).status_code == 401
    assert post(stand, "cpk_" + "0" * 40, initialize()).status_code == 403
    opened = post(stand, key, initialize(), **{"X-Test-Run-Id": "agent-run-7"})
    assert opened.status_code == 200, opened.text
    session, container = opened.headers["mcp-session-id"], opened.headers["X-Cinnamon-Container"]
    assert container == "container-001"
    lease = stand.store.snapshot().leases["container-001"]
    assert lease.test_run_id == "agent-run-7", "the run is named by X-Test-Run-Id"
    shown = subprocess.run([str(BIN / "cinnamon-pool"), "status", "--json"], env=stand.env, capture_output=True, text=True, timeout=60)
    [row] = [c for c in json.loads(shown.stdout)["containers"] if c["name"] == container]
    assert (row["test_run_id"], row["client"]) == ("agent-run-7", "agent"), "status names the key beside the run"
    called = post(stand, key, CALL, **{"mcp-session-id": session})
    assert called.status_code == 200 and called.headers["X-Cinnamon-Container"] == container, called.text
    assert [c["token"] for c in stand.calls()] == [lease.token], "the container saw the lease's token, not the key"
    assert post(stand, other, CALL, **{"mcp-session-id": session}).status_code == 403, "another key's session"
    gone = httpx.delete(connect_url(stand), headers={"Authorization": f"Bearer {key}", "mcp-session-id": session}, timeout=10)
    assert gone.status_code < 300
    assert stand.store.snapshot().leases == {}, "DELETE released the lease"
    assert post(stand, key, CALL, **{"mcp-session-id": session}).status_code == 404
    granted = stream_entries(stand.store.redis, PoolKeys("gw").events, b"granted")
    event = decode.event("1-0", granted[-1])
    [(_kind, allocated)] = event_record(event, {}, 3)
    assert allocated.detail("Client") == "agent" and allocated.detail("Test Run") == "agent-run-7", "the key named as the client"


def test_admission_answers_a_key_at_its_max_and_a_pool_with_nothing_free(stand: Stand) -> None:
    key = new_key(stand, "one-at-a-time", "--max-sessions", "1")
    other = new_key(stand, "waits")  # made first: the first session must not idle out (3 s) while a key is made
    first = post(stand, key, initialize())
    assert first.status_code == 200
    second = post(stand, key, initialize())
    assert second.status_code == 429 and second.headers["Retry-After"], second.text
    started = time.monotonic()
    full = post(stand, other, initialize())
    assert full.status_code == 503 and full.headers["Retry-After"], full.text
    assert full.json()["counts"]["total"] == 1, full.json()
    assert time.monotonic() - started >= 1.9, "it waited session_acquire_timeout_s (2 s) for a container"
    metrics = httpx.get(f"{stand.base}/metrics", timeout=5).text
    assert 'reason="key_at_max_sessions"' in metrics and 'reason="pool_exhausted"' in metrics
    assert "cinnamon_pool_gateway_session_wait_seconds_count" in metrics


def test_an_idle_session_ends_and_a_revoked_key_cuts_its_sessions(stand: Stand) -> None:
    key = new_key(stand, "idler")
    assert post(stand, key, initialize()).status_code == 200
    assert stand.store.snapshot().leases, "leased"
    eventually(lambda: not stand.store.snapshot().leases, 10, "the idle session's lease released (session_idle_s = 3)")
    assert stand.store.redis.hlen(PoolKeys("gw").connect_sessions) == 0
    revoked = new_key(stand, "revoked")
    session = post(stand, revoked, initialize()).headers["mcp-session-id"]
    assert keys(stand, "revoke", "revoked").returncode == 0
    eventually(lambda: not stand.store.snapshot().leases, 1.5, "the revoked key's lease released within 1 s")
    assert post(stand, revoked, CALL, **{"mcp-session-id": session}).status_code == 403


def test_a_client_that_gives_up_waiting_leaves_the_queue_and_is_never_granted_a_container(stand: Stand) -> None:
    holder = new_key(stand, "holder")
    session = post(stand, holder, initialize()).headers["mcp-session-id"]
    quitter = new_key(stand, "quitter")
    sent = {**MCP_HEADERS, "Authorization": f"Bearer {quitter}", "X-Test-Run-Id": "gave-up"}
    with pytest.raises(httpx.ReadTimeout):  # it waits in the FIFO queue, then hangs up
        httpx.post(connect_url(stand), content=json.dumps(initialize()), headers=sent, timeout=0.5)
    eventually(lambda: 'reason="client_gone"' in httpx.get(f"{stand.base}/metrics", timeout=5).text, 5, "the gateway seeing it go")
    assert stand.store.snapshot().waiting == 0, "it left the queue"
    httpx.delete(connect_url(stand), headers={"Authorization": f"Bearer {holder}", "mcp-session-id": session}, timeout=10)
    time.sleep(1)  # a grant to a waiter is immediate on release; give it the chance to go wrong
    assert all(lease.test_run_id != "gave-up" for lease in stand.store.snapshot().leases.values())


def test_more_clients_wait_than_redis_pys_connection_cap_and_a_served_session_is_answered_meanwhile(stand: Stand) -> None:
    config = Path(stand.env["CINNAMON_CONFIG"])
    text = config.read_text().replace("session_acquire_timeout_s = 2", "session_acquire_timeout_s = 60\nmax_waiting_sessions = 150")
    config.write_text(text.replace("session_idle_s = 3", "session_idle_s = 120"))  # the holder keeps its container
    stand.restart_gateway()
    holder = new_key(stand, "holder")
    session = post(stand, holder, initialize()).headers["mcp-session-id"]
    waiter = new_key(stand, "waiter", "--max-sessions", "200")
    count = 130  # each holds a Redis connection in BLPOP; redis-py's async pools stop at 100 unless told
    sent = {**MCP_HEADERS, "Authorization": f"Bearer {waiter}"}

    def wait() -> type[BaseException] | int:
        try:
            return httpx.post(connect_url(stand), content=json.dumps(initialize()), headers=sent, timeout=25).status_code
        except httpx.HTTPError as error:
            return type(error)

    with concurrent.futures.ThreadPoolExecutor(count) as threads:
        answers = [threads.submit(wait) for _ in range(count)]
        deadline = time.monotonic() + 20
        while (waiting := stand.store.snapshot().waiting) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert waiting == count, f"only {waiting} of {count} clients came to wait; answered: {[a.result() for a in answers if a.done()]}"
        assert waiting_on_gateway(stand) == count, gateway_said(stand)
        served = post(stand, holder, CALL, **{"mcp-session-id": session})
        assert served.status_code == 200, served.text
    assert {answer.result() for answer in answers} == {httpx.ReadTimeout}, "every waiter waited until it hung up"
    eventually(lambda: stand.store.snapshot().waiting == 0, 5, "the waiters gone from the queue", lambda: gateway_said(stand))
    eventually(lambda: waiting_on_gateway(stand) == 0, 5, "no client waiting on the gateway", lambda: gateway_said(stand))


def test_sessions_a_killed_gateway_left_stop_counting_against_their_key_once_their_leases_end(stand: Stand) -> None:
    config = Path(stand.env["CINNAMON_CONFIG"])
    config.write_text(config.read_text() + "[rules]\nlease_ttl_s = 1.5\n")  # nobody renews it once its gateway dies
    stand.restart_gateway()
    key = new_key(stand, "crashed", "--max-sessions", "1")
    assert post(stand, key, initialize()).status_code == 200
    assert post(stand, key, initialize()).status_code == 429, "while its lease holds, the session counts"
    stand.gateway.kill()  # SIGKILL: it forgets nothing; its client never comes back either
    stand.gateway.wait()
    stand.gateway = start_gateway(stand.env, stand.gateway_log)
    wait_for_http(f"{stand.base}/metrics")

    reaped: list[str] = []  # the lease expires unrenewed; the supervisor reaps it and restarts the container

    def reap() -> list[str]:
        reaped.extend(stand.store.reap())
        return reaped

    eventually(reap, 10, "the lease reaped once expired")
    assert reaped == ["container-001"]
    endpoint = stand.config.gateway.endpoint("gw", "container-001")
    stand.store.register(ContainerRecord("container-001", "a" * 64, 1, HOST, endpoint, ContainerState.STARTING))
    eventually(lambda: stand.store.snapshot().free, 10, "the container offered again")
    reopened = post(stand, key, initialize())
    assert reopened.status_code == 200, reopened.text
    bound = stand.store.redis.hkeys(PoolKeys("gw").connect_sessions)
    assert bound == [reopened.headers["mcp-session-id"].encode()], "the ended session's binding is forgotten"
    listed = keys(stand, "list")
    assert re.search(r"^crashed +1 +1 ", listed.stdout, re.M), listed.stdout


def pool_values(stand: Stand) -> list[bytes]:
    """Every field, member and value of every key of the pool, whatever its type."""
    client: Any = stand.store.redis  # whatever each key holds, read raw
    found: list[bytes] = []
    for key in client.scan_iter("cinnamon:{gw}:*"):
        kind = client.type(key)
        if kind == b"string":
            found.append(client.get(key))
        elif kind == b"hash":
            found += [item for pair in client.hgetall(key).items() for item in pair]
        elif kind == b"list":
            found += client.lrange(key, 0, -1)
        elif kind == b"set":
            found += list(client.smembers(key))
        elif kind == b"zset":
            found += client.zrange(key, 0, -1)
        elif kind == b"stream":
            found += [item for fields in stream_entries(client, key) for pair in fields.items() for item in pair]
    return found


def test_redis_keeps_no_lease_token_and_nothing_read_from_it_opens_a_browser(stand: Stand) -> None:
    """A job's lease handed over through a waiter's wake list, then a session on connect: Redis
    has fingerprints of their tokens everywhere (leases, events, sessions, the last released),
    never a token's secret part, and a fingerprint shown as a bearer gets 403."""
    first = stand.grant("first")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(stand.store.acquire, Holder("waiter"), 10)
        eventually(lambda: stand.store.snapshot().waiting, 5, "the second job waits")
        assert stand.store.release(first.name, first.token) == "preparing", "the gateway prepares, then hands it over"
        handed = waiting.result(timeout=10)
    assert handed.name == first.name and handed.token != first.token
    assert stand.post(initialize(), handed.token).status_code == 200, "the waiter's token opens its container"
    fingerprints = {fingerprint(first.token).encode(), fingerprint(handed.token).encode()}
    values = pool_values(stand)
    assert fingerprints <= {v for v in values if TOKEN.fullmatch(v)}, "Redis names the leases by their fingerprints"
    for token in (first.token, handed.token):
        secret = token.rsplit(":", 1)[1].encode()
        assert not [v for v in values if secret in v], f"the secret part of {token} is in Redis"
    stand.store.release(handed.name, handed.token)

    key = new_key(stand, "agent")
    opened = post(stand, key, initialize())
    assert opened.status_code == 200, opened.text
    [lease] = stand.store.snapshot().leases.values()
    bearer = lease.token  # what a reader of Redis has of the session's lease
    values = pool_values(stand)
    for value in {v for v in values if TOKEN.fullmatch(v)}:
        refused = stand.post(initialize(), value.decode())
        assert refused.status_code == 403, f"{value!r}, read from Redis, was accepted as a bearer"
    assert stand.post(initialize(), bearer).status_code == 403
    assert post(stand, key, CALL, **{"mcp-session-id": opened.headers["mcp-session-id"]}).status_code == 200, "the session goes on"


RUN_CODE = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "browser_run_code_unsafe", "arguments": {"code": "1"}}}
LIST = {"jsonrpc": "2.0", "id": 4, "method": "tools/list"}


def tool_names(response: httpx.Response) -> list[str]:
    text = response.text  # JSON, or an SSE stream with one data line
    message = json.loads(text.split("data: ", 1)[1] if "data: " in text else text)
    return [tool["name"] for tool in message["result"]["tools"]]


def test_code_in_the_browser_server_is_refused_and_unlisted_unless_allowed_and_then_the_container_restarts(stand: Stand) -> None:
    direct = {**MCP_HEADERS, "Host": stand.fake.removeprefix("http://")}
    own = httpx.post(f"{stand.fake}/mcp", json=initialize(), headers=direct, timeout=5).headers["mcp-session-id"]
    listed_there = httpx.post(f"{stand.fake}/mcp", json=LIST, headers={**direct, "mcp-session-id": own}, timeout=5)
    assert "browser_run_code_unsafe" in tool_names(listed_there), "the server itself offers it"

    grant = stand.grant("job")
    session = stand.post(initialize(), grant.token).headers["mcp-session-id"]
    listed = stand.post(LIST, grant.token, **{"mcp-session-id": session})
    assert listed.status_code == 200 and "browser_run_code_unsafe" not in tool_names(listed), listed.text
    assert "browser_navigate" in tool_names(listed)
    refused = stand.post(RUN_CODE, grant.token, **{"mcp-session-id": session})
    assert refused.status_code == 403 and "runs code in the browser server" in refused.json()["error"], refused.text
    assert stand.calls() == [], "the call never reached the container"
    assert stand.store.snapshot().containers["container-001"].state.value == "allocated", "nothing ran: no restart needed"
    stand.store.release(grant.name, grant.token)
    eventually(lambda: stand.store.snapshot().free, 10, "the container is offered again")

    trusted = new_key(stand, "trusted", "--unsafe-tools")
    opened = post(stand, trusted, initialize())
    assert opened.status_code == 200, opened.text
    mine = opened.headers["mcp-session-id"]
    assert "browser_run_code_unsafe" in tool_names(post(stand, trusted, LIST, **{"mcp-session-id": mine})), "listed for this key"
    ran = post(stand, trusted, RUN_CODE, **{"mcp-session-id": mine})
    assert ran.status_code == 200, ran.text
    record = stand.store.snapshot().containers["container-001"]
    assert (record.state.value, record.reason) == ("draining", "unsafe tool run: browser_run_code_unsafe"), record
    gone = httpx.delete(connect_url(stand), headers={"Authorization": f"Bearer {trusted}", "mcp-session-id": mine}, timeout=10)
    assert gone.status_code < 300
    assert stand.store.snapshot().containers["container-001"].state.value == "restarting", "restarted before its next lease"
