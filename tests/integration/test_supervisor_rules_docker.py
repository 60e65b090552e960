"""The container rules against the real engine and a real redis-server, with the fake-mcp image: memory,
errors, unanswered probes, leftovers, OOM and pause, the pool's size under load, a full disk."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import time

import docker
import httpx
import pytest

from cinnamon_pool.lease.handle import ContainerLease
from cinnamon_pool.lease.heartbeat import Heartbeat
from cinnamon_pool.logs.format import LogKind, LogRecord, parse
from cinnamon_pool.model import Holder, Outcome
from tests.integration.supervised import Running, Starter, eventually, fake, pool_log

pytestmark = [pytest.mark.docker, pytest.mark.redis]


def test_memory_growth_drains_then_restarts_the_container(start: Starter) -> None:
    running = start(max_memory_mb=80)
    eventually(lambda: len(running.free()) == 2, what="pool ready")
    victim = running.store.snapshot().containers["container-001"]
    fake(victim.endpoint, {"grow_mb": 100})
    eventually(lambda: "memory_limit_exceeded" in pool_log(running, "CONTAINER_RESTART"), what="a restart for memory")
    eventually(lambda: running.store.snapshot().containers["container-001"].state.value == "available", what="back in the pool")
    recycled = running.store.snapshot().containers["container-001"]
    assert recycled.container_id == victim.container_id and recycled.restarts == 1, "restarted in place, counted"
    assert running.store.snapshot().memory_mb.get("container-001", 999) < 80


def test_three_infra_errors_in_a_row_restart_the_container(start: Starter) -> None:
    running = start(size=1, min_size=1, max_size=2)
    eventually(lambda: running.free() == ["container-001"], what="pool ready")
    for _ in range(3):
        grant = running.store.acquire(Holder("failing-job"), timeout_s=10)
        running.store.release(grant.name, grant.token, Outcome.INFRA_ERROR)
    eventually(lambda: "error_threshold_exceeded" in pool_log(running, "CONTAINER_RESTART"), what="a restart for error_threshold")
    files = sorted((running.logs / "containers").glob("container-pool-*.log"))
    [restart] = [r for f in files for r in parse(f.open()) if r.action == "CONTAINER_RESTART"]
    assert [key for key, _ in restart.details][:4] == ["Reason", "Memory Usage", "Error Count", "Uptime"], restart
    assert restart.detail("Error Count") == "3" and re.fullmatch(r"\d+MB", restart.detail("Memory Usage")), restart
    assert re.fullmatch(r"\d+s|\d+min", restart.detail("Uptime")), restart
    eventually(lambda: running.free() == ["container-001"], what="back in the pool")
    assert running.store.snapshot().containers["container-001"].error_count == 0


def test_a_container_that_does_not_answer_in_time_is_restarted_at_once_or_drained_while_leased(start: Starter) -> None:
    """The seed: no answer for health_timeout_s restarts the container; not after 3 probes, and
    never mid-lease (draining, as for memory)."""
    running = start(health_interval_s=0.2, health_timeout_s=0.5, health_failures=3)
    eventually(lambda: len(running.free()) == 2, what="pool ready")
    snapshot = running.store.snapshot()
    hung, busy = snapshot.containers["container-002"], snapshot.containers["container-001"]
    grant = running.store.acquire(Holder("holds-001"), timeout_s=10)
    assert grant.name == "container-001"
    # held as a job holds it (the store's TTL is 5 s; the first restart alone may take longer on a busy host)
    heartbeat = Heartbeat(running.store, ContainerLease.from_grant(running.store.pool, grant, fence_after_s=4)).start()
    fake(hung.endpoint, {"mode": "hang"})  # one at a time: every probe of a round late means a busy host

    def restarted(name: str, before: int) -> bool:
        record = running.store.snapshot().containers.get(name)
        return record is not None and record.restarts > before and record.state.value == "available"

    eventually(lambda: restarted("container-002", hung.restarts), what="the hung free container restarted")
    assert running.store.snapshot().containers["container-002"].container_id == hung.container_id, "in place, not replaced"
    assert "response_timeout" in pool_log(running, "CONTAINER_RESTART"), pool_log(running, "CONTAINER_RESTART")
    fake(busy.endpoint, {"mode": "hang"})
    eventually(lambda: running.store.snapshot().containers["container-001"].state.value == "draining", what="the leased one drained")
    time.sleep(1.0)
    assert running.store.snapshot().containers["container-001"].restarts == busy.restarts, "not restarted mid-lease"
    heartbeat.stop()
    running.store.release(grant.name, grant.token)
    eventually(lambda: restarted("container-001", busy.restarts), what="the hung leased container restarted once released")


def test_the_pool_grows_under_waiting_jobs_and_shrinks_back_when_idle(start: Starter) -> None:
    running = start(size=1, min_size=1, max_size=3, idle_shrink_s=1.0, scale_cooldown_s=0.0)
    eventually(lambda: running.free() == ["container-001"], what="pool ready")
    holder = running.store.acquire(Holder("holder"), timeout_s=5)
    grants: list[object] = []
    waiters = [threading.Thread(target=lambda: grants.append(running.store.acquire(Holder("waiter"), timeout_s=60))) for _ in range(2)]
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:
        waiter.join(timeout=90)
    assert len(grants) == 2, "both waiters got a container from the grown pool"
    assert running.supervisor.size == 3
    assert sorted(g.name for g in grants) == ["container-002", "container-003"]  # type: ignore[attr-defined]
    for grant in [holder, *grants]:
        running.store.release(grant.name, grant.token)  # type: ignore[attr-defined]
    eventually(lambda: running.supervisor.size == 1 and running.free() == ["container-001"], seconds=30, what="shrunk back to min_size")
    actions = [r.action for f in sorted((running.logs / "containers").glob("container-pool-*.log")) for r in parse(f.open())]
    assert "POOL_EXPANDED" in actions and actions.count("POOL_SHRUNK") == 2


def test_a_browser_left_open_by_a_job_sends_the_container_to_restart(start: Starter) -> None:
    running = start(residue_processes=0)
    eventually(lambda: len(running.free()) == 2, what="pool ready")
    grant = running.store.acquire(Holder("sloppy-job"), timeout_s=5)
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "job", "version": "1"}},
    }
    opened = httpx.post(grant.endpoint, json=initialize, headers={"Accept": "application/json, text/event-stream"}, timeout=10)
    assert opened.headers.get("mcp-session-id"), "the job opened a session of its own and never ends it"
    running.store.release(grant.name, grant.token)
    eventually(lambda: "leftover_processes" in pool_log(running, "CONTAINER_RESTART"), what="a restart for the leftover")
    eventually(lambda: grant.name in running.free(), what="back in the pool, clean")
    assert running.store.snapshot().containers[grant.name].restarts == 1


def test_the_pool_keeps_serving_with_a_full_disk_or_a_deleted_log_directory(running: Running) -> None:
    eventually(lambda: len(running.free()) == 2, what="pool ready")
    usage = running.supervisor.journal.writer.path_for(LogKind.USAGE, LogRecord(running.supervisor.clock.now(), "INFO", "x", "X"))
    usage.unlink(missing_ok=True)
    os.symlink("/dev/full", usage)
    for _ in range(3):
        grant = running.store.acquire(Holder("while-disk-full"), timeout_s=5)
        running.store.release(grant.name, grant.token)
    eventually(lambda: running.supervisor.journal.writer.dropped >= 6, what="records dropped, not the pool")
    usage.unlink()
    shutil.rmtree(running.logs / "containers")
    grant = running.store.acquire(Holder("after-recovery"), timeout_s=5)
    running.store.release(grant.name, grant.token)
    eventually(lambda: "after-recovery" in (usage.read_text() if usage.exists() else ""), what="writing resumed in a new directory")


def test_an_oom_killed_container_is_replaced_and_the_log_says_so(start: Starter, docker_client: docker.DockerClient) -> None:
    running = start(container={"memory": "64m"})
    eventually(lambda: len(running.free()) == 2, what="pool ready")
    victim = running.store.snapshot().containers["container-001"]
    with contextlib.suppress(httpx.HTTPError):  # the process may die before it answers
        fake(victim.endpoint, {"grow_mb": 200})
    eventually(
        lambda: any("OOM-killed" in reason for reason in pool_log(running, "CONTAINER_REPLACED")), what="a replacement for the OOM kill"
    )
    eventually(lambda: "container-001" in running.free(), what="the slot back in the pool")
    assert running.store.snapshot().containers["container-001"].container_id != victim.container_id


def test_a_paused_container_is_replaced(start: Starter, docker_client: docker.DockerClient) -> None:
    running = start(health_interval_s=0.2, health_timeout_s=0.3, health_failures=3)
    eventually(lambda: len(running.free()) == 2, what="pool ready")
    victim = running.store.snapshot().containers["container-002"]
    docker_client.api.pause(victim.container_id)

    def replaced() -> bool:
        record = running.store.snapshot().containers.get("container-002")
        return record is not None and record.container_id != victim.container_id and record.state.value == "available"

    eventually(replaced, what="the paused container replaced")
    gone = [c for c in docker_client.api.containers(all=True) if c["Id"] == victim.container_id]
    assert gone == [], "the paused container was removed, not left frozen"
