"""Section "supervisor": replacement after `docker kill` vs the floor (die event + docker run +
readiness of the same image), one observe pass over 10 containers vs docker-py's stats sweep,
and the supervisor's resident memory vs a bare Python interpreter. All in the same run."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import redis

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.health import readiness
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.logs.writer import DailyLogWriter
from cinnamon_pool.runtime.base import ContainerSpec
from cinnamon_pool.runtime.docker import DockerRuntime
from cinnamon_pool.supervisor.loop import Supervisor
from tests.bench.report import Row, percentile
from tests.support import sweep_egress

FAKE = "cinnamon-pool/fake-mcp:test"
PLAYWRIGHT = "cinnamon-pool/playwright-mcp:local"


def _config(
    redis_url: str,
    pool: str,
    image: str,
    network: str,
    size: int,
    ports: str,
    gateway: str = "",
    cpus: float = 0.5,
    container: Mapping[str, Any] | None = None,
    **rules: float,
) -> PoolConfig:
    return PoolConfig.from_tables(
        {
            "redis": {"url": redis_url},
            "pool": {"name": pool, "min_size": 1, "max_size": max(size, 2), "initial_size": size},
            "container": {
                "image": image,
                "volumes": ["/usr:/usr:ro"],
                "network": network,
                "host_port_range": ports,
                "cpus": cpus,
                **(container or {}),
            },
            "rules": {"tick_s": 2.0, **rules},
            "gateway": {"listen": gateway},
        }
    )


@contextmanager
def supervised(
    redis_url: str,
    image: str,
    size: int,
    workdir: Path,
    ports: str,
    gateway: str = "",
    cpus: float = 0.5,
    container: Mapping[str, Any] | None = None,
    **rules: float,
) -> Iterator[tuple[Supervisor, LeaseStore, docker.DockerClient]]:
    """A supervisor thread on its own network and pool; everything it made is removed after.
    ``gateway`` ("host:port") gives jobs gateway URLs (the caller runs the gateway); "" = direct.
    ``container``: more keys of [container]."""
    pool = f"bench{secrets.token_hex(3)}"
    engine = docker.from_env()
    network = f"cinnamon-bench-{pool}"
    engine.networks.create(network, labels={"cinnamon.test": pool})
    config = _config(redis_url, pool, image, network, size, ports, gateway, cpus, container, **rules)
    store = LeaseStore(redis.Redis.from_url(redis_url), pool)
    supervisor = Supervisor(config, store, DockerRuntime(engine), DailyLogWriter(workdir / "logs"))
    stop = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while len(store.snapshot().free) < size:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{size} x {image} not ready within 120 s")
            time.sleep(0.05)
        yield supervisor, store, engine
    finally:
        stop.set()
        supervisor.wake.set()
        thread.join(timeout=30)
        for label in (f"cinnamon.pool={pool}", f"cinnamon.test={pool}"):
            for container in engine.api.containers(all=True, filters={"label": label}):
                engine.api.remove_container(container["Id"], force=True)
        engine.networks.get(network).remove()
        sweep_egress(engine)


def kill_to_replacement(store: LeaseStore, engine: docker.DockerClient, rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        old = store.snapshot().containers["container-001"].container_id
        started = time.perf_counter()
        engine.containers.get(old).kill()
        while True:
            snapshot = store.snapshot()
            record = snapshot.containers.get("container-001")
            if record is not None and record.container_id != old and "container-001" in snapshot.free:
                break
            time.sleep(0.005)
        samples.append(time.perf_counter() - started)
    return samples


def floor_kill_to_ready(engine: docker.DockerClient, config: PoolConfig, pool: str, rounds: int) -> list[float]:
    """The least any supervisor could do: hear the die event, docker run, poll readiness."""
    runtime = DockerRuntime(engine)
    port = config.container.host_ports[-1]

    def run(i: int) -> str:
        spec = ContainerSpec(
            pool, 0, f"cinnamon-{pool}-floor-{i}", port, config.container, {"cinnamon.test": pool}, config.container.command_for(port)
        )
        return runtime.create(spec).container_id

    samples = []
    current = run(0)
    endpoint = f"http://127.0.0.1:{port}/mcp"
    while not readiness(endpoint, 2).ok:
        time.sleep(0.01)
    for i in range(1, rounds + 1):
        events = engine.api.events(decode=True, filters={"type": "container", "event": "die", "container": current})
        started = time.perf_counter()
        engine.api.kill(current)
        next(iter(events))
        events.close()
        engine.api.remove_container(current, force=True)
        current = run(i)
        while not readiness(endpoint, 2).ok:
            time.sleep(0.005)
        samples.append(time.perf_counter() - started)
    engine.api.remove_container(current, force=True)
    return samples


def rss_mb(command: list[str], settle_s: float, env: dict[str, str] | None = None) -> float:
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(settle_s)
        status = Path(f"/proc/{process.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024
    finally:
        process.terminate()
        process.wait(timeout=30)


def run(redis_url: str, workdir: Path) -> list[Row]:
    rows: list[Row] = []
    for image, label, rounds in ((FAKE, "fake-mcp", 5), (PLAYWRIGHT, "playwright-mcp", 3)):
        with supervised(redis_url, image, 2, workdir, "3920-3929") as (supervisor, store, engine):
            ours = kill_to_replacement(store, engine, rounds)
            floor = floor_kill_to_ready(engine, supervisor.config, supervisor.pool, rounds)
        print(f"  {label}: kill -> replacement p50 {percentile(ours, 50):.2f} s, floor {percentile(floor, 50):.2f} s", flush=True)
        rows.append(
            Row(
                "supervisor",
                f"docker kill -> replacement ready, {label}, p50 (vs floor)",
                percentile(ours, 50) * 1e3,
                percentile(floor, 50) * 1e3,
                "ms",
                "ratio <= 1.3",
            )
        )
    with supervised(redis_url, FAKE, 10, workdir, "3930-3939") as (supervisor, store, engine):
        passes = []
        for _ in range(30):
            started = time.perf_counter()
            supervisor.observer.observe(supervisor.state)
            passes.append(time.perf_counter() - started)
        ids = [r.container_id for r in store.snapshot().containers.values()]
        started = time.perf_counter()
        for container_id in ids:
            engine.api.stats(container_id, stream=False, one_shot=True)
        sweep = time.perf_counter() - started
    print(f"  observe pass over 10 containers p50 {percentile(passes, 50) * 1e3:.1f} ms; stats sweep {sweep:.1f} s", flush=True)
    rows.append(
        Row(
            "supervisor",
            "observe pass, 10 containers, p50 (vs a stats(one_shot=True) sweep)",
            percentile(passes, 50) * 1e3,
            sweep * 1e3,
            "ms",
            "value <= 20 and ratio < 1",
        )
    )
    config_path = workdir / "rss.toml"
    config_path.write_text(
        f'[redis]\nurl = "{redis_url}"\n[pool]\nname = "rss{secrets.token_hex(2)}"\nmin_size = 0\ninitial_size = 0\n[logs]\ndir = "{workdir / "logs"}"\n'
    )
    supervise = rss_mb(
        [str(Path(sys.executable).parent / "cinnamon-pool"), "supervise"], 4.0, {**os.environ, "CINNAMON_CONFIG": str(config_path)}
    )
    bare = rss_mb([sys.executable, "-c", "import time; time.sleep(60)"], 1.0)
    rows.append(Row("supervisor", "supervisor resident memory (vs bare python)", supervise, bare, "MB", "ratio <= 3"))
    return rows
