"""Section "scale": how the pool's costs grow from 10 to 30 to 100 fake-mcp containers, on 1 host
and on 3 (three supervisors on one engine, each its own ``pool.host``, the containers shared out).

One pool per host count, grown 10 -> 30 -> 100 by the supervisors themselves (``set_size``). At
each size, with the supervisors' threads stopped so that nothing else runs: the tick of one
host's supervisor (and the Redis commands it sends), its observe pass and memory sweep alone,
then 4 lease clients per container (asyncio, :class:`AsyncLeaseClient`, as the gateway holds
them) acquiring, holding 200 ms and releasing, and last the resident memory of a real
``cinnamon-pool supervise`` process that takes the host over. Each row's baseline is the same
figure at 10 containers in the same run: ``ratio`` is the growth from 10 to 100.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import redis
import redis.asyncio as aioredis

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.lease.aio import AsyncLeaseClient
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.logs.writer import DailyLogWriter
from cinnamon_pool.model import ContainerState, Holder
from cinnamon_pool.runtime.docker import DockerRuntime
from cinnamon_pool.supervisor.loop import Supervisor
from tests.bench.report import Row, percentile
from tests.bench.supervisor_bench import rss_mb
from tests.support import sweep_egress

FAKE = "cinnamon-pool/fake-mcp:test"
SIZES = (10, 30, 100)
TICKS = 30
HOLD_S = 0.2  # a fifth of the shortest sign-in job (at 50 ms, 100 containers ask 2,000 grants/s of one client process)
ROUNDS = 5  # acquires per lease client
READY_S = 600.0


@dataclass
class Figures:
    tick_ms: list[float]
    commands_per_tick: float
    observe_ms: list[float]
    sweep_ms: list[float]
    acquire_ms: list[float]
    handoff_ms: list[float]
    supervisor_rss_mb: float
    handoff_control_ms: list[float] = field(default_factory=list)  # the smallest pool's clients on as many of these containers


@dataclass
class Host:
    name: str
    tables: dict[str, dict[str, Any]]
    supervisor: Supervisor
    stop: threading.Event
    thread: threading.Thread | None = None

    def start(self) -> None:
        """Tick as ``Supervisor.run`` does (without its Docker events: the ticks are frequent),
        in a thread that can be stopped and started again."""
        self.stop.clear()
        self.thread = threading.Thread(target=self._loop, daemon=True, name=f"supervisor-{self.name}")
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            report = self.supervisor.tick()
            self.stop.wait(0.05 if report.pending else 0.5)

    def halt(self) -> None:
        self.stop.set()
        self.supervisor.wake.set()
        if self.thread is not None:
            self.thread.join(timeout=60)


def _tables(redis_url: str, pool: str, host: str, index: int, network: str, workdir: Path) -> dict[str, dict[str, Any]]:
    ports = 4000 + 200 * index
    return {
        "redis": {"url": redis_url},
        "pool": {"name": pool, "host": host, "min_size": 1, "max_size": max(SIZES), "initial_size": 1},
        "container": {"image": FAKE, "volumes": ["/usr:/usr:ro"], "network": network, "host_port_range": f"{ports}-{ports + 199}"},
        "rules": {"tick_s": 1.0},
        "logs": {"dir": str(workdir / f"logs-{pool}-{host}")},
    }


@contextmanager
def scaled_pool(redis_url: str, workdir: Path, hosts: int) -> Iterator[tuple[list[Host], LeaseStore, docker.DockerClient]]:
    """A pool on ``hosts`` supervisors (threads, one engine), removed with its network after."""
    pool = f"scale{secrets.token_hex(3)}"
    engine = docker.from_env(timeout=120)
    network = f"cinnamon-bench-{pool}"
    engine.networks.create(network, labels={"cinnamon.test": pool})
    store = LeaseStore(redis.Redis.from_url(redis_url), pool)
    members = []
    for index in range(hosts):
        tables = _tables(redis_url, pool, f"h{index}", index, network, workdir)
        config = PoolConfig.from_tables(tables)
        supervisor = Supervisor(config, store, DockerRuntime(engine, host=f"h{index}"), DailyLogWriter(config.logs.dir))
        members.append(Host(f"h{index}", tables, supervisor, threading.Event()))
    try:
        yield members, store, engine
    finally:
        for member in members:
            member.halt()
        for label in (f"cinnamon.pool={pool}", f"cinnamon.test={pool}"):
            for container in engine.api.containers(all=True, filters={"label": label}):
                engine.api.remove_container(container["Id"], force=True)
        engine.networks.get(network).remove()
        sweep_egress(engine)


def grow(members: list[Host], store: LeaseStore, size: int) -> float:
    """Ask each host for its share of ``size`` and wait until that many containers are free."""
    started = time.monotonic()
    for index, member in enumerate(members):
        store.set_size(member.name, size // len(members) + (index < size % len(members)), "scale bench")
        member.start()
    while len(store.snapshot().free) < size:
        if time.monotonic() - started > READY_S:
            raise RuntimeError(f"{size} fake-mcp containers not ready within {READY_S:g} s ({len(store.snapshot().free)} free)")
        time.sleep(0.2)
    for member in members:
        member.halt()
    return time.monotonic() - started


def commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def supervisor_figures(member: Host, client: redis.Redis) -> tuple[list[float], float, list[float], list[float]]:
    """One host's tick (its Redis commands), observe pass and memory sweep, nothing else running."""
    supervisor = member.supervisor
    ticks, sent = [], []
    for _ in range(TICKS):
        before = commands(client)
        started = time.perf_counter()
        report = supervisor.tick()
        ticks.append((time.perf_counter() - started) * 1e3)
        sent.append(commands(client) - before - 1)  # INFO counts itself
        if report.error:
            raise RuntimeError(f"tick on {member.name} failed: {report.error}")
        time.sleep(0.1)
    observe = []
    for _ in range(TICKS):
        started = time.perf_counter()
        supervisor.observer.observe(supervisor.state)
        observe.append((time.perf_counter() - started) * 1e3)
    runtime = supervisor.runtime
    ids = [record.container_id for record in supervisor.store.snapshot().containers.values() if record.host == member.name]
    sweep = []
    for _ in range(10):
        started = time.perf_counter()
        for container_id in ids:
            runtime.memory_mb(container_id)
        sweep.append((time.perf_counter() - started) * 1e3)
    return ticks, statistics.median(sent), observe, sweep


CLIENT_PROCESSES = 4  # the lease clients' processes (as 400 waiting jobs are many processes, not one event loop)


Moments = tuple[list[tuple[float, str, float]], list[tuple[float, str]]]  # (granted, container, asked), (release called, container)


async def _holders(redis_url: str, pool: str, host: str, first: int, clients: int) -> Moments:
    """``clients`` holders in this process, ROUNDS leases each held HOLD_S: when each grant came
    (and its acquire began), and when each release was called (it hands the container over)."""
    connection = aioredis.Redis.from_url(redis_url, max_connections=clients + 8)
    lease = AsyncLeaseClient(connection, pool, host, lease_ttl_s=30, max_lease_s=300, error_threshold=3)
    grants: list[tuple[float, str, float]] = []
    releases: list[tuple[float, str]] = []

    async def holder(number: int) -> None:
        for _ in range(ROUNDS):
            asked = time.perf_counter()
            grant = await lease.acquire(Holder(f"scale-{number}"), timeout_s=120)
            grants.append((time.perf_counter(), grant.name, asked))
            await asyncio.sleep(HOLD_S)
            releases.append((time.perf_counter(), grant.name))
            await lease.release(grant.name, grant.token)

    try:
        await asyncio.gather(*(holder(number) for number in range(first, first + clients)))
    finally:
        await connection.aclose()
    return grants, releases


def _holders_process(redis_url: str, pool: str, host: str, first: int, clients: int) -> Moments:
    return asyncio.run(_holders(redis_url, pool, host, first, clients))


def lease_load(redis_url: str, pool: str, host: str, clients: int) -> tuple[list[float], list[float]]:
    """``clients`` holders over CLIENT_PROCESSES processes (one monotonic clock): the latency of
    each acquire, and each hand-off, from a release's call to the grant of that container to a
    holder that was already waiting."""
    share = -(-clients // CLIENT_PROCESSES)
    firsts = range(0, clients, share)
    with concurrent.futures.ProcessPoolExecutor(len(firsts), mp_context=multiprocessing.get_context("spawn")) as processes:
        futures = [processes.submit(_holders_process, redis_url, pool, host, first, min(share, clients - first)) for first in firsts]
        parts = [future.result() for future in futures]
    grants = sorted(grant for part_grants, _ in parts for grant in part_grants)
    releases = sorted(release for _, part_releases in parts for release in part_releases)
    acquires = [(granted - asked) * 1e3 for granted, _, asked in grants]
    handoffs, last, upto = [], {}, 0
    for granted, name, asked in grants:
        while upto < len(releases) and releases[upto][0] <= granted:  # every release called before this grant
            last[releases[upto][1]] = releases[upto][0]
            upto += 1
        if name in last and asked < last[name]:  # it waited: the container came to it by hand-off
            handoffs.append((granted - last.pop(name)) * 1e3)
    return acquires, handoffs


def handoff_control(redis_url: str, store: LeaseStore, host: str) -> list[float]:
    """The hand-off with the smallest pool's load (4 clients on each of min(SIZES) containers)
    on this large pool, the rest of its containers out of service: what grows with the pool's
    size alone, apart from the clients' number."""
    for name in sorted(store.snapshot().free)[min(SIZES) :]:
        store.set_state(name, ContainerState.RESTARTING, "scale bench: out of service for the hand-off control")
    _acquires, handoffs = lease_load(redis_url, store.pool, host, 4 * min(SIZES))
    return handoffs


def rss_of_supervise(member: Host, workdir: Path) -> float:
    """A real ``cinnamon-pool supervise`` for this host, over the containers it finds: VmRSS."""
    config_path = workdir / f"{member.name}-{secrets.token_hex(2)}.toml"
    config_path.write_text(_toml(member.tables))
    command = [str(Path(sys.executable).parent / "cinnamon-pool"), "supervise"]
    return rss_mb(command, 8.0, {**os.environ, "CINNAMON_CONFIG": str(config_path)})


def _toml(tables: dict[str, dict[str, Any]]) -> str:
    def value(item: Any) -> str:
        if isinstance(item, str):
            return f'"{item}"'
        if isinstance(item, list):
            return "[" + ", ".join(value(each) for each in item) + "]"
        return str(item).lower() if isinstance(item, bool) else str(item)

    return "".join(f"[{name}]\n" + "".join(f"{key} = {value(item)}\n" for key, item in table.items()) for name, table in tables.items())


def measure(redis_url: str, workdir: Path, hosts: int) -> dict[int, Figures]:
    client = redis.Redis.from_url(redis_url)
    figures: dict[int, Figures] = {}
    with scaled_pool(redis_url, workdir, hosts) as (members, store, _engine):
        for size in SIZES:
            seconds = grow(members, store, size)
            ticks, sent, observe, sweep = supervisor_figures(members[0], client)
            acquires, handoffs = lease_load(redis_url, store.pool, members[0].name, 4 * size)
            rss = rss_of_supervise(members[0], workdir)
            figures[size] = Figures(ticks, sent, observe, sweep, acquires, handoffs, rss)
            if size == max(SIZES):  # last: it takes containers out of service
                figures[size].handoff_control_ms = handoff_control(redis_url, store, members[0].name)
            print(
                f"  {size} containers on {hosts} host(s), ready in {seconds:.0f} s; host h0's"
                f" tick p50 {percentile(ticks, 50):.1f} ms p99 {percentile(ticks, 99):.1f} ms, {sent:.0f} Redis commands;"
                f" observe p50 {percentile(observe, 50):.1f} ms; memory sweep {percentile(sweep, 50):.1f} ms;"
                f" acquire p50 {percentile(acquires, 50):.1f} ms p99 {percentile(acquires, 99):.1f} ms"
                f" ({4 * size} clients); hand-off p50 {percentile(handoffs, 50):.2f} ms p99 {percentile(handoffs, 99):.2f} ms; supervise RSS {rss:.0f} MB",
                flush=True,
            )
    return figures


GROWTH: tuple[tuple[str, Callable[[Figures], float], str, str], ...] = (
    ("supervisor tick p50", lambda f: percentile(f.tick_ms, 50), "ms", "value <= 50 and ratio <= 10"),
    ("supervisor tick p99", lambda f: percentile(f.tick_ms, 99), "ms", "ratio <= 10"),
    ("Redis commands per tick", lambda f: f.commands_per_tick, "commands", "ratio <= 10"),
    ("observe pass p50", lambda f: percentile(f.observe_ms, 50), "ms", "value <= 50 and ratio <= 10"),
    ("memory reading sweep p50 (part of observe)", lambda f: percentile(f.sweep_ms, 50), "ms", ""),
    ("acquire -> grant p50, 4 clients per container", lambda f: percentile(f.acquire_ms, 50), "ms", ""),
    ("acquire -> grant p99, 4 clients per container", lambda f: percentile(f.acquire_ms, 99), "ms", "ratio <= 2"),
    ("release -> next grant (hand-off) p50", lambda f: percentile(f.handoff_ms, 50), "ms", "ratio <= 2"),
    ("release -> next grant (hand-off) p99", lambda f: percentile(f.handoff_ms, 99), "ms", ""),
    (
        "hand-off p50 with the smallest pool's 40 clients on 10 of its containers",
        lambda f: percentile(f.handoff_control_ms or f.handoff_ms, 50),
        "ms",
        "ratio <= 2",
    ),
    ("supervise resident memory", lambda f: f.supervisor_rss_mb, "MB", "value <= 150"),
)


def run(redis_url: str, workdir: Path) -> list[Row]:
    rows: list[Row] = []
    for hosts in (1, 3):
        figures = measure(redis_url, workdir, hosts)
        small, large = figures[min(SIZES)], figures[max(SIZES)]
        where = f"{max(SIZES)} containers on {hosts} host{'s' if hosts > 1 else ''} (vs {min(SIZES)})"
        rows += [Row("scale", f"{figure}, {where}", of(large), of(small), unit, target) for figure, of, unit, target in GROWTH]
    return rows
