"""End to end: real `rq worker` processes (the forking worker) run jobs that drive the real
playwright-mcp in containers leased from a pool kept by a real `cinnamon-pool supervise`, through
a real `cinnamon-pool gateway` (the default path)."""

from __future__ import annotations

import concurrent.futures
import time
from collections import defaultdict

import httpx
import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from cinnamon_pool.browser import Browser
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.logs.format import parse
from cinnamon_pool.pool import ContainerPool
from tests.conftest import ROOT
from tests.e2e.conftest import BIN, Supervised
from tests.support import burst, failure_of, returned, stream_entries

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.redis]


def test_six_jobs_through_two_forking_workers_and_two_real_browsers(supervised_pool: Supervised) -> None:
    config, env, logs, _supervisor, _gateways = supervised_pool
    client = redis.Redis.from_url(config.redis.url)
    queue = Queue("e2e", connection=client, serializer=JSONSerializer)
    jobs = [
        queue.enqueue(
            "workers.jobs.snapshot_page", f"<title>Job {i}</title><h1>Page number {i}</h1>", test_run_id=f"e2e-run-{i}", job_timeout=120
        )
        for i in range(6)
    ]
    worker_command = [str(BIN / "rq"), "worker", "--burst", "-S", "json", "--path", str(ROOT), "--url", config.redis.url, "e2e"]
    with concurrent.futures.ThreadPoolExecutor(2) as two:
        runs = [two.submit(burst, worker_command, env, client, [job.id for job in jobs], 240) for _ in range(2)]
        outputs = [run.result() for run in runs]

    for i, job in enumerate(jobs):
        job = Job.fetch(job.id, connection=client, serializer=JSONSerializer)
        assert job.get_status() == JobStatus.FINISHED, f"job {i} {job.get_status()}: {failure_of(job)}\n{outputs}"
        result = returned(job)
        assert f'heading "Page number {i}"' in result["snapshot"], result["snapshot"]
        assert result["test_run_id"] == f"e2e-run-{i}"
        assert set(result) == {"container", "test_run_id", "snapshot"}, "the result carries no lease token"

    # Exclusivity, from the lease records: on each container, grants and releases alternate and
    # every release ends the lease that the grant before it started.
    history: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for fields in stream_entries(client, PoolKeys(config.pool.name).events):
        kind, name = fields[b"kind"].decode(), fields[b"name"].decode()
        if kind in {"granted", "released"}:
            history[name].append((kind, fields[b"token"].decode()))
    assert set(history) <= {"container-001", "container-002"}
    for name, events in history.items():
        for (kind_a, token_a), (kind_b, token_b) in zip(events[::2], events[1::2], strict=True):
            assert (kind_a, kind_b) == ("granted", "released") and token_a == token_b, f"{name} served two jobs at once: {events}"
    assert sum(len(e) for e in history.values()) == 12, "6 grants and 6 releases"

    usage = logs / "containers"
    deadline = time.monotonic() + 10
    actions: list[str] = []
    while time.monotonic() < deadline and actions.count("RELEASED") < 6:
        actions = [r.action for f in usage.glob("container-usage-*.log") for r in parse(f.open())]
        time.sleep(0.2)
    assert actions.count("ALLOCATED") == 6 and actions.count("RELEASED") == 6, actions


@pytest.mark.parametrize("supervised_pool", [1], indirect=True)
def test_a_jobs_cookies_storage_and_tabs_are_invisible_to_the_next_job_on_the_same_container(
    supervised_pool: Supervised,
) -> None:
    config, env, _logs, _supervisor, _gateways = supervised_pool
    client = redis.Redis.from_url(config.redis.url)
    queue = Queue("e2e-state", connection=client, serializer=JSONSerializer)
    first = queue.enqueue("tests.jobs.leave_state_behind", job_timeout=120)
    second = queue.enqueue("tests.jobs.look_for_state", job_timeout=120)
    worker = [str(BIN / "rq"), "worker", "--burst", "-S", "json", "--path", str(ROOT), "--url", config.redis.url, "e2e-state"]
    output = burst(worker, env, client, [first.id, second.id], 240)
    first, second = (Job.fetch(j.id, connection=client, serializer=JSONSerializer) for j in (first, second))
    assert first.get_status() == JobStatus.FINISHED, failure_of(first) or output
    assert second.get_status() == JobStatus.FINISHED, (failure_of(second), output)
    left, seen = returned(first), returned(second)
    assert "session=secret" in left["found"] and "3 items" in left["found"] and "- 1:" in left["tabs"], (
        f"the first job's state was not set: {left}"
    )
    assert seen["container"] == left["container"] == "container-001", "both jobs ran on the one container"
    assert '\\"cookie\\":\\"\\"' in seen["found"] and '\\"cart\\":null' in seen["found"], seen["found"]
    assert seen["tabs"].count("- 1:") == 0, f"the second job must see one tab: {seen['tabs']}"


def test_the_example_sign_in_flow_types_clicks_asserts_and_takes_a_screenshot(
    supervised_pool: Supervised,
) -> None:
    config, env, logs, _supervisor, _gateways = supervised_pool
    client = redis.Redis.from_url(config.redis.url)
    queue = Queue("e2e-flow", connection=client, serializer=JSONSerializer)
    good = queue.enqueue("workers.jobs.sign_in_flow", "ada@example.test", test_run_id="flow-ok", job_timeout=120)
    bad = queue.enqueue("workers.jobs.sign_in_flow", "not-an-email", test_run_id="flow-bad", job_timeout=120)
    worker = [str(BIN / "rq"), "worker", "--burst", "-S", "json", "--path", str(ROOT), "--url", config.redis.url, "e2e-flow"]
    burst(worker, env, client, [good.id, bad.id], 240)
    good, bad = (Job.fetch(j.id, connection=client, serializer=JSONSerializer) for j in (good, bad))
    assert good.get_status() == JobStatus.FINISHED, failure_of(good)
    assert returned(good)["screenshot_bytes"] > 1000
    # The browser refuses to submit an invalid email: the page never says Welcome; a test failure.
    assert bad.get_status() == JobStatus.FAILED and "AssertionError" in failure_of(bad)
    artifacts = list((logs / "artifacts").glob("*/flow-bad"))
    assert len(artifacts) == 1 and (artifacts[0] / "screenshot.png").stat().st_size > 1000
    assert ContainerPool(config).status()["containers"][0]["error_count"] == 0


def test_a_job_keeps_its_browser_while_supervise_is_killed_and_other_hosts_are_refused_at_the_door(
    supervised_pool: Supervised, real_redis: redis.Redis
) -> None:
    config = supervised_pool.config
    pool = ContainerPool(config)
    assert all(c["endpoint"].startswith(config.gateway.base_url + "/") for c in pool.status()["containers"]), "jobs get gateway URLs"
    with pool.lease("e2e-gateway") as lease, Browser(lease, timeout_s=60) as browser:
        assert "before" in browser.navigate("data:text/html,<h1>before</h1>")
        supervised_pool.supervisor.kill()  # the gateway is its own process: the job's session lives on
        time.sleep(1.0)
        assert "after" in browser.navigate("data:text/html,<h1>after</h1>")
        port = config.container.host_ports[lease.slot - 1]
        direct = httpx.post(
            f"http://127.0.0.1:{port}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Host": f"evil.example:{port}", "Accept": "application/json, text/event-stream"},
            timeout=10,
        )
        assert direct.status_code == 403 and "gateway" in direct.text and str(port) not in direct.text, (
            "the container's door refuses a request without its secret, and names no value to send"
        )
        refused = httpx.post(lease.endpoint, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=10)
        assert refused.status_code == 401, "no token, no browser"
