"""The supervisor against the real engine and a real redis-server, with the fake-mcp image."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
import redis

from cinnamon_pool.errors import LeaseLost
from cinnamon_pool.lease.store import Holder, LeaseStore
from cinnamon_pool.logs.format import parse
from cinnamon_pool.logs.writer import DailyLogWriter
from cinnamon_pool.runtime.docker import DockerRuntime
from cinnamon_pool.supervisor.loop import Supervisor
from tests.conftest import test_config

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

    def actions(self, kind: str) -> list[str]:
        return [r.action for f in sorted((self.logs / "containers").glob(f"container-{kind}-*.log")) for r in parse(f.open())]


@pytest.fixture
def running(
    docker_client: docker.DockerClient,
    real_redis: redis.Redis,
    redis_server: str,
    pool_cleanup: str,
    test_network: str,
    fake_image: str,
    tmp_path: Path,
) -> Iterator[Running]:
    config = test_config(pool_cleanup, redis_server, image=fake_image, network=test_network)
    store = LeaseStore(real_redis, pool_cleanup, lease_ttl_s=5)
    supervisor = Supervisor(config, store, DockerRuntime(docker_client), DailyLogWriter(tmp_path))
    stop = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield Running(supervisor, store, tmp_path)
    finally:
        stop.set()
        supervisor.wake.set()
        thread.join(timeout=30)


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
    with pytest.raises(LeaseLost):
        running.store.renew(grant.name, grant.token)
    replacement = running.store.snapshot().containers[grant.name]
    assert replacement.endpoint == grant.endpoint, "a replacement keeps the slot's endpoint"
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
            return not docker_client.containers.list(all=True, filters={"id": orphan.id})

        eventually(orphan_gone, what="the orphan removed")
        partial.reload(), other.reload()
        assert partial.status == "running" and other.status == "running", "containers without the full label set must be untouched"
    finally:
        for container in (orphan, partial, other):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
