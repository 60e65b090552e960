"""Section "pool": acquire() to an endpoint in hand with a warm pool, against a fresh
container per job (`docker run` + readiness of the same image), measured in the same run."""

from __future__ import annotations

import time
from pathlib import Path

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.health import readiness
from cinnamon_pool.pool import ContainerPool
from cinnamon_pool.runtime.base import ContainerSpec
from cinnamon_pool.runtime.docker import DockerRuntime
from tests.bench.report import Row, percentile
from tests.bench.supervisor_bench import PLAYWRIGHT, supervised

IMAGE = PLAYWRIGHT


def fresh_container_start(runtime: DockerRuntime, config: PoolConfig, pool: str, runs: int) -> list[float]:
    samples = []
    for i in range(runs):
        # Not the pool's label set: the running supervisor would remove it as an orphan.
        port = config.container.host_ports[-1]
        spec = ContainerSpec(
            pool, 0, f"cinnamon-{pool}-fresh-{i}", port, config.container, {"cinnamon.test": pool}, config.container.command_for(port)
        )
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
    with supervised(redis_url, IMAGE, 2, workdir, "3900-3909", canary_share=0.0) as (supervisor, store, engine):
        pool = ContainerPool(supervisor.config, client=store.redis)
        warm = []
        for _ in range(200):
            started = time.perf_counter()
            with pool.lease("bench") as lease:
                assert lease.endpoint
                warm.append(time.perf_counter() - started)
        fresh = fresh_container_start(DockerRuntime(engine), supervisor.config, supervisor.pool, runs=5)
    fresh_p50 = percentile(fresh, 50) * 1000
    return [
        Row(
            "pool",
            "acquire -> endpoint, warm pool, p50 (vs docker run + ready)",
            percentile(warm, 50) * 1000,
            fresh_p50,
            "ms",
            "ratio <= 0.002",
        ),
        Row(
            "pool",
            "acquire -> endpoint, warm pool, p99 (vs docker run + ready)",
            percentile(warm, 99) * 1000,
            fresh_p50,
            "ms",
            "ratio <= 0.01",
        ),
    ]
