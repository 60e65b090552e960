"""Section "pool": acquire() to an endpoint in hand with a warm pool, against a fresh
container per job (`docker run` + readiness of the same image), measured in the same run."""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

import docker
import redis

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.health import readiness
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.logs.writer import DailyLogWriter
from cinnamon_pool.pool import ContainerPool
from cinnamon_pool.runtime.base import ContainerSpec
from cinnamon_pool.runtime.docker import DockerRuntime
from cinnamon_pool.supervisor.loop import Supervisor
from tests.bench.report import Row, percentile

IMAGE = "cinnamon-pool/playwright-mcp:local"


def fresh_container_start(runtime: DockerRuntime, config: PoolConfig, pool: str, runs: int) -> list[float]:
    samples = []
    for i in range(runs):
        # Not the pool's label set: the running supervisor would remove it as an orphan.
        port = config.container.host_ports[-1]
        spec = ContainerSpec(pool, 0, f"cinnamon-{pool}-fresh-{i}", port, config.container, {"cinnamon.test": pool})
        started = time.perf_counter()
        observed = runtime.create(spec)
        endpoint = f"http://127.0.0.1:{port}/mcp"
        while not readiness(endpoint, 2).ok:
            if time.perf_counter() - started > 60:
                raise RuntimeError(f"a fresh {config.container.image} container was not ready within 60 s")
            time.sleep(0.01)
        samples.append(time.perf_counter() - started)
        runtime.remove(observed.container_id)
        print(f"  fresh container {i + 1}/{runs}: {samples[-1]:.2f} s", flush=True)
    return samples


def run(redis_url: str, workdir: Path) -> list[Row]:
    pool_name = f"bench{secrets.token_hex(3)}"
    network = f"cinnamon-bench-{pool_name}"
    engine = docker.from_env()
    engine.networks.create(network, labels={"cinnamon.test": pool_name})
    config = PoolConfig.from_tables(
        {
            "redis": {"url": redis_url},
            "pool": {"name": pool_name, "min_size": 2, "max_size": 10, "initial_size": 2},
            "container": {"image": IMAGE, "volumes": ["/usr:/usr:ro"], "network": network, "host_port_range": "3900-3909"},
        }
    )
    client = redis.Redis.from_url(redis_url)
    runtime = DockerRuntime(engine)
    supervisor = Supervisor(config, LeaseStore(client, pool_name), runtime, DailyLogWriter(workdir / "logs"))
    stop = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
    thread.start()
    try:
        pool = ContainerPool(config, client=client)
        while pool.status()["available"] < 2:
            time.sleep(0.05)
        warm = []
        for _ in range(200):
            started = time.perf_counter()
            with pool.lease("bench") as lease:
                assert lease.endpoint
                warm.append(time.perf_counter() - started)
        fresh = fresh_container_start(runtime, config, pool_name, runs=5)
    finally:
        stop.set()
        supervisor.wake.set()
        thread.join(timeout=30)
        for label in (f"cinnamon.pool={pool_name}", f"cinnamon.test={pool_name}"):
            for container in engine.containers.list(all=True, filters={"label": label}):
                container.remove(force=True)
        engine.networks.get(network).remove()
    fresh_p50 = percentile(fresh, 50) * 1000
    return [
        Row(
            "pool",
            "acquire -> endpoint, warm pool, p50 (vs docker run + ready)",
            percentile(warm, 50) * 1000,
            fresh_p50,
            "ms",
            ">= 500x (issue 5)",
        ),
        Row("pool", "acquire -> endpoint, warm pool, p99 (vs docker run + ready)", percentile(warm, 99) * 1000, fresh_p50, "ms", "-"),
    ]
