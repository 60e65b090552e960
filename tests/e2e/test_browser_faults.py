"""The real playwright-mcp under faults: residue the canary must see (or must not), a browser
crash in the middle of a job, and a container that runs out of memory in the middle of a job.

Pages are served by Chromium itself (playwright-mcp's ``browser_route`` fulfils
``http://residue.test/``), so an http origin with cookies and localStorage exists without any
network; the residue is left with the tools every holder has.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import docker
import pytest
import redis

from cinnamon_pool.browser import Browser
from cinnamon_pool.canary import CANARY_CODE, residue_in
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.model import Outcome
from cinnamon_pool.pool import ContainerPool, classify
from tests.e2e.conftest import Supervised, prepared_on
from tests.e2e.test_prepared_sessions import raw_session
from tests.support import stream_entries

# --caps: the tools that mock a route and write cookies and localStorage, so the residue is left
# with the tools any holder has (code in the server, browser_run_code_unsafe, is refused).
CAPS = ["--caps", "network,storage"]
SHARED = ["--headless", "--browser", "chromium", "--no-sandbox", "--shared-browser-context", "--port", "8931", "--host", "0.0.0.0", *CAPS]
ISOLATED = ["--headless", "--browser", "chromium", "--isolated", "--port", "8931", "--host", "0.0.0.0", *CAPS]  # (sandboxed)
LEAVE_RESIDUE = (  # an http origin served by Chromium itself, a cookie and localStorage on it, a second tab
    ("browser_route", {"pattern": "http://residue.test/**", "body": "<h1>residue</h1>", "contentType": "text/html"}),
    ("browser_navigate", {"url": "http://residue.test/"}),
    ("browser_cookie_set", {"name": "left", "value": "1"}),
    ("browser_localstorage_set", {"key": "cart", "value": "3 items"}),
    ("browser_tabs", {"action": "new"}),
    ("browser_tabs", {"action": "list"}),
)


def events(client: redis.Redis, pool: ContainerPool, kind: str) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for fields in stream_entries(client, PoolKeys(pool.name).events)
        if fields[b"kind"] == kind.encode()
    ]


def leave_residue(pool: ContainerPool) -> str:
    """A job that leaves a cookie, localStorage and a second tab; returns its tab list."""
    with pool.lease("leaves-residue") as lease, Browser(lease, timeout_s=60) as browser:
        return [browser.call(tool, arguments) for tool, arguments in LEAVE_RESIDUE][-1]


def oom_kills(container_id: str) -> int | None:
    """How many processes the kernel killed in the container's memory cgroup (v1 or v2), or
    None when this host's cgroup layout is not one of Docker's usual ones."""
    for path, field in (
        (f"/sys/fs/cgroup/memory/docker/{container_id}/memory.oom_control", "oom_kill"),
        (f"/sys/fs/cgroup/docker/{container_id}/memory.events", "oom_kill"),
        (f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.events", "oom_kill"),
    ):
        with contextlib.suppress(OSError):
            for line in Path(path).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == field:
                    return int(value)
    return None


def wait_for(condition: Callable[[], bool], seconds: float, what: str | Callable[[], str]) -> None:
    """Until ``condition``; else fail with ``what`` (a function: read when it fails)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what() if callable(what) else what
        time.sleep(0.2)


# (max_memory_mb: one shared browser context recording its trace passes 400 MB within this job;
# a memory restart would come before the canary, which is what this test watches)
@pytest.mark.parametrize(
    "supervised_pool", [{"size": 1, "rules": "canary_share = 1.0\nmax_memory_mb = 480\n", "command": SHARED}], indirect=True
)
def test_the_canary_flags_cookies_storage_and_tabs_kept_by_a_shared_context_and_the_container_restarts(
    supervised_pool: Supervised, real_redis: redis.Redis
) -> None:
    pool = ContainerPool(supervised_pool.config)
    prepared_on(pool, "container-001")  # the gateway prepares: the canary runs in the next job's session
    seen = leave_residue(pool)
    assert "1:" in seen and "residue.test" in seen, f"the job did not leave its state (two tabs, one on the origin): {seen}"
    wait_for(
        lambda: any(e.get("to") == "restarting" for e in events(real_redis, pool, "state")),
        60,
        lambda: f"no restart after residue: {[e for kind in ('released', 'prepared', 'state') for e in events(real_redis, pool, kind)]}",
    )
    reasons = [e["reason"] for e in events(real_redis, pool, "state") if e.get("to") == "restarting"]
    residue = next((reason for reason in reasons if reason.startswith("residue: ")), f"none among {reasons}")
    for found in ("cookies=1", "origins=1", "pages=2"):
        assert found in residue, f"the canary missed {found}: {residue}"
    wait_for(lambda: pool.status()["available"] == 1, 90, "the container did not come back")
    with pool.lease("after-the-restart") as lease, Browser(lease, timeout_s=60) as browser:
        left = residue_in(browser.call("browser_run_code_unsafe", {"code": CANARY_CODE}))
    assert left is None, f"the restart did not clear the shared context: {left}"


@pytest.mark.parametrize("supervised_pool", [{"size": 1, "rules": "canary_share = 1.0\n", "command": ISOLATED}], indirect=True)
def test_the_canary_passes_an_isolated_server_and_the_container_keeps_serving(supervised_pool: Supervised, real_redis: redis.Redis) -> None:
    pool = ContainerPool(supervised_pool.config)
    before = prepared_on(pool, "container-001")["container_id"]
    for _ in range(2):
        leave_residue(pool)
        wait_for(lambda: pool.status()["available"] == 1, 60, "the container was not offered again")
    with pool.lease("tries-code-in-the-server") as lease:  # what any holder meets: no code in the server
        client, session, _answer = raw_session(lease.endpoint, lease.token)
        with contextlib.closing(client):
            mine = {"mcp-session-id": session}
            listed = client.post(lease.endpoint, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=mine)
            assert "browser_navigate" in listed.text and "browser_run_code_unsafe" not in listed.text, listed.text[:300]
            code = {"name": "browser_run_code_unsafe", "arguments": {"code": "async (page) => page.context().browser().contexts().length"}}
            refused = client.post(lease.endpoint, json={"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": code}, headers=mine)
            assert refused.status_code == 403 and "runs code in the browser server" in refused.text, refused.text
            client.delete(lease.endpoint, headers=mine)
    wait_for(lambda: pool.status()["available"] == 1, 60, "the container was not offered again")
    prepared = events(real_redis, pool, "prepared")
    assert [e["result"] for e in prepared] == ["ok", "ok", "ok"], f"the canary ran after each release and found nothing: {prepared}"
    assert not [e for e in events(real_redis, pool, "state") if e.get("to") == "restarting"], "no restart for an isolated server"
    assert pool.status()["containers"][0]["container_id"] == before


def user_namespace(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/user")


@pytest.mark.parametrize("supervised_pool", [1], indirect=True)
def test_chromium_keeps_its_sandbox_in_a_pool_container(supervised_pool: Supervised) -> None:
    """The default pool runs Chromium with --sandbox under the pool's seccomp profile: while a
    job browses, every renderer lives in a user namespace of its own, apart from the server's."""
    pool = ContainerPool(supervised_pool.config)
    prepared_on(pool, "container-001")
    with pool.lease("sandboxed") as lease, Browser(lease, timeout_s=60) as browser:
        assert "Sandboxed" in browser.navigate("data:text/html,<h1>Sandboxed</h1>")
        processes = docker.from_env().containers.get(lease.container_id).top(ps_args="-eo pid,args")["Processes"]
        by_pid = {int(pid): args for pid, args in processes}
        server = next(pid for pid, args in by_pid.items() if "door.js" in args)
        renderers = [pid for pid, args in by_pid.items() if "--type=renderer" in args]
        assert renderers, f"no renderer in {list(by_pid.values())}"
        assert not [args for args in by_pid.values() if "--no-sandbox" in args], "a Chromium process runs with --no-sandbox"
        assert all(user_namespace(pid) != user_namespace(server) for pid in renderers), "a renderer shares the server's namespace"


@pytest.mark.parametrize("supervised_pool", [1], indirect=True)
def test_a_browser_crash_during_a_job_is_an_infra_error_and_the_next_job_gets_a_working_browser(
    supervised_pool: Supervised,
) -> None:
    pool = ContainerPool(supervised_pool.config)
    with pytest.raises(Exception) as crashed, pool.lease("crashes") as lease, Browser(lease, timeout_s=60) as browser:
        browser.navigate("data:text/html,<h1>before</h1>")
        browser.navigate("chrome://crash")
        browser.snapshot()
    assert classify(crashed.value) is Outcome.INFRA_ERROR, f"{type(crashed.value).__name__}: {crashed.value}"
    wait_for(lambda: pool.status()["available"] == 1, 90, "the container was not offered again")
    assert pool.status()["containers"][0]["error_count"] == 1, "the release counted an infra error against the container"
    with pool.lease("after-the-crash") as lease, Browser(lease, timeout_s=60) as browser:
        assert "after" in browser.navigate("data:text/html,<h1>after</h1>")


@pytest.mark.parametrize("supervised_pool", [1], indirect=True)
def test_a_container_out_of_memory_in_the_middle_of_a_job_is_a_clean_infra_error(supervised_pool: Supervised) -> None:
    pool = ContainerPool(supervised_pool.config)
    grow = "() => { const kept = []; for (;;) kept.push(new Float64Array(8 * 1024 * 1024).fill(Math.random())); }"
    started = time.monotonic()
    with pytest.raises(Exception) as out_of_memory, pool.lease("runs-out-of-memory") as lease, Browser(lease, timeout_s=90) as browser:
        browser.navigate("data:text/html,<h1>hungry</h1>")
        browser.evaluate(grow)
    assert classify(out_of_memory.value) is Outcome.INFRA_ERROR, f"{type(out_of_memory.value).__name__}: {out_of_memory.value}"
    assert "Target crashed" in str(out_of_memory.value), f"the page died of it: {out_of_memory.value}"
    assert time.monotonic() - started < 90, "the job got its error, it did not hang to its timeout"
    kills = oom_kills(pool.status()["containers"][0]["container_id"])
    assert kills is None or kills >= 1, "the kernel killed a process of the container for its memory limit"
    wait_for(lambda: pool.status()["available"] == 1, 120, "the pool did not offer a working container again")
    with pool.lease("after-the-oom") as lease, Browser(lease, timeout_s=60) as browser:
        assert "after" in browser.navigate("data:text/html,<h1>after</h1>")
