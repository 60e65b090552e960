"""The supervisor against the real engine and a real redis-server, with the fake-mcp image: the pool's
containers started, replaced, removed, recycled and drained, and what it refuses to touch."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import docker
import httpx
import pytest

from cinnamon_pool.browser import Browser
from cinnamon_pool.errors import LeaseLost, PoolExhausted
from cinnamon_pool.lease.handle import ContainerLease
from cinnamon_pool.model import ContainerState, Holder
from cinnamon_pool.supervisor.metrics import PoolMetrics
from tests.conftest import ROOT, test_config
from tests.integration.supervised import Running, Starter, eventually
from tests.support import free_port

pytestmark = [pytest.mark.docker, pytest.mark.redis]
DESTRUCTIVE = os.environ.get("CINNAMON_DESTRUCTIVE_TESTS") == "1"


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
