"""Real `cinnamon-pool supervise` processes: leader election and crashes mid-action."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import docker
import pytest
import redis

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.pool import ContainerPool
from tests.conftest import test_config
from tests.integration.supervised import eventually

pytestmark = [pytest.mark.docker, pytest.mark.redis]
BIN = Path(sys.executable).parent
RULES = "tick_s = 0.3\nleader_lease_s = 1.5\nleader_renew_deadline_s = 1.0\nleader_retry_s = 0.2\n"


class Supervisors:
    def __init__(self, config: PoolConfig, config_path: Path, workdir: Path) -> None:
        self.config, self.config_path, self.workdir = config, config_path, workdir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.pool = ContainerPool(config)

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"supervise-{len(self.processes)}.log").open("wb")
        env = {**os.environ, "CINNAMON_CONFIG": str(self.config_path)}
        process = subprocess.Popen([str(BIN / "cinnamon-pool"), "supervise"], env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def output(self, index: int) -> str:
        return (self.workdir / f"supervise-{index}.log").read_text()

    def ready(self) -> bool:
        status = self.pool.status()
        return bool(status["available"] == 2 and status["total"] == 2)


G = TypeVar("G", bound=Supervisors)


def supervise_from_toml(
    group: type[G], config: PoolConfig, redis_url: str, tmp_path: Path, *, max_size: int = 2, rules: str = RULES, extra: str = ""
) -> Iterator[G]:
    """Write the pool's TOML file as an operator would, yield the group, and kill what it started."""
    c, pool = config.container, config.pool.name
    path = tmp_path / "pool.toml"
    path.write_text(
        f'[redis]\nurl = "{redis_url}"\n[pool]\nname = "{pool}"\nmin_size = 1\nmax_size = {max_size}\ninitial_size = 2\n'
        f'[container]\nimage = "{c.image}"\nvolumes = ["/usr:/usr:ro"]\nnetwork = "{c.network}"\nhost_port_range = "{c.host_port_range}"\n'
        f'[rules]\n{rules}[logs]\ndir = "{tmp_path / "logs"}"\n{extra}'
    )
    running = group(config, path, tmp_path)
    yield running
    for process in running.processes:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def supervisors(
    real_redis: redis.Redis, redis_server: str, pool_cleanup: str, test_network: str, fake_image: str, tmp_path: Path
) -> Iterator[Supervisors]:
    config = test_config(pool_cleanup, redis_server, image=fake_image, network=test_network)
    yield from supervise_from_toml(Supervisors, config, redis_server, tmp_path)


def pool_containers(client: docker.DockerClient, pool: str) -> list[dict[str, Any]]:
    """One listing call (no per-container inspect, which races with the supervisor's removals)."""
    return client.api.containers(all=True, filters={"label": f"cinnamon.pool={pool}"})  # type: ignore[no-any-return]


def one_per_slot(client: docker.DockerClient, pool: str, status: Callable[[], dict[str, Any]]) -> bool:
    containers = pool_containers(client, pool)
    slots = sorted(c["Labels"]["cinnamon.slot"] for c in containers)
    registered = {c["container_id"] for c in status()["containers"] if c["state"] == "available"}
    return slots == ["1", "2"] and registered == {c["Id"] for c in containers}


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_the_standby_takes_over_when_the_leader_dies_or_pauses(
    supervisors: Supervisors, docker_client: docker.DockerClient, pool_cleanup: str, how: str
) -> None:
    leader = supervisors.start()
    eventually(supervisors.ready, what="the leader brought up 2 containers")
    standby = supervisors.start()
    eventually(lambda: "standing by" in supervisors.output(1), seconds=10, what="the second supervisor standing by")
    assert "leading" not in supervisors.output(1)
    os.kill(leader.pid, getattr(signal, how))
    victim = supervisors.pool.status()["containers"][0]
    docker_client.containers.get(victim["container_id"]).kill()
    eventually(lambda: "leading" in supervisors.output(1), seconds=15, what="the standby took over")

    def healed() -> bool:
        return one_per_slot(docker_client, pool_cleanup, supervisors.pool.status) and victim["container_id"] not in {
            c["Id"] for c in pool_containers(docker_client, pool_cleanup)
        }

    eventually(healed, seconds=30, what="the new leader replaced the killed container")
    if how == "SIGSTOP":
        os.kill(leader.pid, signal.SIGCONT)
        eventually(lambda: "standing by" in supervisors.output(0), seconds=15, what="the paused leader stepping down")
        time.sleep(1.0)
        assert one_per_slot(docker_client, pool_cleanup, supervisors.pool.status), "the old leader must not have acted after waking"
    assert standby.poll() is None


def test_a_supervisor_killed_between_create_and_register_leaves_one_container_per_slot(
    supervisors: Supervisors, docker_client: docker.DockerClient, pool_cleanup: str
) -> None:
    first = supervisors.start()
    eventually(lambda: pool_containers(docker_client, pool_cleanup), seconds=30, what="a first container created")
    first.kill()  # most likely before its registration: fake-mcp needs ~0.2 s to answer
    first.wait(timeout=10)
    supervisors.start()
    eventually(
        lambda: one_per_slot(docker_client, pool_cleanup, supervisors.pool.status), seconds=30, what="one registered container per slot"
    )
    assert len(pool_containers(docker_client, pool_cleanup)) == 2, "nothing leaked"
