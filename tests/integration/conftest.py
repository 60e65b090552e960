"""Fixtures of the integration tests: a supervisor thread on a pool of fake-mcp containers
(``start``, ``running``: supervised.py) and a gateway stand (``stand``: gateway_stand.py)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import redis

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.logs.writer import DailyLogWriter
from cinnamon_pool.model import ContainerRecord, ContainerState
from cinnamon_pool.runtime.docker import DockerRuntime
from cinnamon_pool.supervisor.loop import Supervisor
from tests.conftest import FAKE_MCP, test_config
from tests.integration.gateway_stand import HEADER_TIMEOUT_S, HOST, PER_CLIENT, STREAMS_PER_LEASE, UPSTREAM_TIMEOUT_S, Stand, start_gateway
from tests.integration.supervised import Running, Starter
from tests.support import free_port, stop, wait_for_http


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
        size: int = 2, min_size: int | None = None, max_size: int | None = None, container: dict[str, Any] | None = None, **rules: float
    ) -> Running:
        config = test_config(pool_cleanup, redis_server, image=fake_image, network=test_network, size=size, **rules)
        if container:
            config = dataclasses.replace(config, container=dataclasses.replace(config.container, **container))
        if min_size is not None or max_size is not None:
            pool: dict[str, Any] = {"name": pool_cleanup, "min_size": min_size or size, "max_size": max_size or size, "initial_size": size}
            config = dataclasses.replace(config, pool=dataclasses.replace(config.pool, **pool))
        store = LeaseStore(real_redis, pool_cleanup, lease_ttl_s=5, error_threshold=config.rules.error_threshold)
        supervisor = Supervisor(config, store, DockerRuntime(docker_client), DailyLogWriter(tmp_path))
        stop = threading.Event()
        thread = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
        thread.start()
        stops.append((stop, thread, supervisor))
        return Running(supervisor, store, tmp_path)

    yield starter
    for stopping, thread, supervisor in stops:
        stopping.set()
        supervisor.wake.set()
        thread.join(timeout=30)


@pytest.fixture
def running(start: Starter) -> Running:
    return start()


@pytest.fixture
def stand(real_redis: redis.Redis, redis_server: str, tmp_path: Path) -> Iterator[Stand]:
    port, gateway_port = free_port(), free_port()
    fake = subprocess.Popen(
        ["/usr/bin/python3", str(FAKE_MCP), "--host", "127.0.0.1", "--port", str(port), "--allowed-hosts", f"127.0.0.1:{port}"],
        stderr=subprocess.DEVNULL,
    )
    path = tmp_path / "pool.toml"
    path.write_text(
        f'[redis]\nurl = "{redis_server}"\n[pool]\nname = "gw"\nmin_size = 1\nmax_size = 1\ninitial_size = 1\nhost = "{HOST}"\n'
        f'[container]\nhost_port_range = "{port}-{port}"\n[gateway]\nlisten = "127.0.0.1:{gateway_port}"\nmax_body_bytes = 65536\n'
        f"body_timeout_s = 1.0\nheader_timeout_s = {HEADER_TIMEOUT_S}\nmax_connections_per_client = {PER_CLIENT}\n"
        f"upstream_timeout_s = {UPSTREAM_TIMEOUT_S}\nmax_streams_per_lease = {STREAMS_PER_LEASE}\n"
        f'session_acquire_timeout_s = 2\nsession_idle_s = 3\n[logs]\ndir = "{tmp_path / "logs"}"\n'
    )
    config = PoolConfig.load(path)
    store = LeaseStore(real_redis, "gw", lease_ttl_s=30)
    endpoint = config.gateway.endpoint("gw", "container-001")
    store.register(ContainerRecord("container-001", "a" * 64, 1, HOST, endpoint, ContainerState.STARTING))
    env = {**os.environ, "CINNAMON_CONFIG": str(path)}
    gateway = start_gateway(env, tmp_path / "gateway.log")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/_fake/state")
        wait_for_http(f"http://127.0.0.1:{gateway_port}/metrics")
        stand = Stand(
            f"http://127.0.0.1:{gateway_port}",
            f"http://127.0.0.1:{port}",
            store,
            config,
            tmp_path / "logs",
            gateway,
            env,
            tmp_path / "gateway.log",
        )
        yield stand
    finally:
        for process in (stand.gateway if "stand" in locals() else gateway, fake):
            stop(process)
