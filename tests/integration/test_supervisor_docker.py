"""The supervisor against the real engine and a real redis-server, with the fake-mcp image."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import httpx
import pytest
import redis

from cinnamon_pool.browser import Browser
from cinnamon_pool.errors import LeaseLost, PoolExhausted
from cinnamon_pool.lease.handle import ContainerLease
from cinnamon_pool.lease.heartbeat import Heartbeat
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.logs.format import LogKind, LogRecord, parse
from cinnamon_pool.logs.writer import DailyLogWriter
from cinnamon_pool.model import ContainerState, Holder, Outcome
from cinnamon_pool.runtime.docker import DockerRuntime
from cinnamon_pool.supervisor.loop import Supervisor
from cinnamon_pool.supervisor.metrics import PoolMetrics
from tests.conftest import ROOT, test_config
from tests.support import free_port

pytestmark = [pytest.mark.docker, pytest.mark.redis]


def eventually(condition: Callable[[], object], seconds: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"{what} did not hold within {seconds} s")


class Running:
    def __init__(self, supervisor: Supervisor, store: LeaseStore, logs: Path) -> None:
        self.supervisor, self.store, self.logs = supervisor, store, logs

    def free(self) -> list[str]:
        return sorted(self.store.snapshot().free)

    def supervisor_errors(self) -> list[str]:
        files = sorted((self.logs / "containers").glob("container-errors-*.log"))
        return [r.detail("Error") for f in files for r in parse(f.open()) if r.action == "ERROR_OCCURRED"]

    def actions(self, kind: str) -> list[str]:
        return [r.action for f in sorted((self.logs / "containers").glob(f"container-{kind}-*.log")) for r in parse(f.open())]


Starter = Callable[..., Running]


@pytest.fixture
def start(
    docker_client: docker.DockerClient,
    real_redis: redis.Redis,
    redis_server: str,
    pool_cleanup: str,
    test_network: str,
    fake_image: str,
    tmp_path: Path,
) -> Iterator[Starter]:
    """Start a supervisor thread on a pool of fake-mcp containers, with rules overridden."""
    stops: list[tuple[threading.Event, threading.Thread, Supervisor]] = []

    def starter(
        size: int = 2, min_size: int | None = None, max_size: int | None = None, container: dict[str, str] | None = None, **rules: float
    ) -> Running:
        config = test_config(pool_cleanup, redis_server, image=fake_image, network=test_network, size=size, **rules)
        if container:
            config = dataclasses.replace(config, container=dataclasses.replace(config.container, **container))
        if min_size is not None or max_size is not None:
            pool = {"name": pool_cleanup, "min_size": min_size or size, "max_size": max_size or size, "initial_size": size}
            config = dataclasses.replace(config, pool=dataclasses.replace(config.pool, **pool))
        store = LeaseStore(real_redis, pool_cleanup, lease_ttl_s=5, error_threshold=config.rules.error_threshold)
        supervisor = Supervisor(config, store, DockerRuntime(docker_client), DailyLogWriter(tmp_path))
        stop = threading.Event()
        thread = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
        thread.start()
        stops.append((stop, thread, supervisor))
        return Running(supervisor, store, tmp_path)

    yield starter
    for stop, thread, supervisor in stops:
        stop.set()
        supervisor.wake.set()
        thread.join(timeout=30)


@pytest.fixture
def running(start: Starter) -> Running:
    return start()


def test_starts_initial_size_and_registers_ready_containers(
    running: Running, docker_client: docker.DockerClient, pool_cleanup: str
) -> None:
    eventually(lambda: running.free() == ["container-001", "container-002"], what="two containers registered")
    records = running.store.snapshot().containers
    for record in records.values():
        labels = docker_client.containers.get(record.container_id).labels
        expected = {"cinnamon.pool": pool_cleanup, "cinnamon.managed": "true", "cinnamon.slot": str(record.slot)}
        assert expected.items() <= labels.items(), f"the pool's labels are missing: {labels}"
    assert running.actions("pool") == ["CONTAINER_STARTED", "CONTAINER_STARTED"]


@pytest.mark.parametrize("how", ["kill", "rm -f"])
def test_a_container_killed_or_removed_from_outside_is_replaced(running: Running, docker_client: docker.DockerClient, how: str) -> None:
    eventually(lambda: len(running.free()) == 2, what="pool ready")
    grant = running.store.acquire(Holder("victim"), timeout_s=1)
    container = docker_client.containers.get(grant.container_id)
    container.kill() if how == "kill" else container.remove(force=True)

    def replaced() -> bool:
        record = running.store.snapshot().containers.get(grant.name)
        return record is not None and record.container_id != grant.container_id and grant.name in running.store.snapshot().free

    eventually(replaced, what=f"{grant.name} replaced after docker {how}")
    replacement = running.store.snapshot().containers[grant.name]
    assert replacement.endpoint == grant.endpoint, "a replacement keeps the slot's endpoint"
    # The holder has not renewed since (its local deadline is far off), yet it must not reach the
    # replacement behind the same endpoint: Redis says its lease ended.
    lease = ContainerLease.from_grant(
        running.store.pool, grant, fence_after_s=60, confirm=functools.partial(running.store.holds, grant.name, grant.token)
    )
    with pytest.raises(LeaseLost, match="ended before its expiry"), Browser(lease, timeout_s=5) as browser:
        browser.navigate("data:text/html,stale holder")
    state = httpx.get(grant.endpoint.removesuffix("/mcp") + "/_fake/state", timeout=5).json()
    assert state["sessions"] == 0 and state["calls"] == [], "no request of the stale holder reached the replacement"
    with pytest.raises(LeaseLost):
        running.store.renew(grant.name, grant.token)
    if how == "kill":
        assert "CONTAINER_REPLACED" in running.actions("pool")


def test_orphans_with_the_full_label_set_are_removed_and_nothing_else(
    running: Running, docker_client: docker.DockerClient, pool_cleanup: str, fake_image: str
) -> None:
    eventually(lambda: len(running.free()) == 2, what="pool ready")
    common = {"image": fake_image, "detach": True, "volumes": ["/usr:/usr:ro"], "network_mode": "none"}
    orphan = docker_client.containers.run(
        **common, labels={"cinnamon.pool": pool_cleanup, "cinnamon.managed": "true", "cinnamon.slot": "7"}
    )
    partial = docker_client.containers.run(**common, labels={"cinnamon.pool": pool_cleanup})
    other = docker_client.containers.run(**common, labels={"cinnamon.pool": "other", "cinnamon.managed": "true", "cinnamon.slot": "1"})
    try:
        running.supervisor.wake.set()

        def orphan_gone() -> bool:
            return not docker_client.api.containers(all=True, filters={"id": orphan.id})

        eventually(orphan_gone, what="the orphan removed")
        partial.reload(), other.reload()
        assert partial.status == "running" and other.status == "running", "containers without the full label set must be untouched"
    finally:
        for container in (orphan, partial, other):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


def pool_log(running: Running, action: str) -> list[str]:
    files = sorted((running.logs / "containers").glob("container-*.log"))
    return [r.detail("Reason") for f in files for r in parse(f.open()) if r.action == action]


def fake(endpoint: str, change: dict[str, object]) -> None:
    httpx.post(endpoint.removesuffix("/mcp") + "/_fake/mode", json=change, timeout=10).raise_for_status()


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


def test_a_foreign_container_id_in_redis_gets_no_docker_call(
    running: Running, docker_client: docker.DockerClient, fake_image: str, pool_cleanup: str
) -> None:
    eventually(lambda: len(running.free()) == 2, what="pool ready")
    foreign = docker_client.containers.run(
        fake_image, detach=True, volumes=["/usr:/usr:ro"], network_mode="none", labels={"cinnamon.test": pool_cleanup}
    )
    try:
        record = running.store.snapshot().containers["container-001"]
        forged = dataclasses.replace(record, container_id=foreign.id)
        running.store.redis.hset(running.store.keys.containers, "container-001", json.dumps(forged.to_json_dict()))
        running.store.set_state("container-001", ContainerState.RESTARTING, "forged record")

        def healed() -> bool:  # (between the forged record's drop and the re-registration, there is none)
            now = running.store.snapshot().containers.get("container-001")
            return now is not None and now.container_id == record.container_id

        eventually(healed, what="the record healed")
        foreign.reload()
        assert foreign.status == "running" and foreign.attrs["RestartCount"] == 0, "the foreign container must not be touched"
        assert foreign.attrs["State"]["StartedAt"] == docker_client.api.inspect_container(foreign.id)["State"]["StartedAt"]
    finally:
        foreign.remove(force=True)


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


def test_redis_amnesia_recycles_every_container_before_it_serves_again(running: Running, docker_client: docker.DockerClient) -> None:
    eventually(lambda: len(running.free()) == 2, what="pool ready")
    before = {
        r.container_id: docker_client.api.inspect_container(r.container_id)["State"]["StartedAt"]
        for r in running.store.snapshot().containers.values()
    }
    old_epoch = running.store.snapshot().epoch
    running.store.redis.flushall()

    def recycled() -> bool:
        snapshot = running.store.snapshot()
        return snapshot.epoch not in {None, old_epoch} and len(snapshot.free) == 2

    eventually(recycled, what="the pool re-registered under a new epoch")
    for container_id, started in before.items():
        assert docker_client.api.inspect_container(container_id)["State"]["StartedAt"] != started, (
            "every container restarted before serving again"
        )


def test_drain_removes_containers_as_they_are_released_and_undo_refills(
    running: Running, docker_client: docker.DockerClient, pool_cleanup: str
) -> None:
    eventually(lambda: len(running.free()) == 2, what="pool ready")
    held = running.store.acquire(Holder("long-job"), timeout_s=5)
    running.store.set_draining(True)
    with pytest.raises(PoolExhausted):
        running.store.acquire(Holder("new-job"), timeout_s=0, wait=False)

    def containers() -> list[str]:
        # The low-level listing: docker-py's containers.list() inspects each one and races with removals.
        return [c["Id"] for c in docker_client.api.containers(all=True, filters={"label": f"cinnamon.pool={pool_cleanup}"})]

    eventually(lambda: containers() == [held.container_id], what="the free container removed, the leased one kept")
    running.store.release(held.name, held.token)
    eventually(lambda: containers() == [], what="the released container removed")
    running.store.set_draining(False)
    eventually(lambda: len(running.free()) == 2, what="refilled after undo")


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


def test_the_supervisor_serves_prometheus_metrics(start: Starter) -> None:
    running = start()
    port = free_port()
    metrics = PoolMetrics(running.supervisor.pool)
    metrics.serve("127.0.0.1", port)
    running.supervisor.metrics = metrics
    running.supervisor.journal.on_event = metrics.lease_event
    eventually(lambda: len(running.free()) == 2, what="pool ready")
    grant = running.store.acquire(Holder("metrics"), timeout_s=5)
    running.store.release(grant.name, grant.token)

    def scraped() -> bool:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        return (
            'cinnamon_pool_containers{pool="' in text
            and "cinnamon_pool_leases_granted_total" in text
            and 'state="available"} 2.0' in text
            and ('cinnamon_pool_leases_released_total{outcome="ok"' in text)
        )

    eventually(scraped, what="the pool's metrics on /metrics")


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


def test_a_taken_host_port_fails_its_slot_loudly_leaks_nothing_and_recovers(
    start: Starter, docker_client: docker.DockerClient, pool_cleanup: str
) -> None:
    config_ports = test_config(pool_cleanup, "redis://127.0.0.1:1/0", network="unused").container.host_ports
    low = config_ports[0]
    blocker = socket.create_server(("127.0.0.1", low))  # slot 1's port, taken by someone else
    try:
        running = start(container={"host_port_range": f"{low}-{low + 1}"})
        eventually(lambda: running.free() == ["container-002"], what="slot 2 serving while slot 1 cannot start")
        eventually(lambda: any(str(low) in line for line in running.supervisor_errors()), what=f"an error naming port {low}")
        ids = {c["Id"] for c in docker_client.api.containers(all=True, filters={"label": f"cinnamon.pool={pool_cleanup}"})}
        assert ids == {running.store.snapshot().containers["container-002"].container_id}, "no half-created container left"
    finally:
        blocker.close()
    eventually(lambda: running.free() == ["container-001", "container-002"], what="slot 1 up once its port is free")


DESTRUCTIVE = os.environ.get("CINNAMON_DESTRUCTIVE_TESTS") == "1"


@pytest.mark.skipif(not DESTRUCTIVE, reason="restarts dockerd: opt in with CINNAMON_DESTRUCTIVE_TESTS=1 (README, Faults and the soak)")
def test_the_pool_comes_back_by_itself_after_dockerd_restarts(start: Starter, docker_client: docker.DockerClient) -> None:
    pid_file = ROOT / ".run" / "dockerd.pid"
    if not pid_file.exists() or not Path(f"/proc/{pid_file.read_text().strip()}").exists():
        pytest.fail(
            f"dockerd was not started by compose/scripts/services.sh (no live pid in {pid_file}): not restarting a daemon we did not start"
        )
    running = start()
    eventually(lambda: len(running.free()) == 2, what="pool ready")
    before = {r.container_id for r in running.store.snapshot().containers.values()}
    dockerd = int(pid_file.read_text())
    os.kill(dockerd, signal.SIGTERM)  # its containers stop with it (restart policy "no", no live-restore)
    eventually(lambda: not Path(f"/proc/{dockerd}").exists(), seconds=60, what="dockerd stopped")
    time.sleep(2)  # the supervisor meets a dead engine for a few ticks
    subprocess.run(["bash", str(ROOT / "compose" / "scripts" / "services.sh")], check=True, capture_output=True, timeout=120)
    eventually(
        lambda: len(running.free()) == 2 and not before & {r.container_id for r in running.store.snapshot().containers.values()},
        seconds=60,
        what="every slot replaced and serving after the restart",
    )
    assert any("docker" in line.lower() for line in running.supervisor_errors()), "the outage was reported"


def test_a_pinned_image_whose_tag_moved_starts_nothing_and_says_so(
    start: Starter, docker_client: docker.DockerClient, fake_image: str, pool_cleanup: str, redis_server: str
) -> None:
    tag = f"cinnamon-pool/pin-test:{pool_cleanup}"
    pinned = docker_client.images.get(fake_image)
    pinned.tag(tag)
    try:
        running = start(container={"image": tag, "image_id": pinned.id})
        eventually(lambda: len(running.free()) == 2, what="the pinned image starts")
        other = docker_client.images.get("cinnamon-pool/redis:local")  # any other local build
        other.tag(tag)  # the tag now names another image
        victim = running.store.snapshot().containers["container-001"]
        docker_client.containers.get(victim.container_id).remove(force=True)
        eventually(lambda: any("nothing is started from it" in e for e in running.supervisor_errors()), what="the refusal logged")
        time.sleep(1.0)
        images = {c["ImageID"] for c in docker_client.api.containers(all=True, filters={"label": f"cinnamon.pool={pool_cleanup}"})}
        assert images == {pinned.id}, f"a container was started from {images - {pinned.id}}"
        assert sum("container.image_id pins" in e for e in running.supervisor_errors()) == 1, "said once per back-off period, not per tick"
        env = {**os.environ, "CINNAMON_REDIS_URL": redis_server, "CINNAMON_IMAGE": tag}
        doctor = subprocess.run(
            [str(Path(sys.executable).parent / "cinnamon-pool"), "doctor"], env=env, capture_output=True, text=True, timeout=60
        )
        assert "WARN image pin: " + tag + " is a tag" in doctor.stdout, doctor.stdout
    finally:
        docker_client.images.remove(tag, noprune=True)
